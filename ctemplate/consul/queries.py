"""Query strings from templates ("production.web@dc1|passing") parsed into frozen query objects.

Every query has one canonical identity, ``str(query)`` (e.g. ``health.service(web@dc1|passing)``):
it is the watch key, the cache key and the log prefix, so a query used by several templates
is fetched once.

Most queries are Consul blocking queries, long-polled by :mod:`ctemplate.watch`. A few endpoints
cannot block (``/v1/catalog/datacenters``, ``/v1/agent/self``) and local files are not in Consul
at all: those queries are :class:`PolledQuery` or :class:`FileQuery`, which the watcher reads
with a polling loop from :mod:`ctemplate.consul.poll`.
"""

from __future__ import annotations

import functools
import operator
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from ..errors import ConsulError, QueryError
from ..paths import SandboxError, call, read_in_sandbox
from .records import (
    CARoot,
    CatalogNode,
    CatalogSnippet,
    HealthService,
    HealthServiceDecoder,
    KeyPair,
    LeafCert,
    Node,
    decode_value,
)

if TYPE_CHECKING:
    from .client import ConsulClient

__all__ = [
    "HEALTH_FILTERS",
    "AgentSelfQuery",
    "CatalogDatacentersQuery",
    "CatalogNodeQuery",
    "CatalogNodesQuery",
    "CatalogServicesQuery",
    "ConnectCALeafQuery",
    "ConnectCARootsQuery",
    "FileProblem",
    "FileQuery",
    "HealthConnectQuery",
    "HealthServiceQuery",
    "KVGetQuery",
    "KVListQuery",
    "PolledQuery",
    "Query",
    "parse_connect",
    "parse_datacenters",
    "parse_key",
    "parse_leaf",
    "parse_node",
    "parse_nodes",
    "parse_prefix",
    "parse_service",
    "parse_services",
]

HEALTH_FILTERS = ("any", "critical", "maintenance", "passing", "warning")

_DC = r"(?:@(?P<dc>[\w.\-]+))?"
_SERVICE_RE = re.compile(
    r"\A(?:(?P<tag>[\w=:.\-]+)\.)?(?P<name>[\w\-]+)"
    + _DC
    + r"(?:~(?P<near>[\w.\-]+))?(?:\|(?P<filter>[\w,]+))?\Z"
)
_KEY_RE = re.compile(r"\A/?(?P<key>[^@?]+)" + _DC + r"\Z")
_PREFIX_RE = re.compile(r"\A/?(?P<key>[^@?]*)" + _DC + r"\Z")
_SERVICES_RE = re.compile(r"\A" + _DC + r"\Z")
_NODE_RE = re.compile(r"\A(?P<name>[\w.\-]+)?" + _DC + r"\Z")
_NODES_RE = re.compile(r"\A" + _DC + r"(?:~(?P<near>[\w.\-]+))?\Z")
_LEAF_RE = re.compile(r"\A[\w.\-]+\Z")

SERVICE_GRAMMAR = '"[tag.]name[@dc][~near][|filter,...]"'
KEY_GRAMMAR = '"path[@dc]"'
SERVICES_GRAMMAR = '"[@dc]"'
NODE_GRAMMAR = '"[name][@dc]"'
NODES_GRAMMAR = '"[@dc][~near]"'
LEAF_GRAMMAR = '"service"'

DATACENTERS_POLL = 15.0  # seconds; /v1/catalog/datacenters cannot block (consul-template: 15s)
AGENT_SELF_POLL = 60.0  # seconds; the local agent's node name only changes with a restart
FILE_POLL = 2.0  # seconds between two stat() calls of a file() (consul-template: 2s)

_BY_NODE_AND_ID = operator.attrgetter("Node", "ID")  # (s.Node, s.ID), without a Python call


class Query:
    """A Consul read a template depends on.

    Subclasses say which endpoint to call and how to turn the JSON answer into records.
    ``block_on_nil``: a missing value is not delivered; the query keeps blocking until it exists.
    """

    block_on_nil: ClassVar[bool] = False
    dc: str | None

    def endpoint(self) -> tuple[str, dict[str, str]]:
        raise NotImplementedError

    def decode(self, data: Any) -> Any:
        """Turn the JSON answer (``None`` for a 404) into what the template sees."""
        raise NotImplementedError

    def decoder(self) -> Callable[[Any], Any]:
        """A decode function for the successive answers of one watch of this query.

        It may keep what it built from the previous answer to reuse what did not change; its
        result is always equal to :meth:`decode`'s. By default, :meth:`decode` itself.
        """
        return self.decode

    def _params(self) -> dict[str, str]:
        return {"dc": self.dc} if self.dc else {}


class PolledQuery(Query):
    """A Consul endpoint without blocking queries: read every ``poll_interval`` seconds."""

    poll_interval: ClassVar[float] = DATACENTERS_POLL

    async def fetch(self, client: ConsulClient) -> Any:
        path, params = self.endpoint()
        resp = await client.get(path, params)
        return self.decode(resp.data)


def _at(dc: str | None) -> str:
    return f"@{dc}" if dc else ""


@dataclass(frozen=True, slots=True)
class HealthServiceQuery(Query):
    """``service("[tag.]name[@dc][~near][|filter,...]")``: the healthy instances."""

    name: str
    tag: str | None = None
    dc: str | None = None
    near: str | None = None
    filters: tuple[str, ...] = ("passing",)

    def __str__(self) -> str:
        tag = f"{self.tag}." if self.tag else ""
        near = f"~{self.near}" if self.near else ""
        return f"health.service({tag}{self.name}{_at(self.dc)}{near}|{','.join(self.filters)})"

    def endpoint(self) -> tuple[str, dict[str, str]]:
        params = self._params()
        if self.tag:
            params["tag"] = self.tag
        if self.near:
            params["near"] = self.near
        if self.filters == ("passing",):
            params["passing"] = "1"
        return f"/v1/health/service/{quote(self.name, safe='')}", params

    def decode(self, data: Any) -> tuple[HealthService, ...]:
        return self._select([HealthService.from_api(e) for e in data or ()])

    def decoder(self) -> Callable[[Any], tuple[HealthService, ...]]:
        """Builds again only the records of instances whose entry changed since the previous
        answer (a service of 5,000 instances: ~12 ms per answer instead of ~90)."""
        records = HealthServiceDecoder()
        return lambda data: self._select(records.decode(data))

    def _select(self, services: list[HealthService]) -> tuple[HealthService, ...]:
        """Status filters applied, sorted by node then service ID (unless ``~near``)."""
        if "any" not in self.filters:
            services = [s for s in services if s.Status in self.filters]
        if not self.near:
            services.sort(key=_BY_NODE_AND_ID)
        return tuple(services)


@dataclass(frozen=True, slots=True)
class HealthConnectQuery(HealthServiceQuery):
    """Connect-capable instances of a service: its sidecar proxies, or the service itself if it
    is Connect-native (``connect`` helper)."""

    def __str__(self) -> str:
        return "health.connect" + HealthServiceQuery.__str__(self)[len("health.service") :]

    def endpoint(self) -> tuple[str, dict[str, str]]:
        _path, params = HealthServiceQuery.endpoint(self)
        return f"/v1/health/connect/{quote(self.name, safe='')}", params


@dataclass(frozen=True, slots=True)
class CatalogServicesQuery(Query):
    """``services("[@dc]")``: every service name of a datacenter and its tags."""

    dc: str | None = None

    def __str__(self) -> str:
        return f"catalog.services({_at(self.dc)})" if self.dc else "catalog.services"

    def endpoint(self) -> tuple[str, dict[str, str]]:
        return "/v1/catalog/services", self._params()

    def decode(self, data: Any) -> tuple[CatalogSnippet, ...]:
        items = (data or {}).items()
        return tuple(
            CatalogSnippet(Name=name, Tags=tuple(sorted(set(tags or ()))))
            for name, tags in sorted(items)
        )


@dataclass(frozen=True, slots=True)
class KVGetQuery(Query):
    """One key. ``block``: the ``key`` helper waits for the key to exist (consul-template rule);
    ``keyExists``/``keyOrDefault`` take absence as an answer."""

    key: str
    dc: str | None = None
    block: bool = False

    def __str__(self) -> str:
        kind = "kv.block" if self.block else "kv.get"
        return f"{kind}({self.key}{_at(self.dc)})"

    @property
    def block_on_nil(self) -> bool:  # type: ignore[override]
        return self.block

    def endpoint(self) -> tuple[str, dict[str, str]]:
        return f"/v1/kv/{quote(self.key)}", self._params()

    def decode(self, data: Any) -> str | None:
        if not data:
            return None
        return decode_value(data[0].get("Value"), data[0].get("Key") or self.key)


@dataclass(frozen=True, slots=True)
class KVListQuery(Query):
    """Every key under a prefix (``ls`` keeps the top level, ``tree`` all of it)."""

    prefix: str
    dc: str | None = None

    def __str__(self) -> str:
        return f"kv.list({self.prefix}{_at(self.dc)})"

    def endpoint(self) -> tuple[str, dict[str, str]]:
        params = self._params()
        params["recurse"] = ""
        return f"/v1/kv/{quote(self.prefix)}", params

    def decode(self, data: Any) -> tuple[KeyPair, ...]:
        pairs = (KeyPair.from_api(e, self.prefix) for e in data or ())
        return tuple(sorted((p for p in pairs), key=lambda p: p.Path))


@dataclass(frozen=True, slots=True)
class CatalogNodeQuery(Query):
    """One node and its services. The ``node`` helper without a name first reads the local
    agent's node name (:class:`AgentSelfQuery`), then asks for that node."""

    name: str
    dc: str | None = None

    def __str__(self) -> str:
        return f"catalog.node({self.name}{_at(self.dc)})"

    def endpoint(self) -> tuple[str, dict[str, str]]:
        return f"/v1/catalog/node/{quote(self.name, safe='')}", self._params()

    def decode(self, data: Any) -> CatalogNode | None:
        # An unknown node is answered with null: the template gets None.
        return CatalogNode.from_api(data) if data else None


@dataclass(frozen=True, slots=True)
class CatalogNodesQuery(Query):
    """``nodes("[@dc][~near]")``: the nodes of a datacenter."""

    dc: str | None = None
    near: str | None = None

    def __str__(self) -> str:
        inner = _at(self.dc) + (f"~{self.near}" if self.near else "")
        return f"catalog.nodes({inner})" if inner else "catalog.nodes"

    def endpoint(self) -> tuple[str, dict[str, str]]:
        params = self._params()
        if self.near:
            params["near"] = self.near
        return "/v1/catalog/nodes", params

    def decode(self, data: Any) -> tuple[Node, ...]:
        nodes = [Node.from_api(n) for n in data or ()]
        if not self.near:  # ~near keeps Consul's order: nearest first
            nodes.sort(key=lambda n: (n.Node, n.Address))
        return tuple(nodes)


@dataclass(frozen=True, slots=True)
class ConnectCARootsQuery(Query):
    """``caRoots()``: the Connect CA's root certificates."""

    dc: str | None = None

    def __str__(self) -> str:
        return "connect.caroots"

    def endpoint(self) -> tuple[str, dict[str, str]]:
        return "/v1/agent/connect/ca/roots", {}

    def decode(self, data: Any) -> tuple[CARoot, ...]:
        return tuple(CARoot.from_api(r) for r in (data or {}).get("Roots") or ())


@dataclass(frozen=True, slots=True)
class ConnectCALeafQuery(Query):
    """``caLeaf("service")``: a Connect leaf certificate for a service."""

    service: str
    dc: str | None = None

    def __str__(self) -> str:
        return f"connect.caleaf({self.service})"

    def endpoint(self) -> tuple[str, dict[str, str]]:
        return f"/v1/agent/connect/ca/leaf/{quote(self.service, safe='')}", {}

    def decode(self, data: Any) -> LeafCert | None:
        return LeafCert.from_api(data) if data else None


@dataclass(frozen=True, slots=True)
class CatalogDatacentersQuery(PolledQuery):
    """All known datacenters, sorted. ``ignore_failing`` drops those that cannot answer a
    consistent catalog read. The endpoint cannot block: it is read every 15 seconds."""

    ignore_failing: bool = False
    dc: str | None = None

    def __str__(self) -> str:
        if self.ignore_failing:
            return "catalog.datacenters(ignore-failing)"
        return "catalog.datacenters"

    def endpoint(self) -> tuple[str, dict[str, str]]:
        return "/v1/catalog/datacenters", {}

    def decode(self, data: Any) -> tuple[str, ...]:
        return tuple(sorted(str(d) for d in data or ()))

    async def fetch(self, client: ConsulClient) -> tuple[str, ...]:
        resp = await client.get("/v1/catalog/datacenters")
        names = self.decode(resp.data)
        if not self.ignore_failing:
            return names
        alive = []
        for name in names:
            try:
                await client.get("/v1/catalog/services", {"dc": name, "consistent": ""})
            except ConsulError:
                continue
            alive.append(name)
        return tuple(alive)


@dataclass(frozen=True, slots=True)
class AgentSelfQuery(PolledQuery):
    """The local agent's node name (``Config.NodeName`` of ``/v1/agent/self``)."""

    poll_interval: ClassVar[float] = AGENT_SELF_POLL
    dc: str | None = None

    def __str__(self) -> str:
        return "agent.self"

    def endpoint(self) -> tuple[str, dict[str, str]]:
        return "/v1/agent/self", {}

    def decode(self, data: Any) -> str | None:
        name = ((data or {}).get("Config") or {}).get("NodeName")
        return str(name) if name else None


@dataclass(frozen=True, slots=True)
class FileProblem:
    """What a :class:`FileQuery` delivers when the file cannot be read; the ``file`` helper turns
    it into a template error (so the template keeps its last good output)."""

    message: str


@dataclass(frozen=True, slots=True)
class FileQuery(Query):
    """A local file's contents (``file`` helper), checked for changes every 2 seconds.

    ``sandbox``: the real path of ``sandbox_path``; the file's real path (symlinks resolved)
    must stay inside it, checked again on every read.
    """

    path: str
    sandbox: str | None = None
    dc: str | None = None
    poll_interval: ClassVar[float] = FILE_POLL

    def __str__(self) -> str:
        return f"file({self.path})"

    def stamp(self) -> tuple[Any, ...]:
        """What changes when the file does: inode, size, mtime (or the error)."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            return ("error", exc.errno)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def read(self) -> str | FileProblem:
        try:
            if self.sandbox:
                return read_in_sandbox(self.path, self.sandbox)
            with open(self.path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except SandboxError as exc:
            return FileProblem(str(exc))
        except FileNotFoundError:
            return FileProblem(f"{call('file', self.path)}: no such file; check the path")
        except IsADirectoryError:
            return FileProblem(f"{call('file', self.path)}: is a directory, not a file")
        except OSError as exc:
            return FileProblem(f"{call('file', self.path)}: cannot read it: {exc.strerror}")


def _fail(kind: str, text: str, grammar: str, why: str = "") -> QueryError:
    detail = f": {why}" if why else ""
    return QueryError(f'{kind}("{text}"): expected {grammar}{detail}')


def parse_service(args: tuple[Any, ...]) -> HealthServiceQuery:
    """``service("web")``, ``service("prod.web@dc1|passing,warning")``, ``service("web", "any")``"""
    return _parse_service(tuple(str(a) for a in args))


# Templates call the same helpers with the same strings on every render: parse each once.
@functools.lru_cache(maxsize=16384)
def _parse_service(args: tuple[str, ...]) -> HealthServiceQuery:
    if not args:
        raise QueryError(f"service(): missing the service name; expected {SERVICE_GRAMMAR}")
    text = str(args[0])
    if len(args) > 1:  # extra arguments are filters: service("web", "passing", "warning")
        extra = ",".join(str(a) for a in args[1:])
        text = f"{text},{extra}" if "|" in text else f"{text}|{extra}"
    m = _SERVICE_RE.match(text)
    if not m:
        raise _fail("service", text, SERVICE_GRAMMAR)
    filters: tuple[str, ...] = ("passing",)
    if m["filter"]:
        wanted = sorted({f.strip() for f in m["filter"].split(",") if f.strip()})
        bad = [f for f in wanted if f not in HEALTH_FILTERS]
        if bad:
            raise _fail(
                "service",
                text,
                SERVICE_GRAMMAR,
                f"unknown filter {bad[0]!r} (use {', '.join(HEALTH_FILTERS)})",
            )
        filters = tuple(wanted) if wanted else filters
    return HealthServiceQuery(
        name=m["name"], tag=m["tag"], dc=m["dc"], near=m["near"], filters=filters
    )


def parse_services(args: tuple[Any, ...]) -> CatalogServicesQuery:
    text = "".join(str(a) for a in args)
    m = _SERVICES_RE.match(text)
    if not m:
        raise _fail("services", text, SERVICES_GRAMMAR)
    return CatalogServicesQuery(dc=m["dc"])


def parse_key(kind: str, text: Any, *, block: bool = False) -> KVGetQuery:
    return _parse_key(kind, str(text), block)


@functools.lru_cache(maxsize=16384)
def _parse_key(kind: str, text: str, block: bool) -> KVGetQuery:
    m = _KEY_RE.match(text)
    if not m:
        raise _fail(kind, str(text), KEY_GRAMMAR)
    return KVGetQuery(key=m["key"], dc=m["dc"], block=block)


def parse_prefix(kind: str, text: Any) -> KVListQuery:
    return _parse_prefix(kind, str(text))


@functools.lru_cache(maxsize=16384)
def _parse_prefix(kind: str, text: str) -> KVListQuery:
    m = _PREFIX_RE.match(text)
    if not m:
        raise _fail(kind, str(text), KEY_GRAMMAR)
    return KVListQuery(prefix=m["key"], dc=m["dc"])


def parse_connect(args: tuple[Any, ...]) -> HealthConnectQuery:
    """``connect("web")``: the grammar of ``service``."""
    try:
        q = parse_service(args)
    except QueryError as exc:
        raise QueryError("connect" + str(exc)[len("service") :]) from None
    return HealthConnectQuery(name=q.name, tag=q.tag, dc=q.dc, near=q.near, filters=q.filters)


def parse_node(args: tuple[Any, ...]) -> CatalogNodeQuery:
    """``node()`` (the local agent's node), ``node("db-1")``, ``node("db-1@dc2")``.

    Without a name the query's ``name`` is empty: the helper resolves it first.
    """
    text = "".join(str(a) for a in args)
    m = _NODE_RE.match(text)
    if not m:
        raise _fail("node", text, NODE_GRAMMAR)
    return CatalogNodeQuery(name=m["name"] or "", dc=m["dc"])


def parse_nodes(args: tuple[Any, ...]) -> CatalogNodesQuery:
    text = "".join(str(a) for a in args)
    m = _NODES_RE.match(text)
    if not m:
        raise _fail("nodes", text, NODES_GRAMMAR)
    return CatalogNodesQuery(dc=m["dc"], near=m["near"])


def parse_leaf(args: tuple[Any, ...]) -> ConnectCALeafQuery:
    if len(args) != 1:
        raise QueryError(f"caLeaf(): expected one argument, the service name {LEAF_GRAMMAR}")
    text = str(args[0])
    if not _LEAF_RE.match(text):
        raise _fail("caLeaf", text, LEAF_GRAMMAR)
    return ConnectCALeafQuery(service=text)


def parse_datacenters(args: tuple[Any, ...]) -> CatalogDatacentersQuery:
    """``datacenters()`` or ``datacenters(true)`` (leave out datacenters that cannot answer)."""
    if len(args) > 1:
        raise QueryError(
            f"datacenters(): expected at most one argument (ignore_failing), got {len(args)}"
        )
    flag = args[0] if args else False
    if not isinstance(flag, bool):
        raise QueryError(f"datacenters({flag!r}): the argument is true or false (ignore_failing)")
    return CatalogDatacentersQuery(ignore_failing=flag)
