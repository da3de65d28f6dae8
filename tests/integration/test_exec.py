"""Exec mode against a real Consul agent with a real child: ``tests/exec_child.py``, an HTTP
server that serves its rendered config file and reloads it on SIGHUP.

Each test runs the real ``ctemplate`` command and checks what a user sees: the server's
answers, the child's pids and events, ctemplate's exit status, /health, and /proc.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from consul_harness import free_port
from ctemplate_proc import COMMAND, Daemon, read, wait_for

CHILD = str(Path(__file__).resolve().parent.parent / "exec_child.py")


def _child_argv(dest: Path, state: Path, *extra: str) -> list[str]:
    return [sys.executable, CHILD, "--config", str(dest), "--state", str(state), *extra]


def _hcl_list(argv: list[str]) -> str:
    return json.dumps(argv)


def _config(
    tmp_path: Path, consul, key: str, exec_body: str, *, extra: str = ""
) -> tuple[Path, Path, Path]:
    """A config with one template (the value of ``key``) and one exec block."""
    dest = tmp_path / "app.conf"
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "ct.hcl"
    config.write_text(
        f'consul {{\n  address = "{consul.http_addr}"\n}}\n'
        f"template {{\n  contents = \"{{{{ key('{key}') }}}}\"\n"
        f'  destination = "{dest}"\n}}\n'
        f"exec {{\n{exec_body}\n}}\n{extra}"
    )
    return config, dest, state


def _events(state: Path, kind: str | None = None) -> list[tuple[str, int, float]]:
    text = read(state / "events") or ""
    rows = []
    for line in text.splitlines():
        what, pid, at = line.split()
        if kind is None or what == kind:
            rows.append((what, int(pid), float(at)))
    return rows


def _get(state: Path) -> str:
    port = (state / "port").read_text()
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text


def _answer(state: Path) -> str | None:
    try:
        return _get(state)
    except (OSError, httpx.HTTPError):
        return None


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie (a grandchild that lost its parent is
    reparented to the machine's process 1, which reaps in its own time)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def test_change_reaches_the_server_through_its_reload_signal(consul, unique, tmp_path):
    key = f"{unique}/app"
    consul.put_kv(key, "version one")
    argv = _child_argv(tmp_path / "app.conf", tmp_path / "state")
    config, _dest, state = _config(
        tmp_path, consul, key, f'  command = {_hcl_list(argv)}\n  reload_signal = "SIGHUP"'
    )
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: _answer(state) == "version one", 20, "the child's first answer", ct.log())
        consul.put_kv(key, "version two")
        wait_for(lambda: _answer(state) == "version two", 20, "the reloaded answer", ct.log())
        starts = _events(state, "start")
        hups = _events(state, "hup")
        assert len(starts) == 1, ct.log()  # reloaded, not restarted
        assert [pid for _, pid, _ in hups] == [starts[0][1]]
        assert "sent SIGHUP" in ct.log()


def test_without_reload_signal_the_child_is_restarted(consul, unique, tmp_path):
    key = f"{unique}/app"
    consul.put_kv(key, "one")
    argv = _child_argv(tmp_path / "app.conf", tmp_path / "state")
    config, _dest, state = _config(
        tmp_path, consul, key, f'  command = {_hcl_list(argv)}\n  kill_timeout = "5s"'
    )
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: _answer(state) == "one", 20, "the first answer", ct.log())
        first = _events(state, "start")[0][1]
        (state / "port").unlink()
        consul.put_kv(key, "two")
        wait_for(lambda: len(_events(state, "start")) == 2, 20, "a second start", ct.log())
        wait_for(lambda: (state / "port").exists(), 10, "the new port")
        assert _get(state) == "two"
        second = _events(state, "start")[1][1]
        assert second != first
        assert _gone(first), f"old child {first} still exists"
        # The old child was stopped with the kill signal (SIGINT by default), not SIGKILL.
        assert [pid for _, pid, _ in _events(state, "term")] == [first]
        assert ct.proc.poll() is None


def test_child_exit_status_becomes_ctemplates(consul, unique, tmp_path):
    key = f"{unique}/app"
    consul.put_kv(key, "x")
    argv = _child_argv(tmp_path / "app.conf", tmp_path / "state", "--exit", "3", "--after", "0.5")
    config, _dest, _state = _config(tmp_path, consul, key, f"  command = {_hcl_list(argv)}")
    with Daemon(["-config", str(config)]) as ct:
        assert ct.wait(30) == 3, ct.log()
        assert "exec[1]: exited with status 3; stopping" in ct.log()


def test_sigterm_stops_the_child_gracefully_and_returns_its_status(consul, unique, tmp_path):
    key = f"{unique}/app"
    consul.put_kv(key, "x")
    argv = _child_argv(tmp_path / "app.conf", tmp_path / "state")
    config, _dest, state = _config(
        tmp_path, consul, key, f'  command = {_hcl_list(argv)}\n  kill_signal = "SIGTERM"'
    )
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: _answer(state) == "x", 20, "the child's answer", ct.log())
        pid = _events(state, "start")[0][1]
        ct.signal(signal.SIGTERM)
        assert ct.wait(20) == 0, ct.log()  # the child's own status: it stops cleanly on TERM
        assert [p for _, p, _ in _events(state, "term")] == [pid]
        assert _gone(pid)


def test_child_ignoring_its_kill_signal_is_killed_with_its_group(consul, unique, tmp_path):
    key = f"{unique}/app"
    consul.put_kv(key, "x")
    # A string command: dash runs the server as its child; both must go.
    argv = _child_argv(tmp_path / "app.conf", tmp_path / "state", "--ignore-term")
    command = " ".join(argv) + " && echo never"
    config, _dest, state = _config(
        tmp_path,
        consul,
        key,
        f'  command = "{command}"\n  kill_signal = "SIGTERM"\n  kill_timeout = "1s"',
    )
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: _answer(state) == "x", 20, "the child's answer", ct.log())
        app = _events(state, "start")[0][1]
        shell = int(Path(f"/proc/{app}/stat").read_text().rpartition(")")[2].split()[1])
        assert Path(f"/proc/{shell}/comm").read_text().strip() == "sh"
        started = time.monotonic()
        ct.signal(signal.SIGTERM)
        status = ct.wait(30)
        took = time.monotonic() - started
        assert status == 128 + signal.SIGKILL, ct.log()
        assert took >= 0.9, took  # kill_timeout was given
        assert [p for _, p, _ in _events(state, "term")] == [app]  # it did get SIGTERM
        assert _gone(app) and _gone(shell)
        assert "sending SIGKILL to its process group" in ct.log()


def test_on_failure_restarts_a_crashing_child_with_growing_delays(consul, unique, tmp_path):
    key = f"{unique}/app"
    consul.put_kv(key, "x")
    argv = _child_argv(tmp_path / "app.conf", tmp_path / "state", "--exit", "1")
    status_port = free_port()
    config, _dest, state = _config(
        tmp_path,
        consul,
        key,
        f"  command = {_hcl_list(argv)}\n"
        '  restart = "on-failure"\n  restart_backoff = "300ms"\n  restart_max_backoff = "10s"',
        extra=f'status_address = "127.0.0.1:{status_port}"\n',
    )
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: len(_events(state, "start")) >= 4, 30, "four starts", ct.log())
        times = [at for _, _, at in _events(state, "start")][:4]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # Delays of 0.3, 0.6 and 1.2 s (plus the child's own start-up time).
        assert gaps[0] >= 0.3 and gaps[1] >= 0.6 and gaps[2] >= 1.2, gaps
        assert ct.proc.poll() is None  # still supervising
        health = httpx.get(f"http://127.0.0.1:{status_port}/health", timeout=5).json()
        (child,) = health["exec"]
        assert child["name"] == "exec[1]"
        assert child["restarts"] >= 3
        assert child["last_exit_status"] == 1
        metrics = httpx.get(f"http://127.0.0.1:{status_port}/metrics", timeout=5).text
        assert 'ctemplate_exec_last_exit_status{exec="exec[1]"} 1' in metrics
        for delay in ("0.30", "0.60", "1.20"):  # doubling from restart_backoff
            assert f"exited with status 1; restarting in {delay}s (restart = on-failure)" in (
                ct.log()
            )


def test_string_command_through_dash_gets_the_reload_signal_to_the_app(consul, unique, tmp_path):
    key = f"{unique}/app"
    consul.put_kv(key, "first")
    argv = _child_argv(tmp_path / "app.conf", tmp_path / "state")
    # Two commands: dash cannot exec the server, which stays its child.
    command = "cd / && " + " ".join(argv)
    config, _dest, state = _config(
        tmp_path, consul, key, f'  command = "{command}"\n  reload_signal = "SIGHUP"'
    )
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: _answer(state) == "first", 20, "the first answer", ct.log())
        app = _events(state, "start")[0][1]
        parent = Path(f"/proc/{app}/stat").read_text().rpartition(")")[2].split()[1]
        assert Path(f"/proc/{parent}/comm").read_text().strip() == "sh"
        consul.put_kv(key, "second")
        wait_for(lambda: _answer(state) == "second", 20, "the reloaded answer", ct.log())
        assert [p for _, p, _ in _events(state, "hup")] == [app]
        assert len(_events(state, "start")) == 1
        time.sleep(0.5)
        assert ct.proc.poll() is None, ct.log()  # the shell survived the signal


def test_burst_of_changes_gives_one_reload_per_min_reload_interval(consul, unique, tmp_path):
    key = f"{unique}/app"
    consul.put_kv(key, "v0")
    argv = _child_argv(tmp_path / "app.conf", tmp_path / "state")
    config, _dest, state = _config(
        tmp_path,
        consul,
        key,
        f'  command = {_hcl_list(argv)}\n  reload_signal = "SIGHUP"\n  min_reload_interval = "3s"',
    )
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: _answer(state) == "v0", 20, "the first answer", ct.log())
        consul.put_kv(key, "v1")  # the first change is signalled at once
        wait_for(lambda: _answer(state) == "v1", 20, "the first reload", ct.log())
        for n in range(2, 7):  # a burst within the interval
            consul.put_kv(key, f"v{n}")
            time.sleep(0.15)
        wait_for(lambda: _answer(state) == "v6", 20, "the last value", ct.log())
        hups = [at for _, _, at in _events(state, "hup")]
        assert len(hups) == 2, hups
        assert hups[1] - hups[0] >= 2.9, hups


def test_several_exec_blocks_each_with_its_templates(consul, unique, tmp_path):
    consul.put_kv(f"{unique}/a", "a1")
    consul.put_kv(f"{unique}/b", "b1")
    blocks = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        argv = _child_argv(tmp_path / f"{name}.conf", tmp_path / name)
        blocks.append(
            f"template {{\n  contents = \"{{{{ key('{unique}/{name}') }}}}\"\n"
            f'  destination = "{tmp_path / name}.conf"\n}}\n'
            f'exec {{\n  command = {_hcl_list(argv)}\n  reload_signal = "SIGHUP"\n'
            f'  templates = ["{tmp_path / name}.conf"]\n}}\n'
        )
    config = tmp_path / "ct.hcl"
    config.write_text(f'consul {{\n  address = "{consul.http_addr}"\n}}\n' + "".join(blocks))
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: _answer(tmp_path / "a") == "a1", 20, "a's answer", ct.log())
        wait_for(lambda: _answer(tmp_path / "b") == "b1", 20, "b's answer", ct.log())
        consul.put_kv(f"{unique}/b", "b2")
        wait_for(lambda: _answer(tmp_path / "b") == "b2", 20, "b reloaded", ct.log())
        time.sleep(0.5)
        assert _events(tmp_path / "a", "hup") == []  # a's files did not change
        assert len(_events(tmp_path / "b", "hup")) == 1


def test_as_pid_1_reaps_orphans_and_exits_with_the_childs_status(consul, unique, tmp_path):
    key = f"{unique}/app"
    consul.put_kv(key, "x")
    argv = _child_argv(tmp_path / "app.conf", tmp_path / "state", "--orphans", "3", "--exit", "3")
    config, _dest, state = _config(tmp_path, consul, key, f"  command = {_hcl_list(argv)}")
    proc = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", *COMMAND, "-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    report = dict(line.partition(" ")[::2] for line in (state / "zombies").read_text().splitlines())
    assert len(report["orphans"].split()) == 3
    assert report["left"] == "", report  # the orphans ended and were reaped
    assert report["zombies"] == "", report


def test_other_signals_are_forwarded_and_own_reload_signal_is_kept(consul, unique, tmp_path):
    key = f"{unique}/app"
    consul.put_kv(key, "x")
    argv = _child_argv(tmp_path / "app.conf", tmp_path / "state")
    config, _dest, state = _config(
        tmp_path, consul, key, f'  command = {_hcl_list(argv)}\n  reload_signal = "SIGHUP"'
    )
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: _answer(state) == "x", 20, "the child's answer", ct.log())
        app = _events(state, "start")[0][1]
        ct.signal(signal.SIGUSR1)
        wait_for(lambda: _events(state, "usr1"), 10, "the forwarded SIGUSR1", ct.log())
        assert [p for _, p, _ in _events(state, "usr1")] == [app]
        ct.signal(signal.SIGHUP)  # ctemplate's own reload signal: reloads its configuration
        wait_for(lambda: "reloading configuration" in ct.log(), 10, "the reload", ct.log())
        time.sleep(0.5)
        assert _events(state, "hup") == []  # not passed on, and the child was not restarted
        assert len(_events(state, "start")) == 1
        assert ct.proc.poll() is None


def test_once_with_exec_flags_waits_for_the_child_and_exits_with_its_status(
    consul, unique, tmp_path
):
    key = f"{unique}/app"
    consul.put_kv(key, "once")
    src = tmp_path / "in.j2"
    src.write_text(f"{{{{ key('{key}') }}}}")
    dest = tmp_path / "app.conf"
    out = tmp_path / "out"
    script = (
        f'test "$(cat {dest})" = once && echo "$GREETING,${{HOME:-no home}}" > {out}; '
        "echo to-stdout; echo to-stderr >&2; exit 4"
    )
    proc = subprocess.run(
        [
            *COMMAND,
            "-once",
            "-consul-addr",
            consul.http_addr,
            "-template",
            f"{src}:{dest}",
            "-exec",
            script,
            "-exec-env-pristine",
            "-exec-env-custom",
            "GREETING=hello",
            "-exec-env-custom",
            "PATH=/usr/bin:/bin",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 4, proc.stderr
    assert out.read_text() == "hello,no home\n"  # pristine: only the custom variables
    assert proc.stdout == "to-stdout\n"  # the child's output, passed through unchanged
    assert "to-stderr\n" in proc.stderr


def test_restart_always_restarts_a_clean_exit_and_on_failure_does_not(consul, unique, tmp_path):
    key = f"{unique}/app"
    consul.put_kv(key, "x")
    results = {}
    for policy in ("always", "on-failure"):
        base = tmp_path / policy
        base.mkdir()
        argv = _child_argv(base / "app.conf", base / "state", "--exit", "0", "--after", "0.2")
        config, _dest, state = _config(
            base,
            consul,
            key,
            f'  command = {_hcl_list(argv)}\n  restart = "{policy}"\n  restart_backoff = "100ms"',
        )
        with Daemon(["-config", str(config)]) as ct:
            if policy == "always":
                wait_for(lambda s=state: len(_events(s, "start")) >= 3, 30, "restarts", ct.log())
                results[policy] = ct.proc.poll()
            else:
                results[policy] = ct.wait(30)
                assert len(_events(state, "start")) == 1
    assert results == {"always": None, "on-failure": 0}


def test_as_pid_1_forwards_sigterm_and_stops_the_child(consul, unique, tmp_path):
    key = f"{unique}/app"
    consul.put_kv(key, "x")
    argv = _child_argv(tmp_path / "app.conf", tmp_path / "state")
    config, _dest, state = _config(
        tmp_path, consul, key, f'  command = {_hcl_list(argv)}\n  kill_signal = "SIGTERM"'
    )
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", *COMMAND, "-config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: _answer(state) == "x", 30, "the child's answer")
        # ctemplate's process 1, seen from here: the child of the unshare process.
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        (init,) = children
        status = Path(f"/proc/{init}/status").read_text().splitlines()
        nspid = next(line for line in status if line.startswith("NSpid:")).split()
        assert nspid[-1] == "1", nspid  # process 1 in its namespace
        os.kill(int(init), signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out  # the child's status after its graceful stop
    assert len(_events(state, "term")) == 1
    assert "received SIGTERM, stopping" in out
