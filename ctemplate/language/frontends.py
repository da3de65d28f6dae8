"""Both template front ends behind one ``load``: each template is compiled in its own syntax.

The syntax is the template block's ``syntax``, or else its source's extension (``.ctmpl``,
``.tmpl``, ``.tpl``, ``.gotmpl``: Go; anything else and inline ``contents``: Jinja); see
:attr:`ctemplate.config.TemplateConfig.template_syntax`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..config import Config, TemplateConfig
from .execution import Execution

__all__ = ["Compiled", "TemplateEngines"]


class Compiled(Protocol):
    """A compiled template, whatever its syntax."""

    name: str
    syntax: str
    text: str  # the source, as compiled

    def execute(self, data: Mapping[str, Any]) -> Execution: ...


class TemplateEngines:
    """The Jinja and Go front ends, each created on first use."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._jinja: Any = None
        self._go: Any = None

    def load(self, tc: TemplateConfig) -> Compiled:
        if tc.template_syntax == "go":
            if self._go is None:
                from .go import GoTemplateEngine

                self._go = GoTemplateEngine(self._config)
            compiled: Compiled = self._go.load(tc)
            self._after_compile(compiled)
            return compiled
        if self._jinja is None:
            from .jinja import TemplateEngine

            self._jinja = TemplateEngine(self._config)
        compiled = self._jinja.load(tc)
        self._after_compile(compiled)
        return compiled

    def _after_compile(self, compiled: Compiled) -> None:
        """Give the memory a compile used back to the system, in a daemon.

        Compiling a template peaks at several hundred times its size in C heap (Jinja's
        generated Python source, its syntax tree, ``compile()``), which glibc frees but keeps:
        a template of 1,000 ``key()`` calls (24 KiB) left a daemon 14 MiB larger for its whole
        life (bench/once.py, idle RSS). ``-once`` exits anyway, and below 2 KiB of source
        there is less to give back than ctypes itself costs.
        """
        if self._config.once or len(compiled.text) < _TRIM_FROM:
            return
        trim = _malloc_trim()
        if trim is not None:
            trim(0)


_TRIM_FROM = 2048  # bytes of template source; a compile of 2 KiB peaks at ~1 MiB


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (returns freed heap pages to the system), or None elsewhere
    (musl, macOS), where nothing is done."""
    import ctypes

    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim
