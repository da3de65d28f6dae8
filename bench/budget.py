"""What the execution budgets cost on the hot path: one render of the nginx upstream template.

Renders ``templates/nginx-upstream.conf.j2`` against 300 (``--instances``) passing instances,
median of ``--repeat`` runs, three ways:

* ``plain``: the template compiled in a plain ``jinja2.Environment`` with the same functions,
  rendered with ``Template.render()`` (what executions cost before the budgets);
* ``budgeted``: ctemplate's engine (sandboxed environment with the budget hooks, rendering
  chunk by chunk through ``generate()`` with ``check_budget()`` per chunk) under
  ``budget.run()`` (the watchdog armed and disarmed), in the calling thread;
* ``budgeted+thread``: the same in a new daemon thread per execution, as the runner does.

No Consul agent: the instances are built from API-shaped dicts.

    .venv/bin/python bench/budget.py
    .venv/bin/python bench/budget.py --instances 5000 --repeat 50
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2

from ctemplate.config import Config, TemplateConfig
from ctemplate.consul.records import HealthService
from ctemplate.language import budget
from ctemplate.language.execution import Execution, Options, Pass, current
from ctemplate.language.jinja import FILTERS, GLOBALS, TemplateEngine

TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "nginx-upstream.conf.j2"


def instances(n: int) -> tuple[HealthService, ...]:
    return tuple(
        HealthService.from_api(
            {
                "Node": {"Node": f"node-{i}", "Address": f"10.0.{i // 250}.{i % 250 + 1}"},
                "Service": {
                    "ID": f"app-{i}",
                    "Service": "application",
                    "Tags": ["production"],
                    "Address": f"10.1.{i // 250}.{i % 250 + 1}",
                    "Port": 8000 + i % 1000,
                },
                "Checks": [{"Status": "passing", "CheckID": "serfHealth"}],
            }
        )
        for i in range(n)
    )


def timed(fn: Callable[[], Any], repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs (after two unmeasured runs)."""
    fn()
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)

    tc = TemplateConfig(destination="/dev/null", source=str(TEMPLATE), origin="bench")
    compiled = TemplateEngine(Config()).load(tc)
    first = compiled.execute({})
    (key,) = first.missing  # the template's one query
    data = {key: instances(args.instances)}

    plain_env = jinja2.Environment(
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"],
    )
    plain_env.globals.update(GLOBALS)
    plain_env.filters.update(FILTERS)
    plain = plain_env.from_string(TEMPLATE.read_text())

    def run_plain() -> str:
        token = current.set(Pass(data, Execution(), Options()))
        try:
            return plain.render()
        finally:
            current.reset(token)

    def run_budgeted() -> str | None:
        return budget.run(
            compiled.execute, data, name="bench", timeout=60.0, max_size=64 << 20
        ).text

    def run_threaded() -> None:
        thread = threading.Thread(target=run_budgeted, daemon=True)
        thread.start()
        thread.join()

    assert run_plain() == run_budgeted(), "the two renders differ"
    rows = [
        ("plain", timed(run_plain, args.repeat)),
        ("budgeted", timed(run_budgeted, args.repeat)),
        ("budgeted+thread", timed(run_threaded, args.repeat)),
    ]
    base = rows[0][1]
    print(f"nginx-upstream.conf.j2, {args.instances} instances, median of {args.repeat}")
    for name, seconds in rows:
        print(f"  {name:<16} {seconds * 1000:8.3f} ms  ({seconds / base:5.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
