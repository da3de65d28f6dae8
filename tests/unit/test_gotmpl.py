"""The Go-syntax engine (ctemplate.language.gotmpl) against Go's own text/template.

``gotmpl_go_cases.json`` holds template texts with the output or error Go 1.27's text/template
gives for them (``missingkey=zero`` as consul-template sets it, or ``missingkey=error`` where a
case says ``"error": true``), executed with the data of :func:`go_data` and the functions of
:data:`FUNCS` below (the Go harness defines the same values). Execution errors must match Go's
text after its ``template: `` prefix; parse errors must match Go's ``name:line: message`` (we add
a column, which is removed before comparing).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ctemplate.errors import TemplateError
from ctemplate.language.gotmpl import GoTemplateError, StrMap, parse
from ctemplate.language.gotmpl import codegen as codegen_module

CASES = json.loads((Path(__file__).parent / "gotmpl_go_cases.json").read_text("utf-8"))


@dataclass(frozen=True, slots=True)
class W:
    Passing: int
    Warning: int


@dataclass(frozen=True, slots=True)
class S:
    Name: str
    Port: int
    Tags: tuple[str, ...] = ()
    Meta: dict[str, str] | None = None
    W: W | None = None


def go_data() -> dict[str, Any]:
    st = S("web", 80, ("a", "b"), {"k": "v"}, W(1, 2))
    return {
        "s": "hello",
        "i": 42,
        "neg": -7,
        "f": 1.5,
        "big": 123456789.0,
        "t": True,
        "fls": False,
        "z": 0,
        "e": "",
        "uni": "héllo",
        "nil": None,
        "strs": ["a", "b", "c"],
        "ifaces": [1, "a", None, 2.5],
        "empty": [],
        "sm": StrMap({"k": "v", "a": "b"}),
        "im": {"x": 1, "n": None, "sub": {"y": "z"}},
        "intm": StrMap({10: "ten", 2: "two", -1: "minus"}),
        "st": st,
        "sts": [st, S("db", 5432, (), {}, W(0, 0))],
        "nested": {"a": {"b": ["x", {"c": "deep"}]}},
    }


def _fail() -> str:
    raise ValueError("boom")


FUNCS: dict[str, Any] = {
    "upper": lambda s: s.upper(),
    "fail": _fail,
    "join": lambda sep, items: sep.join(items),
    "strs": lambda *a: list(a),
    "add": lambda a, b: a + b,
}


def render(text: str, *, error: bool = False, left: str = "", right: str = "") -> str:
    t = parse(text, "t", left=left or "{{", right=right or "}}", funcs=FUNCS)
    return t.execute(go_data(), FUNCS, missing_key_error=error)


def _go_message(err: str) -> str:
    return err.removeprefix("template: ")


def _ours(exc: GoTemplateError) -> str:
    text = re.sub(r" \(did you mean .*\?\)$", "", str(exc))  # our addition to Go's message
    if exc.phase == "parse":
        return re.sub(r"^(t:\d+):\d+:", r"\1:", text)
    return text


# Where we differ from Go on purpose, with what we give instead and why.
KNOWN_DIFFERENCES = {
    # Python functions are not typed like Go's: the argument reaches the function, whose own
    # exception is reported (Go checks the type first: "wrong type for value; expected string").
    # Go names the static type of dot: a map's values are interface {}. We do not carry static
    # types through range, so the error names the value's own type.
    "-{{range .}}{{.Method1 1234}}{{end}}-": (
        't:1:14: executing "t" at <.Method1>: can\'t evaluate field Method1 in type float64'
    ),
    # An empty Python list has no element type to name: []interface {} where Go says []string.
    "{{ .empty | eq (.st.Tags) }}": (
        't:1:12: executing "t" at <eq (.st.Tags)>: error calling eq: '
        "non-comparable type []: []interface {}"
    ),
    # A dict of strings is named map[string]string (what a record's dict[str, str] is in Go);
    # Go's decoded-JSON map here is a map[string]interface {}.
    "{{ eq .im.sub .st .ifaces }}": (
        't:1:3: executing "t" at <eq .im.sub .st .ifaces>: error calling eq: non-comparable '
        "types map[y:z]: map[string]string, main.S: {web 80 [a b] map[k:v] {1 2}}"
    ),
    "{{ 3 | upper }}": (
        't:1:7: executing "t" at <upper>: error calling upper: '
        "'int' object has no attribute 'upper'"
    ),
}


@pytest.mark.parametrize("codegen", [True, False], ids=["codegen", "closures"])
@pytest.mark.parametrize("case", CASES, ids=[f"{i}:{c['t'][:40]}" for i, c in enumerate(CASES)])
def test_same_as_go(case: dict[str, Any], codegen: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways of running a tree (generated Python, closures) give Go's bytes and errors."""
    monkeypatch.setattr(codegen_module, "USE_CODEGEN", codegen)
    kwargs = {
        "error": case.get("error", False),
        "left": case.get("left", ""),
        "right": case.get("right", ""),
    }
    if case["t"] in KNOWN_DIFFERENCES:
        with pytest.raises(GoTemplateError) as info:
            render(case["t"], **kwargs)
        assert str(info.value) == KNOWN_DIFFERENCES[case["t"]]
    elif "err" in case:
        with pytest.raises(GoTemplateError) as info:
            render(case["t"], **kwargs)
        assert _ours(info.value) == _go_message(case["err"])
    else:
        assert render(case["t"], **kwargs) == case["out"]


# --- beyond Go's table: the API the rest of ctemplate relies on ---------------------------------


def test_parse_error_has_column_and_did_you_mean() -> None:
    with pytest.raises(GoTemplateError) as info:
        parse('a\n  {{ prinft "%d" 1 }}', "x.ctmpl", funcs=["upper"])
    assert str(info.value) == 'x.ctmpl:2:5: function "prinft" not defined (did you mean "printf"?)'
    assert (info.value.line, info.value.col, info.value.phase) == (2, 5, "parse")
    with pytest.raises(GoTemplateError, match=r'"uper" not defined \(did you mean "upper"\?\)'):
        parse("{{ uper .x }}", "x", funcs=["upper"])
    with pytest.raises(GoTemplateError) as info:
        parse("{{ zzzzzz }}", "x", funcs=["upper"])
    assert str(info.value) == 'x:1:3: function "zzzzzz" not defined'


def test_exec_error_column_counts_bytes_as_go_does() -> None:
    with pytest.raises(GoTemplateError) as info:
        parse('é{{ index "a" 5 }}', "t").execute(None, {})
    assert str(info.value) == (
        't:1:5: executing "t" at <index "a" 5>: error calling index: index out of range: 5'
    )
    assert info.value.phase == "execute"


def test_error_inside_define_names_the_define() -> None:
    text = '{{ define "T" }}\n  {{ index "a" 3 }}{{ end }}{{ template "T" }}'
    with pytest.raises(GoTemplateError) as info:
        parse(text, "t").execute(None, {})
    assert str(info.value).startswith('t:2:5: executing "T" at <index "a" 3>:')


class Stop(TemplateError):
    """A function that stops the render on purpose (as a guard does)."""


def test_function_exception_is_wrapped_and_chained() -> None:
    def guard(x: Any) -> Any:
        raise Stop("fewer than 2 backends")

    t = parse("line1\n{{ .x | guard }}", "t", funcs=["guard"])
    with pytest.raises(GoTemplateError) as info:
        t.execute({"x": 1}, {"guard": guard})
    assert str(info.value) == (
        't:2:8: executing "t" at <guard>: error calling guard: fewer than 2 backends'
    )
    assert isinstance(info.value.__cause__, Stop)
    assert info.value.cause is info.value.__cause__


def test_check_hook_runs_on_every_iteration_and_can_stop_a_runaway() -> None:
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        if calls > 1000:
            raise Stop("budget exhausted")

    t = parse("{{ range 5 }}{{ range 3 }}x{{ end }}{{ end }}", "t")
    assert t.execute(None, {}, check=check) == "x" * 15
    assert calls == 5 + 15
    calls = 0
    with pytest.raises(Stop):
        parse("{{ range 100000000 }}x{{ end }}", "t").execute(None, {}, check=check)
    calls = 0
    recursive = '{{ define "R" }}x{{ template "R" }}{{ end }}{{ template "R" }}'
    with pytest.raises(GoTemplateError, match=r"exceeded maximum template depth \(100\)"):
        parse(recursive, "t").execute(None, {}, check=check)


def test_templates_cannot_reach_private_names_methods_or_modules() -> None:
    @dataclass(frozen=True)
    class Rec:
        Name: str

        @classmethod
        def from_api(cls, raw: Any) -> Any:
            return cls(raw)

        def Secret(self) -> str:  # a method, not listed in __go_methods__
            return "secret"

    data = {"r": Rec("a"), "os": __import__("os"), "f": print, "cls": Rec}
    for text, what in [
        ("{{ .r.__class__ }}", "__class__ in type interface {}"),
        ("{{ .r.from_api }}", "from_api in type interface {}"),
        ("{{ with .r }}{{ .Secret }}{{ end }}", "Secret in type main.Rec"),
        ("{{ .os.system }}", "system in type interface {}"),
        ("{{ .f.__globals__ }}", "__globals__ in type interface {}"),
        ("{{ .cls.Name }}", "Name in type interface {}"),
    ]:
        with pytest.raises(GoTemplateError, match=f"can't evaluate field {re.escape(what)}"):
            parse(text, "t").execute(data, {})
    assert parse("{{ .r.Name }}", "t").execute(data, {}) == "a"


def test_methods_listed_in_go_methods_are_callable() -> None:
    class Scratch:
        __go_methods__ = ("Get", "Set")

        def __init__(self) -> None:
            self.values: dict[str, Any] = {}

        def Get(self, key: str) -> Any:
            return self.values.get(key)

        def Set(self, key: str, value: Any) -> str:
            self.values[key] = value
            return ""

    text = '{{ .s.Set "k" 42 }}{{ .s.Get "k" }} {{ "v" | .s.Set "p" }}{{ .s.Get "p" }}'
    assert parse(text, "t").execute({"s": Scratch()}, {}) == "42 v"
    with pytest.raises(GoTemplateError, match="can't evaluate field values"):
        parse("{{ .s.values }}", "t").execute({"s": Scratch()}, {})


def test_struct_map_fields_annotated_str_give_empty_string_for_missing_keys() -> None:
    data = {"st": S("web", 80, (), {"k": "v"}), "m": {"k": "v"}}
    t = parse("[{{ .st.Meta.k }}|{{ .st.Meta.zz }}|{{ .m.zz }}]", "t")
    assert t.execute(data, {}) == "[v||<no value>]"


def test_parse_tree_is_public_with_positions() -> None:
    from ctemplate.language.gotmpl import nodes

    text = (
        'a{{ define "T" }}t{{ end }}\n{{ range $i, $e := .x }}{{ $e.Name | printf "%s" }}{{ end }}'
    )
    t = parse(text, "t")
    assert set(t.trees) == {"t", "T"}
    root = t.lookup("t")
    assert root is not None and t.lookup("nope") is None
    rng = root.nodes[-1]
    assert isinstance(rng, nodes.RangeNode)
    assert (rng.line, [str(v) for v in rng.pipe.decl]) == (2, ["$i", "$e"])
    action = rng.list.nodes[0]
    assert isinstance(action, nodes.ActionNode)
    assert str(action) == '{{$e.Name | printf "%s"}}'
    cmd = action.pipe.cmds[1]
    assert isinstance(cmd.args[0], nodes.IdentifierNode) and cmd.args[0].name == "printf"
    assert str(t.lookup("T")) == "t"


def test_nil_data_and_missing_key_error() -> None:
    t = parse("{{ .a }}|{{ .a.b }}|{{ $ }}", "t")
    assert t.execute(None, {}) == "<no value>|<no value>|<no value>"
    with pytest.raises(GoTemplateError, match='nil data; no entry for key "a"'):
        t.execute(None, {}, missing_key_error=True)


def test_funcs_shadow_builtins_and_unknown_at_execute() -> None:
    t = parse("{{ len .x }}", "t", funcs=["len"])
    assert t.execute({"x": "abc"}, {"len": lambda x: "mine"}) == "mine"
    t = parse("{{ upper .x }}", "t", funcs=["upper"])
    with pytest.raises(GoTemplateError, match='"upper" is not a defined function'):
        t.execute({"x": "a"}, {})


def test_comments_kept_in_tree_on_request_and_ignored_by_execution() -> None:
    from ctemplate.language.gotmpl import nodes

    text = "a {{- /* note */ -}} b{{/* two\nlines */}}"
    plain = parse(text, "t")
    assert [type(n).__name__ for n in plain.trees["t"].nodes] == ["TextNode", "TextNode"]
    kept = parse(text, "t", comments=True)
    comments = [n for n in kept.trees["t"].nodes if isinstance(n, nodes.CommentNode)]
    assert [str(c) for c in comments] == ["{{/* note */}}", "{{/* two\nlines */}}"]
    assert [c.line for c in comments] == [1, 1]
    assert kept.execute(None, {}) == plain.execute(None, {}) == "ab"


def test_nesting_deeper_than_python_blocks_falls_back_to_closures() -> None:
    depth = 25  # Python's compiler refuses more than 20 nested blocks
    data: Any = "x"
    for _ in range(depth):
        data = [data]
    text = "{{ range . }}" * depth + "{{ . }}" + "{{ end }}" * depth
    assert parse(text, "t").execute(data, {}) == "x"
    text = "{{ if .t }}" * depth + "{{ .v }}" + "{{ end }}" * depth
    assert parse(text, "t").execute({"t": True, "v": 7}, {}) == "7"


def test_execute_template_runs_a_define_of_the_same_set_from_a_function() -> None:
    from ctemplate.language.gotmpl import execute_template

    def execute(name: str, *data: Any) -> str:  # consul-template's executeTemplate
        return execute_template(name, data[0] if data else None)

    funcs = {"executeTemplate": execute, "guard": lambda: (_ for _ in ()).throw(Stop("stop"))}
    text = (
        '{{ define "custom" }}[{{ . }}{{ upper "x" }}]{{ end }}'
        '{{ $v := 1 }}{{ executeTemplate "custom" }}{{ executeTemplate "custom" "dot" | len }}'
    )
    funcs["upper"] = lambda s: s.upper()
    assert parse(text, "t", funcs=funcs).execute(None, funcs) == "[<no value>X]6"

    t = parse(
        '{{ define "bad" }}\n{{ guard }}{{ end }}{{ executeTemplate "bad" }}', "t", funcs=funcs
    )
    with pytest.raises(GoTemplateError) as info:
        t.execute(None, funcs)
    assert str(info.value) == (
        't:2:23: executing "t" at <executeTemplate "bad">: error calling executeTemplate: '
        't:2:3: executing "bad" at <guard>: error calling guard: stop'
    )
    assert isinstance(info.value.cause, Stop)  # the root cause, through the nesting

    loop = parse(
        '{{ define "L" }}{{ executeTemplate "L" }}{{ end }}{{ template "L" }}', "t", funcs=funcs
    )
    with pytest.raises(GoTemplateError, match=r"exceeded maximum template depth \(100\)"):
        loop.execute(None, funcs)
    with pytest.raises(GoTemplateError, match='no template "nope" associated with template "t"'):
        parse('{{ executeTemplate "nope" }}', "t", funcs=funcs).execute(None, funcs)
    with pytest.raises(RuntimeError):
        execute_template("custom")
