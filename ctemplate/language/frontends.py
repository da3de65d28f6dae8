"""Both template front ends behind one ``load``: each template is compiled in its own syntax.

The syntax is the template block's ``syntax``, or else its source's extension (``.ctmpl``,
``.tmpl``, ``.tpl``, ``.gotmpl``: Go; anything else and inline ``contents``: Jinja); see
:attr:`ctemplate.config.TemplateConfig.template_syntax`.
"""

from __future__ import annotations

from collections.abc import Mapping
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
            return compiled
        if self._jinja is None:
            from .jinja import TemplateEngine

            self._jinja = TemplateEngine(self._config)
        compiled = self._jinja.load(tc)
        return compiled
