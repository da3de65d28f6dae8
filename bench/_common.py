"""Helpers shared by the benchmarks: paths, the ctemplate command, /proc readings, statistics.

Not a test module and not part of ctemplate: only the scripts in ``bench/`` import it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
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


# --- processes -----------------------------------------------------------------------------


def die_with_parent() -> None:
    """In a child (``preexec_fn``): get SIGTERM if the benchmark dies (no orphaned daemons)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def self_cpu() -> float:
    """CPU seconds (user + system) of the calling process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def consul_version(binary: str) -> str:
    try:
        proc = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return proc.stdout.splitlines()[0] if proc.stdout else "?"


def read_text(path: Path) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


# --- observing output files ----------------------------------------------------------------

_IN_MOVED_TO = 0x00000080
_IN_CLOSE_WRITE = 0x00000008
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000

#: A check on a file's content (None: the file does not exist).
Check = Callable[[str | None], bool]


class Observer:
    """Waits until files satisfy checks; returns when each one was first seen satisfying it.

    ``mode="inotify"`` sleeps in the kernel until something is renamed into (or closed after
    writing in) ``directory``, then reads the files: no CPU taken from the processes measured.
    ``mode="poll"`` reads them every ``poll_interval`` seconds instead.
    """

    def __init__(self, directory: Path, mode: str = "inotify", poll_interval: float = 0.001):
        self.mode = mode
        self.poll_interval = poll_interval
        self.fd = -1
        if mode == "inotify":
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1 failed")
            mask = _IN_MOVED_TO | _IN_CLOSE_WRITE
            if libc.inotify_add_watch(fd, os.fsencode(directory), mask) < 0:
                os.close(fd)
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory} failed")
            self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _drain(self, timeout: float) -> None:
        """Block until an event arrives (or the timeout), then swallow all queued events."""
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0.0))
        if not ready:
            return
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 65536):
                pass

    def wait_for(
        self, checks: Mapping[str, tuple[Path, Check]], timeout: float
    ) -> dict[str, float]:
        """perf_counter() at which each file was first seen passing its check (missing:
        timeout)."""
        pending = dict(checks)
        seen: dict[str, float] = {}
        deadline = time.perf_counter() + timeout
        for _ in range(10_000_000):  # bounded; the deadline ends it far sooner
            for side, (path, check) in list(pending.items()):
                if check(read_text(path)):
                    seen[side] = time.perf_counter()
                    del pending[side]
            now = time.perf_counter()
            if not pending or now >= deadline:
                break
            if self.fd >= 0:
                self._drain(deadline - now)
            else:
                time.sleep(self.poll_interval)
        return seen

    def wait(self, files: Mapping[str, Path], value: str, timeout: float) -> dict[str, float]:
        """perf_counter() at which each file was first seen holding exactly ``value``."""

        def equal(text: str | None) -> bool:
            return text == value

        return self.wait_for({side: (path, equal) for side, path in files.items()}, timeout)


# --- connections ---------------------------------------------------------------------------


class PeakSampler:
    """The most TCP connections a process held to a port, sampled every ``interval`` seconds
    in a thread (``tests/connections.py`` reads /proc; a long poll lasts far longer than the
    interval, so the peak of held connections is not missed)."""

    def __init__(self, pid: int, port: int, interval: float = 0.1) -> None:
        add_tests_to_path()
        from connections import connections_to

        self._count: Callable[[int, int], int] = connections_to
        self.pid, self.port, self.interval = pid, port, interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-sampler", daemon=True)

    def _run(self) -> None:
        for _ in range(10_000_000):  # bounded; stop() ends it
            self.peak = max(self.peak, self._count(self.pid, self.port))
            self.samples += 1
            if self._stop.wait(self.interval):
                return

    def start(self) -> PeakSampler:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        return self.peak


def raise_nofile() -> None:
    """Raise the soft limit on open files to the hard limit (1,000 long polls need 1,000
    sockets in the client, the agent and the proxy; children inherit the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
