"""An HTTP fault proxy for tests: sits on loopback between ctemplate and a Consul agent.

It forwards every request unchanged unless a fault was queued for it::

    with FaultProxy(consul.http_addr) as proxy:
        proxy.inject("status", count=5, status=500)     # the next 5 requests get a 500
        proxy.inject("status", count=3, status=429)
        proxy.inject("slow", count=2, delay=1.5)        # answered, but late
        proxy.inject("reset", count=3)                  # half the body, then a TCP RST
        proxy.inject("hang", count=1, blocking=True)    # a blocking query that never returns
        ... run ctemplate with -consul-addr proxy.addr ...
        proxy.log                                       # [(path_and_query, action), ...]

Faults apply in the order queued, each to the next ``count`` matching requests (``blocking=True``
matches only blocking queries, i.e. requests with ``index=``). Requests go upstream as HTTP/1.0
on a fresh connection (so the answer is never chunked) and come back to the client as HTTP/1.1
with a ``Content-Length`` on its kept-alive connection.

The proxy runs its own asyncio loop in a background thread, so plain synchronous tests drive it.
Only loopback addresses are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass

__all__ = ["FaultProxy"]

_HOP_HEADERS = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length"}


@dataclass
class _Fault:
    action: str  # status | slow | reset | hang
    count: int
    blocking: bool = False
    status: int = 500
    delay: float = 1.0


class FaultProxy:
    def __init__(self, upstream: str, *, host: str = "127.0.0.1") -> None:
        up_host, _, up_port = upstream.rpartition(":")
        self.upstream = (up_host, int(up_port))
        self.host = host
        self.port = 0
        self.log: list[tuple[str, str]] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- control (any thread) --------------------------------------------------------------

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def inject(
        self,
        action: str,
        count: int = 1,
        *,
        blocking: bool = False,
        status: int = 500,
        delay: float = 1.0,
    ) -> None:
        if action not in ("status", "slow", "reset", "hang"):
            raise ValueError(action)
        with self._lock:
            self._faults.append(_Fault(action, count, blocking, status, delay))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> int:
        """How many injected faults have not fired yet."""
        with self._lock:
            return sum(f.count for f in self._faults)

    def count(self, action: str) -> int:
        with self._lock:
            return sum(1 for _, a in self.log if a.partition(" ")[0] == action)

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the proxy (its own thread and loop) -----------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _take(self, target: str) -> _Fault | None:
        blocking = "index=" in target
        with self._lock:
            for fault in self._faults:
                if fault.blocking and not blocking:
                    continue
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.split(b"\r\n")
                method, target, _version = lines[0].split(b" ", 2)
                headers = [line for line in lines[1:] if line]
                length = 0
                for line in headers:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                path = target.decode("latin-1")
                fault = self._take(path)
                action = fault.action if fault else "pass"
                if fault and fault.action == "status":
                    action = f"status {fault.status}"
                with self._lock:
                    self.log.append((path, action))
                if fault is None:
                    await self._forward(method, target, headers, body, writer)
                elif fault.action == "status":
                    text = b"injected fault\n"
                    writer.write(
                        b"HTTP/1.1 %d Injected\r\nContent-Type: text/plain\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (fault.status, len(text), text)
                    )
                    await writer.drain()
                elif fault.action == "slow":
                    await asyncio.sleep(fault.delay)
                    await self._forward(method, target, headers, body, writer)
                elif fault.action == "hang":
                    # Never answer; wait for the client to give up and close.
                    with contextlib.suppress(ConnectionError):
                        await reader.read()
                    return
                elif fault.action == "reset":
                    status, out_headers, payload = await self._upstream(
                        method, target, headers, body
                    )
                    whole = self._response(status, out_headers, payload)
                    writer.write(whole[: len(whole) - (len(payload) + 1) // 2])  # half the body
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # (a cancelled handler ends quietly: the proxy is stopping)
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _upstream(
        self, method: bytes, target: bytes, headers: list[bytes], body: bytes
    ) -> tuple[bytes, list[bytes], bytes]:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            kept = [h for h in headers if h.partition(b":")[0].strip().lower() not in _HOP_HEADERS]
            if body:
                kept.append(b"Content-Length: %d" % len(body))
            request = b"%s %s HTTP/1.0\r\n" % (method, target)
            request += b"".join(h + b"\r\n" for h in kept) + b"Connection: close\r\n\r\n" + body
            up_writer.write(request)
            await up_writer.drain()
            raw = await up_reader.read()
        finally:
            up_writer.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 1)[1]
        out = [h for h in lines[1:] if h.partition(b":")[0].strip().lower() not in _HOP_HEADERS]
        return status, out, payload

    @staticmethod
    def _response(status: bytes, headers: list[bytes], payload: bytes) -> bytes:
        head = b"HTTP/1.1 " + status + b"\r\n"
        head += b"".join(h + b"\r\n" for h in headers)
        head += b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n" % len(payload)
        return head + payload

    async def _forward(
        self,
        method: bytes,
        target: bytes,
        headers: list[bytes],
        body: bytes,
        writer: asyncio.StreamWriter,
    ) -> None:
        status, out_headers, payload = await self._upstream(method, target, headers, body)
        writer.write(self._response(status, out_headers, payload))
        await writer.drain()
