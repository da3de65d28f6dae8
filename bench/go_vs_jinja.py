"""Render time of the same template in Go syntax and in Jinja, side by side (medians).

Two templates, each written in both syntaxes and executed in-process against the same decoded
answers (what the runner hands a template after Consul has answered):

* ``upstream``: the workshop's nginx upstream (step 6) over 300 passing instances;
* ``fan-out``: the N+1 pattern over 300 services: ``range services`` then ``service .Name``
  for each (one instance each).

The answers are built the way the watcher builds them (``Query.decode`` of Consul's JSON), so
the records are the real ones. Target: Go syntax within 1.5x of Jinja.

    .venv/bin/python bench/go_vs_jinja.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Mapping
from typing import Any

from ctemplate.config import Config, TemplateConfig
from ctemplate.consul.queries import CatalogServicesQuery, HealthServiceQuery
from ctemplate.language.frontends import Compiled, TemplateEngines

N = 300

TEMPLATES = {
    "upstream": (
        'upstream backend_apps {\n{{range service "production.application@dc1" "passing"}}\n'
        "    server {{.Address}}:{{.Port}};{{end}}\n}\n",
        # What `ctemplate convert` writes for it: the same bytes.
        'upstream backend_apps {\n{% for s in service("production.application@dc1", "passing") +%}'
        "\n    server {{ s.Address }}:{{ s.Port }};{% endfor +%}\n}\n",
    ),
    "fan-out": (
        "{{range services}}{{range service .Name}}{{.Name}} {{.Address}}:{{.Port}}\n{{end}}{{end}}",
        "{% for svc in services() %}{% for s in service(svc.Name) %}"
        "{{ s.Name }} {{ s.Address }}:{{ s.Port }}\n{% endfor %}{% endfor %}",
    ),
}


def _instance(i: int, name: str, tags: list[str]) -> dict[str, Any]:
    return {
        "Node": {"Node": f"node{i}", "Address": f"10.0.{i // 250}.{i % 250}", "Datacenter": "dc1"},
        "Service": {
            "ID": f"{name}-{i}",
            "Service": name,
            "Tags": tags,
            "Address": f"10.1.{i // 250}.{i % 250}",
            "Port": 3000 + i % 1000,
            "Meta": {},
        },
        "Checks": [{"CheckID": "serfHealth", "Status": "passing", "ServiceID": ""}],
    }


def _answer(query: Any) -> Any:
    if isinstance(query, HealthServiceQuery):
        if query.name == "application":
            raw = [_instance(i, "application", ["production"]) for i in range(N)]
        else:
            raw = [_instance(int(query.name.rpartition("-")[2]), query.name, [])]
        return query.decode(raw)
    if isinstance(query, CatalogServicesQuery):
        return query.decode({f"svc-{i}": [] for i in range(N)})
    raise TypeError(f"no answer for {query}")


def _data(compiled: Compiled) -> Mapping[str, Any]:
    """Execute to discover until complete, answering every query."""
    data: dict[str, Any] = {}
    for _ in range(5):
        execution = compiled.execute(data)
        if execution.error is not None:
            raise execution.error
        if not execution.missing:
            return data
        for key, query in execution.missing.items():
            data[key] = _answer(query)
    raise RuntimeError("the template never completed")


def _time_ms(compiled: Compiled, data: Mapping[str, Any]) -> tuple[float, str]:
    start = time.perf_counter()
    execution = compiled.execute(data)
    return (time.perf_counter() - start) * 1000, execution.text or ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    engines = TemplateEngines(Config())
    print(f"{'template':<10} {'go ms':>9} {'jinja ms':>9} {'go/jinja':>9}")
    for name, (go_text, jinja_text) in TEMPLATES.items():
        go = engines.load(TemplateConfig(destination="o", contents=go_text, syntax="go"))
        jinja = engines.load(TemplateConfig(destination="o", contents=jinja_text))
        data = {**_data(go), **_data(jinja)}
        # Interleaved, so that a busy moment of the machine hits both alike.
        go_times, jinja_times = [], []
        go_out = jinja_out = ""
        for _ in range(args.rounds):
            ms, go_out = _time_ms(go, data)
            go_times.append(ms)
            ms, jinja_out = _time_ms(jinja, data)
            jinja_times.append(ms)
        go_ms, jinja_ms = statistics.median(go_times), statistics.median(jinja_times)
        lines = go_out.count("\n")
        same = f"same {lines} lines" if go_out == jinja_out else "OUTPUTS DIFFER"
        print(f"{name:<10} {go_ms:>9.2f} {jinja_ms:>9.2f} {go_ms / jinja_ms:>8.2f}x  ({same})")


if __name__ == "__main__":
    main()
