"""The parser of Go's text/template: tokens to trees (``text/template/parse/parse.go``).

It follows Go's recursive descent production by production, so it accepts the same templates
and rejects the rest with Go's words (``unexpected {{end}}``, ``function "x" not defined``,
``undefined variable "$y"``, ``{{break}} outside {{range}}``, ...). The only addition is a
did-you-mean after an unknown function name.

:func:`parse_trees` returns every template of the text: the top-level one under ``name`` and each
``{{define}}`` / ``{{block}}`` under its own name.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection

from .errors import GoTemplateError
from .lex import Item, Kind, go_quote, lex, location
from .nodes import (
    ActionNode,
    BoolNode,
    BreakNode,
    ChainNode,
    CommandNode,
    CommentNode,
    ContinueNode,
    DotNode,
    ElseNode,
    EndNode,
    FieldNode,
    IdentifierNode,
    IfNode,
    ListNode,
    NilNode,
    Node,
    NumberNode,
    PipeNode,
    RangeNode,
    StringNode,
    TemplateNode,
    TextNode,
    VariableNode,
    WithNode,
)

__all__ = ["BUILTINS", "is_empty_tree", "parse_number", "parse_trees", "suggest", "unquote"]

#: The functions every Go template has (text/template's builtins).
BUILTINS = frozenset(
    (
        *("and", "call", "eq", "ge", "gt", "html", "index", "js", "le", "len", "lt", "ne"),
        *("not", "or", "print", "printf", "println", "slice", "urlquery"),
    )
)


class _ParseError(Exception):
    def __init__(self, msg: str, item: Item | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.item = item


# --- literals -----------------------------------------------------------------------------------

_SIMPLE_ESCAPES = {
    "a": 7,
    "b": 8,
    "f": 12,
    "n": 10,
    "r": 13,
    "t": 9,
    "v": 11,
    "\\": 92,
}
_HEX = set("0123456789abcdefABCDEF")


def _unquote_char(s: str, i: int, quote: str) -> tuple[int, bool, int]:
    """Go's strconv.UnquoteChar at s[i]: (value, is_byte, next index); ValueError if invalid."""
    ch = s[i]
    if ch == quote and quote in "'\"":
        raise ValueError("invalid syntax")
    if ch != "\\":
        return ord(ch), False, i + 1
    if i + 1 >= len(s):
        raise ValueError("invalid syntax")
    c = s[i + 1]
    i += 2
    if c in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[c], False, i
    if c in "xuU":
        n = {"x": 2, "u": 4, "U": 8}[c]
        digits = s[i : i + n]
        if len(digits) < n or not set(digits) <= _HEX:
            raise ValueError("invalid syntax")
        v = int(digits, 16)
        if c == "x":
            return v, True, i + n
        if v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
            raise ValueError("invalid syntax")
        return v, False, i + n
    if "0" <= c <= "7":
        digits = s[i - 1 : i + 2]
        if len(digits) < 3 or not all("0" <= d <= "7" for d in digits):
            raise ValueError("invalid syntax")
        v = int(digits, 8)
        if v > 255:
            raise ValueError("invalid syntax")
        return v, True, i + 2
    if c in "'\"":
        if c != quote:
            raise ValueError("invalid syntax")
        return ord(c), False, i
    raise ValueError("invalid syntax")


def unquote(token: str) -> str:
    """Go's strconv.Unquote for a "double-quoted" or `raw` string literal."""
    if len(token) < 2:
        raise ValueError("invalid syntax")
    if token[0] == "`":
        if token[-1] != "`":
            raise ValueError("invalid syntax")
        return token[1:-1].replace("\r", "")
    if token[0] != '"' or token[-1] != '"':
        raise ValueError("invalid syntax")
    body = token[1:-1]
    if "\\" not in body:
        if '"' in body or "\n" in body:
            raise ValueError("invalid syntax")
        return body
    out = bytearray()
    i = 0
    while i < len(body):
        if body[i] == "\n":
            raise ValueError("invalid syntax")
        v, is_byte, i = _unquote_char(body, i, '"')
        if is_byte:
            out.append(v)
        else:
            out += chr(v).encode("utf-8", "surrogatepass")
    return out.decode("utf-8", "surrogateescape")


_OCTAL = re.compile(r"[+-]?0[0-7_]+")
_UNDERSCORES = re.compile(r"^[+-]?(0[xXbBoO]_?)?[0-9a-fA-F]+(_[0-9a-fA-F]+)*$")


def _parse_int(text: str) -> int | None:
    """Go's strconv.ParseInt(text, 0, ...) without the range check; None if not an integer."""
    t = text
    if "_" in t and not _UNDERSCORES.match(t):
        return None
    try:
        if _OCTAL.fullmatch(t):
            sign = -1 if t[0] == "-" else 1
            return sign * int(t.lstrip("+-").replace("_", ""), 8)
        return int(t, 0)
    except ValueError:
        return None


def _parse_float(text: str) -> float | None:
    """Go's strconv.ParseFloat(text, 64): None when invalid or out of range."""
    t = text
    body = t.lstrip("+-")
    try:
        if body[:2] in ("0x", "0X"):
            if "_" in t and "__" in t:
                return None
            f = float.fromhex(t.replace("_", ""))
        else:
            if body[:1] == "_" or body.endswith("_") or "__" in body or "_." in body:
                return None
            f = float(t)
    except (ValueError, OverflowError):
        return None
    if math.isinf(f) or math.isnan(f):
        return None
    return f


def parse_number(node: NumberNode, kind: Kind) -> None:
    """Fill in a NumberNode from its text as Go's parse.newNumber does (ValueError if bad)."""
    text = node.text
    if kind == Kind.CHAR_CONSTANT:
        body = text[1:]
        if not body:
            raise ValueError("invalid syntax")
        v, _, i = _unquote_char(body, 0, "'")
        if body[i:] != "'":
            raise ValueError(f"malformed character constant: {text}")
        node.int_value = v
        node.float_value = float(v)
        node.is_int = node.is_uint = node.is_float = True
        return
    if kind == Kind.COMPLEX:
        try:
            c = complex(text.replace("_", "")[:-1] + "j")
        except ValueError as exc:
            raise ValueError(f"illegal number syntax: {go_quote(text)}") from exc
        node.is_complex = True
        node.complex_value = c
        _simplify_complex(node)
        return
    if text.endswith("i"):
        f = _parse_float(text[:-1])
        if f is not None:
            node.is_complex = True
            node.complex_value = complex(0, f)
            _simplify_complex(node)
            return
    parsed = _parse_int(text)
    if parsed is not None:
        i = parsed
        if -(1 << 63) <= i < (1 << 63):
            node.is_int = True
            node.int_value = i
        if 0 <= i < (1 << 64):
            node.is_uint = True
            if not node.is_int:
                node.int_value = i
        if node.is_int or node.is_uint:
            node.is_float = True
            node.float_value = float(i)
            return
    f = _parse_float(text)
    if f is not None:
        if not any(c in text for c in ".eEpP"):
            raise ValueError(f"integer overflow: {go_quote(text)}")
        node.is_float = True
        node.float_value = f
        if f == int(f) and -(1 << 63) <= int(f) < (1 << 63):
            node.is_int = True
            node.int_value = int(f)
            node.is_uint = node.int_value >= 0
    if not (node.is_int or node.is_uint or node.is_float):
        raise ValueError(f"illegal number syntax: {go_quote(text)}")


def _simplify_complex(node: NumberNode) -> None:
    c = node.complex_value
    if c.imag == 0:
        node.is_float = True
        node.float_value = c.real
        if c.real == int(c.real):
            node.is_int = True
            node.int_value = int(c.real)
            node.is_uint = node.int_value >= 0


# --- suggestions ------------------------------------------------------------------------------


def _distance(a: str, b: str) -> int:
    """Edit distance counting a swap of neighbours as one edit (optimal string alignment)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


def suggest(name: str, names: Collection[str]) -> str | None:
    """The valid name nearest to a misspelt one (case, typos, swapped letters), or None."""
    lowered = name.lower()
    best: tuple[int, int, float, str] | None = None
    for cand in names:
        d = 0 if cand.lower() == lowered else _distance(lowered, cand.lower())
        if d > max(1, len(name) // 3):
            continue
        ratio = difflib.SequenceMatcher(None, lowered, cand.lower()).ratio()
        key = (d, abs(len(cand) - len(name)), -ratio, cand)
        if best is None or key < best:
            best = key
    return best[3] if best else None


# --- trees --------------------------------------------------------------------------------------


def is_empty_tree(node: Node) -> bool:
    """Go's IsEmptyTree: only whitespace text and comments."""
    if isinstance(node, ListNode):
        return all(is_empty_tree(n) for n in node.nodes)
    if isinstance(node, TextNode):
        return not node.text.strip(" \t\r\n\v\f\x85\xa0")
    return isinstance(node, CommentNode)


class _Tree:
    """State of one template being parsed (Go's parse.Tree)."""

    def __init__(self, name: str, parser: _Parser) -> None:
        self.name = name
        self.p = parser
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.action_line = 0
        self.root: ListNode | None = None

    # -- token access --------------------------------------------------------------------------

    def next(self) -> Item:
        return self.p.next()

    def peek(self) -> Item:
        return self.p.peek()

    def backup(self, n: int = 1) -> None:
        self.p.index -= n

    def next_non_space(self) -> Item:
        while True:
            item = self.next()
            if item.kind != Kind.SPACE:
                return item

    def peek_non_space(self) -> Item:
        item = self.next_non_space()
        self.backup()
        return item

    def errorf(self, msg: str) -> _ParseError:
        return _ParseError(msg)

    def expect(self, kind: Kind, context: str) -> Item:
        token = self.next_non_space()
        if token.kind != kind:
            raise self.unexpected(token, context)
        return token

    def expect_one_of(self, k1: Kind, k2: Kind, context: str) -> Item:
        token = self.next_non_space()
        if token.kind not in (k1, k2):
            raise self.unexpected(token, context)
        return token

    def unexpected(self, token: Item, context: str) -> _ParseError:
        if token.kind == Kind.ERROR:
            extra = ""
            if self.action_line and self.action_line != token.line:
                extra = f" in action started at {self.p.name}:{self.action_line}"
                if context.endswith(" action"):
                    extra = extra[len(" in action") :]
            return _ParseError(f"{token}{extra}", token)
        return _ParseError(f"unexpected {token} in {context}")

    # -- productions ---------------------------------------------------------------------------

    def item_list(self) -> tuple[ListNode, Node]:
        first = self.peek_non_space()
        lst = ListNode(first.pos, first.line)
        while self.peek_non_space().kind != Kind.EOF:
            n = self.text_or_action()
            if isinstance(n, EndNode | ElseNode):
                return lst, n
            lst.nodes.append(n)
        raise self.errorf("unexpected EOF")

    def text_or_action(self) -> Node:
        token = self.next_non_space()
        if token.kind == Kind.TEXT:
            return TextNode(token.pos, token.line, token.val)
        if token.kind == Kind.LEFT_DELIM:
            self.action_line = token.line
            try:
                return self.action()
            finally:
                self.action_line = 0
        if token.kind == Kind.COMMENT:
            return CommentNode(token.pos, token.line, token.val)
        raise self.unexpected(token, "input")

    def action(self) -> Node:
        token = self.next_non_space()
        k = token.kind
        if k == Kind.BLOCK:
            return self.block_control()
        if k == Kind.BREAK:
            return self.break_control(token, "break")
        if k == Kind.CONTINUE:
            return self.break_control(token, "continue")
        if k == Kind.ELSE:
            return self.else_control()
        if k == Kind.END:
            end = self.expect(Kind.RIGHT_DELIM, "end")
            return EndNode(end.pos, end.line)
        if k == Kind.IF:
            return IfNode(*self.parse_control("if"))
        if k == Kind.RANGE:
            return RangeNode(*self.parse_control("range"))
        if k == Kind.TEMPLATE:
            return self.template_control()
        if k == Kind.WITH:
            return WithNode(*self.parse_control("with"))
        self.backup()
        token = self.peek()
        return ActionNode(token.pos, token.line, self.pipeline("command", Kind.RIGHT_DELIM))

    def break_control(self, token: Item, word: str) -> Node:
        nxt = self.next_non_space()
        if nxt.kind != Kind.RIGHT_DELIM:
            raise self.unexpected(nxt, "{{" + word + "}}")
        if self.range_depth == 0:
            raise self.errorf("{{" + word + "}} outside {{range}}")
        if word == "break":
            return BreakNode(token.pos, token.line)
        return ContinueNode(token.pos, token.line)

    def pipeline(self, context: str, end: Kind) -> PipeNode:
        token = self.peek_non_space()
        pipe = PipeNode(token.pos, token.line)
        while True:  # declarations
            v = self.peek_non_space()
            if v.kind != Kind.VARIABLE:
                break
            self.next_non_space()
            v_index = self.p.index - 1
            nxt = self.peek_non_space()
            if nxt.kind in (Kind.ASSIGN, Kind.DECLARE):
                pipe.is_assign = nxt.kind == Kind.ASSIGN
                self.next_non_space()
                pipe.decl.append(VariableNode(v.pos, v.line, [v.val]))
                self.vars.append(v.val)
            elif nxt.kind == Kind.CHAR and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(VariableNode(v.pos, v.line, [v.val]))
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().kind in (
                        Kind.VARIABLE,
                        Kind.RIGHT_DELIM,
                        Kind.RIGHT_PAREN,
                    ):
                        continue
                    raise self.errorf("range can only initialize variables")
                raise self.errorf(f"too many declarations in {context}")
            else:
                # "$x foo" or "$x.A": $x is an operand, not a declaration; put it back.
                self.p.index = v_index
            break
        while True:
            token = self.next_non_space()
            if token.kind == end:
                self.check_pipeline(pipe, context)
                return pipe
            if token.kind in (
                Kind.BOOL,
                Kind.CHAR_CONSTANT,
                Kind.COMPLEX,
                Kind.DOT,
                Kind.FIELD,
                Kind.IDENTIFIER,
                Kind.NUMBER,
                Kind.NIL,
                Kind.RAW_STRING,
                Kind.STRING,
                Kind.VARIABLE,
                Kind.LEFT_PAREN,
            ):
                self.backup()
                pipe.cmds.append(self.command())
            else:
                raise self.unexpected(token, context)

    def check_pipeline(self, pipe: PipeNode, context: str) -> None:
        if not pipe.cmds:
            raise self.errorf(f"missing value for {context}")
        for i, c in enumerate(pipe.cmds[1:]):
            if isinstance(c.args[0], BoolNode | DotNode | NilNode | NumberNode | StringNode):
                raise self.errorf(f"non executable command in pipeline stage {i + 2}")

    def parse_control(self, context: str) -> tuple[int, int, PipeNode, ListNode, ListNode | None]:
        mark = len(self.vars)
        try:
            pipe = self.pipeline(context, Kind.RIGHT_DELIM)
            if context == "range":
                self.range_depth += 1
            lst, nxt = self.item_list()
            if context == "range":
                self.range_depth -= 1
            else_list: ListNode | None = None
            if isinstance(nxt, ElseNode):
                peek = self.peek()
                if context == "if" and peek.kind == Kind.IF:
                    self.next()
                    else_list = ListNode(nxt.pos, nxt.line, [IfNode(*self.parse_control("if"))])
                elif context == "with" and peek.kind == Kind.WITH:
                    self.next()
                    else_list = ListNode(nxt.pos, nxt.line, [WithNode(*self.parse_control("with"))])
                else:
                    else_list, nxt = self.item_list()
                    if not isinstance(nxt, EndNode):
                        raise self.errorf(f"expected end; found {nxt}")
            return pipe.pos, pipe.line, pipe, lst, else_list
        finally:
            del self.vars[mark:]

    def else_control(self) -> Node:
        peek = self.peek_non_space()
        if peek.kind in (Kind.IF, Kind.WITH):
            # "else if" / "else with": leave the keyword for parse_control.
            self._skip_spaces()
            return ElseNode(peek.pos, peek.line)
        token = self.expect(Kind.RIGHT_DELIM, "else")
        return ElseNode(token.pos, token.line)

    def _skip_spaces(self) -> None:
        while self.peek().kind == Kind.SPACE:
            self.next()

    def block_control(self) -> Node:
        context = "block clause"
        token = self.next_non_space()
        name = self.parse_template_name(token, context)
        pipe = self.pipeline(context, Kind.RIGHT_DELIM)
        block = _Tree(name, self.p)
        root, end = block.item_list()
        if not isinstance(end, EndNode):
            raise self.errorf(f"unexpected {end} in {context}")
        block.root = root
        self.p.add(block)
        return TemplateNode(token.pos, token.line, name, pipe)

    def template_control(self) -> Node:
        context = "template clause"
        token = self.next_non_space()
        name = self.parse_template_name(token, context)
        pipe: PipeNode | None = None
        if self.next_non_space().kind != Kind.RIGHT_DELIM:
            self.backup()
            pipe = self.pipeline(context, Kind.RIGHT_DELIM)
        return TemplateNode(token.pos, token.line, name, pipe)

    def parse_template_name(self, token: Item, context: str) -> str:
        if token.kind in (Kind.STRING, Kind.RAW_STRING):
            try:
                return unquote(token.val)
            except ValueError as exc:
                raise self.errorf(str(exc)) from None
        raise self.unexpected(token, context)

    def command(self) -> CommandNode:
        first = self.peek_non_space()
        cmd = CommandNode(first.pos, first.line)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            token = self.next()
            if token.kind == Kind.SPACE:
                continue
            if token.kind in (Kind.RIGHT_DELIM, Kind.RIGHT_PAREN):
                self.backup()
            elif token.kind == Kind.PIPE:
                pass
            else:
                raise self.unexpected(token, "operand")
            break
        if not cmd.args:
            raise self.errorf("empty command")
        return cmd

    def operand(self) -> Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().kind == Kind.FIELD:
            start = self.peek()
            fields: list[str] = []
            while self.peek().kind == Kind.FIELD:
                fields.append(self.next().val[1:])
            # Go gives a multi-part field or variable the position of its second part.
            if isinstance(node, FieldNode):
                return FieldNode(start.pos, start.line, [*node.ident, *fields])
            if isinstance(node, VariableNode):
                return VariableNode(start.pos, start.line, [*node.ident, *fields])
            if isinstance(node, BoolNode | StringNode | NumberNode | NilNode | DotNode):
                raise self.errorf(f"unexpected . after term {go_quote(str(node))}")
            return ChainNode(start.pos, start.line, node, fields)
        return node

    def term(self) -> Node | None:
        token = self.next_non_space()
        k = token.kind
        if k == Kind.IDENTIFIER:
            if token.val not in self.p.funcs and token.val not in BUILTINS:
                raise self.errorf(
                    f"function {go_quote(token.val)} not defined{self.p.suggest(token.val)}"
                )
            return IdentifierNode(token.pos, token.line, token.val)
        if k == Kind.DOT:
            return DotNode(token.pos, token.line)
        if k == Kind.NIL:
            return NilNode(token.pos, token.line)
        if k == Kind.VARIABLE:
            ident = token.val.split(".")
            if ident[0] not in self.vars:
                raise self.errorf(f"undefined variable {go_quote(ident[0])}")
            return VariableNode(token.pos, token.line, ident)
        if k == Kind.FIELD:
            return FieldNode(token.pos, token.line, token.val[1:].split("."))
        if k == Kind.BOOL:
            return BoolNode(token.pos, token.line, token.val == "true")
        if k in (Kind.CHAR_CONSTANT, Kind.COMPLEX, Kind.NUMBER):
            node = NumberNode(token.pos, token.line, token.val)
            try:
                parse_number(node, k)
            except ValueError as exc:
                raise self.errorf(str(exc)) from None
            return node
        if k == Kind.LEFT_PAREN:
            return self.pipeline("parenthesized pipeline", Kind.RIGHT_PAREN)
        if k in (Kind.STRING, Kind.RAW_STRING):
            try:
                text = unquote(token.val)
            except ValueError as exc:
                raise self.errorf(str(exc)) from None
            return StringNode(token.pos, token.line, token.val, text)
        self.backup()
        return None


class _Parser:
    """Token stream and the set of trees for one source text."""

    def __init__(
        self,
        text: str,
        name: str,
        left: str,
        right: str,
        funcs: Collection[str],
        comments: bool = False,
    ) -> None:
        self.text = text
        self.name = name
        self.items = lex(text, left, right, comments=comments)
        self.index = 0
        self.hi = 0  # the furthest token read: Go reports its line
        self.funcs = funcs
        self.trees: dict[str, ListNode] = {}

    def next(self) -> Item:
        item = self.items[self.index]
        if self.index > self.hi:
            self.hi = self.index
        if self.index < len(self.items) - 1:
            self.index += 1
        else:
            self.index = len(self.items)  # backup() returns to the last token
            return item
        return item

    def peek(self) -> Item:
        i = min(self.index, len(self.items) - 1)
        if i > self.hi:
            self.hi = i
        return self.items[i]

    def suggest(self, name: str) -> str:
        """`` (did you mean "x"?)`` for the nearest function name, or ""."""
        best = suggest(name, {*self.funcs, *BUILTINS})
        return f" (did you mean {go_quote(best)}?)" if best else ""

    def add(self, tree: _Tree) -> None:
        assert tree.root is not None
        old = self.trees.get(tree.name)
        if old is None or is_empty_tree(old):
            self.trees[tree.name] = tree.root
            return
        if not is_empty_tree(tree.root):
            raise _ParseError(f"template: multiple definition of template {go_quote(tree.name)}")

    def parse(self) -> dict[str, ListNode]:
        top = _Tree(self.name, self)
        first = self.peek()
        root = ListNode(first.pos, first.line)
        while self.peek().kind != Kind.EOF:
            if self.peek().kind == Kind.LEFT_DELIM:
                delim_index = self.index
                self.next()
                if top.next_non_space().kind == Kind.DEFINE:
                    self.parse_definition()
                    continue
                self.index = delim_index
            n = top.text_or_action()
            if isinstance(n, EndNode | ElseNode):
                raise _ParseError(f"unexpected {n}")
            root.nodes.append(n)
        top.root = root
        self.add(top)
        return self.trees

    def parse_definition(self) -> None:
        context = "define clause"
        tree = _Tree("definition", self)
        token = tree.expect_one_of(Kind.STRING, Kind.RAW_STRING, context)
        try:
            tree.name = unquote(token.val)
        except ValueError as exc:
            raise _ParseError(str(exc)) from None
        tree.expect(Kind.RIGHT_DELIM, context)
        root, end = tree.item_list()
        if not isinstance(end, EndNode):
            raise _ParseError(f"unexpected {end} in {context}")
        tree.root = root
        self.add(tree)


def parse_trees(
    text: str,
    name: str,
    *,
    left: str = "{{",
    right: str = "}}",
    funcs: Collection[str] = (),
    comments: bool = False,
) -> dict[str, ListNode]:
    """Parse ``text``; the trees by template name (the text itself under ``name``).

    ``comments``: keep ``{{/* */}}`` as CommentNodes (for ``ctemplate convert``); execution
    ignores them either way. Raises GoTemplateError ``name:line:col: message``
    (``phase="parse"``).
    """
    parser = _Parser(text, name, left, right, funcs, comments)
    try:
        return parser.parse()
    except _ParseError as exc:
        item = exc.item or parser.items[min(parser.hi, len(parser.items) - 1)]
        line, col = location(text, item.pos)
        if item.kind == Kind.EOF:
            line = item.line
        raise GoTemplateError(name, line, col, exc.msg, phase="parse") from None
