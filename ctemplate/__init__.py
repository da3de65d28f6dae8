"""ctemplate: render files from Consul data with Jinja2 templates, and reload what uses them.

A consul-template compatible daemon: same flags, same HCL configuration, same template helpers
(``service``, ``key``, ``ls``, ``tree``, ...), with Jinja2 instead of Go templates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CommandError",
    "Config",
    "ConfigError",
    "ConsulError",
    "CtemplateError",
    "QueryError",
    "RenderError",
    "TemplateConfig",
    "TemplateError",
    "__version__",
    "run",
]

from .errors import (
    CommandError,
    ConfigError,
    ConsulError,
    CtemplateError,
    QueryError,
    RenderError,
    TemplateError,
)

if TYPE_CHECKING:
    from .config import Config, TemplateConfig
    from .runner import run


def __getattr__(name: str) -> Any:
    # Imported lazily: `ctemplate -version` must not pay for httpx and jinja2.
    if name in ("Config", "TemplateConfig"):
        from . import config

        return getattr(config, name)
    if name == "run":
        from .runner import run

        return run
    raise AttributeError(name)
