"""The data functions (they read Consul through the cache) and the local functions that need to
know which template is executing (``file``, ``writeToFile``), with consul-template's names.

Each records what it reads (:mod:`.execution`) and returns an empty value until the answer is
there. The other local functions (``env``, ``plugin``, ``timestamp``) are in :mod:`.local`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..consul.queries import (
    AgentSelfQuery,
    ConnectCARootsQuery,
    FileProblem,
    FileQuery,
    KVGetQuery,
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
from ..errors import TemplateError
from . import local
from .execution import current, held, lookup, missing, recall, too_big

log = logging.getLogger(__name__)


# --- Consul data functions (names as in consul-template) ---------------------------------------


# The functions of jinja.DATA_CALLS (called by a Jinja template without the sandbox's layers)
# hold what they return to execution_max_size themselves (``held``; ``key`` inline).


def service(*args: Any) -> Any:
    """``service("[tag.]name[@dc][~near][|filter,...]")``: healthy instances, sorted by node."""
    return held("service()", lookup(parse_service(args), ()))


def connect(*args: Any) -> Any:
    """``connect("name")``: Connect-capable instances (sidecar proxies or native services)."""
    return held("connect()", lookup(parse_connect(args), ()))


def services(*args: Any) -> Any:
    return held("services()", lookup(parse_services(args), ()))


@functools.lru_cache(maxsize=16384)
def _key_query(text: str) -> tuple[KVGetQuery, str]:
    """``key(text)``'s query and its cache key, parsed and formatted once per text (a bad
    key raises every time: exceptions are not cached)."""
    query = parse_key("key", text, block=True)
    return query, str(query)


_ABSENT = object()


def key(path: Any) -> str:
    """A key's value; the template waits until the key exists.

    :func:`.execution.recall` written out: a template may call it a thousand times per
    execution (one query key built per text, once; one context lookup per call)."""
    if type(path) is str:
        if not path:
            return ""
        query, cache_key = _key_query(path)
    else:
        if path == "":  # (an undefined value is not "": its query is refused, naming it)
            return ""
        query, cache_key = _key_query(str(path))
    p = current.get()
    execution = p.execution
    execution.used[cache_key] = query
    value = p.data.get(cache_key, _ABSENT)
    if value is _ABSENT:
        execution.missing[cache_key] = query
        return ""
    if type(value) is not str:
        value = "" if value is None else str(value)
    if len(value) > p.options.max_size:
        raise too_big("key()", len(value), p.options.max_size)
    return value


def key_exists(path: Any) -> bool:
    if path == "":
        return False
    return lookup(parse_key("keyExists", path), None) is not None


def key_or_default(path: Any, default: Any = "") -> Any:
    """The key's value, or ``default`` when the key is absent or empty."""
    if path == "":
        return default
    value = lookup(parse_key("keyOrDefault", path), None)
    return default if value in (None, "") else held("keyOrDefault()", value)


def _pairs(kind: str, prefix: Any, keep: Callable[[str], bool], *, safe: bool) -> Any:
    if prefix == "":
        return ()
    query = parse_prefix(kind, prefix)
    found, value = recall(query)
    if not found:
        return ()
    pairs = tuple(p for p in value if keep(p.Key))
    if safe and not pairs:
        missing(query)  # safeLs/safeTree: an empty answer must not be rendered
    return pairs


def ls(prefix: Any) -> Any:
    """Top-level keys under a prefix (no folders, nothing nested)."""
    return _pairs("ls", prefix, lambda k: bool(k) and "/" not in k, safe=False)


def safe_ls(prefix: Any) -> Any:
    """``ls``, but an empty answer keeps the template from being written."""
    return _pairs("safeLs", prefix, lambda k: bool(k) and "/" not in k, safe=True)


def tree(prefix: Any) -> Any:
    """Every key under a prefix, nested ones included (folders left out)."""
    return _pairs("tree", prefix, lambda k: bool(k) and not k.endswith("/"), safe=False)


def safe_tree(prefix: Any) -> Any:
    return _pairs("safeTree", prefix, lambda k: bool(k) and not k.endswith("/"), safe=True)


def node(*args: Any) -> Any:
    """``node()`` (the local agent's node) or ``node("name[@dc]")``: a CatalogNode, or None for
    an unknown node."""
    query = parse_node(args)
    if not query.name:
        name = lookup(AgentSelfQuery(), None)
        if name is None:
            return None
        query = replace(query, name=name)
    return lookup(query, None)


def nodes(*args: Any) -> Any:
    return lookup(parse_nodes(args), ())


def datacenters(*args: Any) -> Any:
    return lookup(parse_datacenters(args), ())


def ca_roots() -> Any:
    return lookup(ConnectCARootsQuery(), ())


def ca_leaf(*args: Any) -> Any:
    return lookup(parse_leaf(args), None)


# --- local functions ------------------------------------------------------------------------


def file(path: Any) -> str:
    """A local file's contents, watched for changes (re-read within 2 seconds)."""
    text = str(path)
    if not text:
        return ""
    sandbox = current.get().options.sandbox
    if sandbox:
        local.check_sandbox(text, sandbox)
    value = lookup(FileQuery(text, sandbox=sandbox), "")
    if isinstance(value, FileProblem):
        raise TemplateError(value.message)
    return str(value)


def _skip_side_effect(what: str) -> bool:
    p = current.get()
    if p.execution.missing:
        return True  # a discovery pass: the content may still be incomplete
    if p.options.dry:
        log.debug("(template) -dry: %s not written", what)
        return True
    return False


def write_to_file(
    path: Any,
    content: Any,
    perms: Any = None,
    append: bool = False,
    newline: bool = False,
    user: Any = None,
    group: Any = None,
) -> str:
    """``writeToFile(path, content, perms="0644", append=false, newline=false)``."""
    if _skip_side_effect(f"writeToFile({str(path)!r})"):
        return ""
    return local.write_to_file(
        path,
        content,
        perms,
        append,
        newline,
        user,
        group,
        sandbox=current.get().options.sandbox,
    )


def write_to_file_filter(
    content: Any,
    path: Any,
    perms: Any = None,
    append: bool = False,
    newline: bool = False,
    user: Any = None,
    group: Any = None,
) -> str:
    """``content | writeToFile(path, ...)``."""
    return write_to_file(path, content, perms, append, newline, user, group)


def write_to_file_go(path: Any, user: Any, group: Any, perms: Any, *args: Any) -> str:
    """consul-template's Go form: ``writeToFile path user group perms [flags] content``
    (``content | writeToFile "/p" "" "" "0644" "append,newline"``); flags may hold ``append``
    and ``newline``; an empty user or group leaves the owner as it is."""
    if len(args) not in (1, 2):
        raise TemplateError(
            f"writeToFile: expected path, user, group, perms, [flags,] content; got "
            f"{4 + len(args)} arguments"
        )
    flags = str(args[0]) if len(args) == 2 else ""
    return write_to_file(
        path,
        args[-1],
        perms,
        "append" in flags,
        "newline" in flags,
        user or None,
        group or None,
    )


def plugin_filter(value: Any, command: Any, *args: Any) -> str:
    """``value | plugin(cmd, args...)``: the piped value is the last argument."""
    return local.plugin(command, *args, value)
