"""Start-up cost: wall time of ``ctemplate -once`` and what it imports.

Starts its own Consul dev agent (loopback), registers ``--instances`` passing instances of
service ``web`` on external nodes, and times (median of ``--runs``, after one warm-up run each):

* ``python -c pass``: the interpreter alone;
* ``ctemplate -version``: the console script, flag parsing, no engine;
* ``ctemplate -once -template upstream.j2:upstream.conf``: one ``service("web")`` template
  rendered and written (the destination is deleted before each run, so every run writes);
* ``ctemplate -once -config bench.hcl``: the same template from an HCL file (pays for hcl2);
* ``python + -once's imports``: the floor -- an interpreter importing exactly the third-party
  and standard-library modules that ``-once -template`` ended with, and nothing of ctemplate
  (what is left above it is ctemplate's own modules and its run).

Each row is also given as a multiple of ``python -c pass`` in the same run (the issue's targets
are ratios).

Then ``python -X importtime`` of the ``-once`` runs (median per module over ``--import-runs``):
the top-level imports by cumulative time, and checks that what a run does not need stays
unimported (no watchfiles or hcl2/lark in ``-once`` without ``-config``; no httpx or jinja2 in
``-version``).

Last, the idle memory of a daemon (``--idle`` seconds after its first render, VmRSS): one
``key()``, then 1,000 ``key()`` calls in one template (``--no-rss`` skips it).

    .venv/bin/python bench/once.py
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import add_tests_to_path, child_env, ctemplate_command, python, rss_kib

UPSTREAM = """\
upstream web {
{% for s in service("web") %}
    server {{ s.Address }}:{{ s.Port }};
{% endfor %}
}
"""

# Modules a run must not import, and modules it is expected to import (for the report).
# Issue #16: -once also leaves out tenacity (until a request fails), YAML, the status server,
# the exec and de-duplication modes, the watch blocks' loop and handlers (only a daemon with
# watch blocks needs them), ctypes (the budget's interrupt) and difflib (error messages);
# session 6: httpx, httpcore and anyio (a plain-HTTP agent is spoken to on h11 directly); session
# 8: h11 (ctemplate reads a plain-HTTP answer itself).
ONCE_UNUSED = (
    "h11",
    "httpx",
    "httpcore",
    "anyio",
    "watchfiles",
    "tenacity",
    "yaml",
    "ctemplate.status",
    "ctemplate.modes.exec",
    "ctemplate.modes.dedup",
    "ctemplate.modes.watch",
    "ctemplate.modes.handlers",
    "ctypes",
    "difflib",
)
MUST_NOT = {
    "version": ("httpx", "jinja2", "tenacity", "hcl2", "lark", "watchfiles", "asyncio"),
    "once": ("hcl2", "lark", *ONCE_UNUSED),
    "once-config": ONCE_UNUSED,
}
SHOW = ("h11", "jinja2", "tenacity", "asyncio", "hcl2", "lark", "ctemplate")


ENV: dict[str, str] = {}


def make_env(tmp: Path, cache_bytecode: bool) -> dict[str, str]:
    """The children's environment; with ``cache_bytecode``, .pyc files are written and reused
    under ``tmp`` (PYTHONPYCACHEPREFIX), never in the source tree, even when the caller's
    environment has PYTHONDONTWRITEBYTECODE set."""
    env = child_env()
    if cache_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return env


def timed(argv: Sequence[str], before: Any = None, timeout: float = 60.0) -> float:
    if before is not None:
        before()
    t0 = time.perf_counter()
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, env=ENV, timeout=timeout, check=False
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return elapsed


def median_wall(argv: Sequence[str], runs: int, before: Any = None) -> tuple[float, float]:
    timed(argv, before)  # warm-up: page cache, .pyc files
    samples = [timed(argv, before) for _ in range(runs)]
    return statistics.median(samples), min(samples)


def import_times(argv: Sequence[str], before: Any = None) -> dict[str, tuple[int, int]]:
    """module -> (level, cumulative microseconds) from one ``python -X importtime`` run."""
    if before is not None:
        before()
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, env=ENV, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    result: dict[str, tuple[int, int]] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name_part = parts[2]
        level = (len(name_part) - len(name_part.lstrip(" ")) - 1) // 2
        name = name_part.strip()
        result.setdefault(name, (level, int(parts[1])))
    return result


def median_imports(
    argv: Sequence[str], runs: int, before: Any = None
) -> dict[str, tuple[int, float]]:
    samples = [import_times(argv, before) for _ in range(runs)]
    names = set().union(*samples)
    out: dict[str, tuple[int, float]] = {}
    for name in names:
        values = [s[name][1] for s in samples if name in s]
        level = next(s[name][0] for s in samples if name in s)
        # a module seen in only some runs counts as 0 in the others
        values += [0] * (runs - len(values))
        out[name] = (level, statistics.median(values))
    return out


def imported(mods: dict[str, tuple[int, float]], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in mods)


def run(args: argparse.Namespace) -> str:
    add_tests_to_path()
    from consul_harness import ConsulAgent, find_consul

    agent = ConsulAgent(find_consul(), log_level="warn")
    agent.start()
    try:
        with tempfile.TemporaryDirectory(prefix="ctemplate-once-") as tmp:
            return _run_with_agent(args, agent, Path(tmp))
    finally:
        agent.close()


def _run_with_agent(args: argparse.Namespace, agent: Any, tmp: Path) -> str:
    ENV.clear()
    ENV.update(make_env(tmp, not args.no_pyc_cache))
    for i in range(args.instances):
        agent.register_external(
            f"web{i:02d}",
            f"10.0.0.{10 + i}",
            "web",
            port=8080,
            checks=[{"CheckID": "web", "Name": "web", "Status": "passing", "ServiceID": "web"}],
        )
    src = tmp / "upstream.j2"
    src.write_text(UPSTREAM)
    dest = tmp / "upstream.conf"
    config = tmp / "bench.hcl"
    config.write_text(
        f'consul {{\n  address = "{agent.http_addr}"\n}}\n'
        f'log_level = "warn"\n'
        f'template {{\n  source = "{src}"\n  destination = "{dest}"\n}}\n'
    )

    def clear() -> None:
        dest.unlink(missing_ok=True)

    ct = ctemplate_command()
    py = python()
    once_flags = ["-once", "-consul-addr", agent.http_addr, "-template", f"{src}:{dest}"]
    once_flags += ["-log-level", "warn"]
    config_flags = ["-once", "-config", str(config)]
    rows: list[tuple[str, Sequence[str], Any]] = [
        ("python -c pass", [py, "-c", "pass"], None),
        ("ctemplate -version", [*ct, "-version"], None),
        ("ctemplate -once -template", [*ct, *once_flags], clear),
        ("ctemplate -once -config (hcl)", [*ct, *config_flags], clear),
    ]
    # The output must be right, or the timing means nothing.
    clear()
    timed([*ct, *once_flags])
    text = dest.read_text()
    servers = text.count("server 10.0.0.")
    if servers != args.instances:
        raise RuntimeError(f"expected {args.instances} servers in the output, got:\n{text}")

    # The console script is a Python file: run it under -X importtime.
    script = [py, "-X", "importtime", *(ct if ct[0] == py else [ct[0]])]
    imports = {
        "version": median_imports([*script, "-version"], args.import_runs),
        "once": median_imports([*script, *once_flags], args.import_runs, clear),
        "once-config": median_imports([*script, *config_flags], args.import_runs, clear),
    }
    floor = tmp / "floor.py"
    floor.write_text(floor_script(imports["once"]))
    rows.append((FLOOR, [py, str(floor)], None))
    walls: dict[str, tuple[float, float]] = {}
    for label, argv, before in rows:
        walls[label] = median_wall(argv, args.runs, before)
    rss = {} if args.no_rss else idle_rss(agent, tmp, ct, args.idle)
    return report(args, agent, walls, imports, rss)


FLOOR = "python + -once's imports (floor)"


def floor_script(mods: dict[str, tuple[int, float]]) -> str:
    """A script importing the modules ``-once`` imported that are not ctemplate's (in the
    order they finished importing; those an import tried and lost are skipped)."""
    names = [m for m in mods if not m.startswith(("ctemplate", "__editable__"))]
    lines = [f"try:\n    import {m}\nexcept ImportError:\n    pass" for m in names]
    return "\n".join(lines) + "\n"


def idle_rss(agent: Any, tmp: Path, ct: Sequence[str], idle: float) -> dict[str, int]:
    """VmRSS (KiB) of a daemon ``idle`` seconds after its first render: one ``key()``, 1,000
    ``key()`` calls in one template, and the same 1,000 in Go syntax (a ``.ctmpl`` file)."""
    keys = [f"bench/rss/k{i:04d}" for i in range(1000)]
    for start in range(0, len(keys), 64):  # a transaction holds at most 64 operations
        value = "dmFsdWU="  # base64 of "value"
        agent.txn(
            [{"KV": {"Verb": "set", "Key": k, "Value": value}} for k in keys[start : start + 64]]
        )
    out: dict[str, int] = {}
    cases = (("one key()", keys[:1], False), ("1,000 key()", keys, False), ("1,000 Go", keys, True))
    # A first daemon, not measured: it compiles the bytecode of what only a daemon imports
    # and -once leaves out, which the -once runs above never cached. Compiling swells the heap,
    # so without it the first case measured the compiler, not the daemon (+5 MiB).
    for label, used, go in (("warm-up", keys[:1], False), *cases):
        src = tmp / ("rss.ctmpl" if go else "rss.j2")
        call = '{{{{ key "{}" }}}}\n' if go else '{{{{ key("{}") }}}}\n'
        src.write_text("".join(call.format(k) for k in used))
        dest = tmp / "rss.out"
        dest.unlink(missing_ok=True)
        argv = [*ct, "-consul-addr", agent.http_addr, "-template", f"{src}:{dest}"]
        proc = subprocess.Popen(
            [*argv, "-log-level", "warn"],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while not dest.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the daemon did not render ({label})")
                time.sleep(0.05)
            time.sleep(idle)
            if label != "warm-up":
                out[label] = rss_kib(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if dest.read_text().count("value") != len(used):
            raise RuntimeError(f"wrong output ({label}):\n{dest.read_text()[:500]}")
    return out


def report(
    args: argparse.Namespace,
    agent: Any,
    walls: dict[str, tuple[float, float]],
    imports: dict[str, dict[str, tuple[int, float]]],
    rss: dict[str, int],
) -> str:
    base = walls["python -c pass"][0]
    lines = [
        f"start-up benchmark  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  ({platform.machine()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()})",
        f"{args.runs} runs each (median, min), one service('web') template over "
        f"{args.instances} instances, Consul at {agent.http_addr}",
        "bytecode: "
        + (
            "as the caller's environment (PYTHONDONTWRITEBYTECODE="
            + os.environ.get("PYTHONDONTWRITEBYTECODE", "")
            + ")"
            if args.no_pyc_cache
            else "cached (.pyc under a private PYTHONPYCACHEPREFIX, as an installed package)"
        ),
        "",
        f"{'':34}{'median ms':>10}{'min ms':>9}{'- python':>10}{'x python':>10}",
    ]
    for label, (med, low) in walls.items():
        lines.append(
            f"{label:34}{med * 1000:10.1f}{low * 1000:9.1f}{(med - base) * 1000:10.1f}"
            f"{med / base:9.1f}x"
        )
    lines += ["", f"imports (python -X importtime, median of {args.import_runs} runs, ms)"]
    header = f"{'':14}" + "".join(f"{m:>11}" for m in SHOW)
    lines.append(header)
    for run_name, mods in imports.items():
        cells = []
        for m in SHOW:
            level_time = [t for name, (lvl, t) in mods.items() if name == m]
            if level_time:
                cells.append(f"{level_time[0] / 1000:11.1f}")
            elif imported(mods, m):
                cells.append(f"{'(sub)':>11}")
            else:
                cells.append(f"{'-':>11}")
        lines.append(f"{run_name:14}" + "".join(cells))
    lines.append("(cumulative ms where the package was first imported; - = not imported)")
    for run_name, mods in imports.items():
        bad = [m for m in MUST_NOT[run_name] if imported(mods, m)]
        verdict = "OK" if not bad else "NOT LAZY: " + ", ".join(bad)
        lines.append(
            f"lazy check {run_name:12} must not import {', '.join(MUST_NOT[run_name])}: {verdict}"
        )
    once = imports["once"]
    top = sorted(((t, n) for n, (lvl, t) in once.items() if lvl == 0), reverse=True)
    total = sum(t for t, _ in top)
    lines += ["", f"top-level imports of '-once' (sum {total / 1000:.1f} ms):"]
    for t, n in top[: args.top]:
        lines.append(f"  {t / 1000:8.1f} ms  {n}")
    if rss:
        lines += ["", f"idle RSS of a daemon, {args.idle:g} s after its first render (VmRSS)"]
        lines += [f"  {label:14}{kib / 1024:7.1f} MiB" for label, kib in rss.items()]
    return "\n".join(lines)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="ctemplate -once wall time and imports")
    p.add_argument("--runs", type=int, default=10, help="timed runs per command (default 10)")
    p.add_argument("--import-runs", type=int, default=5, help="-X importtime runs per command")
    p.add_argument("--instances", type=int, default=5, help="service instances to seed")
    p.add_argument("--top", type=int, default=12, help="top-level imports to list")
    p.add_argument("--idle", type=float, default=3.0, help="seconds idle before reading RSS")
    p.add_argument("--no-rss", action="store_true", help="skip the daemons' idle RSS")
    p.add_argument(
        "--no-pyc-cache",
        action="store_true",
        help="keep the caller's PYTHONDONTWRITEBYTECODE (ctemplate compiled from source each run)",
    )
    args = p.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the agent and the daemons are stopped on the way out.
    signal.signal(signal.SIGTERM, _terminate)
    if args.runs < 1 or args.import_runs < 1 or not 1 <= args.instances <= 200:
        p.error("need --runs >= 1, --import-runs >= 1, 1 <= --instances <= 200")
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
