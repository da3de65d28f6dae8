"""The one error type of the Go-syntax front end."""

from __future__ import annotations

from ...errors import TemplateError

__all__ = ["GoTemplateError"]


class GoTemplateError(TemplateError):
    """A Go template failed to parse or to execute.

    ``str()`` is ``name:line:col: message``; for execution errors the message is Go's
    ``executing "T" at <node>: what``. ``col`` is Go's column: a 0-based byte offset in the line.
    The pieces are kept as attributes so a caller can lay the line out differently:
    ``name``, ``line``, ``col``, ``detail`` (the message without the location) and ``phase``
    (``"parse"`` or ``"execute"``). An exception raised by a template function is chained as
    ``__cause__`` (and kept as ``cause``), so a caller can tell a deliberate stop (a guard, a
    missing-data signal) from a template mistake.
    """

    def __init__(
        self,
        name: str,
        line: int,
        col: int,
        detail: str,
        *,
        phase: str,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(f"{name}:{line}:{col}: {detail}" if line else f"{name}: {detail}")
        self.name = name
        self.line = line
        self.col = col
        self.detail = detail
        self.phase = phase
        self.cause = cause
