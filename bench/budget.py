"""What the execution budgets cost on the hot path: one render of the nginx upstream template.

Renders ``templates/nginx-upstream.conf.j2`` against 300 (``--instances``) passing instances,
median CPU time (``time.process_time``: wall time is noise on a shared machine) of ``--repeat``
runs, the variants interleaved:

* ``plain``: the template compiled in a plain ``jinja2.Environment`` with the same functions,
  rendered with ``Template.render()`` (what executions cost before the budgets);
* ``sandboxed``: the same in a plain ``jinja2.sandbox.SandboxedEnvironment`` (the sandbox's own
  cost, without the budget hooks);
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
from jinja2.sandbox import SandboxedEnvironment

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


def timed(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Median CPU seconds of each ``fn()`` over ``repeat`` interleaved rounds (after two
    unmeasured ones)."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeat + 2):
        for name, fn in fns.items():
            t0 = time.process_time()
            fn()
            if round_ >= 2:
                samples[name].append(time.process_time() - t0)
    return {name: statistics.median(values) for name, values in samples.items()}


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

    def compile_in(cls: type[jinja2.Environment]) -> jinja2.Template:
        env = cls(
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"],
        )
        env.globals.update(GLOBALS)
        env.filters.update(FILTERS)
        return env.from_string(TEMPLATE.read_text())

    plain = compile_in(jinja2.Environment)
    sandboxed = compile_in(SandboxedEnvironment)

    def rendering(template: jinja2.Template) -> Callable[[], str]:
        def render() -> str:
            token = current.set(Pass(data, Execution(), Options()))
            try:
                return template.render()
            finally:
                current.reset(token)

        return render

    def run_budgeted() -> str | None:
        return budget.run(
            compiled.execute, data, name="bench", timeout=60.0, max_size=64 << 20
        ).text

    def run_threaded() -> None:  # CPU time counts every thread of the process
        thread = threading.Thread(target=run_budgeted, daemon=True)
        thread.start()
        thread.join()

    assert rendering(plain)() == run_budgeted(), "the renders differ"
    medians = timed(
        {
            "plain": rendering(plain),
            "sandboxed": rendering(sandboxed),
            "budgeted": run_budgeted,
            "budgeted+thread": run_threaded,
        },
        args.repeat,
    )
    base = medians["plain"]
    print(f"nginx-upstream.conf.j2, {args.instances} instances, median CPU of {args.repeat} rounds")
    for name, seconds in medians.items():
        print(f"  {name:<16} {seconds * 1000:8.3f} ms  ({seconds / base:5.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
