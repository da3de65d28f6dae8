"""Consul JSON -> records with consul-template's field names."""

from __future__ import annotations

import base64

from ctemplate.queries import HealthServiceQuery, KVListQuery
from ctemplate.records import HealthCheck, KeyPair, aggregated_status


def _entry(node, addr, sid, *, svc_addr="", status="passing", tags=None, check_id="c"):
    return {
        "Node": {"Node": node, "Address": addr, "ID": "id-" + node, "Meta": None},
        "Service": {"ID": sid, "Service": "web", "Address": svc_addr, "Port": 80, "Tags": tags},
        "Checks": [{"CheckID": check_id, "Status": status, "Node": node}],
    }


def test_health_service_fields_and_address_fallback():
    q = HealthServiceQuery(name="web", filters=("any",))
    recs = q.decode(
        [
            _entry("n2", "10.0.0.2", "b", svc_addr="192.168.0.9", tags=["z", "a"]),
            _entry("n1", "10.0.0.1", "a"),
        ]
    )
    assert [(r.Node, r.ID, r.Address, r.NodeAddress) for r in recs] == [
        ("n1", "a", "10.0.0.1", "10.0.0.1"),
        ("n2", "b", "192.168.0.9", "10.0.0.2"),
    ]
    assert recs[1].Tags == ("a", "z")
    assert recs[0].Tags == ()
    assert recs[0].NodeMeta == {}
    assert recs[0].Status == "passing"


def test_client_side_status_filters():
    entries = [
        _entry("n1", "a", "1", status="passing"),
        _entry("n2", "b", "2", status="warning"),
        _entry("n3", "c", "3", status="critical"),
        _entry("n4", "d", "4", check_id="_node_maintenance", status="critical"),
    ]
    by = {
        ("passing", "warning"): ["n1", "n2"],
        ("critical",): ["n3"],
        ("maintenance",): ["n4"],
        ("any",): ["n1", "n2", "n3", "n4"],
    }
    for filters, nodes in by.items():
        recs = HealthServiceQuery(name="web", filters=filters).decode(entries)
        assert [r.Node for r in recs] == nodes, filters


def test_aggregated_status_order():
    def checks(*statuses):
        return tuple(
            HealthCheck("n", f"c{i}", "", s, "", "", "", "", (), "", 0, 0)
            for i, s in enumerate(statuses)
        )

    assert aggregated_status(checks()) == "passing"
    assert aggregated_status(checks("passing", "warning")) == "warning"
    assert aggregated_status(checks("warning", "critical", "passing")) == "critical"


def test_key_pairs_relative_keys_and_values():
    def kv(key, value):
        return {"Key": key, "Value": base64.b64encode(value).decode(), "ModifyIndex": 7}

    pairs = KVListQuery(prefix="app/").decode(
        [kv("app/b", b"2"), kv("app/a", b"1"), kv("app/", b""), kv("app/bad", b"\xff")]
    )
    assert [(p.Path, p.Key, p.Value) for p in pairs] == [
        ("app/", "", ""),
        ("app/a", "a", "1"),
        ("app/b", "b", "2"),
        ("app/bad", "bad", "\ufffd"),
    ]
    assert isinstance(pairs[0], KeyPair)
    assert pairs[1].ModifyIndex == 7
