"""An optional HTTP endpoint that shows from outside whether ctemplate is doing its job.

``status_address = "127.0.0.1:9110"`` (flag ``-status-addr``) serves two read-only pages:

``GET /health``
    JSON: Consul reachable or not (with the error of the current outage), the queries whose
    last request failed while the agent answers others (``failing_queries``: a datacenter that
    is gone, a 403, an answer that trickled past its bound), and each template's
    state: ``rendered`` (its file follows the data), ``degraded`` (written, but its last command
    failed: ``command_error`` names the command, its exit status and when, until a command
    succeeds), ``waiting`` (for the queries it lists) or ``error`` (the message; the last good
    file stays). Status 200 when Consul is reachable, no query is failing and every template is
    rendered, else 503, so a load balancer or a monitoring check can use the status alone.
``GET /metrics``
    The same facts and counters (files written, template errors, command runs, failures and
    seconds, requests to Consul) in Prometheus' text format.

The server is a few lines on top of ``asyncio.start_server``: one request per connection, no
keep-alive, GET and HEAD only. It holds at most 16 connections: a new one makes room by closing
the oldest that has not sent its request yet (idle clients cannot starve ``/health``, nor use up
the file descriptors that file writes need); a client gets 5 seconds to send its request and 5
to take the answer. It never shows the ACL token (the messages it repeats never hold
it). Bind it to loopback or a management network; it has no authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .errors import ConfigError

__all__ = [
    "ConsulState",
    "ExecState",
    "FailingQuery",
    "Snapshot",
    "StatusServer",
    "TemplateState",
    "health",
    "metrics",
]

log = logging.getLogger(__name__)

_READ_TIMEOUT = 5.0  # seconds for a client to send its request head, and to take the answer
_MAX_HEAD = 8192
_MAX_CLIENTS = 16  # connections held at once (each is a file descriptor)


@dataclass(frozen=True, slots=True)
class TemplateState:
    source: str  # the template file, or "(contents)"
    destination: str
    state: str  # rendered | degraded (written, its last command failed) | waiting | error
    waiting_for: tuple[str, ...] = ()
    error: str | None = None
    last_rendered: float | None = None  # Unix time the file was last written (or found current)
    renders: int = 0  # files written
    errors: int = 0  # renders or writes that failed
    command_runs: int = 0
    command_failures: int = 0
    command_seconds: float = 0.0
    command_error: str | None = None  # the last command failed: its message
    command_failed_at: float | None = None  # Unix time

    # De-duplication (deduplicate { enabled = true }): leader | follower | starting; "" = off.
    dedup_role: str = ""
    dedup_publishes: int = 0  # payloads this instance published as the leader
    dedup_deltas: int = 0  # follower: versions rebuilt from an announcement alone
    dedup_reads: int = 0  # follower: versions read from the KV store


@dataclass(frozen=True, slots=True)
class FailingQuery:
    """A query (or a loop serving several, e.g. ``health.sentinel(dc1):checks``) whose last
    request failed while the agent may answer the others."""

    query: str
    error: str
    seconds: float  # failing for this long
    failures: int  # failed requests in a row


@dataclass(frozen=True, slots=True)
class ConsulState:
    address: str
    reachable: bool
    last_error: str = ""
    requests: int = 0
    failed_requests: int = 0
    watched_queries: int = 0
    failing: tuple[FailingQuery, ...] = ()


@dataclass(frozen=True, slots=True)
class ExecState:
    """One supervised child (exec mode)."""

    name: str  # "exec[1]"
    command: str
    running: bool
    pid: int | None = None
    restarts: int = 0  # starts after the first (restart policy, or restart on changes)
    last_exit: int | None = None  # status of its last end (128 + N: killed by signal N)


class WatchState(Protocol):
    """A watch block's figures (``modes.watch.WatchStats``)."""

    name: str
    query: str
    runs: int
    failures: int
    seconds: float
    last_index: int
    last_error: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    consul: ConsulState
    templates: tuple[TemplateState, ...] = field(default_factory=tuple)
    execs: tuple[ExecState, ...] = field(default_factory=tuple)
    watches: tuple[WatchState, ...] = field(default_factory=tuple)

    @property
    def healthy(self) -> bool:
        return (
            self.consul.reachable
            and not self.consul.failing
            and all(t.state == "rendered" for t in self.templates)
            and all(e.running for e in self.execs)
        )


def health(snap: Snapshot) -> dict[str, object]:
    """The ``/health`` document."""
    consul = snap.consul
    return {
        "status": "ok" if snap.healthy else "degraded",
        "consul": {
            "address": consul.address,
            "reachable": consul.reachable,
            "error": None if consul.reachable else consul.last_error,
            "failing_queries": [
                {
                    "query": f.query,
                    "error": f.error,
                    "failing_for": round(f.seconds, 1),
                    "failures": f.failures,
                }
                for f in consul.failing
            ],
        },
        "templates": [
            {
                "source": t.source,
                "destination": t.destination,
                "state": t.state,
                "waiting_for": list(t.waiting_for),
                "error": t.error,
                "last_rendered": t.last_rendered,
                "command_error": _when(t.command_error, t.command_failed_at),
                **({"dedup": t.dedup_role} if t.dedup_role else {}),
            }
            for t in snap.templates
        ],
        **(
            {
                "exec": [
                    {
                        "name": e.name,
                        "command": e.command,
                        "running": e.running,
                        "pid": e.pid,
                        "restarts": e.restarts,
                        "last_exit_status": e.last_exit,
                    }
                    for e in snap.execs
                ]
            }
            if snap.execs
            else {}
        ),
        "watches": [
            {
                "watch": w.name,
                "query": w.query,
                "runs": w.runs,
                "failures": w.failures,
                "last_index": w.last_index,
                "error": w.last_error or None,
            }
            for w in snap.watches
        ],
    }


def _when(error: str | None, at: float | None) -> str | None:
    """A failed command's message with the time it failed (UTC), for /health."""
    if error is None:
        return None
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)) if at is not None else "?"
    return f"{error} (at {stamp}; degraded until a command succeeds)"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def metrics(snap: Snapshot) -> str:
    """The ``/metrics`` page (Prometheus text format 0.0.4)."""
    lines: list[str] = []

    def family(name: str, kind: str, text: str, samples: Iterable[tuple[str, float]]) -> None:
        lines.append(f"# HELP ctemplate_{name} {text}")
        lines.append(f"# TYPE ctemplate_{name} {kind}")
        lines.extend(f"ctemplate_{name}{labels} {_number(v)}" for labels, v in samples)

    c = snap.consul
    family(
        "up",
        "gauge",
        "1 when Consul is reachable and every file is rendered.",
        [("", int(snap.healthy))],
    )
    family(
        "consul_reachable",
        "gauge",
        "1 when the last request to Consul succeeded.",
        [("", int(c.reachable))],
    )
    family("consul_requests_total", "counter", "Requests sent to Consul.", [("", c.requests)])
    family(
        "consul_request_failures_total",
        "counter",
        "Requests to Consul that failed (unreachable, 5xx, 429, bad answer).",
        [("", c.failed_requests)],
    )
    family("watched_queries", "gauge", "Queries the templates use now.", [("", c.watched_queries)])
    family(
        "failing_queries",
        "gauge",
        "Queries whose last request to Consul failed.",
        [("", len(c.failing))],
    )

    def per_template(
        name: str, kind: str, text: str, get: Callable[[TemplateState], float | None]
    ) -> None:
        samples = []
        for t in snap.templates:
            value = get(t)
            if value is not None:
                samples.append((f'{{destination="{_label(t.destination)}"}}', value))
        family(name, kind, text, samples)

    family(
        "template_state",
        "gauge",
        "1 for the state each template is in (rendered, degraded, waiting or error).",
        [
            (f'{{destination="{_label(t.destination)}",state="{state}"}}', int(t.state == state))
            for t in snap.templates
            for state in ("rendered", "degraded", "waiting", "error")
        ],
    )
    per_template(
        "template_last_rendered_timestamp_seconds",
        "gauge",
        "When the file was last written or found current (Unix time).",
        lambda t: t.last_rendered,
    )
    per_template("template_renders_total", "counter", "Files written.", lambda t: t.renders)
    per_template(
        "template_errors_total", "counter", "Renders or writes that failed.", lambda t: t.errors
    )
    per_template(
        "command_runs_total", "counter", "Commands run after a write.", lambda t: t.command_runs
    )
    per_template(
        "command_failures_total",
        "counter",
        "Commands that failed or ran past command_timeout.",
        lambda t: t.command_failures,
    )
    per_template(
        "command_seconds_total",
        "counter",
        "Seconds spent running commands.",
        lambda t: t.command_seconds,
    )
    deduplicated = [t for t in snap.templates if t.dedup_role]
    if deduplicated:
        family(
            "dedup_role",
            "gauge",
            "1 for the de-duplication role of each template (leader, follower or starting).",
            [
                (
                    f'{{destination="{_label(t.destination)}",role="{role}"}}',
                    int(t.dedup_role == role),
                )
                for t in deduplicated
                for role in ("leader", "follower", "starting")
            ],
        )
        family(
            "dedup_publishes_total",
            "counter",
            "Payloads of data published to the KV store as the template's leader.",
            [
                (f'{{destination="{_label(t.destination)}"}}', t.dedup_publishes)
                for t in deduplicated
            ],
        )
        family(
            "dedup_received_total",
            "counter",
            "Versions of the shared data a follower applied, by how they came: rebuilt from the "
            "announcement's difference (no request to the servers) or read from the KV store.",
            [
                (f'{{destination="{_label(t.destination)}",via="{via}"}}', count)
                for t in deduplicated
                for via, count in (("event", t.dedup_deltas), ("kv", t.dedup_reads))
            ],
        )
    if snap.execs:

        def per_exec(
            name: str, kind: str, text: str, get: Callable[[ExecState], float | None]
        ) -> None:
            samples = []
            for e in snap.execs:
                value = get(e)
                if value is not None:
                    samples.append((f'{{exec="{_label(e.name)}"}}', value))
            family(name, kind, text, samples)

        per_exec(
            "exec_running", "gauge", "1 while the supervised child runs.", lambda e: int(e.running)
        )
        per_exec(
            "exec_restarts_total",
            "counter",
            "Times the child was started again (restart policy or file changes).",
            lambda e: e.restarts,
        )
        per_exec(
            "exec_last_exit_status",
            "gauge",
            "Status of the child's last end (128 + N: killed by signal N).",
            lambda e: e.last_exit,
        )

    def per_watch(name: str, kind: str, text: str, get: Callable[[WatchState], float]) -> None:
        labels = '{{watch="{}",query="{}"}}'
        samples = [(labels.format(_label(w.name), _label(w.query)), get(w)) for w in snap.watches]
        family(name, kind, text, samples)

    per_watch("watch_runs_total", "counter", "Watch handler runs.", lambda w: w.runs)
    per_watch(
        "watch_failures_total",
        "counter",
        "Watch handler runs that failed or ran past their timeout.",
        lambda w: w.failures,
    )
    per_watch(
        "watch_seconds_total", "counter", "Seconds spent in watch handlers.", lambda w: w.seconds
    )
    per_watch(
        "watch_last_index",
        "gauge",
        "The X-Consul-Index of the last change a watch saw.",
        lambda w: w.last_index,
    )
    return "\n".join(lines) + "\n"


class StatusServer:
    """Serves :func:`health` and :func:`metrics` of ``snapshot()`` on ``address``."""

    def __init__(self, address: str, snapshot: Callable[[], Snapshot]) -> None:
        self.address = address
        self._snapshot = snapshot
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._room = asyncio.Event()  # a connection ended
        self._tasks: set[asyncio.Task[None]] = set()
        self._clients: set[asyncio.StreamWriter] = set()
        # Connections still waiting for their request, oldest first: the first to go.
        self._idle: dict[asyncio.StreamWriter, None] = {}

    async def start(self) -> None:
        host, _, port = self.address.rpartition(":")
        try:
            family, kind, proto, _, where = socket.getaddrinfo(
                host.strip("[]") or None,
                int(port),
                type=socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE,
            )[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(where)
                sock.listen(128)
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(
                f"status_address {self.address}: cannot listen: {reason}; "
                "choose a free port (or stop what uses it) with status_address or -status-addr"
            ) from None
        self._sock = sock
        self._accepting = asyncio.get_running_loop().create_task(self._accept(sock))
        log.info("(status) serving /health and /metrics on http://%s", self.address)

    async def stop(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._accepting
            self._accepting = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for writer in list(self._clients):  # a slow client must not hold up a stop
            writer.transport.abort()

    async def _accept(self, sock: socket.socket) -> None:
        """Accept connections one at a time, never holding more than ``_MAX_CLIENTS``: the
        others wait in the kernel's queue, costing no file descriptor here."""
        loop = asyncio.get_running_loop()
        while True:
            while len(self._clients) >= _MAX_CLIENTS and not self._idle:
                self._room.clear()
                await self._room.wait()
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:  # out of file descriptors, say: try again in a moment
                log.debug("(status) cannot accept a connection: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if len(self._clients) >= _MAX_CLIENTS and self._idle:
                oldest = next(iter(self._idle))  # makes room: it has not asked anything yet
                del self._idle[oldest]
                self._clients.discard(oldest)
                oldest.transport.abort()
            try:
                reader, writer = await asyncio.open_connection(sock=conn)
            except OSError:
                conn.close()
                continue
            self._clients.add(writer)
            self._idle[writer] = None
            task = loop.create_task(self._serve(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._answer_one(reader, writer)
        finally:
            self._clients.discard(writer)
            self._idle.pop(writer, None)
            self._room.set()

    async def _answer_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
            self._idle.pop(writer, None)
            status, ctype, body = self._answer(head[:_MAX_HEAD])
        except (asyncio.IncompleteReadError, ConnectionError):  # gone, or closed to make room
            writer.transport.abort()
            return
        except (asyncio.LimitOverrunError, TimeoutError):
            status, ctype, body = "400 Bad Request", "text/plain", b"bad request\n"
            head = b""
        except Exception:  # a bug must not take the daemon down; say so to the client
            log.debug("(status) error while answering", exc_info=True)
            status, ctype, body = "500 Internal Server Error", "text/plain", b"internal error\n"
            head = b""
        send_body = not head.startswith(b"HEAD ")
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + (body if send_body else b"")
        )
        try:
            await asyncio.wait_for(writer.drain(), _READ_TIMEOUT)
        except (OSError, TimeoutError):
            writer.transport.abort()  # a client that does not read its answer
            return
        writer.close()

    def _answer(self, head: bytes) -> tuple[str, str, bytes]:
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"only GET and HEAD\n"
        if path == "/health":
            snap = self._snapshot()
            body = json.dumps(health(snap), indent=2).encode() + b"\n"
            status = "200 OK" if snap.healthy else "503 Service Unavailable"
            return status, "application/json", body
        if path == "/metrics":
            text = metrics(self._snapshot())
            return "200 OK", "text/plain; version=0.0.4; charset=utf-8", text.encode()
        return "404 Not Found", "text/plain", b"not found; try /health or /metrics\n"
