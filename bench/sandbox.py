"""What the sandbox costs: render time of ``templates/nginx-upstream.conf.j2``, plain Jinja vs
the sandboxed environment ctemplate uses (``ctemplate/language/sandbox.py``).

No Consul agent: the service answer is made of synthetic ``HealthService`` records (built
through ``HealthService.from_api``, as the watcher builds them), handed to the template the way
the runner hands cached answers. Prints the median render time per instance count for both
environments and the ratio. Times are CPU time of this process (``time.process_time``), so
that other processes on a loaded machine weigh less on the figures than on wall time.

    .venv/bin/python bench/sandbox.py
    .venv/bin/python bench/sandbox.py --sizes 10,1000 --repeat 50
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import jinja2

from ctemplate.config import Config, TemplateConfig
from ctemplate.consul.records import HealthService
from ctemplate.language.jinja import FILTERS, GLOBALS, TemplateEngine

TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "nginx-upstream.conf.j2"


def _instances(n: int) -> tuple[HealthService, ...]:
    return tuple(
        HealthService.from_api(
            {
                "Node": {"Node": f"node-{i}", "Address": f"10.0.{i // 250}.{i % 250}"},
                "Service": {
                    "ID": f"app-{i}",
                    "Service": "application",
                    "Tags": ["production"],
                    "Address": f"10.1.{i // 250}.{i % 250}",
                    "Port": 8000 + i % 1000,
                },
                "Checks": [{"Status": "passing", "CheckID": "serfHealth"}],
            }
        )
        for i in range(n)
    )


def _plain(engine: TemplateEngine) -> None:
    """The same environment without the sandbox (what ctemplate used before)."""
    env = jinja2.Environment(
        undefined=engine.env.undefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"],
    )
    env.globals.update(GLOBALS)
    env.filters.update(FILTERS)
    engine.env = env


def _median_ms(engine: TemplateEngine, n: int, repeat: int) -> tuple[float, int]:
    tc = TemplateConfig(source=str(TEMPLATE), destination="/dev/null", origin="bench")
    compiled = engine.load(tc)
    first = compiled.execute({})  # discovery: which query the template needs
    assert len(first.missing) == 1, first.missing
    data = {next(iter(first.missing)): _instances(n)}
    result = compiled.execute(data)
    assert result.complete and result.text, result.error
    samples = []
    for _ in range(repeat):
        t0 = time.process_time()
        compiled.execute(data)
        samples.append(time.process_time() - t0)
    return statistics.median(samples) * 1000, len(result.text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,5000", help="instance counts")
    parser.add_argument("--repeat", type=int, default=30, help="renders per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternations of the two sides")
    args = parser.parse_args()
    print(f"{'instances':>9} {'plain ms':>9} {'sandboxed ms':>13} {'ratio':>6} {'bytes':>8}")
    for n in (int(x) for x in args.sizes.split(",")):
        sandboxed = TemplateEngine(Config())
        plain = TemplateEngine(Config())
        _plain(plain)
        # Alternate the two, --rounds times, and keep each one's best median: the machine may be
        # shared, and a burst of load should not be charged to either side.
        best_plain = best_sandboxed = float("inf")
        size = 0
        for _ in range(args.rounds):
            ms, size = _median_ms(plain, n, args.repeat)
            best_plain = min(best_plain, ms)
            ms, _ = _median_ms(sandboxed, n, args.repeat)
            best_sandboxed = min(best_sandboxed, ms)
        print(
            f"{n:>9} {best_plain:>9.3f} {best_sandboxed:>13.3f} "
            f"{best_sandboxed / best_plain:>6.2f} {size:>8}"
        )


if __name__ == "__main__":
    main()
