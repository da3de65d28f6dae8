"""Compile a template tree to one Python function (what Jinja does), for speed.

The closures of :mod:`.exec` define the semantics; this module writes the hot paths of a tree
(text, actions, field reads, variables, function calls, pipelines, if/with/range) as straight
Python source, and calls those closures for everything else. Every error is raised by the same
helpers with the same nodes, so messages are identical either way.

The source only ever holds identifiers it generates and ``repr()`` of literals from the
template, and it is compiled with a namespace of the helpers below: no name from a template can
reach Python's builtins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from itertools import chain
from typing import Any

from . import builtins as bi
from . import exec as ex
from .fmt import NO_VALUE, is_struct, sort_keys, sprint_value, sprintf
from .nodes import (
    ActionNode,
    BoolNode,
    BreakNode,
    CommandNode,
    CommentNode,
    ContinueNode,
    DotNode,
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
    TextNode,
    VariableNode,
    WithNode,
)

__all__ = ["USE_CODEGEN", "compile_tree", "compile_trees"]

_MISSING = ex._MISSING


def _get_field(st: Any, node: Node, receiver: Any, name: str) -> Any:
    """``receiver.name`` with no arguments: the fast paths, then the general step."""
    t = type(receiver)
    if t is dict:
        v = receiver.get(name, _MISSING)
        if v is not _MISSING:
            return v
    else:
        admitted = ex._ADMITTED.get(t)
        if admitted is not None:
            kind = admitted.get(name, _MISSING)
            if kind is None:  # a plain field (not a method, not a map to wrap)
                return getattr(receiver, name)
    return ex._field(st, node, receiver, name, None, None, False)[0]


def _sprintf(fmt: str, args: list[Any]) -> str:
    return sprintf(fmt, [None if a is NO_VALUE else a for a in args])


def _variable(st: Any, node: Node, name: str) -> Any:
    for entry in reversed(st.vars):
        if entry[0] == name:
            return entry[1]
    raise st.fail(node, f"undefined variable: {name}")


def _range_items(st: Any, at: Node, val: Any, two: bool, indexed: bool) -> Any:
    """What a range iterates, or None when there is nothing.

    With ``indexed``, (index or key, element) pairs; otherwise the elements alone.
    """
    if isinstance(val, list | tuple | range) and not is_struct(val):
        if not val:
            return None
        return enumerate(val) if indexed else val
    if isinstance(val, dict):
        if not val:
            return None
        keys = sort_keys(val)
        return [(k, val[k]) for k in keys] if indexed else [val[k] for k in keys]
    if val is None or val is NO_VALUE:
        return None
    if isinstance(val, bool):
        raise st.fail(at, f"range can't iterate over {sprint_value(val)}")
    if isinstance(val, int):
        if two:
            raise st.fail(at, f"can't use {val} to iterate over more than one variable")
        if val <= 0:
            return None
        return ((None, i) for i in range(val)) if indexed else range(val)
    if isinstance(val, bytes | bytearray):
        if not val:
            return None
        return enumerate(val) if indexed else val
    if isinstance(val, Iterator):  # a channel, in Go: an index counts from 0
        first = next(val, _MISSING)
        if first is _MISSING:
            return None
        rest = chain((first,), val)
        return enumerate(rest) if indexed else rest
    raise st.fail(at, f"range can't iterate over {sprint_value(val)}")


def _declares(lst: ListNode | None) -> bool:
    """Does the list itself (not a nested block) declare variables?"""
    return lst is not None and any(
        isinstance(n, ActionNode) and n.pipe.decl and not n.pipe.is_assign for n in lst.nodes
    )


def _jumps(lst: ListNode | None) -> bool:
    """Does the list hold a break/continue of the enclosing range (directly, or in if/with)?"""
    if lst is None:
        return False
    for n in lst.nodes:
        if isinstance(n, BreakNode | ContinueNode):
            return True
        if isinstance(n, IfNode | WithNode) and (_jumps(n.list) or _jumps(n.else_list)):
            return True
    return False


class _Gen:
    def __init__(self) -> None:
        self.consts: list[Any] = []
        self.lines: list[str] = []
        self.closures = ex._Compiler()
        self.tmp = 0

    def const(self, value: Any) -> str:
        self.consts.append(value)
        return f"K[{len(self.consts) - 1}]"

    def new(self, prefix: str) -> str:
        self.tmp += 1
        return f"{prefix}{self.tmp}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    # -- statements ----------------------------------------------------------------------------

    def body(self, lst: ListNode | None, dot: str, ind: int, loop: bool) -> None:
        if lst is None:
            return
        for node in lst.nodes:
            self.stmt(node, dot, ind, loop)

    def stmt(self, node: Node, dot: str, ind: int, loop: bool) -> None:
        if isinstance(node, TextNode):
            self.emit(ind, f"app({node.text!r})")
        elif isinstance(node, CommentNode):
            pass
        elif isinstance(node, ActionNode):
            v = self.pipe(node.pipe, dot, ind, printed=not node.pipe.decl)
            if not node.pipe.decl:
                n = self.const(node)
                self.emit(
                    ind,
                    f"app({v} if type({v}) is str else str({v}) if type({v}) is int "
                    f"else P(st, {n}, {v}))",
                )
        elif isinstance(node, IfNode | WithNode):
            self.if_with(node, dot, ind, loop)
        elif isinstance(node, RangeNode):
            self.range(node, dot, ind)
        elif isinstance(node, BreakNode) and loop:
            self.emit(ind, "break")
        elif isinstance(node, ContinueNode) and loop:
            self.emit(ind, "continue")
        else:
            fn = self.const(self.closures.stmt(node))
            self.emit(ind, f"{fn}(st, {dot})")

    def if_with(self, node: IfNode | WithNode, dot: str, ind: int, loop: bool) -> None:
        mark = self.new("m")
        self.emit(ind, f"{mark} = len(vs)")
        v = self.pipe(node.pipe, dot, ind)
        self.emit(ind, f"if {v} if type({v}) is bool else TRUTH({v}):")
        inner = v if isinstance(node, WithNode) else dot
        self.emit(ind + 1, "pass")
        self.body(node.list, inner, ind + 1, loop)
        if node.else_list is not None:
            self.emit(ind, "else:")
            self.emit(ind + 1, "pass")
            self.body(node.else_list, dot, ind + 1, loop)
        self.emit(ind, f"del vs[{mark}:]")

    def range(self, node: RangeNode, dot: str, ind: int) -> None:
        outer = self.new("m")
        self.emit(ind, f"{outer} = len(vs)")
        val = self.pipe(node.pipe, dot, ind)
        at = self.const(ex.last_evaluated(node.pipe))
        ndecl = len(node.pipe.decl)
        items = self.new("it")
        indexed = ndecl > 1
        self.emit(ind, f"{items} = RANGE(st, {at}, {val}, {ndecl > 1}, {indexed})")
        mark = self.new("m")
        self.emit(ind, f"{mark} = len(vs)")
        ran = self.new("ran")
        index, elem = self.new("i"), self.new("e")
        self.emit(ind, f"{ran} = {items} is not None")
        self.emit(ind, f"if {ran}:")
        target = f"{index}, {elem}" if indexed else elem
        self.emit(ind + 1, f"for {target} in {items}:")
        b = ind + 2
        self.emit(b, "if check is not None: check()")
        if ndecl:
            names = [v.ident[0] for v in node.pipe.decl]
            if node.pipe.is_assign:
                n = self.const(node)
                if ndecl > 1:
                    self.emit(b, f"st.set_var({n}, {names[0]!r}, {index})")
                    self.emit(b, f"st.set_var({n}, {names[1]!r}, {elem})")
                else:
                    self.emit(b, f"st.set_var({n}, {names[0]!r}, {elem})")
            else:
                self.emit(b, f"vs[{mark} - 1][1] = {elem}")
                if ndecl > 1:
                    self.emit(b, f"vs[{mark} - 2][1] = {index}")
        if _jumps(node.list):
            # a break/continue may leave variables of this iteration (or of an if/with in it)
            self.emit(b, "try:")
            self.emit(b + 1, "pass")
            self.body(node.list, elem, b + 1, True)
            self.emit(b, "finally:")
            self.emit(b + 1, f"del vs[{mark}:]")
        else:
            self.emit(b, "pass")
            self.body(node.list, elem, b, True)
            if _declares(node.list):
                self.emit(b, f"del vs[{mark}:]")
        if node.else_list is not None:
            self.emit(ind, f"if not {ran}:")
            self.emit(ind + 1, "pass")
            self.body(node.else_list, dot, ind + 1, False)
        self.emit(ind, f"del vs[{outer}:]")

    # -- expressions ---------------------------------------------------------------------------

    def pipe(self, pipe: PipeNode, dot: str, ind: int, printed: bool = False) -> str:
        """Emit the pipeline; return the name of the local holding its value.

        ``printed``: the value is only printed, where None and no value print alike.
        """
        v = self.new("v")
        final: str | None = None
        for k, cmd in enumerate(pipe.cmds):
            self.emit(ind, f"{v} = {self.command(cmd, dot, final, ind)}")
            if not (printed and k == len(pipe.cmds) - 1):
                self.emit(ind, f"if {v} is None: {v} = NOVALUE")
            final = v
        if pipe.decl:
            last = self.const(ex.last_evaluated(pipe))
            for var in pipe.decl:
                name = var.ident[0]
                if pipe.is_assign:
                    self.emit(ind, f"st.set_var({last}, {name!r}, {v})")
                else:
                    self.emit(ind, f"vs.append([{name!r}, {v}])")
        return v

    def command(self, cmd: CommandNode, dot: str, final: str | None, ind: int) -> str:
        first = cmd.args[0]
        fin = final if final is not None else "MISSING"
        closure = self.const(self.closures.command(cmd))
        fallback = f"{closure}(st, {dot}, {fin})"
        if isinstance(first, IdentifierNode):
            name = first.name
            n = len(cmd.args) - 1 + (final is not None)
            c, i = self.const(cmd), self.const(first)
            if name not in ex._BUILTIN_CMDS:
                fn = self.new("f")  # looked up and its arity checked before the arguments
                self.emit(ind, f"{fn} = LOOKUP(st, {i}, {name!r}, {n})")
                args = self.args(cmd.args[1:], dot, ind)
                if final is not None:
                    args.append(final)
                return f"INVOKE(st, {c}, {name!r}, {fn}, [{', '.join(args)}])"
            if name in ("and", "or") and n > 0:
                return self.and_or(cmd, dot, final, ind, fallback)
            spec = ex.BUILTIN_SPECS.get(name)
            if spec is not None and n >= spec[1] and (spec[2] is None or n <= spec[2]):
                args = self.args(cmd.args[1:], dot, ind)
                if final is not None:
                    args.append(final)
                fn = self.const(spec[0])
                call = f"BUILTIN(st, {c}, {name!r}, {fn}, {spec[3]}, [{', '.join(args)}])"
                return f"({fallback} if {name!r} in st.funcs else {call})"
            if name == "printf" and len(cmd.args) > 1 and isinstance(cmd.args[1], StringNode):
                args = self.args(cmd.args[2:], dot, ind)
                if final is not None:
                    args.append(final)
                fmt = repr(cmd.args[1].text)
                call = f"SPRINTF({fmt}, [{', '.join(args)}])"
                return f"({fallback} if 'printf' in st.funcs else {call})"
            return fallback
        if isinstance(first, FieldNode | VariableNode) and len(cmd.args) == 1 and final is None:
            return self.arg(first, dot, ind)
        return fallback

    def and_or(self, cmd: CommandNode, dot: str, final: str | None, ind: int, fallback: str) -> str:
        """Short-circuit and/or as statements; returns the local holding the result."""
        is_or = isinstance(cmd.args[0], IdentifierNode) and cmd.args[0].name == "or"
        r = self.new("r")
        name = "or" if is_or else "and"
        self.emit(ind, f"if {name!r} in st.funcs:")
        self.emit(ind + 1, f"{r} = {fallback}")
        self.emit(ind, "else:")
        operands = [*cmd.args[1:]]
        depth = ind + 1
        test = "not " if is_or else ""
        for k, arg in enumerate(operands):
            self.emit(depth, f"{r} = {self.arg(arg, dot, depth)}")
            if k < len(operands) - 1 or final is not None:
                self.emit(depth, f"if {test}TRUTH({r}):")
                depth += 1
                self.emit(depth, "pass")
        if final is not None:
            self.emit(depth, f"{r} = {final}")
        return r

    def args(self, nodes: list[Node], dot: str, ind: int) -> list[str]:
        """Arguments in order; when one needs statements, all are evaluated into locals first."""
        if not any(isinstance(a, PipeNode) for a in nodes):
            return [self.arg(a, dot, ind) for a in nodes]
        names = []
        for a in nodes:
            value = self.arg(a, dot, ind)
            local = self.new("a")
            self.emit(ind, f"{local} = {value}")
            names.append(local)
        return names

    def arg(self, node: Node, dot: str, ind: int) -> str:
        if isinstance(node, PipeNode) and not node.decl:
            return self.pipe(node, dot, ind)
        if isinstance(node, DotNode):
            return dot
        if isinstance(node, NilNode):
            return "NOVALUE"  # as exec._nil
        if isinstance(node, StringNode):
            return repr(node.text)
        if isinstance(node, BoolNode):
            return "True" if node.value else "False"
        if isinstance(node, NumberNode):
            try:
                value = ex._ideal(_NoState(), node)  # type: ignore[arg-type]
            except _Overflow:
                pass
            else:
                return self.const(value)
        if isinstance(node, FieldNode):
            n = self.const(node)
            if len(node.ident) == 1:
                name = node.ident[0]
                # inline cache: classes whose instances may be read for this field name
                types = self.const(ex._ADMITTED_BY_NAME.setdefault(name, set()))
                return (
                    f"(getattr({dot}, {name!r}) if type({dot}) in {types} "
                    f"else GF(st, {n}, {dot}, {name!r}))"
                )
            return f"CHAIN(st, {n}, {dot}, {node.ident!r}, None)"
        if isinstance(node, VariableNode):
            n = self.const(node)
            base = f"VAR(st, {n}, {node.ident[0]!r})"
            if len(node.ident) == 1:
                return base
            if len(node.ident) == 2:
                return f"GF(st, {n}, {base}, {node.ident[1]!r})"
            return f"CHAIN(st, {n}, {base}, {node.ident[1:]!r}, None)"
        fn = self.const(self.closures.arg(node))
        return f"{fn}(st, {dot})"


class _Overflow(Exception):
    pass


class _NoState:
    """Stands in for the state when a literal is evaluated at compile time."""

    tmpl = ""

    def fail(self, node: Node, msg: str) -> Exception:
        return _Overflow(msg)


def compile_tree(root: ListNode) -> Callable[[Any, Any], None]:
    """One Python function ``(state, dot) -> None`` for a template tree."""
    g = _Gen()
    g.emit(1, "vs = st.vars")
    g.emit(1, "app = st.out.append")
    g.emit(1, "check = st.check")
    g.body(root, "dot", 1, False)
    source = "def template(st, dot):\n" + "\n".join(g.lines) + "\n"
    namespace: dict[str, Any] = {
        "__builtins__": {
            "len": len,
            "type": type,
            "str": str,
            "bool": bool,
            "int": int,
            "getattr": getattr,
        },
        "K": g.consts,
        "P": ex._printable,
        "TRUTH": bi.truth,
        "NOVALUE": NO_VALUE,
        "MISSING": _MISSING,
        "GF": _get_field,
        "CHAIN": ex._chain,
        "VAR": _variable,
        "LOOKUP": ex._lookup,
        "INVOKE": ex._invoke,
        "RANGE": _range_items,
        "BUILTIN": ex.run_builtin,
        "SPRINTF": _sprintf,
    }
    exec(compile(source, "<go template>", "exec"), namespace)  # generated: see the module doc
    fn: Callable[[Any, Any], None] = namespace["template"]
    return fn


#: Compile trees to Python source (fast); False: closures only (the reference semantics).
USE_CODEGEN = True


def compile_trees(trees: Mapping[str, ListNode]) -> dict[str, ex.Stmt]:
    """Compile every template of a set once: to Python source, or else to closures."""
    compiled: dict[str, ex.Stmt] = {}
    for name, root in trees.items():
        if not USE_CODEGEN:
            compiled[name] = ex._Compiler().body(root)
            continue
        try:
            compiled[name] = compile_tree(root)
        except (SyntaxError, RecursionError, MemoryError):
            # deeper nesting than Python's compiler takes: the closures have no such limit
            compiled[name] = ex._Compiler().body(root)
    return compiled
