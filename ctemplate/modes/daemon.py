"""The daemon's ``watch`` blocks: one :class:`~.watch.WatchLoop` task per watch, started and
stopped with the runner and replaced when a reload changes them.

They use the runner's Consul client (its connection pool, TLS, token and availability state), its
retry settings, and count one long poll each against ``consul.max_connections``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ConsulError

if TYPE_CHECKING:  # imported in start(): a run without watch blocks (every -once) needs neither
    from ..config.model import WatchConfig
    from ..consul.client import ConsulClient
    from ..consul.retry import WatchSettings
    from .watch import WatchLoop, WatchStats

__all__ = ["WatchSet"]

log = logging.getLogger(__name__)


class WatchSet:
    """The running watches of a daemon."""

    def __init__(self, on_error: Callable[[str, ConsulError], None]) -> None:
        self._on_error = on_error
        self._loops: list[WatchLoop] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.watches: tuple[WatchConfig, ...] = ()

    def start(
        self, watches: tuple[WatchConfig, ...], client: ConsulClient, settings: WatchSettings
    ) -> None:
        self.watches = watches
        if not watches:
            return
        from .handlers import make_handler
        from .watch import WatchLoop

        for watch in watches:
            loop = WatchLoop(watch, client, settings, make_handler(watch))
            self._loops.append(loop)
            self._tasks.append(asyncio.create_task(self._run(loop), name=f"watch {loop.name}"))
        log.info("(watch) %d watch(es) started", len(watches))

    async def _run(self, loop: WatchLoop) -> None:
        try:
            await loop.run()
        except ConsulError as exc:  # a configured retry limit was reached
            loop.stats.last_error = str(exc)
            self._on_error(loop.name, exc)

    async def stop(self) -> None:
        """Cancel every watch; a handler still running is killed with its process group."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._loops.clear()
        self.watches = ()

    def stats(self) -> tuple[WatchStats, ...]:
        return tuple(loop.stats for loop in self._loops)
