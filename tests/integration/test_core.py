"""The core daemon against a real Consul agent: the workshop's steps 6-7 with ctemplate.

Each test runs the real ``ctemplate`` command and checks what a user sees: file contents,
commands run, exit codes and log lines.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
from ctemplate_proc import Daemon, read, run_ctemplate, wait_for

# The workshop's sample.conf.ctmpl (step 6), ported to Jinja (the Go original: test_go_syntax.py).
WORKSHOP_TEMPLATE = """\
upstream backend_apps {
{% for s in service("production.application@dc1", "passing") %}
    server {{ s.Address }}:{{ s.Port }};
{% endfor %}
}
server {
    listen      80;
    server_name _;
    location / {
        proxy_pass http://backend_apps;
    }
}
"""

UPSTREAM = """\
{% for s in service(name) %}
server {{ s.Address }}:{{ s.Port }};
{% endfor %}
"""


def _check(node: str, status: str, service_id: str) -> dict[str, str]:
    return {
        "CheckID": f"{service_id}-check",
        "Name": "http",
        "Status": status,
        "ServiceID": service_id,
    }


@pytest.fixture
def workshop(consul):
    """back01..03 running `application` as in the workshop: back02 failing, back03 untagged."""
    nodes = {
        "back01": ("10.0.0.11", ["production"], "passing"),
        "back02": ("10.0.0.12", ["production"], "critical"),
        "back03": ("10.0.0.13", ["staging"], "passing"),
    }
    for node, (addr, tags, status) in nodes.items():
        consul.register_external(
            node,
            addr,
            "application",
            port=3000,
            tags=tags,
            checks=[_check(node, status, "application")],
        )
    yield nodes
    for node in nodes:
        consul.deregister_external(node)


def test_workshop_once_with_old_form_hcl(consul, workshop, tmp_path):
    src = tmp_path / "sample.conf.j2"
    src.write_text(WORKSHOP_TEMPLATE)
    dest = tmp_path / "conf.d" / "sample.conf"
    reloads = tmp_path / "reloads"
    pid_file = tmp_path / "ct.pid"
    config = tmp_path / "consul-template.hcl"
    config.write_text(
        f'consul = "{consul.http_addr}"\n'
        'retry = "10s"\n'
        'max_stale = "10m"\n'
        'log_level = "info"\n'
        f'pid_file = "{pid_file}"\n'
        "template {\n"
        f'  source = "{src}"\n'
        f'  destination = "{dest}"\n'
        f'  command = "echo reload >> {reloads}"\n'
        "}\n"
    )
    result = run_ctemplate(["-config", str(config), "-once"])
    assert result.returncode == 0, result.stderr
    assert dest.read_text() == (
        "upstream backend_apps {\n"
        "    server 10.0.0.11:3000;\n"
        "}\n"
        "server {\n"
        "    listen      80;\n"
        "    server_name _;\n"
        "    location / {\n"
        "        proxy_pass http://backend_apps;\n"
        "    }\n"
        "}\n"
    )
    assert reloads.read_text() == "reload\n"
    assert not pid_file.exists()

    # Same data again: nothing to write, so the command does not run.
    mtime = dest.stat().st_mtime_ns
    result = run_ctemplate(["-config", str(config), "-once"])
    assert result.returncode == 0, result.stderr
    assert dest.stat().st_mtime_ns == mtime
    assert reloads.read_text() == "reload\n"


def _backends(consul, name, count=3):
    nodes = {}
    for i in range(1, count + 1):
        node, addr = f"{name}-n{i}", f"127.0.1.{i}"
        consul.register_external(
            node,
            addr,
            name,
            service_id=f"{name}-{i}",
            port=8000 + i,
            checks=[_check(node, "passing", f"{name}-{i}")],
        )
        nodes[node] = (addr, f"{name}-{i}")
    return nodes


def _servers(*numbers: int) -> str:
    return "".join(f"server 127.0.1.{i}:{8000 + i};\n" for i in numbers)


def test_daemon_follows_failure_and_recovery(consul, unique, tmp_path):
    name = f"app-{unique}"
    nodes = _backends(consul, name)
    src = tmp_path / "upstream.j2"
    src.write_text("{% set name = '" + name + "' %}\n" + UPSTREAM)
    dest = tmp_path / "upstream.conf"
    reloads = tmp_path / "reloads"
    args = [
        "-consul-addr",
        consul.http_addr,
        "-log-level",
        "info",
        "-template",
        f"{src}:{dest}:echo reload >> {reloads}",
    ]
    with Daemon(args) as ct:
        wait_for(lambda: read(dest) == _servers(1, 2, 3), what="first render", log=ct.log())
        wait_for(lambda: read(reloads) == "reload\n", what="first command", log=ct.log())

        addr, sid = nodes[f"{name}-n2"]
        consul.set_external_check(f"{name}-n2", addr, f"{sid}-check", "critical", service_id=sid)
        took = wait_for(
            lambda: read(dest) == _servers(1, 3), timeout=5, what="failure", log=ct.log()
        )
        wait_for(lambda: read(reloads) == "reload\n" * 2, what="second command", log=ct.log())
        print(f"check critical -> file rewritten: {took * 1000:.0f} ms")

        consul.set_external_check(f"{name}-n2", addr, f"{sid}-check", "passing", service_id=sid)
        took = wait_for(
            lambda: read(dest) == _servers(1, 2, 3), timeout=5, what="recovery", log=ct.log()
        )
        wait_for(lambda: read(reloads) == "reload\n" * 3, what="third command", log=ct.log())
        print(f"check passing -> file rewritten: {took * 1000:.0f} ms")

        # Writes that do not change the rendered data run nothing.
        mtime = dest.stat().st_mtime_ns
        consul.set_external_check(
            f"{name}-n1",
            "127.0.1.1",
            f"{name}-1-check",
            "passing",
            service_id=f"{name}-1",
            output="still fine",
        )
        consul.put_kv(f"{unique}/unrelated", "x")
        time.sleep(1.5)
        assert read(reloads) == "reload\n" * 3
        assert dest.stat().st_mtime_ns == mtime
        assert ct.proc.poll() is None
    for node in nodes:
        consul.deregister_external(node)


def test_missing_key_is_never_written(consul, unique, tmp_path):
    src = tmp_path / "t.j2"
    src.write_text(f'a={{{{ key("{unique}/a") }}}}\nb={{{{ key("{unique}/b") }}}}\n')
    dest = tmp_path / "out"
    consul.put_kv(f"{unique}/a", "1")
    with Daemon(["-consul-addr", consul.http_addr, "-template", f"{src}:{dest}"]) as ct:
        time.sleep(1.5)
        assert not dest.exists(), ct.log()
        consul.put_kv(f"{unique}/b", "2")
        wait_for(lambda: read(dest) == "a=1\nb=2\n", what="render once b exists", log=ct.log())
        # Deleting a key the template needs does not blank the file.
        consul.delete_kv(f"{unique}/b")
        # Each key has its own long poll: a change of a made in the same instant could be read
        # before the deletion of b (as in consul-template). Let the deletion arrive first.
        time.sleep(1.0)
        consul.put_kv(f"{unique}/a", "changed")
        time.sleep(1.5)
        assert read(dest) == "a=1\nb=2\n"
        consul.put_kv(f"{unique}/b", "3")
        wait_for(lambda: read(dest) == "a=changed\nb=3\n", what="render again", log=ct.log())


def test_readers_never_see_a_partial_file(consul, unique, tmp_path):
    key = f"{unique}/blob"
    src = tmp_path / "t.j2"
    src.write_text(f'{{{{ key("{key}") }}}}\n')
    dest = tmp_path / "out"

    def value(n: int) -> str:
        return f"BEGIN {n}\n" + ("x" * 199 + "\n") * 1000 + f"END {n}"

    consul.put_kv(key, value(0))
    seen: set[int] = set()
    bad: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            text = read(dest)
            if text is None:
                continue
            head, _, _rest = text.partition("\n")
            last = text.rstrip("\n").rsplit("\n", 1)[-1]
            if not (head.startswith("BEGIN ") and last == "END " + head[6:]):
                bad.append(text[:40] + "..." + text[-40:])
            elif len(text) != len(value(int(head[6:]))) + 1:
                bad.append(f"length {len(text)}")
            else:
                seen.add(int(head[6:]))

    with Daemon(["-consul-addr", consul.http_addr, "-template", f"{src}:{dest}"]) as ct:
        wait_for(lambda: read(dest) is not None, what="first render", log=ct.log())
        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for n in range(1, 31):
                consul.put_kv(key, value(n))
                time.sleep(0.05)
            wait_for(lambda: 30 in seen, what="last version", log=ct.log())
        finally:
            done.set()
            thread.join()
    assert bad == []
    assert len(seen) >= 5  # the reader saw many versions, every one whole


def test_dry_prints_and_writes_nothing(consul, unique, tmp_path):
    consul.put_kv(f"{unique}/greeting", "hello")
    src = tmp_path / "t.j2"
    src.write_text(f'greeting={{{{ key("{unique}/greeting") }}}}\n')
    dest = tmp_path / "out"
    ran = tmp_path / "ran"
    result = run_ctemplate(
        [
            "-consul-addr",
            consul.http_addr,
            "-dry",
            "-once",
            "-template",
            f"{src}:{dest}:touch {ran}",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"> {dest}\ngreeting=hello\n"
    assert not dest.exists()
    assert not ran.exists()


def test_sigterm_stops_and_removes_pid_file(consul, unique, tmp_path):
    consul.put_kv(f"{unique}/k", "v")
    src = tmp_path / "t.j2"
    src.write_text(f'{{{{ key("{unique}/k") }}}}\n')
    dest = tmp_path / "out"
    pid_file = tmp_path / "ct.pid"
    ct = Daemon(
        ["-consul-addr", consul.http_addr, "-pid-file", str(pid_file), "-template", f"{src}:{dest}"]
    )
    try:
        wait_for(lambda: read(dest) == "v\n", what="render", log=ct.log())
        assert pid_file.read_text() == str(ct.pid)
        started = time.monotonic()
        ct.signal(signal.SIGTERM)
        assert ct.wait(10) == 0
        assert time.monotonic() - started < 5  # long polls are cancelled, not waited out
        assert not pid_file.exists()
    finally:
        ct.stop()


def test_sighup_reloads_config_and_template_edits_rerender(consul, unique, tmp_path):
    consul.put_kv(f"{unique}/k", "v1")
    first, second = tmp_path / "first.j2", tmp_path / "second.j2"
    first.write_text(f'first {{{{ key("{unique}/k") }}}}\n')
    second.write_text(f'second {{{{ key("{unique}/k") }}}}\n')
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    config = tmp_path / "ct.hcl"
    config.write_text(
        f'consul {{\n  address = "{consul.http_addr}"\n}}\n'
        f'template {{\n  source = "{first}"\n  destination = "{out1}"\n}}\n'
    )
    with Daemon(["-config", str(config), "-log-level", "info"]) as ct:
        wait_for(lambda: read(out1) == "first v1\n", what="first render", log=ct.log())

        # Editing the template's source re-renders it.
        first.write_text(f'edited {{{{ key("{unique}/k") }}}}\n')
        wait_for(lambda: read(out1) == "edited v1\n", what="re-render on edit", log=ct.log())

        # A syntax error keeps the previous template; the error names file and line.
        first.write_text("ok\n{% for %}\n")
        wait_for(lambda: f"{first}:2: syntax error" in ct.log(), what="error", log=ct.log())
        consul.put_kv(f"{unique}/k", "v2")
        wait_for(lambda: read(out1) == "edited v2\n", what="old template in use", log=ct.log())

        # SIGHUP re-reads the configuration.
        config.write_text(
            f'consul {{\n  address = "{consul.http_addr}"\n}}\n'
            f'template {{\n  source = "{second}"\n  destination = "{out2}"\n}}\n'
        )
        ct.signal(signal.SIGHUP)
        wait_for(lambda: read(out2) == "second v2\n", what="reloaded config", log=ct.log())
        assert ct.proc.poll() is None


def test_quiescence_batches_rapid_changes(consul, unique, tmp_path):
    consul.put_kv(f"{unique}/k", "0")
    src = tmp_path / "t.j2"
    src.write_text(f'{{{{ key("{unique}/k") }}}}\n')
    dest, reloads = tmp_path / "out", tmp_path / "reloads"
    args = [
        "-consul-addr",
        consul.http_addr,
        "-wait",
        "1s:3s",
        "-template",
        f"{src}:{dest}:echo reload >> {reloads}",
    ]
    with Daemon(args) as ct:
        # The first render is immediate; the quiet period applies to later changes.
        took = wait_for(lambda: read(dest) == "0\n", what="first render", log=ct.log())
        assert took < 2.5
        for n in range(1, 6):
            consul.put_kv(f"{unique}/k", str(n))
            time.sleep(0.15)
        wait_for(lambda: read(dest) == "5\n", timeout=6, what="settled", log=ct.log())
        time.sleep(0.5)
        assert read(reloads) == "reload\n" * 2


def test_bad_flag_is_one_error_line(tmp_path):
    result = run_ctemplate(["-wait", "5s:1s", "-template", "a:b"])
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctemplate: error: "), result.stderr
    assert "-wait" in lines[0]
    assert "Traceback" not in result.stderr


def test_check_command_guards_the_destination(consul, unique, tmp_path):
    """A failing or hanging check_command keeps the old file and skips the command."""
    key = f"{unique}/v"
    consul.put_kv(key, "good")
    src = tmp_path / "t.j2"
    src.write_text(f'{{{{ key("{key}") }}}}\n')
    dest, reloads = tmp_path / "out", tmp_path / "reloads"
    # The check sees the staged file: it refuses "bad" and hangs on "slow".
    check = 'grep -q good {{.src}} || { grep -q slow "$CTEMPLATE_STAGED" && sleep 30; exit 1; }'
    config = tmp_path / "ct.hcl"
    config.write_text(
        f'consul {{\n  address = "{consul.http_addr}"\n}}\n'
        "template {\n"
        f'  source = "{src}"\n  destination = "{dest}"\n'
        f'  command = "echo reload >> {reloads}"\n'
        f"  check_command = {json.dumps(check)}\n"
        '  command_timeout = "1s"\n'
        "}\n"
    )
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: read(dest) == "good\n", what="first render", log=ct.log())
        consul.put_kv(key, "bad")
        wait_for(lambda: "exited with status 1; the old file stays" in ct.log(), log=ct.log())
        consul.put_kv(key, "slow")
        started = time.monotonic()
        wait_for(lambda: "ran past its timeout of 1s" in ct.log(), log=ct.log())
        assert time.monotonic() - started < 6
        assert read(dest) == "good\n"
        assert read(reloads) == "reload\n"
        consul.put_kv(key, "good again")
        wait_for(lambda: read(dest) == "good again\n", what="render after checks", log=ct.log())
        wait_for(lambda: read(reloads) == "reload\n" * 2, what="second reload", log=ct.log())
