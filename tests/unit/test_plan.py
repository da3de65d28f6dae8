"""The watch planner: dedicated long polls while they fit, coalesced reads past that."""

from __future__ import annotations

from ctemplate.consul.plan import kv_group, plan
from ctemplate.consul.queries import parse_key, parse_prefix, parse_service, parse_services


def _keys(n, prefix="bench/keys/"):
    return [parse_key("key", f"{prefix}{i}", block=True) for i in range(n)]


def test_everything_dedicated_within_the_limit():
    qs = [*_keys(5), parse_service(("web",)), parse_services(())]
    p = plan(qs, dedicated_limit=28)
    assert sorted(map(str, p.dedicated)) == sorted(map(str, qs))
    assert p.kv == {} and p.services == {}
    assert p.long_polls == 7


def test_thousand_keys_become_one_recursive_read():
    p = plan(_keys(1000), dedicated_limit=28)
    assert p.dedicated == ()
    assert list(p.kv) == [(None, "bench/keys/")]
    assert len(p.kv[(None, "bench/keys/")]) == 1000
    assert p.long_polls == 1


def test_kv_groups_by_first_segment_and_datacenter():
    qs = [
        *_keys(20, "a/x/"),
        *_keys(20, "b/"),
        parse_prefix("tree", "a/y/"),
        parse_key("key", "c/only"),
        parse_key("key", "a/x/1@dc2"),
        parse_key("key", "a/z@dc2"),
    ]
    p = plan(qs, dedicated_limit=10)
    assert set(p.kv) == {(None, "a/"), (None, "b/"), ("dc2", "a/")}
    assert len(p.kv[(None, "a/")]) == 21
    assert [str(q) for q in p.dedicated] == ["kv.get(c/only)"]


def test_three_hundred_services_share_a_sentinel():
    qs = [parse_service((f"svc{i}",)) for i in range(300)] + [parse_services(())]
    p = plan(qs, dedicated_limit=28)
    assert [str(q) for q in p.dedicated] == ["catalog.services"]
    assert len(p.services[None]) == 300
    assert p.long_polls == 4


def test_small_groups_stay_dedicated():
    qs = [*_keys(30, "k/"), parse_service(("a",)), parse_service(("b",))]
    p = plan(qs, dedicated_limit=28)
    assert sorted(str(q) for q in p.dedicated) == [
        "health.service(a|passing)",
        "health.service(b|passing)",
    ]


def test_kv_group():
    assert kv_group("app/db/host") == "app/"
    assert kv_group("flat") == "flat"
    assert kv_group("") == ""
