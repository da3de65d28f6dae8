"""De-duplication on a real three-server cluster (127.0.0.1-3) with one client agent per instance
(127.0.0.4-8), as a fleet runs it: five ctemplate instances with the same template and different
destination paths, each talking to its own agent through a counting proxy.

Promises checked: exactly one instance reads the service from Consul; all files are identical
and follow every change; when the leader instance or its agent dies another takes over and no
file is ever empty or older than it was; restarted in any order the instances render again; a
payload past Consul's 512 KB value limit is published in chunks and read back whole.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from consul_cluster import ClusterServer, ConsulCluster
from ctemplate_proc import Daemon, read, wait_for
from tcp_relay import Relay

SERVICE = "dd-web"
TTL = 10  # seconds: Consul's smallest session TTL, so takeovers are as quick as they get
# Consul may take twice the TTL to invalidate the session of a dead instance; then a follower
# needs a moment to take the lock and read the service.
TAKEOVER = 2 * TTL + 15

TEMPLATE = (
    '{% for s in service("' + SERVICE + '") %}'
    "{{ s.Node }} {{ s.Address }}:{{ s.Port }}\n"
    "{% endfor %}"
)


class HealthCounter(Relay):
    """A transparent proxy in front of one agent, counting the health reads of SERVICE, the
    reads of the shared data and of the agent's event list (which the agent answers itself)."""

    def __init__(self, upstream: str, host: str) -> None:
        super().__init__(upstream, host=host)
        self.health_reads = 0
        self.data_reads = 0
        self.event_lists = 0
        self.event_fires = 0
        self._needle = f"GET /v1/health/service/{SERVICE}".encode()
        self._data = re.compile(rb"GET /v1/kv/ctemplate/dedup/[0-9a-f]+/data[? ]")
        self._events = re.compile(rb"GET /v1/event/list\?")
        self._fires = re.compile(rb"PUT /v1/event/fire/ctemplate-dedup-")
        self._lock = threading.Lock()

    def tap(self, *, up: bool) -> Callable[[bytes], None]:
        def count(data: bytes) -> None:
            if up:
                with self._lock:
                    self.health_reads += data.count(self._needle)
                    self.data_reads += len(self._data.findall(data))
                    self.event_lists += len(self._events.findall(data))
                    self.event_fires += len(self._fires.findall(data))

        return count


class Fleet:
    def __init__(self, cluster: ConsulCluster, root: Path) -> None:
        self.cluster = cluster
        self.root = root
        self.agents: list[ClusterServer] = []
        self.proxies: list[HealthCounter] = []
        self.daemons: list[Daemon | None] = []
        self.template = root / "upstream.conf.j2"
        self.template.write_text(TEMPLATE)
        self.config = root / "dedup.hcl"
        self.config.write_text(
            f'deduplicate {{\n  enabled = true\n  ttl = "{TTL}s"\n}}\nmax_stale = "0s"\n'
        )
        self.instances = 0

    def dest(self, i: int) -> Path:
        # Different paths on every host: the template's identity does not depend on them.
        return self.root / f"host{i}" / "etc" / f"upstream-{i}.conf"

    def start(self, i: int) -> Daemon:
        daemon = Daemon(
            [
                "-consul-addr",
                self.proxies[i].addr,
                "-config",
                str(self.config),
                "-template",
                f"{self.template}:{self.dest(i)}",
                "-log-level",
                "debug",
            ]
        )
        self.daemons[i] = daemon
        return daemon

    def register(self, n: int, **meta: str) -> str:
        """Register instances 1..n of SERVICE (external nodes, no checks: passing); the
        expected file."""
        server = self.cluster.servers[0]
        for k in range(self.instances + 1, n + 1):
            body = {
                "Node": f"dd-node-{k:04d}",
                "Address": f"10.9.{k // 250}.{k % 250}",
                "Service": {"ID": f"{SERVICE}-{k}", "Service": SERVICE, "Port": 8000 + k},
            }
            if meta:
                body["Service"]["Meta"] = meta  # type: ignore[index]
            resp = server.http.put("/v1/catalog/register", json=body)
            assert resp.status_code == 200, resp.text
        self.instances = max(self.instances, n)
        return self.expected()

    def expected(self) -> str:
        lines = [
            f"dd-node-{k:04d} 10.9.{k // 250}.{k % 250}:{8000 + k}\n"
            for k in range(1, self.instances + 1)
        ]
        return "".join(sorted(lines))

    def logs(self) -> str:
        return "\n".join(
            f"--- instance {i}\n{d.log()[-3000:]}" for i, d in enumerate(self.daemons) if d
        )


class Watchdog(threading.Thread):
    """Reads every destination every 20 ms and records any moment a file is empty or goes
    back to an older version than it has shown."""

    def __init__(self, paths: list[Path], versions: list[str]) -> None:
        super().__init__(daemon=True)
        self.paths = paths
        self.versions = versions  # in the order they are published
        self.problems: list[str] = []
        self._halt = threading.Event()
        self._seen = [0] * len(paths)

    def run(self) -> None:
        while not self._halt.is_set():
            for i, path in enumerate(self.paths):
                text = read(path)
                if text is None:
                    continue
                if text == "":
                    self.problems.append(f"{path} was empty")
                    continue
                if text in self.versions:
                    v = self.versions.index(text)
                    if v < self._seen[i]:
                        self.problems.append(
                            f"{path} went back from version {self._seen[i]} to {v}"
                        )
                    self._seen[i] = max(self._seen[i], v)
            time.sleep(0.02)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


@pytest.fixture(scope="module")
def fleet(consul_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with ConsulCluster(consul_binary) as cluster:
        f = Fleet(cluster, tmp_path_factory.mktemp("dedup"))
        try:
            for i in range(5):
                agent = cluster.add_client(f"host{i}", f"127.0.0.{4 + i}")
                f.agents.append(agent)
                f.proxies.append(HealthCounter(agent.http_addr, agent.ip).start())
                f.daemons.append(None)
            yield f
        finally:
            for d in f.daemons:
                if d is not None:
                    d.stop()
            for p in f.proxies:
                p.stop()


def _leader(fleet: Fleet) -> int:
    """The instance that reads the service (its proxy saw health reads since ``before``)."""
    reads = [p.health_reads for p in fleet.proxies]
    readers = [i for i, n in enumerate(reads) if n > 0]
    assert len(readers) == 1, f"health reads per instance: {reads}\n{fleet.logs()}"
    return readers[0]


def _all_show(fleet: Fleet, text: str, which: list[int], timeout: float) -> float:
    try:
        return wait_for(
            lambda: all(read(fleet.dest(i)) == text for i in which),
            timeout=timeout,
            what=f"instances {which} to render {text.count(chr(10))} lines",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{fleet.logs()}") from None


def test_one_instance_reads_consul_and_every_instance_follows_changes_and_takeovers(
    fleet: Fleet,
) -> None:
    versions = [fleet.register(2)]
    for i in range(5):
        fleet.start(i)
    _all_show(fleet, versions[0], list(range(5)), timeout=60)

    data_reads = [p.data_reads for p in fleet.proxies]
    event_lists = [p.event_lists for p in fleet.proxies]
    fires = sum(p.event_fires for p in fleet.proxies)
    for n in (3, 4, 5):  # three changes: every file follows
        versions.append(fleet.register(n))
        _all_show(fleet, versions[-1], list(range(5)), timeout=20)
        time.sleep(2.5)  # the announcement's repeat
    leader = _leader(fleet)  # exactly one instance ever read the service
    # Each version announced twice (gossip loses a few events in a thousand), by the leader.
    assert sum(p.event_fires for p in fleet.proxies) - fires == 6
    assert fleet.proxies[leader].event_fires >= 6
    assert all(fleet.proxies[i].health_reads == 0 for i in range(5) if i != leader)
    # The followers learnt each change from the leader's announcement, gossiped to their own
    # agents (whose event lists they read), and rebuilt it from the difference it carried:
    # not one of them read the shared data from the servers.
    for i in range(5):
        if i != leader:
            assert fleet.proxies[i].data_reads == data_reads[i], f"{i}\n{fleet.logs()}"
            assert fleet.proxies[i].event_lists >= event_lists[i] + 3, f"{i}\n{fleet.logs()}"
    # Nothing shared that is host-local, and the published data is the service's.
    keys = fleet.cluster.servers[0].http.get("/v1/kv/ctemplate/dedup/", params={"keys": ""})
    assert sorted(k.rsplit("/", 1)[1] for k in keys.json()) == ["data", "lock"]

    watchdog = Watchdog([fleet.dest(i) for i in range(5)], versions)
    watchdog.start()
    try:
        # 1. The leader instance dies without a word: another takes over.
        daemon = fleet.daemons[leader]
        assert daemon is not None
        daemon.signal(signal.SIGKILL)
        daemon.wait()
        alive = [i for i in range(5) if i != leader]
        before = [p.health_reads for p in fleet.proxies]
        versions.append(fleet.register(6))
        took = _all_show(fleet, versions[-1], alive, timeout=TAKEOVER)
        readers = [i for i in alive if fleet.proxies[i].health_reads > before[i]]
        assert len(readers) == 1, f"readers after the takeover: {readers}\n{fleet.logs()}"
        second = readers[0]
        print(f"\n[dedup] leader instance killed: the change reached every file in {took:.1f}s")

        # 2. The new leader's agent dies: its session goes with it; a third instance leads.
        fleet.agents[second].kill()
        alive = [i for i in alive if i != second]
        before = [p.health_reads for p in fleet.proxies]
        versions.append(fleet.register(7))
        took = _all_show(fleet, versions[-1], alive, timeout=TAKEOVER)
        readers = [i for i in alive if fleet.proxies[i].health_reads > before[i]]
        assert len(readers) == 1, f"readers after the agent died: {readers}\n{fleet.logs()}"
        print(f"[dedup] leader's agent killed: the change reached the others in {took:.1f}s")
    finally:
        watchdog.stop()
    assert not watchdog.problems, "\n".join(watchdog.problems[:10])

    # 3. Everything restarted, in reverse order: every instance renders again.
    for d in fleet.daemons:
        if d is not None:
            d.stop()
    fleet.agents[second].start([f"{s.ip}:{s.ports['serf_lan']}" for s in fleet.cluster.servers])
    wait_for(
        lambda: _agent_ready(fleet.agents[second]),
        timeout=60,
        what="the restarted agent",
    )
    versions.append(fleet.register(8))
    for i in reversed(range(5)):
        fleet.start(i)
    _all_show(fleet, versions[-1], list(range(5)), timeout=60)
    versions.append(fleet.register(9))
    _all_show(fleet, versions[-1], list(range(5)), timeout=30)


def _agent_ready(agent: ClusterServer) -> bool:
    try:
        agent.put_kv("client-ready/again", agent.name)
    except (RuntimeError, httpx.HTTPError):
        return False
    return True


def test_a_payload_past_the_value_limit_is_published_in_chunks_and_read_back(fleet: Fleet) -> None:
    for d in fleet.daemons:
        if d is not None:
            d.stop()
    # 3,000 instances with 300 characters of random metadata each: ~2 MB of JSON, which does not
    # compress below Consul's 512 KB value limit.
    server = fleet.cluster.servers[0]
    start = fleet.instances + 1
    fleet.instances = 3000
    for first in range(start, 3001, 64):
        ops = []
        for k in range(first, min(first + 64, 3001)):
            ops.append(
                {
                    "Service": {
                        "Verb": "set",
                        "Node": "dd-big",
                        "Service": {
                            "ID": f"{SERVICE}-{k}",
                            "Service": SERVICE,
                            "Address": f"10.9.{k // 250}.{k % 250}",
                            "Port": 8000 + k,
                            "Meta": {"blob": secrets.token_urlsafe(225)},
                        },
                    }
                }
            )
        if first == start:
            resp = server.http.put(
                "/v1/catalog/register", json={"Node": "dd-big", "Address": "10.8.0.1"}
            )
            assert resp.status_code == 200, resp.text
        resp = server.http.put("/v1/txn", json=ops)
        assert resp.status_code == 200, resp.text[:300]
    # The template names nodes; instances from `dd-big` carry their own addresses.
    health = server.http.get(f"/v1/health/service/{SERVICE}").json()
    assert len(health) == 3000
    # ctemplate sorts instances by node, then service ID.
    health.sort(key=lambda e: (e["Node"]["Node"], e["Service"]["ID"]))
    expected = "".join(
        f"{e['Node']['Node']} {e['Service']['Address'] or e['Node']['Address']}:"
        f"{e['Service']['Port']}\n"
        for e in health
    )
    first_two = [0, 1]
    for proxy in fleet.proxies:
        proxy.health_reads = 0
    fleet.start(0)
    _all_show(fleet, expected, [0], timeout=90)
    fleet.start(1)
    _all_show(fleet, expected, first_two, timeout=90)
    keys = server.http.get("/v1/kv/ctemplate/dedup/", params={"keys": ""}).json()
    chunks = [k for k in keys if "/chunks/" in k]
    assert len(chunks) >= 2, keys
    data_key = next(k for k in keys if k.endswith("/data") and not k.startswith("client"))
    raw = base64.b64decode(server.http.get(f"/v1/kv/{data_key}").json()[0]["Value"])
    header = json.loads(raw[len(b"CTD1 ") : raw.index(b"\n")])
    assert header["chunks"] == len(chunks) and header["size"] > 512 * 1024, header
    # One of the two read the 3,000 instances; the other read them from the KV store.
    assert sorted(p.health_reads > 0 for p in fleet.proxies[:2]) == [False, True]
