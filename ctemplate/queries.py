"""Query strings from templates ("production.web@dc1|passing") parsed into frozen query objects.

Every query has one canonical identity, ``str(query)`` (e.g. ``health.service(web@dc1|passing)``):
it is the watch key, the cache key and the log prefix, so a query used by several templates
is fetched once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

from .errors import QueryError
from .records import CatalogSnippet, HealthService, KeyPair, decode_value

__all__ = [
    "HEALTH_FILTERS",
    "CatalogServicesQuery",
    "HealthServiceQuery",
    "KVGetQuery",
    "KVListQuery",
    "Query",
    "parse_key",
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

SERVICE_GRAMMAR = '"[tag.]name[@dc][~near][|filter,...]"'
KEY_GRAMMAR = '"path[@dc]"'
SERVICES_GRAMMAR = '"[@dc]"'


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

    def _params(self) -> dict[str, str]:
        return {"dc": self.dc} if self.dc else {}


def _at(dc: str | None) -> str:
    return f"@{dc}" if dc else ""


@dataclass(frozen=True, slots=True)
class HealthServiceQuery(Query):
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
        services = [HealthService.from_api(e) for e in data or ()]
        if "any" not in self.filters:
            services = [s for s in services if s.Status in self.filters]
        if not self.near:
            services.sort(key=lambda s: (s.Node, s.ID))
        return tuple(services)


@dataclass(frozen=True, slots=True)
class CatalogServicesQuery(Query):
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
        return decode_value(data[0].get("Value"))


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


def _fail(kind: str, text: str, grammar: str, why: str = "") -> QueryError:
    detail = f": {why}" if why else ""
    return QueryError(f'{kind}("{text}"): expected {grammar}{detail}')


def parse_service(args: tuple[Any, ...]) -> HealthServiceQuery:
    """``service("web")``, ``service("prod.web@dc1|passing,warning")``, ``service("web", "any")``"""
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
    m = _KEY_RE.match(str(text))
    if not m:
        raise _fail(kind, str(text), KEY_GRAMMAR)
    return KVGetQuery(key=m["key"], dc=m["dc"], block=block)


def parse_prefix(kind: str, text: Any) -> KVListQuery:
    m = _PREFIX_RE.match(str(text))
    if not m:
        raise _fail(kind, str(text), KEY_GRAMMAR)
    return KVListQuery(prefix=m["key"], dc=m["dc"])
