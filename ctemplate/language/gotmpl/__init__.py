"""Go's text/template in pure Python: consul-template's templates, parsed and run as Go does.

API (used by :mod:`ctemplate.language.go` and ``ctemplate convert``)::

    t = parse(text, "web.ctmpl", left="{{", right="}}", funcs=names)   # GoTemplateError
    out = t.execute(data, funcs, missing_key_error=False, check=None)   # GoTemplateError

* :func:`parse` reads the text and every ``{{define}}``/``{{block}}`` in it. Function names
  are checked at parse time, as in Go (``function "x" not defined``, with a did-you-mean among
  ``funcs`` and the builtins), so the set of names is passed in.
* :meth:`GoTemplate.execute` runs the template named ``name`` with ``data`` as ``.`` and ``$``
  (None is Go's nil data). ``funcs`` maps names to callables; a name also shadows a builtin of
  the same name, as in Go. ``missing_key_error`` is ``missingkey=error``; without it a missing
  key behaves as consul-template's ``missingkey=zero``. ``check`` (optional) is called on every
  range iteration and every ``{{template}}`` call (the only ways output can grow without bound),
  so a budget can stop a runaway template by raising.
* Errors: :class:`GoTemplateError`, ``str()`` ``name:line:col: message`` (Go's byte column,
  0-based); execution errors read ``name:line:col: executing "T" at <node>: what``. An exception
  raised by a function is wrapped as ``error calling NAME: its message`` and chained
  (``__cause__``, also ``.cause``), so a deliberate stop keeps its type one level down.
* :func:`execute_template` (``name, data=None``), called by a template function while a
  template runs, executes another template of the same set with the same functions and
  options and returns its output: consul-template's ``executeTemplate``.
* The parse tree is public: :attr:`GoTemplate.trees` maps each template name to its
  :class:`.nodes.ListNode`; :meth:`GoTemplate.lookup` returns one.

Data model: dicts are maps (``.key``, sorted for ``range`` and printing; a missing key is nil as
in ``map[string]interface{}``, but ``""`` in a :class:`StrMap` (any dict subclass with
``go_zero = ""``), as in ``map[string]string``; a dataclass field annotated ``dict[str, str]``
reads as a StrMap), lists/tuples slices,
dataclass instances structs (public declared fields only; ``%v`` prints ``{a b}``, ``%+v``
``{Name:a Port:1}``), bool/int/float/complex/str the basic kinds, None nil. A method of a value
is callable from a template only if its class lists the name in ``__go_methods__``; nothing else
that is callable (modules, classes, functions, bound methods) is reachable, since templates are
untrusted input.

Speed: each template is compiled once (on its first execution) to one Python function
(:mod:`.codegen`), like Jinja does, with the closures of :mod:`.exec` for the rarer nodes; a tree
nested deeper than Python's compiler accepts runs on the closures alone. The workshop's upstream
over 300 instances renders in about the time of its Jinja twin.

Faithfulness: ``tests/unit/gotmpl_go_cases.json`` holds ~1,070 templates (our own, plus the
templates of Go's ``exec_test.go`` and the literal ``printf`` cases of ``fmt_test.go``) with the
output or error text Go 1.27's text/template gives on the same data; both execution paths must
reproduce them. Known differences, each for a reason:

* Python functions are untyped: an argument of the wrong type reaches the function and its own
  exception is reported (``error calling f: ...``), where Go says ``wrong type for value``.
  ``wrong number of args`` is checked from the function's signature (a ``*args`` wrapper that
  sets ``__signature__`` or ``__wrapped__`` gets it too).
* Static types are not tracked: an error names the value's own type (``in type float64``), or
  ``interface {}`` for a value just read from a map, where Go names the declared type. Type
  names (errors, ``%T``, ``%!(EXTRA ...)``) are read from contents: ``[]string``, ``[]main.S``
  and ``map[string]string`` when every element is a string or the same record, else
  ``interface {}`` (so an empty list is ``[]interface {}``, a decoded JSON map of strings
  ``map[string]string``). Random templates compared with Go differ only in these names.
* A missing key of a plain dict is nil (prints ``<no value>``), as in ``map[string]interface{}``;
  see :class:`StrMap` above for ``map[string]string``.
* No pointers: a record inside a slice or struct prints as ``{...}``, where Go prints an
  address; ``%T``/``%#v`` name a record ``main.Class`` unless the class sets ``__go_type__``.
* Slicing a string through a multi-byte character gives U+FFFD for the stray bytes (the output
  is text); Go copies the raw bytes.
* ``{{template}}`` nests at most :data:`.exec.MAX_DEPTH` (100) deep, not 100,000.
* ``range`` over a Python iterator behaves like Go's over a channel; over a function (Go's
  iter.Seq) is not supported. ``call`` only calls functions given to ``execute``.
* Integers are one kind (no int64/uint distinction); complex literals (``1+2i``) work as Go's.

Modules: :mod:`.lex` (tokens), :mod:`.parse` (trees), :mod:`.nodes` (the tree),
:mod:`.exec` (compiled closures), :mod:`.builtins` (and, or, eq, index, ...), :mod:`.fmt` (Go's
fmt: Sprint, Sprintf with every verb and flag).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from . import nodes
from .codegen import compile_trees
from .errors import GoTemplateError
from .exec import Stmt, StrMap, attribute_allowed, execute_template, run
from .fmt import NO_VALUE, sprint, sprintf, sprintln
from .parse import BUILTINS, parse_trees

__all__ = [
    "BUILTINS",
    "NO_VALUE",
    "GoTemplate",
    "GoTemplateError",
    "StrMap",
    "attribute_allowed",
    "execute_template",
    "nodes",
    "parse",
    "sprint",
    "sprintf",
    "sprintln",
]


class GoTemplate:
    """A parsed template and the templates it defines; execute it any number of times."""

    __slots__ = ("_compiled", "left", "name", "right", "text", "trees")

    def __init__(
        self, name: str, text: str, trees: dict[str, nodes.ListNode], left: str, right: str
    ) -> None:
        self.name = name
        self.text = text
        self.trees = trees
        self.left = left
        self.right = right
        self._compiled: dict[str, Stmt] | None = None

    @property
    def root(self) -> nodes.ListNode | None:
        """The tree of the text itself (outside any define)."""
        return self.trees.get(self.name)

    def lookup(self, name: str) -> nodes.ListNode | None:
        """The tree of template ``name`` (a define, a block, or the text itself), or None."""
        return self.trees.get(name)

    def compile(self) -> dict[str, Stmt]:
        """Compile every template of the set, once (the first :meth:`execute` does it if this
        was not called before)."""
        if self._compiled is None:
            self._compiled = compile_trees(self.trees)
        return self._compiled

    def execute(
        self,
        data: Any,
        funcs: Mapping[str, Callable[..., Any]],
        *,
        missing_key_error: bool = False,
        check: Callable[[], None] | None = None,
        template: str | None = None,
    ) -> str:
        """Run the template (or the defined ``template``) and return its output."""
        compiled = self.compile()
        return run(
            compiled,
            self.text,
            self.name,
            self.name if template is None else template,
            data,
            funcs,
            missing_key_error=missing_key_error,
            check=check,
        )


def parse(
    text: str,
    name: str,
    *,
    left: str = "{{",
    right: str = "}}",
    funcs: Collection[str] = (),
    comments: bool = False,
) -> GoTemplate:
    """Parse ``text`` (and its defines); GoTemplateError on a syntax error.

    ``comments=True`` keeps ``{{/* */}}`` comments in the tree as CommentNodes (Go's
    ParseComments mode), for tools that print the template back; execution ignores them.
    """
    left = left or "{{"
    right = right or "}}"
    trees = parse_trees(text, name, left=left, right=right, funcs=funcs, comments=comments)
    return GoTemplate(name, text, trees, left, right)
