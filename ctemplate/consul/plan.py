"""Which long polls serve which queries, within a connection budget.

consul-template holds one long-poll connection per dependency; past the agent's per-client
limit (200) the agent closes connections silently. ctemplate plans its watches instead:

* up to ``dedicated_limit`` queries, every query gets its own blocking query (lowest latency,
  smallest answers);
* past that, KV queries that share a first path segment are served by one recursive blocking
  query on their longest common prefix, and ``service`` queries of a datacenter by a
  *health sentinel*: blocking queries on the checks, services and nodes tables of the catalog
  (``/v1/health/state/any``, ``/v1/catalog/services``, ``/v1/catalog/nodes``). When a sentinel
  wakes, only the services it shows as changed are read again, with short non-blocking GETs;
* a group of one stays a dedicated watch (coalescing it would only add data).

The planner is pure: it maps a set of queries to a :class:`Plan`; the watcher carries it out.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from .queries import HealthServiceQuery, KVGetQuery, KVListQuery, Query

__all__ = ["Plan", "kv_group", "plan"]


@dataclass(frozen=True, slots=True)
class Plan:
    """How a set of queries is fetched: dedicated polls, shared KV prefixes, sentinels."""

    dedicated: tuple[Query, ...] = ()
    # (dc, prefix) -> queries answered from one recursive KV read
    kv: dict[tuple[str | None, str], tuple[Query, ...]] = field(default_factory=dict)
    # dc -> service queries answered through that datacenter's health sentinel
    services: dict[str | None, tuple[HealthServiceQuery, ...]] = field(default_factory=dict)

    @property
    def long_polls(self) -> int:
        """How many blocking queries the plan holds open at once."""
        return len(self.dedicated) + len(self.kv) + 3 * len(self.services)


def _kv_path(query: Query) -> str:
    if isinstance(query, KVGetQuery):
        return query.key
    assert isinstance(query, KVListQuery)
    return query.prefix


def kv_group(path: str) -> str:
    """The coalescing group of a KV path: its first segment (``"app/"`` for ``"app/db/host"``)."""
    head, sep, _ = path.partition("/")
    return head + sep


def _common_prefix(paths: Iterable[str]) -> str:
    """Longest common prefix, cut back to a whole path segment (ends with "/" or is empty),
    unless every path is the same key."""
    paths = list(paths)
    common = os.path.commonprefix(paths)  # noqa: RUF071 - character-wise on purpose
    if all(p == common for p in paths):
        return common
    return common[: common.rfind("/") + 1]


def plan(queries: Iterable[Query], dedicated_limit: int) -> Plan:
    queries = sorted(set(queries), key=str)
    if len(queries) <= dedicated_limit:
        return Plan(dedicated=tuple(queries))
    dedicated: list[Query] = []
    kv_groups: dict[tuple[str | None, str], list[Query]] = defaultdict(list)
    service_groups: dict[str | None, list[HealthServiceQuery]] = defaultdict(list)
    for q in queries:
        if isinstance(q, KVGetQuery | KVListQuery):
            kv_groups[(q.dc, kv_group(_kv_path(q)))].append(q)
        elif isinstance(q, HealthServiceQuery):
            service_groups[q.dc].append(q)
        else:
            dedicated.append(q)
    kv: dict[tuple[str | None, str], tuple[Query, ...]] = {}
    for (dc, _group), members in kv_groups.items():
        if len(members) == 1:
            dedicated.append(members[0])
        else:
            kv[(dc, _common_prefix(_kv_path(m) for m in members))] = tuple(members)
    services: dict[str | None, tuple[HealthServiceQuery, ...]] = {}
    for dc, svc_members in service_groups.items():
        if len(svc_members) <= 3:  # a sentinel costs three long polls
            dedicated.extend(svc_members)
        else:
            services[dc] = tuple(svc_members)
    return Plan(dedicated=tuple(sorted(dedicated, key=str)), kv=kv, services=services)
