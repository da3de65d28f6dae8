"""The Go text/template front end: consul-template's own templates, unchanged.

The engine (:mod:`.gotmpl`) parses and executes Go's grammar faithfully; this module binds the
one function registry to it the Go way (:meth:`.registry.Function.go`: a pipeline's value comes
last, ``{{ 10 | subtract 3 }}`` is 7) and follows the same contract as :mod:`.jinja`:
``load(tc)`` compiles, ``execute(data) -> Execution`` runs "execute to discover"
(:mod:`.execution`), with ``error_on_missing_key``, ``function_denylist``, ``sandbox_path`` and
the delimiters of the template block.

As in consul-template, the template is executed with no data (``.`` is nil): everything comes
from functions. Errors name the file, line and column, and suggest the nearest name that is
valid in Go syntax: ``sample.conf.ctmpl:3:13: executing "sample.conf.ctmpl" at <.Adress>: can't
evaluate field Adress in type main.HealthService (did you mean "Address"?)``.
"""

from __future__ import annotations

import difflib
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from fnmatch import fnmatchcase
from typing import Any

from ..config import Config, TemplateConfig
from ..errors import CtemplateError, TemplateError
from .execution import (
    BudgetExceeded,
    Execution,
    Options,
    Pass,
    check_budget,
    current,
    options_for,
    read_source,
)
from .registry import REGISTRY

__all__ = ["GO_BUILTINS", "GO_FUNCS", "GoCompiledTemplate", "GoTemplateEngine"]

log = logging.getLogger(__name__)

# The registry, bound the Go way (subject last).
GO_FUNCS: dict[str, Callable[..., Any]] = {name: f.go() for name, f in REGISTRY.items()}

# text/template's own functions: valid names for suggestions.
GO_BUILTINS = (
    "and",
    "call",
    "html",
    "index",
    "js",
    "len",
    "not",
    "or",
    "print",
    "printf",
    "println",
    "slice",
    "urlquery",
    "eq",
    "ge",
    "gt",
    "le",
    "lt",
    "ne",
)

# Jinja filters and tests people write out of habit in Go templates, and the Go form.
JINJA_IN_GO: dict[str, str] = {
    "length": "len x",
    "default": 'or .X "fallback"',
    "format": 'printf "%s:%d" a b',
    "lower": "toLower x",
    "upper": "toUpper x",
    "replace": 'replaceAll "old" "new" x',
    "first": "index x 0",
    "escape": "html x",
    "urlencode": "urlquery x",
    "tojson": "toJSON x",
    "items": "range $k, $v := .Map",
}


# Jinja statements or calls, in a template read as Go.
_JINJA_TAG = re.compile(r"\{%-?\s*(?:for|if|set|endfor|endif|macro|include|import|raw)\b")
_JINJA_CALL = re.compile(r"\{\{-?\s*[A-Za-z_]\w*\(")
JINJA_SYNTAX_HINT = (
    'this looks like Jinja; set syntax = "jinja" in its template block, or name the file .j2 '
    "(.ctmpl, .tmpl, .tpl and .gotmpl are read as Go templates)"
)


def looks_like_jinja(text: str) -> bool:
    return bool(_JINJA_TAG.search(text) or _JINJA_CALL.search(text))


def _suggest(name: str, candidates: list[str]) -> str:
    same = [c for c in candidates if c.lower() == name.lower() and c != name]
    close = same or difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


_UNDEFINED_FUNCTION = re.compile(r'function "([^"]+)" not defined')
_ENGINE_SUGGESTION = re.compile(r' \(did you mean "[^"]*"\?\)')
_NO_FIELD = re.compile(r"can\'t evaluate field (\w+) in type \*?([\w.]+)")


def _record_fields(type_name: str) -> list[str]:
    """Field names of the record class ``type_name`` (consul/records.py), for suggestions."""
    from ..consul import records

    cls = getattr(records, type_name.rpartition(".")[2], None)
    if isinstance(cls, type) and is_dataclass(cls):
        return [f.name for f in fields(cls)]
    return []


def improve(message: str, funcs: list[str]) -> str:
    """A Go template error message with a suggestion among the names valid in Go syntax."""
    m = _UNDEFINED_FUNCTION.search(message)
    if m:
        name = m.group(1)
        if name in JINJA_IN_GO:
            message = _ENGINE_SUGGESTION.sub("", message)
            return f"{message} ({name} is Jinja; in Go syntax write {JINJA_IN_GO[name]})"
        if "(did you mean" in message:
            return message
        return message + _suggest(name, sorted({*funcs, *GO_BUILTINS}))
    m = _NO_FIELD.search(message)
    if m:
        return message + _suggest(m.group(1), _record_fields(m.group(2)))
    return message


def _denied(name: str, pattern: str) -> Callable[..., Any]:
    def denied(*args: Any, **kwargs: Any) -> Any:
        raise TemplateError(f"{name} is disabled by function_denylist (pattern {pattern!r})")

    return denied


class GoCompiledTemplate:
    """A parsed Go template, ready to execute against the cache of answers."""

    syntax = "go"

    def __init__(
        self,
        name: str,
        template: Any,
        funcs: Mapping[str, Callable[..., Any]],
        options: Options,
        missing_key_error: bool,
        text: str = "",
    ) -> None:
        self.name = name
        self.text = text  # the source, as compiled
        self._template = template
        self._funcs = funcs
        self._options = options
        self._missing_key_error = missing_key_error

    @property
    def tree(self) -> Any:
        """The engine's parse tree (for ``ctemplate convert``)."""
        return self._template

    def execute(self, data: Mapping[str, Any]) -> Execution:
        """Render against ``data`` (query key -> value), noting used and missing queries."""
        execution = Execution()
        deadline = time.monotonic() + self._options.timeout
        token = current.set(Pass(data, execution, self._options, deadline=deadline))
        try:
            # The engine calls check_budget at every range iteration and template call (the
            # deadline); the output's size is checked once it is complete.
            text = self._template.execute(
                None, self._funcs, missing_key_error=self._missing_key_error, check=check_budget
            )
            check_budget(len(text))
            execution.text = text
        except Exception as exc:
            if not execution.missing or _is_budget(exc):
                execution.error = self._error(exc)
        finally:
            current.reset(token)
        if execution.missing:
            execution.text = None
        return execution

    def _error(self, exc: BaseException) -> TemplateError:
        from .gotmpl import GoTemplateError

        if isinstance(exc, GoTemplateError):
            message = improve(str(exc), list(self._funcs))
            deep = message.rfind("exceeded maximum template depth")
            if deep >= 0:  # one line, not one "error calling executeTemplate" per level
                outer = message.partition(" error calling executeTemplate: ")[0]
                message = f"{outer} error calling executeTemplate: {message[deep:]}"
        elif isinstance(exc, CtemplateError):
            message = f"{self.name}: {exc}"
        else:
            message = f"{self.name}: {type(exc).__name__}: {exc}"
        error = TemplateError(message)
        error.__cause__ = exc
        return error


def _is_budget(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it wraps) is a budget stop: reported even in a discovery pass."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, BudgetExceeded):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


class GoTemplateEngine:
    """Compiles templates in Go syntax; the counterpart of :class:`.jinja.TemplateEngine`."""

    def __init__(self, config: Config) -> None:
        self._config = config

    def source_name(self, tc: TemplateConfig) -> str:
        return tc.source if tc.source else f"{tc.origin or 'template'}.contents"

    def funcs(self, tc: TemplateConfig) -> dict[str, Callable[..., Any]]:
        """The functions of this template: the registry, minus what its denylist disables."""
        funcs = dict(GO_FUNCS)
        for pattern in tc.function_denylist:
            for name in list(funcs):
                if fnmatchcase(name, pattern):
                    funcs[name] = _denied(name, pattern)
        return funcs

    def load(self, tc: TemplateConfig) -> GoCompiledTemplate:
        """Parse a template; a missing file or a syntax error is a TemplateError."""
        from .gotmpl import GoTemplateError, execute_template, parse

        name = self.source_name(tc)
        text = read_source(tc)
        left = tc.left_delimiter or self._config.default_left_delimiter or "{{"
        right = tc.right_delimiter or self._config.default_right_delimiter or "}}"
        funcs = self.funcs(tc)
        # consul-template's executeTemplate "name" [data]: Go syntax only (Jinja has macros);
        # the engine runs it inside the current execution, depth counted.
        denying = [p for p in tc.function_denylist if fnmatchcase("executeTemplate", p)]
        funcs["executeTemplate"] = (
            _denied("executeTemplate", denying[0]) if denying else execute_template
        )
        try:
            template = parse(text, name, left=left, right=right, funcs=funcs.keys())
        except GoTemplateError as exc:
            message = improve(str(exc), list(funcs))
            if looks_like_jinja(text):
                message += f" ({JINJA_SYNTAX_HINT})"
            raise TemplateError(message) from exc
        if _JINJA_TAG.search(text):
            # Go copies "{% ... %}" as text: most likely a Jinja template with a Go extension.
            log.warning(
                "(template) %s: contains Jinja statements ({%% ... %%}) but is read as Go "
                "syntax; %s",
                name,
                JINJA_SYNTAX_HINT,
            )
        # Compiled now rather than at the first execution: the compile's peak memory is then
        # given back with Jinja's (TemplateEngines, frontends.py); a Go template of 1,000 key
        # calls left a daemon idling at 70 MiB instead of 42 MiB. The cost is the same.
        template.compile()
        return GoCompiledTemplate(
            name,
            template,
            funcs,
            options_for(tc, dry=self._config.dry),
            tc.error_on_missing_key,
            text,
        )
