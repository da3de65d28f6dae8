"""What templates receive from Consul, with consul-template's field names.

Records are frozen, slotted dataclasses, so ``==`` tells whether data really changed.
Lists are tuples (sorted where consul-template sorts them); maps are plain dicts.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

log = logging.getLogger(__name__)

__all__ = [
    "CARoot",
    "CatalogNode",
    "CatalogNodeService",
    "CatalogSnippet",
    "HealthCheck",
    "HealthService",
    "HealthServiceDecoder",
    "KeyPair",
    "LeafCert",
    "Node",
    "Weights",
    "aggregated_status",
]


def _str_map(value: Any) -> dict[str, str]:
    """Consul sends ``null`` for empty maps; templates get ``{}``."""
    if not value:
        return {}
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _tags(value: Any) -> tuple[str, ...]:
    return tuple(sorted(value or ()))


@dataclass(frozen=True, slots=True)
class Weights:
    """A service instance's DNS weights (passing / warning)."""

    Passing: int = 1
    Warning: int = 1


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One health check of a node or a service instance, as Consul reports it."""

    Node: str
    CheckID: str
    Name: str
    Status: str
    Notes: str
    Output: str
    ServiceID: str
    ServiceName: str
    ServiceTags: tuple[str, ...]
    Type: str
    CreateIndex: int
    ModifyIndex: int

    @classmethod
    def from_api(cls, c: dict[str, Any]) -> HealthCheck:
        return cls(
            Node=c.get("Node") or "",
            CheckID=c.get("CheckID") or "",
            Name=c.get("Name") or "",
            Status=c.get("Status") or "",
            Notes=c.get("Notes") or "",
            Output=c.get("Output") or "",
            ServiceID=c.get("ServiceID") or "",
            ServiceName=c.get("ServiceName") or "",
            ServiceTags=_tags(c.get("ServiceTags")),
            Type=c.get("Type") or "",
            CreateIndex=int(c.get("CreateIndex") or 0),
            ModifyIndex=int(c.get("ModifyIndex") or 0),
        )


def aggregated_status(checks: tuple[HealthCheck, ...]) -> str:
    """One status for a list of checks, as Consul's API client computes it.

    Maintenance wins, then critical, warning, passing; no checks means passing.
    """
    passing = warning = critical = maintenance = False
    for check in checks:
        if check.CheckID == "_node_maintenance" or check.CheckID.startswith(
            "_service_maintenance:"
        ):
            maintenance = True
            continue
        if check.Status == "passing":
            passing = True
        elif check.Status == "warning":
            warning = True
        elif check.Status == "critical":
            critical = True
        else:
            return ""
    if maintenance:
        return "maintenance"
    if critical:
        return "critical"
    if warning:
        return "warning"
    if passing or not checks:
        return "passing"
    return ""


@dataclass(frozen=True, slots=True)
class HealthService:
    """One instance of a service with its node and checks (``service`` helper)."""

    Node: str
    NodeID: str
    NodeAddress: str
    NodeDatacenter: str
    NodeTaggedAddresses: dict[str, str]
    NodeMeta: dict[str, str]
    ServiceMeta: dict[str, str]
    Address: str
    ServiceTaggedAddresses: dict[str, dict[str, Any]]
    ID: str
    Name: str
    Kind: str
    Tags: tuple[str, ...]
    Checks: tuple[HealthCheck, ...]
    Status: str
    Port: int
    Weights: Weights

    @classmethod
    def from_api(cls, entry: dict[str, Any]) -> HealthService:
        node = entry.get("Node") or {}
        svc = entry.get("Service") or {}
        checks = tuple(HealthCheck.from_api(c) for c in entry.get("Checks") or ())
        weights = svc.get("Weights") or {}
        return cls(
            Node=node.get("Node") or "",
            NodeID=node.get("ID") or "",
            NodeAddress=node.get("Address") or "",
            NodeDatacenter=node.get("Datacenter") or "",
            NodeTaggedAddresses=_str_map(node.get("TaggedAddresses")),
            NodeMeta=_str_map(node.get("Meta")),
            ServiceMeta=_str_map(svc.get("Meta")),
            # A service registered without an address listens on its node's address.
            Address=svc.get("Address") or node.get("Address") or "",
            ServiceTaggedAddresses=dict(svc.get("TaggedAddresses") or {}),
            ID=svc.get("ID") or "",
            Name=svc.get("Service") or "",
            Kind=svc.get("Kind") or "",
            Tags=_tags(svc.get("Tags")),
            Checks=checks,
            Status=aggregated_status(checks),
            Port=int(svc.get("Port") or 0),
            Weights=Weights(
                Passing=int(weights.get("Passing", 1)), Warning=int(weights.get("Warning", 1))
            ),
        )


class HealthServiceDecoder:
    """Decodes the successive answers of one health query, reusing unchanged records.

    Each answer of ``/v1/health/service`` holds every instance again, though a change usually
    concerns one of them; building 5,000 records costs ~90 ms. The decoder keeps the previous
    answer's raw entries with their records, found by node name and service ID, and builds a
    record again only when its raw entry is not equal (``==`` on the decoded JSON, 1-2 us) to
    the previous one (each answer is a new ``json`` parse, never modified afterwards). A record
    depends on nothing but its raw entry, so the result is always the records that
    :meth:`HealthService.from_api` would build, in the answer's order; and
    :class:`HealthService` records are frozen, so sharing them between answers is safe.

    Raw equality rather than Consul's ``ModifyIndex`` es: the indexes say whether an entry
    changed only within one Raft history, and an agent that is wiped and seeded again (a dev
    agent, a restored snapshot) can give a changed entry the same indexes. Consul's JSON has one
    type per field, so ``1 == 1.0 == True`` cannot hide a change either. The cost is the memory
    of one decoded answer (~2 KiB per instance), held while the query is watched.
    """

    __slots__ = ("_previous",)

    def __init__(self) -> None:
        self._previous: dict[tuple[Any, Any], tuple[Any, HealthService]] = {}

    def decode(self, entries: Any) -> list[HealthService]:
        previous = self._previous
        current: dict[tuple[Any, Any], tuple[Any, HealthService]] = {}
        records = []
        for entry in entries or ():
            key = ((entry.get("Node") or {}).get("Node"), (entry.get("Service") or {}).get("ID"))
            known = previous.get(key)
            # (``is``: an element the loop's AnswerDecoder reused from the last answer)
            if known is not None and (known[0] is entry or known[0] == entry):
                record = known[1]
            else:
                record = HealthService.from_api(entry)
            current[key] = (entry, record)
            records.append(record)
        self._previous = current  # only once the whole answer was decoded
        return records


@dataclass(frozen=True, slots=True)
class CatalogSnippet:
    """A service name and the union of its tags (``services`` helper)."""

    Name: str
    Tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A KV entry. ``Path`` is the full key, ``Key`` is relative to the queried prefix."""

    Path: str
    Key: str
    Value: str
    CreateIndex: int
    ModifyIndex: int
    LockIndex: int
    Flags: int
    Session: str

    @classmethod
    def from_api(cls, entry: dict[str, Any], prefix: str = "") -> KeyPair:
        path = entry.get("Key") or ""
        key = path[len(prefix) :] if prefix and path.startswith(prefix) else path
        return cls(
            Path=path,
            Key=key.lstrip("/"),
            Value=decode_value(entry.get("Value"), path),
            CreateIndex=int(entry.get("CreateIndex") or 0),
            ModifyIndex=int(entry.get("ModifyIndex") or 0),
            LockIndex=int(entry.get("LockIndex") or 0),
            Flags=int(entry.get("Flags") or 0),
            Session=entry.get("Session") or "",
        )


_WARNED_NOT_UTF8: set[str] = set()  # keys already reported, so each is reported once


def decode_value(raw: str | None, key: str = "") -> str:
    """KV values arrive base64-encoded; bytes that are not UTF-8 become U+FFFD.

    The replacement is reported once per key (naming the key, never the value): a template
    then renders something other than what was stored.
    """
    if not raw:
        return ""
    data = base64.b64decode(raw)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if key not in _WARNED_NOT_UTF8:
            _WARNED_NOT_UTF8.add(key)
            log.warning(
                "(consul) KV key %s: value is not UTF-8 text (bad byte at offset %d); "
                "its invalid bytes render as U+FFFD; store the value as UTF-8 text",
                key or "(unnamed)",
                exc.start,
            )
        return data.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class Node:
    """A catalog node (``nodes`` helper, and ``node().Node``)."""

    ID: str
    Node: str
    Address: str
    Datacenter: str
    TaggedAddresses: dict[str, str]
    Meta: dict[str, str]

    @classmethod
    def from_api(cls, n: dict[str, Any]) -> Self:
        return cls(
            ID=n.get("ID") or "",
            Node=n.get("Node") or "",
            Address=n.get("Address") or "",
            Datacenter=n.get("Datacenter") or "",
            TaggedAddresses=_str_map(n.get("TaggedAddresses")),
            Meta=_str_map(n.get("Meta")),
        )


_NodeRecord = Node  # CatalogNode's field is called Node too


@dataclass(frozen=True, slots=True)
class CatalogNodeService:
    """A service registered on one node (``node().Services``). ``Address`` is the service's own
    address as registered (empty when it uses the node's)."""

    ID: str
    Service: str
    Tags: tuple[str, ...]
    Meta: dict[str, str]
    Port: int
    Address: str
    EnableTagOverride: bool

    @classmethod
    def from_api(cls, s: dict[str, Any]) -> CatalogNodeService:
        return cls(
            ID=s.get("ID") or "",
            Service=s.get("Service") or "",
            Tags=_tags(s.get("Tags")),
            Meta=_str_map(s.get("Meta")),
            Port=int(s.get("Port") or 0),
            Address=s.get("Address") or "",
            EnableTagOverride=bool(s.get("EnableTagOverride")),
        )


@dataclass(frozen=True, slots=True)
class CatalogNode:
    """A node and its services, sorted by service name then ID (``node`` helper)."""

    Node: _NodeRecord
    Services: tuple[CatalogNodeService, ...]

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> CatalogNode:
        raw = data.get("Services") or {}
        entries = raw.values() if isinstance(raw, dict) else raw  # a map keyed by service ID
        services = sorted(
            (CatalogNodeService.from_api(s) for s in entries), key=lambda s: (s.Service, s.ID)
        )
        return cls(Node=_NodeRecord.from_api(data.get("Node") or {}), Services=tuple(services))


@dataclass(frozen=True, slots=True)
class CARoot:
    """A Connect CA root certificate (``caRoots`` helper); ``RootCertPEM`` is the API's
    ``RootCert``."""

    ID: str
    Name: str
    RootCertPEM: str
    Active: bool
    CreateIndex: int
    ModifyIndex: int

    @classmethod
    def from_api(cls, r: dict[str, Any]) -> CARoot:
        return cls(
            ID=r.get("ID") or "",
            Name=r.get("Name") or "",
            RootCertPEM=r.get("RootCert") or "",
            Active=bool(r.get("Active")),
            CreateIndex=int(r.get("CreateIndex") or 0),
            ModifyIndex=int(r.get("ModifyIndex") or 0),
        )


def _time(value: Any) -> datetime | None:
    """An RFC 3339 time from Consul (``2026-11-24T20:09:27Z``) as an aware datetime."""
    if not value:
        return None
    text = str(value)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Go may send nanoseconds; Python takes at most microseconds.
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class LeafCert:
    """A Connect leaf certificate for a service (``caLeaf`` helper)."""

    SerialNumber: str
    CertPEM: str
    PrivateKeyPEM: str
    Service: str
    ServiceURI: str
    ValidAfter: datetime | None
    ValidBefore: datetime | None
    CreateIndex: int
    ModifyIndex: int

    @classmethod
    def from_api(cls, c: dict[str, Any]) -> LeafCert:
        return cls(
            SerialNumber=c.get("SerialNumber") or "",
            CertPEM=c.get("CertPEM") or "",
            PrivateKeyPEM=c.get("PrivateKeyPEM") or "",
            Service=c.get("Service") or "",
            ServiceURI=c.get("ServiceURI") or "",
            ValidAfter=_time(c.get("ValidAfter")),
            ValidBefore=_time(c.get("ValidBefore")),
            CreateIndex=int(c.get("CreateIndex") or 0),
            ModifyIndex=int(c.get("ModifyIndex") or 0),
        )
