"""consul-template's pure helper functions, bound by every front end through :mod:`.registry`.

Each helper takes its *subject* first, so in Jinja one function serves both forms:
``{{ s.Tags | contains("prod") }}`` (a filter: the piped value is the first argument, Jinja's
convention) and ``{{ contains(s.Tags, "prod") }}`` (a global). consul-template passes the piped
value last, so its argument order differs: ``{{ subtract 3 10 }}`` there is
``{{ 10 | subtract(3) }}`` or ``{{ subtract(10, 3) }}`` here; both give 7.

Values follow Go where it matters to output: ``toJSON`` escapes ``<``, ``>`` and ``&`` as Go's
``json.Marshal`` does, integer division truncates toward zero, ``parseInt`` accepts what
``strconv.ParseInt`` accepts, ``regexReplaceAll`` understands ``$1``. Maps returned by helpers are
sorted by key, as Go templates iterate maps in key order.

Errors are :class:`~ctemplate.errors.TemplateError` naming the helper and the bad value; the
template engine adds the template file and line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields, is_dataclass
from datetime import date, datetime
from typing import Any

import jinja2

from ..consul.records import KeyPair
from ..errors import TemplateError
from .execution import current

__all__ = ["SUBJECT_FIRST", "join", "to_plain"]


def _fail(name: str, message: str) -> TemplateError:
    return TemplateError(f"{name}: {message}")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _short(value: Any) -> str:
    """A value as an error message shows it: its kind and size, never its content. The value
    may come from Consul's KV store (a password, a key) and messages reach the log and
    /health; the message's file and line say which value it is."""
    if isinstance(value, str | bytes):
        n = len(value)
        kind = "string" if isinstance(value, str) else "byte string"
        return f"a {kind} of {n} character{'' if n == 1 else 's'}" if n else f"an empty {kind}"
    if value is None or isinstance(value, bool):
        return repr(value)
    article = "an" if type(value).__name__[:1] in "aeiou" else "a"
    return f"{article} {type(value).__name__}"


# --- plain data (for toJSON, toYAML, toTOML) ----------------------------------------------------


def to_plain(value: Any) -> Any:
    """Records, tuples and maps as plain JSON-like data: records keep their field order (Go
    struct order), maps are sorted by key, datetimes become RFC 3339 strings."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, jinja2.Undefined):  # a missing map key (error_on_missing_key = false)
        return None
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Iterable):
        return [to_plain(v) for v in value]
    return str(value)


def _go_numbers(value: Any) -> Any:
    """Whole floats print as integers, as Go's encoders print float64 values."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {k: _go_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_go_numbers(v) for v in value]
    return value


_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028"}
_HTML_ESCAPES["\u2029"] = "\\u2029"
_HTML_RE = re.compile("[<>&\u2028\u2029]")


def _json(name: str, value: Any, *, indent: int | None, escape_html: bool) -> str:
    try:
        text = json.dumps(
            _go_numbers(to_plain(value)),
            ensure_ascii=False,
            allow_nan=False,
            indent=indent,
            separators=(",", ": ") if indent else (",", ":"),
        )
    except ValueError as exc:
        raise _fail(name, f"cannot encode: {exc}") from None
    if escape_html:  # these characters only occur inside JSON strings
        text = _HTML_RE.sub(lambda m: _HTML_ESCAPES[m.group()], text)
    return text


def to_json(value: Any) -> str:
    """Compact JSON, keys sorted, ``<>&`` escaped (Go's ``json.Marshal``)."""
    return _json("toJSON", value, indent=None, escape_html=True)


def to_json_pretty(value: Any) -> str:
    return _json("toJSONPretty", value, indent=2, escape_html=True)


def to_unescaped_json(value: Any) -> str:
    return _json("toUnescapedJSON", value, indent=None, escape_html=False)


def to_unescaped_json_pretty(value: Any) -> str:
    return _json("toUnescapedJSONPretty", value, indent=2, escape_html=False)


def parse_json(text: Any) -> Any:
    """A JSON document as Python data; ``""`` gives ``{}``."""
    text = _text(text)
    if text == "":
        return {}
    try:
        return _key_order(json.loads(text))
    except json.JSONDecodeError as exc:
        raise _fail("parseJSON", f"not JSON: {exc}") from None


def _yaml_nodes_limit() -> int:
    """Nodes a YAML document may expand to: one per 64 bytes of ``execution_max_size``."""
    p = current.get(None)
    return (p.options.max_size if p is not None else 64 * 1024 * 1024) // 64


def _expanded_nodes(root: Any, limit: int) -> int:
    """How many nodes ``root`` has with every alias expanded, counted without expanding them
    (each distinct node once, memoised); stops counting past ``limit``."""
    import yaml

    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes and not children_done:
            if sizes[key] < 0:
                raise _fail("parseYAML", "the document refers to itself (a recursive alias)")
            continue
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        if not children_done:
            sizes[key] = -1  # being counted
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            if any(sizes.get(id(c), 0) < 0 for c in children):
                raise _fail("parseYAML", "the document refers to itself (a recursive alias)")
            continue
        total = 1 + sum(sizes[id(c)] for c in children)
        sizes[key] = min(total, limit + 1)
    return sizes[id(root)]


def parse_yaml(text: Any) -> Any:
    """A YAML document as Python data; ``""`` gives ``{}``.

    Aliases are counted before anything is built: a document that would expand past
    ``execution_max_size / 64`` nodes (an alias bomb, "billion laughs") is refused."""
    import yaml

    text = _text(text)
    if text == "":
        return {}
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            limit = _yaml_nodes_limit()
            if _expanded_nodes(node, limit) > limit:
                raise _fail(
                    "parseYAML",
                    f"the document expands to more than {limit:,} nodes through its aliases "
                    "(an alias bomb?); raise execution_max_size if it is meant",
                )
            return _key_order(loader.construct_document(node))
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        # Not str(exc): it quotes the offending line of the document.
        problem = getattr(exc, "problem", None) or type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise _fail("parseYAML", f"not YAML: {problem}{where}") from None


def to_yaml(value: Any) -> str:
    """Block-style YAML, trimmed (consul-template uses yaml.v2)."""
    import yaml

    try:
        text = yaml.safe_dump(
            _go_numbers(to_plain(value)),
            default_flow_style=False,
            allow_unicode=True,
            sort_keys=False,
            width=1 << 20,
        )
    except yaml.YAMLError as exc:
        raise _fail("toYAML", str(exc)) from None
    text = text.strip()
    if text.endswith("\n..."):  # document end marker after a bare scalar
        text = text[:-4].rstrip()
    elif text == "...":
        text = ""
    return text


# --- TOML (a small emitter: tomllib can only read) ---------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n"}
_TOML_ESCAPES.update({"\f": "\\f", "\r": "\\r"})


def _toml_str(text: str) -> str:
    out = []
    for ch in text:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_str(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        items = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}" if items else "{}"
    raise _fail("toTOML", f"cannot encode {_short(value)}")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_table(table: dict[str, Any], path: list[str], out: list[str]) -> None:
    simple = [
        (k, v) for k, v in table.items() if not isinstance(v, dict) and not _is_table_array(v)
    ]
    nested = [(k, v) for k, v in table.items() if isinstance(v, dict) or _is_table_array(v)]
    for key, value in simple:
        if value is not None:
            out.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in nested:
        sub = [*path, _toml_key(key)]
        if isinstance(value, dict):
            if out:
                out.append("")
            out.append(f"[{'.'.join(sub)}]")
            _toml_table(value, sub, out)
        else:
            for item in value:
                if out:
                    out.append("")
                out.append(f"[[{'.'.join(sub)}]]")
                _toml_table(item, sub, out)


def to_toml(value: Any) -> str:
    """A map as a TOML document: plain keys first, then tables, keys sorted; ``None`` values are
    left out (TOML has no null)."""
    data = to_plain(value)
    if not isinstance(data, dict):
        raise _fail("toTOML", f"needs a map, got {type(value).__name__}")
    out: list[str] = []
    _toml_table(data, [], out)
    return "\n".join(out).strip()


# --- strings ------------------------------------------------------------------------------------


def to_lower(s: Any) -> str:
    return _text(s).lower()


def to_upper(s: Any) -> str:
    return _text(s).upper()


# A letter not preceded by a letter, digit, "_" or an apostrophe starts a word.
_TITLE_RE = re.compile("(?<![\\w'\u2019])[^\\W\\d_]")


def to_title(s: Any) -> str:
    """The first letter of every word upper-cased, the rest left alone (``"hello wORLD"`` ->
    ``"Hello WORLD"``), unlike Jinja's ``title``."""
    return _TITLE_RE.sub(lambda m: m.group().upper(), _text(s))


def trim_space(s: Any) -> str:
    return _text(s).strip()


def trim(s: Any, cutset: Any = None) -> str:
    """Strip the characters of ``cutset`` (whitespace when not given) from both ends; the same
    as Jinja's ``trim`` filter."""
    return _text(s).strip(None if cutset is None else _text(cutset))


def trim_prefix(s: Any, prefix: Any) -> str:
    return _text(s).removeprefix(_text(prefix))


def trim_suffix(s: Any, suffix: Any) -> str:
    return _text(s).removesuffix(_text(suffix))


def replace_all(s: Any, old: Any, new: Any) -> str:
    return _text(s).replace(_text(old), _text(new))


def split(s: Any, sep: Any) -> list[str]:
    """Split on ``sep`` after trimming whitespace; ``""`` gives ``[]``."""
    text = _text(s).strip()
    if text == "":
        return []
    sep = _text(sep)
    if sep == "":
        return list(text)
    return text.split(sep)


def split_to_map(s: Any, sep: Any, kv_sep: Any) -> dict[str, str]:
    """``"a=1,b=2" | splitToMap(",", "=")`` -> ``{"a": "1", "b": "2"}``; items without
    ``kv_sep`` are skipped."""
    result: dict[str, str] = {}
    for item in split(s, sep):
        key, found, value = item.partition(_text(kv_sep))
        if found:
            result[key] = value
    return result


def join(items: Any, sep: Any = "") -> str:
    return _text(sep).join(_text(i) for i in items)


def indent(s: Any, width: Any = 4, first: bool = True, blank: bool = False) -> str:
    """Prefix every line with ``width`` spaces (or the string ``width``), empty lines excepted.

    consul-template's ``indent``: unlike Jinja's built-in filter it indents the first line too;
    ``first=False`` gives Jinja's behaviour, ``blank=True`` indents empty lines as well.
    """
    if isinstance(width, str):
        prefix = width
    else:
        if isinstance(width, bool) or not isinstance(width, int):
            raise _fail("indent", f"width {_short(width)} is not a whole number")
        if width < 0:
            raise _fail("indent", "indent value must be a positive integer")
        prefix = " " * width
    lines = _text(s).split("\n")
    out = []
    for n, line in enumerate(lines):
        last = n == len(lines) - 1
        if (n == 0 and not first) or (line == "" and (not blank or last)):
            out.append(line)
        else:
            out.append(prefix + line)
    return "\n".join(out)


def sha256_hex(s: Any) -> str:
    return hashlib.sha256(_text(s).encode()).hexdigest()


def md5sum(s: Any) -> str:
    return hashlib.md5(_text(s).encode(), usedforsecurity=False).hexdigest()


def hmac_sha256_hex(message: Any, key: Any) -> str:
    return hmac.new(_text(key).encode(), _text(message).encode(), hashlib.sha256).hexdigest()


def base64_encode(s: Any) -> str:
    return base64.b64encode(_text(s).encode()).decode()


def base64_decode(s: Any) -> str:
    try:
        return base64.b64decode(_text(s), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        raise _fail("base64Decode", f"{_short(s)} is not valid base64") from None


def base64_url_encode(s: Any) -> str:
    return base64.urlsafe_b64encode(_text(s).encode()).decode()


def base64_url_decode(s: Any) -> str:
    text = _text(s)
    try:
        if re.search(r"[^A-Za-z0-9_=-]", text):
            raise ValueError
        return base64.urlsafe_b64decode(text).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        raise _fail("base64URLDecode", f"{_short(s)} is not valid URL-safe base64") from None


# --- regular expressions -------------------------------------------------------------------


def _regex(name: str, pattern: Any) -> Any:
    """``pattern`` compiled by RE2, the engine of Go's ``regexp``: its syntax is consul-template's,
    and its time is linear in the input (no catastrophic backtracking on a KV value; Python's
    ``re`` would hold the interpreter lock for hours on ``(a+)+$``)."""
    import re2

    options = re2.Options()
    options.log_errors = False  # the error is ours to report, once, without the pattern's text
    try:
        return re2.compile(_text(pattern), options=options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise _fail(name, f"bad regular expression: {reason}") from None


_GO_GROUP = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z0-9_]+)|(\$))")


def _go_expand(template: str, match: Any) -> str:
    """Go's ``Regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``. A name is the
    longest run of letters, digits and ``_`` (``$1x`` is group ``1x``); unknown groups are
    empty."""

    def group(m: re.Match[str]) -> str:
        if m.group(3):
            return "$"
        name = m.group(1) if m.group(1) is not None else m.group(2)
        try:
            value = match.group(int(name)) if name.isdigit() else match.group(name)
        except IndexError:  # no such group
            return ""
        return value or ""

    return _GO_GROUP.sub(group, template)


def regex_match(s: Any, pattern: Any) -> bool:
    """True if ``pattern`` matches anywhere in ``s``."""
    return _regex("regexMatch", pattern).search(_text(s)) is not None


def regex_replace_all(s: Any, pattern: Any, replacement: Any) -> str:
    """Replace every match; ``replacement`` uses Go's ``$1`` / ``${name}`` syntax."""
    compiled = _regex("regexReplaceAll", pattern)
    repl = _text(replacement)
    return str(compiled.sub(lambda m: _go_expand(repl, m), _text(s)))


# --- parsing ------------------------------------------------------------------------------


_INT_RE = re.compile(r"[+-]?[0-9]+")
_UINT_RE = re.compile(r"\+?[0-9]+")
_FLOAT_RE = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE
)
_INT64 = (-(2**63), 2**63 - 1)


def parse_bool(s: Any) -> bool:
    """Go's ``strconv.ParseBool``: ``1 t T TRUE true True`` / ``0 f F FALSE false False``;
    ``""`` is false."""
    text = _text(s)
    if text in ("", "0", "f", "F", "FALSE", "false", "False"):
        return False
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    raise _fail("parseBool", f"{_short(s)} is not a boolean (true/false, 1/0, t/f)")


def parse_int(s: Any) -> int:
    """A base-10 64-bit integer; ``""`` is 0."""
    if isinstance(s, int) and not isinstance(s, bool):
        return s
    text = _text(s)
    if text == "":
        return 0
    if not _INT_RE.fullmatch(text):
        raise _fail("parseInt", f"{_short(s)} is not a whole number")
    value = int(text)
    if not _INT64[0] <= value <= _INT64[1]:
        raise _fail("parseInt", f"{_short(s)} is out of range")
    return value


def parse_uint(s: Any) -> int:
    """A base-10 unsigned 64-bit integer; ``""`` is 0."""
    text = _text(s)
    if text == "":
        return 0
    if not _UINT_RE.fullmatch(text) or text.startswith("+"):
        raise _fail("parseUint", f"{_short(s)} is not a whole number >= 0")
    value = int(text)
    if value >= 2**64:
        raise _fail("parseUint", f"{_short(s)} is out of range")
    return value


def parse_float(s: Any) -> float:
    """A 64-bit float; ``""`` is 0.0."""
    if isinstance(s, int | float) and not isinstance(s, bool):
        return float(s)
    text = _text(s)
    if text == "":
        return 0.0
    if not _FLOAT_RE.fullmatch(text):
        raise _fail("parseFloat", f"{_short(s)} is not a number")
    return float(text)


# --- math ---------------------------------------------------------------------------------


def _number(name: str, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        hint = " (convert it with parseInt or parseFloat)" if isinstance(value, str) else ""
        raise _fail(name, f"{_short(value)} is not a number{hint}")
    return value


def add(a: Any, b: Any) -> int | float:
    return _number("add", a) + _number("add", b)


def subtract(a: Any, b: Any) -> int | float:
    """``a - b``: ``{{ 10 | subtract(3) }}`` is 7."""
    return _number("subtract", a) - _number("subtract", b)


def multiply(a: Any, b: Any) -> int | float:
    return _number("multiply", a) * _number("multiply", b)


def divide(a: Any, b: Any) -> int | float:
    """``a / b``; two integers give an integer truncated toward zero (Go's ``/``)."""
    x, y = _number("divide", a), _number("divide", b)
    if y == 0:
        raise _fail("divide", "division by zero")
    if isinstance(x, int) and isinstance(y, int):
        q = abs(x) // abs(y)
        return q if (x >= 0) == (y >= 0) else -q
    return x / y


def modulo(a: Any, b: Any) -> int:
    """``a % b`` for integers, with the sign of ``a`` (Go's ``%``)."""
    x, y = _number("modulo", a), _number("modulo", b)
    if not (isinstance(x, int) and isinstance(y, int)):
        raise _fail("modulo", "needs two whole numbers")
    if y == 0:
        raise _fail("modulo", "division by zero")
    r = abs(x) % abs(y)
    return r if x >= 0 else -r


def minimum(a: Any, b: Any) -> int | float:
    x, y = _number("minimum", a), _number("minimum", b)
    return x if x < y else y


def maximum(a: Any, b: Any) -> int | float:
    x, y = _number("maximum", a), _number("maximum", b)
    return x if x > y else y


def loop(*args: Any) -> range:
    """``loop(5)`` -> 0..4, ``loop(3, 6)`` -> 3, 4, 5 (numbers or numeric strings)."""
    if len(args) not in (1, 2):
        raise _fail("loop", f"expected 1 or 2 arguments, got {len(args)}")
    bounds = []
    for a in args:
        if isinstance(a, str):
            bounds.append(parse_int(a))
        elif isinstance(a, int) and not isinstance(a, bool):
            bounds.append(a)
        else:
            raise _fail("loop", f"{_short(a)} is not a whole number")
    numbers = range(*bounds) if len(bounds) == 2 else range(bounds[0])
    # A range costs nothing, but list(), sort or join would build it in one C call that no
    # budget can interrupt: at most one item per 64 bytes of execution_max_size.
    limit = _yaml_nodes_limit()
    if len(numbers) > limit:
        raise _fail(
            "loop",
            f"{len(numbers):,} numbers is past {limit:,} (execution_max_size / 64); raise "
            "execution_max_size if this is meant",
        )
    return numbers


# --- collections --------------------------------------------------------------------------


def _in(container: Any, needle: Any) -> bool:
    if isinstance(container, str):
        return isinstance(needle, str) and needle in container
    if container is None:
        return False
    try:
        return needle in container
    except TypeError:
        return False


def contains(container: Any, needle: Any) -> bool:
    """``s.Tags | contains("prod")``: membership in a list (or map keys), or a substring."""
    return _in(container, needle)


def in_(needle: Any, container: Any) -> bool:
    """``"prod" | in(s.Tags)``: ``contains`` the other way round (Jinja's ``in`` operator works
    too: ``"prod" in s.Tags``)."""
    return _in(container, needle)


def _needles(name: str, needles: Any) -> list[Any]:
    if isinstance(needles, str) or not isinstance(needles, Iterable):
        raise _fail(name, f"the values to look for must be a list, got {_short(needles)}")
    return list(needles)


def contains_all(container: Any, needles: Any) -> bool:
    return all(_in(container, n) for n in _needles("containsAll", needles))


def contains_any(container: Any, needles: Any) -> bool:
    return any(_in(container, n) for n in _needles("containsAny", needles))


def contains_none(container: Any, needles: Any) -> bool:
    return not any(_in(container, n) for n in _needles("containsNone", needles))


def contains_not_all(container: Any, needles: Any) -> bool:
    return not all(_in(container, n) for n in _needles("containsNotAll", needles))


def _sorted(groups: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
    return {k: groups[k] for k in sorted(groups)}


def _list(name: str, value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | Mapping) or not isinstance(value, Iterable):
        raise _fail(name, f"needs a list of services, got {type(value).__name__}")
    return list(value)


def by_tag(services: Any) -> dict[str, list[Any]]:
    """Group services (``service``, ``services``) by tag: ``{tag: [service, ...]}``, sorted."""
    groups: dict[str, list[Any]] = {}
    for s in _list("byTag", services):
        tags = getattr(s, "Tags", None)
        if tags is None:
            tags = getattr(s, "ServiceTags", None)
        if tags is None:
            raise _fail("byTag", f"{type(s).__name__} has no Tags")
        for tag in tags:
            groups.setdefault(tag, []).append(s)
    return _sorted(groups)


def by_port(services: Any) -> dict[int, list[Any]]:
    groups: dict[int, list[Any]] = {}
    for s in _list("byPort", services):
        port = getattr(s, "Port", None)
        if port is None:
            raise _fail("byPort", f"{type(s).__name__} has no Port")
        groups.setdefault(port, []).append(s)
    return _sorted(groups)


_META_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def by_meta(services: Any, keys: Any) -> dict[str, list[Any]]:
    """Group services by ``ServiceMeta`` values: ``services | byMeta("zone,weight|int")``.

    Group names join the values with ``_`` (characters outside ``[a-zA-Z0-9_-]`` become ``_``);
    a missing value is ``_no_<key>_``; ``|int`` formats the value as ``%05d`` (missing: 0) so
    groups sort numerically.
    """
    specs = _text(keys).split(",")
    groups: dict[str, list[Any]] = {}
    for s in _list("byMeta", services):
        meta = getattr(s, "ServiceMeta", None)
        if meta is None:
            raise _fail("byMeta", f"{type(s).__name__} has no ServiceMeta")
        parts = []
        for spec in specs:
            as_int = spec.endswith("|int")
            key = spec.removesuffix("|int")
            value = meta.get(key, "")
            if as_int:
                value = value or "0"
                try:
                    value = f"{int(value):05d}"
                except ValueError:
                    raise _fail(
                        "byMeta", f"cannot parse {value!r} (ServiceMeta {key!r}) as a number"
                    ) from None
            elif not value:
                value = f"_no_{key}_"
            parts.append(_META_UNSAFE.sub("_", value))
        groups.setdefault("_".join(parts), []).append(s)
    return _sorted(groups)


def by_key(pairs: Any) -> dict[str, dict[str, KeyPair]]:
    """Group KV pairs (``tree``) by their first path segment: ``{"redis": {"a/b": pair}}``; the
    pairs' ``Key`` loses that segment, and keys with nothing after it are dropped."""
    from dataclasses import replace

    groups: dict[str, dict[str, KeyPair]] = {}
    for pair in _list("byKey", pairs):
        if not isinstance(pair, KeyPair):
            raise _fail("byKey", f"needs KV pairs (ls, tree), got {type(pair).__name__}")
        top, _, rest = pair.Key.partition("/")
        if not rest:
            continue
        groups.setdefault(top, {})[rest] = replace(pair, Key=rest)
    return {k: dict(sorted(groups[k].items())) for k in sorted(groups)}


def _explode_into(out: dict[str, Any], key: str, value: Any, full: str, name: str) -> None:
    top, sep, rest = key.partition("/")
    if not sep:
        if key:
            out[key] = value
        return
    nested = out.setdefault(top, {})
    if not isinstance(nested, dict):
        raise _fail(name, f"not a map: {full!r}: {top!r} already has a value")
    _explode_into(nested, rest, value, full, name)


def explode(pairs: Any) -> dict[str, Any]:
    """KV pairs as a nested map by ``/``: ``a/b/c=1`` -> ``{"a": {"b": {"c": "1"}}}``."""
    out: dict[str, Any] = {}
    for pair in _list("explode", pairs):
        _explode_into(out, pair.Key, pair.Value, pair.Key, "explode")
    return out


def explode_map(mapping: Any) -> dict[str, Any]:
    """A flat map with ``/`` in its keys as a nested map."""
    if not isinstance(mapping, Mapping):
        raise _fail("explodeMap", f"needs a map, got {type(mapping).__name__}")
    out: dict[str, Any] = {}
    for key in sorted(mapping, key=str):
        _explode_into(out, str(key), mapping[key], str(key), "explodeMap")
    return out


def _merge(base: Mapping[str, Any], other: Mapping[str, Any], *, override: bool) -> dict[str, Any]:
    out = dict(base)
    for key, value in other.items():
        if key in out and isinstance(out[key], Mapping) and isinstance(value, Mapping):
            out[key] = _merge(out[key], value, override=override)
        elif key not in out or override:
            out[key] = value
    return out


def _key_order(value: Any) -> Any:
    """Maps (at every depth) with their keys in sorted order, as Go ranges over maps: the
    order a map returned by a helper iterates and prints in."""
    if isinstance(value, dict):
        return {k: _key_order(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [_key_order(v) for v in value]
    return value


def merge_map(base: Any, other: Any) -> dict[str, Any]:
    """``base | mergeMap(other)``: ``base`` with the keys only ``other`` has (deep)."""
    if not isinstance(base, Mapping) or not isinstance(other, Mapping):
        raise _fail("mergeMap", "needs two maps")
    return _key_order(_merge(base, other, override=False))  # type: ignore[no-any-return]


def merge_map_with_override(base: Any, other: Any) -> dict[str, Any]:
    """``base | mergeMapWithOverride(other)``: ``base`` updated with ``other`` (deep)."""
    if not isinstance(base, Mapping) or not isinstance(other, Mapping):
        raise _fail("mergeMapWithOverride", "needs two maps")
    return _key_order(_merge(base, other, override=True))  # type: ignore[no-any-return]


# --- debugging --------------------------------------------------------------------------------


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        kinds = {_go_type(v) for v in value}
        return f"[]{kinds.pop() if len(kinds) == 1 else 'interface {}'}"
    if isinstance(value, Mapping):
        keys = {_go_type(k) for k in value}
        values = {_go_type(v) for v in value.values()}
        key = keys.pop() if len(keys) == 1 else "interface {}"
        val = values.pop() if len(values) == 1 else "interface {}"
        return f"map[{key}]{val}"
    return type(value).__name__


def _spew(value: Any, depth: int) -> str:
    head = f"({_go_type(value)}) "
    pad = " " * (depth + 1)
    if value is None:
        return "(interface {}) <nil>"
    if isinstance(value, str):
        return head + f"(len={len(value)}) " + json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return head + ("true" if value else "false")
    if isinstance(value, int | float):
        return head + repr(value)
    if isinstance(value, list | tuple):
        items = [pad + _spew(v, depth + 1) for v in value]
        body = ",\n".join(items)
        n = len(value)
        return head + f"(len={n} cap={n}) {{\n{body}\n{' ' * depth}}}"
    if isinstance(value, Mapping):
        items = [f"{pad}{_spew(k, depth + 1)}: {_spew(value[k], depth + 1)}" for k in sorted(value)]
        return head + f"(len={len(value)}) {{\n" + ",\n".join(items) + f"\n{' ' * depth}}}"
    return head + str(value)


def spew_sdump(value: Any) -> str:
    """consul-template's ``spew_sdump`` (go-spew's Sdump) for strings, numbers, booleans, lists
    and maps: the type, the length and the value, for debugging a template."""
    return _spew(to_plain(value) if is_dataclass(value) else value, 0) + "\n"


# --- the helpers, by consul-template's name (bound by .registry) --------------------------------

# Each takes the value it works on first.
SUBJECT_FIRST: dict[str, Callable[..., Any]] = {
    "add": add,
    "base64Decode": base64_decode,
    "base64Encode": base64_encode,
    "base64URLDecode": base64_url_decode,
    "base64URLEncode": base64_url_encode,
    "byKey": by_key,
    "byMeta": by_meta,
    "byPort": by_port,
    "byTag": by_tag,
    "contains": contains,
    "containsAll": contains_all,
    "containsAny": contains_any,
    "containsNone": contains_none,
    "containsNotAll": contains_not_all,
    "divide": divide,
    "explode": explode,
    "explodeMap": explode_map,
    "hmacSHA256Hex": hmac_sha256_hex,
    "in": in_,
    "indent": indent,
    "loop": loop,
    "maximum": maximum,
    "md5sum": md5sum,
    "mergeMap": merge_map,
    "mergeMapWithOverride": merge_map_with_override,
    "minimum": minimum,
    "modulo": modulo,
    "multiply": multiply,
    "parseBool": parse_bool,
    "parseFloat": parse_float,
    "parseInt": parse_int,
    "parseJSON": parse_json,
    "parseUint": parse_uint,
    "parseYAML": parse_yaml,
    "regexMatch": regex_match,
    "regexReplaceAll": regex_replace_all,
    "replaceAll": replace_all,
    "sha256Hex": sha256_hex,
    "spew_sdump": spew_sdump,
    "split": split,
    "splitToMap": split_to_map,
    "subtract": subtract,
    "toJSON": to_json,
    "toJSONPretty": to_json_pretty,
    "toLower": to_lower,
    "toTOML": to_toml,
    "toTitle": to_title,
    "toUnescapedJSON": to_unescaped_json,
    "toUnescapedJSONPretty": to_unescaped_json_pretty,
    "toUpper": to_upper,
    "toYAML": to_yaml,
    "trim": trim,
    "trimPrefix": trim_prefix,
    "trimSpace": trim_space,
    "trimSuffix": trim_suffix,
}
