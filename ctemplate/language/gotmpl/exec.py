"""Executing a parsed Go template (text/template/exec.go), compiled once to Python closures.

Every node of the tree becomes a small closure when a template first runs: a statement
``(state, dot) -> None`` that appends to the output, or an expression ``(state, dot) -> value``.
Nothing is re-parsed or matched at execution time; function names are looked up in the
function mapping given to ``execute`` (so one compiled tree serves every set of functions).

Semantics follow Go's (see docs/templates.md for the list and the differences):

* values: Python dicts are Go maps (a field name is a key: ``.key``), lists/tuples slices,
  dataclass instances structs (``.Field`` reads a declared field), None is nil and
  :data:`.fmt.NO_VALUE` is Go's "no value" (a missing key, nil data), printed ``<no value>``;
* ``missing_key_error=False`` is consul-template's ``missingkey=zero``: a missing map key is
  nil (so ``.m.missing`` prints ``<no value>``, and ``.m.missing.x`` fails with ``nil pointer
  evaluating interface {}.x``), except in a struct field declared ``dict[str, str]`` where it is
  ``""`` (Go's zero of ``map[string]string``);
* only public names are readable (never one starting with ``_``), only on dicts and dataclass
  instances; methods are not callable, except those a class lists in ``__go_methods__``
  (``.Method arg``) — templates are untrusted input;
* ``and``/``or`` short-circuit and return the deciding operand; ``break``/``continue``; ``range``
  over lists, tuples, dicts (sorted keys), integers (Go 1.22+) and iterators (like channels);
* a function's exception becomes ``error calling NAME: message`` with the exception chained.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from ..sandbox import is_safe_attribute
from . import builtins as bi
from .errors import GoTemplateError
from .fmt import NO_VALUE, is_struct, sort_keys, sprint_value, sprintf, type_name
from .lex import go_quote, location
from .nodes import (
    ActionNode,
    BoolNode,
    BreakNode,
    ChainNode,
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
    TemplateNode,
    TextNode,
    VariableNode,
    WithNode,
)

__all__ = ["MAX_DEPTH", "StrMap", "attribute_allowed", "execute_template", "run"]

#: Nested {{template}} calls allowed (Go allows 100000; Python's stack is smaller).
MAX_DEPTH = 100

_MISSING: Any = object()  # no final (piped) argument

Stmt = Callable[["_State", Any], None]
Expr = Callable[["_State", Any], Any]
Cmd = Callable[["_State", Any, Any], Any]


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_BREAK = _Break()
_CONTINUE = _Continue()


class _ExecError(Exception):
    def __init__(self, tmpl: str, node: Node | None, msg: str) -> None:
        super().__init__(msg)
        self.tmpl = tmpl
        self.node = node
        self.msg = msg
        self.root: BaseException | None = None  # what a function raised, if that is the cause


class _State:
    __slots__ = (
        "check",
        "depth",
        "funcs",
        "missing_error",
        "out",
        "source",
        "text",
        "tmpl",
        "trees",
        "vars",
    )

    def __init__(
        self,
        trees: Mapping[str, Stmt],
        funcs: Mapping[str, Callable[..., Any]],
        missing_error: bool,
        check: Callable[[], None] | None,
    ) -> None:
        self.out: list[str] = []
        self.vars: list[list[Any]] = []
        self.trees = trees
        self.funcs = funcs
        self.missing_error = missing_error
        self.check = check
        self.tmpl = ""
        self.depth = 0
        self.text = ""
        self.source = ""

    def fail(self, node: Node | None, msg: str) -> _ExecError:
        return _ExecError(self.tmpl, node, msg)

    def var(self, node: Node, name: str) -> Any:
        for entry in reversed(self.vars):
            if entry[0] == name:
                return entry[1]
        raise self.fail(node, f"undefined variable: {name}")

    def set_var(self, node: Node, name: str, value: Any) -> None:
        for entry in reversed(self.vars):
            if entry[0] == name:
                entry[1] = value
                return
        raise self.fail(node, f"undefined variable: {name}")


# --- what a template may read -------------------------------------------------------------------


def attribute_allowed(obj: Any, name: str) -> bool:
    """May a template read ``obj.name``? Only public dataclass fields and declared methods.

    Templates are untrusted: never a name starting with ``_``, never on modules, classes or
    functions, never a method unless its class lists it in ``__go_methods__``. The answer is
    remembered per class and name (the fast paths read admitted fields without asking again),
    so a replacement must decide by class and name, not by the instance's state.
    """
    if name.startswith("_") or isinstance(obj, type) or inspect.ismodule(obj):
        return False
    # Both front ends' rule (language/sandbox.py), and Go's narrower one: declared members only.
    return name in _members(type(obj)) and is_safe_attribute(obj, name)


_MEMBERS: dict[type, dict[str, Any]] = {}
_STR_MAP = re.compile(r"^(dict|Mapping|MutableMapping)\[str, *str\]")


def _members(cls: type) -> dict[str, Any]:
    """Readable names of a class: field name -> zero of its map values (or None); methods."""
    members = _MEMBERS.get(cls)
    if members is None:
        members = {}
        if dataclasses.is_dataclass(cls):
            for f in dataclasses.fields(cls):
                if f.name.startswith("_"):
                    continue
                annot = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
                members[f.name] = "" if _STR_MAP.match(str(annot)) else None
        for name in getattr(cls, "__go_methods__", ()):
            if not name.startswith("_"):
                members[name] = _METHOD
        _MEMBERS[cls] = members
    return members


_METHOD: Any = object()
# class -> names attribute_allowed admitted for its instances (-> what _members says of them)
_ADMITTED: dict[type, dict[str, Any]] = {}
# field name -> classes whose instances may be read for it (the generated code's inline cache)
_ADMITTED_BY_NAME: dict[str, set[type]] = {}


# --- function calls -----------------------------------------------------------------------------

_ARITY: dict[Any, tuple[int, int | None]] = {}


def _arity(fn: Callable[..., Any]) -> tuple[int, int | None]:
    """(required, maximum or None) positional arguments of a function."""
    try:
        return _ARITY[fn]
    except (KeyError, TypeError):
        pass
    lo, hi = 0, 0
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        result: tuple[int, int | None] = (0, None)
    else:
        var = False
        for p in sig.parameters.values():
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                hi += 1
                if p.default is p.empty:
                    lo += 1
            elif p.kind == p.VAR_POSITIONAL:
                var = True
        result = (lo, None if var else hi)
    with contextlib.suppress(TypeError):  # an unhashable callable is simply not cached
        _ARITY[fn] = result
    return result


def _lookup(st: _State, ident: Node, name: str, n: int) -> Callable[..., Any]:
    """The function ``name`` for a call with ``n`` arguments (Go checks the count first)."""
    fn = st.funcs.get(name)
    if fn is None:
        raise st.fail(ident, f"{go_quote(name)} is not a defined function")
    _check_arity(st, ident, name, fn, n)
    return fn


def _check_arity(st: _State, ident: Node, name: str, fn: Callable[..., Any], n: int) -> None:
    lo, hi = _arity(fn)
    if n < lo or (hi is not None and n > hi):
        if hi is None:
            raise st.fail(ident, f"wrong number of args for {name}: want at least {lo} got {n}")
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise st.fail(ident, f"wrong number of args for {name}: want {want} got {n}")


def _call(
    st: _State, cmd: Node, ident: Node, name: str, fn: Callable[..., Any], args: list[Any]
) -> Any:
    _check_arity(st, ident, name, fn, len(args))
    return _invoke(st, cmd, name, fn, args)


def _invoke(st: _State, cmd: Node, name: str, fn: Callable[..., Any], args: list[Any]) -> Any:
    """Call a template function; its exception becomes ``error calling NAME: ...``."""
    for i, a in enumerate(args):
        if a is NO_VALUE:
            args[i] = None
    try:
        return fn(*args)
    except (_ExecError, _Break, _Continue, RecursionError):
        raise
    except Exception as exc:
        err = st.fail(cmd, f"error calling {name}: {exc}")
        # a nested execution's error (execute_template) brings its own root cause along
        err.root = exc.cause if isinstance(exc, GoTemplateError) and exc.cause else exc
        raise err from exc


def last_evaluated(node: Node) -> Node:
    """The node Go's executor visits last in evaluating ``node`` (errors after it point there)."""
    while True:
        if isinstance(node, PipeNode):
            node = node.cmds[-1]
        if isinstance(node, CommandNode):
            first = node.args[0]
            if isinstance(first, IdentifierNode) and len(node.args) > 1:
                node = node.args[-1]
                continue
            if isinstance(first, PipeNode) and len(node.args) == 1:
                node = first
                continue
            return first
        if isinstance(node, PipeNode):
            continue
        return node


def _ideal(st: _State, node: NumberNode) -> Any:
    """An untyped numeric literal as a value: complex, float64 or int by its spelling."""
    if node.is_complex:
        return node.complex_value
    text = node.text
    if (
        node.is_float
        and not _is_hex_int(text)
        and text[:1] != "'"
        and any(c in text for c in ".eEpP")
    ):
        return node.float_value
    if node.is_int and -(1 << 63) <= node.int_value < (1 << 63):
        return node.int_value
    raise st.fail(node, f"{text} overflows int")


def _is_hex_int(s: str) -> bool:
    return len(s) > 2 and s[0] == "0" and s[1] in "xX" and not any(c in s for c in "pP")


# --- fields -------------------------------------------------------------------------------------


class StrMap(dict):  # type: ignore[type-arg]
    """A dict that is a Go ``map[string]string``: a missing key reads as ``""``, not nil."""

    __slots__ = ()
    go_zero = ""


def _field(
    st: _State,
    node: Node,
    receiver: Any,
    name: str,
    args: list[Any] | Callable[[], list[Any]] | None,
    zero: Any,
    iface: bool,
) -> tuple[Any, Any]:
    """One step of a field chain: (value, zero of a missing key in it).

    ``iface``: the receiver was read from a map, so Go sees it as ``interface {}``.
    """
    if isinstance(receiver, dict):
        if args is not None:
            raise st.fail(node, f"{name} is not a method but has arguments")
        v = receiver.get(name, _MISSING)
        if v is _MISSING:
            if receiver and not any(isinstance(k, str) for k in receiver):
                # a map whose keys are not strings has no fields (map[int]string in Go)
                tname = "interface {}" if iface else type_name(receiver)
                raise st.fail(node, f"can't evaluate field {name} in type {tname}")
            if st.missing_error:
                raise st.fail(node, f"map has no entry for key {go_quote(name)}")
            return getattr(receiver, "go_zero", zero), None
        return v, None
    if receiver is NO_VALUE:
        if st.missing_error:
            raise st.fail(node, f"nil data; no entry for key {go_quote(name)}")
        return NO_VALUE, None
    if receiver is None:
        raise st.fail(node, f"nil pointer evaluating interface {{}}.{name}")
    kind = _members(type(receiver)).get(name, _MISSING)
    if kind is not _MISSING:
        if attribute_allowed(receiver, name):
            # remembered per class, so the next read of this field takes the fast path
            _ADMITTED.setdefault(type(receiver), {})[name] = kind
            if kind is None:
                _ADMITTED_BY_NAME.setdefault(name, set()).add(type(receiver))
        else:
            kind = _MISSING
    if kind is _MISSING:
        tname = "interface {}" if iface else type_name(receiver)
        raise st.fail(node, f"can't evaluate field {name} in type {tname}")
    if kind is _METHOD:
        method = getattr(receiver, name)
        argv = args() if callable(args) else list(args or ())
        return _call(st, node, node, name, method, argv), None
    if args is not None:
        raise st.fail(node, f"{name} has arguments but cannot be invoked as function")
    value = getattr(receiver, name)
    if kind == "" and type(value) is dict:
        # a field declared dict[str, str] is a Go map[string]string wherever it goes
        value = StrMap(value)
    return value, kind


def _chain(
    st: _State,
    node: Node,
    receiver: Any,
    idents: list[str],
    args: list[Any] | None,
    iface: bool = False,
) -> Any:
    zero = None
    last = len(idents) - 1
    for i, name in enumerate(idents):
        if args is None or i < last:
            # fast paths: a present key, a struct field already admitted for this class
            t = type(receiver)
            if t is dict:
                v = receiver.get(name, _MISSING)
                if v is not _MISSING:
                    receiver, zero, iface = v, None, True
                    continue
            else:
                admitted = _ADMITTED.get(t)
                if admitted is not None:
                    kind = admitted.get(name, _MISSING)
                    if kind is None:  # a plain field (not a method, not a map to wrap)
                        receiver, zero, iface = getattr(receiver, name), kind, False
                        continue
        from_map = isinstance(receiver, dict)
        receiver, zero = _field(st, node, receiver, name, args if i == last else None, zero, iface)
        iface = from_map
    return receiver


# --- the compiler -------------------------------------------------------------------------------


class _Compiler:
    def __init__(self) -> None:
        pass

    # statements

    def body(self, lst: ListNode | None) -> Stmt:
        if lst is None:
            return _noop
        fns = [self.stmt(n) for n in lst.nodes if not isinstance(n, CommentNode)]
        if not fns:
            return _noop
        if len(fns) == 1:
            return fns[0]
        fns_t = tuple(fns)

        def run_list(st: _State, dot: Any) -> None:
            for f in fns_t:
                f(st, dot)

        return run_list

    def stmt(self, node: Node) -> Stmt:
        if isinstance(node, TextNode):
            text = node.text

            def run_text(st: _State, dot: Any) -> None:
                st.out.append(text)

            return run_text
        if isinstance(node, ActionNode):
            return self.action(node)
        if isinstance(node, IfNode):
            return self.if_with(node, with_=False)
        if isinstance(node, WithNode):
            return self.if_with(node, with_=True)
        if isinstance(node, RangeNode):
            return self.range(node)
        if isinstance(node, TemplateNode):
            return self.template(node)
        if isinstance(node, BreakNode):

            def run_break(st: _State, dot: Any) -> None:
                raise _BREAK

            return run_break
        if isinstance(node, ContinueNode):

            def run_continue(st: _State, dot: Any) -> None:
                raise _CONTINUE

            return run_continue
        raise ValueError(f"unknown node {node!r}")

    def action(self, node: ActionNode) -> Stmt:
        pipe = self.pipe(node.pipe)
        if node.pipe.decl:

            def run_decl(st: _State, dot: Any) -> None:
                pipe(st, dot)

            return run_decl

        if len(node.pipe.cmds) == 1:
            # the common case: one command, evaluated directly (one call less per action)
            cmd = self.command(node.pipe.cmds[0])

            def run_command(st: _State, dot: Any) -> None:
                v = cmd(st, dot, _MISSING)
                t = type(v)
                if t is str:
                    st.out.append(v)
                elif t is int:
                    st.out.append(str(v))
                else:
                    st.out.append(_printable(st, node, v))

            return run_command

        def run_action(st: _State, dot: Any) -> None:
            v = pipe(st, dot)
            if type(v) is str:
                st.out.append(v)
            else:
                st.out.append(_printable(st, node, v))

        return run_action

    def if_with(self, node: IfNode | WithNode, *, with_: bool) -> Stmt:
        pipe = self.pipe(node.pipe)
        body = self.body(node.list)
        orelse = self.body(node.else_list)
        truth = bi.truth

        def run_if(st: _State, dot: Any) -> None:
            mark = len(st.vars)
            v = pipe(st, dot)
            if truth(v):
                body(st, v if with_ else dot)
            else:
                orelse(st, dot)
            del st.vars[mark:]

        return run_if

    def range(self, node: RangeNode) -> Stmt:
        pipe = self.pipe(node.pipe)
        body = self.body(node.list)
        orelse = self.body(node.else_list)
        ndecl = len(node.pipe.decl)
        assign = node.pipe.is_assign
        names = [v.ident[0] for v in node.pipe.decl]
        at = last_evaluated(node.pipe)  # Go reports the last node evaluated

        def run_range(st: _State, dot: Any) -> None:
            outer = len(st.vars)
            val = pipe(st, dot)
            mark = len(st.vars)
            items: Iterator[tuple[Any, Any]]
            two = ndecl > 1
            if isinstance(val, list | tuple | range) and not is_struct(val):
                items = enumerate(val)
                empty = not val
            elif isinstance(val, dict):
                empty = not val
                items = ((k, val[k]) for k in sort_keys(val))
            elif isinstance(val, bool) or val is None or val is NO_VALUE:
                if isinstance(val, bool):
                    raise st.fail(at, f"range can't iterate over {sprint_value(val)}")
                empty = True
                items = iter(())
            elif isinstance(val, int):
                if two:
                    raise st.fail(at, f"can't use {val} to iterate over more than one variable")
                empty = val <= 0
                items = ((None, i) for i in range(val))
            elif isinstance(val, bytes | bytearray):
                empty = not val
                items = enumerate(val)
            elif isinstance(val, Iterator):
                items = enumerate(val)
                empty = False
            else:
                raise st.fail(at, f"range can't iterate over {sprint_value(val)}")
            ran = False
            if not empty:
                vars_ = st.vars
                check = st.check
                for index, elem in items:
                    ran = True
                    if check is not None:
                        check()
                    if ndecl:
                        if assign:
                            if two:
                                st.set_var(node, names[0], index)
                                st.set_var(node, names[1], elem)
                            else:
                                st.set_var(node, names[0], elem)
                        else:
                            vars_[mark - 1][1] = elem
                            if two:
                                vars_[mark - 2][1] = index
                    try:
                        body(st, elem)
                    except _Continue:
                        pass
                    except _Break:
                        del vars_[mark:]
                        break
                    del vars_[mark:]
            if not ran:
                orelse(st, dot)
            del st.vars[outer:]

        return run_range

    def template(self, node: TemplateNode) -> Stmt:
        pipe = self.pipe(node.pipe) if node.pipe is not None else None
        name = node.name

        def run_template(st: _State, dot: Any) -> None:
            fn = st.trees.get(name)
            if fn is None:
                raise st.fail(node, f"template {go_quote(name)} not defined")
            if st.depth >= MAX_DEPTH:
                raise st.fail(node, f"exceeded maximum template depth ({MAX_DEPTH})")
            if st.check is not None:
                st.check()
            value = pipe(st, dot) if pipe is not None else NO_VALUE
            saved_vars, saved_tmpl = st.vars, st.tmpl
            st.vars = [["$", value]]
            st.tmpl = name
            st.depth += 1
            try:
                fn(st, value)
            finally:
                st.vars, st.tmpl = saved_vars, saved_tmpl
                st.depth -= 1

        return run_template

    # expressions

    def pipe(self, pipe: PipeNode) -> Expr:
        cmds = [self.command(c) for c in pipe.cmds]
        names = [v.ident[0] for v in pipe.decl]
        assign = pipe.is_assign

        if len(cmds) == 1:
            only = cmds[0]

            def eval_one(st: _State, dot: Any) -> Any:
                v = only(st, dot, _MISSING)
                return NO_VALUE if v is None else v

            value_of: Expr = eval_one
        else:
            cmds_t = tuple(cmds)

            def eval_pipe(st: _State, dot: Any) -> Any:
                v = _MISSING
                for c in cmds_t:
                    v = c(st, dot, v)
                    if v is None:
                        v = NO_VALUE
                return v

            value_of = eval_pipe

        if not names:
            return value_of

        last = last_evaluated(pipe)  # Go reports the last node evaluated

        def eval_decl(st: _State, dot: Any) -> Any:
            v = value_of(st, dot)
            for name in names:
                if assign:
                    st.set_var(last, name, v)
                else:
                    st.vars.append([name, v])
            return v

        return eval_decl

    def command(self, cmd: CommandNode) -> Cmd:
        first = cmd.args[0]
        if isinstance(first, IdentifierNode):
            return self.call(cmd, first)
        if isinstance(first, FieldNode | VariableNode | ChainNode):
            return self.field_command(cmd, first)
        # a value: no arguments allowed
        value = self.arg(first) if not isinstance(first, NilNode) else None
        has_args = len(cmd.args) > 1
        text = str(first)

        def eval_value(st: _State, dot: Any, final: Any) -> Any:
            if has_args or final is not _MISSING:
                raise st.fail(
                    cmd if isinstance(first, PipeNode) else first,
                    f"can't give argument to non-function {text}",
                )
            if value is None:
                raise st.fail(first, "nil is not a command")
            return value(st, dot)

        return eval_value

    def field_command(self, cmd: CommandNode, first: FieldNode | VariableNode | ChainNode) -> Cmd:
        argfs = [self.arg(a) for a in cmd.args[1:]]
        base = self.base(first)
        idents = self.idents(first)
        if not idents:  # a bare variable

            def eval_var(st: _State, dot: Any, final: Any) -> Any:
                if argfs or final is not _MISSING:
                    raise st.fail(first, f"can't give argument to non-function {first}")
                return base(st, dot)

            return eval_var
        if not argfs:
            # the common case: .A.B or $x.A with no arguments

            def eval_field(st: _State, dot: Any, final: Any) -> Any:
                receiver = base(st, dot)
                if final is not _MISSING:
                    return _chain(st, first, receiver, idents, [final])
                if len(idents) == 1:
                    # inline the single step for speed: a present key, a known struct field
                    name = idents[0]
                    t = type(receiver)
                    if t is dict:
                        v = receiver.get(name, _MISSING)
                        if v is not _MISSING:
                            return v
                    else:
                        admitted = _ADMITTED.get(t)
                        if admitted is not None:
                            kind = admitted.get(name, _MISSING)
                            if kind is None:  # a plain field (not a method, not a map to wrap)
                                return getattr(receiver, name)
                    return _field(st, first, receiver, name, None, None, False)[0]
                return _chain(st, first, receiver, idents, None)

            return eval_field

        def eval_method(st: _State, dot: Any, final: Any) -> Any:
            receiver = base(st, dot)
            if len(idents) > 1:
                receiver = _chain(st, first, receiver, idents[:-1], None)

            def arguments() -> list[Any]:
                # evaluated only once the last name is known to be a method, as in Go
                args = [f(st, dot) for f in argfs]
                if final is not _MISSING:
                    args.append(final)
                return args

            return _field(st, first, receiver, idents[-1], arguments, None, False)[0]

        return eval_method

    def base(self, node: FieldNode | VariableNode | ChainNode) -> Expr:
        """The receiver of a field chain: dot, a variable, or a term."""
        if isinstance(node, FieldNode):
            return _dot
        if isinstance(node, VariableNode):
            name = node.ident[0]

            def eval_variable(st: _State, dot: Any) -> Any:
                for entry in reversed(st.vars):
                    if entry[0] == name:
                        return entry[1]
                raise st.fail(node, f"undefined variable: {name}")

            return eval_variable
        if isinstance(node.node, NilNode):
            text = str(node)

            def eval_nil(st: _State, dot: Any) -> Any:
                raise st.fail(node, f"indirection through explicit nil in {text}")

            return eval_nil
        inner = self.arg(node.node)

        def eval_term(st: _State, dot: Any) -> Any:
            v = inner(st, dot)
            return NO_VALUE if v is None else v

        return eval_term

    @staticmethod
    def idents(node: FieldNode | VariableNode | ChainNode) -> list[str]:
        if isinstance(node, FieldNode):
            return node.ident
        if isinstance(node, VariableNode):
            return node.ident[1:]
        return node.fields

    def arg(self, node: Node) -> Expr:
        """An argument (Go's evalArg for an interface{} parameter)."""
        if isinstance(node, DotNode):
            return _dot
        if isinstance(node, NilNode):
            return _nil
        if isinstance(node, StringNode | BoolNode):
            const: Any = node.text if isinstance(node, StringNode) else node.value

            def eval_const(st: _State, dot: Any) -> Any:
                return const

            return eval_const
        if isinstance(node, NumberNode):
            if node.is_complex or (node.is_int and -(1 << 63) <= node.int_value < (1 << 63)):
                number = _ideal(_State({}, {}, False, None), node)  # cannot fail here

                def eval_const_number(st: _State, dot: Any) -> Any:
                    return number

                return eval_const_number

            def eval_number(st: _State, dot: Any) -> Any:
                return _ideal(st, node)

            return eval_number
        if isinstance(node, PipeNode):
            return self.pipe(node)
        if isinstance(node, FieldNode | VariableNode | ChainNode):
            base = self.base(node)
            idents = self.idents(node)
            if not idents:
                return base

            def eval_chain(st: _State, dot: Any) -> Any:
                return _chain(st, node, base(st, dot), idents, None)

            return eval_chain
        if isinstance(node, IdentifierNode):
            call = self.call(CommandNode(node.pos, node.line, [node]), node)

            def eval_call(st: _State, dot: Any) -> Any:
                return call(st, dot, _MISSING)

            return eval_call
        raise ValueError(f"can't handle {node!r} as an argument")

    def call(self, cmd: CommandNode, ident: IdentifierNode) -> Cmd:
        name = ident.name
        argfs = tuple(self.arg(a) for a in cmd.args[1:])
        builtin = _BUILTIN_CMDS.get(name)
        nargs = len(argfs)

        def eval_call(st: _State, dot: Any, final: Any) -> Any:
            fn = st.funcs.get(name)
            if fn is None:
                if builtin is None:
                    raise st.fail(ident, f"{go_quote(name)} is not a defined function")
                return builtin(st, cmd, ident, dot, argfs, final)
            _check_arity(st, ident, name, fn, nargs + (final is not _MISSING))
            args = [f(st, dot) for f in argfs]
            if final is not _MISSING:
                args.append(final)
            return _invoke(st, cmd, name, fn, args)

        if nargs == 0 and builtin is None:

            def eval_call0(st: _State, dot: Any, final: Any) -> Any:
                args = [] if final is _MISSING else [final]
                fn = _lookup(st, ident, name, len(args))
                return _invoke(st, cmd, name, fn, args)

            return eval_call0
        return eval_call


def _noop(st: _State, dot: Any) -> None:
    return None


def _dot(st: _State, dot: Any) -> Any:
    return dot


def _nil(st: _State, dot: Any) -> Any:
    # Go's builtins see a nil literal as no value; functions get None (see _invoke)
    return NO_VALUE


def _printable(st: _State, node: Node, v: Any) -> str:
    """An action's value as text (Go's printValue)."""
    if v is NO_VALUE or v is None:
        return "<no value>"
    t = type(v)
    if t is int or t is bool or t is float or t is str:
        return sprint_value(v)
    if callable(v) and not is_struct(v) and not isinstance(v, type):
        raise st.fail(node, f"can't print {node} of type {type_name(v)}")
    if isinstance(v, Iterator):
        raise st.fail(node, f"can't print {node} of type chan")
    return sprint_value(v)


# --- builtins as commands -----------------------------------------------------------------------

_BuiltinCmd = Callable[[_State, CommandNode, IdentifierNode, Any, tuple[Expr, ...], Any], Any]


def _and_or(is_or: bool, name: str) -> _BuiltinCmd:
    def run(
        st: _State,
        cmd: CommandNode,
        ident: IdentifierNode,
        dot: Any,
        argfs: tuple[Expr, ...],
        final: Any,
    ) -> Any:
        _require_one(st, ident, name, argfs, final)
        v: Any = NO_VALUE
        for f in argfs:
            v = f(st, dot)
            if bi.truth(v) == is_or:
                return v
        if final is not _MISSING:
            v = final
        return v

    return run


def _evaluated(st: _State, dot: Any, argfs: tuple[Expr, ...], final: Any) -> list[Any]:
    """A command's arguments evaluated in order, the piped value (if any) last."""
    args = [f(st, dot) for f in argfs]
    if final is not _MISSING:
        args.append(final)
    return args


def _require_one(
    st: _State, ident: IdentifierNode, name: str, argfs: tuple[Expr, ...], final: Any
) -> None:
    if not argfs and final is _MISSING:
        raise st.fail(ident, f"wrong number of args for {name}: want at least 1 got 0")


def _simple(
    name: str, fn: Callable[..., Any], lo: int, hi: int | None, nil_args: bool = True
) -> _BuiltinCmd:
    def run(
        st: _State,
        cmd: CommandNode,
        ident: IdentifierNode,
        dot: Any,
        argfs: tuple[Expr, ...],
        final: Any,
    ) -> Any:
        n = len(argfs) + (final is not _MISSING)
        if n < lo:
            if hi is None:
                raise st.fail(
                    ident, f"wrong number of args for {name}: want at least {lo} got {len(argfs)}"
                )
            raise st.fail(ident, f"wrong number of args for {name}: want {lo} got {n}")
        if hi is not None and n > hi:
            raise st.fail(ident, f"wrong number of args for {name}: want {hi} got {n}")
        args = _evaluated(st, dot, argfs, final)
        if not nil_args:
            args = [None if a is NO_VALUE else a for a in args]
        try:
            return fn(*args)
        except bi.ArgTypeError as exc:
            raise st.fail(cmd, str(exc)) from None
        except bi.BuiltinError as exc:
            raise st.fail(cmd, f"error calling {name}: {exc}") from None

    return run


def _call_builtin(
    st: _State,
    cmd: CommandNode,
    ident: IdentifierNode,
    dot: Any,
    argfs: tuple[Expr, ...],
    final: Any,
) -> Any:
    _require_one(st, ident, "call", argfs, final)
    args = _evaluated(st, dot, argfs, final)
    fn, rest = args[0], args[1:]
    callee = str(cmd.args[1]) if len(cmd.args) > 1 else f"<{type_name(fn)} Value>"
    if fn is None or fn is NO_VALUE:
        raise st.fail(cmd, "error calling call: call of nil")
    if not callable(fn) or is_struct(fn) or isinstance(fn, type):
        raise st.fail(cmd, f"error calling call: non-function {callee} of type {type_name(fn)}")
    if not any(fn is f for f in st.funcs.values()):
        # Only functions given to execute are callable: data never carries code to run.
        raise st.fail(cmd, f"error calling call: {callee} is not a template function")
    return _call(st, cmd, ident, "call", fn, rest)


def _printf(
    st: _State,
    cmd: CommandNode,
    ident: IdentifierNode,
    dot: Any,
    argfs: tuple[Expr, ...],
    final: Any,
) -> Any:
    _require_one(st, ident, "printf", argfs, final)
    args = _evaluated(st, dot, argfs, final)
    fmt = args[0]
    if not isinstance(fmt, str):
        first = cmd.args[1] if len(cmd.args) > 1 else cmd
        if isinstance(first, NumberNode | BoolNode):
            raise st.fail(first, f"expected string; found {first}")
        if fmt is None or fmt is NO_VALUE:
            raise st.fail(first, "invalid value; expected string")
        raise st.fail(first, f"wrong type for value; expected string; got {type_name(fmt)}")
    return sprintf(fmt, [None if a is NO_VALUE else a for a in args[1:]])


# name -> (implementation, fewest args, most args or None, whether no-value reaches it)
BUILTIN_SPECS: dict[str, tuple[Callable[..., Any], int, int | None, bool]] = {
    "not": (lambda v: not bi.truth(v), 1, 1, True),
    "len": (bi.length, 1, 1, True),
    "index": (bi.index, 1, None, True),
    "slice": (bi.slice_, 1, None, True),
    "eq": (bi.eq, 1, None, True),
    "ne": (bi.ne, 2, 2, True),
    "lt": (bi.lt, 2, 2, True),
    "le": (bi.le, 2, 2, True),
    "gt": (bi.gt, 2, 2, True),
    "ge": (bi.ge, 2, 2, True),
    "print": (bi.go_print, 0, None, False),
    "println": (bi.go_println, 0, None, False),
    "html": (bi.html_escape, 0, None, True),
    "js": (bi.js_escape, 0, None, True),
    "urlquery": (bi.urlquery, 0, None, True),
}


def run_builtin(
    st: _State, cmd: Node, name: str, fn: Callable[..., Any], nil_args: bool, args: list[Any]
) -> Any:
    """Call a builtin with evaluated arguments (arity already checked)."""
    if not nil_args:
        args = [None if a is NO_VALUE else a for a in args]
    try:
        return fn(*args)
    except bi.ArgTypeError as exc:
        raise st.fail(cmd, str(exc)) from None
    except bi.BuiltinError as exc:
        raise st.fail(cmd, f"error calling {name}: {exc}") from None


_BUILTIN_CMDS: dict[str, _BuiltinCmd] = {
    "and": _and_or(False, "and"),
    "or": _and_or(True, "or"),
    "call": _call_builtin,
    "not": _simple("not", lambda v: not bi.truth(v), 1, 1),
    "len": _simple("len", bi.length, 1, 1),
    "index": _simple("index", bi.index, 1, None),
    "slice": _simple("slice", bi.slice_, 1, None),
    "eq": _simple("eq", bi.eq, 1, None),
    "ne": _simple("ne", bi.ne, 2, 2),
    "lt": _simple("lt", bi.lt, 2, 2),
    "le": _simple("le", bi.le, 2, 2),
    "gt": _simple("gt", bi.gt, 2, 2),
    "ge": _simple("ge", bi.ge, 2, 2),
    "print": _simple("print", bi.go_print, 0, None, nil_args=False),
    "println": _simple("println", bi.go_println, 0, None, nil_args=False),
    "printf": _printf,
    "html": _simple("html", bi.html_escape, 0, None),
    "js": _simple("js", bi.js_escape, 0, None),
    "urlquery": _simple("urlquery", bi.urlquery, 0, None),
}


# --- entry points -------------------------------------------------------------------------------


_CURRENT: ContextVar[_State | None] = ContextVar("gotmpl_current", default=None)


def run(
    compiled: Mapping[str, Stmt],
    text: str,
    source_name: str,
    name: str,
    data: Any,
    funcs: Mapping[str, Callable[..., Any]],
    *,
    missing_key_error: bool = False,
    check: Callable[[], None] | None = None,
) -> str:
    """Execute template ``name`` of a compiled set with ``data`` as dot and ``$``."""
    fn = compiled.get(name)
    if fn is None:
        raise GoTemplateError(
            source_name,
            0,
            0,
            f"{go_quote(name)} is an incomplete or empty template",
            phase="execute",
        )
    st = _State(compiled, funcs, missing_key_error, check)
    st.text, st.source = text, source_name
    return _run(st, fn, name, data)


def _run(st: _State, fn: Stmt, name: str, data: Any) -> str:
    st.tmpl = name
    dot = NO_VALUE if data is None else data
    st.vars = [["$", dot]]
    token = _CURRENT.set(st)
    try:
        fn(st, dot)
    except _ExecError as exc:
        raise _to_error(exc, st.text, st.source) from exc.__cause__
    except RecursionError:
        raise GoTemplateError(
            st.source,
            0,
            0,
            f"exceeded maximum template depth ({MAX_DEPTH})",
            phase="execute",
        ) from None
    finally:
        _CURRENT.reset(token)
    return "".join(st.out)


def execute_template(name: str, data: Any = None) -> str:
    """Run template ``name`` of the set being executed, from inside a template function.

    Go's ``Template.ExecuteTemplate`` on the same set (what consul-template's
    ``executeTemplate`` does): the same functions and options, ``data`` as dot and ``$``, none of
    the caller's variables; it returns the output. Nested runs count toward MAX_DEPTH. Errors
    are GoTemplateError (the calling action reports them as ``error calling ...``).
    """
    st = _CURRENT.get()
    if st is None:
        raise RuntimeError("execute_template is only for functions called by a Go template")
    fn = st.trees.get(name)
    if fn is None:
        raise GoTemplateError(
            st.source,
            0,
            0,
            f"no template {go_quote(name)} associated with template {go_quote(st.tmpl)}",
            phase="execute",
        )
    if st.depth >= MAX_DEPTH:
        raise GoTemplateError(
            st.source, 0, 0, f"exceeded maximum template depth ({MAX_DEPTH})", phase="execute"
        )
    if st.check is not None:
        st.check()
    sub = _State(st.trees, st.funcs, st.missing_error, st.check)
    sub.text, sub.source, sub.depth = st.text, st.source, st.depth + 1
    return _run(sub, fn, name, data)


def _to_error(exc: _ExecError, text: str, source_name: str) -> GoTemplateError:
    node = exc.node
    cause = exc.root if exc.root is not None else exc.__cause__
    if node is None:
        return GoTemplateError(source_name, 0, 0, exc.msg, phase="execute", cause=cause)
    line, col = location(text, node.pos)
    context = str(node)
    detail = f"executing {go_quote(exc.tmpl)} at <{context}>: {exc.msg}"
    return GoTemplateError(source_name, line, col, detail, phase="execute", cause=cause)
