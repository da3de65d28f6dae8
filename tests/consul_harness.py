"""A small harness that runs real ``consul agent -dev`` processes for tests.

Nothing here depends on pytest or on ``ctemplate``: data is seeded with plain
HTTP calls (``httpx``), so a test never relies on the code it is testing to set
up its own preconditions.

Typical use::

    agent = ConsulAgent(find_consul())
    agent.start()
    agent.put_kv("app/config", "v1")
    agent.register_service("web", port=8080, check={"CheckID": "web-ttl", "TTL": "60s"})
    agent.ttl_pass("web-ttl")
    ...
    agent.stop()

Every agent listens on 127.0.0.1 only, on its own free ports, and logs to a file
in its own temporary directory (``agent.log_path``).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

__all__ = [
    "REPO_ROOT",
    "ConsulAgent",
    "ConsulUnavailableError",
    "find_consul",
    "free_port",
    "wait_until",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
GET_CONSUL = REPO_ROOT / "scripts" / "get-consul"

#: Names of the agent's ports, as used in the ``ports { ... }`` config block.
PORT_NAMES = ("http", "dns", "serf_lan", "serf_wan", "server")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.1

T = TypeVar("T")


class ConsulUnavailableError(RuntimeError):
    """No usable consul binary could be found or fetched."""


class ConsulStartError(RuntimeError):
    """The agent did not become ready; the message carries its log tail."""


@functools.cache
def find_consul() -> str:
    """Return the path of a consul binary.

    ``$CTEMPLATE_CONSUL`` wins if set; otherwise ``scripts/get-consul`` is run
    (which prefers PATH, then the repo cache, then downloads Debian's package).
    """
    env = os.environ.get("CTEMPLATE_CONSUL")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise ConsulUnavailableError(f"CTEMPLATE_CONSUL={env!r} is not an executable file")
        return env
    try:
        proc = subprocess.run(
            ["bash", str(GET_CONSUL)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConsulUnavailableError(f"running {GET_CONSUL} failed: {exc}") from exc
    path = proc.stdout.strip()
    if proc.returncode != 0 or not path:
        raise ConsulUnavailableError(
            f"{GET_CONSUL} exited with {proc.returncode}:\n{proc.stderr.strip()}"
        )
    return path


def free_port() -> int:
    """Return a port on 127.0.0.1 that is currently free for both TCP and UDP.

    (Consul's serf and DNS ports use both protocols.) There is an unavoidable
    race between picking the port and the agent binding it; ``ConsulAgent.start``
    retries with new ports if that race is lost.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("could not find a free loopback port")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    Raises ``TimeoutError`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


_live_agents: weakref.WeakSet[ConsulAgent] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for agent in list(_live_agents):
        with contextlib.suppress(Exception):
            agent.kill()


class ConsulAgent:
    """One ``consul agent -dev`` process bound to 127.0.0.1.

    Ports are chosen when the agent is first started and kept for its whole
    life, so ``restart()`` brings it back on the same address. A dev agent keeps
    everything in memory: after a restart it is empty (no KV, no services).
    """

    def __init__(
        self,
        binary: str | None = None,
        node_name: str | None = None,
        *,
        datacenter: str = "dc1",
        extra_args: Sequence[str] = (),
        log_level: str = "debug",
    ) -> None:
        self.binary = binary or find_consul()
        self._node_name = node_name or f"node-{uuid.uuid4().hex[:8]}"
        self.datacenter = datacenter
        self.extra_args = list(extra_args)
        self.log_level = log_level
        self.ports: dict[str, int] = {}
        self._ports_fixed = False  # True once the agent has started on them
        self._tmpdir = Path(tempfile.mkdtemp(prefix="ctemplate-consul-"))
        self._log_path = self._tmpdir / "agent.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None

    # -- properties -------------------------------------------------------

    @property
    def node_name(self) -> str:
        return self._node_name

    @property
    def http_port(self) -> int:
        return self.ports["http"]

    @property
    def http_addr(self) -> str:
        """``127.0.0.1:PORT``, suitable for ``CONSUL_HTTP_ADDR`` or ``-consul-addr``."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        return f"http://{self.http_addr}"

    @property
    def dns_port(self) -> int:
        return self.ports["dns"]

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def client(self) -> httpx.Client:
        """A sync httpx client with ``base_url`` set to the agent."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=10.0)
        return self._client

    def __repr__(self) -> str:
        where = self.http_addr if self.ports else "no ports yet"
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<ConsulAgent {self._node_name} {where} {state}>"

    def __enter__(self) -> ConsulAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lifecycle --------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the agent and wait until it has a leader and its node is in the catalog."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        attempts = 1 if self._ports_fixed else 5
        for attempt in range(attempts):
            if not self._ports_fixed:
                self._pick_ports()
            self._spawn()
            try:
                self._wait_ready(timeout)
            except ConsulStartError:
                lost_race = not self.running and "address already in use" in self.log_tail()
                self.kill()
                if lost_race and attempt + 1 < attempts:
                    continue
                raise
            self._ports_fixed = True
            return

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the agent, wait up to ``timeout`` seconds, then SIGKILL it."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        self._after_exit()

    def kill(self) -> None:
        """SIGKILL the agent (simulates a crash) and reap it."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        self._after_exit()

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop the agent if running, then start it again on the same ports.

        The restarted dev agent is empty: KV, services and checks are gone.
        """
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop the agent and delete its temporary directory (log included)."""
        self.stop()
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def _pick_ports(self) -> None:
        ports: dict[str, int] = {}
        while len(ports) < len(PORT_NAMES):
            port = free_port()
            if port not in ports.values():
                ports[PORT_NAMES[len(ports)]] = port
        self.ports = ports

    def command(self) -> list[str]:
        """The full command line used to start the agent."""
        ports = " ".join(f"{name} = {port}" for name, port in self.ports.items())
        return [
            self.binary,
            "agent",
            "-dev",
            "-bind=127.0.0.1",
            "-client=127.0.0.1",
            "-advertise=127.0.0.1",
            f"-node={self._node_name}",
            f"-datacenter={self.datacenter}",
            f"-log-level={self.log_level}",
            # grpc = -1 disables the gRPC port (dev mode would otherwise take 8502).
            "-hcl",
            f"ports {{ {ports} grpc = -1 https = -1 }}",
            *self.extra_args,
        ]

    def _spawn(self) -> None:
        cmd = self.command()
        with open(self._log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._tmpdir,
            )
        _live_agents.add(self)

    def _after_exit(self) -> None:
        _live_agents.discard(self)
        if self._client is not None:
            self._client.close()
            self._client = None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        with httpx.Client(base_url=self.url, timeout=2.0) as http:
            while True:
                if self._proc is None or self._proc.poll() is not None:
                    code = self._proc.returncode if self._proc else None
                    raise ConsulStartError(
                        f"consul agent exited with {code} during startup; "
                        f"log {self._log_path}:\n{self.log_tail()}"
                    )
                try:
                    last = self._readiness(http)
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if not last:
                    return
                if time.monotonic() >= deadline:
                    raise ConsulStartError(
                        f"consul agent not ready after {timeout}s ({last}); "
                        f"log {self._log_path}:\n{self.log_tail()}"
                    )
                time.sleep(POLL_INTERVAL)

    def _readiness(self, http: httpx.Client) -> str:
        """Return "" when ready, else a description of what is missing."""
        leader = http.get("/v1/status/leader")
        if leader.status_code != 200 or not leader.json():
            return f"no leader ({leader.status_code} {leader.text!r})"
        node = http.get(f"/v1/catalog/node/{self._node_name}")
        if node.status_code != 200 or not node.json():
            return f"node not in catalog ({node.status_code} {node.text!r})"
        # The leader adds the serfHealth check when it reconciles the member;
        # wait for it so node/health queries see a complete node.
        checks = http.get(f"/v1/health/node/{self._node_name}")
        if checks.status_code != 200 or not any(
            c.get("CheckID") == "serfHealth" and c.get("Status") == "passing"
            for c in checks.json() or ()
        ):
            return "serfHealth check not passing yet"
        return ""

    # -- plain HTTP helpers -----------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request to the agent (``path`` like ``/v1/kv/foo``)."""
        return self.client.request(method, path, **kwargs)

    def _ok(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        resp = self.request(method, path, **kwargs)
        if resp.status_code != 200:
            raise RuntimeError(f"{method} {path} -> {resp.status_code}: {resp.text.strip()}")
        return resp

    def put_kv(self, key: str, value: str | bytes, *, flags: int | None = None) -> None:
        """Write ``value`` at ``key`` (a key ending with "/" creates a folder)."""
        data = value.encode() if isinstance(value, str) else value
        params = {"flags": str(flags)} if flags is not None else {}
        resp = self._ok("PUT", f"/v1/kv/{key.lstrip('/')}", content=data, params=params)
        if resp.json() is not True:
            raise RuntimeError(f"PUT /v1/kv/{key} returned {resp.text!r}")

    def delete_kv(self, key: str, recurse: bool = False) -> None:
        params = {"recurse": ""} if recurse else {}
        self._ok("DELETE", f"/v1/kv/{key.lstrip('/')}", params=params)

    def get_kv_raw(self, key: str) -> bytes | None:
        """The raw value at ``key``, or None if the key does not exist."""
        resp = self.request("GET", f"/v1/kv/{key.lstrip('/')}", params={"raw": ""})
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return resp.content

    def txn(self, ops: Sequence[Mapping[str, Any]]) -> Any:
        """Run a ``/v1/txn`` transaction (values in ops must already be base64).

        Returns the decoded JSON response; raises if the transaction is rolled
        back (HTTP 409) or fails.
        """
        return self._ok("PUT", "/v1/txn", json=list(ops)).json()

    def register_service(
        self,
        name: str,
        id: str | None = None,
        port: int = 0,
        address: str | None = None,
        tags: Iterable[str] = (),
        meta: Mapping[str, str] | None = None,
        check: Mapping[str, Any] | None = None,
        checks: Sequence[Mapping[str, Any]] = (),
    ) -> str:
        """Register a service on this agent's node; returns its ID.

        ``check``/``checks`` are agent check definitions, e.g.
        ``{"CheckID": "web-ttl", "Name": "web ttl", "TTL": "60s", "Status": "passing"}``
        (a TTL check starts "critical" unless ``Status`` is given).
        """
        body: dict[str, Any] = {"Name": name, "ID": id or name, "Port": port, "Tags": list(tags)}
        if address is not None:
            body["Address"] = address
        if meta:
            body["Meta"] = dict(meta)
        if check is not None:
            body["Check"] = dict(check)
        if checks:
            body["Checks"] = [dict(c) for c in checks]
        self._ok("PUT", "/v1/agent/service/register", json=body)
        return str(body["ID"])

    def deregister_service(self, service_id: str) -> None:
        self._ok("PUT", f"/v1/agent/service/deregister/{service_id}")

    def register_check(self, check: Mapping[str, Any]) -> None:
        """Register an agent check (``/v1/agent/check/register``)."""
        self._ok("PUT", "/v1/agent/check/register", json=dict(check))

    def ttl_pass(self, check_id: str, note: str = "") -> None:
        self._ok("PUT", f"/v1/agent/check/pass/{check_id}", params={"note": note})

    def ttl_warn(self, check_id: str, note: str = "") -> None:
        self._ok("PUT", f"/v1/agent/check/warn/{check_id}", params={"note": note})

    def ttl_fail(self, check_id: str, note: str = "") -> None:
        self._ok("PUT", f"/v1/agent/check/fail/{check_id}", params={"note": note})

    def register_external(
        self,
        node: str,
        address: str,
        service: str | None = None,
        *,
        service_id: str | None = None,
        port: int = 0,
        tags: Iterable[str] = (),
        meta: Mapping[str, str] | None = None,
        service_address: str | None = None,
        checks: Sequence[Mapping[str, Any]] = (),
        node_meta: Mapping[str, str] | None = None,
    ) -> None:
        """Register a node (and optionally a service and checks) directly in the catalog.

        This simulates machines that run no agent of their own, e.g. the
        workshop's ``back01..03`` nodes running an ``application`` service::

            agent.register_external(
                "back01", "10.0.0.11", "application", port=80,
                checks=[{"CheckID": "app", "Name": "app", "Status": "passing",
                         "ServiceID": "application"}],
            )

        Checks are catalog checks: their ``Status`` is whatever you set (use
        ``set_external_check`` to change it); Consul never runs them. ``Node``
        is filled in automatically.
        """
        body: dict[str, Any] = {"Node": node, "Address": address}
        if node_meta:
            body["NodeMeta"] = dict(node_meta)
        if service is not None:
            svc: dict[str, Any] = {
                "Service": service,
                "ID": service_id or service,
                "Port": port,
                "Tags": list(tags),
            }
            if meta:
                svc["Meta"] = dict(meta)
            if service_address is not None:
                svc["Address"] = service_address
            body["Service"] = svc
        if checks:
            body["Checks"] = [{"Node": node, **c} for c in checks]
        self._catalog_register(body)

    def set_external_check(
        self,
        node: str,
        address: str,
        check_id: str,
        status: str,
        *,
        service_id: str | None = None,
        name: str | None = None,
        output: str = "",
    ) -> None:
        """Create or update a catalog check on an external node.

        ``status`` is "passing", "warning" or "critical"; the node's other
        services and checks are left alone.
        """
        check: dict[str, Any] = {
            "Node": node,
            "CheckID": check_id,
            "Name": name or check_id,
            "Status": status,
            "Output": output,
        }
        if service_id is not None:
            check["ServiceID"] = service_id
        self._catalog_register({"Node": node, "Address": address, "Check": check})

    def deregister_external(
        self, node: str, *, service_id: str | None = None, check_id: str | None = None
    ) -> None:
        """Remove a whole external node, or just one of its services or checks."""
        body: dict[str, Any] = {"Node": node}
        if service_id is not None:
            body["ServiceID"] = service_id
        if check_id is not None:
            body["CheckID"] = check_id
        resp = self._ok("PUT", "/v1/catalog/deregister", json=body)
        if resp.json() is not True:
            raise RuntimeError(f"catalog deregister returned {resp.text!r}")

    def _catalog_register(self, body: Mapping[str, Any]) -> None:
        resp = self._ok("PUT", "/v1/catalog/register", json=dict(body))
        if resp.json() is not True:
            raise RuntimeError(f"catalog register returned {resp.text!r}")

    def health_service(self, name: str, passing: bool = False) -> list[dict[str, Any]]:
        """``/v1/health/service/<name>`` as JSON (a convenience for assertions)."""
        params = {"passing": ""} if passing else {}
        result: list[dict[str, Any]] = self._ok(
            "GET", f"/v1/health/service/{name}", params=params
        ).json()
        return result
