"""De-duplication's pure parts: what may be shared, the payload's encoding, the template's
identity, and the configuration (the election itself runs against a real cluster in
tests/integration/test_dedup.py)."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ctemplate.config import Config, load_config
from ctemplate.config.flags import parse_flags
from ctemplate.consul.queries import (
    AgentSelfQuery,
    ConnectCALeafQuery,
    FileQuery,
    parse_key,
    parse_prefix,
    parse_service,
)
from ctemplate.consul.records import HealthCheck, HealthService, KeyPair, LeafCert, Weights
from ctemplate.errors import ConfigError
from ctemplate.modes.dedup import decode_payload, encode_payload, shareable, template_id


def _service(node: str, port: int) -> HealthService:
    check = HealthCheck(
        Node=node,
        CheckID="serfHealth",
        Name="Serf",
        Status="passing",
        Notes="",
        Output="ok",
        ServiceID="",
        ServiceName="",
        ServiceTags=(),
        Type="",
        CreateIndex=1,
        ModifyIndex=2,
    )
    return HealthService(
        Node=node,
        NodeID="id-" + node,
        NodeAddress="10.0.0.1",
        NodeDatacenter="dc1",
        NodeTaggedAddresses={"lan": "10.0.0.1"},
        NodeMeta={"rack": "r1", "@d": "a user key that looks like a tag"},
        ServiceMeta={},
        Address="10.0.0.1",
        ServiceTaggedAddresses={"lan": {"Address": "10.0.0.1", "Port": port}},
        ID=f"web-{port}",
        Name="web",
        Kind="",
        Tags=("a", "b"),
        Checks=(check,),
        Status="passing",
        Port=port,
        Weights=Weights(1, 1),
    )


def test_the_payload_gives_back_equal_records_of_the_same_types() -> None:
    values = {
        "health.service(web|passing)": (_service("n1", 80), _service("n2", 81)),
        "kv.block(app/x)": "value ✓",
        "kv.list(app/)": (KeyPair("app/a", "a", "1", 1, 2, 0, 0, ""),),
        "catalog.datacenters": ("dc1", "dc2"),
        "nothing": None,
    }
    data, digest = encode_payload(values)
    back = decode_payload(data)
    assert back == values
    assert type(back["health.service(web|passing)"]) is tuple  # a list would compare unequal
    assert (
        back["health.service(web|passing)"][0].NodeMeta["@d"] == "a user key that looks like a tag"
    )
    assert len(digest) == 64


def test_the_hash_is_stable_whatever_the_order_of_maps() -> None:
    one = {"a": {"x": 1, "y": 2}, "b": "v"}
    two = {"b": "v", "a": {"y": 2, "x": 1}}
    assert encode_payload(one)[1] == encode_payload(two)[1]
    assert encode_payload(one)[1] != encode_payload({"a": {"x": 1, "y": 3}, "b": "v"})[1]


def test_a_payload_names_only_ctemplate_records() -> None:
    data = b'{"v":1,"values":{"k":{"@r":"Popen","f":{"args":"id"}}}}'
    with pytest.raises(ValueError, match="unknown record type 'Popen'"):
        decode_payload(data)
    with pytest.raises(ValueError, match="version 1"):
        decode_payload(b'{"v":2,"values":{}}')


def test_datetimes_round_trip() -> None:
    leaf = LeafCert(
        "01",
        "cert",
        "key",
        "web",
        "spiffe://x",
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        None,
        1,
        2,
    )
    assert decode_payload(encode_payload({"k": leaf})[0]) == {"k": leaf}


def test_host_local_answers_and_secrets_are_never_shared() -> None:
    assert shareable(parse_service(("web",)))
    assert shareable(parse_key("key", "app/x"))
    assert shareable(parse_prefix("tree", "app/"))
    assert not shareable(FileQuery("/etc/hostname"))
    assert not shareable(AgentSelfQuery())  # the local agent's node name
    assert not shareable(ConnectCALeafQuery("web"))  # holds a private key


def test_the_identity_depends_on_text_syntax_and_delimiters_only() -> None:
    base = template_id("{{ key('a') }}")
    assert base == template_id("{{ key('a') }}")
    assert base != template_id("{{ key('b') }}")
    assert base != template_id("{{ key('a') }}", syntax="go")
    assert base != template_id("{{ key('a') }}", left="[[", right="]]")


def test_a_large_payload_compresses_but_random_data_does_not() -> None:
    services = tuple(_service(f"n{i:04d}", 1000 + i) for i in range(500))
    data, _ = encode_payload({"health.service(web|passing)": services})
    assert len(zlib.compress(data, 6)) < len(data) / 10


# --- configuration ------------------------------------------------------------------------------


def _load(tmp_path: Path, text: str, *argv: str) -> Config:
    path = tmp_path / "ct.hcl"
    path.write_text(text)
    return load_config(parse_flags(["-config", str(path), *argv]), {})


def test_deduplicate_block_and_flag(tmp_path: Path) -> None:
    config = _load(tmp_path, 'deduplicate {\n  prefix = "fleet/dedup"\n  ttl = "20s"\n}\n')
    assert config.dedup.enabled  # implied by any other key, as in consul-template
    assert config.dedup.prefix == "fleet/dedup/"
    assert config.dedup.ttl == 20.0
    assert not _load(tmp_path, "").dedup.enabled
    assert _load(tmp_path, "", "-dedup").dedup.enabled
    assert not _load(tmp_path, "deduplicate {\n  enabled = false\n}\n").dedup.enabled


def test_once_renders_alone(tmp_path: Path) -> None:
    assert not _load(tmp_path, "", "-dedup", "-once").dedup.enabled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'deduplicate {\n  ttl = "2s"\n}\n',
            "deduplicate.ttl: Consul accepts session TTLs from 10s to 24h",
        ),
        ('deduplicate {\n  prefx = "x"\n}\n', "deduplicate.prefx"),
        ('deduplicate {\n  prefix = "/"\n}\n', "deduplicate.prefix: must name a KV prefix"),
    ],
)
def test_bad_deduplicate_blocks(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        _load(tmp_path, text)
