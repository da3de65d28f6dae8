"""The connection layer under the Consul client: httpcore's pool on asyncio's own socket calls.

httpx's ``AsyncHTTPTransport`` runs httpcore over anyio. Every read and write of every request
then enters an anyio cancel scope, asks sniffio which event loop runs, and looks socket
attributes up through anyio's typed attributes. A long-poller pays that on each change, for one
small answer on a local connection: about a fifth of a GET's CPU (``bench/request_cost.py``).

What stays from httpx: httpcore, its engine. Its connection pool is ctemplate's connection budget
(one pool for every request), and its HTTP/1.1 layer (h11) parses every answer. What changes is
the network back end under the pool, a public httpcore interface: :class:`SocketBackend`
speaks to the socket with ``loop.sock_recv`` / ``loop.sock_sendall`` and bounds each step with
``asyncio.timeout``. Encrypted connections (``consul { ssl { enabled = true } }``) keep
httpcore's default back end, whose TLS layer is tested and whose cost is dwarfed by the cipher.

:class:`PoolTransport` lets an ``httpx.AsyncClient`` send through the same pool (writes, the
rare lookups), and :func:`httpx_errors` turns httpcore's exceptions into httpx's classes of the
same name, so that callers handle one family of errors whichever way a request went.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import httpcore
import httpx

__all__ = ["PoolTransport", "SocketBackend", "SocketStream", "httpx_errors"]

# httpcore's exceptions and httpx's counterparts; httpx names them alike.
_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
)


@contextlib.contextmanager
def httpx_errors() -> Iterator[None]:
    """Raise httpcore's errors as httpx's (the original stays the cause: the operating system's
    reason for a refused connection is found there)."""
    try:
        yield
    except Exception as exc:
        for core, ours in _ERRORS:
            if isinstance(exc, core):
                raise ours(str(exc)) from exc
        raise


class SocketStream(httpcore.AsyncNetworkStream):
    """One connected, non-blocking TCP socket."""

    __slots__ = ("_loop", "_sock")

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._loop = loop

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            if timeout is None:
                return await self._loop.sock_recv(self._sock, max_bytes)
            async with asyncio.timeout(timeout):
                return await self._loop.sock_recv(self._sock, max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(f"no data within {timeout}s") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._loop.sock_sendall(self._sock, buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(f"could not send within {timeout}s") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        self._sock.close()

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # The client gives a pool with this back end only plain-HTTP addresses.
        raise httpcore.ConnectError("TLS is not handled by this network back end")

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":
            return self._sock
        if info == "is_readable":
            # An idle connection that has something to read was closed (or spoken on) by the
            # agent: the pool must not reuse it.
            if self._sock.fileno() < 0:
                return True
            poller = select.poll()
            poller.register(self._sock, select.POLLIN)
            return bool(poller.poll(0))
        return None


class SocketBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network back end on the running asyncio loop: plain TCP only (ctemplate
    refuses ``unix://`` addresses; httpcore's base class refuses Unix sockets)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                # An ASCII name goes as bytes: a str would be encoded with the "idna" codec,
                # whose import costs ~5 ms and 0.4 MiB for nothing here.
                name: str | bytes = host.encode("ascii") if host.isascii() else host
                try:  # a numeric address (the usual 127.0.0.1) needs no resolver thread
                    infos = socket.getaddrinfo(
                        name, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
                    )
                except socket.gaierror:
                    infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
                error: OSError | None = None
                for family, kind, proto, _name, address in infos:
                    sock = socket.socket(family, kind, proto)
                    try:
                        sock.setblocking(False)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        for option in socket_options or ():
                            sock.setsockopt(*option)
                        if local_address:
                            sock.bind((local_address, 0))
                        await loop.sock_connect(sock, address)
                    except OSError as exc:
                        sock.close()
                        error = exc
                        continue
                    except BaseException:
                        sock.close()
                        raise
                    return SocketStream(sock, loop)
                raise error or OSError(f"no address for {host}")
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"no connection within {timeout}s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        with httpx_errors():
            await self._stream.aclose()


class PoolTransport(httpx.AsyncBaseTransport):
    """An httpx transport over a given httpcore pool (what ``AsyncHTTPTransport`` does, without
    building the pool itself: the client shares it with its direct GETs)."""

    def __init__(self, pool: httpcore.AsyncConnectionPool) -> None:
        self.pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with httpx_errors():
            resp = await self.pool.handle_async_request(core)
        return httpx.Response(
            status_code=resp.status,
            headers=resp.headers,
            stream=_Body(resp.stream),
            extensions=resp.extensions,
        )

    async def aclose(self) -> None:
        await self.pool.aclose()
