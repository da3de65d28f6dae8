"""What de-duplication saves the Consul servers: requests per change and per idle minute, for 1, 5
and 20 instances of the same template, with and without ``deduplicate``.

A real three-server cluster (127.0.0.1-3) and, as in a fleet, one client agent per instance
(127.0.0.4 onwards); every instance talks to its agent through a counting proxy. Two counts:

* **at the agents**, by kind. A client agent forwards every health, KV, session, transaction and
  event-fire request to a server (one RPC each) and answers ``/v1/event/list`` from its own
  gossiped buffer: "to servers" counts the first kind only;
* **at the servers**: the sum of Consul's own ``consul.rpc.request`` counter over the three
  servers (Prometheus format), minus the background rate the agents cause without ctemplate
  (coordinate updates, anti-entropy), measured before each run. It also counts what a server
  forwards to the leader, so it is a little higher than the agents' count.

The template reads ``--services`` services (10 by default), as a real proxy configuration does;
a change re-registers one instance of one of them with a new port (a small change).

    .venv/bin/python bench/dedup_load.py                       # 1, 5, 20 instances, ~8 min
    .venv/bin/python bench/dedup_load.py --instances 1,5 --changes 5 --idle 20
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from _common import add_tests_to_path, child_env, ctemplate_command

add_tests_to_path()
from consul_cluster import ConsulCluster  # noqa: E402
from consul_harness import find_consul  # noqa: E402
from tcp_relay import Relay  # noqa: E402

_REQUEST = re.compile(rb"(GET|PUT|DELETE) /v1/(health|kv|session|txn|event/fire|event/list)")
_LOCAL = {"GET event/list"}  # answered by the agent itself
_RPC = re.compile(r"^consul_rpc_request (\S+)$", re.M)


class ClassCounter(Relay):
    """Counts requests by kind (health reads, KV reads, writes, events) and the bytes sent back,
    split into answers the agent had from the servers and answers it gave alone (event lists).
    Requests on one connection are answered in order, so each answer's bytes belong to the
    connection's latest request."""

    def __init__(self, upstream: str, host: str) -> None:
        super().__init__(upstream, host=host)
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.down = 0
        self.down_local = 0
        self._conn: list[str] = []

    def tap(self, *, up: bool) -> Callable[[bytes], None]:
        if up:  # handle() asks for the upward tap first, then the downward one
            self._conn = conn = [""]
        else:
            conn = self._conn

        def count(data: bytes) -> None:
            with self.lock:
                if not up:
                    if conn[0] in _LOCAL:
                        self.down_local += len(data)
                    else:
                        self.down += len(data)
                    return
                for method, kind in _REQUEST.findall(data):
                    name = f"{method.decode()} {kind.decode()}"
                    self.counts[name] = self.counts.get(name, 0) + 1
                    conn[0] = name

        return count

    def snapshot(self) -> tuple[dict[str, int], int]:
        with self.lock:
            return dict(self.counts), self.down


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)
    }


def _forwarded(counts: dict[str, int]) -> int:
    return sum(v for k, v in counts.items() if k not in _LOCAL)


def server_rpcs(cluster: ConsulCluster) -> float:
    """RPC requests the three servers received so far (Consul's own counter)."""
    total = 0.0
    for server in cluster.servers:
        text = server.http.get("/v1/agent/metrics", params={"format": "prometheus"}).text
        total += sum(float(v) for v in _RPC.findall(text))
    return total


def run(
    cluster: ConsulCluster, agents: list[str], n: int, dedup: bool, args: argparse.Namespace
) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="ctemplate-dedup-bench-"))
    server = cluster.servers[0]
    services = [f"svc{n}{'d' if dedup else 'p'}{i}" for i in range(args.services)]
    for name in services:
        for k in range(3):
            server.http.put(
                "/v1/catalog/register",
                json={
                    "Node": f"{name}-n{k}",
                    "Address": f"10.7.0.{k}",
                    "Service": {"Service": name, "Port": 80},
                },
            ).raise_for_status()
    template = root / "t.j2"
    template.write_text(
        "".join(
            f'{{% for s in service("{name}") %}}{{{{ s.Node }}}} {{{{ s.Port }}}}\n{{% endfor %}}'
            for name in services
        )
    )
    config = root / "c.hcl"
    wait = f'\n  block_query_wait = "{args.block_query_wait}"' if args.block_query_wait else ""
    config.write_text(f"deduplicate {{\n  enabled = true{wait}\n}}\n" if dedup else "")
    proxies = [ClassCounter(agents[i], agents[i].rpartition(":")[0]).start() for i in range(n)]
    procs = []
    # The agents' own traffic to the servers, without ctemplate.
    r0, t0 = server_rpcs(cluster), time.monotonic()
    time.sleep(args.background)
    background = (server_rpcs(cluster) - r0) / (time.monotonic() - t0)

    def snapshot() -> tuple[dict[str, int], int, float, float]:
        counts: dict[str, int] = {}
        down = 0
        for proxy in proxies:
            c, d = proxy.snapshot()
            down += d
            for k, v in c.items():
                counts[k] = counts.get(k, 0) + v
        return counts, down, server_rpcs(cluster), time.monotonic()

    try:
        for i in range(n):
            procs.append(
                subprocess.Popen(
                    [
                        *ctemplate_command(),
                        "-consul-addr",
                        proxies[i].addr,
                        "-config",
                        str(config),
                        "-template",
                        f"{template}:{root / f'out{i}'}",
                        "-log-level",
                        "err",
                    ],
                    env=child_env(),
                )
            )

        def all_have(port: int) -> bool:
            for i in range(n):
                try:
                    if f" {port}\n" not in (root / f"out{i}").read_text():
                        return False
                except FileNotFoundError:
                    return False
            return True

        deadline = time.monotonic() + 60 + 15 * n  # n processes start on a small machine
        while not all_have(80):
            if time.monotonic() > deadline:
                raise TimeoutError("first render")
            time.sleep(0.1)
        time.sleep(3)  # elections and first publishes settle
        before, down0, rpc0, at0 = snapshot()
        latencies = []
        for c in range(args.changes):
            port = 1000 + c
            name = services[c % len(services)]
            t0 = time.monotonic()
            server.http.put(
                "/v1/catalog/register",
                json={
                    "Node": f"{name}-n0",
                    "Address": "10.7.0.0",
                    "Service": {"Service": name, "Port": port},
                },
            ).raise_for_status()
            while not all_have(port):
                if time.monotonic() - t0 > 60:
                    raise TimeoutError(f"change {c}")
                time.sleep(0.01)
            latencies.append(time.monotonic() - t0)
            time.sleep(0.3)
        after, down1, rpc1, at1 = snapshot()
        changes = _diff(after, before)
        time.sleep(1)
        idle0, idown0, irpc0, iat0 = snapshot()
        time.sleep(args.idle)
        idle1, idown1, irpc1, iat1 = snapshot()
        idle = _diff(idle1, idle0)
        per_min = 60.0 / args.idle
        return {
            "per_change": {k: v / args.changes for k, v in changes.items()},
            "per_change_total": _forwarded(changes) / args.changes,
            "local_per_change": (sum(changes.values()) - _forwarded(changes)) / args.changes,
            "server_rpcs_per_change": (rpc1 - rpc0 - background * (at1 - at0)) / args.changes,
            "kib_per_change": (down1 - down0) / 1024 / args.changes,
            "idle_per_min": {k: v * per_min for k, v in idle.items()},
            "idle_per_min_total": _forwarded(idle) * per_min,
            "idle_server_rpcs_per_min": (irpc1 - irpc0 - background * (iat1 - iat0))
            * 60
            / (iat1 - iat0),
            "idle_kib_per_min": (idown1 - idown0) / 1024 * per_min,
            "background_rpcs_per_min": background * 60,
            "p50_s": statistics.median(latencies),
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        for proxy in proxies:
            proxy.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--instances", default="1,5,20")
    p.add_argument("--services", type=int, default=10)
    p.add_argument("--changes", type=int, default=10)
    p.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    p.add_argument(
        "--block-query-wait",
        default="",
        help="deduplicate's block_query_wait (default 5m): how often a follower re-issues its "
        "lock watch and checks the data without an event; shorten it to see that cost",
    )
    p.add_argument(
        "--background", type=float, default=10.0, help="seconds to measure the agents' own RPCs"
    )
    args = p.parse_args()
    counts = [int(x) for x in args.instances.split(",")]
    telemetry = 'telemetry {\n  prometheus_retention_time = "1h"\n  disable_hostname = true\n}'
    with ConsulCluster(find_consul(), server_hcl=(telemetry,)) as cluster:
        agents = []
        for i in range(max(counts)):
            agent = cluster.add_client(f"bench-host{i}", f"127.0.0.{4 + i}")
            agents.append(agent.http_addr)
        rows = []
        for n in counts:
            for dedup in (False, True):
                print(
                    f"[{time.strftime('%H:%M:%S')}] {n} instances, "
                    f"dedup {'on' if dedup else 'off'}",
                    flush=True,
                )
                r = run(cluster, agents, n, dedup, args)
                rows.append((n, dedup, r))
                print(f"  {r}", flush=True)
    print(
        f"\n{args.services} services in the template; {args.changes} changes; "
        f"idle window {args.idle:g}s\n"
    )
    print(
        "| instances | dedup | to servers per change (health, KV data reads) "
        "| server RPCs per change | KiB per change from the servers "
        "| answered by the agent per change | to servers per idle minute "
        "| change -> all files p50 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, dedup, r in rows:
        per: dict[str, float] = r["per_change"]  # type: ignore[assignment]
        print(
            f"| {n} | {'on' if dedup else 'off'} | {r['per_change_total']:.1f} "
            f"({per.get('GET health', 0.0):.1f}, {per.get('GET kv', 0.0):.1f}) | "
            f"{r['server_rpcs_per_change']:.1f} | {r['kib_per_change']:.1f} | "
            f"{r['local_per_change']:.1f} | {r['idle_per_min_total']:.0f} | "
            f"{float(r['p50_s']) * 1000:.0f} ms |"  # type: ignore[arg-type]
        )
    print(
        "\nserver RPCs per idle minute, after the background: "
        + ", ".join(f"{float(r['idle_server_rpcs_per_min']):.0f}" for _, _, r in rows)  # type: ignore[arg-type]
        + "\nbackground (the agents without ctemplate), server RPCs per minute: "
        + ", ".join(f"{float(r['background_rpcs_per_min']):.0f}" for _, _, r in rows)  # type: ignore[arg-type]
        + "\n(the agents' own RPCs come in bursts of this size: idle figures at the servers are"
        " noise; the agents' counts above are exact)"
    )


if __name__ == "__main__":
    main()
