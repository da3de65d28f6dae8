"""The lexer of Go's text/template: source text to a list of tokens.

It follows ``text/template/parse/lex.go`` state by state, so the same input splits into the same
tokens and fails with the same message: text is copied up to the left delimiter; inside an action
the right delimiter is only recognised between tokens (``{{ "}}" }}`` prints ``}}``); trim markers
are ``{{- `` and `` -}}`` (the ``-`` touching the delimiter and followed / preceded by one of
space, tab, CR, LF); comments are ``{{/* ... */}}`` touching the delimiters.

Positions are offsets into the Python string (characters, not bytes); error messages convert them
to Go's byte columns (:func:`location`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

__all__ = ["Item", "Kind", "lex", "location"]


class Kind(IntEnum):
    """Token kinds (Go's itemType); keywords come after KEYWORD."""

    ERROR = 0
    BOOL = 1
    CHAR = 2
    CHAR_CONSTANT = 3
    COMMENT = 4
    COMPLEX = 5
    ASSIGN = 6
    DECLARE = 7
    EOF = 8
    FIELD = 9
    IDENTIFIER = 10
    LEFT_DELIM = 11
    LEFT_PAREN = 12
    NUMBER = 13
    PIPE = 14
    RAW_STRING = 15
    RIGHT_DELIM = 16
    RIGHT_PAREN = 17
    SPACE = 18
    STRING = 19
    TEXT = 20
    VARIABLE = 21
    KEYWORD = 30
    BLOCK = 31
    BREAK = 32
    CONTINUE = 33
    DOT = 34
    DEFINE = 35
    ELSE = 36
    END = 37
    IF = 38
    NIL = 39
    RANGE = 40
    TEMPLATE = 41
    WITH = 42


_KEYWORDS = {
    ".": Kind.DOT,
    "block": Kind.BLOCK,
    "break": Kind.BREAK,
    "continue": Kind.CONTINUE,
    "define": Kind.DEFINE,
    "else": Kind.ELSE,
    "end": Kind.END,
    "if": Kind.IF,
    "range": Kind.RANGE,
    "nil": Kind.NIL,
    "template": Kind.TEMPLATE,
    "with": Kind.WITH,
}

_SPACE = " \t\r\n"

# A lexer state: a bound method returning the next state, or None at the end.
_State = Callable[[], Any] | None


@dataclass(frozen=True, slots=True)
class Item:
    """One token: its kind, its text as written, its offset and its line (1-based)."""

    kind: Kind
    val: str
    pos: int
    line: int

    def __str__(self) -> str:
        # Go's item.String(), used in "unexpected X in Y" messages.
        if self.kind == Kind.EOF:
            return "EOF"
        if self.kind == Kind.ERROR:
            return self.val
        if self.kind > Kind.KEYWORD:
            return f"<{self.val}>"
        if len(self.val) > 10:
            return go_quote(self.val[:10]) + "..."
        return go_quote(self.val)


def go_quote(s: str) -> str:
    """Go's strconv.Quote: double-quoted with Go escapes; printable runes are kept."""
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(_escape_rune(ch))
    out.append('"')
    return "".join(out)


_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES["\v"] = "\\v"


def _escape_rune(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if 0xD800 <= code <= 0xDFFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}" if code >= 0xDC80 else "\\ufffd"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def location(text: str, pos: int) -> tuple[int, int]:
    """Line (1-based) and Go's column (0-based byte offset in the line) of ``pos``."""
    line = text.count("\n", 0, pos) + 1
    start = text.rfind("\n", 0, pos) + 1
    prefix = text[start:pos]
    col = len(prefix) if prefix.isascii() else len(prefix.encode("utf-8", "surrogatepass"))
    return line, col


def _is_alnum(ch: str) -> bool:
    return ch == "_" or ch.isalpha() or ch.isdigit()


class _Lexer:
    __slots__ = (
        "comments",
        "input",
        "items",
        "left",
        "newlines",
        "paren_depth",
        "pos",
        "right",
        "start",
    )

    def __init__(self, text: str, left: str, right: str, comments: bool = False) -> None:
        self.comments = comments
        self.input = text
        self.left = left or "{{"
        self.right = right or "}}"
        self.pos = 0
        self.start = 0
        self.paren_depth = 0
        self.newlines = [i for i, ch in enumerate(text) if ch == "\n"]
        self.items: list[Item] = []

    # -- primitives ----------------------------------------------------------------------------

    def next(self) -> str:
        if self.pos >= len(self.input):
            self.pos = len(self.input) + 1  # so that backup() returns to the end
            return ""
        ch = self.input[self.pos]
        self.pos += 1
        return ch

    def backup(self) -> None:
        if self.pos > len(self.input):
            self.pos = len(self.input)
            return
        if self.pos > 0:
            self.pos -= 1

    def peek(self) -> str:
        return self.input[self.pos] if self.pos < len(self.input) else ""

    def line_of(self, pos: int) -> int:
        return bisect_left(self.newlines, pos) + 1

    def emit(self, kind: Kind) -> None:
        start = self.start
        self.items.append(Item(kind, self.input[start : self.pos], start, self.line_of(start)))
        self.start = self.pos

    def ignore(self) -> None:
        self.start = self.pos

    def accept(self, valid: str) -> bool:
        ch = self.next()
        if ch and ch in valid:
            return True
        self.backup()
        return False

    def accept_run(self, valid: str) -> None:
        while True:
            ch = self.next()
            if not ch or ch not in valid:
                break
        self.backup()

    def error(self, msg: str) -> None:
        self.items.append(Item(Kind.ERROR, msg, self.start, self.line_of(self.start)))

    # -- states --------------------------------------------------------------------------------

    def run(self) -> list[Item]:
        state: _State = self.lex_text
        while state is not None:
            state = state()
        return self.items

    def lex_text(self) -> _State:
        text = self.input
        x = text.find(self.left, self.pos)
        if x < 0:
            self.pos = len(text)
            if self.pos > self.start:
                self.emit(Kind.TEXT)
            self.items.append(Item(Kind.EOF, "", self.pos, self.line_of(self.pos)))
            return None
        ldn = len(self.left)
        trim = 0
        after = text[x + ldn : x + ldn + 2]
        if len(after) == 2 and after[0] == "-" and after[1] in _SPACE:
            seg = text[self.start : x]
            trim = len(seg) - len(seg.rstrip(_SPACE))
        if x - trim > self.start:
            self.pos = x - trim
            self.emit(Kind.TEXT)
        self.pos = x
        self.start = x
        return self.lex_left_delim

    def _at_right_delim(self) -> tuple[bool, bool]:
        text, pos, right = self.input, self.pos, self.right
        if (
            pos + 1 < len(text)
            and text[pos] in _SPACE
            and text[pos + 1] == "-"
            and text.startswith(right, pos + 2)
        ):
            return True, True
        if text.startswith(right, pos):
            return True, False
        return False, False

    def lex_left_delim(self) -> _State:
        self.pos += len(self.left)
        text = self.input
        trim = self.pos + 1 < len(text) and text[self.pos] == "-" and text[self.pos + 1] in _SPACE
        after = 2 if trim else 0
        if text.startswith("/*", self.pos + after):
            self.pos += after
            self.ignore()
            return self.lex_comment
        self.emit(Kind.LEFT_DELIM)
        self.pos += after
        self.ignore()
        self.paren_depth = 0
        return self.lex_inside_action

    def lex_comment(self) -> _State:
        self.pos += 2
        x = self.input.find("*/", self.pos)
        if x < 0:
            self.error("unclosed comment")
            return None
        self.pos = x + 2
        delim, trim = self._at_right_delim()
        if not delim:
            self.error("comment ends before closing delimiter")
            return None
        # Comments are dropped unless asked for (Go's ParseComments mode).
        if self.comments:
            self.emit(Kind.COMMENT)
        if trim:
            self.pos += 2
        self.pos += len(self.right)
        if trim:
            rest = self.input[self.pos :]
            self.pos += len(rest) - len(rest.lstrip(_SPACE))
        self.ignore()
        return self.lex_text

    def lex_right_delim(self) -> _State:
        _, trim = self._at_right_delim()
        if trim:
            self.pos += 2
            self.ignore()
        self.pos += len(self.right)
        self.emit(Kind.RIGHT_DELIM)
        if trim:
            rest = self.input[self.pos :]
            self.pos += len(rest) - len(rest.lstrip(_SPACE))
            self.ignore()
        return self.lex_text

    def lex_inside_action(self) -> _State:
        delim, _ = self._at_right_delim()
        if delim:
            if self.paren_depth == 0:
                return self.lex_right_delim
            self.error("unclosed left paren")
            return None
        ch = self.next()
        if ch == "":
            self.error("unclosed action")
            return None
        if ch in _SPACE:
            self.backup()
            return self.lex_space
        if ch == "=":
            self.emit(Kind.ASSIGN)
        elif ch == ":":
            if self.next() != "=":
                self.error("expected :=")
                return None
            self.emit(Kind.DECLARE)
        elif ch == "|":
            self.emit(Kind.PIPE)
        elif ch == '"':
            return self.lex_quote
        elif ch == "`":
            return self.lex_raw_quote
        elif ch == "$":
            return self.lex_variable
        elif ch == "'":
            return self.lex_char
        elif ch == "." and not (self.peek() and "0" <= self.peek() <= "9"):
            return self.lex_field
        elif ch in "+-." or "0" <= ch <= "9":
            self.backup()
            return self.lex_number
        elif _is_alnum(ch):
            self.backup()
            return self.lex_identifier
        elif ch == "(":
            self.paren_depth += 1
            self.emit(Kind.LEFT_PAREN)
        elif ch == ")":
            self.paren_depth -= 1
            if self.paren_depth < 0:
                self.error("unexpected right paren")
                return None
            self.emit(Kind.RIGHT_PAREN)
        elif ord(ch) < 0x80 and ch.isprintable():
            self.emit(Kind.CHAR)
        else:
            self.error(f"unrecognized character in action: {_rune_repr(ch)}")
            return None
        return self.lex_inside_action

    def lex_space(self) -> _State:
        n = 0
        while self.peek() and self.peek() in _SPACE:
            self.next()
            n += 1
        # A space may start the trim marker of the closing delimiter (" -}}").
        text = self.input
        p = self.pos - 1
        if text[p + 1 : p + 2] == "-" and text.startswith(self.right, p + 2):
            self.backup()
            if n == 1:
                return self.lex_right_delim
        self.emit(Kind.SPACE)
        return self.lex_inside_action

    def _at_terminator(self) -> bool:
        ch = self.peek()
        if ch == "" or ch in _SPACE or ch in ".,|:)(":
            return True
        return self.input.startswith(self.right, self.pos)

    def lex_identifier(self) -> _State:
        while True:
            ch = self.next()
            if ch and _is_alnum(ch):
                continue
            self.backup()
            word = self.input[self.start : self.pos]
            if not self._at_terminator():
                self.error(f"bad character {_rune_repr(self.peek())}")
                return None
            kind = _KEYWORDS.get(word)
            if kind is not None:
                self.emit(kind)
            elif word[0] == ".":
                self.emit(Kind.FIELD)
            elif word in ("true", "false"):
                self.emit(Kind.BOOL)
            else:
                self.emit(Kind.IDENTIFIER)
            return self.lex_inside_action

    def lex_field(self) -> _State:
        return self._field_or_variable(Kind.FIELD)

    def lex_variable(self) -> _State:
        return self._field_or_variable(Kind.VARIABLE)

    def _field_or_variable(self, kind: Kind) -> _State:
        if self._at_terminator():
            self.emit(Kind.VARIABLE if kind == Kind.VARIABLE else Kind.DOT)
            return self.lex_inside_action
        while True:
            ch = self.next()
            if not ch or not _is_alnum(ch):
                self.backup()
                break
        if not self._at_terminator():
            self.error(f"bad character {_rune_repr(self.peek())}")
            return None
        self.emit(kind)
        return self.lex_inside_action

    def lex_char(self) -> _State:
        while True:
            ch = self.next()
            if ch == "\\":
                nxt = self.next()
                if nxt and nxt != "\n":
                    continue
                self.error("unterminated character constant")
                return None
            if ch in ("", "\n"):
                self.error("unterminated character constant")
                return None
            if ch == "'":
                break
        self.emit(Kind.CHAR_CONSTANT)
        return self.lex_inside_action

    def lex_number(self) -> _State:
        if not self._scan_number():
            self.error(f"bad number syntax: {go_quote(self.input[self.start : self.pos])}")
            return None
        if self.peek() in ("+", "-") and self.peek():
            if not self._scan_number() or self.input[self.pos - 1] != "i":
                self.error(f"bad number syntax: {go_quote(self.input[self.start : self.pos])}")
                return None
            self.emit(Kind.COMPLEX)
            return self.lex_inside_action
        self.emit(Kind.NUMBER)
        return self.lex_inside_action

    def _scan_number(self) -> bool:
        self.accept("+-")
        digits = "0123456789_"
        if self.accept("0"):
            if self.accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif self.accept("oO"):
                digits = "01234567_"
            elif self.accept("bB"):
                digits = "01_"
        self.accept_run(digits)
        if self.accept("."):
            self.accept_run(digits)
        if len(digits) == 11 and self.accept("eE"):
            self.accept("+-")
            self.accept_run("0123456789_")
        if len(digits) == 23 and self.accept("pP"):
            self.accept("+-")
            self.accept_run("0123456789_")
        self.accept("i")
        ch = self.peek()
        if ch and _is_alnum(ch):
            self.next()
            return False
        return True

    def lex_quote(self) -> _State:
        while True:
            ch = self.next()
            if ch == "\\":
                nxt = self.next()
                if nxt and nxt != "\n":
                    continue
                self.error("unterminated quoted string")
                return None
            if ch in ("", "\n"):
                self.error("unterminated quoted string")
                return None
            if ch == '"':
                break
        self.emit(Kind.STRING)
        return self.lex_inside_action

    def lex_raw_quote(self) -> _State:
        x = self.input.find("`", self.pos)
        if x < 0:
            self.error("unterminated raw quoted string")
            return None
        self.pos = x + 1
        self.emit(Kind.RAW_STRING)
        return self.lex_inside_action


def _rune_repr(ch: str) -> str:
    """Go's %#U: U+002D '-'."""
    if not ch:
        return "U+FFFFFFFF"  # EOF (-1) as Go prints it
    code = ord(ch)
    if ch.isprintable():
        return f"U+{code:04X} '{ch}'"
    return f"U+{code:04X}"


def lex(text: str, left: str = "{{", right: str = "}}", *, comments: bool = False) -> list[Item]:
    """Split ``text`` into tokens; a lexing error is the last token (kind ERROR).

    ``comments``: emit ``{{/* ... */}}`` as COMMENT tokens (text ``/* ... */``) instead of
    dropping them.
    """
    return _Lexer(text, left, right, comments).run()
