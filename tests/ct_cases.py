"""consul-template's own template test cases, carried as data (tests/data/ct_cases.json).

The cases come from ``TestTemplate_Execute`` in consul-template's ``template/template_test.go``
(the commit is in the file): each has the Go template text exactly as there, the expected bytes
(or ``null`` when consul-template expects an error), and ``seed``: the data its fake "brain"
held, written as what a real agent must hold to give the same answers:

* ``kv``: keys and values;
* ``services``: instances (``node1`` is the agent itself, ``node2`` an external node);
* ``nodes``: external nodes without services;
* ``files``: files to create (``%s`` in the template is replaced by the path);
* ``connect``: the services are Connect-native.

``kind`` is ``render`` (expected bytes), ``error`` (must fail, nothing written) or
``discovery``: consul-template renders these with no data at all (its first pass, when
nothing has arrived yet) and expects no error; ctemplate never writes a pass with missing data,
so the equivalent check is that executing the template with an empty cache fails on nothing.

``clock``: consul-template's test pins its clock to the Unix epoch (``now = ...``); these run
in-process with ctemplate's clock (``language.local.now``) pinned the same way, the only part of
the suite that is not a run of the ``ctemplate`` command.

``expected_from_agent``: ``ca_roots`` / ``ca_leaf``: consul-template's fake CA answer held
"PEM"/"KEY"; a real agent has a real CA, so the expected bytes are what the agent itself returns
for ``/v1/agent/connect/ca/roots`` (every root's ``RootCertPEM``) or the leaf of ``foo``.

``needs``: ``vault``, ``nomad``, ``sprig`` (out of scope) or ``go-api`` (a Go caller's own
function map, not a template feature).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data" / "ct_cases.json"

# Cases in scope that ctemplate does not render as consul-template does, and why. The docs
# (docs/templates.md, "consul-template's own test cases") list the same; a test checks that
# each still fails, so the list cannot go stale.
EXCEPTIONS: dict[str, str] = {
    "func_node": (
        "a real agent's node always carries the `consul` service, so `range .Services` prints "
        "consulservice1 where the fake answer held only service1"
    ),
    "func_services": (
        "a real catalog always lists the `consul` service: consulservice1service2 instead of "
        "service1service2"
    ),
    "func_peerings": "`peerings` is not provided (cluster peering needs Consul 1.13+)",
    "helper_sockaddr": "`sockaddr` (go-sockaddr's template language) is not provided",
}


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DATA.read_text(encoding="utf-8"))
    return data


def cases() -> list[dict[str, Any]]:
    return list(load()["cases"])


def in_scope() -> list[dict[str, Any]]:
    """The cases that need neither Vault, Nomad, sprig nor Go's API."""
    return [c for c in cases() if "needs" not in c]
