"""``ctemplate convert``: the Jinja it writes renders the Go template's bytes, and what it cannot
express is reported by line, left as a marker, and makes the command exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctemplate.cli import main
from ctemplate.config import Config, TemplateConfig
from ctemplate.language.convert import convert_text
from ctemplate.language.frontends import TemplateEngines

ENGINES = TemplateEngines(Config())


def _render(text: str, syntax: str) -> str:
    compiled = ENGINES.load(TemplateConfig(destination="o", contents=text, syntax=syntax))  # type: ignore[arg-type]
    execution = compiled.execute({})
    assert execution.error is None, execution.error
    assert execution.text is not None
    return execution.text


@pytest.mark.parametrize(
    "go",
    [
        "a {\n{{ range loop 3 }}\n    s {{ . }};{{ end }}\n}\n",
        "  {{ if eq 1 1 }}\n  yes\n  {{ else }}\n  no\n  {{ end }}\nend\n",
        '{{ $n := 0 }}{{ range $i, $e := split "," "a,b,c" }}{{ $n = $i }}{{ $e }}{{ end }}'
        " last={{ $n }}\n",
        '{{- range $k, $v := "b:2,a:1" | splitToMap "," ":" }}\n{{ $k }}={{ $v }}\n{{- end }}\n',
        '{{ with $x := "v" }}[{{ . }}{{ $x }}]{{ else }}none{{ end }}{{ with "" }}x{{ else }}'
        "empty{{ end }}\n",
        '{{ 10 | subtract 3 }} {{ "a,b" | split "," }} {{ "d" | toUpper }}\n',
        '{{ printf "%s:%d" "a" 3 }} {{ len "abc" }} {{ index (split "," "x,y") 1 }} '
        "{{ not true }} {{ and 1 0 }} {{ or 0 2 }}\n",
        'text with {{ "{{" }} and {% raw %} and {# #} inside {\n{{ if true }}x{{ end }}\n',
        "{{/* a comment */}}\n  {{- /* trimmed */ -}}\n  kept\n",
        "{{ range $i := loop 5 }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ if eq $i 3 }}"
        "{{ break }}{{ end }}{{ $i }}{{ end }}\n",
        '{{ scratch.Set "a" "2" }}{{ scratch.Get "a" }} {{ scratch.Key "a" }}\n',
        '{{ "a\U0001f680 b" | toUpper }} {{ "a,b,c" | split "," | join ";" }}\n',
    ],
)
def test_converted_jinja_renders_the_same_bytes(go: str) -> None:
    result = convert_text(go, "t.ctmpl")
    assert result.problems == []
    assert _render(result.text, "jinja") == _render(go, "go")


def test_line_tags_keep_go_whitespace_with_plus_markers() -> None:
    go = 'upstream {\n{{range service "web"}}\n    server {{.Address}};{{end}}\n}\n'
    assert convert_text(go, "t.ctmpl").text == (
        'upstream {\n{% for s in service("web") +%}\n    server {{ s.Address }};{% endfor +%}\n}\n'
    )


def test_unconvertible_parts_are_markers_with_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "t.ctmpl"
    src.write_text('ok\n{{ printf "%v" 1 }}\n{{ urlquery "a b" }}\n')
    out = tmp_path / "t.j2"
    assert main(["convert", str(src), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"{src}:2: not converted: printf verbs without a Jinja equivalent (%v %q %t ...)\n"
        f"{src}:3: not converted: urlquery (Go's formatting has no exact Jinja form)\n"
    )
    text = out.read_text()
    assert text.startswith("ok\n{# convert: line 2: printf verbs")
    assert '{{printf "%v" 1}}' in text
    # The output still compiles as Jinja: the markers are comments.
    assert _render(text, "jinja") == "ok\n\n\n"


def test_convert_to_stdout_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "t.ctmpl"
    src.write_text('{{ key "a" }}\n')
    assert main(["convert", str(src)]) == 0
    assert capsys.readouterr().out == '{{ key("a") }}\n'
    src.write_text("{{ range }}\n")
    assert main(["convert", str(src)]) == 14
    assert capsys.readouterr().err.startswith(f"ctemplate: error: convert: {src}:1:")
    assert main(["convert"]) == 13
    assert main(["convert", str(tmp_path / "missing.ctmpl")]) == 14


@pytest.mark.parametrize(
    "go",
    [
        '{{ define "row" }}<{{ . }}>{{ end }}a {{ template "row" 1 }}{{ template "row" "x" }}\n',
        '{{ define "n" }}\n  {{ $ }} in {{ . | toUpper }}\n{{ end }}{{ range split "," "a,b" }}'
        '{{ template "n" . }}{{ end }}end\n',
        '{{ block "b" "dflt" }}[{{ . }}]{{ end }}\n{{ template "b" "x" }}\n',
    ],
)
def test_defines_become_macros(go: str) -> None:
    result = convert_text(go, "t.ctmpl")
    assert result.problems == []
    assert "{% macro tmpl_" in result.text
    assert _render(result.text, "jinja") == _render(go, "go")


# consul-template's own template cases that need no data (tests/data/ct_cases.json): the Go text
# converted must render the bytes the Go text renders. Those convert reports instead, and why:
CT_NOT_CONVERTED = {
    "err_missing_keys__false": "'.' is nil at the top",
    "helper_explodemap": "printing a map",
    "helper_parseJSON": "printing a parsed value",
    "helper_parseYAML": "printing a parsed value",
    "helper_parseYAMLv2": "printing a parsed value",
    "helper_parseYAMLnested": "printing a parsed value",
    "helper_splitToMap": "printing a map",
    "scratch.MapSet": "printing a list",
    "scratch.MapSetX": "printing a list",
}


def _ct_cases() -> list[dict[str, object]]:
    import ct_cases

    return [
        c
        for c in ct_cases.in_scope()
        if c["kind"] == "render"
        and not c.get("seed")
        and not c.get("env")
        and not c.get("expected_from_agent")
        and c["name"] not in ct_cases.EXCEPTIONS
        and c["name"] != "helper_plugin"  # runs a program; covered by the integration test
    ]


@pytest.mark.parametrize("case", _ct_cases(), ids=lambda c: str(c["name"]))
def test_consul_template_cases_convert(case: dict[str, object]) -> None:
    go = str(case["template"])
    result = convert_text(go, "t.ctmpl")
    if case["name"] in CT_NOT_CONVERTED:
        assert result.problems, "converted now: drop it from CT_NOT_CONVERTED"
        assert CT_NOT_CONVERTED[str(case["name"])] in str(result.problems[0])
        return
    assert result.problems == []
    assert _render(result.text, "jinja") == _render(go, "go")
