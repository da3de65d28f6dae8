"""What de-duplication saves the Consul servers: requests per change and per idle minute, for 1, 5
and 20 instances of the same template, with and without ``deduplicate``.

A real three-server cluster (127.0.0.1-3) and one client agent (127.0.0.4); every instance talks
to that agent through one counting proxy. A client agent answers none of these reads itself:
each request (health, KV, session, transaction) is one RPC to a server, so the proxy's count is
what reaches the servers. The template reads ``--services`` services (10 by default), as a real
proxy configuration does; a change re-registers one instance of one of them.

    .venv/bin/python bench/dedup_load.py                       # 1, 5, 20 instances, ~6 min
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

_REQUEST = re.compile(rb"(GET|PUT|DELETE) /v1/(health|kv|session|txn)")


class ClassCounter(Relay):
    """Counts requests by kind (health reads, KV reads, writes) and bytes sent back."""

    def __init__(self, upstream: str, host: str) -> None:
        super().__init__(upstream, host=host)
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.down = 0

    def tap(self, *, up: bool) -> Callable[[bytes], None]:
        def count(data: bytes) -> None:
            with self.lock:
                if not up:
                    self.down += len(data)
                    return
                for method, kind in _REQUEST.findall(data):
                    name = f"{method.decode()} {kind.decode()}"
                    self.counts[name] = self.counts.get(name, 0) + 1

        return count

    def snapshot(self) -> tuple[dict[str, int], int]:
        with self.lock:
            return dict(self.counts), self.down


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)
    }


def run(
    cluster: ConsulCluster, agent_addr: str, n: int, dedup: bool, args: argparse.Namespace
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
    config.write_text("deduplicate {\n  enabled = true\n}\n" if dedup else "")
    proxy = ClassCounter(agent_addr, "127.0.0.4").start()
    procs = []
    try:
        for i in range(n):
            procs.append(
                subprocess.Popen(
                    [
                        *ctemplate_command(),
                        "-consul-addr",
                        proxy.addr,
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
        before, down0 = proxy.snapshot()
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
        after, down1 = proxy.snapshot()
        changes = _diff(after, before)
        time.sleep(1)
        idle0, idown0 = proxy.snapshot()
        time.sleep(args.idle)
        idle1, idown1 = proxy.snapshot()
        idle = _diff(idle1, idle0)
        per_min = 60.0 / args.idle
        return {
            "per_change": {k: v / args.changes for k, v in changes.items()},
            "per_change_total": sum(changes.values()) / args.changes,
            "kib_per_change": (down1 - down0) / 1024 / args.changes,
            "idle_per_min": {k: v * per_min for k, v in idle.items()},
            "idle_per_min_total": sum(idle.values()) * per_min,
            "idle_kib_per_min": (idown1 - idown0) / 1024 * per_min,
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
        proxy.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--instances", default="1,5,20")
    p.add_argument("--services", type=int, default=10)
    p.add_argument("--changes", type=int, default=10)
    p.add_argument("--idle", type=float, default=30.0, help="idle window, seconds")
    args = p.parse_args()
    counts = [int(x) for x in args.instances.split(",")]
    with ConsulCluster(find_consul()) as cluster:
        # Every instance reaches the agent through one proxy, from one address: lift the agent's
        # limit of 200 connections per client address (20 instances x 10 long polls).
        agent = cluster.add_client(
            "bench-client", "127.0.0.4", extra_hcl=("limits { http_max_conns_per_client = 4096 }",)
        )
        rows = []
        for n in counts:
            for dedup in (False, True):
                print(
                    f"[{time.strftime('%H:%M:%S')}] {n} instances, "
                    f"dedup {'on' if dedup else 'off'}",
                    flush=True,
                )
                r = run(cluster, agent.http_addr, n, dedup, args)
                rows.append((n, dedup, r))
                print(f"  {r}", flush=True)
    print(
        f"\n{args.services} services in the template; {args.changes} changes; "
        f"idle window {args.idle:g}s\n"
    )
    print(
        "| instances | dedup | requests per change (health reads) | KiB per change "
        "| requests per idle minute | KiB per idle minute | change -> all files p50 |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, dedup, r in rows:
        health = r["per_change"].get("GET health", 0.0)  # type: ignore[attr-defined]
        print(
            f"| {n} | {'on' if dedup else 'off'} | {r['per_change_total']:.1f} ({health:.1f}) | "
            f"{r['kib_per_change']:.1f} | {r['idle_per_min_total']:.0f} | "
            f"{r['idle_kib_per_min']:.1f} | "
            f"{float(r['p50_s']) * 1000:.0f} ms |"  # type: ignore[arg-type]
        )


if __name__ == "__main__":
    main()
