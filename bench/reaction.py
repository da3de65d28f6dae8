"""Change-to-file reaction: ctemplate's daemon against a minimal blocking-query loop.

Starts its own Consul dev agent (tests/consul_harness.py, loopback only), then, side by side in
the same run, watching the same key ``bench/k``:

* ctemplate in daemon mode: ``ctemplate -consul-addr ... -template "k.j2:ct.out"
  -log-level err`` with the template ``{{ key("bench/k") }}``;
* bench/raw_client.py: long-polls the key and writes the value the same way (temp + fsync +
  rename).

For each change it PUTs a unique value and measures, for each side, the time from the PUT
returning to the destination file holding the new value. Files are observed with inotify
(IN_MOVED_TO on the output directory; both sides rename into it), so the observer sleeps in
the kernel instead of polling; ``--watch poll`` is a stat/read loop instead. Changes are spaced
``--gap-min``..``--gap-max`` seconds (uniform jitter) after both files were updated.

    .venv/bin/python bench/reaction.py                      # 200 changes, gaps 150-250 ms
    .venv/bin/python bench/reaction.py --gap-min 0.05 --gap-max 0.1
    .venv/bin/python bench/reaction.py --trace              # where ctemplate's time goes

Prints p50/p95/max per side and the ctemplate/raw ratios, CPU seconds per change and RSS.
The target (ctemplate p50 within 2x of the raw loop) prints PASS or FAIL; the exit status only
reflects whether the benchmark itself ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    BENCH,
    Observer,
    Summary,
    add_tests_to_path,
    child_env,
    consul_version,
    cpu_seconds,
    ctemplate_command,
    die_with_parent,
    ms,
    percentile,
    python,
    read_text,
    rss_kib,
    self_cpu,
)

KEY = "bench/k"
TEMPLATE = '{{ key("bench/k") }}'
TARGET_RATIO = 2.0
FLOOR_P50 = 2.3  # issue #16: change -> file p50 within 2.3x the urllib floor's
FLOOR_CPU = 2.0  # and CPU per change within 2x

# --- processes ---------------------------------------------------------------------------------


@dataclass
class Side:
    name: str
    argv: list[str]
    dest: Path
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    latencies: list[float] = field(default_factory=list)
    missed: int = 0
    rss_idle: int = 0
    rss_end: int = 0
    cpu_idle: float = 0.0
    cpu_run: float = 0.0

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                preexec_fn=die_with_parent,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def log_tail(self, lines: int = 20) -> str:
        text = read_text(self.log) or ""
        return "\n".join(text.splitlines()[-lines:])


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Change:
    value: str
    put_start: float
    put_end: float
    seen: dict[str, float]


def _wait_initial(sides: list[Side], observer: Observer, value: str, timeout: float) -> None:
    seen = observer.wait({s.name: s.dest for s in sides}, value, timeout)
    for s in sides:
        if s.name not in seen:
            raise RuntimeError(
                f"{s.name} did not write {s.dest} within {timeout}s "
                f"(alive: {s.alive()}); log:\n{s.log_tail()}"
            )


def run(args: argparse.Namespace) -> dict[str, Any]:
    add_tests_to_path()
    from consul_harness import ConsulAgent, find_consul

    binary = find_consul()
    agent = ConsulAgent(binary, log_level="warn")
    agent.start()
    try:
        with tempfile.TemporaryDirectory(prefix="ctemplate-bench-") as tmp:
            return _run_with_agent(args, agent, Path(tmp))
    finally:
        agent.close()


def _run_with_agent(args: argparse.Namespace, agent: Any, tmp: Path) -> dict[str, Any]:
    out = tmp / "out"
    out.mkdir()
    tmpl = tmp / "k.j2"
    tmpl.write_text(TEMPLATE)
    trace_path = tmp / "trace.json"
    initial = "v0-initial"
    agent.put_kv(KEY, initial)

    ct_flags = [
        "-consul-addr",
        agent.http_addr,
        "-template",
        f"{tmpl}:{out / 'ct.out'}",
        "-log-level",
        "err",
    ]
    if args.trace:
        ct_argv = [python(), str(BENCH / "ctemplate_traced.py"), *ct_flags]
    else:
        ct_argv = [*ctemplate_command(), *ct_flags]
    raw_argv = [
        python(),
        str(BENCH / "raw_client.py"),
        "--addr",
        agent.http_addr,
        "--key",
        KEY,
        "--dest",
        str(out / "raw.out"),
        "--max-seconds",
        str(args.max_seconds),
    ]
    floor_argv = [python(), str(BENCH / "floor_client.py"), *raw_argv[2:]]
    floor_argv[floor_argv.index("--dest") + 1] = str(out / "floor.out")
    raw_trace_path = tmp / "raw-trace.txt"
    trace_env = {"CTEMPLATE_TRACE_OUT": str(trace_path), "RAW_TRACE_OUT": str(raw_trace_path)}
    env = child_env(trace_env if args.trace else None)
    base_flags = list(ct_flags)
    base_flags[base_flags.index("-template") + 1] = f"{tmpl}:{out / 'base.out'}"
    base_env = dict(env)
    if args.base_src:  # another copy of the engine, side by side (before/after)
        base_env["PYTHONPATH"] = str(args.base_src) + os.pathsep + env["PYTHONPATH"]
    all_sides = {
        "ctemplate": Side("ctemplate", ct_argv, out / "ct.out", env, tmp / "ctemplate.log"),
        "base": Side(
            "base",
            # -P: the working directory (this checkout) must not come before --base-src.
            [python(), "-P", "-m", "ctemplate", *base_flags],
            out / "base.out",
            base_env,
            tmp / "base.log",
        ),
        "raw": Side("raw", raw_argv, out / "raw.out", env, tmp / "raw.log"),
        "floor": Side("floor", floor_argv, out / "floor.out", env, tmp / "floor.log"),
    }
    sides = [all_sides[n] for n in args.sides.split(",")]
    observer = Observer(out, args.watch, args.poll_interval)
    changes: list[Change] = []
    try:
        for s in sides:
            s.start()
        _wait_initial(sides, observer, initial, timeout=30.0)
        time.sleep(1.0)  # let start-up settle (lazy imports, first passes, GC)
        cpu0 = {s.name: cpu_seconds(s.pid) for s in sides}
        for s in sides:
            s.rss_idle = rss_kib(s.pid)
        time.sleep(args.idle)
        for s in sides:
            s.cpu_idle = cpu_seconds(s.pid) - cpu0[s.name]

        files = {s.name: s.dest for s in sides}
        rng = random.Random(args.seed)
        total = args.warmup + args.changes
        cpu_start: dict[str, float] = {}
        consul_cpu_start = 0.0
        self_start = 0.0
        run_start = time.perf_counter()
        for i in range(total):
            if i == args.warmup:
                cpu_start = {s.name: cpu_seconds(s.pid) for s in sides}
                consul_cpu_start = cpu_seconds(agent.pid)
                self_start = self_cpu()
                run_start = time.perf_counter()
            value = f"v{i + 1}-{rng.getrandbits(32):08x}"
            t_start = time.perf_counter()
            agent.put_kv(KEY, value)
            t_end = time.perf_counter()
            seen = observer.wait(files, value, args.timeout)
            if i >= args.warmup:
                changes.append(Change(value, t_start, t_end, seen))
                for s in sides:
                    if s.name in seen:
                        s.latencies.append(max(seen[s.name] - t_end, 0.0))
                    else:
                        s.missed += 1
            for s in sides:
                if not s.alive():
                    raise RuntimeError(f"{s.name} exited; log:\n{s.log_tail()}")
            time.sleep(rng.uniform(args.gap_min, args.gap_max))
        run_seconds = time.perf_counter() - run_start
        for s in sides:
            s.cpu_run = cpu_seconds(s.pid) - cpu_start[s.name]
            s.rss_end = rss_kib(s.pid)
        consul_cpu = cpu_seconds(agent.pid) - consul_cpu_start
        bench_cpu = self_cpu() - self_start
    finally:
        observer.close()
        for s in sides:
            s.stop()

    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}",
        "consul": consul_version(agent.binary),
        "settings": {
            "changes": args.changes,
            "warmup": args.warmup,
            "gap_ms": [args.gap_min * 1000, args.gap_max * 1000],
            "watch": args.watch,
            "sides": args.sides,
            "trace": args.trace,
            "idle_s": args.idle,
        },
        "run_seconds": run_seconds,
        "consul_cpu_per_change_ms": consul_cpu / max(args.changes, 1) * 1000,
        "bench_cpu_per_change_ms": bench_cpu / max(args.changes, 1) * 1000,
        "sides": {},
    }
    for s in sides:
        summ = Summary.of(s.latencies)
        result["sides"][s.name] = {
            "n": summ.n,
            "missed": s.missed,
            "p50_ms": summ.p50 * 1000,
            "p95_ms": summ.p95 * 1000,
            "max_ms": summ.max * 1000,
            "mean_ms": summ.mean * 1000,
            "cpu_per_change_ms": s.cpu_run / max(args.changes, 1) * 1000,
            "idle_cpu_s": s.cpu_idle,
            "rss_idle_kib": s.rss_idle,
            "rss_end_kib": s.rss_end,
            "latencies_ms": [round(x * 1000, 3) for x in s.latencies],
        }
    if args.trace:
        if all_sides["ctemplate"] in sides:
            events = json.loads(read_text(trace_path) or "[]")
            result["trace"] = _analyse_trace(events, changes)
        if all_sides["raw"] in sides:
            result["raw_trace"] = _analyse_raw_trace(read_text(raw_trace_path) or "", changes)
    return result


# --- trace analysis ----------------------------------------------------------------------------

PHASES = [
    ("put_to_answer", "PUT returned -> answer decoded in ctemplate"),
    ("answer_to_deliver", "answer decoded -> Watcher.deliver"),
    ("deliver_to_pass", "deliver -> Runner._pass starts"),
    ("pass_to_render", "pass start -> render() starts (worker hop + Jinja)"),
    ("render_to_visible", "render() -> renamed (read, write, fsync, rename)"),
    ("visible_to_seen", "renamed -> file seen by the benchmark"),
    ("render", "render() (all of it: then the fsync of the directory)"),
    ("render_to_seen", "render() returned -> file seen (<0: rename precedes dir fsync)"),
]


def _analyse_trace(events: list[list[Any]], changes: list[Change]) -> dict[str, Any]:
    gets = [e for e in events if e[0] == "get"]
    by_value: dict[str, dict[str, list[Any]]] = {}
    for kind, start, end, value in events:
        if kind in ("get", "deliver", "render", "visible") and value:
            by_value.setdefault(value, {}).setdefault(kind, [start, end])
    passes = [e for e in events if e[0] == "pass"]
    phases: dict[str, list[float]] = {name: [] for name, _ in PHASES}
    delayed: list[float] = []  # request sent after the PUT started: waited for min_interval
    for ch in changes:
        rec = by_value.get(ch.value, {})
        if "get" not in rec or "render" not in rec or "deliver" not in rec:
            continue
        g_start, g_end = rec["get"]
        r_start, r_end = rec["render"]
        d = rec["deliver"][0]
        p = next((e[1] for e in reversed(passes) if e[1] <= r_start), d)
        if g_start > ch.put_start:
            delayed.append(g_start - ch.put_start)
        phases["put_to_answer"].append(g_end - ch.put_end)
        phases["answer_to_deliver"].append(d - g_end)
        phases["deliver_to_pass"].append(p - d)
        phases["pass_to_render"].append(r_start - p)
        phases["render"].append(r_end - r_start)
        visible = rec.get("visible", [r_end])[0]  # (the pass' writes: no visible())
        phases["render_to_visible"].append(visible - r_start)
        if "ctemplate" in ch.seen:
            phases["render_to_seen"].append(ch.seen["ctemplate"] - r_end)
            phases["visible_to_seen"].append(ch.seen["ctemplate"] - visible)
    return {
        "matched": len(phases["render"]),
        "requests": len(gets),
        "delayed_requests": len(delayed),
        "delayed_p50_ms": percentile(delayed, 50) * 1000 if delayed else 0.0,
        "delayed_max_ms": max(delayed) * 1000 if delayed else 0.0,
        "phases_p50_ms": {k: percentile(v, 50) * 1000 for k, v in phases.items()},
        "phases_p95_ms": {k: percentile(v, 95) * 1000 for k, v in phases.items()},
    }


RAW_PHASES = [
    ("put_to_answer", "PUT returned -> answer decoded in the raw client"),
    ("write", "write (temp, fsync, rename, fsync dir)"),
    ("write_to_seen", "write returned -> file seen (<0: rename precedes dir fsync)"),
]


def _analyse_raw_trace(text: str, changes: list[Change]) -> dict[str, Any]:
    by_value: dict[str, tuple[float, float]] = {}
    for line in text.splitlines():
        a, w, value = line.split(" ", 2)
        by_value.setdefault(value, (float(a), float(w)))
    phases: dict[str, list[float]] = {name: [] for name, _ in RAW_PHASES}
    for ch in changes:
        if ch.value not in by_value:
            continue
        answered, written = by_value[ch.value]
        phases["put_to_answer"].append(answered - ch.put_end)
        phases["write"].append(written - answered)
        if "raw" in ch.seen:
            phases["write_to_seen"].append(ch.seen["raw"] - written)
    return {
        "matched": len(phases["write"]),
        "phases_p50_ms": {k: percentile(v, 50) * 1000 for k, v in phases.items()},
        "phases_p95_ms": {k: percentile(v, 95) * 1000 for k, v in phases.items()},
    }


# --- report ------------------------------------------------------------------------------------


def report(r: dict[str, Any]) -> str:
    s = r["settings"]
    lines = [
        f"reaction benchmark  {r['date']}  ({r['machine']}; {r['consul']})",
        f"changes={s['changes']} (+{s['warmup']} warm-up)  gap={s['gap_ms'][0]:.0f}-"
        f"{s['gap_ms'][1]:.0f} ms  observer={s['watch']}  sides={s['sides']}"
        + ("  [TRACED ctemplate]" if s["trace"] else "")
        + f"  run={r['run_seconds']:.1f}s",
        "",
        "latency PUT returned -> file has the value (ms)",
        f"{'':12}{'p50':>9}{'p95':>9}{'max':>9}{'mean':>9}{'n':>6}{'missed':>8}",
    ]
    sides: dict[str, dict[str, Any]] = r["sides"]
    for name, d in sides.items():
        lines.append(
            f"{name:12}{ms(d['p50_ms'] / 1000)} {ms(d['p95_ms'] / 1000)} "
            f"{ms(d['max_ms'] / 1000)} {ms(d['mean_ms'] / 1000)}{d['n']:6d}{d['missed']:8d}"
        )
    if "ctemplate" in sides and "raw" in sides:
        ct, raw = sides["ctemplate"], sides["raw"]
        r50 = ct["p50_ms"] / raw["p50_ms"] if raw["p50_ms"] > 0 else float("inf")
        r95 = ct["p95_ms"] / raw["p95_ms"] if raw["p95_ms"] > 0 else float("inf")
        lines.append(f"{'ratio ct/raw':12}{r50:8.2f}x {r95:8.2f}x")
        verdict = "PASS" if r50 <= TARGET_RATIO else "FAIL"
        lines.append(f"target: ctemplate p50 within {TARGET_RATIO:g}x of raw p50: {verdict}")
    lines += ["", f"{'':12}{'CPU ms/change':>14}{'idle CPU s':>12}{'RSS idle MiB':>14}"]
    lines[-1] += f"{'RSS end MiB':>13}"
    for name, d in sides.items():
        lines.append(
            f"{name:12}{d['cpu_per_change_ms']:14.2f}{d['idle_cpu_s']:12.2f}"
            f"{d['rss_idle_kib'] / 1024:14.1f}{d['rss_end_kib'] / 1024:13.1f}"
        )
    if "floor" in sides:
        floor = sides["floor"]
        lines += [
            "",
            f"against the floor (urllib, no fsync; issue #16 targets p50 <= {FLOOR_P50:g}x, "
            f"CPU <= {FLOOR_CPU:g}x)",
            f"{'':12}{'p50 / floor':>12}{'CPU / floor':>12}",
        ]
        for name, d in sides.items():
            if name == "floor":
                continue
            p50 = d["p50_ms"] / floor["p50_ms"] if floor["p50_ms"] > 0 else float("inf")
            cpu = d["cpu_per_change_ms"] / max(floor["cpu_per_change_ms"], 1e-9)
            lines.append(f"{name:12}{p50:11.2f}x{cpu:11.2f}x")
    lines.append(
        f"(consul agent {r['consul_cpu_per_change_ms']:.2f} ms/change, benchmark process "
        f"{r['bench_cpu_per_change_ms']:.2f} ms/change; idle CPU over {s['idle_s']:g}s)"
    )
    if "trace" in r:
        t = r["trace"]
        lines += [
            "",
            f"ctemplate trace: {t['matched']} changes matched, {t['requests']} requests; "
            f"{t['delayed_requests']} requests were sent after the PUT started "
            f"(min_interval wait: p50 {t['delayed_p50_ms']:.1f} ms, max "
            f"{t['delayed_max_ms']:.1f} ms)",
            f"  {'phase':64}{'p50 ms':>8}{'p95 ms':>8}",
        ]
        for key, label in PHASES:
            lines.append(
                f"  {label:64}{t['phases_p50_ms'][key]:8.2f}{t['phases_p95_ms'][key]:8.2f}"
            )
    if "raw_trace" in r:
        t = r["raw_trace"]
        lines += ["", f"raw client trace: {t['matched']} changes matched"]
        lines.append(f"  {'phase':64}{'p50 ms':>8}{'p95 ms':>8}")
        for key, label in RAW_PHASES:
            lines.append(
                f"  {label:64}{t['phases_p50_ms'][key]:8.2f}{t['phases_p95_ms'][key]:8.2f}"
            )
    return "\n".join(lines)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="ctemplate vs a raw blocking-query loop")
    p.add_argument("--changes", type=int, default=200, help="measured changes (default 200)")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured changes first")
    p.add_argument("--gap-min", type=float, default=0.15, help="seconds between changes, min")
    p.add_argument("--gap-max", type=float, default=0.25, help="seconds between changes, max")
    p.add_argument("--timeout", type=float, default=5.0, help="per change, seconds")
    p.add_argument("--idle", type=float, default=3.0, help="idle CPU window, seconds")
    p.add_argument(
        "--sides",
        default="ctemplate,raw",
        help="comma-separated from ctemplate, base (needs --base-src), raw, floor "
        "(urllib, no fsync: issue #16's yardstick)",
    )
    p.add_argument(
        "--base-src", type=Path, help="directory with another ctemplate/ package: side 'base'"
    )
    p.add_argument("--watch", default="inotify", choices=["inotify", "poll"])
    p.add_argument("--poll-interval", type=float, default=0.001, help="--watch poll, seconds")
    p.add_argument("--trace", action="store_true", help="run ctemplate with bench/ctemplate_traced")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=1800.0, help="raw client's life bound")
    p.add_argument("--json", type=Path, help="also write the results (with samples) here")
    args = p.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the agent and the daemons are stopped on the way out.
    signal.signal(signal.SIGTERM, _terminate)
    known = {"ctemplate", "base", "raw", "floor"}
    names = args.sides.split(",")
    if not names or not set(names) <= known or len(set(names)) != len(names):
        p.error(f"--sides: distinct names from {', '.join(sorted(known))}")
    if "base" in names and not args.base_src:
        p.error("--sides base needs --base-src DIR")
    if args.changes < 1 or args.gap_min < 0 or args.gap_max < args.gap_min:
        p.error("need --changes >= 1 and 0 <= --gap-min <= --gap-max")
    result = run(args)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
