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

It is ``tests/tcp_relay.py``'s relay with counting hooks; it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass

from _common import add_tests_to_path

add_tests_to_path()
from tcp_relay import Relay  # noqa: E402

__all__ = ["Counters", "CountingProxy"]

_TERMINATOR = b"\r\n\r\n"


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


class CountingProxy(Relay):
    def __init__(self, upstream: str, *, host: str = "127.0.0.1") -> None:
        super().__init__(upstream, host=host)
        self._lock = threading.Lock()
        self._requests = 0
        self._up = 0
        self._down = 0
        self._open = 0
        self._peak = 0
        self._total = 0

    def snapshot(self) -> Counters:
        with self._lock:
            return Counters(
                self._requests, self._up, self._down, self._open, self._peak, self._total
            )

    def reset_peak(self) -> None:
        with self._lock:
            self._peak = self._open

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self._open += 1
            self._total += 1
            self._peak = max(self._peak, self._open)
        try:
            await super().handle(reader, writer)
        finally:
            with self._lock:
                self._open -= 1

    def tap(self, *, up: bool) -> Callable[[bytes], None]:
        if not up:
            return self._count_down
        carry = b""  # the end of the previous chunk, for a terminator split across two reads

        def count_up(data: bytes) -> None:
            nonlocal carry
            scan = carry + data
            carry = scan[-3:]
            with self._lock:
                self._up += len(data)
                self._requests += scan.count(_TERMINATOR)

        return count_up

    def _count_down(self, data: bytes) -> None:
        with self._lock:
            self._down += len(data)
