"""HTTP/1.1 to a plain-HTTP Consul agent: a connection pool on asyncio's socket calls, writing
each request and reading each answer itself (RFC 9112: the parts a client of one agent needs).

Why not httpx's client here: a long-poller's request is small and always the same shape (a GET,
or a PUT of a few bytes, whose whole answer is read), and httpx's generality is paid on every
change: its client models, then httpcore's pool and connection objects, their anyio locks (each
one a trip around the event loop) and cancel scopes, trace hooks and byte streams: on one small
answer ~0.5 ms of CPU above what h11, its HTTP/1.1 engine, costs (``bench/request_cost.py``).
h11's general state machine then cost ~0.23 ms per request more than the reading done here.
Encrypted agents keep httpx (``transport.py``): there the cipher dominates, and its TLS layer is
tested where ours would not be.

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
import re
import select
import socket
import time
from dataclasses import dataclass

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
    __slots__ = ("idle_since", "sock", "used")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
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
        data = _request(method, target, headers, body)
        # Only a GET is sent again (it changes nothing); only from a kept connection (a new one
        # that fails is the agent's failure); only before any byte of the answer arrived.
        again = retry and conn.used and method == b"GET"
        reader = _Reader(conn.sock, again, head_only=method == b"HEAD")
        try:
            async with asyncio.timeout(answer_within):
                try:
                    await reader.loop.sock_sendall(conn.sock, data)
                except OSError as exc:
                    if again:
                        raise _Retry from exc
                    raise WriteError(str(exc) or type(exc).__name__) from exc
                answer, reusable = await reader.answer()
        except TimeoutError as exc:
            raise AnswerDeadline(f"no complete answer within {answer_within:.1f}s") from exc
        except BadAnswer as exc:
            if reader.eof:
                where = "in the middle of the answer" if reader.status else "without answering"
                raise ReadError(f"the agent closed the connection {where}") from exc
            raise ReadError(f"the answer is not valid HTTP/1.1 ({exc})") from exc
        return answer, reusable


# -- the messages ------------------------------------------------------------------------------
#
# RFC 9112, for what a client of one agent needs: a request of known headers, and an answer read
# whole (its head, then a body framed by Content-Length, by chunks, or by the close). h11 did
# this before; its general state machine cost a quarter of a millisecond of CPU per request,
# the largest part of what one change costs ctemplate's event loop (bench/request_cost.py).

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
# Header lines as sent: a token, and a value of visible characters, spaces and tabs inside.
_HEADER_LINES = re.compile(
    rb"(?:"
    + _TOKEN
    + rb": (?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?\r\n)*"
)
_TARGET = re.compile(rb"[\x21-\x7e]+")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*)?")
_HEADER_LINE = re.compile(
    rb"(" + _TOKEN + rb"):[ \t]*((?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)[ \t]*"
)
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?")
_MAX_HEAD = 64 * 1024  # bytes of a status line and headers, or of a chunked body's trailer
_MAX_LINE = 4096  # bytes of a chunk-size line


class BadAnswer(ValueError):
    """The agent's answer is not HTTP/1.1 as RFC 9112 has it (or it closed the connection in
    the middle of it): ``str()`` says where."""


def _request(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes | None
) -> bytes:
    lines = b"".join([name + b": " + value + b"\r\n" for name, value in headers])
    count = len(headers)
    if body is not None:
        lines += b"content-length: " + str(len(body)).encode() + b"\r\n"
        count += 1
    if (
        _HEADER_LINES.fullmatch(lines) is None
        or lines.count(b"\n") != count  # no line break inside a value ("a\r\nX-Injected: 1")
        or _TARGET.fullmatch(target) is None
    ):
        # Never quoted: the value may be a token.
        raise LocalProtocolError("a header name or value is not allowed in HTTP")
    return method + b" " + target + b" HTTP/1.1\r\n" + lines + b"\r\n" + (body or b"")


class _Reader:
    """One answer read from a socket: ``await answer()``."""

    __slots__ = ("again", "buffer", "eof", "head_only", "heard", "loop", "sock", "status")

    def __init__(self, sock: socket.socket, again: bool, *, head_only: bool = False) -> None:
        self.sock = sock
        self.head_only = head_only  # the answer to a HEAD: no body, whatever its headers say
        self.loop = asyncio.get_running_loop()
        self.again = again  # a failure before any byte of the answer: send once more
        self.buffer = bytearray()
        self.status = 0
        self.heard = False  # some of the answer came
        self.eof = False  # the agent closed the connection

    async def _fill(self) -> None:
        """More bytes in ``buffer``; BadAnswer at the end of the stream."""
        try:
            chunk = await self.loop.sock_recv(self.sock, _CHUNK)
        except OSError as exc:
            if self.again and not self.heard:
                raise _Retry from exc
            raise ReadError(str(exc) or type(exc).__name__) from exc
        if not chunk:
            if self.again and not self.heard:
                raise _Retry
            self.eof = True
            raise BadAnswer("the connection was closed")
        self.heard = True
        self.buffer += chunk

    async def _find(self, separator: bytes, limit: int, what: str) -> int:
        """Where ``separator`` first begins in the buffer, reading until it is there; what
        comes before it is at most ``limit`` bytes (``what`` says what it is: "a chunk-size line
        is")."""
        start = 0
        while (end := self.buffer.find(separator, start)) < 0:
            if len(self.buffer) > limit:
                raise BadAnswer(f"{what} longer than {limit} bytes")
            start = max(0, len(self.buffer) - len(separator) + 1)
            await self._fill()
        if end > limit:
            raise BadAnswer(f"{what} longer than {limit} bytes")
        return end

    async def _head(self) -> bytes:
        """A status line and headers, without the blank line after them."""
        end = await self._find(b"\r\n\r\n", _MAX_HEAD, "the status line and headers are")
        head = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        return head

    async def answer(self) -> tuple[Answer, bool]:
        """The answer, and whether the connection may carry the next request."""
        while True:
            lines = (await self._head()).split(b"\r\n")
            first = _STATUS_LINE.fullmatch(lines[0])
            if first is None:
                raise BadAnswer(f"the status line is {bytes(lines[0][:80])!r}")
            status = int(first.group(2))
            if status >= 200:
                break
            if status == 101:
                raise BadAnswer("the agent switched protocols (101), which was not asked for")
            # An informational (1xx) answer is skipped: the final one follows.
        self.status = status
        headers: dict[bytes, bytes] = {}
        lengths: set[bytes] = set()
        codings: list[bytes] = []  # of every Transfer-Encoding line, in order
        keep = first.group(1) == b"1"
        for line in lines[1:]:
            m = _HEADER_LINE.fullmatch(line)
            if m is None:
                raise BadAnswer(f"a header line is {bytes(line[:80])!r}")
            name = m.group(1).lower()
            value = m.group(2)
            headers[name] = value
            if name == b"content-length":
                lengths.update(v.strip() for v in value.split(b","))
            elif name == b"transfer-encoding":
                codings.extend(c.strip().lower() for c in value.split(b","))
            elif name == b"connection" and b"close" in (
                t.strip().lower() for t in value.split(b",")
            ):
                keep = False
        if status in (204, 304) or self.head_only:
            body = b""
        elif codings:
            if codings != [b"chunked"]:
                coding = b", ".join(codings)[:40]
                raise BadAnswer(f"the transfer coding {coding!r} is not chunked")
            body = await self._chunked()
            if lengths:  # both framings: read by chunks, then closed (RFC 9112, 6.3)
                keep = False
        elif lengths:
            if len(lengths) > 1 or not all(v.isdigit() for v in lengths):
                raise BadAnswer("the Content-Length header is not one number")
            body = await self._exactly(int(next(iter(lengths))))
        else:  # read to the close, which ends the body (and the connection)
            while True:
                try:
                    await self._fill()
                except BadAnswer:
                    self.eof = False  # the close was the end of this body
                    break
            body = bytes(self.buffer)
            self.buffer.clear()
            keep = False
        # Bytes already read beyond the answer are no answer to the next request (a broken
        # agent's, or a desync): a connection holding them is not kept.
        return Answer(status, headers, body), keep and not self.buffer

    async def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self._fill()
        body = bytes(self.buffer[:n])
        del self.buffer[:n]
        return body

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            end = await self._find(b"\r\n", _MAX_LINE, "a chunk-size line is")
            m = _CHUNK_SIZE.fullmatch(self.buffer, 0, end)
            if m is None:
                raise BadAnswer(f"a chunk-size line is {bytes(self.buffer[: min(end, 40)])!r}")
            size = int(m.group(1), 16)
            del self.buffer[: end + 2]
            if size == 0:
                break
            while len(self.buffer) < size + 2:
                await self._fill()
            if self.buffer[size : size + 2] != b"\r\n":
                raise BadAnswer("a chunk does not end with CRLF where its size says")
            parts.append(bytes(self.buffer[:size]))
            del self.buffer[: size + 2]
        # The trailer: header lines (ignored) until an empty line.
        read = 0
        while (end := await self._find(b"\r\n", _MAX_HEAD, "the trailer is")) != 0:
            read += end + 2
            if read > _MAX_HEAD:
                raise BadAnswer(f"the trailer is longer than {_MAX_HEAD} bytes")
            del self.buffer[: end + 2]
        del self.buffer[:2]
        return b"".join(parts)
