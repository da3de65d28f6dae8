"""First contact (issue 15), against a real Consul agent: what a new user sees for an unreachable
address, a key that never comes, an unknown datacenter, a failing reload command, a KV value that
is not UTF-8, and how lists and maps print."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from consul_harness import free_port
from ctemplate_proc import Daemon, read, run_ctemplate, wait_for

HINT = "is the agent running? (set -consul-addr or CONSUL_HTTP_ADDR)"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def _messages(log: str, level: str) -> list[str]:
    """The messages of one level, without their time stamps."""
    found = []
    for line in log.splitlines():
        match = re.fullmatch(rf"{STAMP} \[{level}\] (.*)", line)
        if match:
            found.append(match.group(1))
    return found


# --- 1. an unreachable Consul with -once ------------------------------------------------------


def test_unreachable_consul_says_at_once_what_is_happening(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    src = tmp_path / "t.j2"
    src.write_text('{{ key("app/x") }}\n')
    args = ["-once", "-consul-addr", address, "-template", f"{src}:{tmp_path / 'out'}"]
    args += ["-consul-retry-attempts", "3", "-consul-retry-backoff", "50ms"]
    result = run_ctemplate(args, timeout=60)
    assert result.returncode == 14, result.stderr
    cause = f"GET /v1/kv/app/x: cannot reach Consul at http://{address}: connection refused; {HINT}"
    warnings = _messages(result.stderr, "WARN")
    assert warnings[0] == (
        f"(consul) {cause}; retrying up to 3 times with backoff (-consul-retry-attempts); "
        "keeping the last good files"
    )
    attempts = [re.sub(r"next in [0-9.]+s$", "next in Ns", w) for w in warnings[1:]]
    assert attempts == [
        f"(consul) http://{address}: still failing (connection refused); attempt {n}/3, next in Ns"
        for n in (1, 2, 3)
    ]
    assert result.stderr.strip().splitlines()[-1] == (
        f"ctemplate: error: {cause}; gave up after 3 retries, the limit of "
        "-consul-retry-attempts (12 by default with -once; 0 = retry forever)"
    )
    assert not (tmp_path / "out").exists()


def test_unreachable_consul_with_default_retries_counts_to_twelve(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    src = tmp_path / "t.j2"
    src.write_text('{{ key("app/x") }}\n')
    with Daemon(["-once", "-consul-addr", address, "-template", f"{src}:{tmp_path / 'out'}"]) as ct:
        wait_for(lambda: "attempt 2/12, next in " in ct.log(), timeout=20, log=ct.log())
        warnings = _messages(ct.log(), "WARN")
    assert warnings[0].endswith(
        "connection refused; " + HINT + "; retrying up to 12 times with backoff "
        "(-consul-retry-attempts); keeping the last good files"
    )
    assert warnings[1].startswith(
        f"(consul) http://{address}: still failing (connection refused); attempt 1/12, next in "
    )


def test_an_address_that_is_not_consul_is_said_at_once(tmp_path: Path) -> None:
    """A wrong -consul-addr where some other web server answers: its 404 for the key is not
    taken as "the key is absent" (which would make -once wait forever)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _listening(port), timeout=10, what="http.server")
        src = tmp_path / "t.j2"
        src.write_text('{{ key("app/x") }}\n')
        out = tmp_path / "out"
        address = f"127.0.0.1:{port}"
        result = run_ctemplate(["-once", "-consul-addr", address, "-template", f"{src}:{out}"])
    finally:
        server.terminate()
        server.wait(10)
    assert result.returncode == 14, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"ctemplate: error: GET /v1/kv/app/x: http://{address} answered 404 without Consul's "
        "headers; is it a Consul agent? check -consul-addr (or CONSUL_HTTP_ADDR, consul.address)"
    )
    assert not out.exists()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_retries_disabled_says_so(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    src = tmp_path / "t.j2"
    src.write_text('{{ key("app/x") }}\n')
    out = tmp_path / "out"
    result = run_ctemplate(
        [
            "-once",
            "-dry",
            "-consul-retry=false",
            "-consul-addr",
            address,
            "-template",
            f"{src}:{out}",
        ]
    )
    assert result.returncode == 14, result.stderr
    cause = f"GET /v1/kv/app/x: cannot reach Consul at http://{address}: connection refused; {HINT}"
    assert _messages(result.stderr, "WARN") == [
        f"(consul) {cause}; not retrying: retries are disabled (-consul-retry=false); "
        "nothing is written (-dry)"
    ]
    assert "retrying with backoff" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"ctemplate: error: {cause}; not retried: retries are disabled by -consul-retry=false "
        "(consul.retry.enabled)"
    )


# --- 2. a key that never comes, with -once and no -once-timeout -------------------------------


def test_once_waiting_for_a_missing_key_says_how_to_end_the_wait(
    consul, unique: str, tmp_path: Path
) -> None:
    src = tmp_path / "t.j2"
    src.write_text(f'{{{{ key("{unique}/absent") }}}}\n')
    out = tmp_path / "out"
    args = ["-once", "-consul-addr", consul.http_addr, "-template", f"{src}:{out}"]
    with Daemon(args, env={"CTEMPLATE_WAITING_WARN": "500ms"}) as ct:
        wait_for(lambda: "still waiting" in ct.log(), timeout=20, log=ct.log())
        (warning,) = _messages(ct.log(), "WARN")
    assert re.sub(r"after \d+s", "after Ns", warning) == (
        f"(runner) {out}: still waiting after Ns for: kv.block({unique}/absent) (not written "
        "until they have data); -once waits until they exist: use keyOrDefault or keyExists "
        "for a key that may be absent, or bound the wait with -once-timeout"
    )
    assert not out.exists()


# --- 3. an unknown datacenter -----------------------------------------------------------------


def test_unknown_datacenter_is_named_with_the_known_ones(consul, tmp_path: Path) -> None:
    src = tmp_path / "t.j2"
    src.write_text('{% for s in service("web@dc9") %}{{ s.Address }}{% endfor %}\n')
    out = tmp_path / "out"
    result = run_ctemplate(["-once", "-consul-addr", consul.http_addr, "-template", f"{src}:{out}"])
    assert result.returncode == 14, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        'ctemplate: error: GET /v1/health/service/web: unknown datacenter "dc9" (Consul: No path '
        "to datacenter); known datacenters: dc1; check the @datacenter part of the query in the "
        "template"
    )
    assert "server error" not in result.stderr and "cannot reach" not in result.stderr


def test_unknown_datacenter_does_not_mark_consul_unreachable(consul, tmp_path: Path) -> None:
    src = tmp_path / "t.j2"
    src.write_text('{% for s in service("web@dc9") %}{{ s.Address }}{% endfor %}\n')
    addr = f"127.0.0.1:{free_port()}"
    args = ["-consul-addr", consul.http_addr, "-status-addr", addr]
    with Daemon([*args, "-template", f"{src}:{tmp_path / 'out'}"]) as ct:
        wait_for(lambda: "unknown datacenter" in ct.log(), timeout=20, log=ct.log())
        doc = _health(addr)[1]
        log = ct.log()
    assert doc["consul"]["reachable"] is True, doc
    assert _messages(log, "ERR") == [
        "(watch) health.service(web@dc9|passing): GET /v1/health/service/web: unknown datacenter "
        '"dc9" (Consul: No path to datacenter); known datacenters: dc1; check the @datacenter '
        "part of the query in the template; keeping the last good files"
    ]
    assert "(consul)" not in log


# --- 7. /health while a reload command fails --------------------------------------------------


def _health(addr: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://{addr}/health", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_is_503_while_the_last_command_failed_and_200_after_one_succeeds(
    consul, unique: str, tmp_path: Path
) -> None:
    consul.put_kv(f"{unique}/x", "1")
    src, out, marker = tmp_path / "t.j2", tmp_path / "out", tmp_path / "fail"
    src.write_text(f'x={{{{ key("{unique}/x") }}}}\n')
    marker.write_text("")
    config = tmp_path / "ct.hcl"
    config.write_text(
        f'consul {{\n  address = "{consul.http_addr}"\n}}\n'
        f'template {{\n  source = "{src}"\n  destination = "{out}"\n'
        f'  command = "if test -e {marker}; then echo reload failed >&2; exit 7; fi"\n}}\n'
    )
    addr = f"127.0.0.1:{free_port()}"
    with Daemon(["-config", str(config), "-status-addr", addr]) as ct:
        wait_for(lambda: "exited with status 7" in ct.log(), log=ct.log())
        code, doc = _health(addr)
        assert (code, doc["status"]) == (503, "degraded"), doc
        (template,) = doc["templates"]
        assert template["state"] == "degraded"
        assert template["error"] is None
        assert re.fullmatch(
            rf"{re.escape(str(out))}: command 'if test -e {re.escape(str(marker))}; then echo "
            r"reload failed >&2; exit 7; fi' exited with status 7: reload failed "
            r"\(at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ; degraded until a command succeeds\)",
            template["command_error"],
        ), template
        assert read(out) == "x=1\n"

        marker.unlink()
        consul.put_kv(f"{unique}/x", "2")
        wait_for(lambda: _health(addr)[0] == 200, what="health 200", log=ct.log())
        code, doc = _health(addr)
        assert doc["status"] == "ok"
        assert doc["templates"][0]["state"] == "rendered"
        assert doc["templates"][0]["command_error"] is None
        assert f"(runner) {out}: command succeeded again" in ct.log()
    assert read(out) == "x=2\n"


# --- 8. a KV value that is not UTF-8 ----------------------------------------------------------


def test_non_utf8_value_is_reported_once_per_key_without_the_value(
    consul, unique: str, tmp_path: Path
) -> None:
    consul.put_kv(f"{unique}/bin", b"s3cret\xff\xfe")
    consul.put_kv(f"{unique}/text", "plain")
    src = tmp_path / "t.j2"
    src.write_text(
        f'one={{{{ key("{unique}/bin") }}}}\n'
        f'{{% for p in tree("{unique}") %}}{{{{ p.Key }}}}={{{{ p.Value }}}}\n{{% endfor %}}'
    )
    out = tmp_path / "out"
    result = run_ctemplate(["-once", "-consul-addr", consul.http_addr, "-template", f"{src}:{out}"])
    assert result.returncode == 0, result.stderr
    assert read(out) == "one=s3cret\ufffd\ufffd\nbin=s3cret\ufffd\ufffd\ntext=plain\n"
    assert _messages(result.stderr, "WARN") == [
        f"(consul) KV key {unique}/bin: value is not UTF-8 text (bad byte at offset 6); its "
        "invalid bytes render as U+FFFD; store the value as UTF-8 text"
    ]
    assert "s3cret" not in result.stderr


# --- 10. lists print as lists ----------------------------------------------------------------


def test_every_list_prints_as_a_list(consul, unique: str, tmp_path: Path) -> None:
    consul.put_kv(f"{unique}/cfg", '{"b": {"y": 1, "x": 2}, "a": [3, 1]}')
    src = tmp_path / "t.j2"
    src.write_text(
        'dcs={{ datacenters() }}\nsplit={{ "p,q" | split(",") }}\n'
        f'cfg={{{{ key("{unique}/cfg") | parseJSON }}}}\n'
        f'chain=[{{{{ (key("{unique}/cfg") | parseJSON).missing.port }}}}]\n'
    )
    out = tmp_path / "out"
    result = run_ctemplate(["-once", "-consul-addr", consul.http_addr, "-template", f"{src}:{out}"])
    assert result.returncode == 0, result.stderr
    assert read(out) == (
        "dcs=['dc1']\nsplit=['p', 'q']\ncfg={'a': [3, 1], 'b': {'x': 2, 'y': 1}}\nchain=[]\n"
    )


# --- 11. the demo -----------------------------------------------------------------------------


def test_demo_runs_and_says_what_it_waits_for(consul_binary: str) -> None:
    """contrib/demo.py end to end (what `bash scripts/demo` runs once .venv exists): it says
    what the first render waits for, and passes."""
    demo = Path(__file__).resolve().parents[2] / "contrib" / "demo.py"
    result = subprocess.run(
        [sys.executable, str(demo), "--requests", "6"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "CTEMPLATE_CONSUL": consul_binary},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "    waiting for ctemplate: it starts Python, reads Consul, runs check_command "
        "(nginx -t on a staged copy) and writes the file\n"
    ) in result.stdout
    assert "demo: OK" in result.stdout
