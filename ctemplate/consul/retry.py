"""The retry policy of every request to Consul, and the settings of the loops that watch queries.

Transient failures (connection errors, 5xx, 429) are retried with exponential backoff and jitter
(tenacity) until ``retry_attempts`` or ``max_unavailable`` says to give up (by default never, in a
daemon); ``retry_enabled = False`` makes the first failure final, as in consul-template.

tenacity is imported only when a request fails: most runs (every quick ``-once``) never retry,
and its import is a few per cent of their start-up.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ..errors import ConsulError

if TYPE_CHECKING:
    from tenacity import AsyncRetrying, RetryCallState, RetryError

__all__ = ["WatchSettings", "describe", "gave_up", "retrying", "with_retries"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """What every query loop needs from the configuration: waits, staleness, retries."""

    wait: float = 60.0  # blocking-query wait, seconds
    max_stale: float = 2.0  # 0 = consistent reads
    min_interval: float = 0.1  # between two requests of one loop
    jitter: float = 0.02
    retry_backoff: float = 0.25
    retry_max_backoff: float = 60.0
    retry_attempts: int = 0  # 0 = forever
    retry_enabled: bool = True  # False: the first failure is final
    max_unavailable: float = 0.0  # give up after failing this long without a break; 0 = never
    once: bool = False  # stop after the first delivered answer
    max_connections: int = 32  # to the agent, whatever the number of queries


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, ConsulError) and exc.transient


def describe(s: WatchSettings) -> str:
    """What happens after a failed request, in words, naming the flag that bounds it (for the
    warning that starts an outage)."""
    if not s.retry_enabled:
        return "not retrying: retries are disabled (-consul-retry=false)"
    if s.retry_attempts > 0:
        return f"retrying up to {s.retry_attempts} times with backoff (-consul-retry-attempts)"
    if s.max_unavailable > 0:
        return f"retrying with backoff for up to {s.max_unavailable:g}s (-max-unavailable)"
    return "retrying with backoff"


def retrying(
    s: WatchSettings, on_retry: Callable[[int, float], None] | None = None
) -> AsyncRetrying:
    """The retry policy of one request: exponential backoff with jitter, stopping only at the
    configured limits (``retry_attempts``, ``max_unavailable``). ``on_retry(attempt, delay)``
    is called after each failed attempt that will be retried, before the pause."""
    from tenacity import AsyncRetrying, retry_if_exception, wait_exponential, wait_random

    backoff = wait_exponential(multiplier=s.retry_backoff, max=s.retry_max_backoff) + wait_random(
        0, s.retry_backoff
    )
    failing_since = 0.0

    def give_up(state: RetryCallState) -> bool:  # after each failed attempt
        nonlocal failing_since
        now = time.monotonic()
        failing_since = failing_since or now
        if not s.retry_enabled:
            return True
        if s.retry_attempts > 0 and state.attempt_number > s.retry_attempts:
            return True
        return 0 < s.max_unavailable <= now - failing_since

    def pause(state: RetryCallState) -> float:
        delay = backoff(state)
        if s.max_unavailable > 0:  # do not sleep past the limit
            delay = min(delay, max(0.0, failing_since + s.max_unavailable - time.monotonic()))
        return float(delay)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None:
            delay = state.next_action.sleep if state.next_action is not None else 0.0
            on_retry(state.attempt_number, float(delay))

    return AsyncRetrying(
        retry=retry_if_exception(_transient),
        wait=pause,
        stop=give_up,
        before_sleep=before_sleep,
        reraise=False,
    )


async def with_retries(
    s: WatchSettings,
    on_retry: Callable[[int, float], None] | None,
    attempt: Callable[[], Awaitable[T]],
) -> T:
    """``await attempt()`` under the policy of :func:`retrying`; a :class:`ConsulError` naming
    the limit (:func:`gave_up`) once it stops retrying.

    The first attempt runs outside tenacity (no import, no retry state for the common case of
    a request that succeeds); its transient failure is handed to tenacity as attempt 1, so
    the backoff, the limits and ``on_retry`` see exactly the sequence they would otherwise.
    """
    try:
        return await attempt()
    except ConsulError as exc:
        if not exc.transient:
            raise
        first: ConsulError | None = exc
    from tenacity import RetryError

    try:
        async for state in retrying(s, on_retry):
            with state:
                if first is not None:
                    failed, first = first, None
                    raise failed
                return await attempt()
    except RetryError as exc:
        raise gave_up(exc, s) from exc.last_attempt.exception()
    raise AssertionError("unreachable")


def gave_up(exc: RetryError, s: WatchSettings) -> ConsulError:
    """The error to report once :func:`retrying` stopped."""
    last = exc.last_attempt.exception()
    assert isinstance(last, ConsulError)
    if not s.retry_enabled:
        limit = "not retried: retries are disabled by -consul-retry=false (consul.retry.enabled)"
    elif s.retry_attempts > 0 and exc.last_attempt.attempt_number > s.retry_attempts:
        limit = f"gave up after {s.retry_attempts} retries, the limit of -consul-retry-attempts"
        if s.once:
            limit += " (12 by default with -once; 0 = retry forever)"
    else:
        limit = f"gave up after failing for {s.max_unavailable:g}s, the limit of -max-unavailable"
    return ConsulError(f"{last}; {limit}", transient=True)
