"""consul-template's ``scratch``: a key/value pad that lives for one execution of a template.

``{{ scratch.Set "a" "2" }}{{ scratch.Get "a" }}`` in Go syntax, ``scratch().Set("a", "2")`` in
Jinja (where ``{% set %}`` and ``namespace()`` usually do). Every method returns ``""`` or a
value, never raises for a missing key (Get gives nil/None), as in consul-template.
"""

from __future__ import annotations

from typing import Any

from .execution import current

__all__ = ["Scratch", "scratch"]


class Scratch:
    """The pad; the Go engine may call only the methods listed in ``__go_methods__``."""

    __slots__ = ("_values",)
    __go_methods__ = ("Key", "Get", "Set", "SetX", "MapSet", "MapSetX", "MapValues")

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def Key(self, key: str) -> bool:
        """Whether ``key`` is set."""
        return key in self._values

    def Get(self, key: str) -> Any:
        return self._values.get(key)

    def Set(self, key: str, value: Any) -> str:
        self._values[key] = value
        return ""

    def SetX(self, key: str, value: Any) -> str:
        """Set ``key`` only if it is not set yet."""
        self._values.setdefault(key, value)
        return ""

    def MapSet(self, key: str, name: str, value: Any) -> str:
        """Set ``name`` in the map stored at ``key`` (created if needed)."""
        self._map(key)[name] = value
        return ""

    def MapSetX(self, key: str, name: str, value: Any) -> str:
        self._map(key).setdefault(name, value)
        return ""

    def MapValues(self, key: str) -> list[Any]:
        """The values of the map at ``key``, in the order of their names."""
        mapping = self._values.get(key)
        if not isinstance(mapping, dict):
            return []
        return [mapping[k] for k in sorted(mapping)]

    def _map(self, key: str) -> dict[str, Any]:
        mapping = self._values.get(key)
        if not isinstance(mapping, dict):
            mapping = {}
            self._values[key] = mapping
        return mapping


def scratch() -> Scratch:
    """This execution's pad (a new one for every execution of the template)."""
    p = current.get()
    if p.scratch is None:
        p.scratch = Scratch()
    pad: Scratch = p.scratch
    return pad
