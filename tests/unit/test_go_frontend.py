"""The Go-syntax front end (language/go.py): the registry bound subject-last, consul-template's
Go-only call forms, the template options, errors, and the choice of front end by syntax."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctemplate.config import Config, TemplateConfig
from ctemplate.consul.queries import HealthServiceQuery
from ctemplate.errors import TemplateError
from ctemplate.language.frontends import TemplateEngines
from ctemplate.language.go import GoCompiledTemplate

WEB = HealthServiceQuery(name="web")
DATA = {
    str(WEB): WEB.decode(
        [
            {
                "Node": {"Node": "n1", "Address": "10.0.0.1"},
                "Service": {"ID": "w1", "Service": "web", "Port": 80, "Tags": ["b", "a"]},
                "Checks": [],
            }
        ]
    )
}


def _load(text: str, tmp_path: Path, config: Config | None = None, **kw: object) -> object:
    src = tmp_path / "t.ctmpl"
    src.write_text(text)
    return TemplateEngines(config or Config()).load(
        TemplateConfig(destination="o", source=str(src), **kw)  # type: ignore[arg-type]
    )


def _run(text: str, tmp_path: Path, data: dict[str, object] | None = None, **kw: object) -> str:
    compiled = _load(text, tmp_path, **kw)
    assert isinstance(compiled, GoCompiledTemplate)
    execution = compiled.execute(DATA if data is None else data)
    if execution.error is not None:
        return f"ERROR {execution.error}"
    assert execution.text is not None
    return execution.text


@pytest.mark.parametrize(
    ("text", "out"),
    [
        ("{{ 10 | subtract 3 }} {{ subtract 3 10 }} {{ 10 | divide 2 }}", "7 7 5"),
        ('{{ "a,b" | split "," }} {{ split "," "a,b" | join ";" }}', "[a b] a;b"),
        (
            '{{ range service "web" }}{{ .Tags | contains "a" }} {{ in .Tags "b" }}{{ end }}',
            "true true",
        ),
        ('{{ hmacSHA256Hex "somemessage" "somekey" | printf "%.8s" }}', "6116e95f"),
        ("{{ range loop 2 5 }}{{ . }}{{ end }}", "234"),
        (
            '{{ "a-b" | replaceAll "-" "+" }} {{ "x" | regexMatch "^x$" }} '
            '{{ "  y " | trimSpace }}',
            "a+b true y",
        ),
        (
            '{{ $d := parseJSON "{\\"a\\":1}" }}'
            '{{ mergeMap $d (parseJSON "{\\"a\\":2,\\"b\\":3}") }}',
            "map[a:1 b:3]",
        ),
        (
            '{{ range service "web" }}{{ .Node }} {{ .Address }}:{{ .Port }} {{ .Tags }}{{ end }}',
            "n1 10.0.0.1:80 [a b]",
        ),
    ],
)
def test_functions_in_go_form(text: str, out: str, tmp_path: Path) -> None:
    assert _run(text, tmp_path) == out


def test_write_to_file_in_go_argument_order(tmp_path: Path) -> None:
    target = tmp_path / "out" / "f.txt"
    text = f'{{{{ "one" | writeToFile "{target}" "" "" "0600" }}}}'
    text += f'{{{{ "two" | writeToFile "{target}" "" "" "0600" "append,newline" }}}}'
    assert _run(text, tmp_path) == ""
    assert target.read_text() == "onetwo\n"
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_execute_to_discover(tmp_path: Path) -> None:
    compiled = _load('{{ range service "web" }}{{ .Address }}{{ end }}{{ key "k" }}', tmp_path)
    execution = compiled.execute({})  # type: ignore[attr-defined]
    assert execution.text is None and execution.error is None
    assert sorted(execution.missing) == ["health.service(web|passing)", "kv.block(k)"]


def test_denylist_sandbox_missing_key_and_delimiters(tmp_path: Path) -> None:
    assert _run('{{ "1" | plugin "echo" }}', tmp_path, function_denylist=("plug*",)) == (
        f'ERROR {tmp_path}/t.ctmpl:1:9: executing "{tmp_path}/t.ctmpl" at <plugin "echo">: '
        "error calling plugin: plugin is disabled by function_denylist (pattern 'plug*')"
    )
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    got = _run(f'{{{{ file "{tmp_path}/secret" }}}}', tmp_path, sandbox_path=str(sandbox))
    assert "outside the sandbox" in got and got.startswith(f"ERROR {tmp_path}/t.ctmpl:1:3:")
    assert _run("{{ .Data.Foo }}", tmp_path) == "<no value>"
    assert _run("{{ .Data.Foo }}", tmp_path, error_on_missing_key=True).startswith(
        f"ERROR {tmp_path}/t.ctmpl:1:"
    )
    assert _run("[[ 1 | add 2 ]] {{ x }}", tmp_path, left_delimiter="[[", right_delimiter="]]") == (
        "3 {{ x }}"
    )
    compiled = _load(
        "<% 2 %>", tmp_path, Config(default_left_delimiter="<%", default_right_delimiter="%>")
    )
    assert compiled.execute({}).text == "2"  # type: ignore[attr-defined]


def test_errors_name_file_line_column_and_suggest(tmp_path: Path) -> None:
    assert _run('{{ range service "web" }}\n  {{ .Adress }}{{ end }}', tmp_path) == (
        f'ERROR {tmp_path}/t.ctmpl:2:5: executing "{tmp_path}/t.ctmpl" at <.Adress>: '
        'can\'t evaluate field Adress in type main.HealthService (did you mean "Address"?)'
    )
    with pytest.raises(TemplateError) as info:
        _load('x\n{{ length "a" }}', tmp_path)
    assert str(info.value) == (
        f'{tmp_path}/t.ctmpl:2:3: function "length" not defined (length is Jinja; in Go syntax '
        "write len x)"
    )
    with pytest.raises(TemplateError) as info:
        _load("{{ printff 1 }}", tmp_path)
    assert str(info.value).endswith('function "printff" not defined (did you mean "printf"?)')


def test_front_end_by_syntax(tmp_path: Path) -> None:
    engines = TemplateEngines(Config())
    (tmp_path / "a.ctmpl").write_text("{{ 1 }}")
    (tmp_path / "a.j2").write_text("{{ 1 + 1 }}")
    go = engines.load(TemplateConfig(destination="o", source=str(tmp_path / "a.ctmpl")))
    jinja = engines.load(TemplateConfig(destination="o", source=str(tmp_path / "a.j2")))
    forced = engines.load(TemplateConfig(destination="o", contents="{{ 1 }}", syntax="go"))
    assert (go.syntax, jinja.syntax, forced.syntax) == ("go", "jinja", "go")
    assert [t.execute({}).text for t in (go, jinja, forced)] == ["1", "2", "1"]
    with pytest.raises(TemplateError) as info:
        engines.load(TemplateConfig(destination="o", source=str(tmp_path / "no.ctmpl"), origin="x"))
    assert str(info.value) == f"x: source '{tmp_path}/no.ctmpl' does not exist; check the path"
    assert os.path.exists(tmp_path / "a.ctmpl")


def test_execute_template_and_its_depth_limit(tmp_path: Path) -> None:
    assert _run('{{ define "a" }}<{{ . }}>{{ end }}{{ executeTemplate "a" 3 }}', tmp_path) == "<3>"
    got = _run(
        '{{ define "a" }}{{ executeTemplate "a" }}{{ end }}{{ executeTemplate "a" }}', tmp_path
    )
    assert got == (
        f'ERROR {tmp_path}/t.ctmpl:1:53: executing "{tmp_path}/t.ctmpl" at <executeTemplate "a">:'
        " error calling executeTemplate: exceeded maximum template depth (100)"
    )


def test_jinja_in_a_go_file_says_which_syntax_to_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hint = (
        '(this looks like Jinja; set syntax = "jinja" in its template block, or name the file '
        ".j2 (.ctmpl, .tmpl, .tpl and .gotmpl are read as Go templates))"
    )
    with pytest.raises(TemplateError) as info:
        _load('{% for s in service("web") %}\n{{ s.Address }}\n{% endfor %}\n', tmp_path)
    assert str(info.value).startswith(f"{tmp_path}/t.ctmpl:2:")
    assert str(info.value).endswith(hint)
    # Statements alone parse as Go text: loaded, with a warning.
    _load("{% if true %}x{% endif %}\n", tmp_path)
    assert "contains Jinja statements" in caplog.text


def test_execute_template_can_be_denied(tmp_path: Path) -> None:
    got = _run(
        '{{ define "a" }}x{{ end }}{{ executeTemplate "a" }}',
        tmp_path,
        function_denylist=("exec*",),
    )
    assert got.endswith(
        "error calling executeTemplate: executeTemplate is disabled by function_denylist "
        "(pattern 'exec*')"
    )
