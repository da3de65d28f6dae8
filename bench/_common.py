"""Helpers shared by the benchmarks: paths, the ctemplate command, /proc readings, statistics.

Not a test module and not part of ctemplate: only the scripts in ``bench/`` import it.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TESTS = REPO / "tests"
VENV_BIN = REPO / ".venv" / "bin"

CLK_TCK = os.sysconf("SC_CLK_TCK")


def python() -> str:
    """The project's interpreter (the venv's if there is one)."""
    candidate = VENV_BIN / "python"
    return str(candidate) if candidate.exists() else sys.executable


def ctemplate_command() -> list[str]:
    """The ``ctemplate`` console script of the venv (``python -m ctemplate`` without one)."""
    script = VENV_BIN / "ctemplate"
    if script.exists():
        return [str(script)]
    return [python(), "-m", "ctemplate"]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for ctemplate and the raw client.

    ``PYTHONPATH`` starts with the repository root, so the working tree's ``ctemplate`` is what
    runs even when the venv's editable install is stale (it costs one extra ``sys.path`` entry).
    ``$BENCH_CTEMPLATE_SRC`` (a directory holding a ``ctemplate/`` package) replaces the
    repository root: to measure a modified copy of the engine without touching the tree.
    """
    env = dict(os.environ)
    src = env.pop("BENCH_CTEMPLATE_SRC", "") or str(REPO)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = src + (os.pathsep + old if old else "")
    env.pop("CONSUL_HTTP_ADDR", None)
    env.pop("CONSUL_HTTP_TOKEN", None)
    if extra:
        env.update(extra)
    return env


def add_tests_to_path() -> None:
    """Make ``tests/consul_harness.py`` importable."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))


# --- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (resolution 1/CLK_TCK)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    # After "pid (comm) ", fields start at 3 (state); utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# --- statistics ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class Summary:
    n: int
    p50: float
    p95: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan)
        return cls(
            len(values),
            percentile(values, 50),
            percentile(values, 95),
            max(values),
            statistics.fmean(values),
        )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f}"
