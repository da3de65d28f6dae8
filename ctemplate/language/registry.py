"""One registry of template functions: each consul-template function defined once, bound by every
front end.

A :class:`Function` has consul-template's name, the Python callable that implements it (its
parameters are that callable's signature) and its kind:

* ``helper``: pure; the same arguments always give the same result;
* ``data``: reads Consul (or a watched file) through the cache and records the query it needs;
* ``local``: touches the host: environment, clock, programs, files it writes.

``subject``: the function takes the value it works on first (``subtract(10, 3)`` is 7). Jinja binds
such a function both as a function and as a filter (``10 | subtract(3)``); Go syntax passes a
pipeline's value last, so it binds it with the subject moved to the end (``subtract 3 10``,
``10 | subtract 3``). A function without a subject is called with its arguments as written in both.
``go_impl``: the Go-syntax callable when consul-template's Go signature is neither of those
(``hmacSHA256Hex "message" "key"``, ``loop 3 6``, ``mergeMap $dst $src`` take their arguments as
written; ``writeToFile`` has its own argument order). It must wrap the one implementation, never
copy it.

Adding a function is one entry in :data:`REGISTRY`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from . import functions, guards, helpers, local, scratch

__all__ = ["REGISTRY", "Function", "Kind"]

Kind = Literal["helper", "data", "local"]


@dataclass(frozen=True, slots=True)
class Function:
    """A template function: its implementation, kind and forms in each syntax."""

    name: str
    impl: Callable[..., Any]
    kind: Kind
    subject: bool = False
    # Jinja: its filter form when that is not ``impl`` itself (None: derived from ``subject``).
    jinja_filter: Callable[..., Any] | None = None
    # False: no Jinja filter of this name (Jinja's own filter of that name stays).
    filter_in_jinja: bool = True
    # Go syntax: its callable when it is neither ``impl`` nor ``impl`` with the subject last.
    go_impl: Callable[..., Any] | None = None

    @property
    def reads_consul(self) -> bool:
        return self.kind == "data"

    @property
    def params(self) -> str:
        """The parameters, as in ``service(*args)`` or ``subtract(a, b)``."""
        return str(inspect.signature(self.impl))

    def filter(self) -> Callable[..., Any] | None:
        """The Jinja filter (subject first), or None when the function is not a filter."""
        if not self.filter_in_jinja:
            return None
        if self.jinja_filter is not None:
            return self.jinja_filter
        return self.impl if self.subject else None

    def go(self) -> Callable[..., Any]:
        """The callable for Go syntax: a subject comes last, as a pipeline passes it."""
        if self.go_impl is not None:
            return self.go_impl
        impl = self.impl
        if not self.subject:
            return impl

        def subject_last(*args: Any, **kwargs: Any) -> Any:
            if not args:
                return impl(**kwargs)
            return impl(args[-1], *args[:-1], **kwargs)

        subject_last.__name__ = self.name
        subject_last.__qualname__ = getattr(impl, "__qualname__", self.name)
        return subject_last


# consul-template's Go functions whose arguments come in the Python order already (not subject
# last): hmacSHA256Hex(message, key), loop(start, stop), mergeMap(dst, src).
_GO_AS_WRITTEN = frozenset({"hmacSHA256Hex", "loop", "mergeMap", "mergeMapWithOverride"})


def _helpers(*entries: tuple[str, Callable[..., Any]]) -> list[Function]:
    return [
        Function(
            name, impl, "helper", subject=True, go_impl=impl if name in _GO_AS_WRITTEN else None
        )
        for name, impl in entries
    ]


_ENTRIES: list[Function] = [
    # --- Consul data ------------------------------------------------------------------------
    Function("caLeaf", functions.ca_leaf, "data"),
    Function("caRoots", functions.ca_roots, "data"),
    Function("connect", functions.connect, "data"),
    Function("datacenters", functions.datacenters, "data"),
    Function("key", functions.key, "data"),
    Function("keyExists", functions.key_exists, "data"),
    Function("keyOrDefault", functions.key_or_default, "data"),
    Function("ls", functions.ls, "data"),
    Function("node", functions.node, "data"),
    Function("nodes", functions.nodes, "data"),
    Function("safeLs", functions.safe_ls, "data"),
    Function("safeTree", functions.safe_tree, "data"),
    Function("service", functions.service, "data"),
    Function("services", functions.services, "data"),
    Function("tree", functions.tree, "data"),
    Function("file", functions.file, "data"),  # a watched local file, read through the cache
    # --- the host ---------------------------------------------------------------------------
    Function("env", local.env, "local"),
    Function("envOrDefault", local.env_or_default, "local"),
    Function("mustEnv", local.must_env, "local"),
    Function("timestamp", local.timestamp, "local"),
    Function("plugin", local.plugin, "local", jinja_filter=functions.plugin_filter),
    Function(
        "writeToFile",
        functions.write_to_file,
        "local",
        jinja_filter=functions.write_to_file_filter,
        go_impl=functions.write_to_file_go,
    ),
    Function("scratch", scratch.scratch, "local"),  # per execution: touches no host, not pure
    # --- guards -----------------------------------------------------------------------------
    Function("require", guards.require, "helper", subject=True),
    Function("abort", guards.abort, "helper"),
    # --- helpers ----------------------------------------------------------------------------
    *_helpers(*helpers.SUBJECT_FIRST.items()),
    # Jinja's own ``join`` filter already takes the list first (``tags | join(",")``).
    Function("join", helpers.join, "helper", subject=True, filter_in_jinja=False),
]

REGISTRY: dict[str, Function] = {f.name: f for f in sorted(_ENTRIES, key=lambda f: f.name)}
assert len(REGISTRY) == len(_ENTRIES), "a function is registered twice"
