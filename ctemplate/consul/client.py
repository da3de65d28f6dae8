"""The HTTP client for Consul: blocking GETs over one shared ``httpx.AsyncClient``.

Errors are translated here, at the boundary, into :class:`ConsulError` whose message names the
method, path (the token is sent in a header and never appears), status, the first line of the
body and a hint. The client also keeps one availability state for all watches, so an outage is
logged once when it starts and once when it ends, not once per request.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpx

from ..config import ConsulConfig
from ..errors import ConsulError

__all__ = ["ConsulClient", "ConsulResponse", "base_url"]

log = logging.getLogger(__name__)

# httpx logs one INFO line per request; a long-poller must not.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class ConsulResponse:
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
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            auth=auth,
            verify=verify,
            timeout=httpx.Timeout(10.0, pool=None),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            trust_env=False,
        )
        self.available = True
        self.last_error = ""  # the latest failure of the current outage
        self.requests = 0  # all sent, for /metrics
        self.failed_requests = 0
        self._down_since = 0.0
        self._failures = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get(
        self,
        path: str,
        params: dict[str, str] | None = None,
        *,
        index: int = 0,
        wait: float = 60.0,
        stale: bool = False,
    ) -> ConsulResponse:
        """One GET; with ``index > 0`` it blocks up to ``wait`` seconds for a change.

        A 404 is an answer (``data=None``), not an error: Consul sends it for absent keys.
        """
        q = dict(params or {})
        if index > 0:
            q["index"] = str(index)
            q["wait"] = f"{int(wait * 1000)}ms"
        if stale:
            q["stale"] = ""
        # Consul may hold the answer up to wait + wait/16 of jitter; never cut it short.
        read = wait + wait / 16 + 10.0 if index > 0 else 30.0
        timeout = httpx.Timeout(10.0, read=read, pool=None)
        self.requests += 1
        request = self._http.build_request(
            "GET", path, params=q, timeout=timeout, extensions=self._extensions
        )
        try:
            # Streamed into a local buffer: a read response holds its body in a reference cycle
            # (response <-> stream), so a large answer (megabytes for thousands of instances)
            # would stay in memory until the garbage collector ran.
            resp = await self._http.send(request, stream=True)
            try:
                body = b"".join([chunk async for chunk in resp.aiter_bytes()])
            finally:
                await resp.aclose()
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, httpx.ReadTimeout):
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
            self._note_failure(err)
            raise err from exc
        if resp.status_code == 404 and path.startswith("/v1/kv/"):
            data: Any = None
        elif resp.status_code != 200:
            lines = body.decode("utf-8", "replace").strip().splitlines()
            first = lines[0][:200] if lines else ""
            transient = resp.status_code >= 500 or resp.status_code == 429
            err = ConsulError(
                f"GET {path}: Consul answered {resp.status_code}"
                + (f": {first}" if first else "")
                + f"; {_hint(resp.status_code)}",
                transient=transient,
                status=resp.status_code,
            )
            if transient:
                self._note_failure(err)
            else:
                self.failed_requests += 1
            raise err
        else:
            try:
                data = json.loads(body)
            except ValueError as exc:
                err = ConsulError(f"GET {path}: Consul sent a body that is not JSON")
                self._note_failure(err)
                raise err from exc
        self._note_success()
        h = resp.headers
        return ConsulResponse(
            data=data,
            index=_int(h.get("X-Consul-Index")),
            last_contact=_int(h.get("X-Consul-LastContact")) / 1000.0,
            known_leader=h.get("X-Consul-KnownLeader", "true") == "true",
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
            reason = str(exc) or type(exc).__name__
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
            log.warning("(consul) %s; retrying with backoff, keeping the last good files", err)
        else:
            log.debug("(consul) still failing: %s", err)

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


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
