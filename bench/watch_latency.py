"""Change -> handler started: ``ctemplate watch`` beside ``consul watch``, key and event types.

One ``consul agent -dev`` on free loopback ports; both watchers run at once against it with the
same handler (``sh record.sh OUT``: the first thing it does is append the wall-clock time, then it
reads its stdin). Each change is one ``PUT /v1/kv/...`` (key) or ``PUT /v1/event/fire/...``
(event); the latency of a side is the handler's timestamp minus the time just before the PUT.
Changes are 200-300 ms apart, so each one is handled alone. Prints p50/p95/max per type and side.

    .venv/bin/python bench/watch_latency.py                # 60 changes per type
    .venv/bin/python bench/watch_latency.py --changes 200 --json /tmp/w.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import add_tests_to_path, child_env, ctemplate_command

RECORD = """#!/bin/sh
date +%s.%N >> "$1"
cat > /dev/null
"""


def _stamps(path: Path) -> list[float]:
    try:
        return [float(line) for line in path.read_text().split()]
    except (FileNotFoundError, ValueError):
        return []


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _measure(agent: Any, kind: str, changes: int, tmp: Path, consul: str) -> dict[str, Any]:
    record = tmp / "record.sh"
    record.write_text(RECORD)
    args = ["-type", "key", "-key", "bench/k"] if kind == "key" else ["-type", "event"]
    args += ["-name", "bench"] if kind == "event" else []
    outs = {"ctemplate": tmp / f"{kind}-ct.out", "consul": tmp / f"{kind}-consul.out"}
    programs = {"ctemplate": [*ctemplate_command(), "watch"], "consul": [consul, "watch"]}
    env = child_env({"SHELL": "/bin/sh"})
    procs = []
    for side, out in outs.items():
        argv = [*programs[side], "-http-addr", agent.http_addr, *args, "sh", str(record), str(out)]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL))
    latencies: dict[str, list[float]] = {side: [] for side in outs}
    missed = dict.fromkeys(outs, 0)
    try:
        deadline = time.monotonic() + 30
        while not all(_stamps(o) for o in outs.values()):  # the run at start
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind}: no run at start")
            time.sleep(0.05)
        time.sleep(0.5)
        for i in range(changes):
            before = {side: len(_stamps(o)) for side, o in outs.items()}
            t0 = time.time()
            if kind == "key":
                agent.put_kv("bench/k", f"v{i}")
            else:
                agent.request("PUT", "/v1/event/fire/bench", content=f"e{i}".encode())
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if all(len(_stamps(o)) > before[s] for s, o in outs.items()):
                    break
                time.sleep(0.005)
            for side, out in outs.items():
                stamps = _stamps(out)
                if len(stamps) > before[side]:
                    latencies[side].append(stamps[before[side]] - t0)
                else:
                    missed[side] += 1
            time.sleep(random.uniform(0.2, 0.3))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    result: dict[str, Any] = {}
    for side, values in latencies.items():
        ms = [v * 1000 for v in values]
        result[side] = {
            "n": len(ms),
            "missed": missed[side],
            "p50_ms": round(_percentile(ms, 0.5), 1) if ms else None,
            "p95_ms": round(_percentile(ms, 0.95), 1) if ms else None,
            "max_ms": round(max(ms), 1) if ms else None,
            "mean_ms": round(statistics.fmean(ms), 1) if ms else None,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=60, help="changes per type")
    parser.add_argument("--types", default="key,event")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    add_tests_to_path()
    from consul_harness import ConsulAgent, find_consul

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    consul = find_consul()
    agent = ConsulAgent(consul, node_name="bench-watch", log_level="warn")
    agent.start()
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="ctemplate-bench-watch-") as tmp:
            for kind in args.types.split(","):
                results[kind] = _measure(agent, kind, args.changes, Path(tmp), consul)
    finally:
        agent.close()
    print(f"change -> handler started, {args.changes} changes per type, {os.cpu_count()} CPUs")
    head = ("type", "side", "n", "miss", "p50 ms", "p95 ms", "max ms")
    print("{:<6} {:<10} {:>4} {:>4} {:>7} {:>7} {:>7}".format(*head))
    for kind, sides in results.items():
        for side, r in sides.items():
            print(
                f"{kind:<6} {side:<10} {r['n']:>4} {r['missed']:>4} {r['p50_ms']!s:>7} "
                f"{r['p95_ms']!s:>7} {r['max_ms']!s:>7}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
