"""Exec mode: from a Consul change to the application serving it.

Starts its own Consul dev agent (tests/consul_harness.py, loopback only) and ctemplate in exec
mode with tests/exec_child.py as the application (an HTTP server that serves its rendered
config file and reloads it on SIGHUP), once per way of applying a change:

* ``signal``: ``reload_signal = "SIGHUP"``: the server reloads in place;
* ``restart``: no reload signal: ctemplate stops the server (SIGINT) and starts it again.

For each change it PUTs a unique value and measures the time from the PUT returning to the
server answering the new value (polling ``GET /`` every 2 ms), then waits ``--gap`` seconds.

    .venv/bin/python bench/exec_reload.py                # 30 changes per way
    .venv/bin/python bench/exec_reload.py --changes 100

Prints p50/p95/max per way. The exit status only reflects whether the benchmark itself ran.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    BENCH,
    add_tests_to_path,
    child_env,
    ctemplate_command,
    ms,
    percentile,
    python,
)

KEY = "bench/exec"


def _answer(state: Path) -> str | None:
    try:
        port = (state / "port").read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
            return str(resp.read().decode())
    except (OSError, ValueError):
        return None


def _until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the application")
        time.sleep(0.002)


def measure(agent: Any, way: str, changes: int, gap: float) -> list[float]:
    import subprocess

    with tempfile.TemporaryDirectory(prefix="ct-exec-bench-") as tmp:
        base = Path(tmp)
        state = base / "state"
        state.mkdir()
        dest = base / "app.conf"
        child = BENCH.parent / "tests" / "exec_child.py"
        argv = [python(), str(child), "--config", str(dest), "--state", str(state)]
        reload = '  reload_signal = "SIGHUP"\n' if way == "signal" else ""
        config = base / "ct.hcl"
        config.write_text(
            f'consul {{\n  address = "{agent.http_addr}"\n}}\n'
            f"template {{\n  contents = \"{{{{ key('{KEY}') }}}}\"\n"
            f'  destination = "{dest}"\n}}\n'
            f"exec {{\n  command = {json.dumps(argv)}\n{reload}}}\n"
        )
        agent.put_kv(KEY, "start")
        proc = subprocess.Popen(
            [*ctemplate_command(), "-config", str(config), "-log-level", "err"],
            env=child_env(),
        )
        try:
            _until(lambda: _answer(state) == "start", 30)
            took = []
            for n in range(changes):
                value = f"{way}-{n}"
                agent.put_kv(KEY, value)
                start = time.monotonic()
                _until(lambda v=value: _answer(state) == v, 30)
                took.append(time.monotonic() - start)
                time.sleep(gap)
            return took
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between changes")
    args = parser.parse_args()
    add_tests_to_path()
    from consul_harness import ConsulAgent, find_consul

    agent = ConsulAgent(find_consul(), log_level="warn")
    agent.start()
    try:
        print(f"{args.changes} changes per way; from the PUT to the new answer of the server")
        for way in ("signal", "restart"):
            took = measure(agent, way, args.changes, args.gap)
            print(
                f"  {way:8} p50 {ms(percentile(took, 50))}  p95 {ms(percentile(took, 95))}  "
                f"max {ms(max(took))}"
            )
    finally:
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
