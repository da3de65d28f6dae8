"""The HTTP client for Consul: blocking GETs straight to httpcore's connection pool, other
requests through an ``httpx.AsyncClient`` over the same pool (``transport.py``).

Errors are translated here, at the boundary, into :class:`ConsulError` whose message names the
method, path (the token is sent in a header and never appears), status, the first line of the
body and a hint. The client also keeps one availability state for all watches: the agent
cannot be reached (a refused or broken connection), logged once when it starts and once when it
ends, not once per request. A failure of one query while the agent answers (an error status,
an answer held or trickling past its bound) leaves that state alone: the watcher reports it
per query.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, urlencode

import httpcore
import httpx

from ..config import ConsulConfig
from ..errors import ConsulError
from .transport import PoolTransport, SocketBackend, httpx_errors

__all__ = ["ConsulClient", "ConsulResponse", "base_url"]

log = logging.getLogger(__name__)

# httpx logs one INFO line per request; a long-poller must not.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class ConsulResponse:
    """A decoded answer and the headers a blocking query needs for the next one."""

    data: Any  # decoded JSON, or None for a 404
    index: int  # X-Consul-Index (0 when absent)
    last_contact: float  # seconds, X-Consul-LastContact
    known_leader: bool  # X-Consul-KnownLeader


def base_url(config: ConsulConfig) -> str:
    address = config.address.strip()
    for scheme in ("http://", "https://"):
        if address.startswith(scheme):
            address = address[len(scheme) :]
            break
    scheme = "https" if config.ssl.enabled else "http"
    return f"{scheme}://{address.rstrip('/')}"


def _ssl_context(config: ConsulConfig) -> ssl.SSLContext | bool:
    s = config.ssl
    if not s.enabled:
        return False  # plain HTTP: loading the CA bundle would only cost ~40 ms at start
    if not s.verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=s.ca_cert, capath=s.ca_path)
    if s.cert:
        ctx.load_cert_chain(s.cert, s.key or None)
    return ctx


def _hint(status: int) -> str:
    if status == 403:
        return "check the ACL token (-consul-token or CONSUL_HTTP_TOKEN) and its policy"
    if status == 400:
        return "check the query in the template"
    if status == 429:
        return "the agent is rate limiting"
    if status >= 500:
        return "Consul had a server error (no leader?)"
    return "see the Consul agent's log"


class ConsulClient:
    """Blocking queries against one Consul agent.

    ``max_connections`` bounds the sockets held open to the agent (Consul closes connections past
    its per-client limit of 200 without an HTTP error).
    """

    def __init__(self, config: ConsulConfig, *, max_connections: int = 100) -> None:
        headers = {"User-Agent": "ctemplate"}
        if config.token:
            headers["X-Consul-Token"] = config.token
        auth = None
        if config.auth.enabled:
            auth = httpx.BasicAuth(config.auth.username, config.auth.password)
        self.base_url = base_url(config)
        verify = _ssl_context(config)
        extensions: dict[str, Any] = {}
        if config.ssl.enabled and config.ssl.server_name:
            extensions["sni_hostname"] = config.ssl.server_name
        self._extensions = extensions
        # One connection pool (the budget) for everything: blocking GETs go to it directly
        # (get()), other requests through the httpx client around it. Plain HTTP runs on
        # asyncio's socket calls (transport.SocketBackend); TLS on httpcore's default back end.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=verify if isinstance(verify, ssl.SSLContext) else None,
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            network_backend=None if config.ssl.enabled else SocketBackend(),
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            auth=auth,
            timeout=httpx.Timeout(10.0, pool=None),
            transport=PoolTransport(self._pool),
            trust_env=False,
        )
        # What every GET carries (the client's defaults, the token, basic auth), encoded once.
        # Compression is asked for only from an agent across a network (Consul compresses with
        # gzip alone). From one on this host it would cost CPU on both ends to save nothing: the
        # agent spends ~2.5 ms compressing a 169 KiB answer that loopback carries in far less.
        origin = httpx.URL(self.base_url)
        get_headers = dict(self._http.headers)
        get_headers["accept-encoding"] = "identity" if _is_loopback(origin.host) else "gzip"
        if config.auth.enabled:
            userpass = f"{config.auth.username}:{config.auth.password}".encode()
            get_headers["authorization"] = "Basic " + base64.b64encode(userpass).decode()
        self._get_headers = get_headers
        self._origin = (origin.raw_scheme, origin.raw_host, origin.port)
        self._raw_headers = [(b"host", origin.netloc), *_encode_headers(get_headers)]
        self.available = True
        # Set by the owner (the runner) from its retry settings: what the outage warning says
        # happens next, and whether each retry is worth a warning (a bounded retry budget).
        self.outage_note = "retrying with backoff, keeping the last good files"
        self.retry_limit = 0  # retries before giving up; 0 = none or unbounded
        self.retry_warn = False
        self._retry_logged = 0  # the highest retry already reported in this outage
        self.last_error = ""  # the latest failure of the current outage
        self.requests = 0  # all sent, for /metrics
        self.failed_requests = 0
        self._down_since = 0.0
        self._failures = 0

    def _raw_headers_with(self, headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
        """The GET headers with a watch's own (its token replaces the default one)."""
        mine = {k.lower(): v for k, v in headers.items()}
        merged = {k: v for k, v in self._get_headers.items() if k not in mine}
        return [self._raw_headers[0], *_encode_headers({**merged, **mine})]

    async def aclose(self) -> None:
        await self._http.aclose()  # and the pool under it

    async def get(
        self,
        path: str,
        params: Mapping[str, str | list[str]] | None = None,
        *,
        index: int = 0,
        wait: float = 60.0,
        stale: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> ConsulResponse:
        """One GET; with ``index > 0`` it blocks up to ``wait`` seconds for a change.

        A 404 is an answer (``data=None``), not an error: Consul sends it for absent keys.
        ``headers`` go with this request only (a watch's own token).
        """
        q: dict[str, str | list[str]] = dict(params or {})
        if index > 0:
            q["index"] = str(index)
            q["wait"] = f"{int(wait * 1000)}ms"
        if stale:
            q["stale"] = ""
        # Consul may hold the answer up to wait + wait/16 of jitter; never cut it short.
        read = wait + wait / 16 + 10.0 if index > 0 else 30.0
        timeout = {"connect": 10.0, "read": read, "write": 10.0, "pool": None}
        self.requests += 1
        # httpx's read timeout bounds each read; an answer trickling in a byte every few seconds
        # would never be cut. The whole answer gets the same bound, counted from the moment the
        # request goes out on a connection (not while it queues for one within the budget).
        deadline = asyncio.timeout(None)
        loop = asyncio.get_running_loop()

        async def trace(event: str, _info: Any) -> None:
            if event.endswith("send_request_headers.started"):
                deadline.reschedule(loop.time() + read)
                # Nothing more to learn from this request's events: httpcore looks the hook
                # up at each step, so the later steps (ten or so awaits) skip it.
                request.extensions.pop("trace", None)

        # Sent to the connection pool directly: what httpx adds around it (its client's URL
        # building from base, path and params in three parses, auth and redirect flows,
        # cookies; its request and response models) costs about a third of a GET's CPU and
        # does nothing for these requests.
        query = urlencode(q, doseq=True)
        target = _quote_path(path) + ("?" + query if query else "")
        scheme, host, port = self._origin
        try:
            request = httpcore.Request(
                b"GET",
                httpcore.URL(scheme=scheme, host=host, port=port, target=target.encode("ascii")),
                headers=self._raw_headers if not headers else self._raw_headers_with(headers),
                extensions={**self._extensions, "timeout": timeout, "trace": trace},
            )
            async with deadline:
                # Streamed into a local buffer: a read response holds its body in a reference
                # cycle (response <-> stream), so a large answer (megabytes for thousands of
                # instances) would stay in memory until the garbage collector ran.
                with httpx_errors():
                    resp = await self._pool.handle_async_request(request)
                    try:
                        stream = cast(AsyncIterable[bytes], resp.stream)
                        body = b"".join([chunk async for chunk in stream])
                    finally:
                        await resp.aclose()
                    answer = {k.lower(): v for k, v in resp.headers}
                    if answer.get(b"content-encoding") == b"gzip":
                        try:
                            body = zlib.decompress(body, wbits=31)
                        except zlib.error as exc:
                            raise httpx.DecodingError(f"the gzip body is corrupt: {exc}") from exc
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            err = ConsulError(
                f"GET {path}: no complete answer within {read:.1f}s (held or trickling in: "
                "a stuck agent, proxy or network?)"
            )
            self.failed_requests += 1
            raise err from exc
        except httpx.HTTPError as exc:
            reason = _os_reason(exc) or str(exc) or type(exc).__name__
            if isinstance(exc, httpx.LocalProtocolError):
                # Its message quotes the offending header, which may be the token's value.
                reason = "the request could not be sent (a header value is not valid)"
            elif isinstance(exc, httpx.ReadTimeout):
                reason = f"no answer within {read:.1f}s"
            elif isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError):
                reason = f"the connection broke during the answer ({reason})"
            hint = "is the agent running? (set -consul-addr or CONSUL_HTTP_ADDR)"
            if _is_tls_error(exc):
                hint = (
                    "check the TLS settings in consul.ssl (ca_cert, cert, key, server_name, "
                    "verify) or -consul-ssl-* flags"
                )
            err = ConsulError(
                f"GET {path}: cannot reach Consul at {self.base_url}: {reason}; {hint}"
            )
            if isinstance(exc, httpx.ReadTimeout):
                # One query held past its bound while the agent may answer every other one:
                # that query's failure (the watcher reports it), not an outage.
                self.failed_requests += 1
            else:
                self._note_failure(err)
            raise err from exc
        status = resp.status
        if status == 404 and path.startswith("/v1/kv/"):
            if b"x-consul-index" not in answer:
                # Consul sends its index with every KV answer, an absent key included: this is
                # some other server (a wrong -consul-addr), and waiting for the key is futile.
                self.failed_requests += 1
                raise ConsulError(
                    f"GET {path}: {self.base_url} answered 404 without Consul's headers; is it "
                    "a Consul agent? check -consul-addr (or CONSUL_HTTP_ADDR, consul.address)",
                    transient=False,
                    status=404,
                )
            data: Any = None
        elif status != 200:
            lines = body.decode("utf-8", "replace").strip().splitlines()
            first = lines[0][:200] if lines else ""
            if status == 500 and "no path to datacenter" in first.lower():
                # Consul answers fine: the query names a datacenter it does not know. An
                # error of this query alone, not an outage, and not worth a fast retry.
                self.failed_requests += 1
                dc = q.get("dc", "")
                message = await self._unknown_datacenter(path, dc if isinstance(dc, str) else "")
                raise ConsulError(message, transient=False, status=status)
            transient = status >= 500 or status == 429
            err = ConsulError(
                f"GET {path}: Consul answered {status}"
                + (f": {first}" if first else "")
                + f"; {_hint(status)}",
                transient=transient,
                status=status,
            )
            # The agent answered: it is reachable. The failure is this query's (a datacenter
            # that is gone, a 403, no leader); the watcher reports it per query.
            self.failed_requests += 1
            self._note_success()
            raise err
        else:
            try:
                data = json.loads(body)
            except ValueError as exc:
                err = ConsulError(f"GET {path}: Consul sent a body that is not JSON")
                self.failed_requests += 1
                raise err from exc
        self._note_success()
        return ConsulResponse(
            data=data,
            index=_int(answer.get(b"x-consul-index")),
            last_contact=_int(answer.get(b"x-consul-lastcontact")) / 1000.0,
            known_leader=answer.get(b"x-consul-knownleader", b"true") == b"true",
        )

    async def _unknown_datacenter(self, path: str, dc: str) -> str:
        """The message for a query naming a datacenter Consul does not know, with the ones it
        knows (one more request; "" if that fails too)."""
        known = ""
        with contextlib.suppress(httpx.HTTPError, ValueError):
            resp = await self._http.get("/v1/catalog/datacenters", extensions=self._extensions)
            if resp.status_code == 200:
                names = resp.json()
                if isinstance(names, list):
                    known = ", ".join(str(n) for n in names)
        return (
            f"GET {path}: unknown datacenter {json.dumps(dc)} (Consul: No path to datacenter); "
            + (f"known datacenters: {known}; " if known else "")
            + "check the @datacenter part of the query in the template"
        )

    async def write(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        *,
        content: bytes | None = None,
        json_body: Any = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, Any]:
        """One PUT or DELETE (sessions, locks, transactions): the status and the decoded JSON
        body (``None`` when it is not JSON). A status outside ``ok`` is a :class:`ConsulError`
        naming the method and path; the body it quotes is Consul's message, never what was sent.
        """
        self.requests += 1
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            kwargs["content"] = json.dumps(json_body).encode()
        elif content is not None:
            kwargs["content"] = content
        try:
            resp = await self._http.request(
                method,
                path,
                params=params or {},
                timeout=httpx.Timeout(10.0, read=30.0, pool=None),
                extensions=self._extensions,
                **kwargs,
            )
        except httpx.HTTPError as exc:
            reason = _os_reason(exc) or str(exc) or type(exc).__name__
            err = ConsulError(f"{method} {path}: cannot reach Consul at {self.base_url}: {reason}")
            self.failed_requests += 1
            raise err from exc
        if resp.status_code not in ok:
            self.failed_requests += 1
            lines = resp.text.strip().splitlines()
            first = lines[0][:200] if lines else ""
            raise ConsulError(
                f"{method} {path}: Consul answered {resp.status_code}"
                + (f": {first}" if first else "")
                + f"; {_hint(resp.status_code)}",
                transient=resp.status_code >= 500 or resp.status_code == 429,
                status=resp.status_code,
            )
        try:
            data = resp.json()
        except ValueError:
            data = None
        return resp.status_code, data

    def _note_failure(self, err: ConsulError) -> None:
        """Log the start of an outage once; later failures only at debug level."""
        self.failed_requests += 1
        self._failures += 1
        self.last_error = str(err)
        if self.available:
            self.available = False
            self._down_since = time.monotonic()
            self._retry_logged = 0
            log.warning("(consul) %s; %s", err, self.outage_note)
        else:
            log.debug("(consul) still failing: %s", err)

    def note_retry(self, attempt: int, delay: float) -> None:
        """Report a retry about to happen, once per retry number across all watches (each
        watch retries on its own; they fail together when the agent is unreachable)."""
        if attempt <= self._retry_logged or self.available:
            return
        self._retry_logged = attempt
        of = f"/{self.retry_limit}" if self.retry_limit else ""
        reason = _short(self.last_error)
        log.log(
            logging.WARNING if self.retry_warn else logging.DEBUG,
            "(consul) %s: still failing (%s); attempt %d%s, next in %s",
            self.base_url,
            reason,
            attempt,
            of,
            _seconds(delay),
        )

    def _note_success(self) -> None:
        if not self.available:
            down = time.monotonic() - self._down_since
            log.info(
                "(consul) %s is reachable again after %.1fs (%d failed requests)",
                self.base_url,
                down,
                self._failures,
            )
        self.available = True
        self._failures = 0


def _is_tls_error(exc: BaseException) -> bool:
    """Whether an httpx error was caused by the TLS handshake (certificates, names)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "SSL" in str(exc) or "certificate" in str(exc)


def _os_reason(exc: BaseException) -> str:
    """The operating system's words for a failed connection (``connection refused``, ``name or
    service not known``), found in the chain of causes; "" if there is none."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):  # an OSError whose errno is not the OS's: keep its text
            return ""
        if isinstance(seen, OSError) and isinstance(seen.errno, int) and seen.errno != 0:
            if isinstance(seen, socket.gaierror):
                text = f"cannot resolve the host name: {seen.strerror or seen.errno}"
            else:
                text = os.strerror(seen.errno)
            return text[:1].lower() + text[1:]
        seen = seen.__cause__ or seen.__context__
    return ""


def _short(error: str) -> str:
    """The reason in an error message of :meth:`ConsulClient.get`, without the hint."""
    head = error.split("; ", 1)[0]
    if "cannot reach Consul at " in head:  # "... at http://host:port: reason"
        return head.split("cannot reach Consul at ", 1)[1].partition(": ")[2] or head
    if "Consul answered " in head:
        return head.split("Consul answered ", 1)[1]
    return head


def _is_loopback(host: str) -> bool:
    """Whether the agent's host is this one (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _quote_path(path: str) -> str:
    """The path as it goes on the wire: characters a URL path may not hold percent-encoded,
    escapes already there kept (what httpx does to a URL it is given)."""
    if _PATH_OK.fullmatch(path):
        return path
    return quote(path, safe="/%!$&'()*+,;=:@-._~")


_PATH_OK = re.compile(r"[A-Za-z0-9/%!$&'()*+,;=:@\-._~]*")


def _encode_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """Header names and values as bytes; a value that cannot be sent (not ASCII, as httpx
    requires) is an error naming no value (it may be a token)."""
    try:
        return [(k.encode("ascii"), v.encode("ascii")) for k, v in headers.items()]
    except UnicodeEncodeError as exc:
        raise httpx.LocalProtocolError("a header value is not ASCII") from exc


def _seconds(delay: float) -> str:
    return f"{delay:.1f}s" if delay < 10 else f"{delay:.0f}s"


def _int(value: bytes | str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
