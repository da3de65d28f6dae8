"""The /health document and the /metrics page built from a snapshot (no server needed)."""

from __future__ import annotations

from dataclasses import replace

from ctemplate.status import (
    ConsulState,
    ExecState,
    FailingQuery,
    Snapshot,
    TemplateState,
    health,
    metrics,
)


def _snapshot(*templates: TemplateState, reachable: bool = True) -> Snapshot:
    consul = ConsulState(
        address="http://127.0.0.1:8500",
        reachable=reachable,
        last_error="" if reachable else "GET /v1/kv/a: cannot reach Consul",
        requests=7,
        failed_requests=2,
        watched_queries=3,
    )
    return Snapshot(consul, templates)


def test_metrics_escape_label_values_and_print_every_family() -> None:
    odd = 'out/a "b"\\c\nd'
    snap = _snapshot(
        TemplateState(
            source="t.tmpl",
            destination=odd,
            state="error",
            error="t.tmpl:3: boom",
            last_rendered=1700000000.5,
            renders=4,
            errors=1,
            command_runs=4,
            command_failures=1,
            command_seconds=0.25,
        )
    )
    text = metrics(snap)
    label = 'destination="out/a \\"b\\"\\\\c\\nd"'
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples == [
        "ctemplate_up 0",
        "ctemplate_consul_reachable 1",
        "ctemplate_consul_requests_total 7",
        "ctemplate_consul_request_failures_total 2",
        "ctemplate_watched_queries 3",
        "ctemplate_failing_queries 0",
        f'ctemplate_template_state{{{label},state="rendered"}} 0',
        f'ctemplate_template_state{{{label},state="degraded"}} 0',
        f'ctemplate_template_state{{{label},state="waiting"}} 0',
        f'ctemplate_template_state{{{label},state="error"}} 1',
        f"ctemplate_template_last_rendered_timestamp_seconds{{{label}}} 1700000000.5",
        f"ctemplate_template_renders_total{{{label}}} 4",
        f"ctemplate_template_errors_total{{{label}}} 1",
        f"ctemplate_command_runs_total{{{label}}} 4",
        f"ctemplate_command_failures_total{{{label}}} 1",
        f"ctemplate_command_seconds_total{{{label}}} 0.25",
    ]
    assert "# TYPE ctemplate_template_renders_total counter" in text
    assert text.endswith("\n")


def test_health_is_ok_only_when_consul_is_reachable_and_every_file_rendered() -> None:
    done = TemplateState(source="a", destination="a.out", state="rendered", last_rendered=1.0)
    waiting = TemplateState(
        source="b", destination="b.out", state="waiting", waiting_for=("kv.block(x)",)
    )
    assert health(_snapshot(done))["status"] == "ok"
    assert health(_snapshot(done, reachable=False))["consul"] == {
        "address": "http://127.0.0.1:8500",
        "reachable": False,
        "error": "GET /v1/kv/a: cannot reach Consul",
        "failing_queries": [],
    }
    doc = health(_snapshot(done, waiting))
    assert doc["status"] == "degraded"
    assert doc["templates"] == [
        {
            "source": "a",
            "destination": "a.out",
            "state": "rendered",
            "waiting_for": [],
            "error": None,
            "last_rendered": 1.0,
            "command_error": None,
        },
        {
            "source": "b",
            "destination": "b.out",
            "state": "waiting",
            "waiting_for": ["kv.block(x)"],
            "error": None,
            "last_rendered": None,
            "command_error": None,
        },
    ]


def test_one_failing_query_makes_health_degraded_and_is_named() -> None:
    done = TemplateState(source="a", destination="a.out", state="rendered", last_rendered=1.0)
    snap = _snapshot(done)
    error = "GET /v1/health/service/web: Consul answered 500: No path to datacenter"
    failing = FailingQuery("health.service(web@dc9|passing)", error, 12.34, 9)
    snap = replace(snap, consul=replace(snap.consul, failing=(failing,)))
    doc = health(snap)
    assert not snap.healthy
    assert doc["status"] == "degraded"
    assert doc["consul"]["reachable"] is True
    assert doc["consul"]["failing_queries"] == [
        {
            "query": "health.service(web@dc9|passing)",
            "error": error,
            "failing_for": 12.3,
            "failures": 9,
        }
    ]
    assert "ctemplate_failing_queries 1" in metrics(snap).splitlines()
    assert "ctemplate_up 0" in metrics(snap).splitlines()


def test_exec_children_in_health_and_metrics() -> None:
    consul = ConsulState("127.0.0.1:8500", reachable=True)
    template = TemplateState(source="t", destination="/d", state="rendered")
    up = ExecState("exec[1]", "app --serve", running=True, pid=42, restarts=2, last_exit=1)
    down = ExecState("exec[2]", "sidecar", running=False, restarts=5, last_exit=137)
    assert Snapshot(consul, (template,), (up,)).healthy
    snap = Snapshot(consul, (template,), (up, down))
    assert not snap.healthy  # a child waiting for its restart is not healthy
    assert health(snap)["exec"] == [
        {
            "name": "exec[1]",
            "command": "app --serve",
            "running": True,
            "pid": 42,
            "restarts": 2,
            "last_exit_status": 1,
        },
        {
            "name": "exec[2]",
            "command": "sidecar",
            "running": False,
            "pid": None,
            "restarts": 5,
            "last_exit_status": 137,
        },
    ]
    text = metrics(snap)
    assert 'ctemplate_exec_running{exec="exec[1]"} 1\n' in text
    assert 'ctemplate_exec_running{exec="exec[2]"} 0\n' in text
    assert 'ctemplate_exec_restarts_total{exec="exec[2]"} 5\n' in text
    assert 'ctemplate_exec_last_exit_status{exec="exec[2]"} 137\n' in text
    assert "exec" not in health(Snapshot(consul, (template,)))  # no exec block, no section
