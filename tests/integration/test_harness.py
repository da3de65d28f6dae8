"""Tests of the Consul test harness itself, against a real agent."""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
import pytest
from consul_harness import ConsulAgent, free_port, wait_until


def test_agent_is_ready_and_on_loopback(consul: ConsulAgent) -> None:
    assert consul.running
    assert consul.http_addr.startswith("127.0.0.1:")
    assert consul.url == f"http://{consul.http_addr}"
    assert len(set(consul.ports.values())) == len(consul.ports)
    leader = httpx.get(f"{consul.url}/v1/status/leader").json()
    assert leader.startswith("127.0.0.1:")
    node = httpx.get(f"{consul.url}/v1/catalog/node/{consul.node_name}").json()
    assert node["Node"]["Node"] == consul.node_name
    assert node["Node"]["Address"] == "127.0.0.1"
    assert consul.log_path.is_file()


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_kv_round_trip(consul: ConsulAgent, unique: str) -> None:
    key = f"{unique}/app/config"
    assert consul.get_kv_raw(key) is None
    consul.put_kv(key, "hello wörld")
    assert consul.get_kv_raw(key) == "hello wörld".encode()
    consul.put_kv(key, b"\x00\xffbinary")
    assert consul.get_kv_raw(key) == b"\x00\xffbinary"
    # The value is also visible through the ordinary (base64) API.
    entry = httpx.get(f"{consul.url}/v1/kv/{key}").json()[0]
    assert base64.b64decode(entry["Value"]) == b"\x00\xffbinary"

    consul.put_kv(f"{unique}/app/other", "x", flags=42)
    keys = httpx.get(f"{consul.url}/v1/kv/{unique}/", params={"keys": ""}).json()
    assert keys == [f"{unique}/app/config", f"{unique}/app/other"]
    consul.delete_kv(key)
    assert consul.get_kv_raw(key) is None
    consul.delete_kv(unique, recurse=True)
    assert consul.get_kv_raw(f"{unique}/app/other") is None


def test_txn(consul: ConsulAgent, unique: str) -> None:
    ops = [
        {"KV": {"Verb": "set", "Key": f"{unique}/a", "Value": base64.b64encode(b"1").decode()}},
        {"KV": {"Verb": "set", "Key": f"{unique}/b", "Value": base64.b64encode(b"2").decode()}},
    ]
    result = consul.txn(ops)
    assert len(result["Results"]) == 2
    assert consul.get_kv_raw(f"{unique}/b") == b"2"
    with pytest.raises(RuntimeError, match="409"):
        consul.txn([{"KV": {"Verb": "check-index", "Key": f"{unique}/a", "Index": 1}}])


def test_service_with_ttl_check(consul: ConsulAgent, unique: str) -> None:
    name = f"web-{unique}"
    check_id = f"{name}-ttl"
    sid = consul.register_service(
        name,
        port=8080,
        tags=("v1", "primary"),
        meta={"version": "1"},
        check={"CheckID": check_id, "Name": "web ttl", "TTL": "60s"},
    )
    assert sid == name

    def status() -> str:
        entries = consul.health_service(name)
        assert len(entries) == 1
        svc_checks = [c for c in entries[0]["Checks"] if c["CheckID"] == check_id]
        return str(svc_checks[0]["Status"])

    # TTL checks start critical, and every status we set is visible via /v1/health.
    assert status() == "critical"
    assert consul.health_service(name, passing=True) == []
    consul.ttl_pass(check_id, note="ok")
    assert status() == "passing"
    (entry,) = consul.health_service(name, passing=True)
    assert entry["Service"]["Port"] == 8080
    assert entry["Service"]["Tags"] == ["v1", "primary"]
    assert entry["Service"]["Meta"] == {"version": "1"}
    assert entry["Node"]["Node"] == consul.node_name
    consul.ttl_warn(check_id)
    assert status() == "warning"
    consul.ttl_fail(check_id)
    assert status() == "critical"

    consul.deregister_service(sid)
    assert consul.health_service(name) == []


def test_external_nodes(consul: ConsulAgent, unique: str) -> None:
    service = f"application-{unique}"
    for i in (1, 2, 3):
        consul.register_external(
            f"back0{i}-{unique}",
            f"10.0.0.1{i}",
            service,
            port=80,
            tags=("app",),
            checks=[
                {
                    "CheckID": f"{service}-health",
                    "Name": "application health",
                    "Status": "passing",
                    "ServiceID": service,
                }
            ],
        )
    entries = consul.health_service(service)
    assert sorted(e["Node"]["Address"] for e in entries) == ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
    assert all(e["Service"]["Port"] == 80 for e in entries)

    consul.set_external_check(
        f"back02-{unique}", "10.0.0.12", f"{service}-health", "critical", service_id=service
    )
    passing = consul.health_service(service, passing=True)
    assert sorted(e["Node"]["Node"] for e in passing) == [f"back01-{unique}", f"back03-{unique}"]
    # Updating the check did not drop the service from the node.
    assert len(consul.health_service(service)) == 3

    nodes = httpx.get(f"{consul.url}/v1/catalog/nodes").json()
    assert f"back01-{unique}" in {n["Node"] for n in nodes}

    for i in (1, 2, 3):
        consul.deregister_external(f"back0{i}-{unique}")
    assert consul.health_service(service) == []


def test_kill_and_restart_comes_back_empty(
    consul_agent_factory: Callable[..., ConsulAgent], unique: str
) -> None:
    agent = consul_agent_factory()
    ports = dict(agent.ports)
    agent.put_kv(f"{unique}/k", "v")
    agent.register_service(f"svc-{unique}")
    old_pid = agent.pid

    agent.kill()
    assert not agent.running
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{agent.url}/v1/status/leader")

    agent.restart()
    assert agent.running
    assert agent.pid != old_pid
    assert agent.ports == ports
    assert httpx.get(f"{agent.url}/v1/status/leader").json()
    assert agent.get_kv_raw(f"{unique}/k") is None
    assert agent.health_service(f"svc-{unique}") == []
    services = httpx.get(f"{agent.url}/v1/catalog/services").json()
    assert services == {"consul": []}

    # A graceful stop + restart works as well, and the helpers keep working.
    agent.restart()
    agent.put_kv(f"{unique}/k", "again")
    assert wait_until(lambda: agent.get_kv_raw(f"{unique}/k")) == b"again"
    agent.stop()
    assert not agent.running
