"""``ctemplate convert``: a Go template (consul-template's syntax) rewritten as idiomatic Jinja
that renders the same bytes against the same data.

The converter walks the Go engine's parse tree (:mod:`.gotmpl.nodes`). Whitespace: the output
is meant for ctemplate's default Jinja settings (``trim_blocks`` and ``lstrip_blocks`` on), so a
block tag that starts a line after indentation is written ``{%+ ... %}`` and one followed by a
newline ``{% ... +%}``: those two markers switch the trimming off for that tag only, and
the output keeps Go's bytes without changing any setting. Go's own trim markers (``{{-``,
``-}}``) have already removed their whitespace in the parse tree, so no ``-`` is needed. A tag
that starts a line and is not followed by a newline in Go's output gets a newline of its own,
which ``trim_blocks`` removes again: one tag per line, as Jinja is usually written.

What Jinja cannot say the same way is reported with its line and left in the output as a
comment ``{# convert: line N: ... #}`` with the Go text, so the Jinja file still compiles and
the place is easy to find; :func:`convert` returns those problems and the command exits 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .gotmpl import nodes as n
from .registry import REGISTRY

__all__ = ["ConvertResult", "Problem", "convert", "convert_text"]

# Functions whose value is a map (ranged over in sorted key order in Go).
_MAP_FUNCS = frozenset(
    {
        "byKey",
        "byTag",
        "byPort",
        "byMeta",
        "explode",
        "explodeMap",
        "splitToMap",
        "mergeMap",
        "mergeMapWithOverride",
    }
)
# Functions whose value may be a map or a list: printing it directly differs from Go.
_ANY_FUNCS = frozenset({"parseJSON", "parseYAML", "explode", "explodeMap"})
# Functions whose value is a list (or a range).
_LIST_FUNCS = frozenset(
    {
        "service",
        "services",
        "connect",
        "nodes",
        "ls",
        "safeLs",
        "tree",
        "safeTree",
        "datacenters",
        "caRoots",
        "split",
        "loop",
    }
)
# Functions (and builtins) whose value is a bool: Go prints true/false, Jinja True/False.
_BOOL_FUNCS = frozenset(
    {
        "keyExists",
        "contains",
        "containsAll",
        "containsAny",
        "containsNone",
        "containsNotAll",
        "in",
        "regexMatch",
        "parseBool",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "not",
    }
)
# Loop variable names by the function ranged over.
_LOOP_NAMES = {
    "service": "s",
    "connect": "s",
    "services": "svc",
    "nodes": "n",
    "ls": "pair",
    "safeLs": "pair",
    "tree": "pair",
    "safeTree": "pair",
    "datacenters": "dc",
    "caRoots": "root",
    "loop": "i",
}
_COMPARE = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_JINJA_WORDS = frozenset(
    {
        "and",
        "or",
        "not",
        "in",
        "is",
        "if",
        "else",
        "for",
        "loop",
        "true",
        "false",
        "none",
        "True",
        "False",
        "None",
        "range",
        "dict",
        "namespace",
        "self",
        "caller",
        "varargs",
        "kwargs",
    }
)
_PRINTF_OK = re.compile(r"%(?:%|[-+ 0#]*\d*(?:\.\d+)?[sdfxXoeEgc])")
_PRINTF_ANY = re.compile(r"%[-+ 0#]*\d*(?:\.\d+)?[a-zA-Z%]")


@dataclass(frozen=True, slots=True)
class Problem:
    """A construct the converter could not express; ``line`` is 1-based in the Go source."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(slots=True)
class ConvertResult:
    text: str
    problems: list[Problem] = field(default_factory=list)


class _Unsupported(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _kind(node: n.Node | None, ranged: bool = False) -> str:
    """ "map", "list", "bool" or "" (unknown) for the value of a pipeline or operand."""
    if isinstance(node, n.PipeNode):
        if not node.cmds:
            return ""
        return _kind(node.cmds[-1], ranged)
    if isinstance(node, n.CommandNode) and node.args:
        first = node.args[0]
        if isinstance(first, n.IdentifierNode):
            if first.name in _MAP_FUNCS:
                return "map"
            if first.name in _LIST_FUNCS:
                return "list"
            if first.name in _BOOL_FUNCS or (
                first.name in ("and", "or") and all(_kind(a) == "bool" for a in node.args[1:])
            ):
                return "bool"
            return ""
        if isinstance(first, n.PipeNode):
            return _kind(first)
        if isinstance(first, n.BoolNode):
            return "bool"
        if isinstance(first, n.ChainNode) and str(first.node) == "scratch" and first.fields:
            return {"Key": "bool", "MapValues": "list"}.get(first.fields[-1], "")
        fields = (
            first.ident
            if isinstance(first, n.FieldNode)
            else first.ident[1:]
            if isinstance(first, n.VariableNode)
            else first.fields
            if isinstance(first, n.ChainNode)
            else []
        )
        if ranged and fields and len(node.args) == 1:
            # A record's field: its maps are the metadata and tagged addresses (and .Data of
            # parsed JSON is unknown); the others ranged over are lists (Tags, Checks, ...).
            last = fields[-1]
            return "map" if last.endswith(("Meta", "TaggedAddresses")) else "list"
    return ""


class _Converter:
    def __init__(self, source: str) -> None:
        self.source = source
        self.out: list[str] = []
        self.problems: list[Problem] = []
        self.dots: list[str | None] = [None]  # Jinja expression of "." (None: Go's nil)
        self.vars: list[dict[str, str]] = [{"$": "none"}]
        self.used_names: set[str] = set()
        self.loop_depth = 0
        self.tail = ""  # the Jinja output on the current line so far
        self.assigned: set[str] = set()  # Go variables assigned with "=": Jinja namespaces
        self.macros: dict[str, str] = {}  # {{define}} name -> Jinja macro name

    def macro(self, name: str, tree: n.ListNode, following: str) -> None:
        """A ``{{define}}`` as a Jinja macro of one argument, Go's dot."""
        self.block(f"macro {self.macros[name]}(dot)", _first_text(tree))
        self.dots.append("dot")
        self.vars.append({"$": "dot"})
        try:
            self.body(tree, "")
        finally:
            self.vars.pop()
            self.dots.pop()
        self.block("endmacro", following)

    def emit(self, piece: str) -> None:
        self.out.append(piece)
        _, newline, rest = piece.rpartition("\n")
        self.tail = rest if newline else self.tail + piece

    # --- output and whitespace ------------------------------------------------------------

    def text(self, text: str) -> None:
        # Text that Jinja would read as a tag is printed as a string expression; so is a "{"
        # at the end, which would join the next tag's "{" ("{{%" reads as "{{").
        tail = ""
        if text.endswith("{"):
            text, tail = text[:-1], "{"
        for piece in [*re.split(r"(\{\{|\{%|\{#)", text), tail]:
            if piece in ("{{", "{%", "{#"):
                self.emit("{{ " + _literal(piece) + " }}")
            elif piece == "{" and piece is tail:
                self.emit('{{ "{" }}')
            elif piece:
                self.emit(piece)

    def _tag(self, open_: str, body: str, close: str, following: str) -> None:
        # lstrip_blocks would strip the indentation before a tag that starts its line, and
        # trim_blocks the newline after it: "+" keeps both, as Go does.
        starts_line = not self.tail.strip()
        plus_start = "+" if self.tail and starts_line else ""
        plus_end = "+" if following.startswith("\n") else ""
        self.emit(f"{open_}{plus_start} {body} {plus_end}{close}")
        if starts_line and not plus_end:
            # A tag alone at the start of its line gets a line of its own: trim_blocks drops
            # this newline, so the output is unchanged and the Jinja reads as usual.
            self.emit("\n")

    def block(self, body: str, following: str) -> None:
        """A ``{% body %}`` tag; ``following`` is the output right after it."""
        self._tag("{%", body, "%}", following)

    def comment(self, body: str, following: str) -> None:
        self._tag("{#", body.replace("#}", "# }"), "#}", following)

    def marker(self, node: n.Node, message: str, following: str) -> None:
        self.problems.append(Problem(node.line, message))
        go = str(node).replace("#}", "# }")
        if len(go) > 120:
            go = go[:117] + "..."
        self.comment(f"convert: line {node.line}: {message}: {go}", following)

    # --- names ----------------------------------------------------------------------------

    def fresh(self, base: str) -> str:
        """A Jinja name used nowhere else in the template (no shadowing, no function names)."""
        name = base
        if name in REGISTRY or name in _JINJA_WORDS:
            name += "_"
        i = 2
        candidate = name
        while candidate in self.used_names:
            candidate = f"{name}{i}"
            i += 1
        self.used_names.add(candidate)
        return candidate

    def variable(self, name: str) -> str:
        for scope in reversed(self.vars):
            if name in scope:
                return scope[name]
        raise _Unsupported(f"undefined variable {name}")

    def declare(self, name: str) -> str:
        jinja = self.fresh(name.lstrip("$") or "root")
        self.vars[-1][name] = jinja
        return jinja

    # --- expressions ----------------------------------------------------------------------

    def dot(self) -> str:
        d = self.dots[-1]
        if d is None:
            raise _Unsupported("'.' is nil at the top of a consul-template template")
        return d

    def fields(self, base: str, idents: list[str]) -> str:
        return base + "".join("." + i for i in idents)

    def operand(self, node: n.Node) -> str:
        if isinstance(node, n.FieldNode):
            return self.fields(self.dot(), node.ident)
        if isinstance(node, n.VariableNode):
            return self.fields(self.variable(node.ident[0]), node.ident[1:])
        if isinstance(node, n.DotNode):
            return self.dot()
        if isinstance(node, n.StringNode):
            return _literal(node.text)
        if isinstance(node, n.NumberNode):
            if node.is_int or node.is_uint:
                return str(node.int_value)
            if node.is_float:
                return repr(node.float_value)
            raise _Unsupported("complex numbers")
        if isinstance(node, n.BoolNode):
            return "true" if node.value else "false"
        if isinstance(node, n.NilNode):
            return "none"
        if isinstance(node, n.PipeNode):
            return _group(self.pipe(node))
        if isinstance(node, n.ChainNode):
            return self.fields(self.operand(node.node), node.fields)
        if isinstance(node, n.IdentifierNode):
            return self.call(node.name, [])
        raise _Unsupported(f"{type(node).__name__}")

    def pipe(self, pipe: n.PipeNode) -> str:
        value: str | None = None
        for cmd in pipe.cmds:
            value = self.command(cmd, value)
        if value is None:
            raise _Unsupported("empty pipeline")
        return value

    def command(self, cmd: n.CommandNode, piped: str | None) -> str:
        first, rest = cmd.args[0], cmd.args[1:]
        if isinstance(first, n.IdentifierNode):
            args = [self.operand(a) for a in rest]
            if piped is not None:
                args.append(piped)
            return self.call(first.name, args)
        if rest or piped is not None:
            if isinstance(first, n.ChainNode | n.FieldNode | n.VariableNode):
                # A method call: scratch.Set "a" 1 -> scratch().Set("a", 1).
                args = [self.operand(a) for a in rest]
                if piped is not None:
                    args.append(piped)
                return f"{self.operand(first)}({', '.join(args)})"
            raise _Unsupported("arguments after a value that is not a function")
        return self.operand(first)

    def call(self, name: str, args: list[str]) -> str:
        if name in _COMPARE:
            if len(args) < 2:
                raise _Unsupported(f"{name} with {len(args)} argument(s)")
            op = _COMPARE[name]
            if name == "eq" and len(args) > 2:
                return "(" + " or ".join(f"{args[0]} == {b}" for b in args[1:]) + ")"
            if len(args) != 2:
                raise _Unsupported(f"{name} with {len(args)} arguments")
            return f"{args[0]} {op} {args[1]}"
        if name in ("and", "or"):
            return "(" + f" {name} ".join(_group(a) for a in args) + ")"
        if name == "not" and len(args) == 1:
            return f"not {args[0]}"
        if name == "len" and len(args) == 1:
            return f"{args[0]} | length"
        if name == "index" and args:
            return args[0] + "".join(f"[{a}]" for a in args[1:])
        if name == "slice" and 1 <= len(args) <= 3:
            bounds = args[1:] + [""] * (2 - len(args[1:]))
            return f"{args[0]}[{bounds[0]}:{bounds[1]}]"
        if name == "print" and len(args) == 1:
            return args[0]
        if name == "printf" and args and args[0].startswith('"'):
            fmt = json.loads(args[0])
            verbs = _PRINTF_ANY.findall(fmt)
            if all(_PRINTF_OK.fullmatch(v) for v in verbs):
                if len(args) == 1:
                    return _literal(fmt.replace("%%", "%"))
                return f"{args[0]} | format({', '.join(args[1:])})"
            raise _Unsupported("printf verbs without a Jinja equivalent (%v %q %t ...)")
        if name == "html" and len(args) == 1:
            return f"{args[0]} | escape | string"
        if name in ("print", "printf", "println", "js", "urlquery", "call", "html"):
            raise _Unsupported(f"{name} (Go's formatting has no exact Jinja form)")
        f = REGISTRY.get(name)
        if f is None:
            raise _Unsupported(f"unknown function {name}")
        if name == "writeToFile":
            return self.write_to_file(args)
        if f.go_impl is not None or not f.subject:
            return f"{name}({', '.join(args)})"
        if not args:
            return f"{name}()"
        subject, others = args[-1], args[:-1]
        if f.filter() is not None:
            if not _atomic(subject.replace(" | ", "|")):  # a filter chain needs no parentheses
                subject = f"({subject})"
            return f"{subject} | {name}({', '.join(others)})" if others else f"{subject} | {name}"
        return f"{name}({', '.join([subject, *others])})"

    def write_to_file(self, args: list[str]) -> str:
        if len(args) not in (5, 6):
            raise _Unsupported("writeToFile with an unexpected number of arguments")
        path, user, group, perms = args[:4]
        content = args[-1]
        opts = [path, content, perms]
        if len(args) == 6:
            if not args[4].startswith('"'):
                raise _Unsupported("writeToFile flags that are not a literal")
            flags = json.loads(args[4])
            opts += [f"append={'true' if 'append' in flags else 'false'}"]
            opts += [f"newline={'true' if 'newline' in flags else 'false'}"]
        if user not in ('""', "none"):
            opts.append(f"user={user}")
        if group not in ('""', "none"):
            opts.append(f"group={group}")
        return f"writeToFile({', '.join(opts)})"

    # --- statements -----------------------------------------------------------------------

    def body(self, lst: n.ListNode | None, following: str) -> None:
        if lst is None:
            return
        items = lst.nodes
        for i, node in enumerate(items):
            nxt = items[i + 1] if i + 1 < len(items) else None
            after = nxt.text if isinstance(nxt, n.TextNode) else (following if nxt is None else "")
            self.node(node, after)

    def node(self, node: n.Node, following: str) -> None:
        try:
            self._node(node, following)
        except _Unsupported as exc:
            self.marker(node, exc.message, following)

    def _node(self, node: n.Node, following: str) -> None:
        if isinstance(node, n.TextNode):
            self.text(node.text)
        elif isinstance(node, n.CommentNode):
            text = node.text.strip()
            if text.startswith("/*") and text.endswith("*/"):
                text = text[2:-2].strip()
            self.comment(text, following)
        elif isinstance(node, n.ActionNode):
            self.action(node, following)
        elif isinstance(node, n.IfNode):
            self.if_(node, following, "if")
        elif isinstance(node, n.RangeNode):
            self.range_(node, following)
        elif isinstance(node, n.WithNode):
            self.with_(node, following, "with")
        elif isinstance(node, n.BreakNode):
            self.block("break", following)
        elif isinstance(node, n.ContinueNode):
            self.block("continue", following)
        elif isinstance(node, n.TemplateNode):
            macro = self.macros.get(node.name)
            if macro is None:
                raise _Unsupported(f"{{{{template}}}} of an undefined template {node.name!r}")
            arg = _bare(self.pipe(node.pipe)) if node.pipe is not None else "none"
            self.emit("{{ " + f"{macro}({arg})" + " }}")
        else:
            raise _Unsupported(type(node).__name__)

    def action(self, node: n.ActionNode, following: str) -> None:
        pipe = node.pipe
        if pipe.decl:
            if len(pipe.decl) != 1:
                raise _Unsupported("several variables in one assignment")
            value = _bare(self.pipe(pipe))
            name = pipe.decl[0].ident[0]
            if pipe.is_assign:
                # A namespace attribute (see below): Jinja's loops would keep a plain set inside.
                self.block(f"set {self.variable(name)} = {value}", following)
            elif name in self.assigned:
                # Go changes the variable from inside range/with: a Jinja namespace can.
                space = self.fresh(name.lstrip("$"))
                self.vars[-1][name] = f"{space}.value"
                self.block(f"set {space} = namespace(value={value})", following)
            else:
                self.block(f"set {self.declare(name)} = {value}", following)
            return
        value = _bare(self.pipe(pipe))
        kind = _kind(pipe)
        if kind == "bool":
            value = f"{_group(value)} | string | lower"
        elif (
            kind == "list" and pipe.cmds and _first_name(pipe.cmds[-1]) in ("split", "datacenters")
        ):
            self.emit("[{{ " + value + ' | join(" ") }}]')
            return
        elif kind in ("list", "map"):
            raise _Unsupported(f"printing a {kind} (Go prints [a b] / map[k:v])")
        elif pipe.cmds and _first_name(pipe.cmds[-1]) in _ANY_FUNCS:
            raise _Unsupported("printing a parsed value (Go prints [a b] / map[k:v])")
        self.emit("{{ " + value + " }}")

    def if_(self, node: n.BranchNode, following: str, keyword: str) -> None:
        cond = _bare(self.pipe(node.pipe))
        first_text = _first_text(node.list)
        self.block(f"{keyword} {cond}", first_text)
        self.body(node.list, "")
        else_list = node.else_list
        while else_list is not None:
            only = else_list.nodes[0] if len(else_list.nodes) == 1 else None
            if isinstance(only, n.IfNode):
                self.block(f"elif {_bare(self.pipe(only.pipe))}", _first_text(only.list))
                self.body(only.list, "")
                else_list = only.else_list
                continue
            self.block("else", _first_text(else_list))
            self.body(else_list, "")
            break
        self.block("endif", following)

    def range_(self, node: n.RangeNode, following: str) -> None:
        pipe = node.pipe
        value = self.pipe(pipe)
        kind = _kind(pipe)
        if (
            pipe.cmds
            and len(pipe.cmds[-1].args) == 1
            and isinstance(pipe.cmds[-1].args[0], n.NumberNode)
        ):
            value, kind = f"range({value})", "list"
        self.vars.append({})
        decl = [v.ident[0] for v in pipe.decl]
        base = _LOOP_NAMES.get(_first_name(pipe.cmds[-1]) or "", "item") if pipe.cmds else "item"
        header: str
        extra: str | None = None
        if kind == "map":
            if len(decl) == 2:
                k, v = self.declare(decl[0]), self.declare(decl[1])
            elif len(decl) == 1:
                k, v = self.fresh("key"), self.declare(decl[0])
            else:
                k, v = self.fresh("key"), self.fresh("value")
            header = f"for {k}, {v} in {value} | dictsort(true)"
            dot = v
        elif kind == "list" or len(decl) < 2:
            if len(decl) == 2:
                index, elem = self.declare(decl[0]), self.declare(decl[1])
                extra = f"set {index} = loop.index0"
            elif len(decl) == 1:
                elem = self.declare(decl[0])
            else:
                elem = self.fresh(base)
            if kind == "":
                # Go ranges over a map in key order; Jinja would take the insertion order.
                self.problems.append(
                    Problem(
                        node.line,
                        f"range over {str(pipe)!r}: if it is a map, add | dictsort(true) "
                        "(Go ranges over maps in key order)",
                    )
                )
            header = f"for {elem} in {value}"
            dot = elem
        else:
            self.vars.pop()
            raise _Unsupported("range with two variables over a value of unknown type")
        self.dots.append(dot)
        self.loop_depth += 1
        try:
            first_text = _first_text(node.list)
            self.block(header, "" if extra else first_text)
            if extra:
                self.block(extra, first_text)
            self.body(node.list, "")
        finally:
            self.loop_depth -= 1
            self.dots.pop()
            self.vars.pop()
        if node.else_list is not None:
            self.block("else", _first_text(node.else_list))
            self.body(node.else_list, "")
        self.block("endfor", following)

    def with_(self, node: n.BranchNode, following: str, keyword: str) -> None:
        value = _bare(self.pipe(node.pipe))
        self.vars.append({})
        decl = node.pipe.decl
        name = self.declare(decl[0].ident[0]) if decl else self.fresh("it")
        self.block(f"with {name} = {value}", "")
        self.block(f"if {name}", _first_text(node.list))
        self.dots.append(name)
        self.loop_depth += 1
        try:
            self.body(node.list, "")
        finally:
            self.loop_depth -= 1
            self.dots.pop()
            self.vars.pop()
        if node.else_list is not None:
            only = node.else_list.nodes[0] if len(node.else_list.nodes) == 1 else None
            self.block("else", _first_text(node.else_list) if only is None else "")
            if isinstance(only, n.WithNode):
                self.with_(only, "", "with")
            else:
                self.body(node.else_list, "")
        self.block("endif", "")
        self.block("endwith", following)


def _literal(text: str) -> str:
    """A Jinja string literal of ``text`` (characters outside the BMP kept as they are)."""
    return json.dumps(text, ensure_ascii=False)


def _atomic(expr: str) -> bool:
    """Whether ``expr`` needs no parentheses as an operand: no space outside brackets and
    strings, or already one parenthesised group."""
    depth, quote, i = 0, "", 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == " " and depth == 0:
            return False
        i += 1
    return True


def _group(expr: str) -> str:
    return expr if _atomic(expr) else f"({expr})"


def _bare(expr: str) -> str:
    """``expr`` without the parentheses around all of it (for a statement)."""
    while expr.startswith("(") and _closing(expr) == len(expr) - 1:
        expr = expr[1:-1]
    return expr


def _closing(expr: str) -> int:
    """Index of the parenthesis closing ``expr[0]``, outside strings (-1: none)."""
    depth, quote, i = 0, "", 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _first_name(cmd: n.CommandNode) -> str | None:
    first = cmd.args[0] if cmd.args else None
    return first.name if isinstance(first, n.IdentifierNode) else None


def _first_text(lst: n.ListNode | None) -> str:
    if lst is not None and lst.nodes and isinstance(lst.nodes[0], n.TextNode):
        return lst.nodes[0].text
    return ""


def _walk(node: Any) -> Iterator[Any]:
    yield node
    for attr in ("nodes", "list", "else_list"):
        child = getattr(node, attr, None)
        if isinstance(child, list):
            for c in child:
                yield from _walk(c)
        elif child is not None:
            yield from _walk(child)


def _assigned(node: Any) -> Iterator[str]:
    """Names of the variables a template assigns with ``=`` (not ``:=``)."""
    for item in _walk(node):
        if isinstance(item, n.ActionNode) and item.pipe.is_assign:
            yield from (v.ident[0] for v in item.pipe.decl)


def convert(
    tree: n.ListNode, source: str, defines: dict[str, n.ListNode] | None = None
) -> ConvertResult:
    """The Jinja text of a parsed Go template, and what could not be converted.

    ``defines``: its ``{{define}}``/``{{block}}`` templates, written first as Jinja macros.
    """
    converter = _Converter(source)
    defines = defines or {}
    for node in (tree, *defines.values()):
        converter.assigned |= set(_assigned(node))
    for name in defines:
        converter.macros[name] = converter.fresh("tmpl_" + re.sub(r"\W", "_", name))
    names = list(defines)
    for i, name in enumerate(names):
        following = "" if i + 1 < len(names) else _first_text(tree)
        converter.macro(name, defines[name], following)
    converter.body(tree, "")
    return ConvertResult("".join(converter.out), sorted(converter.problems, key=lambda p: p.line))


def convert_text(text: str, name: str, *, left: str = "{{", right: str = "}}") -> ConvertResult:
    """Parse ``text`` as a Go template (every registry function known) and convert it.

    Raises :class:`~ctemplate.errors.TemplateError` (``name:line:col: ...``) when it does not
    parse.
    """
    from .gotmpl.parse import parse_trees

    trees = parse_trees(text, name, left=left, right=right, funcs=REGISTRY.keys())
    defines = {k: v for k, v in trees.items() if k != name}
    return convert(trees[name], text, defines)
