"""A transparent TCP proxy on loopback that counts what goes through it, for the benchmarks.

Bytes are forwarded unchanged in both directions (so the counts are what the client and the
agent really exchange: headers, bodies, chunk framing), and counted per direction. Requests are
counted in the client -> agent stream as the number of ``\\r\\n\\r\\n`` header terminators: every
request our clients send to Consul through it is a ``GET`` without a body, so that is exactly
one per request, on kept-alive connections too. Connections are counted (open now, peak, total).

    proxy = CountingProxy("127.0.0.1:8500").start()
    ... run the client with -consul-addr proxy.addr ...
    before = proxy.snapshot(); ...; after = proxy.snapshot()
    proxy.stop()

The proxy runs its own asyncio loop in a background thread; it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass

__all__ = ["Counters", "CountingProxy"]

_TERMINATOR = b"\r\n\r\n"
_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class Counters:
    requests: int = 0
    bytes_up: int = 0  # client -> agent
    bytes_down: int = 0  # agent -> client
    open: int = 0
    peak: int = 0
    connections: int = 0  # accepted so far

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            self.requests - other.requests,
            self.bytes_up - other.bytes_up,
            self.bytes_down - other.bytes_down,
            self.open,
            self.peak,
            self.connections - other.connections,
        )


class CountingProxy:
    def __init__(self, upstream: str, *, host: str = "127.0.0.1") -> None:
        up_host, _, up_port = upstream.rpartition(":")
        self.upstream = (up_host, int(up_port))
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._requests = 0
        self._up = 0
        self._down = 0
        self._open = 0
        self._peak = 0
        self._total = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def snapshot(self) -> Counters:
        with self._lock:
            return Counters(
                self._requests, self._up, self._down, self._open, self._peak, self._total
            )

    def reset_peak(self) -> None:
        with self._lock:
            self._peak = self._open

    def start(self) -> CountingProxy:
        self._thread = threading.Thread(target=self._run, name="counting-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("counting proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> CountingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the proxy's own thread ------------------------------------------------------------

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
        with self._lock:
            self._open += 1
            self._total += 1
            self._peak = max(self._peak, self._open)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            upstream = asyncio.ensure_future(self._pipe(reader, up_writer, up=True))
            downstream = asyncio.ensure_future(self._pipe(up_reader, writer, up=False))
            try:
                await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                upstream.cancel()
                downstream.cancel()
                await asyncio.gather(upstream, downstream, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            with self._lock:
                self._open -= 1
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool
    ) -> None:
        carry = b""  # the end of the previous chunk, for a terminator split across two reads
        with contextlib.suppress(OSError):
            for _ in range(1 << 40):  # bounded; EOF or cancellation ends it
                data = await reader.read(_CHUNK)
                if not data:
                    return
                writer.write(data)
                if up:
                    scan = carry + data
                    found = scan.count(_TERMINATOR)
                    carry = scan[-3:]
                    with self._lock:
                        self._up += len(data)
                        self._requests += found
                else:
                    with self._lock:
                        self._down += len(data)
                await writer.drain()
