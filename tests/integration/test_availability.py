"""Availability: a template, a plugin, a command or a status client cannot take the daemon down.

Executions have a time and a size budget (execution_timeout, execution_max_size); plugin output
is capped (plugin_max_output); commands run beside the loop; status connections are capped and
timed out. Each test runs the real ``ctemplate`` command against the session's Consul agent and
asserts what a user sees: files, exit codes, the error lines, how long a stop takes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
from consul_harness import free_port
from ctemplate_proc import COMMAND, Daemon, read, run_ctemplate, wait_for


def _hcl(consul, *templates: str, extra: str = "") -> str:
    return f'consul {{\n  address = "{consul.http_addr}"\n}}\n{extra}' + "".join(templates)


def _template(src: Path, dest: Path | str, **options: str) -> str:
    lines = [f'  source = "{src}"', f'  destination = "{dest}"']
    lines += [f"  {key} = {json.dumps(value)}" for key, value in options.items()]
    return "template {\n" + "\n".join(lines) + "\n}\n"


def _errors(log: str) -> list[str]:
    """The [ERR] lines of a log, without their timestamp."""
    return [line.split("[ERR] ", 1)[1] for line in log.splitlines() if "[ERR] " in line]


def _peak_rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


def _yaml_bomb(levels: int = 9) -> str:
    """'Billion laughs': nine levels of nine aliases, 9**9 nodes once expanded."""
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghij"[: levels - 1]:
        text += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    return text


NEVER_ENDS = (
    "begin\n{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\nend\n"
)


def test_runaway_templates_are_stopped_and_the_others_keep_rendering(consul, unique, tmp_path):
    """Promise: a template that never finishes, a YAML alias bomb read from KV and a
    catastrophic-backtracking regex on a KV value each cost at most their budget: the runaway
    ones are reported once, one line naming their file and line; the last good file stays; the
    others keep following Consul; a stop exits at once; the memory stays small."""
    k, r, y = f"{unique}/n", f"{unique}/re", f"{unique}/yaml"
    consul.put_kv(k, "1")
    consul.put_kv(r, "aaaa")
    consul.put_kv(y, "a: 1")
    loop = tmp_path / "loop.j2"
    regex, yaml, fast = tmp_path / "regex.j2", tmp_path / "yaml.j2", tmp_path / "fast.j2"
    loop.write_text(NEVER_ENDS)
    regex.write_text(f'{{{{ key("{r}") | regexMatch("(a+)+$") }}}}\n')
    yaml.write_text(f'{{{{ key("{y}") | parseYAML | toJSON }}}}\n')
    fast.write_text(f'n={{{{ key("{k}") }}}}\n')
    budget = {"execution_timeout": "2s", "execution_max_size": "8MiB"}
    config = tmp_path / "ct.hcl"
    config.write_text(
        _hcl(
            consul,
            *(
                _template(src, tmp_path / f"{src.stem}.out", **budget)
                for src in (loop, regex, yaml, fast)
            ),
        )
    )
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: read(tmp_path / "fast.out") == "n=1\n", what="fast", log=ct.log())
        wait_for(lambda: read(tmp_path / "regex.out") == "True\n", what="regex", log=ct.log())
        wait_for(lambda: read(tmp_path / "yaml.out") == '{"a":1}\n', what="yaml", log=ct.log())
        consul.put_kv(r, "a" * 40 + "b")  # 2**40 steps for a backtracking engine
        consul.put_kv(y, _yaml_bomb())
        consul.put_kv(k, "2")
        wait_for(lambda: read(tmp_path / "fast.out") == "n=2\n", what="fast n=2", log=ct.log())
        wait_for(lambda: read(tmp_path / "regex.out") == "False\n", what="regex", log=ct.log())
        wait_for(lambda: len(_errors(ct.log())) >= 2, timeout=20, what="errors", log=ct.log())
        consul.put_kv(k, "3")  # still following
        wait_for(lambda: read(tmp_path / "fast.out") == "n=3\n", what="fast n=3", log=ct.log())
        peak = _peak_rss_mib(ct.pid)
        ct.signal(signal.SIGTERM)
        stopping = time.monotonic()
        assert ct.wait(10) == 0, ct.log()
        took = time.monotonic() - stopping
        log = ct.log()
    errors = sorted(_errors(log))
    assert len(errors) == 2, log
    assert errors[0] == (
        f"{loop}:2: execution stopped: did not finish within 2s; raise execution_timeout if it "
        f"needs longer; keeping the last good {tmp_path / 'loop.out'}"
    ), log
    assert errors[1] == (
        f"{yaml}:1: parseYAML: the document expands to more than 131,072 nodes through its "
        "aliases (an alias bomb?); raise execution_max_size if it is meant; keeping the last "
        f"good {tmp_path / 'yaml.out'}"
    ), log
    assert read(tmp_path / "yaml.out") == '{"a":1}\n'  # the last good file stays
    assert not (tmp_path / "loop.out").exists()
    assert took < 5, log
    assert peak < 1024, f"peak resident memory {peak} MiB"
    assert "Traceback" not in log


def test_a_template_that_starts_looping_after_quiet_renders_is_stopped(consul, unique, tmp_path):
    """Promise: execution_timeout holds for an execution that starts when nothing else runs.
    The budget's watchdog idles between executions and is woken only for one still running
    after its polling period (a timer on the loop): here the first renders end at once, the
    watchdog goes idle, then a change makes the template loop."""
    k = f"{unique}/mode"
    consul.put_kv(k, "quick")
    src = tmp_path / "t.j2"
    src.write_text(
        f'{{% if key("{k}") == "loop" %}}{{% for i in range(100000) %}}'
        "{% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}"
        f'mode={{{{ key("{k}") }}}}\n'
    )
    dest = tmp_path / "out"
    config = tmp_path / "ct.hcl"
    config.write_text(_hcl(consul, _template(src, dest, execution_timeout="1s")))
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: read(dest) == "mode=quick\n", what="the first render", log=ct.log())
        consul.put_kv(k, "quick-again")
        wait_for(lambda: read(dest) == "mode=quick-again\n", what="a second", log=ct.log())
        time.sleep(0.5)  # the watchdog has nothing to watch: idle
        consul.put_kv(k, "loop")
        wait_for(lambda: _errors(ct.log()), timeout=15, what="the timeout", log=ct.log())
        consul.put_kv(k, "quick")  # still following
        wait_for(lambda: read(dest) == "mode=quick\n", what="the next render", log=ct.log())
        log = ct.log()
    assert _errors(log) == [
        f"{src}:1: execution stopped: did not finish within 1s; raise execution_timeout if it "
        f"needs longer; keeping the last good {dest}"
    ], log


def test_a_template_growing_memory_is_stopped(consul, tmp_path):
    """Promise: a template that grows a list in a loop (each step small) is stopped once the
    process grew by 4 x execution_max_size, with one line naming its file and line."""
    grow = tmp_path / "grow.j2"
    grow.write_text(
        "{% set items = [] %}\n"
        "{% for i in range(100000) %}{% for j in range(100000) %}"
        "{% do items.append('y' * 100000) %}{% endfor %}{% endfor %}\n"
    )
    config = tmp_path / "ct.hcl"
    config.write_text(_hcl(consul, _template(grow, tmp_path / "out", execution_max_size="8MiB")))
    result = run_ctemplate(["-config", str(config), "-once"], timeout=60)
    assert result.returncode == 14, result.stderr
    (error,) = _errors(result.stderr)
    grown = int(error.split("grew by ", 1)[1].split(" ", 1)[0])
    assert error == (
        f"{grow}:2: execution stopped: the process grew by {grown} MiB while it ran, past 4 x "
        "execution_max_size; raise execution_max_size if it needs more; keeping the last good "
        f"{tmp_path / 'out'}"
    )
    assert 32 < grown < 1024
    assert not (tmp_path / "out").exists()


def test_sigterm_stops_a_template_that_never_finishes(consul, tmp_path):
    """Promise: a stop exits within seconds even while an execution is stuck in a loop (with a
    budget of an hour, the watchdog is not what stops it: the stop interrupts it)."""
    src = tmp_path / "loop.j2"
    src.write_text(NEVER_ENDS)
    config = tmp_path / "ct.hcl"
    config.write_text(_hcl(consul, _template(src, tmp_path / "out", execution_timeout="1h")))
    pid_file = tmp_path / "pid"
    with Daemon(["-config", str(config), "-pid-file", str(pid_file)]) as ct:
        wait_for(pid_file.exists, what="pid file (signal handlers installed)", log=ct.log())
        time.sleep(1)  # it is looping now
        assert ct.proc.poll() is None, ct.log()
        ct.signal(signal.SIGTERM)
        stopping = time.monotonic()
        assert ct.wait(10) == 0, ct.log()
        took = time.monotonic() - stopping
        log = ct.log()
    assert took < 5, log
    assert "Traceback" not in log


def test_once_timeout_exits_while_a_template_never_finishes(consul, unique, tmp_path):
    """Promise: -once-timeout prints its error and exits 14 (it used to hang behind the worker
    thread); the template that finished is written."""
    key = f"{unique}/k"
    consul.put_kv(key, "v")
    loop, fast = tmp_path / "loop.j2", tmp_path / "fast.j2"
    loop.write_text(NEVER_ENDS)
    fast.write_text(f'k={{{{ key("{key}") }}}}\n')
    config = tmp_path / "ct.hcl"
    config.write_text(
        _hcl(
            consul,
            _template(loop, tmp_path / "loop.out", execution_timeout="1h"),
            _template(fast, tmp_path / "fast.out"),
        )
    )
    started = time.monotonic()
    result = run_ctemplate(["-config", str(config), "-once", "-once-timeout", "2s"], timeout=30)
    took = time.monotonic() - started
    assert result.returncode == 14, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "ctemplate: error: -once-timeout: gave up after 2s; still waiting for "
        f"{tmp_path / 'loop.out'} (nothing rendered yet)"
    )
    assert took < 15
    assert read(tmp_path / "fast.out") == "k=v\n"


def test_oversized_values_fail_before_they_are_made(consul, tmp_path):
    """Promise: a value or an output past execution_max_size is refused before it is made
    (a C operation cannot be interrupted), with one line naming the file and line."""
    cases = {
        "mul": "{{ 'x' * 10**10 }}",
        "pow": "{{ 10 ** (10 ** 9) }}",
        "width": "{{ '%999999999999d' % 1 }}",
        "ljust": "{{ 'x'.ljust(10**12) }}",
        "output": "{% for i in range(5000) %}{{ 'x' * 1000 }}{% endfor %}",
    }
    templates = []
    for name, text in cases.items():
        (tmp_path / f"{name}.j2").write_text(f"first line\n{text}\n")
        src, dest = tmp_path / f"{name}.j2", tmp_path / f"{name}.out"
        templates.append(_template(src, dest, execution_max_size="1MiB"))
    config = tmp_path / "ct.hcl"
    config.write_text(_hcl(consul, *templates))
    result = run_ctemplate(["-config", str(config), "-once"], timeout=60)
    assert result.returncode == 14, result.stderr
    errors = sorted(_errors(result.stderr))
    limit = "past execution_max_size (1,048,576); raise execution_max_size if this is meant"
    expected = sorted(
        [
            f"{tmp_path}/mul.j2:2: the operator '*' would make a value of 10,000,000,000 bytes "
            f"or items, {limit}",
            f"{tmp_path}/pow.j2:2: the operator '**' would make a value of 1,333,333,333 bytes "
            f"or items, {limit}",
            f"{tmp_path}/width.j2:2: the operator '%' would make a value of 999,999,999,999 "
            f"bytes or items, {limit}",
            f"{tmp_path}/ljust.j2:2: str.ljust() would make a value of 1,000,000,000,000 bytes "
            f"or items, {limit}",
            f"{tmp_path}/output.j2: the output passed execution_max_size (1,048,576 bytes); "
            "raise execution_max_size if this is meant",
        ]
    )
    assert [e.rsplit("; keeping the last good", 1)[0] for e in errors] == expected, result.stderr
    assert not any((tmp_path / f"{name}.out").exists() for name in cases)
    assert "Traceback" not in result.stderr


def test_budget_settings_are_checked(consul, tmp_path):
    """Promise: a bad budget is a configuration error naming the file and key (exit 15)."""
    for key, value, message in (
        ("execution_timeout", "0", '"0" must be greater than zero'),
        (
            "execution_max_size",
            "lots",
            '"lots" is not a size; write e.g. "1MiB", "512KiB" or a number of bytes',
        ),
        (
            "plugin_max_output",
            "-1",
            '"-1" is not a size; write e.g. "1MiB", "512KiB" or a number of bytes',
        ),
    ):
        config = tmp_path / "ct.hcl"
        config.write_text(_hcl(consul, _template(tmp_path / "t", tmp_path / "o", **{key: value})))
        result = run_ctemplate(["-config", str(config), "-once"], timeout=30)
        assert result.returncode == 15, result.stderr
        assert result.stderr.strip() == f"ctemplate: error: {config}: template[1].{key}: {message}"


def test_plugin_output_is_capped(consul, tmp_path):
    """Promise: a plugin printing without end fails its template past plugin_max_output (one
    line naming the plugin), and is killed with its process group, background children too;
    a plugin within the cap works."""
    pids = tmp_path / "pids"
    script = tmp_path / "chatty"
    script.write_text(f"#!/bin/sh\necho $$ >> {pids}\nyes &\necho $! >> {pids}\nwait\n")
    script.chmod(0o755)
    (tmp_path / "chatty.j2").write_text(f'{{{{ plugin("{script}") | length }}}}\n')
    for name, size in (("small", 5000), ("big", 20000)):
        (tmp_path / f"{name}.j2").write_text(
            f'{{{{ plugin("head", "-c", "{size}", "/dev/zero") | length }}}}\n'
        )
    config = tmp_path / "ct.hcl"
    config.write_text(
        _hcl(
            consul,
            _template(tmp_path / "chatty.j2", tmp_path / "chatty.out"),
            _template(tmp_path / "small.j2", tmp_path / "small.out", plugin_max_output="10KiB"),
            _template(tmp_path / "big.j2", tmp_path / "big.out", plugin_max_output="10KiB"),
        )
    )
    result = run_ctemplate(["-config", str(config), "-once"], timeout=60)
    assert result.returncode == 14, result.stderr
    errors = sorted(e.rsplit("; keeping the last good", 1)[0] for e in _errors(result.stderr))
    assert errors == [
        f'{tmp_path}/big.j2:1: plugin("head"): printed more than 10,240 bytes and was killed '
        "with its process group (raise plugin_max_output if this is meant)",
        f'{tmp_path}/chatty.j2:1: plugin("{script}"): printed more than 1,048,576 bytes and '
        "was killed with its process group (raise plugin_max_output if this is meant)",
    ], result.stderr
    assert read(tmp_path / "small.out") == "5000\n"
    leader, child = (int(p) for p in pids.read_text().split())
    wait_for(lambda: not _alive(child) and not _alive(leader), timeout=5, what="plugin killed")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_a_command_with_a_background_child_holds_up_no_other_template(consul, unique, tmp_path):
    """Promise: a command that leaves a child in the background holding its output (or that is
    just slow) does not hold up the other templates: their files follow Consul within seconds.
    The command still runs after its own file's write, once per change."""
    a, b = f"{unique}/a", f"{unique}/b"
    consul.put_kv(a, "1")
    consul.put_kv(b, "1")
    runs, children = tmp_path / "runs", tmp_path / "children"
    (tmp_path / "a.j2").write_text(f'a={{{{ key("{a}") }}}}\n')
    (tmp_path / "b.j2").write_text(f'b={{{{ key("{b}") }}}}\n')
    command = (
        f"cat {tmp_path / 'a.out'} >> {runs}; sh -c 'sleep 30 & echo $! >> {children}'; sleep 3"
    )
    config = tmp_path / "ct.hcl"
    config.write_text(
        _hcl(
            consul,
            _template(tmp_path / "a.j2", tmp_path / "a.out", command=command),
            _template(tmp_path / "b.j2", tmp_path / "b.out"),
        )
    )
    try:
        with Daemon(["-config", str(config)]) as ct:
            wait_for(lambda: read(runs) == "a=1\n", what="first command", log=ct.log())
            consul.put_kv(a, "2")
            wait_for(lambda: read(tmp_path / "a.out") == "a=2\n", what="a=2", log=ct.log())
            consul.put_kv(b, "2")  # while a's command runs (3s) and its child holds the output
            took = wait_for(
                lambda: read(tmp_path / "b.out") == "b=2\n", timeout=10, what="b", log=ct.log()
            )
            assert took < 2, ct.log()
            wait_for(lambda: read(runs) == "a=1\na=2\n", what="second command", log=ct.log())
            log = ct.log()
        assert "ran past its timeout" not in log, log
        assert "Traceback" not in log
    finally:
        for pid in children.read_text().split() if children.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def _limit_fds(n: int):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return limit


def test_idle_status_connections_exhaust_neither_the_status_port_nor_file_writes(
    consul, unique, tmp_path
):
    """Promise: clients that open connections to the status port and send nothing (more than
    the cap, with a daemon limited to 64 open files) neither starve /health nor make the next
    file write fail; idle connections are closed after a timeout."""
    key = f"{unique}/k"
    consul.put_kv(key, "1")
    (tmp_path / "t.j2").write_text(f'k={{{{ key("{key}") }}}}\n')
    port = free_port()
    config = tmp_path / "ct.hcl"
    config.write_text(
        _hcl(
            consul,
            _template(tmp_path / "t.j2", tmp_path / "out"),
            extra=f'status_address = "127.0.0.1:{port}"\n',
        )
    )
    log_path = tmp_path / "ct.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [*COMMAND, "-config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_limit_fds(64),
        )
    idle: list[socket.socket] = []
    try:
        log = lambda: log_path.read_text()  # noqa: E731
        wait_for(lambda: read(tmp_path / "out") == "k=1\n", what="first render", log=log())
        for _ in range(100):  # past the daemon's 64 file descriptors
            s = socket.socket()
            s.settimeout(5)
            with contextlib.suppress(OSError):
                s.connect(("127.0.0.1", port))
            idle.append(s)
        time.sleep(0.5)
        answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert answer.status_code == 200, answer.text
        consul.put_kv(key, "2")
        wait_for(lambda: read(tmp_path / "out") == "k=2\n", what="write", log=log())
        assert not re.search(r"\[ERR\]", log()), log()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, log()
    finally:
        for s in idle:
            s.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_soft_open_files_limit_is_raised_to_the_hard_one(consul, unique, tmp_path):
    """Promise: started with systemd's soft limit (1024 here, 64 in the test) below the hard
    one, the daemon raises its soft limit of open files to the hard limit, as Go programs do."""
    key = f"{unique}/k"
    consul.put_kv(key, "1")
    (tmp_path / "t.j2").write_text(f'k={{{{ key("{key}") }}}}\n')
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))

    log_path = tmp_path / "ct.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [*COMMAND, "-consul-addr", consul.http_addr, "-template", f"{tmp_path}/t.j2:out"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,
            cwd=tmp_path,
        )
    try:
        wait_for(lambda: read(tmp_path / "out") == "k=1\n", what="render", log=log_path.read_text())
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        (line,) = [entry for entry in limits.splitlines() if entry.startswith("Max open files")]
        assert line.split()[3:5] == [str(hard), str(hard)], line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_runaway_go_template_is_stopped_too(consul, unique, tmp_path):
    """Promise: the budgets hold for Go-syntax templates: a range that never ends is stopped at
    execution_timeout, one line naming the file, and -once exits 14 at once."""
    src = tmp_path / "loop.ctmpl"
    src.write_text(
        "begin\n{{ range $i := 100000000 }}{{ range $j := 100000000 }}{{ end }}{{ end }}\n"
    )
    config = tmp_path / "ct.hcl"
    config.write_text(_hcl(consul, _template(src, tmp_path / "loop.out", execution_timeout="2s")))
    started = time.monotonic()
    result = run_ctemplate(["-config", str(config), "-once"], timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 14, result.stderr
    errors = _errors(result.stderr)
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"{src}:"), errors
    assert "execution_timeout" in errors[0], errors
    assert not (tmp_path / "loop.out").exists()
    assert took < 30, result.stderr
