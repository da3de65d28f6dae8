"""Errors ctemplate reports to its users.

Every message says where (file, line, key or query), what is wrong, and what to do.

    CtemplateError
     ├── ConfigError      bad flags, config files, environment values
     ├── QueryError       a malformed query string in a template ("web@")
     ├── ConsulError      Consul could not be reached or answered with an error
     ├── TemplateError    a template failed to load or render (file:line)
     ├── RenderError      the output file could not be written
     └── CommandError     a command failed or timed out
"""

from __future__ import annotations

__all__ = [
    "CommandError",
    "ConfigError",
    "ConsulError",
    "CtemplateError",
    "QueryError",
    "RenderError",
    "TemplateError",
]


class CtemplateError(Exception):
    """Base class of every error ctemplate reports; str() is the one-line message."""


class ConfigError(CtemplateError):
    """Bad configuration: the message names the file and key (or the flag)."""


class QueryError(CtemplateError):
    """A query string in a template does not follow the grammar."""


class ConsulError(CtemplateError):
    """A request to Consul failed.

    ``transient`` is true for failures worth retrying (connection errors, 5xx, 429).
    """

    def __init__(self, message: str, *, transient: bool = True, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


class TemplateError(CtemplateError):
    """A template could not be loaded or rendered; the message starts with file:line."""


class RenderError(CtemplateError):
    """The destination file could not be written."""


class CommandError(CtemplateError):
    """A command exited non-zero or ran past its timeout."""
