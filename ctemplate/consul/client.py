"""The HTTP client for Consul: every request through one connection pool, the budget. A plain-HTTP
agent is spoken to by ctemplate's own HTTP/1.1 pool (``http11.py``), an encrypted one through httpx
(``transport.py``, imported only then); both take the same requests and raise the same errors.

Errors are translated here, at the boundary, into :class:`ConsulError` whose message names the
method, path (the token is sent in a header and never appears), status, the first line of the
body and a hint. The client also keeps one availability state for all watches: the agent
cannot be reached (a refused or broken connection), logged once when it starts and once when it
ends, not once per request. A failure of one query while the agent answers (an error status,
an answer held or trickling past its bound) leaves that state alone: the watcher reports it
per query.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

from ..config import ConsulConfig
from ..errors import ConsulError
from .http11 import Answer, AnswerDeadline, HTTPError, LocalProtocolError, Pool, ReadError

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


class _Sender(Protocol):
    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None = None,
        *,
        answer_within: float,
    ) -> Answer: ...

    async def aclose(self) -> None: ...


def base_url(config: ConsulConfig) -> str:
    address = config.address.strip()
    for scheme in ("http://", "https://"):
        if address.startswith(scheme):
            address = address[len(scheme) :]
            break
    scheme = "https" if config.ssl.enabled else "http"
    return f"{scheme}://{address.rstrip('/')}"


def _ssl_context(config: ConsulConfig) -> ssl.SSLContext:
    s = config.ssl
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
        self.base_url = base_url(config)
        parts = urlsplit(self.base_url)
        host = parts.hostname or "127.0.0.1"
        try:
            port = parts.port or (443 if config.ssl.enabled else 80)
        except ValueError as exc:  # the configuration checks the address; this is a backstop
            raise ConsulError(f"consul.address: {config.address!r} has no valid port") from exc
        self._pool: _Sender
        if config.ssl.enabled:
            from .transport import HttpxPool

            self._pool = HttpxPool(
                self.base_url,
                _ssl_context(config),
                max_connections=max_connections,
                sni_hostname=config.ssl.server_name or "",
            )
        else:
            self._pool = Pool(host, port, max_connections=max_connections)
        # What every request carries (the token, basic auth), encoded once. Compression is asked
        # for only from an agent across a network (Consul compresses with gzip alone). From one
        # on this host it would cost CPU on both ends to save nothing: the agent spends ~2.5 ms
        # compressing a 169 KiB answer that loopback carries in far less.
        headers = {
            "user-agent": "ctemplate",
            "accept": "*/*",
            "accept-encoding": "identity" if _is_loopback(host) else "gzip",
        }
        if config.token:
            headers["x-consul-token"] = config.token
        if config.auth.enabled:
            userpass = f"{config.auth.username}:{config.auth.password}".encode()
            headers["authorization"] = "Basic " + base64.b64encode(userpass).decode()
        self._headers = headers
        self._raw_headers = [(b"host", parts.netloc.encode("ascii")), *_encode_headers(headers)]
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
        """The request headers with a watch's own (its token replaces the default one)."""
        mine = {k.lower(): v for k, v in headers.items()}
        merged = {k: v for k, v in self._headers.items() if k not in mine}
        return [self._raw_headers[0], *_encode_headers({**merged, **mine})]

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def get(
        self,
        path: str,
        params: Mapping[str, str | list[str]] | None = None,
        *,
        index: int = 0,
        wait: float = 60.0,
        stale: bool = False,
        headers: Mapping[str, str] | None = None,
        decode: Callable[[bytes], Any] = json.loads,
    ) -> ConsulResponse:
        """One GET; with ``index > 0`` it blocks up to ``wait`` seconds for a change.

        A 404 is an answer (``data=None``), not an error: Consul sends it for absent keys.
        ``headers`` go with this request only (a watch's own token). ``decode`` turns a 200's
        body into ``data`` (a loop's :class:`.answers.AnswerDecoder`).
        """
        q: dict[str, str | list[str]] = dict(params or {})
        if index > 0:
            q["index"] = str(index)
            q["wait"] = f"{int(wait * 1000)}ms"
        if stale:
            q["stale"] = ""
        # Consul may hold the answer up to wait + wait/16 of jitter; never cut it short. The
        # bound is on the whole answer (an answer trickling in a byte every few seconds is cut
        # too), counted from the moment the request has a connection, not while it queues for
        # one within the budget.
        read = wait + wait / 16 + 10.0 if index > 0 else 30.0
        self.requests += 1
        query = urlencode(q, doseq=True)
        target = _quote_path(path) + ("?" + query if query else "")
        try:
            answer = await self._pool.request(
                b"GET",
                target.encode("ascii"),
                self._raw_headers if not headers else self._raw_headers_with(headers),
                answer_within=read,
            )
            body = _decoded(answer)
        except AnswerDeadline as exc:
            err = ConsulError(
                f"GET {path}: no complete answer within {read:.1f}s (held or trickling in: "
                "a stuck agent, proxy or network?)"
            )
            # One query held past its bound while the agent may answer every other one: that
            # query's failure (the watcher reports it), not an outage.
            self.failed_requests += 1
            raise err from exc
        except HTTPError as exc:
            reason = _os_reason(exc) or str(exc) or type(exc).__name__
            if isinstance(exc, LocalProtocolError):
                # Never the value itself: it may be the token.
                reason = "the request could not be sent (a header value is not valid)"
            elif isinstance(exc, ReadError):
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
            self._note_failure(err)
            raise err from exc
        status = answer.status
        if status == 404 and path.startswith("/v1/kv/"):
            if b"x-consul-index" not in answer.headers:
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
            first = _first_line(body)
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
                data = decode(body)
            except ValueError as exc:
                err = ConsulError(f"GET {path}: Consul sent a body that is not JSON")
                self.failed_requests += 1
                raise err from exc
        self._note_success()
        headers_in = answer.headers
        return ConsulResponse(
            data=data,
            index=_int(headers_in.get(b"x-consul-index")),
            last_contact=_int(headers_in.get(b"x-consul-lastcontact")) / 1000.0,
            known_leader=headers_in.get(b"x-consul-knownleader", b"true") == b"true",
        )

    async def _unknown_datacenter(self, path: str, dc: str) -> str:
        """The message for a query naming a datacenter Consul does not know, with the ones it
        knows (one more request; "" if that fails too)."""
        known = ""
        try:
            answer = await self._pool.request(
                b"GET", b"/v1/catalog/datacenters", self._raw_headers, answer_within=30.0
            )
            names = json.loads(_decoded(answer)) if answer.status == 200 else None
        except (HTTPError, ValueError):
            names = None
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
        body = content if json_body is None else json.dumps(json_body).encode()
        query = urlencode(params or {})
        target = _quote_path(path) + ("?" + query if query else "")
        try:
            answer = await self._pool.request(
                method.encode("ascii"),
                target.encode("ascii"),
                self._raw_headers,
                b"" if body is None else body,
                answer_within=30.0,
            )
            text = _decoded(answer)
        except HTTPError as exc:
            reason = _os_reason(exc) or str(exc) or type(exc).__name__
            err = ConsulError(f"{method} {path}: cannot reach Consul at {self.base_url}: {reason}")
            self.failed_requests += 1
            raise err from exc
        status = answer.status
        if status not in ok:
            self.failed_requests += 1
            first = _first_line(text)
            raise ConsulError(
                f"{method} {path}: Consul answered {status}"
                + (f": {first}" if first else "")
                + f"; {_hint(status)}",
                transient=status >= 500 or status == 429,
                status=status,
            )
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        return status, data

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
    """Whether a failed request was caused by the TLS handshake (certificates, names)."""
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
    except UnicodeEncodeError:
        # Not chained: the encoding error quotes the character, a piece of the value (a token).
        raise LocalProtocolError("a header value is not ASCII") from None


def _decoded(answer: Answer) -> bytes:
    """The body as Consul wrote it (a gzip-compressed one decompressed)."""
    if answer.headers.get(b"content-encoding") == b"gzip":
        try:
            return zlib.decompress(answer.body, wbits=31)
        except zlib.error as exc:
            raise HTTPError(f"the gzip body is corrupt: {exc}") from exc
    return answer.body


def _first_line(body: bytes) -> str:
    lines = body.decode("utf-8", "replace").strip().splitlines()
    return lines[0][:200] if lines else ""


def _seconds(delay: float) -> str:
    return f"{delay:.1f}s" if delay < 10 else f"{delay:.0f}s"


def _int(value: bytes | str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
