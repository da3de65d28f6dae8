"""One execution of a template, whatever its syntax: "execute to discover".

A template is executed against the cache of query results (query key -> value). Each data function
(``service``, ``key``, ``file``, ...) notes the query it needs through :func:`recall`; if the cache
has no answer yet the query is noted as missing and the function returns an empty value. The
runner watches what is missing and executes again when data arrives; output is written only from
an execution in which nothing was missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ..consul.queries import Query
from ..errors import TemplateError

__all__ = ["Execution", "Options", "Pass", "current", "lookup", "missing", "recall"]


@dataclass(slots=True)
class Execution:
    """The result of executing a template once."""

    text: str | None = None  # None when something was missing or it failed
    used: dict[str, Query] = field(default_factory=dict)
    missing: dict[str, Query] = field(default_factory=dict)
    error: TemplateError | None = None

    @property
    def complete(self) -> bool:
        return self.text is not None and not self.missing and self.error is None


@dataclass(frozen=True, slots=True)
class Options:
    """What functions need to know about the template being executed."""

    sandbox: str | None = None  # real path of sandbox_path
    dry: bool = False


@dataclass(slots=True)
class Pass:
    data: Mapping[str, Any]
    execution: Execution
    options: Options
    scratch: Any = None  # the template's scratch pad (language/scratch.py), made on first use


current: ContextVar[Pass] = ContextVar("ctemplate_pass")


def recall(query: Query) -> tuple[bool, Any]:
    """Note ``query`` as used; its cached answer, if there is one."""
    p = current.get()
    key = str(query)
    p.execution.used[key] = query
    if key in p.data:
        return True, p.data[key]
    p.execution.missing[key] = query
    return False, None


def missing(query: Query) -> None:
    current.get().execution.missing[str(query)] = query


def lookup(query: Query, empty: Any) -> Any:
    found, value = recall(query)
    return value if found else empty
