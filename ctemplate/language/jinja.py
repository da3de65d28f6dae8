"""The Jinja front end: one sandboxed Jinja environment binding the function registry.

Templates are untrusted: they run in :class:`.sandbox.SandboxedEnvironment`, so no attribute
starting with ``_`` and no Python internal is reachable (``{{ env.__globals__ }}`` fails naming
the file and line), and ``function_denylist`` cannot be walked around through another helper.

Every function of :mod:`.registry` is a Jinja function; those with a subject are filters too
(subject first). Executions follow :mod:`.execution` ("execute to discover").

Per template (an overlay of the one environment): delimiters, a loader for ``{% include %}`` and
``{% import %}`` relative to the template's directory, ``error_on_missing_key``,
``function_denylist`` and ``sandbox_path``.

Every error names the template file and line: ``upstream.conf.j2:3: HealthService has no
attribute 'Adress' (did you mean 'Address'?)``.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from fnmatch import fnmatchcase
from types import FunctionType
from typing import Any, NoReturn

import jinja2
import jinja2.debug
from jinja2 import StrictUndefined

from ..config import Config, TemplateConfig
from ..errors import CtemplateError, TemplateError
from ..paths import read_in_sandbox
from . import budget
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
from .sandbox import SandboxedEnvironment

__all__ = ["FILTERS", "GLOBALS", "CompiledTemplate", "Execution", "TemplateEngine"]

# The registry, bound the Jinja way.
GLOBALS: dict[str, Callable[..., Any]] = {name: f.impl for name, f in REGISTRY.items()}
FILTERS: dict[str, Callable[..., Any]] = {
    name: flt for name, f in REGISTRY.items() if (flt := f.filter()) is not None
}

# Python names of the functions, for messages such as "keyExists() missing 1 argument".
_PY_NAMES: dict[str, str] = {}
for _name, _func in (*FILTERS.items(), *GLOBALS.items()):
    _PY_NAMES.setdefault(getattr(_func, "__qualname__", _name), _name)

log = logging.getLogger(__name__)


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
        if self._undefined_exception is not jinja2.UndefinedError:
            # The sandbox refused an attribute (SecurityError): its message says so.
            raise self._undefined_exception(self._undefined_message)
        obj = self._undefined_obj
        name = self._undefined_name
        if obj is jinja2.utils.missing or name is None:
            raise jinja2.UndefinedError(self._undefined_message)
        if obj is None:
            raise jinja2.UndefinedError(
                f"None has no attribute {name!r} (the value is empty, e.g. node() of an unknown "
                "node; guard it with {% if ... %})"
            )
        kind = type(obj).__name__
        what = "key" if isinstance(obj, Mapping) else "attribute"
        message = f"{kind} has no {what} {name!r}"
        import difflib  # error path only: not imported by a run without mistakes

        close = difflib.get_close_matches(str(name), _names_of(obj), n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        elif isinstance(obj, Mapping):
            message += ' (use .get("key", default) or | default(...) for optional keys)'
        raise jinja2.UndefinedError(message)

    __iter__ = __str__ = __len__ = __eq__ = __ne__ = __bool__ = __hash__ = (
        _fail_with_undefined_error
    )
    __contains__ = _fail_with_undefined_error


class _MissingKeyIsEmpty(_Undefined):
    """``error_on_missing_key = false`` (the default): a key missing from a map is an empty
    value, as consul-template's ``<no value>``; misspelt record fields and undefined names are
    still errors."""

    __slots__ = ()

    def _soft(self) -> bool:
        return (
            isinstance(self._undefined_obj, Mapping)
            and self._undefined_name is not None
            and self._undefined_exception is jinja2.UndefinedError
        )

    def __str__(self) -> str:  # type: ignore[override]
        return "" if self._soft() else self._fail_with_undefined_error()

    def __iter__(self) -> Any:
        return iter(()) if self._soft() else self._fail_with_undefined_error()

    def __len__(self) -> int:  # type: ignore[override]
        return 0 if self._soft() else self._fail_with_undefined_error()

    def __bool__(self) -> bool:  # type: ignore[override]
        return False if self._soft() else self._fail_with_undefined_error()

    def __contains__(self, item: Any) -> bool:  # type: ignore[override]
        return False if self._soft() else self._fail_with_undefined_error()

    def __eq__(self, other: Any) -> bool:  # type: ignore[override]
        return type(self) is type(other) if self._soft() else self._fail_with_undefined_error()

    def __ne__(self, other: Any) -> bool:  # type: ignore[override]
        return not self.__eq__(other)

    def __hash__(self) -> int:  # type: ignore[override]
        return id(type(self)) if self._soft() else self._fail_with_undefined_error()

    # A lookup through a missing map key (``cfg.missing.port``) is as empty as the key itself.
    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__":
            raise AttributeError(name)
        return self if self._soft() else self._fail_with_undefined_error()

    def __getitem__(self, key: Any) -> Any:
        return self if self._soft() else self._fail_with_undefined_error()


def _printable(value: Any) -> Any:
    """A list or map as ``{{ }}`` prints it: every list (tuples too) as a list, every map with
    its keys in sorted order, at every depth, so ``datacenters()`` prints like ``split``."""
    if isinstance(value, tuple | list):
        return [_printable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _printable(value[k]) for k in sorted(value, key=str)}
    return value


# What ``{{ }}`` prints as it is: nearly every printed value. Checked by exact type first (a
# dict lookup), before the isinstance() checks (Mapping's is an ABC check: slow).
_PRINTED_AS_IS = frozenset({str, int, float, bool, type(None)})


def _finalize(value: Any) -> Any:
    if type(value) in _PRINTED_AS_IS:
        return value
    return _printable(value) if isinstance(value, tuple | list | Mapping) else value


# --- errors -----------------------------------------------------------------------------------


def _template_frames(exc: BaseException) -> list[tuple[str, int]]:
    """(file, line) of every template frame in the traceback, outermost first (Jinja rewrites
    tracebacks so that template frames carry the template's file name and line)."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        if "__jinja_exception__" in tb.tb_frame.f_globals:
            frames.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno))
        tb = tb.tb_next
    return frames


# Go text/template built-ins, and how Jinja says the same thing.
GO_BUILTINS_IN_JINJA: dict[str, str] = {
    "printf": '"%s:%d" | format(a, b)',
    "print": "{{ a }}{{ b }}, or a ~ b",
    "println": '{{ a }} {{ b }} and a newline, or [a, b] | join(" ")',
    "len": "x | length",
    "index": "x[key] or x[0]",
    "slice": "x[1:3]",
    "eq": "a == b (or a in [b, c])",
    "ne": "a != b",
    "lt": "a < b",
    "le": "a <= b",
    "gt": "a > b",
    "ge": "a >= b",
    "and": "a and b",
    "or": "a or b",
    "not": "not a",
    "html": "x | escape",
    "urlquery": "x | urlencode",
    "js": "x | tojson",
    "call": "f(a, b)",
}

# An action that only Go's syntax has: {{range ...}}, {{ .Field }}, {{ $x := ... }}, {{end}}.
_GO_ACTION = re.compile(
    r"\{\{-?\s*(?:(?:range|with|define|template|block|end|else)\b(?!\s*[(|=.\]])|\.[A-Za-z_]|\$)"
)


def go_builtin_hint(name: str) -> str:
    """`` (printf is Go template syntax; in Jinja: ...)``, or "" for other names."""
    form = GO_BUILTINS_IN_JINJA.get(name)
    return f" ({name} is Go template syntax; in Jinja write {form})" if form else ""


def looks_like_go(text: str) -> bool:
    """Whether a template has actions only Go's text/template has."""
    return _GO_ACTION.search(text) is not None


# ``{{ name arg`` : a call written the Go way (arguments after a space).
_GO_CALL = re.compile(r"\{\{-?\s*([A-Za-z_]\w*)\s+(?:[\"`$.(]|\d)")


def _go_hint(text: str, line: int) -> str:
    """A hint for a Jinja syntax error caused by Go syntax, or ""."""
    if looks_like_go(text):
        return f" ({GO_SYNTAX_HINT})"
    lines = text.splitlines()
    source_line = lines[line - 1] if 0 < line <= len(lines) else ""
    for m in _GO_CALL.finditer(source_line):
        if m.group(1) in GO_BUILTINS_IN_JINJA:
            return go_builtin_hint(m.group(1))
        if m.group(1) in REGISTRY:
            name = m.group(1)
            return (
                f" ({name} is called the Go way; in Jinja write {name}(...), "
                'or set syntax = "go" in its template block to keep Go syntax)'
            )
    return ""


GO_SYNTAX_HINT = (
    'this looks like Go template syntax (consul-template\'s); set syntax = "go" in its template '
    "block, or name the file .ctmpl"
)


def _suggest(name: str, candidates: list[str]) -> str:
    if name in GO_BUILTINS_IN_JINJA:
        return go_builtin_hint(name)
    same = [c for c in candidates if c.lower() == name.lower() and c != name]
    import difflib  # error path only

    close = same or difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined$")
_NO_FILTER = re.compile(r"No (filter|test) named '([^']+)'")
_PY_CALL = re.compile(r"^([\w.]+)\(\)")


class CompiledTemplate:
    syntax = "jinja"

    def __init__(
        self, name: str, template: jinja2.Template, options: Options, text: str = ""
    ) -> None:
        self.name = name
        self.text = text  # the source, as compiled
        self._template = template
        self._options = options

    def execute(self, data: Mapping[str, Any]) -> Execution:
        """Render against ``data`` (query key -> value), noting used and missing queries."""
        execution = Execution()
        deadline = time.monotonic() + self._options.timeout
        token = current.set(Pass(data, execution, self._options, deadline=deadline))
        template = self._template
        try:
            # Chunk by chunk, so that the output's size and the deadline are checked as it grows.
            # The render function itself, not Template.generate() (one generator less per chunk:
            # thousands per execution), with generate()'s handling of an exception (the
            # traceback rewritten to the template's file and line).
            chunks: list[str] = []
            append = chunks.append
            pending = 0
            try:
                for chunk in template.root_render_func(template.new_context()):
                    append(chunk)
                    pending += len(chunk)
                    if pending > 4096:  # every 4 KiB of output, or at once for a big chunk
                        check_budget(pending)
                        pending = 0
            except Exception:
                template.environment.handle_exception()
            check_budget(pending)
            execution.text = "".join(chunks)
        except budget.Interrupted:  # by the watchdog (execution_timeout, memory, a stop)
            exc = jinja2.debug.rewrite_traceback_stack()  # template file and line
            execution.error = self._error(exc, budget.describe())
        except Exception as exc:
            if not execution.missing or isinstance(exc, BudgetExceeded):
                execution.error = self._error(exc)
        finally:
            current.reset(token)
        if execution.missing:
            execution.text = None
        return execution

    def _error(self, exc: BaseException, message: str | None = None) -> TemplateError:
        """``<file>:<line>: <what>``; for an included template, also where it was included."""
        frames = _template_frames(exc)
        if isinstance(exc, jinja2.TemplateSyntaxError) and exc.lineno:
            frames = [(exc.filename or exc.name or self.name, exc.lineno)]
        if message is None:
            message = _describe(exc, self._template.environment)
        if frames:
            file, line = frames[-1]
            outer = [f for f in frames if f[0] != file]
            if outer:
                message += f" (included from {outer[-1][0]}:{outer[-1][1]})"
            message = f"{file}:{line}: {message}"
        else:
            message = f"{self.name}: {message}"
        error = TemplateError(message)
        error.__cause__ = exc
        return error


def _describe(exc: BaseException, env: jinja2.Environment) -> str:
    """What went wrong, with a suggestion where there is one."""
    if isinstance(exc, jinja2.TemplateNotFound):
        loader = env.loader
        where = ""
        if isinstance(loader, jinja2.FileSystemLoader):
            where = f" in {', '.join(str(p) for p in loader.searchpath)}"
        return (
            f"template {exc.name!r} not found{where} "
            "(include and import paths are relative to the including template's directory)"
        )
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"syntax error: {_with_filter_hint(exc.message or str(exc), env)}"
    if isinstance(exc, jinja2.UndefinedError):
        message = str(exc)
        m = _UNDEFINED_NAME.search(message)
        if m:
            message += _suggest(m.group(1), sorted(env.globals))
        return message
    if isinstance(exc, CtemplateError | jinja2.TemplateError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, TypeError):
        text = _PY_CALL.sub(lambda m: f"{_PY_NAMES.get(m.group(1), m.group(1))}()", str(exc))
        return text
    return f"{type(exc).__name__}: {exc}"


def _with_filter_hint(message: str, env: jinja2.Environment) -> str:
    m = _NO_FILTER.search(message)
    if not m:
        return message
    kind, name = m.group(1), m.group(2)
    if kind == "filter" and name in env.globals:
        hint = f" ({name} is a function, not a filter: call it as {name}(...))"
    else:
        hint = _suggest(name, sorted(env.filters if kind == "filter" else env.tests))
    return message.rstrip(".") + hint


def _denied(name: str, pattern: str) -> Callable[..., Any]:
    def denied(*args: Any, **kwargs: Any) -> NoReturn:
        raise TemplateError(f"{name}() is disabled by function_denylist (pattern {pattern!r})")

    return denied


class _Loader(jinja2.FileSystemLoader):
    """``{% include %}``/``{% import %}`` relative to the template's directory; with a sandbox,
    the included file's real path must be inside it."""

    def __init__(self, directory: str, sandbox: str | None) -> None:
        super().__init__(directory, followlinks=False)
        self._sandbox = sandbox

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        if self._sandbox:
            # Read again from the file actually opened and checked: a symlink swapped in after
            # the loader's read cannot lead out of the sandbox.
            try:
                source = read_in_sandbox(filename, self._sandbox, what="include")
            except OSError as exc:
                raise jinja2.TemplateNotFound(template) from exc
        return source, filename, uptodate


# ctemplate's own template functions that Jinja's sandbox would pass unchanged: plain functions
# that take no context (``pass_context`` and friends) and are not marked unsafe. Called
# directly from templates (budget.BudgetHooks.call).
_DIRECT_CALLS = frozenset(
    f
    for f in GLOBALS.values()
    if isinstance(f, FunctionType)
    and not hasattr(f, "jinja_pass_arg")
    and not getattr(f, "unsafe_callable", False)
    and not getattr(f, "alters_data", False)
)


# ctemplate's data functions that a template calls without any layer of the sandbox (not even
# :meth:`budget.BudgetHooks.call`'s): each holds its own result to execution_max_size.
DATA_CALLS: dict[str, Callable[..., Any]] = {
    name: REGISTRY[name].impl
    for name in ("key", "keyOrDefault", "keyExists", "service", "connect", "services")
}


class _BoundedSandbox(budget.BudgetHooks, SandboxedEnvironment):
    """ctemplate's sandbox (language/sandbox.py) with the execution budgets' checks
    (language/budget.py)."""


class TemplateEngine:
    """One sandboxed Jinja environment (:mod:`.sandbox`: no ``_`` or internal attribute reaches
    a template) with the helpers registered once; each template uses an overlay of it with its
    own delimiters, loader and options."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self.env = _BoundedSandbox(
            undefined=_MissingKeyIsEmpty,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
            extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"],
            finalize=_finalize,
        )
        self.env.globals.update(GLOBALS)
        self.env.direct_calls = _DIRECT_CALLS
        self.env.data_calls = DATA_CALLS
        self.env.filters.update(FILTERS)
        self.env.bound_filters(self.env.filters)

    def source_name(self, tc: TemplateConfig) -> str:
        return tc.source if tc.source else f"{tc.origin or 'template'}.contents"

    def _environment(self, tc: TemplateConfig, sandbox: str | None) -> jinja2.Environment:
        overlay: dict[str, Any] = {}
        left = tc.left_delimiter or self._config.default_left_delimiter
        right = tc.right_delimiter or self._config.default_right_delimiter
        if left or right:
            overlay["variable_start_string"] = left or "{{"
            overlay["variable_end_string"] = right or "}}"
        if not tc.trim_blocks:
            overlay["trim_blocks"] = False
        if not tc.lstrip_blocks:
            overlay["lstrip_blocks"] = False
        if tc.error_on_missing_key:
            overlay["undefined"] = _Undefined
        directory = os.path.dirname(os.path.abspath(tc.source)) if tc.source else os.getcwd()
        overlay["loader"] = _Loader(directory, sandbox)
        env = self.env.overlay(**overlay)
        # Own dicts: the overlay must not change the shared environment.
        env.globals = dict(self.env.globals)
        env.filters = dict(self.env.filters)
        for pattern in tc.function_denylist:
            for table in (env.globals, env.filters):
                for name in list(table):
                    if fnmatchcase(name, pattern) and callable(table[name]):
                        table[name] = _denied(name, pattern)
        return env

    def load(self, tc: TemplateConfig) -> CompiledTemplate:
        """Compile a template; a missing file or a syntax error is a TemplateError."""
        name = self.source_name(tc)
        text = read_source(tc)
        options = options_for(tc, dry=self._config.dry)
        sandbox = options.sandbox
        env = self._environment(tc, sandbox)
        try:
            code = env.compile(text, name=name, filename=name)
        except jinja2.TemplateSyntaxError as exc:
            message = _with_filter_hint(exc.message or "", env)
            message += _go_hint(text, exc.lineno or 0)
            raise TemplateError(f"{name}:{exc.lineno}: syntax error: {message}") from exc
        # A plain dict of the globals, not Jinja's ChainMap over the environment's: each
        # execution copies them into its context, key by key through Python for a ChainMap
        # (~90 lookups, a fifth of a small template's execution). This environment is the
        # template's own and never changes after load.
        template = env.template_class.from_code(env, code, dict(env.globals))
        return CompiledTemplate(name, template, options, text)
