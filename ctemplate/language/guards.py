"""Guards a template puts on its own data: write only output you would accept.

Consul answering "no instances" is a real answer, and an upstream block with no servers is a
valid rendering of it; but it is rarely what should replace a working file (an agent that
restarted empty, a botched deployment). A template says what it needs::

    {% for s in service("web") | require(2, "fewer than 2 web backends") %}
    {% if not key("app/config") %}{{ abort("app/config is empty") }}{% endif %}

``require(items, n=1, message="")`` gives ``items`` back when it holds at least ``n`` entries
(characters, for a string); otherwise, like ``abort(message)``, it stops this render. A stopped
render writes nothing and runs no command: the last good file stays, the runner logs the
message with the template's file and line, and the template is rendered again when its data
changes. With ``-once`` a stopped render makes the exit status 14.

Both are in the function registry (:mod:`.registry`): ``require`` as a function and a filter,
``abort`` as a function.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any, NoReturn

from ..errors import TemplateError

__all__ = ["GuardError", "abort", "require"]


class GuardError(TemplateError):
    """A template refused its own output (``require`` or ``abort``)."""


def require(items: Any, n: Any = 1, message: Any = "") -> Any:
    """``items`` if it has at least ``n`` entries, else stop the render (nothing is written)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise GuardError(f"require: the minimum must be a whole number >= 0, not {n!r}")
    if not isinstance(items, Sized):
        raise GuardError(f"require: expected a list or a string, got {type(items).__name__}")
    count = len(items)
    if count < n:
        if message:
            raise GuardError(f"require: {message} (got {count}, need at least {n})")
        raise GuardError(f"require: got {count} items, need at least {n}")
    return items


def abort(message: Any = "") -> NoReturn:
    """Stop the render: nothing is written, the last good file stays."""
    raise GuardError(f"abort: {message or 'abort() called'}")
