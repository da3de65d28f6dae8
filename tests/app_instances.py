"""The instances of ``app-<unique>`` that the example templates are tested against (shared by
tests/integration/test_templates_contrib.py and test_go_syntax.py).

Passing and tagged production: 10.0.0.11:3001, [fd00::13]:3003, the node's own address (no
service address) with an ID that HAProxy cannot use as a name. Left out by the templates: a
critical one, one tagged staging only, and one whose address would inject directives.
"""

from __future__ import annotations

from consul_harness import ConsulAgent

SPECS = [
    ("a-1", "10.0.0.11", 3001, ("production",), "passing"),
    ("a-2", "10.0.0.12", 3002, ("production",), "critical"),
    ("a-3", "fd00::13", 3003, ("production", "v2"), "passing"),
    ("a-4", "10.0.0.14; } server { listen 80", 3004, ("production",), "passing"),
    ("a-5", "10.0.0.15", 3005, ("staging",), "passing"),
    ("a 6@x", None, 3006, ("production",), "passing"),
]


def register_app_instances(consul: ConsulAgent, unique: str) -> tuple[str, list[str]]:
    """Register the instances; the service name and the instance IDs (to deregister)."""
    name = f"app-{unique}"
    ids = []
    for suffix, address, port, tags, status in SPECS:
        sid = f"{name}-{suffix}"
        ids.append(sid)
        consul.register_service(
            name,
            id=sid,
            port=port,
            address=address,
            tags=tags,
            check={"CheckID": f"{sid}-ttl", "TTL": "10m", "Status": status},
        )
    return name, ids


def deregister(consul: ConsulAgent, ids: list[str]) -> None:
    for sid in ids:
        consul.request("PUT", f"/v1/agent/service/deregister/{sid}")
