"""One long-poll loop per canonical query, shared by every template that uses it.

Blocking-query rules (Consul's documentation, and what consul-template learned the hard way):

* send the last ``X-Consul-Index`` back as ``index``; the same index means nothing changed;
* an index that goes backwards (agent restarted, snapshot restored) resets to 0: read afresh;
* after a failed request the next one does not block: a restarted agent would otherwise hold
  a query with the old, higher index for its whole ``wait`` before answering;
* an index of 0 is treated as 1, so the next request still blocks;
* a new index with equal data is not a change (``==`` on frozen records);
* stale reads are allowed up to ``max_stale``; an answer whose ``X-Consul-LastContact`` is older
  is asked again of the leader;
* at least ``min_interval`` (+ jitter) between two requests of one query, so a flapping service
  cannot turn into a request storm;
* transient failures are retried with exponential backoff and jitter (tenacity).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception,
    stop_never,
    wait_exponential_jitter,
)

from .consul import ConsulClient, ConsulResponse
from .errors import ConsulError
from .queries import Query

__all__ = ["WatchSettings", "Watcher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WatchSettings:
    wait: float = 60.0  # blocking-query wait, seconds
    max_stale: float = 2.0  # 0 = consistent reads
    min_interval: float = 0.1  # between two requests of one query
    jitter: float = 0.02
    retry_backoff: float = 0.25
    retry_max_backoff: float = 60.0
    retry_attempts: int = 0  # 0 = forever
    max_unavailable: float = 0.0  # give up after failing this long without a break; 0 = never
    once: bool = False  # stop after the first delivered answer


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, ConsulError) and exc.transient


class _Watch:
    def __init__(self, query: Query, watcher: Watcher) -> None:
        self.query = query
        self.key = str(query)
        self.watcher = watcher
        self.index = 0
        self.task: asyncio.Task[None] | None = None
        self.since = time.monotonic()
        self.failed = False  # the last request failed: the next one must not block
        self.blocked = False  # the last answer came from a blocking request
        self.reported: str | None = None  # the non-transient error last reported

    async def run(self) -> None:
        w = self.watcher
        s = w.settings
        path, params = self.query.endpoint()
        last_start = 0.0
        first = True
        while True:
            if not first:
                delay = last_start + s.min_interval + random.uniform(0, s.jitter) - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            last_start = time.monotonic()
            try:
                resp = await self._fetch(path, params)
            except ConsulError as exc:
                self.failed = True
                if exc.transient:  # retries exhausted
                    w.fail(self.key, exc)
                    return
                # Not worth a fast retry (403, 400...): report once, then try again slowly.
                if str(exc) != self.reported:
                    self.reported = str(exc)
                    w.fail(self.key, exc)
                await asyncio.sleep(s.retry_max_backoff)
                continue
            first = False
            if resp.index < self.index:
                # The agent restarted empty or a snapshot was restored: this answer is the
                # current state at a lower index, so it is taken as a fresh read.
                log.info(
                    "(watch) %s: index went backwards (%d -> %d); reading afresh",
                    self.key,
                    self.index,
                    resp.index,
                )
                self.index = 0
            elif resp.index == self.index and self.blocked:
                continue
            self.index = max(resp.index, 1)
            try:
                value = self.query.decode(resp.data)
            except Exception as exc:  # an answer of an unexpected shape (a proxy, a bug)
                error = ConsulError(
                    f"{self.key}: cannot read Consul's answer ({type(exc).__name__}: {exc}); "
                    f"reading again in {s.retry_max_backoff:g}s",
                    transient=False,
                )
                log.debug("details", exc_info=exc)
                self.index = 0
                self.failed = True
                if str(error) != self.reported:
                    self.reported = str(error)
                    w.fail(self.key, error)
                await asyncio.sleep(s.retry_max_backoff)
                continue
            if self.reported is not None:
                log.info("(watch) %s: Consul answers again", self.key)
                self.reported = None
            if value is None and self.query.block_on_nil:
                if self.key in w.data:
                    # It existed and was deleted: the template must wait again.
                    w.forget(self.key)
                continue
            if w.deliver(self.key, value) and s.once:
                return

    async def _fetch(self, path: str, params: dict[str, str]) -> ConsulResponse:
        s = self.watcher.settings
        client = self.watcher.client
        backoff = wait_exponential_jitter(
            initial=s.retry_backoff, max=s.retry_max_backoff, jitter=s.retry_backoff
        )
        failing_since = 0.0

        def give_up(state: RetryCallState) -> bool:
            # Called after each failed attempt: retry_attempts and/or max_unavailable.
            nonlocal failing_since
            now = time.monotonic()
            failing_since = failing_since or now
            if s.retry_attempts > 0 and state.attempt_number > s.retry_attempts:
                return True
            return 0 < s.max_unavailable <= now - failing_since

        def pause(state: RetryCallState) -> float:
            delay = backoff(state)
            if s.max_unavailable > 0:  # do not sleep past the limit
                delay = min(delay, max(0.0, failing_since + s.max_unavailable - time.monotonic()))
            return delay

        stop = give_up if s.retry_attempts > 0 or s.max_unavailable > 0 else stop_never
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_transient),
                wait=pause,
                stop=stop,
                reraise=False,
            ):
                with attempt:
                    # After a failure, ask without blocking: a restarted agent holds a query
                    # whose index is ahead of its own for the whole wait.
                    index = 0 if self.failed else self.index
                    self.failed = True  # until this attempt succeeds
                    stale = s.max_stale > 0
                    resp = await client.get(path, params, index=index, wait=s.wait, stale=stale)
                    if stale and resp.last_contact > s.max_stale:
                        log.debug(
                            "(watch) %s: stale by %.1fs; asking the leader",
                            self.key,
                            resp.last_contact,
                        )
                        resp = await client.get(path, params, index=index, wait=s.wait)
                    self.failed = False
                    self.blocked = index > 0
                    return resp
        except RetryError as exc:
            last = exc.last_attempt.exception()
            assert isinstance(last, ConsulError)
            if s.retry_attempts > 0 and exc.last_attempt.attempt_number > s.retry_attempts:
                limit = f"gave up after {s.retry_attempts} retries"
            else:
                limit = f"gave up after failing for {s.max_unavailable:g}s (max_unavailable)"
            raise ConsulError(f"{last} ({limit})", transient=True) from last
        raise AssertionError("unreachable")


class Watcher:
    """Keeps one watch per query and the latest data of each (the cache templates read).

    ``on_change(key)`` is called for every delivered change; ``on_error(key, error)`` when a
    watch fails.
    """

    def __init__(
        self,
        client: ConsulClient,
        settings: WatchSettings,
        on_change: Callable[[str], None],
        on_error: Callable[[str, ConsulError], None],
    ) -> None:
        self.client = client
        self.settings = settings
        self.data: dict[str, Any] = {}
        self._watches: dict[str, _Watch] = {}
        self._on_change = on_change
        self._on_error = on_error

    def __contains__(self, key: str) -> bool:
        return key in self._watches

    def __len__(self) -> int:
        return len(self._watches)

    def watched(self) -> list[str]:
        return list(self._watches)

    def waiting_since(self, key: str) -> float | None:
        w = self._watches.get(key)
        return w.since if w else None

    def add(self, query: Query) -> None:
        key = str(query)
        if key in self._watches:
            return
        watch = _Watch(query, self)
        self._watches[key] = watch
        # Non-blocking endpoints and local files bring their own polling loop (ctemplate.poll).
        loop = query.custom_watch(self) or watch.run()
        watch.task = asyncio.get_running_loop().create_task(loop, name=key)
        log.debug("(watch) %s: started (%d watches)", key, len(self._watches))

    def remove(self, keys: Iterable[str]) -> None:
        for key in keys:
            watch = self._watches.pop(key, None)
            self.data.pop(key, None)
            if watch and watch.task:
                watch.task.cancel()
                log.debug("(watch) %s: stopped, no template uses it", key)

    async def stop(self) -> None:
        tasks = [w.task for w in self._watches.values() if w.task]
        self._watches.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def deliver(self, key: str, value: Any) -> bool:
        """Store new data; True if it differs from what templates saw before."""
        if key not in self._watches:
            return False
        if key in self.data and self.data[key] == value:
            return False
        self.data[key] = value
        self._on_change(key)
        return True

    def forget(self, key: str) -> None:
        """Drop data that no longer exists (a deleted key): templates using it wait again."""
        self.data.pop(key, None)
        self._on_change(key)

    def fail(self, key: str, error: ConsulError) -> None:
        self._on_error(key, error)
