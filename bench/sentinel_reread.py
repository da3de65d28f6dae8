"""What one change of the services table costs the health sentinel: CPU of the daemon.

Registers ``--services`` services (one instance each, on 10 external nodes) in a Consul dev
agent, runs the daemon (``ctemplate`` from ``--src``, default this working tree) with one
template that reads them all (past the default budget, so the health sentinel serves them), then
``--changes`` times registers one more instance of an unwatched service, then a service of a
new name (changes of the services table no template reads), and, as a reference, changes one
watched check's output. It prints the daemon's CPU per change (``/proc``), each after a pause
for the re-reads to finish.

    .venv/bin/python bench/sentinel_reread.py
    .venv/bin/python bench/sentinel_reread.py --src /tmp/base --services 300
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import REPO, add_tests_to_path, child_env, cpu_seconds, python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", default=str(REPO), help="directory holding ctemplate/")
    parser.add_argument("--services", type=int, default=300)
    parser.add_argument("--changes", type=int, default=10)
    args = parser.parse_args()
    add_tests_to_path()
    from consul_harness import ConsulAgent, find_consul

    names = [f"svc-{i:03d}" for i in range(args.services)]
    with ConsulAgent(find_consul(), log_level="warn") as agent, tempfile.TemporaryDirectory() as d:
        for i, name in enumerate(names):
            agent.register_external(
                f"node-{i % 10}",
                f"127.0.4.{i % 10 + 1}",
                name,
                port=8000 + i,
                checks=[
                    {"CheckID": f"{name}-c", "Name": "c", "Status": "passing", "ServiceID": name}
                ],
            )
        src, out = Path(d) / "t.j2", Path(d) / "t.out"
        src.write_text(
            "".join(
                f'{{% for s in service("{n}") %}}{{{{ s.Port }}}}\n{{% endfor %}}' for n in names
            )
        )
        proc = subprocess.Popen(
            [
                python(),
                "-m",
                "ctemplate",
                "-consul-addr",
                agent.http_addr,
                "-template",
                f"{src}:{out}",
                "-log-level",
                "err",
            ],
            env=child_env({"PYTHONPATH": args.src}),
        )
        try:
            deadline = time.monotonic() + 60
            while not (out.exists() and out.read_text().count("\n") == args.services):
                assert time.monotonic() < deadline, "no first render"
                time.sleep(0.1)
            time.sleep(2.0)

            def cost(change: Callable[[int], None]) -> list[float]:
                costs = []
                for n in range(args.changes):
                    before = cpu_seconds(proc.pid)
                    change(n)
                    time.sleep(1.5)
                    costs.append(cpu_seconds(proc.pid) - before)
                return costs

            def unrelated(n: int) -> None:
                agent.register_external("node-x", "127.0.5.1", "unrelated", service_id=f"u{n}")

            def new_name(n: int) -> None:
                agent.register_external("node-x", "127.0.5.1", f"new-{n}")

            def check(n: int) -> None:
                agent.set_external_check(
                    "node-1",
                    "127.0.4.2",
                    f"{names[1]}-c",
                    "passing",
                    service_id=names[1],
                    name="c",
                    output=f"out {n}",
                )

            changes: list[tuple[str, Callable[[int], None]]] = [
                ("new instance of an unwatched service", unrelated),
                ("new unwatched service name", new_name),
                ("watched check's output", check),
            ]
            for label, change in changes:
                c = cost(change)
                print(
                    f"{args.src}: {label}: {statistics.median(c) * 1000:.0f} ms CPU per change "
                    f"(median of {len(c)}; min {min(c) * 1000:.0f}, max {max(c) * 1000:.0f})"
                )
        finally:
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    main()
