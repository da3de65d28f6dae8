"""Issue #16's per-change figures in one command, every side against the floor in the same run.

Three scenarios (from ``bench/scenarios.py``), each on its own Consul dev agent (loopback, raised
``http_max_conns_per_client`` so that the raw client's 1,000 loops fit):

* ``one-key``: ``{{ key("bench/k") }}``, a PUT per change;
* ``one-service``: five instances of ``web``, a change flips one instance's check;
* ``keys-1000``: 1,000 ``key()`` calls in one template, a PUT of one of them per change.

Sides, all watching the same agent and measured from the same change:

* ``ctemplate``: this tree's daemon; ``base``: another copy of the engine (``--base-src DIR``,
  for before/after in the same run);
* ``raw``: the httpx clients (``raw_client.py`` / ``raw_multi.py``: durable writes);
* ``floor``: ``floor_client.py``, a minimal ``urllib`` blocking-query loop writing tmp+rename
  **without fsync** (issue #16's yardstick).

Each scenario runs ``--runs`` times (all sides started afresh each time, in rotated order);
each run measures ``--changes`` changes: the latency from the change returning to each file
showing it (inotify), and CPU (user+sys) per change of each process. Printed: the per-run p50
and CPU, their medians, and the ratios to the floor (median of the per-run ratios), with the
issue's targets (one key and one service: p50 <= 2.3x, CPU <= 2x; 1,000 keys: p50 <= 1.5x).

    .venv/bin/python bench/hot.py                          # 3 runs x 60 changes per scenario
    .venv/bin/python bench/hot.py --base-src /tmp/old --markdown
    .venv/bin/python bench/hot.py --scenarios one-key --runs 3 --changes 150
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    BENCH,
    Observer,
    add_tests_to_path,
    child_env,
    consul_version,
    cpu_seconds,
    ctemplate_command,
    percentile,
    python,
    raise_nofile,
    rss_kib,
)
from scenarios import RAISED_LIMIT, Keys, OneKey, OneService, Proc, Scenario, running

SCENARIOS: dict[str, type[Scenario]] = {
    "one-key": OneKey,
    "one-service": OneService,
    "keys-1000": Keys,
}
TARGETS = {  # issue #16: (p50 / floor, CPU / floor); None: no target
    "one-key": (2.3, 2.0),
    "one-service": (2.3, 2.0),
    "keys-1000": (1.5, None),
}


def floor_argv(sc: Scenario, addr: str, dest: Path) -> list[str]:
    argv = [python(), str(BENCH / "floor_client.py"), "--addr", addr, "--dest", str(dest)]
    argv += ["--max-seconds", "1800"]
    if isinstance(sc, OneKey):
        return [*argv, "--key", "bench/k"]
    if isinstance(sc, OneService):
        return [*argv, "--service", "web"]
    assert isinstance(sc, Keys)
    return [*argv, "--prefix", sc.prefix, "--count", str(sc.count)]


def sides_for(
    args: argparse.Namespace, sc: Scenario, addr: str, tmp: Path, out: Path
) -> dict[str, tuple[list[str], Path, dict[str, str]]]:
    """side -> (argv, destination, environment)."""
    env = child_env()
    tmpl = tmp / "t.j2"

    def ct(dest: Path, *, module: bool = False) -> list[str]:
        # -P: no working directory first on sys.path (this checkout would shadow --base-src).
        command = [python(), "-P", "-m", "ctemplate"] if module else ctemplate_command()
        return [*command, "-consul-addr", addr, "-template", f"{tmpl}:{dest}", "-log-level", "err"]

    every: dict[str, tuple[list[str], Path, dict[str, str]]] = {
        "ctemplate": (ct(out / "ct.out"), out / "ct.out", env),
        "raw": (sc.raw_argv(addr, out / "raw.out"), out / "raw.out", env),
        "floor": (floor_argv(sc, addr, out / "floor.out"), out / "floor.out", env),
    }
    if args.base_src:
        base_env = dict(env)
        base_env["PYTHONPATH"] = str(args.base_src) + os.pathsep + env["PYTHONPATH"]
        every["base"] = (ct(out / "base.out", module=True), out / "base.out", base_env)
    return {s: every[s] for s in args.sides if s in every}


def one_run(
    args: argparse.Namespace, sc: Scenario, agent: Any, tmp: Path, rng: random.Random, run: int
) -> dict[str, dict[str, float]]:
    out = tmp / f"run{run}"
    out.mkdir()
    sides = sides_for(args, sc, agent.http_addr, tmp, out)
    names = list(sides)
    shift = run % len(names)
    names = names[shift:] + names[:shift]  # who starts first rotates between runs
    procs = {s: Proc(s, sides[s][0], tmp / f"{s}-{run}.log", sides[s][2]) for s in names}
    files = {s: sides[s][1] for s in names}
    observer = Observer(out)
    counter = getattr(sc, "_counter", 0)
    try:
        with running(*procs.values()):
            first = observer.wait_for(
                {s: (p, lambda t: t is not None) for s, p in files.items()}, args.start_timeout
            )
            for s in names:
                if s not in first:
                    raise RuntimeError(f"{s} wrote nothing; log:\n{procs[s].log_tail()}")
            time.sleep(1.0)  # start-up settles (lazy imports, the first passes)

            def changes(n: int) -> tuple[dict[str, list[float]], dict[str, int]]:
                nonlocal counter
                lat: dict[str, list[float]] = {s: [] for s in names}
                missed = dict.fromkeys(names, 0)
                for _ in range(n):
                    change = sc.next_change(counter, rng)
                    counter += 1
                    change.apply(agent)
                    t0 = time.perf_counter()
                    seen = observer.wait_for(
                        {s: (p, change.check) for s, p in files.items()}, args.timeout
                    )
                    for s in names:
                        if s in seen:
                            lat[s].append(max(seen[s] - t0, 0.0))
                        else:
                            missed[s] += 1
                    for p in procs.values():
                        if not p.alive():
                            raise RuntimeError(f"{p.name} exited; log:\n{p.log_tail()}")
                    time.sleep(rng.uniform(args.gap_min, args.gap_max))
                return lat, missed

            changes(args.warmup)
            cpu0 = {s: cpu_seconds(p.pid) for s, p in procs.items()}
            lat, missed = changes(args.changes)
            cpu1 = {s: cpu_seconds(p.pid) for s, p in procs.items()}
            rss = {s: rss_kib(p.pid) for s, p in procs.items()}
    finally:
        observer.close()
        sc._counter = counter  # type: ignore[attr-defined]  # values stay unique across runs
    return {
        s: {
            "p50_ms": percentile(lat[s], 50) * 1000 if lat[s] else float("nan"),
            "p95_ms": percentile(lat[s], 95) * 1000 if lat[s] else float("nan"),
            "cpu_ms": (cpu1[s] - cpu0[s]) / args.changes * 1000,
            "rss_mib": rss[s] / 1024,
            "missed": missed[s],
        }
        for s in names
    }


def run_scenario(args: argparse.Namespace, name: str) -> dict[str, Any]:
    add_tests_to_path()
    from consul_harness import ConsulAgent, find_consul

    sc = SCENARIOS[name]()
    raised = f"limits {{ http_max_conns_per_client = {RAISED_LIMIT} }}"
    agent = ConsulAgent(find_consul(), log_level="warn", extra_args=["-hcl", raised])
    rng = random.Random(args.seed)
    runs: list[dict[str, dict[str, float]]] = []
    try:
        agent.start()
        sc.seed(agent)
        with tempfile.TemporaryDirectory(prefix=f"ctemplate-hot-{name}-") as tmp_name:
            tmp = Path(tmp_name)
            (tmp / "t.j2").write_text(sc.template)
            for run in range(args.runs):
                print(f"[{time.strftime('%H:%M:%S')}] {name}: run {run + 1}", file=sys.stderr)
                runs.append(one_run(args, sc, agent, tmp, rng, run))
    finally:
        agent.close()
    return {"name": name, "runs": runs}


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # no NaN
    return statistics.median(values) if values else float("nan")


def summarise(res: dict[str, Any]) -> dict[str, dict[str, float]]:
    runs = res["runs"]
    sides = list(runs[0])
    out: dict[str, dict[str, float]] = {}
    for s in sides:
        out[s] = {
            "p50_ms": _median([r[s]["p50_ms"] for r in runs]),
            "cpu_ms": _median([r[s]["cpu_ms"] for r in runs]),
            "rss_mib": _median([r[s]["rss_mib"] for r in runs]),
            "missed": sum(r[s]["missed"] for r in runs),
        }
        if "floor" in runs[0]:
            out[s]["p50_ratio"] = _median([r[s]["p50_ms"] / r["floor"]["p50_ms"] for r in runs])
            out[s]["cpu_ratio"] = _median([r[s]["cpu_ms"] / r["floor"]["cpu_ms"] for r in runs])
    return out


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"hot-path benchmark  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}  "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"{args.runs} runs x {args.changes} changes (+{args.warmup} warm-up) per scenario, "
        f"gaps {args.gap_min * 1000:.0f}-{args.gap_max * 1000:.0f} ms; medians of the runs; "
        "ratios: median of the per-run ratios to the floor",
        "",
    ]
    md = [
        "| scenario | side | p50 ms (runs) | p50 median | CPU ms/change (runs) | CPU median "
        "| p50 / floor | CPU / floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    head = (
        f"{'scenario':12} {'side':10} {'p50 ms (runs)':>22} {'p50':>7} {'CPU ms (runs)':>20} "
        f"{'CPU':>6} {'p50/fl':>7} {'CPU/fl':>7} {'RSS':>6} {'miss':>5}"
    )
    lines.append(head)
    verdicts = []
    for res in results:
        summary = summarise(res)
        for s, v in summary.items():
            p50s = " / ".join(f"{r[s]['p50_ms']:.2f}" for r in res["runs"])
            cpus = " / ".join(f"{r[s]['cpu_ms']:.2f}" for r in res["runs"])
            pr, cr = v.get("p50_ratio", float("nan")), v.get("cpu_ratio", float("nan"))
            lines.append(
                f"{res['name']:12} {s:10} {p50s:>22} {v['p50_ms']:7.2f} {cpus:>20} "
                f"{v['cpu_ms']:6.2f} {pr:6.2f}x {cr:6.2f}x {v['rss_mib']:6.1f} {v['missed']:5.0f}"
            )
            md.append(
                f"| {res['name']} | {s} | {p50s} | {v['p50_ms']:.2f} | {cpus} | "
                f"{v['cpu_ms']:.2f} | {pr:.2f}x | {cr:.2f}x |"
            )
        p50_target, cpu_target = TARGETS[res["name"]]
        ct = summary.get("ctemplate", {})
        if "p50_ratio" in ct:
            ok = ct["p50_ratio"] <= p50_target
            verdicts.append(
                f"{res['name']}: p50 {ct['p50_ratio']:.2f}x floor (target <= {p50_target}x): "
                f"{'PASS' if ok else 'FAIL'}"
            )
            if cpu_target is not None:
                ok = ct["cpu_ratio"] <= cpu_target
                verdicts.append(
                    f"{res['name']}: CPU {ct['cpu_ratio']:.2f}x floor (target <= {cpu_target}x): "
                    f"{'PASS' if ok else 'FAIL'}"
                )
    lines += ["", *verdicts]
    if args.markdown:
        lines += ["", *md]
    return "\n".join(lines)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="issue #16's per-change figures, against the floor")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--sides", default="ctemplate,base,raw,floor", help="base needs --base-src")
    p.add_argument("--base-src", type=Path, help="directory with another ctemplate/ package")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--changes", type=int, default=60, help="measured changes per run")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--gap-min", type=float, default=0.15, help="seconds between changes, min")
    p.add_argument("--gap-max", type=float, default=0.25, help="seconds between changes, max")
    p.add_argument("--timeout", type=float, default=10.0, help="per change, seconds")
    p.add_argument("--start-timeout", type=float, default=60.0, help="first render, seconds")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    args.sides = args.sides.split(",")
    names = args.scenarios.split(",")
    if not set(names) <= SCENARIOS.keys():
        p.error(f"--scenarios: names from {', '.join(SCENARIOS)}")
    if not set(args.sides) <= {"ctemplate", "base", "raw", "floor"}:
        p.error("--sides: from ctemplate, base, raw, floor")
    if args.runs < 1 or args.changes < 1:
        p.error("need --runs >= 1 and --changes >= 1")
    signal.signal(signal.SIGTERM, _terminate)
    raise_nofile()  # the raw client's 1,000 connections
    add_tests_to_path()
    from consul_harness import find_consul

    print(f"Consul {consul_version(find_consul())}", file=sys.stderr)
    results = [run_scenario(args, n) for n in names]
    print(report(results, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
