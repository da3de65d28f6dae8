"""Consul JSON -> records with consul-template's field names."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from ctemplate.queries import (
    CatalogNodeQuery,
    CatalogNodesQuery,
    ConnectCALeafQuery,
    ConnectCARootsQuery,
    HealthConnectQuery,
    HealthServiceQuery,
    KVListQuery,
)
from ctemplate.records import (
    CARoot,
    CatalogNode,
    CatalogNodeService,
    HealthCheck,
    KeyPair,
    LeafCert,
    Node,
    aggregated_status,
)


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


def test_nodes_sorted_by_name_then_address_unless_near():
    raw = [
        {"Node": "b", "Address": "10.0.0.2", "Meta": {"rack": "r1"}, "TaggedAddresses": None},
        {"Node": "a", "Address": "10.0.0.9", "Datacenter": "dc1", "ID": "x"},
        {"Node": "a", "Address": "10.0.0.1"},
    ]
    nodes = CatalogNodesQuery().decode(raw)
    assert [(n.Node, n.Address) for n in nodes] == [
        ("a", "10.0.0.1"),
        ("a", "10.0.0.9"),
        ("b", "10.0.0.2"),
    ]
    assert nodes[1] == Node("x", "a", "10.0.0.9", "dc1", {}, {})
    assert nodes[2].Meta == {"rack": "r1"} and nodes[2].TaggedAddresses == {}
    near = CatalogNodesQuery(near="_agent").decode(raw)
    assert [n.Node for n in near] == ["b", "a", "a"]


def test_catalog_node_services_sorted_by_name_then_id():
    data = {
        "Node": {"Node": "n1", "Address": "10.0.0.1"},
        "Services": {
            "web-2": {"ID": "web-2", "Service": "web", "Tags": ["z", "a"], "Port": 81},
            "db": {"ID": "db", "Service": "db", "Address": "10.9.9.9", "Meta": {"v": "1"}},
            "web-1": {"ID": "web-1", "Service": "web", "EnableTagOverride": True},
        },
    }
    node = CatalogNodeQuery(name="n1").decode(data)
    assert isinstance(node, CatalogNode)
    assert node.Node.Node == "n1" and node.Node.Address == "10.0.0.1"
    assert [(s.Service, s.ID) for s in node.Services] == [
        ("db", "db"),
        ("web", "web-1"),
        ("web", "web-2"),
    ]
    assert node.Services[0] == CatalogNodeService("db", "db", (), {"v": "1"}, 0, "10.9.9.9", False)
    assert node.Services[2].Tags == ("a", "z") and node.Services[1].EnableTagOverride
    assert CatalogNodeQuery(name="nosuch").decode(None) is None


def test_connect_ca_records():
    roots = ConnectCARootsQuery().decode(
        {
            "ActiveRootID": "r1",
            "Roots": [
                {
                    "ID": "r1",
                    "Name": "Consul CA",
                    "RootCert": "PEM",
                    "Active": True,
                    "ModifyIndex": 9,
                }
            ],
        }
    )
    assert roots == (CARoot("r1", "Consul CA", "PEM", True, 0, 9),)
    leaf = ConnectCALeafQuery(service="web").decode(
        {
            "SerialNumber": "08",
            "CertPEM": "C",
            "PrivateKeyPEM": "K",
            "Service": "web",
            "ServiceURI": "spiffe://x/svc/web",
            "ValidAfter": "2026-11-24T20:09:27Z",
            "ValidBefore": "2026-11-27T20:09:27.123456789Z",
            "CreateIndex": 13,
            "ModifyIndex": 13,
        }
    )
    assert isinstance(leaf, LeafCert)
    assert leaf.ValidAfter == datetime(2026, 11, 24, 20, 9, 27, tzinfo=UTC)
    assert leaf.ValidBefore == datetime(2026, 11, 27, 20, 9, 27, 123456, tzinfo=UTC)
    assert (leaf.Service, leaf.CertPEM, leaf.PrivateKeyPEM) == ("web", "C", "K")


def test_connect_instances_decode_like_service_instances():
    entry = {
        "Node": {"Node": "n1", "Address": "10.0.0.1"},
        "Service": {"ID": "web", "Service": "web", "Port": 80},
        "Checks": [],
    }
    assert HealthConnectQuery(name="web").decode([entry]) == HealthServiceQuery(name="web").decode(
        [entry]
    )
