"""HTTP/1.1 to a plain-HTTP Consul agent: a connection pool on asyncio's socket calls, with h11
(httpx's own HTTP/1.1 engine) reading and writing every message.

Why not httpx's client here: a long-poller's request is small and always the same shape (a GET,
or a PUT of a few bytes, whose whole answer is read), and httpx's generality is paid on every
change: its client models, then httpcore's pool and connection objects, their anyio locks (each
one a trip around the event loop) and cancel scopes, trace hooks and byte streams. On one small
answer that is ~0.5 ms of CPU above what h11 itself costs (``bench/request_cost.py``), most of a
change's cost in the network layer. Encrypted agents keep httpx (``transport.py``): there the
cipher dominates, and its TLS layer is tested where ours would not be.

:class:`Pool` is the connection budget: at most ``max_connections`` sockets open to the agent,
requests beyond it queue in order. A connection is kept for the next request when an answer was
read whole and neither side asked to close; an idle one is dropped when it has been idle past
``keepalive_expiry`` or the agent has closed it (it is readable). A GET that fails on a kept
connection before any byte of the answer arrived is sent once more on a new one: the agent may
close an idle connection at the moment it is reused, as Go's own client allows for.

Failures are :class:`HTTPError` subclasses whose text is the reason; the operating system's
error, if any, stays the cause (the client quotes it: "connection refused").
"""

from __future__ import annotations

import asyncio
import collections
import select
import socket
import time
from dataclasses import dataclass

import h11

__all__ = [
    "Answer",
    "AnswerDeadline",
    "ConnectError",
    "HTTPError",
    "LocalProtocolError",
    "Pool",
    "ReadError",
    "WriteError",
]

_CHUNK = 65536


class HTTPError(Exception):
    """A request that got no complete answer; ``str()`` is the reason."""


class ConnectError(HTTPError):
    """No connection could be made (refused, unreachable, no address, timed out)."""


class WriteError(HTTPError):
    """The request could not be sent on a connection."""


class ReadError(HTTPError):
    """The connection broke or the agent broke the protocol during the answer."""


class LocalProtocolError(HTTPError):
    """The request itself cannot be sent (a header value HTTP does not allow)."""


class AnswerDeadline(HTTPError):
    """The whole answer did not arrive within its bound (held, or trickling in)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[bytes, bytes]  # names in lower case; a repeated header keeps its last value
    body: bytes


class _Connection:
    __slots__ = ("h11", "idle_since", "sock", "used")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        self.used = False  # has carried a request already (a failure may be a stale close)

    def stale(self, now: float, expiry: float) -> bool:
        """Idle too long, or closed (or spoken on) by the agent while idle."""
        if now - self.idle_since > expiry or self.sock.fileno() < 0:
            return True
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        self.sock.close()


class _Retry(Exception):
    """A kept connection was found closed before the answer began: send again on a new one."""


class Pool:
    """Connections to one ``host:port``, at most ``max_connections`` open at once."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_connections: int,
        keepalive_expiry: float = 5.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.max_connections = max(1, max_connections)
        self.keepalive_expiry = keepalive_expiry
        self.connect_timeout = connect_timeout
        self.opened = 0  # connections made, for tests and figures
        self._open = 0  # sockets open or being opened, in use or idle
        self._idle: list[_Connection] = []
        # Requests waiting for a connection, first in line first; each is given a kept
        # connection, or None: a slot of the budget in which to make one.
        self._waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None = None,
        *,
        answer_within: float,
    ) -> Answer:
        """Send one request and read its whole answer, within ``answer_within`` seconds counted
        from the moment it has a connection (not while it queues for one)."""
        conn = await self._acquire()
        for attempt in (1, 2):
            try:
                answer, reusable = await self._exchange(
                    conn, method, target, headers, body, answer_within, retry=attempt == 1
                )
            except _Retry:
                # The slot stays this request's: a new connection in it, neither another kept
                # one (the agent may be closing those as well, and this sending is the last)
                # nor a place at the back of the queue.
                conn.close()
                conn = await self._open_in_slot()
                continue
            except BaseException:
                self._discard(conn)
                raise
            if reusable:
                self._release(conn)
            else:
                self._discard(conn)
            return answer
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
            self._open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectError("the client is closed"))

    # -- the budget ----------------------------------------------------------------------------

    async def _acquire(self) -> _Connection:
        """A kept connection if one is alive, else a new one within the budget. When the budget
        is spent the request queues; a connection kept or a slot freed then goes straight to the
        first in line, never to a request that comes later (one re-polling at once, say)."""
        if self._closed:
            raise ConnectError("the client is closed")
        while self._waiters and self._waiters[0].done():
            self._waiters.popleft()  # cancelled, its task not yet run to remove it
        if not self._waiters:
            now = time.monotonic()
            while self._idle:
                conn = self._idle.pop()  # the most recently used: the least likely closed
                if not conn.stale(now, self.keepalive_expiry):
                    return conn
                conn.close()
                self._open -= 1
            if self._open < self.max_connections:
                self._open += 1
                return await self._open_in_slot()
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            granted = await waiter
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._pass_on(waiter.result())  # what its turn brought goes to the next in line
            raise
        if self._closed:
            self._pass_on(granted)
            raise ConnectError("the client is closed")
        if granted is None:  # a slot of the budget: the connection is made in it
            return await self._open_in_slot()
        if granted.stale(time.monotonic(), self.keepalive_expiry):
            granted.close()
            return await self._open_in_slot()
        return granted

    async def _open_in_slot(self) -> _Connection:
        """A new connection in a slot already counted in ``_open``; the slot is passed on if the
        connection cannot be made."""
        try:
            if self._closed:
                raise ConnectError("the client is closed")
            sock = await self._connect(asyncio.get_running_loop())
        except BaseException:
            self._pass_on(None)
            raise
        self.opened += 1
        return _Connection(sock)

    def _release(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        conn.used = True
        self._pass_on(conn)

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._pass_on(None)

    def _pass_on(self, granted: _Connection | None) -> None:
        """A kept connection, or (None) the slot of one closed, goes to the first request in
        line; with none waiting, the connection joins the idle ones, the slot returns."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(granted)
                return
        if granted is None:
            self._open -= 1
        elif self._closed:
            granted.close()
            self._open -= 1
        else:
            self._idle.append(granted)

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        try:
            async with asyncio.timeout(self.connect_timeout):
                # An ASCII name goes as bytes: a str would be encoded with the "idna" codec,
                # whose import costs ~5 ms and 0.4 MiB for nothing here.
                host = self.host
                name: str | bytes = host.encode("ascii") if host.isascii() else host
                try:  # a numeric address (the usual 127.0.0.1) needs no resolver thread
                    infos = socket.getaddrinfo(
                        name, self.port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
                    )
                except socket.gaierror:
                    infos = await loop.getaddrinfo(name, self.port, type=socket.SOCK_STREAM)
                error: OSError | None = None
                for family, kind, proto, _name, address in infos:
                    sock = socket.socket(family, kind, proto)
                    try:
                        sock.setblocking(False)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        await loop.sock_connect(sock, address)
                    except OSError as exc:
                        sock.close()
                        error = exc
                        continue
                    except BaseException:
                        sock.close()
                        raise
                    return sock
                raise error or OSError(f"no address for {host}")
        except TimeoutError as exc:
            raise ConnectError(f"no connection within {self.connect_timeout:g}s") from exc
        except OSError as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc

    # -- one exchange --------------------------------------------------------------------------

    async def _exchange(
        self,
        conn: _Connection,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        answer_within: float,
        *,
        retry: bool,
    ) -> tuple[Answer, bool]:
        """The request on ``conn`` and its answer, and whether ``conn`` may be kept."""
        protocol = conn.h11
        if body is not None:
            headers = [*headers, (b"content-length", str(len(body)).encode())]
        try:
            data = protocol.send(h11.Request(method=method, target=target, headers=headers))
            if body:
                data += protocol.send(h11.Data(data=body))
            data += protocol.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            # h11's message quotes the offending value, which may be a token: not kept, not even
            # as the cause (a debug log's traceback would print it).
            raise LocalProtocolError("a header name or value is not allowed in HTTP") from None
        # Only a GET is sent again (it changes nothing); only from a kept connection (a new one
        # that fails is the agent's failure); only before any byte of the answer arrived.
        again = retry and conn.used and method == b"GET"
        loop = asyncio.get_running_loop()
        sock = conn.sock
        status = 0
        answer_headers: dict[bytes, bytes] = {}
        parts: list[bytes] = []
        heard = eof = False  # some of the answer came; the agent closed the connection
        try:
            async with asyncio.timeout(answer_within):
                try:
                    await loop.sock_sendall(sock, data)
                except OSError as exc:
                    if again:
                        raise _Retry from exc
                    raise WriteError(str(exc) or type(exc).__name__) from exc
                while True:
                    event = protocol.next_event()
                    if event is h11.NEED_DATA:
                        try:
                            chunk = await loop.sock_recv(sock, _CHUNK)
                        except OSError as exc:
                            if again and not heard:
                                raise _Retry from exc
                            raise ReadError(str(exc) or type(exc).__name__) from exc
                        if not chunk:
                            if again and not heard:
                                raise _Retry
                            eof = True
                        heard = True
                        protocol.receive_data(chunk)
                        continue
                    kind = type(event)
                    if kind is h11.Data:
                        parts.append(event.data)  # type: ignore[union-attr]
                    elif kind is h11.Response:
                        status = event.status_code  # type: ignore[union-attr]
                        answer_headers = dict(event.headers)  # type: ignore[union-attr]
                    elif kind is h11.EndOfMessage:
                        break
                    # An informational (1xx) answer is skipped: the final one follows.
        except TimeoutError as exc:
            raise AnswerDeadline(f"no complete answer within {answer_within:.1f}s") from exc
        except h11.RemoteProtocolError as exc:
            if eof:
                where = "in the middle of the answer" if status else "without answering"
                raise ReadError(f"the agent closed the connection {where}") from exc
            raise ReadError(f"the answer is not valid HTTP/1.1 ({exc})") from exc
        # Bytes already read beyond the answer are no answer to the next request (a broken
        # agent's, or a desync): a connection holding them is not kept.
        reusable = (
            protocol.our_state is h11.DONE
            and protocol.their_state is h11.DONE
            and not protocol.trailing_data[0]
        )
        if reusable:
            protocol.start_next_cycle()
        body_bytes = b"".join(parts) if len(parts) != 1 else bytes(parts[0])
        return Answer(status, answer_headers, body_bytes), reusable
