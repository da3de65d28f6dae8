"""Watch loops for what cannot be long-polled: Consul endpoints without blocking queries and
local files.

The watcher (:mod:`ctemplate.watch`) runs one task per query; for a query whose
:meth:`~ctemplate.queries.Query.custom_watch` returns a coroutine, that task is one of these loops
instead of a blocking-query loop. They deliver through the same ``watcher.deliver`` (which drops
equal data), so templates cannot tell the difference.

* :func:`poll_consul` reads the endpoint, then sleeps ``poll_interval`` (15 seconds for
  ``datacenters``, as consul-template). Transient failures are retried with the watcher's
  backoff settings; when retries run out the watcher is told, as for a blocking query.
* :func:`poll_file` checks the file's inode, size and mtime every 2 seconds and reads it when
  they change. A file that cannot be read is delivered as a
  :class:`~ctemplate.queries.FileProblem`, which the ``file`` helper reports as a template error
  (file and line): the template keeps its last good output until the file is readable again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    stop_never,
    wait_exponential,
    wait_random,
)

from .errors import ConsulError
from .queries import FileQuery, PolledQuery

__all__ = ["poll_consul", "poll_file"]

log = logging.getLogger(__name__)


class _Settings(Protocol):
    @property
    def once(self) -> bool: ...
    @property
    def retry_backoff(self) -> float: ...
    @property
    def retry_max_backoff(self) -> float: ...
    @property
    def retry_attempts(self) -> int: ...


class _Watcher(Protocol):
    """What the loops need of :class:`ctemplate.watch.Watcher`."""

    @property
    def client(self) -> Any: ...
    @property
    def settings(self) -> _Settings: ...
    def deliver(self, key: str, value: Any) -> bool: ...
    def fail(self, key: str, error: ConsulError) -> None: ...


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, ConsulError) and exc.transient


async def _fetch(query: PolledQuery, watcher: _Watcher) -> Any:
    s = watcher.settings
    stop = stop_after_attempt(s.retry_attempts + 1) if s.retry_attempts > 0 else stop_never
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_transient),
            # Exponential backoff with jitter (wait_exponential_jitter's arguments differ
            # between tenacity 8 and 9).
            wait=wait_exponential(multiplier=s.retry_backoff, max=s.retry_max_backoff)
            + wait_random(0, s.retry_backoff),
            stop=stop,
            reraise=False,
        ):
            with attempt:
                return await query.fetch(watcher.client)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        assert isinstance(last, ConsulError)
        raise ConsulError(
            f"{last} (gave up after {s.retry_attempts} retries)", transient=True
        ) from last
    raise AssertionError("unreachable")


async def poll_consul(query: PolledQuery, watcher: _Watcher) -> None:
    """Read a non-blocking Consul endpoint now and every ``query.poll_interval`` seconds."""
    key = str(query)
    s = watcher.settings
    while True:
        try:
            value = await _fetch(query, watcher)
        except ConsulError as exc:
            watcher.fail(key, exc)
            if exc.transient:  # retries exhausted: the runner decides what happens next
                return
            await asyncio.sleep(max(query.poll_interval, s.retry_max_backoff))
            continue
        if watcher.deliver(key, value) and s.once:
            return
        await asyncio.sleep(query.poll_interval)


async def poll_file(query: FileQuery, watcher: _Watcher) -> None:
    """Deliver a file's contents now and again whenever its inode, size or mtime change."""
    key = str(query)
    last: tuple[Any, ...] | None = None
    while True:
        stamp = await asyncio.to_thread(query.stamp)
        if stamp != last:
            last = stamp
            value = await asyncio.to_thread(query.read)
            log.debug(
                "(watch) %s: read (%s)", key, "problem" if not isinstance(value, str) else "ok"
            )
            if watcher.deliver(key, value) and watcher.settings.once:
                return
        await asyncio.sleep(query.poll_interval)
