"""Templates: one Jinja environment, consul-template's functions and helpers, "execute to discover".

A template is executed against the cache of query results. Each data function (``service``,
``key``, ``file``, ...) records the query it needs; if the cache has no answer yet the function
records the query as missing and returns an empty value. The runner watches what is missing and
executes again when data arrives; output is written only from an execution in which nothing was
missing.

Per template (an overlay of the one environment): delimiters, a loader for ``{% include %}`` and
``{% import %}`` relative to the template's directory, ``error_on_missing_key``,
``function_denylist`` and ``sandbox_path``.

Every error names the template file and line: ``upstream.conf.j2:3: HealthService has no
attribute 'Adress' (did you mean 'Address'?)``.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, is_dataclass, replace
from fnmatch import fnmatchcase
from typing import Any, NoReturn

import jinja2
from jinja2 import StrictUndefined

from . import helpers, local
from .config import Config, TemplateConfig
from .errors import CtemplateError, TemplateError
from .queries import (
    AgentSelfQuery,
    ConnectCARootsQuery,
    FileProblem,
    FileQuery,
    Query,
    parse_connect,
    parse_datacenters,
    parse_key,
    parse_leaf,
    parse_node,
    parse_nodes,
    parse_prefix,
    parse_service,
    parse_services,
)

__all__ = ["FILTERS", "GLOBALS", "CompiledTemplate", "Execution", "TemplateEngine"]

log = logging.getLogger(__name__)


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
class _Options:
    """What functions need to know about the template being executed."""

    sandbox: str | None = None  # real path of sandbox_path
    dry: bool = False


@dataclass(slots=True)
class _Pass:
    data: Mapping[str, Any]
    execution: Execution
    options: _Options


_current: ContextVar[_Pass] = ContextVar("ctemplate_pass")


def _recall(query: Query) -> tuple[bool, Any]:
    """Note ``query`` as used; its cached answer, if there is one."""
    p = _current.get()
    key = str(query)
    p.execution.used[key] = query
    if key in p.data:
        return True, p.data[key]
    p.execution.missing[key] = query
    return False, None


def _missing(query: Query) -> None:
    _current.get().execution.missing[str(query)] = query


def _lookup(query: Query, empty: Any) -> Any:
    found, value = _recall(query)
    return value if found else empty


# --- Consul data functions (names as in consul-template) ---------------------------------------


def service(*args: Any) -> Any:
    """``service("[tag.]name[@dc][~near][|filter,...]")``: healthy instances, sorted by node."""
    return _lookup(parse_service(args), ())


def connect(*args: Any) -> Any:
    """``connect("name")``: Connect-capable instances (sidecar proxies or native services)."""
    return _lookup(parse_connect(args), ())


def services(*args: Any) -> Any:
    return _lookup(parse_services(args), ())


def key(path: Any) -> str:
    """A key's value; the template waits until the key exists."""
    if path == "":
        return ""
    value = _lookup(parse_key("key", path, block=True), "")
    return "" if value is None else str(value)


def key_exists(path: Any) -> bool:
    if path == "":
        return False
    return _lookup(parse_key("keyExists", path), None) is not None


def key_or_default(path: Any, default: Any = "") -> Any:
    """The key's value, or ``default`` when the key is absent or empty."""
    if path == "":
        return default
    value = _lookup(parse_key("keyOrDefault", path), None)
    return default if value in (None, "") else value


def _pairs(kind: str, prefix: Any, keep: Callable[[str], bool], *, safe: bool) -> Any:
    if prefix == "":
        return ()
    query = parse_prefix(kind, prefix)
    found, value = _recall(query)
    if not found:
        return ()
    pairs = tuple(p for p in value if keep(p.Key))
    if safe and not pairs:
        _missing(query)  # safeLs/safeTree: an empty answer must not be rendered
    return pairs


def ls(prefix: Any) -> Any:
    """Top-level keys under a prefix (no folders, nothing nested)."""
    return _pairs("ls", prefix, lambda k: bool(k) and "/" not in k, safe=False)


def safe_ls(prefix: Any) -> Any:
    """``ls``, but an empty answer keeps the template from being written."""
    return _pairs("safeLs", prefix, lambda k: bool(k) and "/" not in k, safe=True)


def tree(prefix: Any) -> Any:
    """Every key under a prefix, nested ones included (folders left out)."""
    return _pairs("tree", prefix, lambda k: bool(k) and not k.endswith("/"), safe=False)


def safe_tree(prefix: Any) -> Any:
    return _pairs("safeTree", prefix, lambda k: bool(k) and not k.endswith("/"), safe=True)


def node(*args: Any) -> Any:
    """``node()`` (the local agent's node) or ``node("name[@dc]")``: a CatalogNode, or None for
    an unknown node."""
    query = parse_node(args)
    if not query.name:
        name = _lookup(AgentSelfQuery(), None)
        if name is None:
            return None
        query = replace(query, name=name)
    return _lookup(query, None)


def nodes(*args: Any) -> Any:
    return _lookup(parse_nodes(args), ())


def datacenters(*args: Any) -> Any:
    return _lookup(parse_datacenters(args), ())


def ca_roots() -> Any:
    return _lookup(ConnectCARootsQuery(), ())


def ca_leaf(*args: Any) -> Any:
    return _lookup(parse_leaf(args), None)


# --- local functions ------------------------------------------------------------------------


def file(path: Any) -> str:
    """A local file's contents, watched for changes (re-read within 2 seconds)."""
    text = str(path)
    if not text:
        return ""
    sandbox = _current.get().options.sandbox
    if sandbox:
        local.check_sandbox(text, sandbox)
    value = _lookup(FileQuery(text, sandbox=sandbox), "")
    if isinstance(value, FileProblem):
        raise TemplateError(value.message)
    return str(value)


def _skip_side_effect(what: str) -> bool:
    p = _current.get()
    if p.execution.missing:
        return True  # a discovery pass: the content may still be incomplete
    if p.options.dry:
        log.debug("(template) -dry: %s not written", what)
        return True
    return False


def write_to_file(
    path: Any,
    content: Any,
    perms: Any = None,
    append: bool = False,
    newline: bool = False,
    user: Any = None,
    group: Any = None,
) -> str:
    """``writeToFile(path, content, perms="0644", append=false, newline=false)``."""
    if _skip_side_effect(f"writeToFile({str(path)!r})"):
        return ""
    return local.write_to_file(
        path,
        content,
        perms,
        append,
        newline,
        user,
        group,
        sandbox=_current.get().options.sandbox,
    )


def write_to_file_filter(
    content: Any,
    path: Any,
    perms: Any = None,
    append: bool = False,
    newline: bool = False,
    user: Any = None,
    group: Any = None,
) -> str:
    """``content | writeToFile(path, ...)``."""
    return write_to_file(path, content, perms, append, newline, user, group)


def plugin_filter(value: Any, command: Any, *args: Any) -> str:
    """``value | plugin(cmd, args...)``: the piped value is the last argument."""
    return local.plugin(command, *args, value)


GLOBALS: dict[str, Callable[..., Any]] = {
    **helpers.GLOBALS,
    "caLeaf": ca_leaf,
    "caRoots": ca_roots,
    "connect": connect,
    "datacenters": datacenters,
    "env": local.env,
    "envOrDefault": local.env_or_default,
    "file": file,
    "key": key,
    "keyExists": key_exists,
    "keyOrDefault": key_or_default,
    "ls": ls,
    "mustEnv": local.must_env,
    "node": node,
    "nodes": nodes,
    "plugin": local.plugin,
    "safeLs": safe_ls,
    "safeTree": safe_tree,
    "service": service,
    "services": services,
    "timestamp": local.timestamp,
    "tree": tree,
    "writeToFile": write_to_file,
}

FILTERS: dict[str, Callable[..., Any]] = {
    **helpers.FILTERS,
    "plugin": plugin_filter,
    "writeToFile": write_to_file_filter,
}

# Python names of the functions, for messages such as "keyExists() missing 1 argument".
_PY_NAMES: dict[str, str] = {}
for _name, _func in (*FILTERS.items(), *GLOBALS.items()):
    _PY_NAMES.setdefault(getattr(_func, "__qualname__", _name), _name)


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
        if obj is None:
            raise jinja2.UndefinedError(
                f"None has no attribute {name!r} (the value is empty, e.g. node() of an unknown "
                "node; guard it with {% if ... %})"
            )
        kind = type(obj).__name__
        what = "key" if isinstance(obj, Mapping) else "attribute"
        message = f"{kind} has no {what} {name!r}"
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
        return isinstance(self._undefined_obj, Mapping) and self._undefined_name is not None

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


def _suggest(name: str, candidates: list[str]) -> str:
    same = [c for c in candidates if c.lower() == name.lower() and c != name]
    close = same or difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined$")
_NO_FILTER = re.compile(r"No (filter|test) named '([^']+)'")
_PY_CALL = re.compile(r"^([\w.]+)\(\)")


class CompiledTemplate:
    def __init__(self, name: str, template: jinja2.Template, options: _Options) -> None:
        self.name = name
        self._template = template
        self._options = options

    def execute(self, data: Mapping[str, Any]) -> Execution:
        """Render against ``data`` (query key -> value), noting used and missing queries."""
        execution = Execution()
        token = _current.set(_Pass(data, execution, self._options))
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
        """``<file>:<line>: <what>``; for an included template, also where it was included."""
        frames = _template_frames(exc)
        if isinstance(exc, jinja2.TemplateSyntaxError) and exc.lineno:
            frames = [(exc.filename or exc.name or self.name, exc.lineno)]
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
            local.check_sandbox(filename, self._sandbox, what="include")
        return source, filename, uptodate


class TemplateEngine:
    """One Jinja environment with the helpers registered once; each template uses an overlay of
    it with its own delimiters, loader and options."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self.env = jinja2.Environment(
            undefined=_MissingKeyIsEmpty,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
            extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"],
        )
        self.env.globals.update(GLOBALS)
        self.env.filters.update(FILTERS)

    def source_name(self, tc: TemplateConfig) -> str:
        return tc.source if tc.source else f"{tc.origin or 'template'}.contents"

    def _environment(self, tc: TemplateConfig, sandbox: str | None) -> jinja2.Environment:
        overlay: dict[str, Any] = {}
        left = tc.left_delimiter or self._config.default_left_delimiter
        right = tc.right_delimiter or self._config.default_right_delimiter
        if left or right:
            overlay["variable_start_string"] = left or "{{"
            overlay["variable_end_string"] = right or "}}"
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
        sandbox_path = tc.sandbox_path
        sandbox = os.path.realpath(sandbox_path) if sandbox_path else None
        env = self._environment(tc, sandbox)
        try:
            code = env.compile(text, name=name, filename=name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"{name}:{exc.lineno}: syntax error: {_with_filter_hint(exc.message or '', env)}"
            ) from exc
        template = env.template_class.from_code(env, code, env.make_globals(None))
        return CompiledTemplate(name, template, _Options(sandbox=sandbox, dry=self._config.dry))
