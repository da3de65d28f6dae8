"""One execution of a template, whatever its syntax: "execute to discover".

A template is executed against the cache of query results (query key -> value). Each data function
(``service``, ``key``, ``file``, ...) notes the query it needs through :func:`recall`; if the cache
has no answer yet the query is noted as missing and the function returns an empty value. The
runner watches what is missing and executes again when data arrives; output is written only from
an execution in which nothing was missing.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ..config import TemplateConfig
from ..consul.queries import Query
from ..errors import TemplateError

__all__ = [
    "SIZED",
    "BudgetExceeded",
    "Execution",
    "Options",
    "Pass",
    "check_budget",
    "check_size",
    "current",
    "held",
    "lookup",
    "missing",
    "options_for",
    "read_source",
    "recall",
    "too_big",
]


class BudgetExceeded(TemplateError):
    """An execution went past ``execution_timeout`` or ``execution_max_size``."""


def too_big(what: str, size: int, limit: int) -> BudgetExceeded:
    """The error for a value that ``what`` would make past ``execution_max_size``."""
    return BudgetExceeded(
        f"{what} would make a value of {size:,} bytes or items, past execution_max_size "
        f"({limit:,}); raise execution_max_size if this is meant"
    )


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
    timeout: float = math.inf  # execution_timeout, seconds
    max_size: int = 64 * 1024 * 1024  # execution_max_size, bytes (output, any one value)
    plugin_max_output: int = 1024 * 1024  # bytes


def options_for(tc: TemplateConfig, *, dry: bool) -> Options:
    """A template's options, as every front end compiles it."""
    return Options(
        sandbox=os.path.realpath(tc.sandbox_path) if tc.sandbox_path else None,
        dry=dry,
        timeout=tc.execution_timeout,
        max_size=tc.execution_max_size,
        plugin_max_output=tc.plugin_max_output,
    )


def read_source(tc: TemplateConfig) -> str:
    """The template's text: its source file or its inline contents."""
    if tc.source is None:
        return tc.contents or ""
    try:
        with open(tc.source, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise TemplateError(
            f"{tc.origin}: source {tc.source!r} does not exist; check the path"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{tc.origin}: cannot read source {tc.source!r}: {exc}") from exc


@dataclass(slots=True)
class Pass:
    """The state of one pass of an execution: its data, options and budget so far."""

    data: Mapping[str, Any]
    execution: Execution
    options: Options
    scratch: Any = None  # the template's scratch pad (language/scratch.py), made on first use
    deadline: float = math.inf  # time.monotonic() past which check_budget() fails
    size: int = 0  # bytes of output so far


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


# Values whose length execution_max_size bounds (characters, bytes or items).
SIZED = (str, bytes, bytearray, list, tuple, dict)
_SIZED_EXACT = frozenset(SIZED)  # checked by exact type first: a set lookup


def check_size(what: str, value: Any, limit: int) -> None:
    """Refuse ``value``, made by ``what``, if its length is past ``limit``."""
    if (type(value) in _SIZED_EXACT or isinstance(value, SIZED)) and len(value) > limit:
        raise too_big(what, len(value), limit)


def held(what: str, value: Any) -> Any:
    """``value``, refused if its length is past ``execution_max_size``: what a data function
    returns, for the functions a Jinja template calls without the sandbox's result check
    (``jinja.DATA_CALLS``)."""
    check_size(what, value, current.get().options.max_size)
    return value


def check_budget(output: int = 0) -> None:
    """Count ``output`` more bytes of output; raise :class:`BudgetExceeded` past the execution's
    deadline or size budget.

    Every front end calls it per output chunk (and may per loop iteration): it is the cheap,
    cooperative check. The watchdog of :mod:`.budget` stops what never reaches it (a loop that
    writes nothing)."""
    p = current.get()
    if output:
        p.size += output
        if p.size > p.options.max_size:
            raise BudgetExceeded(
                f"the output passed execution_max_size ({p.options.max_size:,} bytes); raise "
                "execution_max_size if this is meant"
            )
    if time.monotonic() > p.deadline:
        raise BudgetExceeded(
            f"execution stopped: did not finish within {p.options.timeout:g}s; raise "
            "execution_timeout if it needs longer"
        )
