"""text/template's builtin functions (text/template/funcs.go) over Python values.

Each takes already-evaluated arguments, where :data:`.fmt.NO_VALUE` stands for Go's invalid
value (a missing key, nil data) and ``None`` for nil; each returns a value or raises
:class:`BuiltinError` with Go's message (the caller adds ``error calling NAME: ``).
``and``/``or`` are not here: they short-circuit, so the executor evaluates their operands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote_plus

from .fmt import NO_VALUE, is_struct, sprint, sprintf, sprintln, struct_fields, type_name

__all__ = [
    "ArgTypeError",
    "BuiltinError",
    "eq",
    "ge",
    "gt",
    "html_escape",
    "index",
    "js_escape",
    "le",
    "length",
    "lt",
    "slice_",
    "truth",
    "urlquery",
]


class BuiltinError(Exception):
    """A builtin failed; ``str()`` is Go's message."""


class ArgTypeError(BuiltinError):
    """An argument of the wrong type: reported without ``error calling NAME:`` as in Go."""


def truth(v: Any) -> bool:
    """Go's isTrue: false, 0, "", empty slices/maps, nil and no value are false; structs true."""
    t = type(v)
    if t is bool:
        return v  # type: ignore[no-any-return]
    if v is None or v is NO_VALUE:
        return False
    if t in (int, float, complex, str, list, tuple, dict, bytes):
        return bool(v)
    if is_struct(v):
        return True
    try:
        return bool(v)
    except Exception:
        return True


# --- comparison ---------------------------------------------------------------------------------

_BAD_TYPE = "invalid type for comparison"
_BAD_CMP = "incompatible types for comparison"


def _kind(v: Any) -> str:
    t = type(v)
    if t is int:
        return "int"
    if t is str:
        return "string"
    if t is bool:
        return "bool"
    if t is float:
        return "float"
    if t is complex:
        return "complex"
    if v is None or v is NO_VALUE:
        return "invalid"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    return "other"


def _incompatible(a: Any, b: Any) -> BuiltinError:
    return BuiltinError(f"{_BAD_CMP}: {type_name(a)} and {type_name(b)}")


def _go_kind(v: Any) -> str:
    if is_struct(v):
        return "struct"
    if isinstance(v, list | tuple | bytes | bytearray):
        return "slice"
    if isinstance(v, dict):
        return "map"
    return type(v).__name__


def _comparable(v: Any) -> bool:
    """Go's Comparable: not a slice or map, nor a struct holding one."""
    if isinstance(v, list | dict | bytearray | tuple) and not is_struct(v):
        return False
    if is_struct(v):
        return all(_comparable(getattr(v, f)) for f in struct_fields(v))
    return True


def eq(arg1: Any, *arg2: Any) -> bool:
    """Go's eq: arg1 == any of arg2 (basic kinds; ints vs floats is an error)."""
    if not arg2:
        raise BuiltinError("missing argument for comparison")
    k1 = _kind(arg1)
    for arg in arg2:
        k2 = _kind(arg)
        if k1 != k2:
            if k1 != "invalid" and k2 != "invalid":
                raise _incompatible(arg1, arg)
            continue
        if k1 == "invalid":
            return True
        if k1 == "other":
            if _go_kind(arg1) != _go_kind(arg):  # Go's canCompare: the same reflect kind
                raise BuiltinError(
                    f"non-comparable types {sprintf('%s', [arg1])}: {type_name(arg1)}, "
                    f"{type_name(arg)}: {sprintf('%v', [arg])}"
                )
            if not _comparable(arg):  # Go checks the later operand only
                raise BuiltinError(f"non-comparable type {sprintf('%s', [arg])}: {type_name(arg)}")
            if type(arg1) is not type(arg):
                continue  # values of different (comparable) types are simply not equal
        if arg1 == arg:
            return True
    return False


def ne(arg1: Any, arg2: Any) -> bool:
    """Go's ne: not eq, with exactly two operands."""
    return not eq(arg1, arg2)


def lt(arg1: Any, arg2: Any) -> bool:
    """Go's lt on ints, floats and strings."""
    k1 = _kind(arg1)
    if k1 not in ("int", "float", "string", "bool", "complex"):
        raise BuiltinError(_BAD_TYPE)
    k2 = _kind(arg2)
    if k2 not in ("int", "float", "string", "bool", "complex"):
        raise BuiltinError(_BAD_TYPE)
    if k1 != k2:
        raise _incompatible(arg1, arg2)
    if k1 in ("bool", "complex"):
        raise BuiltinError(_BAD_TYPE)
    return bool(arg1 < arg2)


def le(arg1: Any, arg2: Any) -> bool:
    """Go's le: lt or eq."""
    return lt(arg1, arg2) or eq(arg1, arg2)


def gt(arg1: Any, arg2: Any) -> bool:
    """Go's gt: not le."""
    return not le(arg1, arg2)


def ge(arg1: Any, arg2: Any) -> bool:
    """Go's ge: not lt."""
    return not lt(arg1, arg2)


# --- len, index, slice --------------------------------------------------------------------------


def _byte_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogateescape"))


def length(item: Any) -> int:
    """Go's len: bytes of a string, elements of a slice or map."""
    if isinstance(item, str):
        return _byte_len(item)
    if isinstance(item, list | tuple | dict | bytes | bytearray | range) and not is_struct(item):
        return len(item)
    if item is NO_VALUE:
        raise BuiltinError("reflect: call of reflect.Value.Type on zero Value")
    if item is None:
        raise BuiltinError("len of nil pointer")
    raise BuiltinError(f"len of type {type_name(item)}")


def _index_arg(index: Any, cap: int, unwrapped: bool = False) -> int:
    """``unwrapped``: Go's index looks inside an interface first (a nil one is then nil)."""
    if isinstance(index, bool) or not isinstance(index, int):
        if index is NO_VALUE or (index is None and unwrapped):
            raise BuiltinError("cannot index slice/array with nil")
        if index is None:  # a nil interface, as a missing key gives
            raise BuiltinError("cannot index slice/array with type interface {}")
        raise BuiltinError(f"cannot index slice/array with type {type_name(index)}")
    if index < 0 or index > cap:
        raise BuiltinError(f"index out of range: {index}")
    return index


def index(item: Any, *indexes: Any) -> Any:
    """Go's index: item[i][j]...; a byte (int) of a string; the zero value for a missing key."""
    if item is None or item is NO_VALUE:
        raise BuiltinError("index of untyped nil")
    for ix in indexes:
        if item is None or item is NO_VALUE:
            raise BuiltinError("index of nil pointer")
        if isinstance(item, str):
            data = item.encode("utf-8", "surrogateescape") if not item.isascii() else item
            x = _index_arg(ix, len(data), True)
            if x == len(data):
                raise BuiltinError("reflect: string index out of range")
            item = data[x] if isinstance(data, bytes) else ord(data[x])
        elif isinstance(item, list | tuple | bytes | bytearray | range) and not is_struct(item):
            x = _index_arg(ix, len(item), True)
            if x == len(item):
                raise BuiltinError("reflect: slice index out of range")
            item = item[x]
        elif isinstance(item, dict):
            if ix is None or ix is NO_VALUE:
                if item and all(type(k) is str for k in item):
                    raise BuiltinError("value is nil; should be of type string")
                ix = None
            elif item and all(type(k) is str for k in item) and not isinstance(ix, str):
                raise BuiltinError(f"value has type {type_name(ix)}; should be string")
            try:
                item = item.get(ix, getattr(item, "go_zero", None))
            except TypeError:
                raise BuiltinError(f"value has type {type_name(ix)}; unhashable") from None
        else:
            raise BuiltinError(f"can't index item of type {type_name(item)}")
    return item


def slice_(item: Any, *indexes: Any) -> Any:
    """Go's slice: item[i:j] (or item[i:j:k] for slices)."""
    if item is None or item is NO_VALUE:
        raise BuiltinError("slice of untyped nil")
    if len(indexes) > 3:
        raise BuiltinError(f"too many slice indexes: {len(indexes)}")
    data: Any
    if isinstance(item, str):
        if len(indexes) == 3:
            raise BuiltinError("cannot 3-index slice a string")
        data = item if item.isascii() else item.encode("utf-8", "surrogateescape")
    elif isinstance(item, list | tuple | bytes | bytearray) and not is_struct(item):
        data = item
    else:
        raise BuiltinError(f"can't slice item of type {type_name(item)}")
    cap = len(data)
    idx = [0, len(data), cap]
    for i, ix in enumerate(indexes):
        idx[i] = _index_arg(ix, cap)
    if idx[0] > idx[1]:
        raise BuiltinError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(indexes) == 3 and idx[1] > idx[2]:
        raise BuiltinError(f"invalid slice index: {idx[1]} > {idx[2]}")
    out = data[idx[0] : idx[1]]
    if isinstance(item, str) and isinstance(out, bytes):
        # A cut through a multi-byte character: Go keeps the stray bytes; we write U+FFFD
        # (a Python str cannot hold them, and the output file must be valid UTF-8 text).
        return out.decode("utf-8", "replace")
    return out


# --- escaping -----------------------------------------------------------------------------------


def _eval_args(args: Sequence[Any]) -> str:
    """One string from the arguments (Go's evalArgs): a single string as is, else Sprint."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(["<no value>" if a is None or a is NO_VALUE else a for a in args])


_HTML = {"<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&#39;", '"': "&#34;", "\0": "\ufffd"}
_HTML_TABLE = str.maketrans(_HTML)


def html_escape(*args: Any) -> str:
    """Go's html: the HTML-escaped form of the arguments."""
    return _eval_args(args).translate(_HTML_TABLE)


_JS = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "=": "\\u003D",
}


def js_escape(*args: Any) -> str:
    """Go's js: the JavaScript-escaped form of the arguments."""
    s = _eval_args(args)
    out = []
    for ch in s:
        if ch in _JS:
            out.append(_JS[ch])
        elif ch < " ":
            out.append(f"\\u00{ord(ch):02X}")
        elif ord(ch) < 0x80 or ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04X}")
    return "".join(out)


def urlquery(*args: Any) -> str:
    """Go's urlquery: url.QueryEscape of the arguments."""
    return quote_plus(_eval_args(args).encode("utf-8", "surrogateescape"), safe="")


def go_print(*args: Any) -> str:
    """Go's print (fmt.Sprint)."""
    return sprint(args)


def go_println(*args: Any) -> str:
    """Go's println (fmt.Sprintln)."""
    return sprintln(args)


def go_printf(fmt: Any, *args: Any) -> str:
    """Go's printf (fmt.Sprintf)."""
    if not isinstance(fmt, str):
        raise ArgTypeError(f"wrong type for value; expected string; got {type_name(fmt)}")
    return sprintf(fmt, args)
