"""Where CPU per change goes, stage by stage, outside the daemon and without a profiler.

Seeds a Consul dev agent like ``bench/scenarios.py`` does (1,000 keys, 300 services of 2
instances, one service of 5,000 instances), takes the agent's real answers, and times (median
of ``--repeat`` runs, ``time.perf_counter``) each step ctemplate takes for one change, next to
what the raw client does for the same change:

* ``keys-1000``: the recursive read's answer decoded (``AnswerDecoder``: one entry changed since
  the answer before, the others reused; ``json.loads`` of all of it beside), handed to the
  KV-prefix watch's answer handler (``_KVAnswers``: every member's raw value compared, the
  changed one decoded and delivered; the two answers alternate, so each call delivers exactly
  one changed key), the
  template executed (1,000 ``key()`` calls); raw: one key's answer decoded, 1,000 lines
  formatted;
* ``services-300``: the health sentinel's checks answer decoded and summarised, the summary
  compared with the previous one (one check differs), the one service read again and decoded,
  the template executed; raw: that service's answer decoded, the file formatted;
* ``instances-5000``: the 5,000-instance answer decoded (``json``), turned into records
  (``HealthServiceQuery.decode``), compared with the previous records (``==``, as
  ``Watcher.deliver`` does), the template executed; raw: the same JSON, a tuple per instance,
  the lines formatted.

Also the agent's own time to produce each answer (GET, gzip as httpx asks for it, body
read) and the answer's size on the wire and decoded.

This imports engine internals (``ctemplate.consul.watch._KVAnswers`` and friends) to call them as
the daemon does; it changes nothing in them.

    .venv/bin/python bench/stages.py
    .venv/bin/python bench/stages.py --repeat 50 --scenarios keys-1000
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
from _common import add_tests_to_path, raise_nofile
from scenarios import Instances, Keys, Services


def timed(fn: Callable[[], Any], repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs (after one unmeasured run)."""
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def fetch(http: httpx.Client, path: str, params: dict[str, str]) -> tuple[bytes, int, int]:
    """(body, body bytes on the wire, decoded body bytes) of one stale GET."""
    resp = http.get(path, params={**params, "stale": ""})
    resp.raise_for_status()
    return resp.content, resp.num_bytes_downloaded, len(resp.content)


def engine() -> tuple[Any, Any]:
    from ctemplate.config import Config, TemplateConfig
    from ctemplate.language.jinja import TemplateEngine

    def compile_template(text: str) -> Any:
        tc = TemplateConfig(destination="/dev/null", contents=text, origin="stages")
        return TemplateEngine(Config()).load(tc)

    from ctemplate.consul.watch import Watcher, WatchSettings

    def watcher(keys: list[str]) -> Any:
        w = Watcher(None, WatchSettings(), lambda _k: None, lambda _k, _e: None)  # type: ignore[arg-type]
        w._wanted = frozenset(keys)
        return w

    return compile_template, watcher


Row = tuple[str, float, str]  # stage, seconds, side


def keys_stages(agent: Any, repeat: int) -> list[Row]:
    from raw_multi import _kv_value

    from ctemplate.consul.answers import AnswerDecoder
    from ctemplate.consul.client import ConsulResponse
    from ctemplate.consul.queries import parse_key
    from ctemplate.consul.watch import _KVAnswers

    sc = Keys()
    sc.seed(agent)
    compile_template, make_watcher = engine()
    rows: list[Row] = []
    with httpx.Client(base_url=agent.url, timeout=30) as http:
        body, wire, size = fetch(http, "/v1/kv/bench/keys/", {"recurse": ""})
        rows.append(
            (f"answer: {size / 1024:.0f} KiB JSON, {wire / 1024:.1f} KiB on the wire", 0, "")
        )
        rows.append(
            (
                "agent: GET ?recurse (1,000 entries)",
                timed(lambda: fetch(http, "/v1/kv/bench/keys/", {"recurse": ""}), repeat),
                "ctemplate",
            )
        )
        rows.append(
            (
                "agent: GET one key",
                timed(lambda: fetch(http, "/v1/kv/bench/keys/k500", {}), repeat),
                "raw",
            )
        )
        one, _w, _s = fetch(http, "/v1/kv/bench/keys/k500", {})
        agent.put_kv("bench/keys/k500", "changed")
        body_b, _w, _s = fetch(http, "/v1/kv/bench/keys/", {"recurse": ""})
    data_a = json.loads(body)
    data_b = json.loads(body_b)
    rows.append(
        ("json.loads of the whole recursive answer", timed(lambda: json.loads(body), repeat), "-")
    )
    decode = AnswerDecoder()  # what each loop decodes its answers with
    bodies = [body, body_b]
    decoded = [0]

    def decode_next() -> None:
        decoded[0] ^= 1
        decode(bodies[decoded[0]])

    rows.append(
        (
            "AnswerDecoder: same answer, 1 entry changed",
            timed(decode_next, repeat),
            "ctemplate",
        )
    )
    assert decode.reused > 0
    members = tuple(parse_key("key", f"{sc.prefix}{i}", block=True) for i in range(sc.count))
    w = make_watcher([str(q) for q in members])
    handler = _KVAnswers(w, members)  # what _KVPrefix hands each answer to
    answers = [ConsulResponse(data_a, 1, 0.0, True), ConsulResponse(data_b, 2, 0.0, True)]
    turn = [0]

    def answer() -> None:
        turn[0] ^= 1
        handler(answers[turn[0]])

    answer()
    before = w.changes
    rows.append(
        ("_KVAnswers: deliver (1,000 members, 1 changed)", timed(answer, repeat), "ctemplate")
    )
    assert w.changes > before
    tmpl = compile_template(sc.template)
    rows.append(
        (
            "template execute (1,000 key() calls)",
            timed(lambda: tmpl.execute(w.data), repeat),
            "ctemplate",
        )
    )
    assert tmpl.execute(w.data).complete
    rows.append(
        ("json.loads + decode one key", timed(lambda: _kv_value(json.loads(one)), repeat), "raw")
    )
    values = {i: f"v0-{i}" for i in range(sc.count)}
    rows.append(
        (
            "format 1,000 lines",
            timed(lambda: "".join(f"{i}={values[i]}\n" for i in range(sc.count)), repeat),
            "raw",
        )
    )
    return rows


def services_stages(agent: Any, repeat: int) -> list[Row]:
    from raw_multi import _instances

    from ctemplate.consul.queries import CatalogServicesQuery, HealthServiceQuery
    from ctemplate.consul.watch import _check_summary, _checks_changed

    sc = Services()
    sc.seed(agent)
    compile_template, _make_watcher = engine()
    rows: list[Row] = []
    with httpx.Client(base_url=agent.url, timeout=30) as http:
        checks, wire, size = fetch(http, "/v1/health/state/any", {})
        rows.append(
            (f"checks answer: {size / 1024:.0f} KiB JSON, {wire / 1024:.1f} KiB on the wire", 0, "")
        )
        rows.append(
            (
                "agent: GET /v1/health/state/any",
                timed(lambda: fetch(http, "/v1/health/state/any", {}), repeat),
                "ctemplate",
            )
        )
        path = "/v1/health/service/svc-150"
        rows.append(
            (
                "agent: GET one service (re-read / raw's loop)",
                timed(lambda: fetch(http, path, {"passing": "1"}), repeat),
                "both",
            )
        )
        one, _w, _s = fetch(http, path, {"passing": "1"})
        catalog, _w, _s = fetch(http, "/v1/catalog/services", {})
        per_service = {
            f"svc-{i:03d}": fetch(http, f"/v1/health/service/svc-{i:03d}", {"passing": "1"})[0]
            for i in range(sc.count)
        }
    rows.append(
        ("json.loads of the checks answer", timed(lambda: json.loads(checks), repeat), "ctemplate")
    )
    data = json.loads(checks)
    summary_a = _check_summary(data)
    changed = [dict(c) for c in data]
    for c in changed:
        if c.get("ServiceID") == "svc-150-0":
            c["Status"] = "critical"
    summary_b = _check_summary(changed)
    rows.append(("_check_summary", timed(lambda: _check_summary(data), repeat), "ctemplate"))
    queries = [HealthServiceQuery(name=f"svc-{i:03d}") for i in range(sc.count)]
    rows.append(
        (
            "_checks_changed (1 of ~600 differs)",
            timed(lambda: _checks_changed(summary_a, summary_b, queries), repeat),
            "ctemplate",
        )
    )
    assert _checks_changed(summary_a, summary_b, queries) == {"health.service(svc-150|passing)"}
    q150 = HealthServiceQuery(name="svc-150")
    rows.append(
        (
            "json.loads + HealthServiceQuery.decode (one service)",
            timed(lambda: q150.decode(json.loads(one)), repeat),
            "ctemplate",
        )
    )
    store: dict[str, Any] = {
        str(CatalogServicesQuery()): CatalogServicesQuery().decode(json.loads(catalog))
    }
    for name, raw in per_service.items():
        store[str(HealthServiceQuery(name=name))] = HealthServiceQuery(name=name).decode(
            json.loads(raw)
        )
    tmpl = compile_template(sc.template)
    assert tmpl.execute(store).complete
    rows.append(
        (
            "template execute (300 services, 600 lines)",
            timed(lambda: tmpl.execute(store), repeat),
            "ctemplate",
        )
    )
    rows.append(
        (
            "json.loads + tuple per instance (one service)",
            timed(lambda: _instances(json.loads(one)), repeat),
            "raw",
        )
    )
    cache = {n: _instances(json.loads(r)) for n, r in per_service.items()}
    rows.append(
        (
            "format 600 lines",
            timed(
                lambda: "".join(
                    f"{n} {i[0]} {i[2]}:{i[3]}\n" for n in sorted(cache) for i in cache[n]
                ),
                repeat,
            ),
            "raw",
        )
    )
    return rows


def instances_stages(agent: Any, repeat: int) -> list[Row]:
    from dataclasses import replace

    from raw_multi import _instances

    from ctemplate.consul.queries import HealthServiceQuery

    sc = Instances()
    sc.seed(agent)
    compile_template, _make_watcher = engine()
    rows: list[Row] = []
    params = {"passing": "1"}
    with httpx.Client(base_url=agent.url, timeout=60) as http:
        body, wire, size = fetch(http, "/v1/health/service/big", params)
        rows.append(
            (f"answer: {size / 1024 / 1024:.1f} MiB JSON, {wire / 1024:.0f} KiB on the wire", 0, "")
        )
        rows.append(
            (
                "agent: GET (5,000 instances, gzip)",
                timed(lambda: fetch(http, "/v1/health/service/big", params), repeat),
                "both",
            )
        )
    with httpx.Client(
        base_url=agent.url, timeout=60, headers={"Accept-Encoding": "identity"}
    ) as plain:
        rows.append(
            (
                "agent: the same GET without gzip",
                timed(lambda: fetch(plain, "/v1/health/service/big", params), repeat),
                "(info)",
            )
        )
    rows.append(("json.loads", timed(lambda: json.loads(body), repeat), "both"))
    data = json.loads(body)
    q = HealthServiceQuery(name="big")
    rows.append(
        (
            "HealthServiceQuery.decode (records, sort)",
            timed(lambda: q.decode(data), repeat),
            "ctemplate",
        )
    )
    a = q.decode(data)
    b = q.decode(data)
    c = (*b[:2500], replace(b[2500], Port=1), *b[2501:])  # distinct records, as in a real answer
    rows.append(
        ("== previous answer (equal: worst case)", timed(lambda: a == b, repeat), "ctemplate")
    )
    rows.append(
        ("== previous answer (differs at the middle)", timed(lambda: a == c, repeat), "ctemplate")
    )
    tmpl = compile_template(sc.template)
    store = {str(q): a}
    assert tmpl.execute(store).complete
    rows.append(
        ("template execute (5,000 lines)", timed(lambda: tmpl.execute(store), repeat), "ctemplate")
    )
    rows.append(("tuple per instance, sort", timed(lambda: _instances(data), repeat), "raw"))
    inst = _instances(data)
    rows.append(
        (
            "format 5,000 lines",
            timed(lambda: "".join(f"{i[0]} {i[2]}:{i[3]}\n" for i in inst), repeat),
            "raw",
        )
    )
    return rows


STAGES: dict[str, Callable[[Any, int], list[Row]]] = {
    "keys-1000": keys_stages,
    "services-300": services_stages,
    "instances-5000": instances_stages,
}


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="per-change stage costs, ctemplate vs raw")
    p.add_argument("--scenarios", default=",".join(STAGES))
    p.add_argument("--repeat", type=int, default=20, help="timed runs per stage (median)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    raise_nofile()
    add_tests_to_path()
    from consul_harness import ConsulAgent, find_consul

    for name in [n for n in args.scenarios.split(",") if n]:
        agent = ConsulAgent(find_consul(), log_level="warn")
        agent.start()
        try:
            rows = STAGES[name](agent, args.repeat)
        finally:
            agent.close()
        print(f"{name} (median of {args.repeat})")
        for stage, seconds, side in rows:
            if side:
                print(f"  {side:10} {stage:58} {seconds * 1000:9.2f} ms")
            else:
                print(f"  {stage}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
