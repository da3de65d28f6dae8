"""An HTTP fault proxy for tests: sits on loopback between ctemplate and a Consul agent.

It forwards every request unchanged unless a fault was queued for it::

    with FaultProxy(consul.http_addr) as proxy:
        proxy.inject("status", count=5, status=500)     # the next 5 requests get a 500
        proxy.inject("status", count=3, status=429)
        proxy.inject("slow", count=2, delay=1.5)        # answered, but late
        proxy.inject("reset", count=3)                  # half the body, then a TCP RST
        proxy.inject("hang", count=1, blocking=True)    # a blocking query that never returns
        proxy.inject("trickle", count=1, delay=2.0)     # the answer, one byte every 2 s
        ... run ctemplate with -consul-addr proxy.addr ...
        proxy.log                                       # [(path_and_query, action), ...]

Faults apply in the order queued, each to the next ``count`` matching requests (``blocking=True``
matches only blocking queries, i.e. requests with ``index=``). Requests go upstream as HTTP/1.0
on a fresh connection (so the answer is never chunked) and come back to the client as HTTP/1.1
with a ``Content-Length`` on its kept-alive connection.

It is ``tcp_relay.Relay`` answering HTTP itself: the relay runs its own asyncio loop in a
background thread, so plain synchronous tests drive it. Only loopback addresses are used.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from dataclasses import dataclass

from tcp_relay import Relay

__all__ = ["FaultProxy"]

_HOP_HEADERS = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length"}


@dataclass
class _Fault:
    action: str  # status | slow | reset | hang | trickle
    count: int
    blocking: bool = False
    status: int = 500
    delay: float = 1.0
    only: str = ""  # fire only on requests whose target contains this ("": any)


class FaultProxy(Relay):
    def __init__(self, upstream: str, *, host: str = "127.0.0.1") -> None:
        super().__init__(upstream, host=host)
        self.log: list[tuple[str, str]] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()

    # -- control (any thread) --------------------------------------------------------------

    def inject(
        self,
        action: str,
        count: int = 1,
        *,
        blocking: bool = False,
        status: int = 500,
        delay: float = 1.0,
        only: str = "",
    ) -> None:
        if action not in ("status", "slow", "reset", "hang", "trickle"):
            raise ValueError(action)
        with self._lock:
            self._faults.append(_Fault(action, count, blocking, status, delay, only))

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

    # -- the proxy (the relay's thread and loop) -------------------------------------------

    def _take(self, target: str) -> _Fault | None:
        blocking = "index=" in target
        with self._lock:
            for fault in self._faults:
                if fault.blocking and not blocking:
                    continue
                if fault.only and fault.only not in target:
                    continue
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # one request per turn; the client closing ends it
            head = await reader.readuntil(b"\r\n\r\n")
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
            elif fault.action == "trickle":
                status, out_headers, payload = await self._upstream(method, target, headers, body)
                whole = self._response(status, out_headers, payload)
                try:
                    for i in range(len(whole)):
                        writer.write(whole[i : i + 1])
                        await writer.drain()
                        await asyncio.sleep(fault.delay)
                except OSError:  # the client gave up and closed
                    return
            elif fault.action == "hang":
                await reader.read()  # never answer; wait for the client to give up and close
                return
            elif fault.action == "reset":
                status, out_headers, payload = await self._upstream(method, target, headers, body)
                whole = self._response(status, out_headers, payload)
                writer.write(whole[: len(whole) - (len(payload) + 1) // 2])  # half the body
                await writer.drain()
                await asyncio.sleep(0.05)
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return

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
