"""Nothing silently stale: faults after which a file would stop following Consul without anyone
being told, with real processes on loopback.

A query that keeps failing while the others succeed, an answer that trickles in a byte at a
time, a write that failed once, a destination deleted by someone, a template replaced the
Kubernetes ConfigMap way. Each docstring names the promise (README, "Promises") it checks.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from consul_harness import free_port
from ctemplate_proc import Daemon, read, run_ctemplate, wait_for
from fault_proxy import FaultProxy


def _health(addr: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://{addr}/health", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _config(
    tmp_path: Path, address: str, templates: list[tuple[Path, Path]], extra: str = ""
) -> Path:
    """A config with fast retries and a status endpoint (``status_address``)."""
    blocks = "".join(
        f'template {{\n  source = "{src}"\n  destination = "{dest}"\n}}\n'
        for src, dest in templates
    )
    path = tmp_path / "ct.hcl"
    path.write_text(
        f'consul {{\n  address = "{address}"\n'
        '  retry {\n    backoff = "50ms"\n    max_backoff = "300ms"\n  }\n}\n'
        f'status_address = "127.0.0.1:{free_port()}"\n'
        f"{extra}{blocks}"
    )
    return path


def _status_addr(config: Path) -> str:
    for line in config.read_text().splitlines():
        if line.startswith("status_address"):
            return line.split('"')[1]
    raise AssertionError("no status_address")


def test_one_failing_query_is_named_and_logged_once(consul, unique, tmp_path):
    """Promise: a query that keeps failing while the others succeed (a datacenter that is gone)
    makes /health 503 naming the query and its error; it is logged once, and Consul is not
    reported unreachable and reachable again over and over."""
    consul.put_kv(f"{unique}/x", "1")
    good, bad = tmp_path / "good.j2", tmp_path / "bad.j2"
    good.write_text(f'x={{{{ key("{unique}/x") }}}}\n')
    bad.write_text('{% for s in service("web@dc9") %}{{ s.Address }}\n{% endfor %}')
    good_out, bad_out = tmp_path / "good.out", tmp_path / "bad.out"
    config = _config(tmp_path, consul.http_addr, [(good, good_out), (bad, bad_out)])
    addr = _status_addr(config)
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: read(good_out) == "x=1\n", what="good render", log=ct.log())
        wait_for(
            lambda: _health(addr)[1]["consul"]["failing_queries"],
            what="the failing query on /health",
            log=ct.log(),
        )
        # While dc9 keeps failing (retried every 300 ms), the other query keeps working.
        for n in range(2, 6):
            consul.put_kv(f"{unique}/x", str(n))
            wait_for(lambda n=n: read(good_out) == f"x={n}\n", what="good render", log=ct.log())
            time.sleep(0.5)
        code, doc = _health(addr)
        log = ct.log()
    assert code == 503, doc
    assert doc["status"] == "degraded"
    assert doc["consul"]["reachable"] is True, doc
    (failing,) = doc["consul"]["failing_queries"]
    assert failing["query"] == "health.service(web@dc9|passing)", doc
    assert failing["error"].startswith(
        'GET /v1/health/service/web: unknown datacenter "dc9" (Consul: No path to datacenter); '
        "known datacenters: dc1;"
    ), doc
    assert failing["failures"] >= 1, doc
    lines = [x for x in log.splitlines() if "health.service(web@dc9|passing)" in x]
    assert len(lines) == 1, log  # once, not once per retry
    assert "(watch) health.service(web@dc9|passing): GET /v1/health/service/web" in lines[0]
    assert "reachable again" not in log, log
    assert "(consul)" not in log, log
    assert not bad_out.exists()


def test_once_timeout_names_the_failing_query(consul, unique, tmp_path):
    """Promise: -once -once-timeout names a query that keeps failing (with its error) while
    the agent answers the others, and does not call Consul unreachable."""
    consul.put_kv(f"{unique}/x", "1")
    src, out = tmp_path / "t.j2", tmp_path / "t.out"
    src.write_text(f'x={{{{ key("{unique}/x") }}}}\n{{{{ service("web-{unique}") | length }}}}\n')
    with FaultProxy(consul.http_addr) as proxy:
        # Every read of that one service fails with a 500; the key's reads go through.
        proxy.inject("status", count=10_000, only=f"/v1/health/service/web-{unique}")
        args = ["-consul-addr", proxy.addr, "-template", f"{src}:{out}"]
        result = run_ctemplate([*args, "-once", "-once-timeout", "3s"], timeout=30)
    assert result.returncode == 14, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    query = f"health.service(web-{unique}|passing)"
    assert last.startswith(
        f"ctemplate: error: -once-timeout: gave up after 3s; still waiting for {out} ({query}); "
        f"failing: {query}: GET /v1/health/service/web-{unique}: Consul answered 500"
    ), last
    assert "unreachable" not in last, last
    assert not out.exists()


def test_once_names_the_failing_query(consul, unique, tmp_path):
    """Promise: -once names a query that keeps failing (with its error) while the agent answers
    the others, and does not call Consul unreachable. A datacenter Consul does not know is not
    worth waiting for: -once ends at once (before -once-timeout) with that query's error."""
    consul.put_kv(f"{unique}/x", "1")
    src, out = tmp_path / "t.j2", tmp_path / "t.out"
    src.write_text(f'x={{{{ key("{unique}/x") }}}}\n{{{{ service("web@dc9") | length }}}}\n')
    args = ["-consul-addr", consul.http_addr, "-template", f"{src}:{out}"]
    result = run_ctemplate([*args, "-once", "-once-timeout", "30s"], timeout=60)
    assert result.returncode == 14, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        'ctemplate: error: GET /v1/health/service/web: unknown datacenter "dc9" '
        "(Consul: No path to datacenter); known datacenters: dc1;"
    ), last
    assert "unreachable" not in last, last
    assert "-once-timeout" not in result.stderr, result.stderr
    assert not out.exists()


def test_an_answer_trickling_in_is_cut_and_reported(consul, unique, tmp_path):
    """Promise: an answer that trickles in one byte every 2 s (each read well within the read
    timeout) is cut when the whole answer took longer than wait + wait/16 + 10 s, reported
    once naming the query, and retried: the change made meanwhile is rendered."""
    key = f"{unique}/x"
    consul.put_kv(key, "before")
    src, out = tmp_path / "t.j2", tmp_path / "t.out"
    src.write_text(f'x={{{{ key("{key}") }}}}\n')
    with FaultProxy(consul.http_addr) as proxy:
        config = _config(tmp_path, proxy.addr, [(src, out)], extra='block_query_wait = "1s"\n')
        with Daemon(["-config", str(config)]) as ct:
            wait_for(lambda: read(out) == "x=before\n", what="first render", log=ct.log())
            proxy.inject("trickle", blocking=True, delay=2.0)
            wait_for(lambda: proxy.count("trickle") == 1, what="a trickling answer", log=ct.log())
            started = time.monotonic()
            consul.put_kv(key, "after")
            wait_for(
                lambda: read(out) == "x=after\n",
                timeout=30,
                what="render after the trickle",
                log=ct.log(),
            )
            took = time.monotonic() - started
            log = ct.log()
    assert 8 < took < 20, log  # 1s + 1s/16 + 10s for the whole answer
    assert log.count("[WARN]") == 1, log
    assert (
        f"[WARN] (watch) kv.block({key}): GET /v1/kv/{key}: no complete answer within 11.1s" in log
    ), log
    assert f"(watch) kv.block({key}): Consul answers again after" in log, log


def test_a_failed_write_is_retried_and_a_deleted_file_written_again(consul, unique, tmp_path):
    """Promise: a write that failed (here a directory in the way) makes /health 503 naming the
    file, is logged once, and is tried again on a backoff: once the directory is gone the file
    appears without any change in Consul. A destination deleted by someone is written again."""
    consul.put_kv(f"{unique}/x", "1")
    src, out = tmp_path / "t.j2", tmp_path / "t.out"
    src.write_text(f'x={{{{ key("{unique}/x") }}}}\n')
    out.mkdir()
    (out / "something").write_text("in the way\n")
    config = _config(tmp_path, consul.http_addr, [(src, out)])
    addr = _status_addr(config)
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: "is a directory" in ct.log(), what="the failed write", log=ct.log())
        code, doc = _health(addr)
        assert code == 503, doc
        (state,) = doc["templates"]
        assert state["destination"] == str(out)
        assert state["state"] == "error", doc
        assert state["error"] == f"{out}: is a directory; point destination at a file", doc
        time.sleep(2.0)  # a few retries: the error is logged once, not per attempt
        (out / "something").unlink()
        out.rmdir()
        wait_for(lambda: read(out) == "x=1\n", timeout=20, what="the retried write", log=ct.log())
        wait_for(lambda: _health(addr)[0] == 200, what="health back to 200", log=ct.log())

        out.unlink()  # someone deletes the file
        wait_for(lambda: read(out) == "x=1\n", timeout=10, what="the file again", log=ct.log())
        log = ct.log()
    assert log.count("is a directory") == 1, log
    assert f"(runner) {out}: rendered again after an error" in log, log
    assert f"[WARN] (runner) {out}: deleted since it was written; writing it again" in log, log


def _configmap_swap(root: Path, version: int, text: str) -> None:
    """Publish ``text`` as ``t.j2`` the way the kubelet updates a mounted ConfigMap: a new
    timestamped directory, a ``..data_tmp`` link to it renamed atomically over ``..data``, the
    old directory removed."""
    new = root / f"..2026_11_27_16_00_0{version}.{version:06d}"
    new.mkdir()
    (new / "t.j2").write_text(text)
    old = (root / "..data").resolve() if (root / "..data").is_symlink() else None
    tmp = root / "..data_tmp"
    tmp.symlink_to(new.name)
    tmp.rename(root / "..data")
    if old is not None:
        (old / "t.j2").unlink()
        old.rmdir()


def test_a_template_replaced_the_configmap_way_is_picked_up(consul, unique, tmp_path):
    """Promise: a template whose source is replaced the way Kubernetes updates a ConfigMap
    (``t.j2 -> ..data/t.j2``, the ``..data`` link swapped to a new directory) is loaded
    again and rendered, at every swap."""
    consul.put_kv(f"{unique}/x", "1")
    root = tmp_path / "configmap"
    root.mkdir()
    _configmap_swap(root, 1, f'v1 x={{{{ key("{unique}/x") }}}}\n')
    (root / "t.j2").symlink_to("..data/t.j2")
    out = tmp_path / "t.out"
    config = _config(tmp_path, consul.http_addr, [(root / "t.j2", out)])
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: read(out) == "v1 x=1\n", what="first render", log=ct.log())
        time.sleep(0.5)  # the watch is up
        _configmap_swap(root, 2, f'v2 x={{{{ key("{unique}/x") }}}}\n')
        wait_for(lambda: read(out) == "v2 x=1\n", what="the first swap", log=ct.log())
        _configmap_swap(root, 3, f'v3 x={{{{ key("{unique}/x") }}}}\n')
        wait_for(lambda: read(out) == "v3 x=1\n", what="the second swap", log=ct.log())
        log = ct.log()
    assert log.count(f"(runner) {root / 't.j2'}: template changed, rendering again") == 2, log


def test_a_template_whose_directory_is_removed_and_made_again_is_reloaded(consul, unique, tmp_path):
    """Promise: template sources are looked at every second, whatever happened to their
    directory: one removed (a redeploy) keeps the last good template in use, with one error
    naming the file, and the file made again in a new directory of the same name is loaded and
    rendered."""
    consul.put_kv(f"{unique}/x", "1")
    folder = tmp_path / "templates"
    folder.mkdir()
    src = folder / "t.j2"
    src.write_text(f'a x={{{{ key("{unique}/x") }}}}\n')
    out = tmp_path / "t.out"
    config = _config(tmp_path, consul.http_addr, [(src, out)])
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: read(out) == "a x=1\n", what="first render", log=ct.log())
        src.unlink()
        folder.rmdir()
        wait_for(
            lambda: "still using the previous version of" in ct.log(),
            what="the removal seen",
            log=ct.log(),
        )
        consul.put_kv(f"{unique}/x", "2")
        wait_for(lambda: read(out) == "a x=2\n", what="the loaded template in use", log=ct.log())
        folder.mkdir()
        src.write_text(f'b x={{{{ key("{unique}/x") }}}}\n')
        wait_for(lambda: read(out) == "b x=2\n", what="the template made again", log=ct.log())
        log = ct.log()
    assert log.count(f"(runner) {src}: template changed, rendering again") == 1, log
    errors = [line for line in log.splitlines() if "still using the previous version" in line]
    assert len(errors) == 1, log
    assert str(src) in errors[0], log
