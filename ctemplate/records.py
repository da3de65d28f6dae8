"""What templates receive from Consul, with consul-template's field names.

Records are frozen, slotted dataclasses, so ``==`` tells whether data really changed.
Lists are tuples (sorted where consul-template sorts them); maps are plain dicts.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CatalogSnippet",
    "HealthCheck",
    "HealthService",
    "KeyPair",
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
    Passing: int = 1
    Warning: int = 1


@dataclass(frozen=True, slots=True)
class HealthCheck:
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
            Value=decode_value(entry.get("Value")),
            CreateIndex=int(entry.get("CreateIndex") or 0),
            ModifyIndex=int(entry.get("ModifyIndex") or 0),
            LockIndex=int(entry.get("LockIndex") or 0),
            Flags=int(entry.get("Flags") or 0),
            Session=entry.get("Session") or "",
        )


def decode_value(raw: str | None) -> str:
    """KV values arrive base64-encoded; bytes that are not UTF-8 become U+FFFD."""
    if not raw:
        return ""
    return base64.b64decode(raw).decode("utf-8", errors="replace")
