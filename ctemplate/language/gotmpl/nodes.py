"""The parse tree of a Go template (Go's ``text/template/parse`` node types).

Every node has ``pos`` (offset of its first character in the source text) and ``line`` (1-based).
``str(node)`` prints the node back the way Go's ``Node.String()`` does (single spaces, literals
as written, parentheses kept); execution errors quote it in ``at <...>``.

The tree is public: ``ctemplate convert`` walks it to write the Jinja form of a template.

    ListNode        a sequence of nodes (a template body, a branch)
    TextNode        text copied verbatim
    ActionNode      {{pipeline}}: its value is printed unless it declares variables
    IfNode / WithNode / RangeNode   {{if/with/range pipeline}} list {{else}} else_list {{end}}
                    (``else if`` / ``else with`` arrive as an else_list holding one If/WithNode)
    BreakNode / ContinueNode        {{break}} / {{continue}} inside a range
    TemplateNode    {{template "name" pipeline}} (a {{block}} is a define plus a TemplateNode)
    PipeNode        [decl :=|=] command | command ...
    CommandNode     operand operand ... (the first is the function, field or value)
    operands: IdentifierNode (a function name), FieldNode (.A.B), VariableNode ($x.A),
              ChainNode ((pipe).A or term.A), DotNode, NilNode, BoolNode, NumberNode, StringNode,
              PipeNode (parenthesised)
"""

from __future__ import annotations

from collections.abc import Sequence

from .lex import go_quote

__all__ = [
    "ActionNode",
    "BoolNode",
    "BranchNode",
    "BreakNode",
    "ChainNode",
    "CommandNode",
    "CommentNode",
    "ContinueNode",
    "DotNode",
    "FieldNode",
    "IdentifierNode",
    "IfNode",
    "ListNode",
    "NilNode",
    "Node",
    "NumberNode",
    "PipeNode",
    "RangeNode",
    "StringNode",
    "TemplateNode",
    "TextNode",
    "VariableNode",
    "WithNode",
]


class Node:
    """Base class: a position in the source."""

    __slots__ = ("line", "pos")

    def __init__(self, pos: int, line: int) -> None:
        self.pos = pos
        self.line = line

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r} @{self.line})"


class ListNode(Node):
    __slots__ = ("nodes",)

    def __init__(self, pos: int, line: int, nodes: list[Node] | None = None) -> None:
        super().__init__(pos, line)
        self.nodes: list[Node] = nodes if nodes is not None else []

    def __str__(self) -> str:
        return "".join(str(n) for n in self.nodes)


class TextNode(Node):
    __slots__ = ("text",)

    def __init__(self, pos: int, line: int, text: str) -> None:
        super().__init__(pos, line)
        self.text = text

    def __str__(self) -> str:
        return self.text


class CommentNode(Node):
    __slots__ = ("text",)

    def __init__(self, pos: int, line: int, text: str) -> None:
        super().__init__(pos, line)
        self.text = text

    def __str__(self) -> str:
        return "{{" + self.text + "}}"


class VariableNode(Node):
    """``$x`` or ``$x.Field.Chain``: ``ident[0]`` is the variable (with its ``$``)."""

    __slots__ = ("ident",)

    def __init__(self, pos: int, line: int, ident: list[str]) -> None:
        super().__init__(pos, line)
        self.ident = ident

    def __str__(self) -> str:
        return ".".join(self.ident)


class CommandNode(Node):
    __slots__ = ("args",)

    def __init__(self, pos: int, line: int, args: list[Node] | None = None) -> None:
        super().__init__(pos, line)
        self.args: list[Node] = args if args is not None else []

    def __str__(self) -> str:
        parts = []
        for arg in self.args:
            parts.append(f"({arg})" if isinstance(arg, PipeNode) else str(arg))
        return " ".join(parts)


class PipeNode(Node):
    """``decl := cmd | cmd``; ``is_assign`` for ``=``."""

    __slots__ = ("cmds", "decl", "is_assign")

    def __init__(self, pos: int, line: int) -> None:
        super().__init__(pos, line)
        self.is_assign = False
        self.decl: list[VariableNode] = []
        self.cmds: list[CommandNode] = []

    def __str__(self) -> str:
        s = ""
        if self.decl:
            s = ", ".join(str(v) for v in self.decl) + (" = " if self.is_assign else " := ")
        return s + " | ".join(str(c) for c in self.cmds)


class ActionNode(Node):
    __slots__ = ("pipe",)

    def __init__(self, pos: int, line: int, pipe: PipeNode) -> None:
        super().__init__(pos, line)
        self.pipe = pipe

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


class IdentifierNode(Node):
    """A function name."""

    __slots__ = ("name",)

    def __init__(self, pos: int, line: int, name: str) -> None:
        super().__init__(pos, line)
        self.name = name

    def __str__(self) -> str:
        return self.name


class DotNode(Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "."


class NilNode(Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "nil"


class FieldNode(Node):
    """``.A.B``: ``ident`` is ``["A", "B"]``."""

    __slots__ = ("ident",)

    def __init__(self, pos: int, line: int, ident: list[str]) -> None:
        super().__init__(pos, line)
        self.ident = ident

    def __str__(self) -> str:
        return "".join("." + i for i in self.ident)


class ChainNode(Node):
    """``(pipe).A.B`` (or another term followed by fields): ``node`` then ``fields``."""

    __slots__ = ("fields", "node")

    def __init__(self, pos: int, line: int, node: Node, fields: Sequence[str] = ()) -> None:
        super().__init__(pos, line)
        self.node = node
        self.fields = list(fields)

    def __str__(self) -> str:
        s = f"({self.node})" if isinstance(self.node, PipeNode) else str(self.node)
        return s + "".join("." + f for f in self.fields)


class BoolNode(Node):
    __slots__ = ("value",)

    def __init__(self, pos: int, line: int, value: bool) -> None:
        super().__init__(pos, line)
        self.value = value

    def __str__(self) -> str:
        return "true" if self.value else "false"


class NumberNode(Node):
    """A numeric literal as Go reads it: which kinds it fits, and its value in each.

    ``text`` is the literal as written (``0x1F``, ``'a'``, ``1_000``). Go treats literals as
    untyped constants; printed or passed on, one is an int when written as an integer (or a
    rune), a float64 when it has ``.eEpP`` (hex integers aside), a complex for ``...i``.
    """

    __slots__ = (
        "complex_value",
        "float_value",
        "int_value",
        "is_complex",
        "is_float",
        "is_int",
        "is_uint",
        "text",
    )

    def __init__(self, pos: int, line: int, text: str) -> None:
        super().__init__(pos, line)
        self.text = text
        self.is_int = self.is_uint = self.is_float = self.is_complex = False
        self.int_value = 0
        self.float_value = 0.0
        self.complex_value = 0j

    def __str__(self) -> str:
        return self.text


class StringNode(Node):
    """A quoted literal: ``quoted`` as written, ``text`` its value."""

    __slots__ = ("quoted", "text")

    def __init__(self, pos: int, line: int, quoted: str, text: str) -> None:
        super().__init__(pos, line)
        self.quoted = quoted
        self.text = text

    def __str__(self) -> str:
        return self.quoted


class BranchNode(Node):
    """Common shape of if / range / with: ``pipe``, ``list``, optional ``else_list``."""

    __slots__ = ("else_list", "list", "pipe")
    keyword = ""

    def __init__(
        self, pos: int, line: int, pipe: PipeNode, lst: ListNode, else_list: ListNode | None
    ) -> None:
        super().__init__(pos, line)
        self.pipe = pipe
        self.list = lst
        self.else_list = else_list

    def __str__(self) -> str:
        s = "{{" + self.keyword + " " + str(self.pipe) + "}}" + str(self.list)
        if self.else_list is not None:
            s += "{{else}}" + str(self.else_list)
        return s + "{{end}}"


class IfNode(BranchNode):
    __slots__ = ()
    keyword = "if"


class RangeNode(BranchNode):
    __slots__ = ()
    keyword = "range"


class WithNode(BranchNode):
    __slots__ = ()
    keyword = "with"


class BreakNode(Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "{{break}}"


class ContinueNode(Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "{{continue}}"


class TemplateNode(Node):
    """``{{template "name" pipe}}``; ``pipe`` is None without an argument."""

    __slots__ = ("name", "pipe")

    def __init__(self, pos: int, line: int, name: str, pipe: PipeNode | None) -> None:
        super().__init__(pos, line)
        self.name = name
        self.pipe = pipe

    def __str__(self) -> str:
        if self.pipe is None:
            return "{{template " + go_quote(self.name) + "}}"
        return "{{template " + go_quote(self.name) + " " + str(self.pipe) + "}}"


class EndNode(Node):
    """Internal to the parser: an ``{{end}}``."""

    __slots__ = ()

    def __str__(self) -> str:
        return "{{end}}"


class ElseNode(Node):
    """Internal to the parser: an ``{{else}}``."""

    __slots__ = ()

    def __str__(self) -> str:
        return "{{else}}"
