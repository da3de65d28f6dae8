"""consul-template's own template test cases (tests/data/ct_cases.json), Go text unchanged,
rendered by the real ``ctemplate -once`` against a real Consul agent holding the same data.

Cases with the same data and environment render in one run (one template block each); a case
expected to fail runs alone and must exit non-zero, write nothing and name its file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ct_cases
import pytest
from consul_harness import ConsulAgent
from ctemplate_proc import run_ctemplate

from ctemplate.config import Config, TemplateConfig
from ctemplate.language import local
from ctemplate.language.go import GoTemplateEngine

CASES = ct_cases.in_scope()
BY_NAME = {c["name"]: c for c in CASES}


@pytest.fixture(scope="module")
def agent(consul_binary: str) -> Iterator[ConsulAgent]:
    """An agent of its own (the cases need the node name node1 and fixed key names), joined
    over the WAN to a second one in dc2 (``datacenters`` must list dc1 and dc2)."""
    a = ConsulAgent(consul_binary, node_name="node1")
    b = ConsulAgent(consul_binary, node_name="dc2-server", datacenter="dc2")
    try:
        a.start()
        b.start()
        a._ok("PUT", f"/v1/agent/join/127.0.0.1:{b.ports['serf_wan']}", params={"wan": "1"})
        deadline = time.monotonic() + 30
        while a._ok("GET", "/v1/catalog/datacenters").json() != ["dc1", "dc2"]:
            assert time.monotonic() < deadline, "dc2 never joined over the WAN"
            time.sleep(0.2)
        yield a
    finally:
        b.close()
        a.close()


def _expected(agent: ConsulAgent, case: dict[str, Any]) -> str | None:
    """The expected bytes; for CA cases, what the agent's own CA holds (see ct_cases)."""
    source = case.get("expected_from_agent")
    if source == "ca_roots":
        roots = agent._ok("GET", "/v1/agent/connect/ca/roots").json()["Roots"]
        return "".join(r["RootCert"] for r in roots)
    if source == "ca_leaf":
        leaf = agent._ok("GET", "/v1/agent/connect/ca/leaf/foo").json()
        return str(leaf["CertPEM"]) + str(leaf["PrivateKeyPEM"])
    expected: str | None = case["expected"]
    return expected


def _seed(agent: ConsulAgent, seed: dict[str, Any], tmp: Path) -> dict[str, str]:
    """Put ``seed`` into the agent; returns the replacement of %s (a file path) if any."""
    for key, value in seed.get("kv", {}).items():
        agent.put_kv(key, value)
    for svc in seed.get("services", []):
        body_tags = svc.get("tags", [])
        if svc["node"] == "node1":
            agent._ok(
                "PUT",
                "/v1/agent/service/register",
                json={
                    "Name": svc["service"],
                    "ID": svc["service"],
                    "Address": svc.get("address", ""),
                    "Tags": body_tags,
                    **({"Connect": {"Native": True}} if seed.get("connect") else {}),
                },
            )
        else:
            body: dict[str, Any] = {
                "Node": svc["node"],
                "Address": "5.6.7.8",
                "Service": {
                    "Service": svc["service"],
                    "ID": svc["service"],
                    "Address": svc.get("address", ""),
                    "Tags": body_tags,
                    **({"Connect": {"Native": True}} if seed.get("connect") else {}),
                },
            }
            agent._ok("PUT", "/v1/catalog/register", json=body)
    for node in seed.get("nodes", []):
        agent._ok("PUT", "/v1/catalog/register", json={"Node": node, "Address": "5.6.7.8"})
    subst: dict[str, str] = {}
    for placeholder, content in seed.get("files", {}).items():
        path = tmp / "file.txt"
        path.write_text(content)
        subst[placeholder] = str(path)
    return subst


def _unseed(agent: ConsulAgent, seed: dict[str, Any]) -> None:
    agent.delete_kv("", recurse=True)
    for svc in seed.get("services", []):
        if svc["node"] == "node1":
            agent.deregister_service(svc["service"])
    for node in {s["node"] for s in seed.get("services", [])} | set(seed.get("nodes", [])):
        if node != "node1":
            agent.deregister_external(node)


def _config(agent: ConsulAgent, blocks: list[tuple[Path, Path, dict[str, Any]]]) -> str:
    lines = [f'consul {{\n  address = "{agent.http_addr}"\n}}\n']
    for src, dest, case in blocks:
        lines.append("template {\n")
        lines.append(f"  source = {json.dumps(str(src))}\n")
        lines.append(f"  destination = {json.dumps(str(dest))}\n")
        if case.get("error_on_missing_key"):
            lines.append("  error_on_missing_key = true\n")
        if case.get("function_denylist"):
            lines.append(f"  function_denylist = {json.dumps(case['function_denylist'])}\n")
        lines.append("}\n")
    return "".join(lines)


def _run(agent: ConsulAgent, group: list[dict[str, Any]], tmp: Path) -> dict[str, Any]:
    """Render ``group`` (same data, same environment) in one ``ctemplate -once`` run."""
    seed = group[0].get("seed", {})
    subst = _seed(agent, seed, tmp)
    try:
        blocks = []
        for i, case in enumerate(group):
            text = case["template"]
            for placeholder, value in subst.items():
                text = text.replace(placeholder, value)
            src, dest = tmp / f"case{i}.ctmpl", tmp / f"case{i}.out"
            src.write_text(text, encoding="utf-8")
            blocks.append((src, dest, case))
        config = tmp / "ct.hcl"
        config.write_text(_config(agent, blocks))
        result = run_ctemplate(
            ["-config", str(config), "-once", "-once-timeout", "10s"],
            env=dict(group[0].get("env", {})),
            timeout=60,
        )
    finally:
        _unseed(agent, seed)
    out: dict[str, Any] = {}
    for src, dest, case in blocks:
        if result.returncode == 0 and dest.exists():
            out[case["name"]] = dest.read_bytes().decode("utf-8")  # keep \r\n as written
        else:
            out[case["name"]] = ("error", result.returncode, result.stderr, str(src))
    return out


@pytest.fixture(scope="module")
def results(agent: ConsulAgent, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """name -> the bytes written, or ("error", exit code, stderr, source) for a failed run.

    A group whose run fails is run again one case at a time, so one failing case cannot hide
    the others' results.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for case in CASES:
        if case["kind"] == "render" and case["name"] in ct_cases.EXCEPTIONS:
            groups[f"exception:{case['name']}"] = [case]  # alone: it must not fail the batch
        elif case["kind"] == "render":
            key = json.dumps([case.get("seed", {}), case.get("env", {})], sort_keys=True)
            groups.setdefault(key, []).append(case)
        elif case["kind"] == "error":
            groups[f"error:{case['name']}"] = [case]
    out: dict[str, Any] = {}
    for group in groups.values():
        got = _run(agent, group, tmp_path_factory.mktemp("group"))
        if len(group) > 1 and any(isinstance(v, tuple) for v in got.values()):
            for case in group:
                got.update(_run(agent, [case], tmp_path_factory.mktemp("case")))
        out.update(got)
    return out


def _case_ids(kind: str) -> list[str]:
    return [c["name"] for c in CASES if c["kind"] == kind and c["name"] not in ct_cases.EXCEPTIONS]


@pytest.mark.parametrize("name", _case_ids("render"))
def test_renders_consul_templates_bytes(
    name: str, agent: ConsulAgent, results: dict[str, Any]
) -> None:
    case = BY_NAME[name]
    assert results[name] == _expected(agent, case), case["template"]


@pytest.mark.parametrize("name", _case_ids("error"))
def test_fails_where_consul_template_fails(name: str, results: dict[str, Any]) -> None:
    got = results[name]
    assert isinstance(got, tuple), f"rendered {got!r}"
    _, code, stderr, src = got
    assert code != 0
    assert f"{src}:" in stderr, stderr


@pytest.mark.parametrize("name", _case_ids("discovery"))
def test_first_pass_without_data_fails_on_nothing(name: str) -> None:
    case = BY_NAME[name]
    engine = GoTemplateEngine(Config())
    compiled = engine.load(TemplateConfig(destination="o", contents=case["template"], syntax="go"))
    execution = compiled.execute({})
    assert execution.error is None
    assert execution.missing, "the template must wait for its data"
    assert execution.text is None


@pytest.mark.parametrize("name", _case_ids("clock"))
def test_clock_pinned_to_the_epoch(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = BY_NAME[name]
    monkeypatch.setattr(local, "now", lambda: datetime.fromtimestamp(0, UTC))
    engine = GoTemplateEngine(Config())
    compiled = engine.load(TemplateConfig(destination="o", contents=case["template"], syntax="go"))
    execution = compiled.execute({})
    assert execution.error is None
    assert execution.text == case["expected"]


def test_exceptions_are_listed_and_still_fail(agent: ConsulAgent, results: dict[str, Any]) -> None:
    """Every documented exception still fails (else drop it from the list), and the cases that
    pass are at least 95% of those in scope."""
    for name in ct_cases.EXCEPTIONS:
        case = BY_NAME[name]
        if case["kind"] == "discovery":
            continue
        assert results.get(name) != _expected(agent, case) or case["kind"] == "error", name
    assert len(ct_cases.EXCEPTIONS) <= 0.05 * len(CASES), (
        f"{len(ct_cases.EXCEPTIONS)} exceptions among {len(CASES)} cases in scope"
    )
