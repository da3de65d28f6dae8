"""Templates: one Jinja environment, consul-template's helpers, and "execute to discover".

A template is executed against the cache of query results. Each helper records the query it
needs; if the cache has no answer yet the helper records the query as missing and returns an
empty value. The runner watches what is missing and executes again when data arrives; output is
written only from an execution in which nothing was missing.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, NoReturn

import jinja2
from jinja2 import StrictUndefined

from .config import Config, TemplateConfig
from .errors import CtemplateError, TemplateError
from .queries import Query, parse_key, parse_prefix, parse_service, parse_services

__all__ = ["CompiledTemplate", "Execution", "TemplateEngine"]


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


@dataclass(slots=True)
class _Pass:
    data: Mapping[str, Any]
    execution: Execution


_current: ContextVar[_Pass] = ContextVar("ctemplate_pass")


def _lookup(query: Query, empty: Any) -> Any:
    p = _current.get()
    key = str(query)
    p.execution.used[key] = query
    if key in p.data:
        return p.data[key]
    p.execution.missing[key] = query
    return empty


# --- Consul data helpers (names as in consul-template) ---------------------------------------


def service(*args: Any) -> Any:
    return _lookup(parse_service(args), ())


def services(*args: Any) -> Any:
    return _lookup(parse_services(args), ())


def key(path: Any) -> str:
    value = _lookup(parse_key("key", path, block=True), "")
    return "" if value is None else str(value)


def key_exists(path: Any) -> bool:
    return _lookup(parse_key("keyExists", path), None) is not None


def key_or_default(path: Any, default: Any = "") -> Any:
    value = _lookup(parse_key("keyOrDefault", path), None)
    return default if value in (None, "") else value


def ls(prefix: Any) -> Any:
    pairs = _lookup(parse_prefix("ls", prefix), ())
    return tuple(p for p in pairs if p.Key and "/" not in p.Key)


def tree(prefix: Any) -> Any:
    pairs = _lookup(parse_prefix("tree", prefix), ())
    return tuple(p for p in pairs if p.Key and not p.Key.endswith("/"))


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


GLOBALS: dict[str, Callable[..., Any]] = {
    "env": _env,
    "key": key,
    "keyExists": key_exists,
    "keyOrDefault": key_or_default,
    "ls": ls,
    "service": service,
    "services": services,
    "tree": tree,
}


# --- undefined values that say what was meant -------------------------------------------------


def _names_of(obj: Any) -> list[str]:
    if is_dataclass(obj) and not isinstance(obj, type):
        return [f.name for f in fields(obj)]
    if isinstance(obj, Mapping):
        return [str(k) for k in obj]
    return []


class _Undefined(StrictUndefined):
    """StrictUndefined whose error names the type and suggests the nearest field."""

    __slots__ = ()

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> NoReturn:
        obj = self._undefined_obj
        name = self._undefined_name
        if obj is jinja2.utils.missing or name is None:
            raise jinja2.UndefinedError(self._undefined_message)
        kind = type(obj).__name__
        what = "key" if isinstance(obj, Mapping) else "attribute"
        message = f"{kind} has no {what} {name!r}"
        close = difflib.get_close_matches(str(name), _names_of(obj), n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        raise jinja2.UndefinedError(message)

    __iter__ = __str__ = __len__ = __eq__ = __ne__ = __bool__ = __hash__ = (
        _fail_with_undefined_error
    )
    __contains__ = _fail_with_undefined_error


def _error_line(exc: BaseException, filename: str) -> int | None:
    """The template line an exception was raised from (Jinja rewrites tracebacks)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class CompiledTemplate:
    def __init__(self, name: str, template: jinja2.Template) -> None:
        self.name = name
        self._template = template

    def execute(self, data: Mapping[str, Any]) -> Execution:
        """Render against ``data`` (query key -> value), noting used and missing queries."""
        execution = Execution()
        token = _current.set(_Pass(data, execution))
        try:
            execution.text = self._template.render()
        except Exception as exc:
            if not execution.missing:
                execution.error = self._error(exc)
        finally:
            _current.reset(token)
        if execution.missing:
            execution.text = None
        return execution

    def _error(self, exc: BaseException) -> TemplateError:
        line = _error_line(exc, self.name)
        where = f"{self.name}:{line}" if line else self.name
        if isinstance(exc, CtemplateError | jinja2.TemplateError):
            message = str(exc) if str(exc) else type(exc).__name__
        else:
            message = f"{type(exc).__name__}: {exc}"
        error = TemplateError(f"{where}: {message}")
        error.__cause__ = exc
        return error


class TemplateEngine:
    """One Jinja environment with the helpers registered once; per-template delimiters use
    overlays of it."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self.env = jinja2.Environment(
            undefined=_Undefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )
        self.env.globals.update(GLOBALS)

    def source_name(self, tc: TemplateConfig) -> str:
        return tc.source if tc.source else f"{tc.origin or 'template'}.contents"

    def load(self, tc: TemplateConfig) -> CompiledTemplate:
        """Compile a template; a missing file or a syntax error is a TemplateError."""
        name = self.source_name(tc)
        if tc.source is not None:
            try:
                with open(tc.source, encoding="utf-8") as f:
                    text = f.read()
            except FileNotFoundError:
                raise TemplateError(
                    f"{tc.origin}: source {tc.source!r} does not exist; check the path"
                ) from None
            except (OSError, UnicodeDecodeError) as exc:
                raise TemplateError(
                    f"{tc.origin}: cannot read source {tc.source!r}: {exc}"
                ) from exc
        else:
            text = tc.contents or ""
        env = self.env
        left = tc.left_delimiter or self._config.default_left_delimiter
        right = tc.right_delimiter or self._config.default_right_delimiter
        if left or right:
            env = env.overlay(variable_start_string=left or "{{", variable_end_string=right or "}}")
        try:
            code = env.compile(text, name=name, filename=name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{name}:{exc.lineno}: syntax error: {exc.message}") from exc
        template = env.template_class.from_code(env, code, env.make_globals(None))
        return CompiledTemplate(name, template)
