"""De-duplication together with exec mode (consul-template's dedup misbehaves with exec, CT#1609):
two instances share the reading of Consul, and each supervises its own application, which
starts once its file rendered (a follower's too), is reloaded when the shared data changes, and
carries on when the other instance, the leader, stops."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import httpx
from consul_harness import free_port
from ctemplate_proc import Daemon, read, wait_for

CHILD = str(Path(__file__).resolve().parent.parent / "exec_child.py")


def _instance(tmp_path: Path, name: str, consul, key: str, prefix: str) -> tuple[Path, Path, int]:
    root = tmp_path / name
    state = root / "state"
    state.mkdir(parents=True)
    dest = root / "app.conf"
    argv = [sys.executable, CHILD, "--config", str(dest), "--state", str(state)]
    status = free_port()
    config = root / "ct.hcl"
    config.write_text(
        f'consul {{\n  address = "{consul.http_addr}"\n}}\n'
        f'deduplicate {{\n  prefix = "{prefix}"\n  ttl = "10s"\n}}\n'
        f'status_address = "127.0.0.1:{status}"\n'
        f"template {{\n  contents = \"{{{{ key('{key}') }}}}\"\n"
        f'  destination = "{dest}"\n}}\n'
        f'exec {{\n  command = {json.dumps(argv)}\n  reload_signal = "SIGHUP"\n}}\n'
    )
    return config, state, status


def _answer(state: Path) -> str | None:
    try:
        port = (state / "port").read_text()
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
    except (OSError, httpx.HTTPError):
        return None


def _starts(state: Path) -> list[int]:
    return [
        int(line.split()[1])
        for line in (read(state / "events") or "").splitlines()
        if line.startswith("start ")
    ]


def _role(status: int) -> str | None:
    try:
        doc = httpx.get(f"http://127.0.0.1:{status}/health", timeout=5).json()
    except (OSError, httpx.HTTPError, ValueError):
        return None
    role = doc["templates"][0].get("dedup")
    return str(role) if role else None


def test_each_instance_supervises_its_application_from_the_shared_data(consul, unique, tmp_path):
    key = f"{unique}/app"
    prefix = f"{unique}/dedup/"
    consul.put_kv(key, "one")
    a_config, a_state, a_status = _instance(tmp_path, "a", consul, key, prefix)
    b_config, b_state, b_status = _instance(tmp_path, "b", consul, key, prefix)
    with Daemon(["-config", str(a_config)]) as a, Daemon(["-config", str(b_config)]) as b:
        logs = lambda: a.log() + "\n----- b\n" + b.log()  # noqa: E731
        for state in (a_state, b_state):
            wait_for(lambda s=state: _answer(s) == "one", 30, "both applications", logs())
        wait_for(
            lambda: {_role(a_status), _role(b_status)} == {"leader", "follower"},
            20,
            "one leader and one follower",
            logs(),
        )
        roles = {"a": _role(a_status), "b": _role(b_status)}
        first = {"a": _starts(a_state), "b": _starts(b_state)}
        assert len(first["a"]) == len(first["b"]) == 1, logs()

        consul.put_kv(key, "two")  # read by the leader, published, rendered by both
        for state in (a_state, b_state):
            wait_for(lambda s=state: _answer(s) == "two", 30, "both reloaded", logs())
        assert {"a": _starts(a_state), "b": _starts(b_state)} == first  # reloaded, not restarted

        # The leader stops: its application with it; the follower takes over and keeps its own.
        leader, follower = (a, b) if roles["a"] == "leader" else (b, a)
        f_state, f_status = (b_state, b_status) if leader is a else (a_state, a_status)
        l_state = a_state if leader is a else b_state
        leader.signal(signal.SIGTERM)
        leader.wait(30)  # stops its application first, then itself
        assert _answer(l_state) is None, "the stopped leader's application still answers"
        wait_for(lambda: _role(f_status) == "leader", 30, "the follower to lead", logs())
        consul.put_kv(key, "three")
        wait_for(lambda: _answer(f_state) == "three", 30, "the new leader's reload", logs())
        assert _starts(f_state) == first["b" if follower is b else "a"]
        assert follower.proc.poll() is None
