"""ctemplate's own HTTP/1.1 pool (``ctemplate.consul.http11``) against real servers on loopback.

Each server is a plain listening socket in a daemon thread whose every connection is served by a
script that reads the request bytes and writes exactly the bytes a test chooses: well-formed
answers split at awkward places, answers cut short, garbage, silence, a close at the worst moment.
The tests assert what a caller of :class:`Pool` sees (the answer, the exception class and its text)
and what the server saw (connections accepted, requests read, the client's close).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from ctemplate.consul.http11 import (
    Answer,
    AnswerDeadline,
    BadAnswer,
    ConnectError,
    LocalProtocolError,
    Pool,
    ReadError,
)

T = TypeVar("T")

_HOST = [(b"host", b"127.0.0.1")]


class _Peer:
    """One accepted connection, as the server's script sees it."""

    def __init__(self, sock: socket.socket, index: int, stopping: threading.Event) -> None:
        self.sock = sock
        self.index = index  # 0 for the first connection the server accepted
        self.stopping = stopping  # set when the test ends: a waiting script returns
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body) of each request read
        self.client_closed = threading.Event()  # the client's end of stream was read
        self.done = threading.Event()  # the script returned and the socket is closed
        self._buffer = b""

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.client_closed.set()
            return False
        self._buffer += chunk
        return True

    def read_request(self) -> tuple[bytes, bytes] | None:
        """The next request's head (without the blank line) and body; None if the client closed."""
        while b"\r\n\r\n" not in self._buffer:
            if not self._fill():
                return None
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        length = int(_header(head, b"content-length") or b"0")
        while len(self._buffer) < length:
            if not self._fill():
                return None
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        self.requests.append((head, body))
        return head, body

    def send(self, *pieces: bytes, pause: float = 0.0) -> None:
        """Each piece in its own write (TCP_NODELAY: its own segment), ``pause`` s apart."""
        for i, piece in enumerate(pieces):
            if i and pause:
                time.sleep(pause)
            self.sock.sendall(piece)

    def wait_for_close(self) -> None:
        """Read and drop whatever comes until the client closes (or the test ends)."""
        while self._fill():
            pass

    def hold(self, seconds: float) -> None:
        self.stopping.wait(seconds)


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


class _Server:
    """A TCP server on 127.0.0.1 serving each connection with ``script(peer)`` in a daemon thread;
    the connection is closed when the script returns."""

    def __init__(self, script: Callable[[_Peer], None]) -> None:
        self.script = script
        self.peers: list[_Peer] = []
        self.open_now = 0  # connections accepted and not yet closed by the server
        self.most_open = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def accepted(self) -> int:
        return len(self.peers)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(5.0)  # no script blocks for longer
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                peer = _Peer(sock, len(self.peers), self._stopping)
                self.peers.append(peer)
                self.open_now += 1
                self.most_open = max(self.most_open, self.open_now)
            thread = threading.Thread(target=self._serve, args=(peer,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, peer: _Peer) -> None:
        try:
            self.script(peer)
        except OSError:
            pass  # the client went away (broken pipe, reset): several tests do that on purpose
        except BaseException as exc:  # a mistake in the script: the test fails with it
            self.errors.append(exc)
        finally:
            with self._lock:
                peer.sock.close()
                self.open_now -= 1
            peer.done.set()

    def stop_listening(self) -> None:
        """New connections are refused from now on (accepted ones go on)."""
        self._listener.close()

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, kind: object, *_rest: object) -> None:
        self._stopping.set()
        with self._lock:
            for peer in self.peers:
                with contextlib.suppress(OSError):  # wakes a script blocked in recv
                    peer.sock.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(2)
        for thread in self._threads:
            thread.join(2)
        self._listener.close()
        if kind is None and self.errors:
            raise self.errors[0]


def _run(scenario: Coroutine[Any, Any, T]) -> T:
    """Run a test's coroutine in a new event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(scenario, 10.0))


@contextlib.asynccontextmanager
async def _pool(server: _Server, **options: Any) -> AsyncIterator[Pool]:
    options.setdefault("max_connections", 4)
    pool = Pool("127.0.0.1", server.port, **options)
    try:
        yield pool
    finally:
        await pool.aclose()


async def _get(pool: Pool, target: bytes = b"/", within: float = 5.0) -> Answer:
    return await pool.request(b"GET", target, _HOST, answer_within=within)


async def _put(pool: Pool, body: bytes | None, target: bytes = b"/") -> Answer:
    return await pool.request(b"PUT", target, _HOST, body, answer_within=5.0)


async def _until(event: threading.Event, timeout: float = 5.0) -> bool:
    """Whether a server thread's event is set within ``timeout`` s (polled: the loop stays free)."""
    deadline = time.monotonic() + timeout
    while not event.is_set():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def _ok(body: bytes, *headers: bytes) -> bytes:
    head = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), head, body)


def _target(head: bytes) -> bytes:
    return head.split(b" ")[1]


def _echo_target(peer: _Peer) -> None:
    """Keep-alive: answer every request with its target, until the client closes."""
    while (request := peer.read_request()) is not None:
        peer.send(_ok(_target(request[0])))


# -- reading answers ---------------------------------------------------------------------------


def test_a_content_length_answer_comes_whole_with_lower_case_headers() -> None:
    def script(peer: _Peer) -> None:
        while peer.read_request() is not None:
            peer.send(_ok(b"hello world", b"X-Consul-Index: 7", b"X-Twice: a", b"x-twice: b"))

    async def scenario(server: _Server) -> Answer:
        async with _pool(server) as pool:
            return await _get(pool, b"/v1/kv/a?index=3")

    with _Server(script) as server:
        answer = _run(scenario(server))
    assert answer == Answer(
        200,
        {b"content-length": b"11", b"x-consul-index": b"7", b"x-twice": b"b"},
        b"hello world",
    )
    head = server.peers[0].requests[0][0]
    assert head.split(b"\r\n")[0] == b"GET /v1/kv/a?index=3 HTTP/1.1"
    assert _header(head, b"host") == b"127.0.0.1"


def test_a_chunked_answer_split_across_writes_at_awkward_places() -> None:
    pieces = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Consul-Index: 9\r\n\r\n",
        b"5",  # a chunk-size line apart from its CRLF
        b"\r",  # inside the CRLF
        b"\nhel",
        b"lo\r",
        b"\n1",  # inside the chunk size 0x10
        b"0;ext=1\r\n0123456789",
        b"abcdef\r\n",
        b"3\r\n!!!\r\n0\r",
        b"\n\r",  # inside the final CRLF
        b"\n",
    ]

    def script(peer: _Peer) -> None:
        peer.read_request()
        peer.send(*pieces, pause=0.02)
        _echo_target(peer)  # the same connection goes on: the chunked framing ended exactly

    async def scenario(server: _Server) -> tuple[Answer, Answer]:
        async with _pool(server) as pool:
            return await _get(pool), await _get(pool, b"/next")

    with _Server(script) as server:
        first, second = _run(scenario(server))
    assert first == Answer(
        200,
        {b"transfer-encoding": b"chunked", b"x-consul-index": b"9"},
        b"hello0123456789abcdef!!!",
    )
    assert second.body == b"/next"
    assert server.accepted == 1


def test_a_body_over_one_mebibyte_is_read_whole() -> None:
    big = bytes(range(256)) * 6144 + b"tail!"  # 1.5 MiB and a few bytes

    def script(peer: _Peer) -> None:
        while peer.read_request() is not None:
            peer.send(_ok(big))

    async def scenario(server: _Server) -> Answer:
        async with _pool(server) as pool:
            return await _get(pool)

    with _Server(script) as server:
        answer = _run(scenario(server))
    assert answer.headers[b"content-length"] == str(len(big)).encode()
    assert len(answer.body) == len(big) and answer.body == big


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\n",
    ],
    ids=["http11-connection-close", "http10"],
)
def test_an_answer_without_length_is_read_to_the_close_and_not_reused(head: bytes) -> None:
    def script(peer: _Peer) -> None:
        if peer.index == 0:
            peer.read_request()
            peer.send(head, b"to the ", b"end", pause=0.02)
            return  # the close ends the body
        _echo_target(peer)

    async def scenario(server: _Server) -> tuple[Answer, Answer, int]:
        async with _pool(server) as pool:
            first = await _get(pool)
            second = await _get(pool, b"/again")
            return first, second, pool.opened

    with _Server(script) as server:
        first, second, opened = _run(scenario(server))
    assert (first.status, first.body) == (200, b"to the end")
    assert second.body == b"/again"
    assert (opened, server.accepted) == (2, 2)


def test_an_informational_answer_is_skipped() -> None:
    def script(peer: _Peer) -> None:
        while peer.read_request() is not None:
            peer.send(b"HTTP/1.1 100 Continue\r\n\r\n", _ok(b"ok"), pause=0.02)

    async def scenario(server: _Server) -> list[Answer]:
        async with _pool(server) as pool:
            return [await _get(pool), await _get(pool)]

    with _Server(script) as server:
        answers = _run(scenario(server))
    assert [(a.status, a.body) for a in answers] == [(200, b"ok"), (200, b"ok")]
    assert server.accepted == 1


# -- keeping connections -----------------------------------------------------------------------


def test_three_sequential_requests_share_one_connection() -> None:
    async def scenario(server: _Server) -> tuple[list[bytes], int, int]:
        async with _pool(server) as pool:
            bodies = [(await _get(pool, b"/%d" % i)).body for i in range(3)]
            return bodies, pool.opened, pool.open_connections

    with _Server(_echo_target) as server:
        bodies, opened, open_now = _run(scenario(server))
    assert bodies == [b"/0", b"/1", b"/2"]
    assert (server.accepted, opened, open_now) == (1, 1, 1)
    assert [_target(head) for head, _body in server.peers[0].requests] == [b"/0", b"/1", b"/2"]


def test_connection_close_from_the_agent_means_a_new_connection_next() -> None:
    # The server says "close" but leaves its socket open: the client is the one to close it.
    def script(peer: _Peer) -> None:
        if peer.index == 0:
            peer.read_request()
            peer.send(_ok(b"bye", b"Connection: close"))
            peer.wait_for_close()
            return
        _echo_target(peer)

    async def scenario(server: _Server) -> tuple[Answer, Answer, bool]:
        async with _pool(server) as pool:
            first = await _get(pool)
            closed = await _until(server.peers[0].client_closed)
            return first, await _get(pool, b"/next"), closed

    with _Server(script) as server:
        first, second, closed = _run(scenario(server))
    assert (first.body, first.headers[b"connection"]) == (b"bye", b"close")
    assert closed, "the client did not close the connection the agent asked to close"
    assert second.body == b"/next"
    assert server.accepted == 2


@pytest.mark.parametrize("speaks", [False, True], ids=["closes", "speaks"])
@pytest.mark.parametrize("method", [b"GET", b"PUT"])
def test_an_idle_connection_the_agent_closed_is_not_reused(method: bytes, speaks: bool) -> None:
    # A PUT is never sent again: it succeeds only if the dead connection is left alone. An agent
    # that speaks on an idle connection (an unasked-for 408) has given it up as well.
    def script(peer: _Peer) -> None:
        if peer.index == 0:
            peer.read_request()
            peer.send(_ok(b"first"))
            if speaks:
                peer.hold(0.05)  # after the client has read the answer: it lies idle
                peer.send(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
                peer.wait_for_close()
            return  # closed quietly, as an agent's idle timeout does
        _echo_target(peer)

    async def scenario(server: _Server) -> tuple[Answer, Answer]:
        async with _pool(server, max_connections=1) as pool:
            first = await _get(pool)
            if not speaks:
                assert await _until(server.peers[0].done)
            await asyncio.sleep(0.15)  # the close (or the 408) reaches the client's socket
            second = await pool.request(method, b"/next", _HOST, b"x", answer_within=5.0)
            return first, second

    with _Server(script) as server:
        first, second = _run(scenario(server))
    assert (first.body, second.body) == (b"first", b"/next")
    assert server.accepted == 2
    assert server.peers[1].requests[0][1] == b"x"


def test_a_connection_idle_past_keepalive_expiry_is_closed_and_replaced() -> None:
    async def scenario(server: _Server) -> tuple[Answer, bool, Answer]:
        async with _pool(server, keepalive_expiry=0.2) as pool:
            await _get(pool)
            await asyncio.sleep(0.4)
            second = await _get(pool, b"/later")
            return second, await _until(server.peers[0].client_closed), await _get(pool)

    with _Server(_echo_target) as server:
        second, closed, third = _run(scenario(server))
    assert (second.body, third.body) == (b"/later", b"/")
    assert closed  # the expired connection was closed, not just forgotten
    assert server.accepted == 2


def _close_on_second_request(peer: _Peer, reset: bool = False) -> None:
    """The first request is answered; the second is read, then the connection closes unanswered
    (an agent closing an idle connection just as the client reuses it), by a reset if asked."""
    peer.read_request()
    peer.send(_ok(b"first"))
    peer.read_request()
    if reset:  # no lingering: close() sends RST instead of FIN
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_a_get_on_a_kept_connection_closed_unanswered_is_sent_once_more(reset: bool) -> None:
    def script(peer: _Peer) -> None:
        if peer.index == 0:
            _close_on_second_request(peer, reset)
        else:
            _echo_target(peer)

    async def scenario(server: _Server) -> Answer:
        async with _pool(server) as pool:
            await _get(pool)
            return await _get(pool, b"/again")

    with _Server(script) as server:
        answer = _run(scenario(server))
    assert answer.body == b"/again"
    assert server.accepted == 2
    assert [_target(h) for h, _b in server.peers[0].requests] == [b"/", b"/again"]
    assert [_target(h) for h, _b in server.peers[1].requests] == [b"/again"]


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_a_put_on_a_kept_connection_closed_unanswered_is_not_sent_again(reset: bool) -> None:
    async def scenario(server: _Server) -> tuple[ReadError, int]:
        async with _pool(server) as pool:
            await _get(pool)
            with pytest.raises(ReadError) as err:
                await _put(pool, b"once")
            return err.value, pool.open_connections

    with _Server(lambda peer: _close_on_second_request(peer, reset)) as server:
        error, open_now = _run(scenario(server))
    assert type(error) is ReadError
    if reset:
        assert isinstance(error.__cause__, ConnectionResetError)
        assert str(error) == str(error.__cause__)  # "[Errno 104] Connection reset by peer"
    else:
        assert str(error) == "the agent closed the connection without answering"
    assert server.accepted == 1
    assert server.peers[0].requests[1][1] == b"once"
    assert open_now == 0


def test_the_get_sent_again_goes_on_a_new_connection_not_another_kept_one() -> None:
    # Two kept connections, and the agent closes each as it is reused: the second sending must
    # not go to the other kept connection (it would meet the same fate, and not be retried).
    def script(peer: _Peer) -> None:
        if peer.index >= 2:
            _echo_target(peer)
            return
        peer.read_request()
        peer.hold(0.1)  # both first requests are in flight together: two connections
        peer.send(_ok(b"first"))
        peer.read_request()  # then closed unanswered

    async def scenario(server: _Server) -> Answer:
        async with _pool(server, max_connections=2) as pool:
            await asyncio.gather(_get(pool), _get(pool))
            assert pool.open_connections == 2
            return await _get(pool, b"/again")

    with _Server(script) as server:
        answer = _run(scenario(server))
    assert answer.body == b"/again"
    assert server.accepted == 3
    assert _target(server.peers[2].requests[0][0]) == b"/again"


def test_bytes_beyond_the_answer_are_not_taken_as_the_next_answer() -> None:
    # A broken agent sends its answer twice: the copy must not become the next request's answer.
    def script(peer: _Peer) -> None:
        if peer.index == 0:
            peer.read_request()
            peer.send(_ok(b"v1") + _ok(b"v1"))
            peer.wait_for_close()
            return
        while peer.read_request() is not None:
            peer.send(_ok(b"v2"))

    async def scenario(server: _Server) -> tuple[Answer, Answer]:
        async with _pool(server) as pool:
            return await _get(pool), await _get(pool)

    with _Server(script) as server:
        first, second = _run(scenario(server))
    assert (first.body, second.body) == (b"v1", b"v2")
    assert server.accepted == 2


# -- the connection budget and cancellation ----------------------------------------------------


def test_five_concurrent_requests_within_two_connections() -> None:
    in_flight = [0, 0]  # now, most
    lock = threading.Lock()

    def script(peer: _Peer) -> None:
        while (request := peer.read_request()) is not None:
            with lock:
                in_flight[0] += 1
                in_flight[1] = max(in_flight[1], in_flight[0])
            peer.hold(0.3)
            with lock:
                in_flight[0] -= 1
            peer.send(_ok(_target(request[0])))

    async def scenario(server: _Server) -> list[bytes]:
        async with _pool(server, max_connections=2) as pool:
            answers = await asyncio.gather(*(_get(pool, b"/%d" % i) for i in range(5)))
            assert pool.open_connections <= 2
            return [a.body for a in answers]

    with _Server(script) as server:
        bodies = _run(scenario(server))
    assert bodies == [b"/0", b"/1", b"/2", b"/3", b"/4"]
    assert server.most_open == 2 and server.accepted == 2
    assert in_flight[1] == 2


def _hold_then_echo(peer: _Peer) -> None:
    while (request := peer.read_request()) is not None:
        peer.hold(0.3)
        peer.send(_ok(_target(request[0])))


def test_a_request_cancelled_while_queued_gives_way() -> None:
    async def scenario(server: _Server) -> tuple[bytes, bytes, bool]:
        async with _pool(server, max_connections=1) as pool:
            first = asyncio.create_task(_get(pool, b"/a"))
            await asyncio.sleep(0.05)
            queued = asyncio.create_task(_get(pool, b"/b"))
            later = asyncio.create_task(_get(pool, b"/c"))
            await asyncio.sleep(0.05)
            queued.cancel()
            a, c = await asyncio.wait_for(asyncio.gather(first, later), 5)
            return a.body, c.body, queued.cancelled()

    with _Server(_hold_then_echo) as server:
        a, c, cancelled = _run(scenario(server))
    assert (a, c, cancelled) == (b"/a", b"/c", True)
    assert [_target(h) for h, _b in server.peers[0].requests] == [b"/a", b"/c"]
    assert server.accepted == 1


def test_a_request_cancelled_just_as_its_turn_came_passes_the_turn_on() -> None:
    # The first request's release hands the connection's turn to the next in line; that one is
    # cancelled before it can run. The one after it must still get the connection.
    async def scenario(server: _Server) -> tuple[bytes, bytes, bool]:
        async with _pool(server, max_connections=1) as pool:
            tasks: dict[str, asyncio.Task[Answer]] = {}

            async def first() -> Answer:
                answer = await _get(pool, b"/a")
                tasks["b"].cancel()  # no await since the release: its turn was just given
                return answer

            tasks["a"] = asyncio.create_task(first())
            await asyncio.sleep(0.05)
            tasks["b"] = asyncio.create_task(_get(pool, b"/b"))
            tasks["c"] = asyncio.create_task(_get(pool, b"/c"))
            a = await asyncio.wait_for(tasks["a"], 5)
            c = await asyncio.wait_for(tasks["c"], 3)  # a lost turn would hang here
            return a.body, c.body, tasks["b"].cancelled()

    with _Server(_hold_then_echo) as server:
        a, c, cancelled = _run(scenario(server))
    assert (a, c, cancelled) == (b"/a", b"/c", True)
    assert [_target(h) for h, _b in server.peers[0].requests] == [b"/a", b"/c"]


def test_queued_requests_get_the_connection_in_order_before_a_newcomer() -> None:
    # One connection: /a holds it, /b then /c queue. The moment /a's answer is back its task asks
    # again (/n), as a loop re-polling at once would: /n queues behind /b and /c, it does not take
    # the connection from under the one whose turn came.
    def script(peer: _Peer) -> None:
        while (request := peer.read_request()) is not None:
            peer.hold(0.1)
            peer.send(_ok(_target(request[0])))

    async def scenario(server: _Server) -> list[bytes]:
        async with _pool(server, max_connections=1) as pool:

            async def again() -> Answer:
                await _get(pool, b"/a")
                return await _get(pool, b"/n")

            tasks = [asyncio.create_task(again())]
            await asyncio.sleep(0.05)
            for target in (b"/b", b"/c"):
                tasks.append(asyncio.create_task(_get(pool, target)))
                await asyncio.sleep(0.01)
            answers = await asyncio.gather(*tasks)
            return [a.body for a in answers]

    with _Server(script) as server:
        bodies = _run(scenario(server))
    assert bodies == [b"/n", b"/b", b"/c"]
    assert [_target(h) for h, _b in server.peers[0].requests] == [b"/a", b"/b", b"/c", b"/n"]


def test_a_request_cancelled_while_its_answer_is_pending_closes_its_connection() -> None:
    def script(peer: _Peer) -> None:
        if peer.index == 0:
            peer.read_request()
            peer.wait_for_close()  # never answers
            return
        _echo_target(peer)

    async def scenario(server: _Server) -> tuple[bool, bool, int, Answer, int]:
        async with _pool(server, max_connections=1) as pool:
            task = asyncio.create_task(_get(pool, b"/held"))
            while not (server.peers and server.peers[0].requests):
                await asyncio.sleep(0.01)
            assert pool.open_connections == 1
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            closed = await _until(server.peers[0].client_closed)
            open_after_cancel = pool.open_connections
            answer = await _get(pool, b"/next")  # the budget's one slot is free again
            return task.cancelled(), closed, open_after_cancel, answer, pool.opened

    with _Server(script) as server:
        cancelled, closed, open_after, answer, opened = _run(scenario(server))
    assert cancelled and closed
    assert open_after == 0
    assert (answer.body, opened, server.accepted) == (b"/next", 2, 2)


def test_when_the_agent_goes_away_each_queued_request_fails_in_turn() -> None:
    # The slot of the closed connection passes from one queued request to the next as each
    # fails to connect: every one gets its error, none waits forever.
    def script(peer: _Peer) -> None:
        request = peer.read_request()
        assert request is not None
        peer.hold(0.2)
        peer.send(_ok(_target(request[0]), b"Connection: close"))

    async def scenario(server: _Server) -> tuple[list[object], int]:
        async with _pool(server, max_connections=1) as pool:
            tasks = [asyncio.create_task(_get(pool, b"/a"))]
            await asyncio.sleep(0.05)
            tasks += [asyncio.create_task(_get(pool, t)) for t in (b"/b", b"/c")]
            await asyncio.sleep(0.05)
            server.stop_listening()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            return results, pool.open_connections

    with _Server(script) as server:
        (a, b, c), open_now = _run(scenario(server))
    assert isinstance(a, Answer) and a.body == b"/a"
    for error in (b, c):
        assert isinstance(error, ConnectError)
        assert isinstance(error.__cause__, ConnectionRefusedError)
    assert open_now == 0 and server.accepted == 1


# -- the answer's deadline ---------------------------------------------------------------------


def test_an_answer_trickling_in_hits_its_deadline() -> None:
    sent = [0]

    def script(peer: _Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
        for _ in range(50):
            if peer.stopping.wait(0.2):
                return
            peer.send(b"x")  # fails once the client has given up and closed
            sent[0] += 1

    async def scenario(server: _Server) -> tuple[AnswerDeadline, float, bool, int]:
        async with _pool(server) as pool:
            start = time.monotonic()
            with pytest.raises(AnswerDeadline) as err:
                await _get(pool, within=0.5)
            elapsed = time.monotonic() - start
            # The script ends when a write fails: the client closed the connection.
            closed = await _until(server.peers[0].done)
            return err.value, elapsed, closed, pool.open_connections

    with _Server(script) as server:
        error, elapsed, closed, open_now = _run(scenario(server))
    assert str(error) == "no complete answer within 0.5s"
    assert 0.45 <= elapsed < 3.0
    assert sent[0] >= 1  # bytes kept coming: the bound is on the whole answer, not on silence
    assert closed and open_now == 0


def test_time_queued_for_a_connection_is_not_counted_in_the_deadline() -> None:
    def script(peer: _Peer) -> None:
        while (request := peer.read_request()) is not None:
            if _target(request[0]) == b"/slow":
                peer.hold(1.0)
            peer.send(_ok(_target(request[0])))

    async def scenario(server: _Server) -> tuple[bytes, bytes, float]:
        async with _pool(server, max_connections=1) as pool:
            slow = asyncio.create_task(_get(pool, b"/slow"))
            while not (server.peers and server.peers[0].requests):
                await asyncio.sleep(0.01)
            start = time.monotonic()
            fast = await _get(pool, b"/fast", within=0.5)  # queues ~1 s, then answered at once
            waited = time.monotonic() - start
            return (await slow).body, fast.body, waited

    with _Server(script) as server:
        slow, fast, waited = _run(scenario(server))
    assert (slow, fast) == (b"/slow", b"/fast")
    assert waited > 0.6  # longer than its own bound, all of it in the queue


# -- connecting and sending --------------------------------------------------------------------


def test_a_refused_connection_is_a_connect_error_caused_by_the_os_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed

    async def scenario() -> tuple[ConnectError, int, int]:
        pool = Pool("127.0.0.1", port, max_connections=2)
        try:
            with pytest.raises(ConnectError) as err:
                await _get(pool)
            return err.value, pool.opened, pool.open_connections
        finally:
            await pool.aclose()

    error, opened, open_now = _run(scenario())
    assert isinstance(error.__cause__, ConnectionRefusedError)
    assert error.__cause__.errno == errno.ECONNREFUSED
    assert str(error) == str(error.__cause__)
    assert (opened, open_now) == (0, 0)


def test_a_connection_not_made_in_time_is_a_connect_error() -> None:
    # A listener that never accepts and whose queue is full: the kernel drops the next SYN.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(3):  # the queue holds one or two, depending on the kernel
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)

        async def scenario() -> tuple[ConnectError, float, int]:
            pool = Pool("127.0.0.1", port, max_connections=1, connect_timeout=0.3)
            try:
                start = time.monotonic()
                with pytest.raises(ConnectError) as err:
                    await _get(pool)
                return err.value, time.monotonic() - start, pool.open_connections
            finally:
                await pool.aclose()

        try:
            error, elapsed, open_now = _run(scenario())
        finally:
            for filler in fillers:
                filler.close()
    assert str(error) == "no connection within 0.3s"
    assert 0.25 <= elapsed < 3.0 and open_now == 0


def test_a_host_name_is_resolved() -> None:
    # "localhost" may come first as ::1, where nothing listens: the next address is tried.
    async def scenario(server: _Server) -> Answer:
        pool = Pool("localhost", server.port, max_connections=1)
        try:
            return await _get(pool, b"/by-name")
        finally:
            await pool.aclose()

    with _Server(_echo_target) as server:
        answer = _run(scenario(server))
    assert answer.body == b"/by-name"


def test_a_header_value_with_a_newline_is_refused_without_quoting_it() -> None:
    token = b"s3cr3t-token\r\nX-Injected: 1"

    async def scenario(server: _Server) -> LocalProtocolError:
        async with _pool(server) as pool:
            with pytest.raises(LocalProtocolError) as err:
                await pool.request(
                    b"GET", b"/", [*_HOST, (b"x-consul-token", token)], answer_within=5.0
                )
            for peer in list(server.peers):  # any connection made is closed, nothing sent
                assert await _until(peer.client_closed)
            return err.value

    with _Server(_echo_target) as server:
        error = _run(scenario(server))
    assert str(error) == "a header name or value is not allowed in HTTP"
    # Nothing of the value anywhere a debug log would print: message, cause, traceback.
    logged = "".join(traceback.format_exception(error))
    assert "s3cr3t" not in logged
    assert all(peer.requests == [] for peer in server.peers)


@pytest.mark.parametrize(
    "body", [b"\x00binary\r\n\r\nnot a header\xff" * 1000, b""], ids=["bytes", "empty"]
)
def test_a_put_body_arrives_exactly_with_its_length(body: bytes) -> None:
    async def scenario(server: _Server) -> Answer:
        async with _pool(server) as pool:
            return await _put(pool, body, b"/v1/kv/k")

    with _Server(_echo_target) as server:
        answer = _run(scenario(server))
    assert answer.body == b"/v1/kv/k"
    head, received = server.peers[0].requests[0]
    assert head.split(b"\r\n")[0] == b"PUT /v1/kv/k HTTP/1.1"
    assert _header(head, b"content-length") == str(len(body)).encode()
    assert received == body


# -- malformed and broken answers --------------------------------------------------------------


def test_garbage_instead_of_a_status_line_is_a_read_error() -> None:
    def script(peer: _Peer) -> None:
        peer.read_request()
        peer.send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        peer.wait_for_close()

    async def scenario(server: _Server) -> ReadError:
        async with _pool(server) as pool:
            with pytest.raises(ReadError) as err:
                await _get(pool)
            return err.value

    with _Server(script) as server:
        error = _run(scenario(server))
    assert isinstance(error.__cause__, BadAnswer)
    assert (
        str(error) == "the answer is not valid HTTP/1.1 (the status line is b'SSH-2.0-OpenSSH_9.6')"
    )
    assert server.accepted == 1


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (
            b"HTTP/1.1 200 OK\r\nX-Consul-Index 7\r\nContent-Length: 0\r\n\r\n",
            "a header line is b'X-Consul-Index 7'",
        ),
        (
            b"HTTP/1.1 200 OK\r\n folded: value\r\nContent-Length: 0\r\n\r\n",
            "a header line is b' folded: value'",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
            "the transfer coding b'gzip' is not chunked",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            "the transfer coding b'gzip, chunked' is not chunked",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            "the Content-Length header is not one number",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "the Content-Length header is not one number",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
            "a chunk-size line is b'zz'",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            "a chunk does not end with CRLF where its size says",
        ),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "the agent switched protocols (101)"),
        (b"HTTP/2 200\r\n\r\n", "the status line is b'HTTP/2 200'"),
        (
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
            "the status line and headers are longer than 65536 bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 5000,
            "a chunk-size line is longer than 4096 bytes",
        ),
    ],
    ids=[
        "no-colon",
        "folded",
        "gzip-coding",
        "gzip-then-chunked",
        "two-lengths",
        "negative-length",
        "bad-chunk-size",
        "chunk-too-long",
        "switching",
        "http2",
        "huge-head",
        "huge-chunk-line",
    ],
)
def test_an_answer_that_breaks_http11_is_a_read_error_naming_what(
    answer: bytes, reason: str
) -> None:
    def script(peer: _Peer) -> None:
        peer.read_request()
        peer.send(answer)
        peer.wait_for_close()

    async def scenario(server: _Server) -> tuple[ReadError, int]:
        async with _pool(server) as pool:
            with pytest.raises(ReadError) as err:
                await _get(pool)
            return err.value, pool.open_connections

    with _Server(script) as server:
        error, open_now = _run(scenario(server))
    assert str(error).startswith(f"the answer is not valid HTTP/1.1 ({reason}")
    assert isinstance(error.__cause__, BadAnswer)
    assert open_now == 0  # the connection is not kept


def test_trailers_after_chunks_and_answers_without_a_body_keep_the_connection() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length:3  \r\nX-Empty:\r\n\r\nxyz",
    ]

    def script(peer: _Peer) -> None:
        for answer in answers:
            peer.read_request()
            peer.send(answer)
        _echo_target(peer)

    async def scenario(server: _Server) -> list[Answer]:
        async with _pool(server) as pool:
            return [await _get(pool) for _ in range(len(answers) + 1)]

    with _Server(script) as server:
        got = _run(scenario(server))
    assert [(a.status, a.body) for a in got] == [
        (200, b"abc"),
        (204, b""),
        (304, b""),
        (200, b"xyz"),
        (200, b"/"),
    ]
    assert got[3].headers == {b"content-length": b"3", b"x-empty": b""}
    assert server.accepted == 1


def test_an_answer_framed_both_ways_is_read_by_chunks_and_its_connection_closed() -> None:
    # RFC 9112, 6.3: Transfer-Encoding wins, and the connection is not used again (the two
    # framings disagreeing is how a request is smuggled past a proxy).
    both = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )

    def script(peer: _Peer) -> None:
        if peer.index == 0:
            peer.read_request()
            peer.send(both)
            peer.wait_for_close()
            return
        _echo_target(peer)

    async def scenario(server: _Server) -> tuple[Answer, Answer]:
        async with _pool(server) as pool:
            return await _get(pool), await _get(pool, b"/next")

    with _Server(script) as server:
        first, second = _run(scenario(server))
    assert (first.body, second.body) == (b"hello", b"/next")
    assert server.accepted == 2


@pytest.mark.parametrize("kept", [False, True], ids=["new-connection", "kept-connection"])
@pytest.mark.parametrize(
    "cut",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n5\r\nab",
    ],
    ids=["content-length", "chunked"],
)
def test_a_close_in_the_middle_of_the_answer_is_a_read_error(cut: bytes, kept: bool) -> None:
    # Never sent again, even a GET on a kept connection: part of the answer had come.
    def script(peer: _Peer) -> None:
        if kept:
            peer.read_request()
            peer.send(_ok(b"first"))
        peer.read_request()
        peer.send(cut)

    async def scenario(server: _Server) -> tuple[ReadError, int]:
        async with _pool(server) as pool:
            if kept:
                await _get(pool)
            with pytest.raises(ReadError) as err:
                await _get(pool)
            return err.value, pool.open_connections

    with _Server(script) as server:
        error, open_now = _run(scenario(server))
    assert str(error) == "the agent closed the connection in the middle of the answer"
    assert (server.accepted, open_now) == (1, 0)


def test_a_new_connection_closed_before_any_answer_is_not_retried() -> None:
    def script(peer: _Peer) -> None:
        peer.read_request()  # then closed unanswered, on the first request of a connection

    async def scenario(server: _Server) -> ReadError:
        async with _pool(server) as pool:
            with pytest.raises(ReadError) as err:
                await _get(pool)
            return err.value

    with _Server(script) as server:
        error = _run(scenario(server))
    assert str(error) == "the agent closed the connection without answering"
    assert server.accepted == 1


# -- closing the pool --------------------------------------------------------------------------


def test_after_aclose_idle_connections_are_closed_and_requests_refused() -> None:
    async def scenario(server: _Server) -> tuple[bool, int, ConnectError]:
        pool = Pool("127.0.0.1", server.port, max_connections=2)
        await _get(pool)
        await pool.aclose()
        closed = await _until(server.peers[0].client_closed)
        with pytest.raises(ConnectError) as err:
            await _get(pool)
        return closed, pool.open_connections, err.value

    with _Server(_echo_target) as server:
        closed, open_now, error = _run(scenario(server))
    assert closed and open_now == 0
    assert str(error) == "the client is closed"
    assert server.accepted == 1


def test_aclose_refuses_the_queued_and_closes_the_busy_connection_once_answered() -> None:
    async def scenario(server: _Server) -> tuple[bytes, ConnectError, bool, int]:
        pool = Pool("127.0.0.1", server.port, max_connections=1)
        busy = asyncio.create_task(_get(pool, b"/busy"))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(_get(pool, b"/queued"))
        await asyncio.sleep(0.05)
        await pool.aclose()
        with pytest.raises(ConnectError) as err:
            await queued
        answer = await busy
        closed = await _until(server.peers[0].client_closed)
        return answer.body, err.value, closed, pool.open_connections

    with _Server(_hold_then_echo) as server:
        body, error, closed, open_now = _run(scenario(server))
    assert body == b"/busy"
    assert str(error) == "the client is closed"
    assert closed and open_now == 0
    assert [_target(h) for h, _b in server.peers[0].requests] == [b"/busy"]
