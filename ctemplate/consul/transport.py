"""HTTPS to Consul through httpx: the counterpart of :class:`~.http11.Pool` for an agent with
``consul { ssl { enabled = true } }``, with the same ``request()`` and the same errors.

httpx's TLS layer (certificate checks, client certificates, SNI) is tested, and on an encrypted
connection the cipher costs more than the client's bookkeeping, so this path keeps it whole. Its
connection pool is the budget (``max_connections``); httpx's errors become :mod:`.http11`'s
classes of the same meaning, the original kept as the cause (the client looks there for the
operating system's reason and for a TLS error). Imported only for such an agent.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import httpx

from .http11 import (
    Answer,
    AnswerDeadline,
    ConnectError,
    HTTPError,
    LocalProtocolError,
    ReadError,
    WriteError,
)

__all__ = ["HttpxPool"]


class HttpxPool:
    """Requests to one origin over httpx, at most ``max_connections`` open at once."""

    def __init__(
        self,
        base_url: str,
        ssl_context: ssl.SSLContext,
        *,
        max_connections: int,
        sni_hostname: str = "",
    ) -> None:
        self._extensions: dict[str, Any] = {}
        if sni_hostname:
            self._extensions["sni_hostname"] = sni_hostname
        self._base = base_url
        self._client = httpx.AsyncClient(
            verify=ssl_context,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=5.0,
            ),
            timeout=httpx.Timeout(10.0, pool=None),
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None = None,
        *,
        answer_within: float,
    ) -> Answer:
        # The whole answer is bounded from the moment the request goes out on a connection,
        # not while it queues for one within the budget (httpx bounds each read only).
        deadline = asyncio.timeout(None)
        loop = asyncio.get_running_loop()

        async def trace(event: str, _info: Any) -> None:
            if event.endswith("send_request_headers.started"):
                deadline.reschedule(loop.time() + answer_within)

        request = httpx.Request(
            method.decode(),
            self._base + target.decode("ascii"),
            headers=[(k, v) for k, v in headers if k != b"host"],
            content=body,
            extensions={
                **self._extensions,
                "trace": trace,
                "timeout": {"connect": 10.0, "read": None, "write": 10.0, "pool": None},
            },
        )
        try:
            async with deadline:
                resp = await self._client.send(request, stream=True)
                try:
                    content = await resp.aread()
                finally:
                    await resp.aclose()
        except TimeoutError as exc:
            if deadline.expired():
                raise AnswerDeadline(f"no complete answer within {answer_within:.1f}s") from exc
            raise
        except httpx.LocalProtocolError:
            # Not chained: httpx's message quotes the offending value, which may be a token.
            raise LocalProtocolError("a header name or value is not allowed in HTTP") from None
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc
        # httpx has undone any compression already: the body is given as it was before.
        answer = {k.lower(): v for k, v in resp.headers.raw if k.lower() != b"content-encoding"}
        return Answer(resp.status_code, answer, content)


def _mapped(exc: httpx.HTTPError) -> HTTPError:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ConnectError(reason)
    if isinstance(exc, httpx.WriteError | httpx.WriteTimeout):
        return WriteError(reason)
    return ReadError(reason)
