"""Go's fmt for Python values: ``Sprint``, ``Sprintln``, ``Sprintf`` (fmt/print.go, format.go).

Values are read as Go kinds: ``None`` is nil, ``bool``/``int``/``float``/``complex``/``str`` the
basic kinds (int, float64, complex128, string), ``bytes`` a ``[]byte``, lists and tuples slices,
dicts maps (printed with sorted keys), dataclass instances structs (fields in declaration order).

Verbs: ``%v %+v %#v %T %% %t %d %b %o %O %x %X %c %q %U %e %E %f %F %g %G %s %p``; flags
``+ - # 0 space``; width and precision, ``*`` and ``[n]`` argument indexes. Wrong types and
argument counts print Go's error forms (``%!d(string=x)``, ``%!d(MISSING)``,
``%!(EXTRA int=2)``, ``%!(NOVERB)``, ``%!(BADWIDTH)``, ``%!(BADPREC)``, ``%!d(BADINDEX)``);
they never raise.

Differences: a pointer inside a slice or struct prints as its value, not an address (Python has
no pointers; Go's addresses change every run anyway); ``%p`` prints ``%!p(...)``; ``%#v`` of a
struct uses the Python class name as the type.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from .lex import go_quote

__all__ = [
    "NO_VALUE",
    "format_float_v",
    "is_struct",
    "sort_keys",
    "sprint",
    "sprint_value",
    "sprintf",
    "sprintln",
    "struct_fields",
    "type_name",
]


class _NoValue:
    """Go's invalid reflect.Value: a missing map entry, nil data. Prints ``<no value>``."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<no value>"


#: The one "no value" (printed ``<no value>`` by an action, treated as nil by fmt).
NO_VALUE: Any = _NoValue()

_FIELDS: dict[type, tuple[str, ...]] = {}


def is_struct(v: Any) -> bool:
    """A dataclass instance: a Go struct."""
    return dataclasses.is_dataclass(v) and not isinstance(v, type)


def struct_fields(v: Any) -> tuple[str, ...]:
    """The public fields of a dataclass instance, in declaration order."""
    cls = type(v)
    names = _FIELDS.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(v) if not f.name.startswith("_"))
        _FIELDS[cls] = names
    return names


def type_name(v: Any) -> str:
    """The Go type name of a value, as ``%T`` and the error forms print it."""
    if v is None:
        return "<nil>"
    t = type(v)
    if t is str:
        return "string"
    if t is bool:
        return "bool"
    if t is int:
        return "int"
    if t is float:
        return "float64"
    if t is complex:
        return "complex128"
    if isinstance(v, bytes | bytearray):
        return "[]uint8"
    if isinstance(v, list | tuple):
        # []string and []main.Record as records hold them; other lists as decoded JSON does
        return "[]" + _element_type(v)
    if isinstance(v, dict):
        # map[string]string as a record's dict[str, str]; other dicts as decoded JSON does
        keys = _element_type(v.keys(), loose=False) if v else "string"
        return f"map[{keys}]{_element_type(v.values())}"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if is_struct(v):
        return getattr(t, "__go_type__", "main." + t.__name__)
    if callable(v):
        return "func"
    return t.__name__


def _element_type(items: Any, loose: bool = True) -> str:
    """The element type of a collection: one string or record type, else interface {}.

    ``loose=False`` (map keys): any single basic type counts (map[int]string).
    """
    first: Any = _NOTHING
    for e in items:
        if first is _NOTHING:
            first = type(e)
        elif type(e) is not first:
            return "interface {}"
    if first is _NOTHING or first is type(None):
        return "interface {}"
    if loose and first is not str and not dataclasses.is_dataclass(first):
        return "interface {}"
    for e in items:
        return type_name(e)
    return "interface {}"


_NOTHING: Any = object()


# --- map key order (internal/fmtsort) -----------------------------------------------------------


def _key_rank(k: Any) -> tuple[int, Any]:
    if k is None:
        return (0, 0)
    if isinstance(k, bool):
        return (1, int(k))
    if isinstance(k, int):
        return (2, k)
    if isinstance(k, float):
        return (3, (0, 0.0) if math.isnan(k) else (1, k))
    if isinstance(k, str):
        return (4, k)
    return (5, repr(k))


def sort_keys(m: dict[Any, Any]) -> list[Any]:
    """Keys in Go's print/range order: numbers by value, strings bytewise, false before true."""
    keys = list(m)
    if all(type(k) is str for k in keys):
        keys.sort()
        return keys
    keys.sort(key=_key_rank)
    return keys


# --- floats -------------------------------------------------------------------------------------


def _shortest_digits(f: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of abs(f) and the decimal point position."""
    r = repr(abs(f))
    mant, _, exp = r.partition("e")
    e = int(exp) if exp else 0
    intpart, _, frac = mant.partition(".")
    if frac == "0":
        frac = ""
    digits = intpart + frac
    dp = len(intpart) + e
    stripped = digits.lstrip("0")
    dp -= len(digits) - len(stripped)
    digits = stripped.rstrip("0") or "0"
    if digits == "0":
        dp = 1
    return digits, dp


def _fmt_e(neg: bool, digits: str, dp: int, prec: int, upper: bool) -> str:
    # %e from digits: d.ddd e±XX with prec digits after the point (prec < 0: all digits)
    if prec < 0:
        prec = len(digits) - 1
    mant = digits[0]
    rest = digits[1:].ljust(prec, "0")[:prec]
    if prec > 0:
        mant += "." + rest
    exp = 0 if digits == "0" else dp - 1
    sign = "-" if exp < 0 else "+"
    s = f"{mant}{'E' if upper else 'e'}{sign}{abs(exp):02d}"
    return ("-" if neg else "") + s


def _fmt_f(neg: bool, digits: str, dp: int, prec: int) -> str:
    if prec < 0:
        prec = max(len(digits) - dp, 0)
    if dp <= 0:
        intpart = "0"
        frac = "0" * (-dp) + digits
    else:
        intpart = digits[:dp].ljust(dp, "0")
        frac = digits[dp:]
    frac = frac.ljust(prec, "0")[:prec]
    s = intpart + ("." + frac if prec > 0 else "")
    return ("-" if neg else "") + s


def format_float(f: float, verb: str, prec: int) -> str:
    """Go's strconv.FormatFloat(f, verb, prec, 64)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    neg = math.copysign(1.0, f) < 0
    if verb == "b":
        if f == 0:
            return ("-" if neg else "") + "0p-1074"
        m, e = math.frexp(abs(f))
        mant = int(m * (1 << 53))
        exp = e - 53
        if exp < -1074:
            mant >>= -1074 - exp
            exp = -1074
        return ("-" if neg else "") + f"{mant}p{exp:+d}"
    if verb in "xX":
        return _hex_float(f, prec, verb == "X")
    if prec < 0:
        digits, dp = _shortest_digits(f)
        if verb in "eE":
            return _fmt_e(neg, digits, dp, -1, verb == "E")
        if verb in "fF":
            return _fmt_f(neg, digits, dp, -1)
        # g / G shortest: %e when the exponent is < -4 or >= 21 ... Go uses eprec = 6 here
        exp = dp - 1
        eprec = 6
        if digits == "0":
            exp = 0
        if exp < -4 or exp >= eprec:
            return _fmt_e(neg, digits, dp, len(digits) - 1, verb == "G")
        return _fmt_f(neg, digits, dp, max(len(digits) - dp, 0))
    if verb in "eEfF":
        s = format(f, f".{prec}{verb.lower()}")
        s = s.upper() if verb == "E" else s
        return s
    # g / G with a precision: same rules as C
    s = format(f, f".{prec or 1}{'g'}")
    if verb == "G":
        s = s.upper()
    return s


def _hex_float(f: float, prec: int, upper: bool) -> str:
    neg = math.copysign(1.0, f) < 0
    f = abs(f)
    if f == 0:
        mant, exp = 0, 0
    else:
        m, e = math.frexp(f)  # f = m * 2**e, 0.5 <= m < 1
        mant = int(m * (1 << 53))  # 53 bits, top bit set
        exp = e - 1
    # mantissa as 1.xxxxx (52 fraction bits = 13 hex digits)
    frac = mant & ((1 << 52) - 1)
    lead = mant >> 52
    hexd = f"{frac:013x}"
    if prec < 0:
        hexd = hexd.rstrip("0")
    elif prec < 13:
        # round to prec hex digits, half to even
        shift = (13 - prec) * 4
        full = (lead << 52) | frac
        q, r = divmod(full, 1 << shift)
        half = 1 << (shift - 1)
        if r > half or (r == half and q & 1):
            q += 1
        full = q << shift
        if full >> 53:
            full >>= 1
            exp += 1
        lead = full >> 52
        frac = full & ((1 << 52) - 1)
        hexd = f"{frac:013x}"[:prec]
    else:
        hexd = hexd + "0" * (prec - 13)
    s = f"0x{lead}" + ("." + hexd if hexd else "") + f"p{exp:+03d}"
    if upper:
        s = s.upper()
    return ("-" if neg else "") + s


def format_float_v(f: float) -> str:
    """A float64 as ``%v`` prints it (shortest digits, exponent below 1e-4 or from 1e21)."""
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    return format_float(f, "g", -1)


# --- the printer --------------------------------------------------------------------------------

_LDIGITS = "0123456789abcdefx"
_UDIGITS = "0123456789ABCDEFX"


class _Printer:
    __slots__ = (
        "arg",
        "buf",
        "minus",
        "plus",
        "plus_v",
        "prec",
        "prec_present",
        "sharp",
        "sharp_v",
        "space",
        "wid",
        "wid_present",
        "zero",
    )

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.arg: Any = None
        self.clear_flags()

    def clear_flags(self) -> None:
        self.plus = self.minus = self.sharp = self.space = self.zero = False
        self.plus_v = self.sharp_v = False
        self.wid_present = self.prec_present = False
        self.wid = self.prec = 0

    # -- padding -------------------------------------------------------------------------------

    def write_padding(self, n: int) -> None:
        if n > 0:
            self.buf.append(("0" if self.zero and not self.minus else " ") * n)

    def pad(self, s: str) -> None:
        if not self.wid_present or self.wid == 0:
            self.buf.append(s)
            return
        width = self.wid - len(s)
        if not self.minus:
            self.write_padding(width)
            self.buf.append(s)
        else:
            self.buf.append(s)
            self.write_padding(width)

    def pad_nozero(self, s: str) -> None:
        old = self.zero
        self.zero = False
        self.pad(s)
        self.zero = old

    # -- basic kinds ---------------------------------------------------------------------------

    def fmt_bool(self, v: bool, verb: str) -> None:
        if verb in "tv":
            self.pad("true" if v else "false")
        else:
            self.bad_verb(verb)

    def fmt_integer(self, v: int, verb: str) -> None:
        if verb in "vd":
            self.fmt_int(v, 10, verb, _LDIGITS)
        elif verb == "b":
            self.fmt_int(v, 2, verb, _LDIGITS)
        elif verb in "oO":
            self.fmt_int(v, 8, verb, _LDIGITS)
        elif verb == "x":
            self.fmt_int(v, 16, verb, _LDIGITS)
        elif verb == "X":
            self.fmt_int(v, 16, verb, _UDIGITS)
        elif verb == "c":
            self.pad(_rune(v))
        elif verb == "q":
            self.pad(_quote_rune(_rune(v), self.plus))
        elif verb == "U":
            self.fmt_unicode(v)
        else:
            self.bad_verb(verb)

    def fmt_int(self, v: int, base: int, verb: str, digits: str) -> None:
        negative = v < 0
        u = -v if negative else v
        prec = 0
        if self.prec_present:
            prec = self.prec
            if prec == 0 and u == 0:
                old = self.zero
                self.zero = False
                self.write_padding(self.wid)
                self.zero = old
                return
        elif self.zero and not self.minus and self.wid_present:
            prec = self.wid
            if negative or self.plus or self.space:
                prec -= 1
        if base == 10:
            s = str(u)
        elif base == 16:
            s = format(u, "x" if digits is _LDIGITS else "X")
        elif base == 8:
            s = format(u, "o")
        else:
            s = format(u, "b")
        if len(s) < prec:
            s = "0" * (prec - len(s)) + s
        if self.sharp:
            if base == 2:
                s = "0b" + s
            elif base == 8:
                if s[0] != "0":
                    s = "0" + s
            elif base == 16:
                s = "0" + digits[16] + s
        if verb == "O":
            s = "0o" + s
        if negative:
            s = "-" + s
        elif self.plus:
            s = "+" + s
        elif self.space:
            s = " " + s
        self.pad_nozero(s)

    def fmt_unicode(self, u: int) -> None:
        u &= (1 << 64) - 1  # Go formats the value as a uint64
        prec = 4
        if self.prec_present and self.prec > 4:
            prec = self.prec
        s = "U+" + format(u, "X").rjust(prec, "0")
        if self.sharp and 0 <= u <= 0x10FFFF and chr(u).isprintable():
            s += " '" + chr(u) + "'"
        self.pad_nozero(s)

    def fmt_float(self, v: float, verb: str) -> None:
        if verb == "v":
            self.fmt_f(v, "g", -1)
        elif verb in "bgGxX":
            self.fmt_f(v, verb, -1)
        elif verb in "fFeE":
            self.fmt_f(v, verb, 6)
        else:
            self.bad_verb(verb)

    def fmt_f(self, v: float, verb: str, prec: int) -> None:
        if self.prec_present:
            prec = self.prec
        num = format_float(v, verb, prec)
        if num[0] not in "+-":
            num = "+" + num
        if self.space and num[0] == "+" and not self.plus:
            num = " " + num[1:]
        if num[1] in "IN":
            if num[1] == "N" and not self.space and not self.plus:
                num = num[1:]
            self.pad_nozero(num)
            return
        if self.sharp and verb != "b":
            digits = 0
            if verb in "vgGxX":
                digits = prec if prec != -1 else 6
            tail = ""
            body = num
            for i in range(1, len(num)):
                c = num[i]
                if c in "pP" or (c in "eE" and verb not in "xX"):
                    tail = num[i:]
                    body = num[:i]
                    break
            has_point = "." in body
            saw_nonzero = False
            for c in body[1:]:
                if c == ".":
                    continue
                if c != "0":
                    saw_nonzero = True
                if saw_nonzero:
                    digits -= 1
            if not has_point:
                if len(body) == 2 and body[1] == "0":
                    digits -= 1
                body += "."
            if digits > 0:
                body += "0" * digits
            num = body + tail
        if self.plus or num[0] != "+":
            if self.zero and not self.minus and self.wid_present and self.wid > len(num):
                self.buf.append(num[0])
                self.write_padding(self.wid - len(num))
                self.buf.append(num[1:])
                return
            self.pad(num)
            return
        self.pad(num[1:])

    def fmt_complex(self, v: complex, verb: str) -> None:
        if verb in "vbgGxXfFeE":
            old_plus = self.plus
            self.buf.append("(")
            self.fmt_float(v.real, verb)
            self.plus = True
            self.fmt_float(v.imag, verb)
            self.buf.append("i)")
            self.plus = old_plus
        else:
            self.bad_verb(verb)

    def fmt_string(self, v: str, verb: str) -> None:
        if verb == "v":
            if self.sharp_v:
                self.fmt_q(v)
            else:
                self.fmt_s(v)
        elif verb == "s":
            self.fmt_s(v)
        elif verb == "x":
            self.fmt_sx(_utf8(v), _LDIGITS)
        elif verb == "X":
            self.fmt_sx(_utf8(v), _UDIGITS)
        elif verb == "q":
            self.fmt_q(v)
        else:
            self.bad_verb(verb)

    def truncate(self, s: str) -> str:
        if self.prec_present and len(s) > self.prec:
            return s[: self.prec]
        return s

    def fmt_s(self, s: str) -> None:
        self.pad(self.truncate(s))

    def fmt_q(self, s: str) -> None:
        s = self.truncate(s)
        if self.sharp and _can_backquote(s):
            self.pad("`" + s + "`")
            return
        self.pad(_quote_ascii(s) if self.plus else go_quote(s))

    def fmt_sx(self, b: bytes, digits: str) -> None:
        length = len(b)
        if self.prec_present and self.prec < length:
            length = self.prec
        width = 2 * length
        if width > 0:
            if self.space:
                if self.sharp:
                    width *= 2
                width += length - 1
            elif self.sharp:
                width += 2
        else:
            if self.wid_present:
                self.write_padding(self.wid)
            return
        if self.wid_present and self.wid > width and not self.minus:
            self.write_padding(self.wid - width)
        out = []
        if self.sharp:
            out.append("0" + digits[16])
        for i in range(length):
            if self.space and i > 0:
                out.append(" ")
                if self.sharp:
                    out.append("0" + digits[16])
            c = b[i]
            out.append(digits[c >> 4] + digits[c & 0xF])
        self.buf.append("".join(out))
        if self.wid_present and self.wid > width and self.minus:
            self.write_padding(self.wid - width)

    def fmt_bytes(self, v: bytes, verb: str) -> None:
        if verb in "vd":
            if self.sharp_v:
                self.buf.append("[]byte{")
                self.buf.append(", ".join(f"0x{c:x}" for c in v))
                self.buf.append("}")
                return
            self.buf.append("[")
            for i, c in enumerate(v):
                if i > 0:
                    self.buf.append(" ")
                self.fmt_int(c, 10, verb, _LDIGITS)
            self.buf.append("]")
        elif verb == "s":
            self.fmt_s(v.decode("utf-8", "replace"))
        elif verb == "x":
            self.fmt_sx(bytes(v), _LDIGITS)
        elif verb == "X":
            self.fmt_sx(bytes(v), _UDIGITS)
        elif verb == "q":
            self.fmt_q(v.decode("utf-8", "replace"))
        else:
            self.print_value(list(v), verb, 0)

    def bad_verb(self, verb: str) -> None:
        self.buf.append("%!" + verb + "(")
        arg = self.arg
        if arg is None or arg is NO_VALUE:
            self.buf.append("<nil>")
        else:
            self.buf.append(type_name(arg) + "=")
            saved = self._save()
            self.print_arg(arg, "v")  # with the verb's flags, as Go does (%!f(string=   he))
            self._restore(saved)
        self.buf.append(")")

    def _save(self) -> tuple[Any, ...]:
        return (
            self.plus,
            self.minus,
            self.sharp,
            self.space,
            self.zero,
            self.plus_v,
            self.sharp_v,
            self.wid_present,
            self.prec_present,
            self.wid,
            self.prec,
            self.arg,
        )

    def _restore(self, s: tuple[Any, ...]) -> None:
        (
            self.plus,
            self.minus,
            self.sharp,
            self.space,
            self.zero,
            self.plus_v,
            self.sharp_v,
            self.wid_present,
            self.prec_present,
            self.wid,
            self.prec,
            self.arg,
        ) = s

    # -- any value -----------------------------------------------------------------------------

    def print_arg(self, arg: Any, verb: str) -> None:
        self.arg = arg
        if arg is None or arg is NO_VALUE:
            if verb in "Tv":
                self.pad("<nil>")
            else:
                self.bad_verb(verb)
            return
        if verb == "T":
            self.fmt_s(type_name(arg))
            return
        if verb == "p":
            self.bad_verb(verb)
            return
        self.print_value(arg, verb, 0)

    def print_value(self, v: Any, verb: str, depth: int) -> None:
        if depth > 0:
            self.arg = v
        t = type(v)
        if t is str:
            self.fmt_string(v, verb)
        elif t is int:
            self.fmt_integer(v, verb)
        elif t is bool:
            self.fmt_bool(v, verb)
        elif t is float:
            self.fmt_float(v, verb)
        elif v is None or v is NO_VALUE:
            # a nil interface inside a composite
            if self.sharp_v:
                self.buf.append("interface {}(nil)")
            else:
                self.buf.append("<nil>")
        elif isinstance(v, dict):
            self.print_map(v, verb, depth)
        elif isinstance(v, list | tuple):
            self.print_list(v, verb, depth)
        elif is_struct(v):
            self.print_struct(v, verb, depth)
        elif t is complex:
            self.fmt_complex(v, verb)
        elif isinstance(v, bytes | bytearray):
            self.fmt_bytes(bytes(v), verb)
        elif isinstance(v, bool):
            self.fmt_bool(bool(v), verb)
        elif isinstance(v, int):
            self.fmt_integer(int(v), verb)
        elif isinstance(v, float):
            self.fmt_float(float(v), verb)
        elif isinstance(v, str):
            self.fmt_string(str(v), verb)
        elif isinstance(v, BaseException):
            # Go calls Error() for the string verbs
            if verb in "vsqxX":
                self.fmt_string(str(v), "s" if verb == "v" else verb)
            else:
                self.bad_verb(verb)
        elif callable(v):
            self.bad_verb(verb) if verb not in "v" else self.buf.append(f"0x{id(v):x}")
        else:
            self.fmt_string(str(v), verb)

    def print_map(self, m: dict[Any, Any], verb: str, depth: int) -> None:
        if self.sharp_v:
            self.buf.append(type_name(m) + "{")
        else:
            self.buf.append("map[")
        for i, k in enumerate(sort_keys(m)):
            if i > 0:
                self.buf.append(", " if self.sharp_v else " ")
            self.print_value(k, verb, depth + 1)
            self.buf.append(":")
            self.print_value(m[k], verb, depth + 1)
        self.buf.append("}" if self.sharp_v else "]")

    def print_list(self, items: Sequence[Any], verb: str, depth: int) -> None:
        if self.sharp_v:
            self.buf.append(type_name(items) + "{")
            for i, e in enumerate(items):
                if i > 0:
                    self.buf.append(", ")
                self.print_value(e, verb, depth + 1)
            self.buf.append("}")
            return
        self.buf.append("[")
        for i, e in enumerate(items):
            if i > 0:
                self.buf.append(" ")
            self.print_value(e, verb, depth + 1)
        self.buf.append("]")

    def print_struct(self, v: Any, verb: str, depth: int) -> None:
        if self.sharp_v:
            self.buf.append(type_name(v))
        self.buf.append("{")
        for i, name in enumerate(struct_fields(v)):
            if i > 0:
                self.buf.append(", " if self.sharp_v else " ")
            if self.plus_v or self.sharp_v:
                self.buf.append(name + ":")
            self.print_value(getattr(v, name), verb, depth + 1)
        self.buf.append("}")

    # -- Printf --------------------------------------------------------------------------------

    def do_printf(self, fmt: str, a: Sequence[Any]) -> None:
        end = len(fmt)
        arg_num = 0
        after_index = False
        reordered = False
        i = 0
        buf = self.buf
        while i < end:
            good_arg_num = True
            j = fmt.find("%", i)
            if j < 0:
                buf.append(fmt[i:])
                break
            if j > i:
                buf.append(fmt[i:j])
            i = j + 1
            self.clear_flags()
            # flags, and the fast path for a simple verb
            simple_done = False
            while i < end:
                c = fmt[i]
                if c == "#":
                    self.sharp = True
                elif c == "0":
                    self.zero = not self.minus
                elif c == "+":
                    self.plus = True
                elif c == "-":
                    self.minus = True
                    self.zero = False
                elif c == " ":
                    self.space = True
                else:
                    if "a" <= c <= "z" and arg_num < len(a):
                        if c == "v":
                            self.sharp_v = self.sharp
                            self.sharp = False
                            self.plus_v = self.plus
                            self.plus = False
                        self.print_arg(a[arg_num], c)
                        arg_num += 1
                        i += 1
                        simple_done = True
                    break
                i += 1
            if simple_done:
                continue
            # argument index
            arg_num, i, after_index, ok, r = self._arg_number(arg_num, fmt, i, len(a))
            reordered = reordered or r
            good_arg_num = good_arg_num and ok
            # width
            if i < end and fmt[i] == "*":
                i += 1
                self.wid, self.wid_present, arg_num = _int_from_arg(a, arg_num)
                if not self.wid_present:
                    buf.append("%!(BADWIDTH)")
                if self.wid < 0:
                    self.wid = -self.wid
                    self.minus = True
                    self.zero = False
                after_index = False
            else:
                self.wid, self.wid_present, i = _parsenum(fmt, i, end)
                if after_index and self.wid_present:
                    good_arg_num = False
            # precision
            if i + 1 < end and fmt[i] == ".":
                i += 1
                if after_index:
                    good_arg_num = False
                arg_num, i, after_index, ok, r = self._arg_number(arg_num, fmt, i, len(a))
                reordered = reordered or r
                good_arg_num = good_arg_num and ok
                if i < end and fmt[i] == "*":
                    i += 1
                    self.prec, self.prec_present, arg_num = _int_from_arg(a, arg_num)
                    if self.prec < 0:
                        self.prec = 0
                        self.prec_present = False
                    if not self.prec_present:
                        buf.append("%!(BADPREC)")
                    after_index = False
                else:
                    self.prec, self.prec_present, i = _parsenum(fmt, i, end)
                    if not self.prec_present:
                        self.prec = 0
                        self.prec_present = True
            if not after_index:
                arg_num, i, after_index, ok, r = self._arg_number(arg_num, fmt, i, len(a))
                reordered = reordered or r
                good_arg_num = good_arg_num and ok
            if i >= end:
                buf.append("%!(NOVERB)")
                break
            verb = fmt[i]
            i += 1
            if verb == "%":
                buf.append("%")
            elif not good_arg_num:
                buf.append("%!" + verb + "(BADINDEX)")
            elif arg_num >= len(a):
                buf.append("%!" + verb + "(MISSING)")
            else:
                if verb == "v":
                    self.sharp_v = self.sharp
                    self.sharp = False
                    self.plus_v = self.plus
                    self.plus = False
                self.print_arg(a[arg_num], verb)
                arg_num += 1
        if not reordered and arg_num < len(a):
            self.clear_flags()
            buf.append("%!(EXTRA ")
            for k, arg in enumerate(a[arg_num:]):
                if k > 0:
                    buf.append(", ")
                if arg is None or arg is NO_VALUE:
                    buf.append("<nil>")
                else:
                    buf.append(type_name(arg) + "=")
                    self.print_arg(arg, "v")
            buf.append(")")

    def _arg_number(
        self, arg_num: int, fmt: str, i: int, num_args: int
    ) -> tuple[int, int, bool, bool, bool]:
        """(arg_num, i, found, good, reordered) as Go's argNumber."""
        if i >= len(fmt) or fmt[i] != "[":
            return arg_num, i, False, True, False
        index, wid, ok = _parse_arg_number(fmt[i:])
        if ok and 0 <= index < num_args:
            return index, i + wid, True, True, True
        return arg_num, i + wid, ok, False, True


def _parse_arg_number(fmt: str) -> tuple[int, int, bool]:
    if len(fmt) < 3:
        return 0, 1, False
    for i in range(1, len(fmt)):
        if fmt[i] == "]":
            width, ok, newi = _parsenum(fmt, 1, i)
            if not ok or newi != i:
                return 0, i + 1, False
            return width - 1, i + 1, True
    return 0, 1, False


def _too_large(n: int) -> bool:
    return n > 1_000_000 or n < -1_000_000


def _parsenum(s: str, start: int, end: int) -> tuple[int, bool, int]:
    if start >= end:
        return 0, False, end
    num = 0
    isnum = False
    i = start
    while i < end and "0" <= s[i] <= "9":
        if _too_large(num):
            return 0, False, end
        num = num * 10 + ord(s[i]) - 48
        isnum = True
        i += 1
    return num, isnum, i


def _int_from_arg(a: Sequence[Any], arg_num: int) -> tuple[int, bool, int]:
    if arg_num < len(a):
        v = a[arg_num]
        num, is_int = 0, False
        if isinstance(v, int) and not isinstance(v, bool):
            num, is_int = v, True
        if _too_large(num):
            num, is_int = 0, False
        return num, is_int, arg_num + 1
    return 0, False, arg_num


def _utf8(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _rune(v: int) -> str:
    if v < 0 or v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
        return "\ufffd"
    return chr(v)


def _can_backquote(s: str) -> bool:
    for ch in s:
        if ch == "`" or ch == "\ufeff":
            return False
        if ch != "\t" and (ord(ch) < 0x20 or ord(ch) == 0x7F):
            return False
        if 0xDC80 <= ord(ch) <= 0xDCFF:
            return False
    return True


def _quote_ascii(s: str) -> str:
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif code < 0x80 and ch.isprintable():
            out.append(ch)
        else:
            q = go_quote(ch)[1:-1]
            if q == ch:  # printable non-ASCII
                q = f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
            out.append(q)
    out.append('"')
    return "".join(out)


def _quote_rune(ch: str, ascii_only: bool) -> str:
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    q = _quote_ascii(ch) if ascii_only else go_quote(ch)
    return "'" + q[1:-1] + "'"


# --- entry points -------------------------------------------------------------------------------


def _is_string(v: Any) -> bool:
    return isinstance(v, str)


def sprint(args: Sequence[Any]) -> str:
    """Go's fmt.Sprint: a space between operands when neither side is a string."""
    p = _Printer()
    prev_string = False
    for n, arg in enumerate(args):
        is_string = isinstance(arg, str)
        if n > 0 and not is_string and not prev_string:
            p.buf.append(" ")
        if is_string:
            p.buf.append(arg)
        else:
            p.print_arg(arg, "v")
        prev_string = is_string
    return "".join(p.buf)


def sprintln(args: Sequence[Any]) -> str:
    """Go's fmt.Sprintln: spaces between all operands and a newline."""
    p = _Printer()
    for n, arg in enumerate(args):
        if n > 0:
            p.buf.append(" ")
        p.print_arg(arg, "v")
    p.buf.append("\n")
    return "".join(p.buf)


def sprintf(fmt: str, args: Sequence[Any]) -> str:
    """Go's fmt.Sprintf."""
    p = _Printer()
    p.do_printf(fmt, args)
    return "".join(p.buf)


def sprint_value(v: Any) -> str:
    """One value as ``{{ . }}`` prints it (fmt.Fprint of one operand)."""
    t = type(v)
    if t is str:
        return v  # type: ignore[no-any-return]
    if t is int:
        return str(v)
    if t is bool:
        return "true" if v else "false"
    if t is float:
        return format_float_v(v)
    p = _Printer()
    p.print_arg(v, "v")
    return "".join(p.buf)
