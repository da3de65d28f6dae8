"""The status endpoint (status_address / -status-addr): /health and /metrics seen from outside
while a real daemon follows a real Consul agent, waits for data, runs a failing command and
loses the agent."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

from consul_harness import free_port
from ctemplate_proc import Daemon, read, run_ctemplate, wait_for


def _get(addr: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _health(addr: str) -> tuple[int, dict]:
    code, body = _get(addr, "/health")
    return code, json.loads(body)


def _health_code(addr: str) -> int | None:
    """/health's status code, or None while nothing listens there."""
    try:
        return _get(addr, "/health")[0]
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return None
        raise


def _metric_lines(addr: str) -> set[str]:
    code, body = _get(addr, "/metrics")
    assert code == 200, body
    return {line for line in body.splitlines() if not line.startswith("#")}


def test_health_and_metrics_follow_the_daemon(consul_agent_factory, tmp_path: Path):
    """/health says whether every file follows Consul (200) or not (503, with what each
    template waits for and whether Consul is reachable); /metrics counts writes and commands."""
    agent = consul_agent_factory()
    agent.put_kv("app/x", "1")
    good, waiting = tmp_path / "good.j2", tmp_path / "waiting.j2"
    good.write_text('x={{ key("app/x") }}\n')
    waiting.write_text('y={{ key("app/y") }}\n')
    good_out, waiting_out = tmp_path / "good.out", tmp_path / "waiting.out"
    config = tmp_path / "ct.hcl"
    config.write_text(
        f'consul {{\n  address = "{agent.http_addr}"\n'
        '  retry {\n    backoff = "50ms"\n    max_backoff = "200ms"\n  }\n}\n'
        f'template {{\n  source = "{good}"\n  destination = "{good_out}"\n'
        # Fails the first time only: the template is degraded until a command succeeds.
        f'  command = "test -e {tmp_path}/ran || '
        f'{{ touch {tmp_path}/ran; echo broken >&2; exit 3; }}"\n'
        "}\n"
        f'template {{\n  source = "{waiting}"\n  destination = "{waiting_out}"\n}}\n'
    )
    addr = f"127.0.0.1:{free_port()}"
    with Daemon(["-config", str(config), "-status-addr", addr]) as ct:
        wait_for(lambda: "exited with status 3" in ct.log(), what="failed command", log=ct.log())
        code, doc = _health(addr)
        assert code == 503, doc
        assert doc["status"] == "degraded"
        assert doc["consul"] == {
            "address": f"http://{agent.http_addr}",
            "reachable": True,
            "error": None,
            "failing_queries": [],
        }
        first, second = doc["templates"]
        assert (first["destination"], first["state"], first["error"]) == (
            str(good_out),
            "degraded",
            None,
        )
        assert first["command_error"].startswith(f"{good_out}: command 'test -e "), first
        assert " exited with status 3: broken (at 20" in first["command_error"], first
        assert isinstance(first["last_rendered"], float)
        assert (second["state"], second["waiting_for"], second["last_rendered"]) == (
            "waiting",
            ["kv.block(app/y)"],
            None,
        )
        lines = _metric_lines(addr)
        assert {
            "ctemplate_up 0",
            "ctemplate_consul_reachable 1",
            "ctemplate_watched_queries 2",
            f'ctemplate_template_renders_total{{destination="{good_out}"}} 1',
            f'ctemplate_command_runs_total{{destination="{good_out}"}} 1',
            f'ctemplate_command_failures_total{{destination="{good_out}"}} 1',
            f'ctemplate_template_state{{destination="{good_out}",state="degraded"}} 1',
            f'ctemplate_template_state{{destination="{waiting_out}",state="waiting"}} 1',
            f'ctemplate_template_renders_total{{destination="{waiting_out}"}} 0',
        } <= lines, sorted(lines)

        agent.put_kv("app/y", "2")
        agent.put_kv("app/x", "3")  # the command runs again, and succeeds
        wait_for(lambda: read(waiting_out) == "y=2\n", what="second file", log=ct.log())
        # The state is updated just after the rename that makes the file visible.
        wait_for(lambda: _health(addr)[0] == 200, timeout=2, what="health 200", log=ct.log())
        code, doc = _health(addr)
        assert (code, doc["status"]) == (200, "ok"), doc
        assert [t["state"] for t in doc["templates"]] == ["rendered", "rendered"]
        assert "ctemplate_up 1" in _metric_lines(addr)

        agent.kill()
        wait_for(lambda: _health(addr)[0] == 503, what="health after the agent died")
        code, doc = _health(addr)
        assert doc["consul"]["reachable"] is False
        assert doc["consul"]["error"].startswith("GET /v1/kv/app/"), doc
        assert "cannot reach Consul" in doc["consul"]["error"], doc
        lines = _metric_lines(addr)
        assert "ctemplate_consul_reachable 0" in lines
        failures = next(x for x in lines if x.startswith("ctemplate_consul_request_failures_total"))
        assert int(failures.split()[1]) >= 1
        assert _get(addr, "/nope")[0] == 404
        assert ct.proc.poll() is None
    assert read(good_out) == "x=3\n" and read(waiting_out) == "y=2\n"


def test_status_address_in_use_is_a_clear_error(consul, tmp_path: Path):
    """A status address that cannot be bound stops the start with one error line naming the
    setting and what to do."""
    src = tmp_path / "t.j2"
    src.write_text("static\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_ctemplate(
            [
                "-consul-addr",
                consul.http_addr,
                "-status-addr",
                f"127.0.0.1:{port}",
                "-template",
                f"{src}:{tmp_path / 'out'}",
                "-once",
            ]
        )
    assert result.returncode == 15, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"ctemplate: error: status_address 127.0.0.1:{port}: cannot listen: Address already in "
        "use; choose a free port (or stop what uses it) with status_address or -status-addr"
    )
    assert not (tmp_path / "out").exists()


def test_reload_moves_the_status_endpoint(consul, unique, tmp_path: Path):
    """SIGHUP with a new status_address serves /health there and stops serving the old one;
    the files keep following Consul."""
    import signal

    key = f"{unique}/x"
    consul.put_kv(key, "1")
    src, out = tmp_path / "t.j2", tmp_path / "t.out"
    src.write_text(f'x={{{{ key("{key}") }}}}\n')
    config = tmp_path / "ct.hcl"
    old, new = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"

    def write_config(addr: str) -> None:
        config.write_text(
            f'consul {{\n  address = "{consul.http_addr}"\n}}\nstatus_address = "{addr}"\n'
            f'template {{\n  source = "{src}"\n  destination = "{out}"\n}}\n'
        )

    write_config(old)
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: _health_code(old) == 200, what="health on the first address", log=ct.log())
        write_config(new)
        ct.signal(signal.SIGHUP)
        wait_for(lambda: "serving /health and /metrics on http://" + new in ct.log(), log=ct.log())
        wait_for(lambda: _health_code(new) == 200, what="health on the new address", log=ct.log())
        assert _health_code(old) is None, f"{old} still answers after the reload"
        consul.put_kv(key, "2")
        wait_for(lambda: read(out) == "x=2\n", what="render after the reload", log=ct.log())
