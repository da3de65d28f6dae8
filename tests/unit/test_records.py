"""Consul JSON -> records with consul-template's field names."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from ctemplate.consul.queries import (
    CatalogNodeQuery,
    CatalogNodesQuery,
    ConnectCALeafQuery,
    ConnectCARootsQuery,
    HealthConnectQuery,
    HealthServiceQuery,
    KVListQuery,
)
from ctemplate.consul.records import (
    CARoot,
    CatalogNode,
    CatalogNodeService,
    HealthCheck,
    KeyPair,
    LeafCert,
    Node,
    aggregated_status,
)
from ctemplate.consul.watch import Watcher, WatchSettings


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


# --- reuse of unchanged records between answers (HealthServiceDecoder) -----------------------


def _consul_entry(node: str, addr: str, sid: str, port: int, index: int) -> dict:
    """One ``/v1/health/service`` entry as Consul sends it (Consul 1.8 fields)."""
    return {
        "Node": {
            "ID": "",
            "Node": node,
            "Address": addr,
            "Datacenter": "dc1",
            "TaggedAddresses": {"lan": addr},
            "Meta": None,
            "CreateIndex": index,
            "ModifyIndex": index,
        },
        "Service": {
            "ID": sid,
            "Service": "web",
            "Tags": ["v1"],
            "Address": "",
            "Meta": {"zone": "a"},
            "Port": port,
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": False,
            "Proxy": {"MeshGateway": {}, "Expose": {}},
            "Connect": {},
            "CreateIndex": index,
            "ModifyIndex": index,
        },
        "Checks": [
            {
                "Node": node,
                "CheckID": f"{sid}-check",
                "Name": "http",
                "Status": "passing",
                "Notes": "",
                "Output": "ok",
                "ServiceID": sid,
                "ServiceName": "web",
                "ServiceTags": ["v1"],
                "Type": "http",
                "Definition": {},
                "CreateIndex": index,
                "ModifyIndex": index,
            }
        ],
    }


def _answer() -> list[dict]:
    """Six instances on three nodes, in no particular order."""
    entries = [
        _consul_entry(f"n{i % 3}", f"10.0.0.{i % 3}", f"web-{i}", 8000 + i, 10 + i)
        for i in (4, 1, 5, 0, 3, 2)
    ]
    return json.loads(json.dumps(entries))


def _find(entries: list[dict], sid: str) -> dict:
    return next(e for e in entries if e["Service"]["ID"] == sid)


def _check_critical(entries: list[dict]) -> set[str]:
    check = _find(entries, "web-1")["Checks"][0]
    check.update(Status="critical", Output="connection refused", ModifyIndex=100)
    return {"web-1"}


def _check_output(entries: list[dict]) -> set[str]:
    _find(entries, "web-2")["Checks"][0].update(Output="ok (12 ms)", ModifyIndex=100)
    return {"web-2"}


def _node_address(entries: list[dict]) -> set[str]:
    # Every instance on n1 gets the node's new address; only the node's ModifyIndex moves.
    for e in entries:
        if e["Node"]["Node"] == "n1":
            e["Node"].update(Address="10.9.9.9", TaggedAddresses={"lan": "10.9.9.9"})
            e["Node"]["ModifyIndex"] = 100
    return {"web-1", "web-4"}


def _node_meta(entries: list[dict]) -> set[str]:
    for e in entries:
        if e["Node"]["Node"] == "n2":
            e["Node"].update(Meta={"rack": "r2"}, ModifyIndex=100)
    return {"web-2", "web-5"}


def _node_check(entries: list[dict]) -> set[str]:
    # A node check (serfHealth) concerns every service on the node.
    for e in entries:
        if e["Node"]["Node"] == "n0":
            e["Checks"].append(
                {"Node": "n0", "CheckID": "serfHealth", "Status": "critical", "ModifyIndex": 100}
            )
    return {"web-0", "web-3"}


def _service_tag(entries: list[dict]) -> set[str]:
    e = _find(entries, "web-3")
    e["Service"].update(Tags=["v2", "canary"], ModifyIndex=100)
    e["Checks"][0]["ServiceTags"] = ["v2", "canary"]
    return {"web-3"}


def _service_port(entries: list[dict]) -> set[str]:
    _find(entries, "web-5")["Service"].update(Port=9999, ModifyIndex=100)
    return {"web-5"}


def _removed(entries: list[dict]) -> set[str]:
    entries.remove(_find(entries, "web-4"))
    return set()


def _added(entries: list[dict]) -> set[str]:
    entries.insert(2, _consul_entry("n1", "10.0.0.1", "web-6", 8006, 100))
    return {"web-6"}


def _same_indexes(entries: list[dict]) -> set[str]:
    # An agent wiped and seeded again can give a changed entry the indexes it had before.
    _find(entries, "web-0")["Service"]["Port"] = 7000
    return {"web-0"}


def _reordered(entries: list[dict]) -> set[str]:
    entries.reverse()
    return set()


CHANGES = [
    _check_critical,
    _check_output,
    _node_address,
    _node_meta,
    _node_check,
    _service_tag,
    _service_port,
    _removed,
    _added,
    _same_indexes,
    _reordered,
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize(
    "query",
    [
        HealthServiceQuery(name="web", filters=("any",)),
        HealthServiceQuery(name="web"),  # passing only: a failing check drops the instance
        HealthServiceQuery(name="web", near="_agent", filters=("any",)),  # Consul's order
        HealthConnectQuery(name="web", filters=("any",)),
    ],
    ids=str,
)
def test_decoder_reuses_unchanged_records_and_equals_a_fresh_decode(query, change):
    decode = query.decoder()
    before = _answer()
    first = decode(before)
    assert first == query.decode(before)
    after = _answer()  # a new answer: new JSON, as each blocking query returns
    changed = change(after)
    second = decode(after)
    fresh = query.decode(after)
    assert second == fresh
    assert [repr(r) for r in second] == [repr(r) for r in fresh]  # field by field, in order
    old = {r.ID: r for r in first}
    for record in second:
        if record.ID in changed:
            assert record is not old.get(record.ID)
        else:
            assert record is old[record.ID], f"{record.ID} was built again"
    # The next answer is compared with this one, not with the first.
    third = decode(json.loads(json.dumps(after)))
    assert third == fresh
    assert all(a is b for a, b in zip(third, second, strict=True))


def test_decoder_keeps_the_previous_answer_when_an_answer_cannot_be_decoded():
    query = HealthServiceQuery(name="web", filters=("any",))
    decode = query.decoder()
    first = decode(_answer())
    bad = _answer()
    bad.insert(3, "not an entry")
    with pytest.raises(AttributeError):
        decode(bad)
    again = decode(_answer())
    assert all(a is b for a, b in zip(again, first, strict=True))
    assert decode(None) == () and decode([]) == ()


async def test_watcher_decodes_each_watched_query_with_its_own_decoder():
    class SilentClient:  # long polls that never answer: the test feeds decode() itself
        async def get(self, *_args: Any, **_kwargs: Any) -> Any:
            await asyncio.Event().wait()

    watcher = Watcher(SilentClient(), WatchSettings(), lambda _k: None, lambda _k, _e: None)
    web, db = HealthServiceQuery(name="web"), HealthServiceQuery(name="db")
    try:
        watcher.sync({str(web): web, str(db): db})
        first = watcher.decode(str(web), web, _answer())
        again = watcher.decode(str(web), web, _answer())
        assert all(a is b for a, b in zip(again, first, strict=True))
        other = watcher.decode(str(db), db, _answer())  # another query: its own decoder
        assert other == first and not any(a is b for a, b in zip(other, first, strict=True))
        watcher.sync({str(db): db})  # web is no longer watched: its decoder is dropped
        assert watcher.decode(str(web), web, _answer()) == first
        watcher.sync({str(web): web, str(db): db})
        fresh = watcher.decode(str(web), web, _answer())
        assert fresh == first and not any(a is b for a, b in zip(fresh, first, strict=True))
    finally:
        await watcher.stop()
