"""Fault injection on the Consul side, with real processes on loopback.

Each test runs the real ``ctemplate`` command against real Consul agents and breaks something
on purpose: the agent is SIGKILLed and comes back empty, the raft leader of a three-server
cluster dies, a fault proxy answers 500/429, answers slowly, resets connections mid-body or
never answers a blocking query, or the ACL token is wrong. Each docstring names the promise
(README, "Promises") the test checks.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from consul_cluster import ConsulCluster
from ctemplate_proc import Daemon, read, run_ctemplate, wait_for
from fault_proxy import FaultProxy

UPSTREAM = """\
{% for s in service("web") | require(1, "no web backends") %}
server {{ s.Address }}:{{ s.Port }};
{% endfor %}
"""


def _web(agent, *ports: int) -> None:
    for i, port in enumerate(ports, 1):
        agent.register_external(
            f"web-n{i}",
            f"127.0.2.{i}",
            "web",
            service_id=f"web-{i}",
            port=port,
            checks=[
                {
                    "CheckID": f"web-{i}",
                    "Name": "http",
                    "Status": "passing",
                    "ServiceID": f"web-{i}",
                }
            ],
        )


def _config(
    tmp_path: Path, address: str, templates: list[tuple[Path, Path]], extra: str = ""
) -> Path:
    """A config with fast retries; each template appends to its own reload log."""
    blocks = "".join(
        f'template {{\n  source = "{src}"\n  destination = "{dest}"\n'
        f'  command = "echo reload >> {dest}.reloads"\n}}\n'
        for src, dest in templates
    )
    path = tmp_path / "ct.hcl"
    path.write_text(
        f'consul {{\n  address = "{address}"\n'
        '  retry {\n    backoff = "50ms"\n    max_backoff = "500ms"\n  }\n}\n'
        f"{extra}{blocks}"
    )
    return path


def _alive_for(daemon: Daemon, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert daemon.proc.poll() is None, daemon.log()
        time.sleep(0.05)


def test_agent_killed_then_back_empty(consul_agent_factory, tmp_path):
    """Promise: while Consul is down the last good files stay and the daemon keeps running; the
    outage is logged once, not per attempt; when the agent comes back EMPTY (indexes go
    backwards) nothing is blanked (a missing key makes its template wait, ``require`` refuses an
    empty service list), and once the data is back the files are updated without a restart."""
    agent = consul_agent_factory()
    for n in range(40):  # push the KV index well above what the restarted agent will have
        agent.put_kv("app/version", f"v{n}")
    agent.put_kv("app/version", "v1")
    _web(agent, 8001, 8002)
    kv_src, up_src = tmp_path / "kv.j2", tmp_path / "up.j2"
    kv_src.write_text('version={{ key("app/version") }}\n')
    up_src.write_text(UPSTREAM)
    kv_out, up_out = tmp_path / "kv.out", tmp_path / "up.out"
    config = _config(tmp_path, agent.http_addr, [(kv_src, kv_out), (up_src, up_out)])
    env = {"CTEMPLATE_WAITING_WARN": "1s:30s"}
    with Daemon(["-config", str(config)], env=env) as ct:
        wait_for(lambda: read(kv_out) == "version=v1\n", what="kv render", log=ct.log())
        wait_for(
            lambda: read(up_out) == "server 127.0.2.1:8001;\nserver 127.0.2.2:8002;\n",
            what="upstream render",
            log=ct.log(),
        )
        good_kv, good_up = read(kv_out), read(up_out)

        agent.kill()
        _alive_for(ct, 3.0)
        assert (read(kv_out), read(up_out)) == (good_kv, good_up)

        agent.start()  # same ports, empty: no key, no web service, low indexes
        wait_for(
            lambda: "require: no web backends (got 0, need at least 1)" in ct.log(),
            what="require refusing the empty list",
            log=ct.log(),
        )
        wait_for(lambda: "still waiting after" in ct.log(), what="waiting warning", log=ct.log())
        _alive_for(ct, 1.0)
        assert (read(kv_out), read(up_out)) == (good_kv, good_up)

        agent.put_kv("app/version", "v2")
        _web(agent, 9001)
        wait_for(
            lambda: read(kv_out) == "version=v2\n", what="kv after re-population", log=ct.log()
        )
        wait_for(
            lambda: read(up_out) == "server 127.0.2.1:9001;\n",
            what="upstream after re-population",
            log=ct.log(),
        )
        for out in (kv_out, up_out):  # each command ran once more, for the new content
            wait_for(
                lambda out=out: read(Path(f"{out}.reloads")) == "reload\n" * 2,
                what="second reload",
                log=ct.log(),
            )
        assert ct.proc.poll() is None
        log = ct.log()
    print(log)
    assert ct.proc.returncode == 0
    assert log.count("cannot reach Consul") == 1, log
    assert log.count("is reachable again") == 1, log
    assert "index went backwards" in log
    assert f"{kv_out}: still waiting after 1s for: kv.block(app/version)" in log, log


def test_raft_leader_killed(consul_binary, tmp_path):
    """Promise: a leader election does not stop ctemplate. Watching through a follower's HTTP
    API, with stale reads (the default) and with consistent reads (-max-stale 0, forwarded to
    the leader), changes written after the new election are rendered; the daemons never
    exit."""
    with ConsulCluster(consul_binary) as cluster:
        leader = cluster.leader()
        follower, other = cluster.followers()
        follower.put_kv("app/x", "1")
        src = tmp_path / "t.j2"
        src.write_text('x={{ key("app/x") }}\n')
        stale_out, consistent_out = tmp_path / "stale.out", tmp_path / "consistent.out"
        base = [
            "-consul-addr",
            follower.http_addr,
            "-consul-retry-backoff",
            "50ms",
            "-consul-retry-max-backoff",
            "500ms",
        ]
        with (
            Daemon([*base, "-template", f"{src}:{stale_out}"]) as stale,
            Daemon(
                [*base, "-max-stale", "0", "-template", f"{src}:{consistent_out}"]
            ) as consistent,
        ):
            for ct, out in ((stale, stale_out), (consistent, consistent_out)):
                wait_for(lambda out=out: read(out) == "x=1\n", what="first render", log=ct.log())

            leader.kill()
            new_leader = cluster.wait_for_leader(exclude=leader)
            (new_leader if new_leader is not follower else other).put_kv("app/x", "2")
            for ct, out in ((stale, stale_out), (consistent, consistent_out)):
                wait_for(
                    lambda out=out: read(out) == "x=2\n",
                    timeout=20,
                    what="render after the election",
                    log=ct.log(),
                )
            follower.put_kv("app/x", "3")
            for ct, out in ((stale, stale_out), (consistent, consistent_out)):
                wait_for(lambda out=out: read(out) == "x=3\n", what="later change", log=ct.log())
                assert ct.proc.poll() is None, ct.log()


@pytest.mark.parametrize(
    ("fault", "options"),
    [
        ("status", {"count": 6, "status": 500}),
        ("status", {"count": 6, "status": 429}),
        ("reset", {"count": 4}),
        ("slow", {"count": 1, "delay": 1.5}),
    ],
    ids=["500", "429", "reset-mid-body", "slow"],
)
def test_http_faults(consul, unique, tmp_path, fault, options):
    """Promise: HTTP faults between ctemplate and Consul (500s, 429s, connections reset in the
    middle of a body, slow answers) are retried with backoff; the file is never blanked or
    partial, a failure streak is logged once, and the change made during the faults is
    rendered once they stop."""
    key = f"{unique}/x"
    consul.put_kv(key, "before")
    src, out = tmp_path / "t.j2", tmp_path / "t.out"
    src.write_text(f'x={{{{ key("{key}") }}}}\n')
    with FaultProxy(consul.http_addr) as proxy:
        config = _config(tmp_path, proxy.addr, [(src, out)], extra='block_query_wait = "2s"\n')
        with Daemon(["-config", str(config)]) as ct:
            wait_for(lambda: read(out) == "x=before\n", what="first render", log=ct.log())
            proxy.inject(fault, **options)
            consul.put_kv(key, "mid")  # answers the blocking query in flight
            wait_for(lambda: proxy.count(fault) > 0, what="the first fault", log=ct.log())
            consul.put_kv(key, "after")  # made while the faults go on
            seen: set[str | None] = set()
            deadline = time.monotonic() + 20
            while (text := read(out)) != "x=after\n":
                seen.add(text)
                assert time.monotonic() < deadline, ct.log()
                assert ct.proc.poll() is None, ct.log()
                time.sleep(0.01)
            assert seen <= {"x=before\n", "x=mid\n"}
            assert proxy.pending() == 0
            log = ct.log()
    print(log)
    if fault == "reset":  # the connection broke: the agent looked unreachable
        assert log.count("[WARN] (consul)") == 1, log
        assert log.count("is reachable again") == 1, log
    elif fault != "slow":  # the agent answered: the query's failure, logged once per query
        assert log.count("[WARN]") == 1, log
        assert log.count(f"[WARN] (watch) kv.block({key}): GET /v1/kv/{key}: Consul answered") == 1
        assert log.count(f"(watch) kv.block({key}): Consul answers again after") == 1, log
        assert "reachable again" not in log, log
    else:
        assert "[WARN]" not in log, log


def test_blocking_query_that_never_returns(consul, unique, tmp_path):
    """Promise: a blocking query that never comes back (a stuck proxy or agent) is cut by the
    bound on the whole answer (wait + wait/16 + 10 s) and retried; the change made meanwhile is
    rendered."""
    key = f"{unique}/x"
    consul.put_kv(key, "before")
    src, out = tmp_path / "t.j2", tmp_path / "t.out"
    src.write_text(f'x={{{{ key("{key}") }}}}\n')
    with FaultProxy(consul.http_addr) as proxy:
        config = _config(tmp_path, proxy.addr, [(src, out)], extra='block_query_wait = "1s"\n')
        with Daemon(["-config", str(config)]) as ct:
            wait_for(lambda: read(out) == "x=before\n", what="first render", log=ct.log())
            proxy.inject("hang", blocking=True)
            wait_for(lambda: proxy.count("hang") == 1, what="a hung query", log=ct.log())
            started = time.monotonic()
            consul.put_kv(key, "after")
            wait_for(
                lambda: read(out) == "x=after\n",
                timeout=20,
                what="render after the hang",
                log=ct.log(),
            )
            took = time.monotonic() - started
            log = ct.log()
    assert 8 < took < 15, log  # 1s + 1s/16 + 10s read timeout, measured from just after the hang
    assert "no complete answer within 11.1s" in log, log


def test_acl_token_never_logged(consul_agent_factory, tmp_path):
    """Promise: the ACL token never appears in logs or error messages, even at trace level and
    on the 403 path; the error says what to check."""
    agent = consul_agent_factory(
        extra_args=[
            "-hcl",
            'acl { enabled = true default_policy = "allow" tokens { master = "root-token-0000" } }',
        ],
    )
    agent.request(
        "PUT", "/v1/kv/app/x", content=b"1", headers={"X-Consul-Token": "root-token-0000"}
    )
    secret = "3d5c1a8e-dead-beef-0000-5ecre7t0ken1"
    src, out = tmp_path / "t.j2", tmp_path / "t.out"
    src.write_text('x={{ key("app/x") }}\n')
    args = ["-consul-addr", agent.http_addr, "-log-level", "trace", "-template", f"{src}:{out}"]

    result = run_ctemplate([*args, "-once", "-consul-token", secret], timeout=30)
    assert result.returncode == 14
    assert secret not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        "ctemplate: error: GET /v1/kv/app/x: Consul answered 403: ACL not found; "
        "check the ACL token (-consul-token or CONSUL_HTTP_TOKEN) and its policy"
    )

    with Daemon(args, env={"CONSUL_HTTP_TOKEN": secret}) as ct:
        wait_for(lambda: "Consul answered 403" in ct.log(), what="403 logged", log=ct.log())
        _alive_for(ct, 1.0)
        log = ct.log()
    assert secret not in log
    assert log.count("Consul answered 403") == 1, log
    assert not out.exists()


def test_daemon_waits_for_consul_to_appear(consul_agent_factory, tmp_path):
    """Promise: in daemon mode ctemplate never exits because Consul is unreachable: started
    while the agent is down it keeps running, logs the outage once, and renders as soon as the
    agent is there."""
    agent = consul_agent_factory()
    agent.stop()  # keeps its ports: start() brings it back on the same address
    src, out = tmp_path / "t.j2", tmp_path / "t.out"
    src.write_text('x={{ key("app/x") }}\n')
    config = _config(tmp_path, agent.http_addr, [(src, out)])
    with Daemon(["-config", str(config)]) as ct:
        _alive_for(ct, 3.0)
        agent.start()
        agent.put_kv("app/x", "1")
        wait_for(lambda: read(out) == "x=1\n", what="render once Consul is up", log=ct.log())
        log = ct.log()
    assert log.count("cannot reach Consul") == 1, log
    assert log.count("is reachable again") == 1, log


@pytest.mark.parametrize(
    ("flags", "limit"),
    [
        (
            ["-consul-retry-attempts", "3"],
            "gave up after 3 retries, the limit of -consul-retry-attempts",
        ),
        (
            ["-max-unavailable", "1500ms"],
            "gave up after failing for 1.5s, the limit of -max-unavailable",
        ),
        (
            ["-consul-retry=false"],
            "not retried: retries are disabled by -consul-retry=false (consul.retry.enabled)",
        ),
    ],
    ids=["retry-attempts", "max-unavailable", "retry-disabled"],
)
def test_configured_limit_makes_the_outage_fatal(consul_agent_factory, tmp_path, flags, limit):
    """Promise: only a limit the user configured (consul.retry.attempts, max_unavailable,
    consul.retry.enabled = false) makes
    a daemon give up on an unreachable Consul: it exits 14 with one error line naming the
    request, the cause and the limit."""
    agent = consul_agent_factory()
    agent.put_kv("app/x", "1")
    src, out = tmp_path / "t.j2", tmp_path / "t.out"
    src.write_text('x={{ key("app/x") }}\n')
    args = [
        "-consul-addr",
        agent.http_addr,
        "-consul-retry-backoff",
        "100ms",
        "-consul-retry-max-backoff",
        "500ms",
        *flags,
        "-template",
        f"{src}:{out}",
    ]
    with Daemon(args) as ct:
        wait_for(lambda: read(out) == "x=1\n", what="render", log=ct.log())
        agent.kill()
        killed = time.monotonic()
        assert ct.wait(30) == 14, ct.log()
        took = time.monotonic() - killed
        lines = ct.log().strip().splitlines()
    assert lines[-1] == (
        f"ctemplate: error: GET /v1/kv/app/x: cannot reach Consul at http://{agent.http_addr}: "
        "connection refused; is the agent running? (set -consul-addr or "
        f"CONSUL_HTTP_ADDR); {limit}"
    )
    assert read(out) == "x=1\n"
    assert took < 10
