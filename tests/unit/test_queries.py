"""The query grammar: canonical identities, endpoints and the errors users see."""

from __future__ import annotations

import pytest

from ctemplate.consul.queries import (
    AgentSelfQuery,
    ConnectCARootsQuery,
    FileQuery,
    PolledQuery,
    parse_connect,
    parse_datacenters,
    parse_key,
    parse_leaf,
    parse_node,
    parse_nodes,
    parse_prefix,
    parse_service,
    parse_services,
)
from ctemplate.errors import QueryError


@pytest.mark.parametrize(
    ("args", "identity", "path", "params"),
    [
        (("web",), "health.service(web|passing)", "/v1/health/service/web", {"passing": "1"}),
        (
            ("production.application@dc1", "passing"),
            "health.service(production.application@dc1|passing)",
            "/v1/health/service/application",
            {"dc": "dc1", "tag": "production", "passing": "1"},
        ),
        (
            ("web", "passing", "warning"),
            "health.service(web|passing,warning)",
            "/v1/health/service/web",
            {},
        ),
        (
            ("web|warning,passing",),
            "health.service(web|passing,warning)",
            "/v1/health/service/web",
            {},
        ),
        (("a.b.web|any",), "health.service(a.b.web|any)", "/v1/health/service/web", {"tag": "a.b"}),
        (
            ("web~_agent",),
            "health.service(web~_agent|passing)",
            "/v1/health/service/web",
            {"near": "_agent", "passing": "1"},
        ),
        (
            ("v1=x:y.web@east-1",),
            "health.service(v1=x:y.web@east-1|passing)",
            "/v1/health/service/web",
            {"dc": "east-1", "tag": "v1=x:y", "passing": "1"},
        ),
    ],
)
def test_service_queries(args, identity, path, params):
    q = parse_service(args)
    assert str(q) == identity
    assert q.endpoint() == (path, params)


def test_equal_queries_share_one_identity():
    assert str(parse_service(("web", "warning", "passing"))) == str(
        parse_service(("web|passing,warning",))
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("web@",), 'service("web@"): expected "[tag.]name[@dc][~near][|filter,...]"'),
        ((), 'service(): missing the service name; expected "[tag.]name[@dc][~near][|filter,...]"'),
        (
            ("web", "bogus"),
            'service("web|bogus"): expected "[tag.]name[@dc][~near][|filter,...]": '
            "unknown filter 'bogus' (use any, critical, maintenance, passing, warning)",
        ),
        (("my.dotted.",), 'service("my.dotted."): expected "[tag.]name[@dc][~near][|filter,...]"'),
    ],
)
def test_bad_service_queries(args, message):
    with pytest.raises(QueryError) as info:
        parse_service(args)
    assert str(info.value) == message


def test_key_queries():
    assert str(parse_key("key", "/app/config@dc2", block=True)) == "kv.block(app/config@dc2)"
    assert str(parse_key("keyExists", "app/config")) == "kv.get(app/config)"
    assert parse_key("key", "a b/c").endpoint() == ("/v1/kv/a%20b/c", {})
    with pytest.raises(QueryError, match=r'key\("@dc1"\): expected "path\[@dc\]"'):
        parse_key("key", "@dc1")


def test_prefix_and_services_queries():
    assert str(parse_prefix("tree", "app/")) == "kv.list(app/)"
    assert parse_prefix("ls", "app@dc1").endpoint() == ("/v1/kv/app", {"dc": "dc1", "recurse": ""})
    assert str(parse_services(())) == "catalog.services"
    assert str(parse_services(("@dc2",))) == "catalog.services(@dc2)"
    with pytest.raises(QueryError, match=r'services\("dc2"\)'):
        parse_services(("dc2",))


@pytest.mark.parametrize(
    ("query", "identity", "path", "params"),
    [
        (
            parse_connect(("web",)),
            "health.connect(web|passing)",
            "/v1/health/connect/web",
            {"passing": "1"},
        ),
        (
            parse_connect(("prod.web@dc2~_agent", "any")),
            "health.connect(prod.web@dc2~_agent|any)",
            "/v1/health/connect/web",
            {"dc": "dc2", "tag": "prod", "near": "_agent"},
        ),
        (parse_node(("db-1",)), "catalog.node(db-1)", "/v1/catalog/node/db-1", {}),
        (
            parse_node(("db-1.example@dc2",)),
            "catalog.node(db-1.example@dc2)",
            "/v1/catalog/node/db-1.example",
            {"dc": "dc2"},
        ),
        (parse_nodes(()), "catalog.nodes", "/v1/catalog/nodes", {}),
        (
            parse_nodes(("@dc2~_agent",)),
            "catalog.nodes(@dc2~_agent)",
            "/v1/catalog/nodes",
            {"dc": "dc2", "near": "_agent"},
        ),
        (parse_datacenters(()), "catalog.datacenters", "/v1/catalog/datacenters", {}),
        (
            parse_datacenters((True,)),
            "catalog.datacenters(ignore-failing)",
            "/v1/catalog/datacenters",
            {},
        ),
        (ConnectCARootsQuery(), "connect.caroots", "/v1/agent/connect/ca/roots", {}),
        (parse_leaf(("web",)), "connect.caleaf(web)", "/v1/agent/connect/ca/leaf/web", {}),
        (AgentSelfQuery(), "agent.self", "/v1/agent/self", {}),
    ],
)
def test_more_queries(query, identity, path, params):
    assert str(query) == identity
    assert query.endpoint() == (path, params)


def test_polled_and_local_queries_are_told_apart_from_blocking_ones():
    # The watcher polls these instead of long-polling them (ctemplate.consul.watch).
    assert not isinstance(parse_service(("web",)), PolledQuery | FileQuery)
    for query in (parse_datacenters(()), AgentSelfQuery()):
        assert isinstance(query, PolledQuery)
    assert isinstance(FileQuery("/etc/hostname"), FileQuery)
    assert str(FileQuery("conf/app.ini")) == "file(conf/app.ini)"
    assert parse_node(()).name == ""  # the helper asks the agent for its node name first


@pytest.mark.parametrize(
    ("parse", "args", "message"),
    [
        (
            parse_connect,
            ("web@",),
            'connect("web@"): expected "[tag.]name[@dc][~near][|filter,...]"',
        ),
        (parse_node, ("a b",), 'node("a b"): expected "[name][@dc]"'),
        (parse_nodes, ("dc1",), 'nodes("dc1"): expected "[@dc][~near]"'),
        (parse_leaf, ("a/b",), 'caLeaf("a/b"): expected "service"'),
        (parse_leaf, (), 'caLeaf(): expected one argument, the service name "service"'),
        (
            parse_datacenters,
            ("yes",),
            "datacenters('yes'): the argument is true or false (ignore_failing)",
        ),
        (
            parse_datacenters,
            (True, False),
            "datacenters(): expected at most one argument (ignore_failing), got 2",
        ),
    ],
)
def test_bad_queries(parse, args, message):
    with pytest.raises(QueryError) as info:
        parse(args)
    assert str(info.value) == message
