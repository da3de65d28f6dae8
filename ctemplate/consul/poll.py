"""Watch loops for what cannot be long-polled: Consul endpoints without blocking queries and
local files.

The watcher (:mod:`ctemplate.consul.watch`) runs one task per query; for a
:class:`~ctemplate.consul.queries.PolledQuery` or a :class:`~ctemplate.consul.queries.FileQuery`
that task is one of these loops instead of a blocking-query loop. They deliver through the same
``watcher.deliver`` (which drops equal data), so templates cannot tell the difference.

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

from ..errors import ConsulError
from .queries import FileQuery, PolledQuery
from .retry import WatchSettings, with_retries

__all__ = ["poll_consul", "poll_file"]

log = logging.getLogger(__name__)


class _Watcher(Protocol):
    """What the loops need of :class:`ctemplate.watch.Watcher`."""

    @property
    def client(self) -> Any: ...
    @property
    def settings(self) -> WatchSettings: ...
    @property
    def failing(self) -> dict[str, Any]: ...
    def deliver(self, key: str, value: Any) -> bool: ...
    def fail(self, key: str, error: ConsulError) -> None: ...
    def query_failed(self, key: str, error: ConsulError) -> None: ...
    def query_ok(self, key: str) -> None: ...


async def _fetch(query: PolledQuery, watcher: _Watcher) -> Any:
    key = str(query)

    async def attempt() -> Any:
        try:
            value = await query.fetch(watcher.client)
        except ConsulError as exc:
            watcher.query_failed(key, exc)  # per-query state: /health, one log line
            raise
        watcher.query_ok(key)
        return value

    return await with_retries(watcher.settings, watcher.client.note_retry, attempt)


async def poll_consul(query: PolledQuery, watcher: _Watcher) -> None:
    """Read a non-blocking Consul endpoint now and every ``query.poll_interval`` seconds."""
    try:
        await _poll_consul(query, watcher)
    finally:  # stopped: its failure state goes with it
        watcher.failing.pop(str(query), None)


async def _poll_consul(query: PolledQuery, watcher: _Watcher) -> None:
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
