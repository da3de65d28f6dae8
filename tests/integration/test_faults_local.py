"""Fault injection on the local side: files that cannot be written, templates that fail,
commands that fail or hang, data that never comes.

Each test runs the real ``ctemplate`` command against the session's Consul agent; each
docstring names the promise (README, "Promises") it checks.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from ctemplate_proc import Daemon, read, run_ctemplate, wait_for

FAST = {"CTEMPLATE_WAITING_WARN": "1s:1s"}


def _state(pid: int) -> str | None:
    """The process state letter (R, S, Z...) or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[0]


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z")


def _stats() -> list[list[str]]:
    """[pid, state, ppid, pgid, ...] of every process."""
    result = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                rest = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            result.append([entry, *rest])
    return result


def _group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    return [int(f[0]) for f in _stats() if f[1] != "Z" and int(f[3]) == pgid]


def _zombie_children(pid: int) -> list[int]:
    return [int(f[0]) for f in _stats() if f[1] == "Z" and int(f[2]) == pid]


def _hcl(consul, *templates: str, extra: str = "") -> str:
    return f'consul {{\n  address = "{consul.http_addr}"\n}}\n{extra}' + "".join(templates)


def _template(src: Path, dest: Path | str, **options: str) -> str:
    lines = [f'  source = "{src}"', f'  destination = "{dest}"']
    lines += [f"  {key} = {json.dumps(value)}" for key, value in options.items()]
    return "template {\n" + "\n".join(lines) + "\n}\n"


def test_failing_templates_do_not_stop_the_others(consul, unique, tmp_path):
    """Promise: a template that cannot be rendered (an error in it) or written (its directory
    is a regular file) does not stop the other templates; each error names its file, is
    logged once rather than on every change, and the good file keeps following Consul."""
    key = f"{unique}/n"
    consul.put_kv(key, "1")
    good, broken = tmp_path / "good.j2", tmp_path / "broken.j2"
    good.write_text(f'n={{{{ key("{key}") }}}}\n')
    broken.write_text(f'n={{{{ key("{key}") | int // 0 }}}}\n')
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file\n")
    config = tmp_path / "ct.hcl"
    config.write_text(
        _hcl(
            consul,
            _template(good, blocker / "out"),
            _template(broken, tmp_path / "broken.out"),
            _template(good, tmp_path / "good.out"),
        )
    )
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: read(tmp_path / "good.out") == "n=1\n", what="good file", log=ct.log())
        wait_for(lambda: ct.log().count("[ERR]") == 2, what="two errors", log=ct.log())
        consul.put_kv(key, "2")
        wait_for(lambda: read(tmp_path / "good.out") == "n=2\n", what="good again", log=ct.log())
        time.sleep(0.3)
        log = ct.log()
        assert ct.proc.poll() is None
    errors = [line.split("[ERR] ", 1)[1] for line in log.splitlines() if "[ERR]" in line]
    assert sorted(errors) == sorted(
        [
            f"{blocker}/out: {blocker} is not a directory; fix the destination's path; "
            f"keeping the last good {blocker}/out",
            f"{broken}:1: ZeroDivisionError: integer division or modulo by zero; keeping the last "
            f"good {tmp_path}/broken.out",
        ]
    ), log
    assert not (tmp_path / "broken.out").exists()

    # -once: the good file is written, the status says something failed.
    (tmp_path / "good.out").unlink()
    result = run_ctemplate(["-config", str(config), "-once"], timeout=30)
    assert result.returncode == 14, result.stderr
    assert read(tmp_path / "good.out") == "n=2\n"
    assert "Traceback" not in result.stderr


def test_slow_plugin_holds_up_neither_other_templates_nor_a_stop(consul, unique, tmp_path):
    """Promise: a template whose plugin is slow does not hold up the other templates (they
    follow Consul as usual), and a stop does not wait for it: the plugin is killed with its
    process group, the template's next plugin is not started, and the daemon exits at once,
    leaving no stray process."""
    key = f"{unique}/n"
    consul.put_kv(key, "1")
    pids = tmp_path / "pids"
    script = tmp_path / "slow-plugin"
    script.write_text(f"echo $$ >> {pids}\nsleep 300 &\necho $! >> {pids}\nwait\n")
    slow, fast = tmp_path / "slow.j2", tmp_path / "fast.j2"
    slow.write_text(f'{{{{ plugin("sh", "{script}") }}}}\n{{{{ plugin("sh", "{script}") }}}}\n')
    fast.write_text(f'n={{{{ key("{key}") }}}}\n')
    config = tmp_path / "ct.hcl"
    config.write_text(
        _hcl(
            consul,
            _template(slow, tmp_path / "slow.out"),
            _template(fast, tmp_path / "fast.out"),
        )
    )
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: read(tmp_path / "fast.out") == "n=1\n", what="fast", log=ct.log())
        consul.put_kv(key, "2")
        wait_for(lambda: read(tmp_path / "fast.out") == "n=2\n", what="fast", log=ct.log())
        started = [int(p) for p in pids.read_text().split()]
        assert len(started) == 2 and all(_alive(p) for p in started), started
        ct.signal(signal.SIGTERM)
        stopping = time.monotonic()
        assert ct.wait(10) == 0, ct.log()
        took = time.monotonic() - stopping
        log = ct.log()
    assert took < 3, log
    assert len(pids.read_text().split()) == 2, "the second plugin started during the stop"
    wait_for(lambda: not _group_alive(started[0]), timeout=5, what="plugin group gone", log=log)
    assert not (tmp_path / "slow.out").exists()
    assert "Traceback" not in log


def test_command_hanging_past_its_timeout(consul, unique, tmp_path):
    """Promise: a reload command that hangs is killed at command_timeout with its whole process
    group (SIGTERM, then SIGKILL for what ignores it); no stray process or zombie is left, the
    timeout is reported with the file's name, and the daemon carries on."""
    key = f"{unique}/n"
    consul.put_kv(key, "1")
    src, dest = tmp_path / "t.j2", tmp_path / "t.out"
    src.write_text(f'n={{{{ key("{key}") }}}}\n')
    pids = tmp_path / "pids"
    command = (
        f"echo $$ >> {pids}; sleep 300 & echo $! >> {pids}; "
        f"sh -c 'trap \"\" TERM; sleep 300' & echo $! >> {pids}; wait"
    )
    config = tmp_path / "ct.hcl"
    config.write_text(_hcl(consul, _template(src, dest, command=command, command_timeout="1s")))
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: read(dest) == "n=1\n", what="render", log=ct.log())
        wait_for(lambda: "ran past its timeout" in ct.log(), what="timeout", log=ct.log())
        started = [int(p) for p in pids.read_text().split()]
        assert len(started) == 3
        group = started[0]  # the shell leads the command's process group
        wait_for(lambda: not _group_alive(group), timeout=5, what="group gone", log=ct.log())
        assert _zombie_children(ct.pid) == []
        consul.put_kv(key, "2")
        wait_for(lambda: read(dest) == "n=2\n", what="render after the timeout", log=ct.log())
        wait_for(lambda: ct.log().count("ran past its timeout") == 2, what="second timeout")
        assert ct.proc.poll() is None
        log = ct.log()
    assert (
        f"[ERR] {dest}: command {command!r} ran past its timeout of 1s and was killed with its "
        "process group (raise command_timeout if it needs longer)"
    ) in log
    assert not any(_alive(int(p)) for p in pids.read_text().split())


def test_stop_signal_kills_a_running_command(consul, unique, tmp_path):
    """Promise: stopping ctemplate while a command runs does not wait out command_timeout and
    leaves no stray process: the command's process group is killed."""
    key = f"{unique}/n"
    consul.put_kv(key, "1")
    src, dest = tmp_path / "t.j2", tmp_path / "t.out"
    src.write_text(f'n={{{{ key("{key}") }}}}\n')
    pid_file = tmp_path / "pid"
    config = tmp_path / "ct.hcl"
    command = f"sleep 300 & echo $! > {pid_file}; wait"
    config.write_text(_hcl(consul, _template(src, dest, command=command, command_timeout="5m")))
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: read(pid_file), what="command running", log=ct.log())
        sleeper = int(pid_file.read_text())
        assert _alive(sleeper)
        started = time.monotonic()
        ct.signal(signal.SIGTERM)
        assert ct.wait(10) == 0, ct.log()
        assert time.monotonic() - started < 5
        wait_for(lambda: not _alive(sleeper), timeout=5, what="command killed")
        assert "stopping; killed command" in ct.log()


def test_failing_command_is_reported_and_the_daemon_carries_on(consul, unique, tmp_path):
    """Promise: a reload command that fails is reported (status and the tail of stderr, with
    the file's name) and, by default (on_command_failure = "log"), the daemon carries on and
    runs it again on the next change; with on_command_failure = "exit" ctemplate stops with
    status 14 and one error line."""
    key = f"{unique}/n"
    consul.put_kv(key, "1")
    src, dest = tmp_path / "t.j2", tmp_path / "t.out"
    src.write_text(f'n={{{{ key("{key}") }}}}\n')
    command = "echo reload failed: bad config >&2; exit 3"
    config = tmp_path / "ct.hcl"
    config.write_text(_hcl(consul, _template(src, dest, command=command)))
    expected = f"{dest}: command {command!r} exited with status 3: reload failed: bad config"
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: expected in ct.log(), what="failure reported", log=ct.log())
        consul.put_kv(key, "2")
        wait_for(lambda: read(dest) == "n=2\n", what="render after failure", log=ct.log())
        wait_for(lambda: ct.log().count(expected) == 2, what="command run again", log=ct.log())
        assert ct.proc.poll() is None

    config.write_text(
        _hcl(consul, _template(src, dest, command=command, on_command_failure="exit"))
    )
    dest.unlink()
    with Daemon(["-config", str(config)]) as ct:
        assert ct.wait(15) == 14, ct.log()
        lines = ct.log().strip().splitlines()
    assert lines[-1] == f'ctemplate: error: {expected} (on_command_failure = "exit")'
    assert read(dest) == "n=2\n"  # the file was written before its command ran


def test_waiting_is_never_silent(consul, unique, tmp_path):
    """Promise: while a template waits for data, a warning names the missing queries and how
    long it has waited, repeated while the wait lasts; nothing is written meanwhile."""
    src, dest = tmp_path / "t.j2", tmp_path / "t.out"
    src.write_text(
        f'a={{{{ key("{unique}/a") }}}}\n'
        f'{{% for s in service("none-{unique}") | require(1) %}}{{{{ s.Address }}}}{{% endfor %}}'
        f'b={{{{ key("{unique}/b") }}}}\n'
    )
    consul.put_kv(f"{unique}/b", "here")
    with Daemon(["-consul-addr", consul.http_addr, "-template", f"{src}:{dest}"], env=FAST) as ct:
        wait_for(lambda: ct.log().count("still waiting") >= 2, what="two warnings", log=ct.log())
        assert not dest.exists()
        log = ct.log()
    assert f"[WARN] (runner) {dest}: still waiting after 1s for: kv.block({unique}/a) " in log
    assert "(not written until they have data)" in log


def test_once_timeout_lists_what_is_missing(consul, unique, tmp_path):
    """Promise: -once with -once-timeout gives up after that long with status 14 and one error
    line listing, per file, the queries that never got data (and why, if Consul is down)."""
    consul.put_kv(f"{unique}/b", "here")
    src, dest = tmp_path / "t.j2", tmp_path / "t.out"
    src.write_text(f'{{{{ key("{unique}/a") }}}} {{{{ key("{unique}/b") }}}}\n')
    other = tmp_path / "other.j2"
    other.write_text(f'{{{{ key("{unique}/b") }}}}\n')
    started = time.monotonic()
    result = run_ctemplate(
        [
            "-consul-addr",
            consul.http_addr,
            "-once",
            "-once-timeout",
            "1500ms",
            "-template",
            f"{src}:{dest}",
            "-template",
            f"{other}:{tmp_path / 'other.out'}",
        ],
        timeout=30,
    )
    took = time.monotonic() - started
    assert result.returncode == 14
    assert result.stderr.strip().splitlines()[-1] == (
        f"ctemplate: error: -once-timeout: gave up after 1.5s; still waiting for {dest} "
        f"(kv.block({unique}/a))"
    )
    assert 1.5 < took < 10
    assert read(tmp_path / "other.out") == "here\n"  # the complete one was written
    assert not dest.exists()


def test_once_timeout_when_consul_is_down(consul_agent_factory, tmp_path):
    """Promise: with Consul unreachable, -once -once-timeout exits 14 at the deadline, naming the
    missing queries and the connection error."""
    agent = consul_agent_factory()
    address = agent.http_addr
    agent.stop()
    src = tmp_path / "t.j2"
    src.write_text('{{ key("app/a") }}\n')
    result = run_ctemplate(
        ["-consul-addr", address, "-once", "-once-timeout", "1s", "-template", f"{src}:out"],
        timeout=30,
    )
    assert result.returncode == 14
    assert result.stderr.strip().splitlines()[-1] == (
        "ctemplate: error: -once-timeout: gave up after 1s; still waiting for out "
        "(kv.block(app/a)); Consul is unreachable: GET /v1/kv/app/a: cannot reach Consul at "
        f"http://{address}: connection refused; is the agent running? (set "
        "-consul-addr or CONSUL_HTTP_ADDR)"
    )
