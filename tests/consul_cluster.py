"""A real three-server Consul cluster on loopback, for leader-election tests.

Each server binds its own loopback address (127.0.0.1, 127.0.0.2, 127.0.0.3: Linux routes all
of 127.0.0.0/8 to ``lo``) with its own free ports, as the workshop's step 2 builds a cluster
with ``bootstrap_expect = 3``. Raft runs with ``raft_multiplier = 1`` so elections take about a
second. Like :mod:`consul_harness`, nothing here imports ctemplate; data is written with plain
HTTP.

Typical use::

    with ConsulCluster(find_consul()) as cluster:
        leader = cluster.leader()
        follower = cluster.followers()[0]
        follower.put_kv("app/x", "1")
        leader.kill()
        cluster.wait_for_leader(exclude=leader)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

__all__ = ["ClusterServer", "ConsulCluster"]

START_TIMEOUT = 60.0
_PORTS = ("http", "serf_lan", "serf_wan", "server")


def _free_port(ip: str) -> int:
    """A port free for TCP and UDP on ``ip`` (serf uses both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((ip, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((ip, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port on {ip}")


class ClusterServer:
    """One ``consul agent -server`` of the cluster, bound to ``ip``."""

    def __init__(
        self,
        binary: str,
        name: str,
        ip: str,
        root: Path,
        *,
        server: bool = True,
        extra_hcl: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary
        self.server = server
        self.extra_hcl = extra_hcl
        self.name = name
        self.ip = ip
        self.dir = root / name
        self.data_dir = self.dir / "data"
        self.data_dir.mkdir(parents=True)
        self.log_path = self.dir / "agent.log"
        self.ports = {p: _free_port(ip) for p in _PORTS}
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=5.0)

    @property
    def http_addr(self) -> str:
        return f"{self.ip}:{self.ports['http']}"

    @property
    def url(self) -> str:
        return f"http://{self.http_addr}"

    @property
    def raft_addr(self) -> str:
        """How raft (and /v1/status/leader) names this server."""
        return f"{self.ip}:{self.ports['server']}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __repr__(self) -> str:
        return f"<ClusterServer {self.name} {self.http_addr}>"

    def start(self, join: list[str]) -> None:
        ports = " ".join(f"{name} = {port}" for name, port in self.ports.items())
        role = ["-server", "-bootstrap-expect=3"] if self.server else []
        cmd = [
            self.binary,
            "agent",
            *role,
            f"-node={self.name}",
            "-datacenter=dc1",
            f"-data-dir={self.data_dir}",
            f"-bind={self.ip}",
            f"-client={self.ip}",
            f"-advertise={self.ip}",
            "-retry-interval=200ms",
            "-log-level=debug",
            "-hcl",
            f"ports {{ {ports} dns = -1 grpc = -1 https = -1 }}",
            "-hcl",
            "performance { raft_multiplier = 1 }",
            *(arg for hcl in self.extra_hcl for arg in ("-hcl", hcl)),
            *(f"-retry-join={addr}" for addr in join),
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
            )

    def kill(self) -> None:
        """SIGKILL (a crash: no graceful leave)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.http.close()

    def leader(self) -> str:
        """The raft address this server believes is the leader ("" if none)."""
        try:
            resp = self.http.get("/v1/status/leader")
        except httpx.HTTPError:
            return ""
        if resp.status_code != 200:
            return ""
        value = resp.json()
        return value if isinstance(value, str) else ""

    def put_kv(self, key: str, value: str) -> None:
        resp = self.http.put(f"/v1/kv/{key}", content=value.encode())
        if resp.status_code != 200 or resp.json() is not True:
            raise RuntimeError(f"PUT /v1/kv/{key} on {self.name}: {resp.status_code} {resp.text}")

    def get_kv(self, key: str, *, stale: bool = False) -> str | None:
        params = {"raw": ""}
        if stale:
            params["stale"] = ""
        resp = self.http.get(f"/v1/kv/{key}", params=params)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return resp.text

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"


class ConsulCluster:
    """Three Consul servers on 127.0.0.1-3, each with its own ports and data directory."""

    def __init__(
        self,
        binary: str,
        ips: tuple[str, ...] = ("127.0.0.1", "127.0.0.2", "127.0.0.3"),
        *,
        server_hcl: tuple[str, ...] = (),
    ):
        self._root = Path(tempfile.mkdtemp(prefix="ctemplate-cluster-"))
        self.servers = [
            ClusterServer(binary, f"server{i}", ip, self._root, extra_hcl=server_hcl)
            for i, ip in enumerate(ips, 1)
        ]
        self.clients: list[ClusterServer] = []

    def __enter__(self) -> ConsulCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, timeout: float = START_TIMEOUT) -> None:
        join = [f"{s.ip}:{s.ports['serf_lan']}" for s in self.servers]
        for server in self.servers:
            server.start([addr for addr in join if not addr.startswith(server.ip + ":")])
        try:
            self.wait_for_leader(timeout=timeout)
            # A write through every server proves raft replication works end to end.
            deadline = time.monotonic() + timeout
            for server in self.servers:
                while True:
                    try:
                        server.put_kv("cluster-ready", server.name)
                        break
                    except (RuntimeError, httpx.HTTPError):
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
        except BaseException:
            self.close()
            raise

    def add_client(
        self, name: str, ip: str, timeout: float = START_TIMEOUT, *, extra_hcl: tuple[str, ...] = ()
    ) -> ClusterServer:
        """A client agent (no ``-server``) on ``ip``, joined to the servers, once it answers
        reads through them."""
        agent = ClusterServer(
            self.servers[0].binary, name, ip, self._root, server=False, extra_hcl=extra_hcl
        )
        self.clients.append(agent)
        agent.start([f"{s.ip}:{s.ports['serf_lan']}" for s in self.servers if s.running])
        deadline = time.monotonic() + timeout
        while True:
            try:
                agent.put_kv(f"client-ready/{name}", name)
                return agent
            except (RuntimeError, httpx.HTTPError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"client {name} not ready\n{agent.log_tail()}") from None
                time.sleep(0.1)

    def by_raft_addr(self, addr: str) -> ClusterServer:
        for server in self.servers:
            if server.raft_addr == addr:
                return server
        raise KeyError(addr)

    def wait_for_leader(
        self, *, exclude: ClusterServer | None = None, timeout: float = 30.0
    ) -> ClusterServer:
        """Wait until every running server names the same leader (not ``exclude``)."""
        deadline = time.monotonic() + timeout
        while True:
            running = [s for s in self.servers if s.running]
            seen = {s.leader() for s in running}
            if len(seen) == 1:
                addr = seen.pop()
                if addr and (exclude is None or addr != exclude.raft_addr):
                    leader = self.by_raft_addr(addr)
                    if leader.running:
                        return leader
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {s.name}\n{s.log_tail()}" for s in self.servers)
                raise TimeoutError(f"no agreed leader after {timeout}s\n{tails}")
            time.sleep(0.05)

    def leader(self) -> ClusterServer:
        return self.wait_for_leader()

    def followers(self) -> list[ClusterServer]:
        leader = self.leader()
        return [s for s in self.servers if s is not leader and s.running]

    def close(self) -> None:
        for agent in [*self.clients, *self.servers]:
            agent.stop()
        shutil.rmtree(self._root, ignore_errors=True)
