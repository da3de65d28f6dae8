"""A TCP relay on loopback, with hooks: the core of the tests' fault proxy and the benchmarks'
counting proxy.

It listens on ``host`` (127.0.0.1) on a free port and hands every accepted connection to
:meth:`Relay.handle`, which by default opens a connection to ``upstream`` and pipes the bytes
both ways unchanged, showing every chunk to the function :meth:`Relay.tap` returned for that
direction of that connection. Subclasses override ``tap`` to watch the traffic, or ``handle``
to answer in their own way::

    with Relay("127.0.0.1:8500") as relay:
        ... point the client at relay.addr ...

The relay runs its own asyncio loop in a background thread, so plain synchronous code drives it;
the hooks run on that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Self

__all__ = ["Relay"]

_CHUNK = 256 * 1024


class Relay:
    def __init__(self, upstream: str, *, host: str = "127.0.0.1") -> None:
        up_host, _, up_port = upstream.rpartition(":")
        self.upstream = (up_host, int(up_port))
        self.host = host
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Self:
        name = type(self).__name__
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{name} did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- hooks (on the relay's loop) -------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection; the relay closes ``writer`` afterwards."""
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            pipes = {
                asyncio.ensure_future(self._pipe(reader, up_writer, self.tap(up=True))),
                asyncio.ensure_future(self._pipe(up_reader, writer, self.tap(up=False))),
            }
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            up_writer.close()

    def tap(self, *, up: bool) -> Callable[[bytes], None]:
        """The function shown every chunk piped client -> upstream (``up``) or back, on one
        connection."""
        return lambda data: None

    # -- the relay's own thread ------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, self.host, 0, backlog=4096)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a peer went away, or the relay is stopping
        finally:
            self._tasks.discard(task)
            writer.close()

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tap: Callable[[bytes], None]
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(_CHUNK):
                writer.write(data)
                tap(data)
                await writer.drain()
