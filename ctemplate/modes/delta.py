"""Differences between two JSON documents, small enough to travel in a Consul user event.

De-duplication's leader announces each new payload with a user event (gossiped to every agent,
so followers learn of it without a request to the servers). When what changed is small (a check
flips, an instance registers), the event carries the change itself: a list of operations that
turns the previous payload into the new one. The follower applies them and checks the result
against the new payload's hash; anything that does not match exactly is thrown away and the
payload is read from the KV store instead, so a wrong or forged difference can cost a read but
never a wrong file.

Operations (paths are lists of object keys and array positions)::

    ["s", path, value]                 set: the value at ``path`` (``[]`` replaces everything)
    ["d", path]                        delete the object member at ``path``
    ["l", path, start, end, items]     replace ``array[start:end]`` at ``path`` with ``items``
"""

from __future__ import annotations

from typing import Any

__all__ = ["DeltaError", "apply", "diff"]

Path = list[str | int]


class DeltaError(ValueError):
    """A difference that does not fit the document it is applied to."""


def diff(old: Any, new: Any) -> list[list[Any]]:
    """The operations that turn ``old`` into ``new`` (both JSON values)."""
    ops: list[list[Any]] = []
    _diff(old, new, [], ops)
    return ops


def _same(a: Any, b: Any) -> bool:
    # 1 == True == 1.0 in Python but not in JSON's text: compare types too, at the leaves.
    return type(a) is type(b) and a == b


def _diff(a: Any, b: Any, path: Path, ops: list[list[Any]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a.keys() - b.keys():
            ops.append(["d", [*path, key]])
        for key, value in b.items():
            if key not in a:
                ops.append(["s", [*path, key], value])
            elif not _same(a[key], value):
                _diff(a[key], value, [*path, key], ops)
        return
    if isinstance(a, list) and isinstance(b, list):
        start = 0
        shortest = min(len(a), len(b))
        while start < shortest and _same(a[start], b[start]):
            start += 1
        tail = 0
        while tail < shortest - start and _same(a[-1 - tail], b[-1 - tail]):
            tail += 1
        a_end, b_end = len(a) - tail, len(b) - tail
        if a_end - start == b_end - start:  # same length: the elements changed in place
            for i in range(start, a_end):
                if not _same(a[i], b[i]):
                    _diff(a[i], b[i], [*path, i], ops)
        else:
            ops.append(["l", path, start, a_end, b[start:b_end]])
        return
    ops.append(["s", path, b])


def apply(doc: Any, ops: list[Any]) -> Any:
    """``doc`` changed by ``ops`` (in place where it can be; the result is returned).

    Raises :class:`DeltaError` when an operation does not fit the document.
    """
    if not isinstance(ops, list):
        raise DeltaError("a difference is a list of operations")
    for op in ops:
        if not isinstance(op, list) or len(op) < 2 or not isinstance(op[1], list):
            raise DeltaError("an operation is [verb, path, ...]")
        verb, path = op[0], op[1]
        if verb == "s" and len(op) == 3:
            if not path:
                doc = op[2]
                continue
            parent = _walk(doc, path[:-1])
            _set(parent, path[-1], op[2])
        elif verb == "d" and len(op) == 2 and path:
            parent = _walk(doc, path[:-1])
            if not isinstance(parent, dict) or path[-1] not in parent:
                raise DeltaError("delete of a member that does not exist")
            del parent[path[-1]]
        elif verb == "l" and len(op) == 5:
            target = _walk(doc, path)
            start, end, items = op[2], op[3], op[4]
            if (
                not isinstance(target, list)
                or not isinstance(items, list)
                or not _index(start, len(target) + 1)
                or not _index(end, len(target) + 1)
                or start > end
            ):
                raise DeltaError("an array splice that does not fit")
            target[start:end] = items
        else:
            raise DeltaError(f"unknown operation {verb!r}")
    return doc


def _index(value: Any, size: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < size


def _fits(container: Any, step: Any, *, member: bool) -> bool:
    """Whether ``step`` names a place in ``container`` (an existing member, when ``member``)."""
    if isinstance(container, dict):
        return isinstance(step, str) and (step in container or not member)
    return isinstance(container, list) and _index(step, len(container))


def _walk(doc: Any, path: list[Any]) -> Any:
    for step in path:
        if not _fits(doc, step, member=True):
            raise DeltaError("a path that does not exist")
        doc = doc[step]
    return doc


def _set(parent: Any, step: Any, value: Any) -> None:
    if not _fits(parent, step, member=False):
        raise DeltaError("a path that does not exist")
    parent[step] = value
