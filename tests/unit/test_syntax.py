"""Which syntax a template is read in (``syntax``, the extension, ``-template-syntax``), Jinja's
per-template whitespace options, and the hints a Jinja template gets for Go syntax."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctemplate.config import Config, TemplateConfig, load_config, parse_flags
from ctemplate.errors import ConfigError, TemplateError
from ctemplate.language.jinja import TemplateEngine


def _config(tmp_path: Path, body: str) -> Config:
    path = tmp_path / "ct.hcl"
    path.write_text(body)
    return load_config(parse_flags(["-config", str(path)]), {})


@pytest.mark.parametrize(
    ("source", "syntax"),
    [
        ("a.ctmpl", "go"),
        ("a.tmpl", "go"),
        ("a.tpl", "go"),
        ("a.gotmpl", "go"),
        ("dir/A.CTMPL", "go"),
        ("a.j2", "jinja"),
        ("a.jinja", "jinja"),
        ("a.conf", "jinja"),
        ("ctmpl", "jinja"),
    ],
)
def test_syntax_by_extension(source: str, syntax: str) -> None:
    assert TemplateConfig(destination="o", source=source).template_syntax == syntax


def test_contents_default_to_jinja_and_syntax_wins(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        'template {\n  contents = "x"\n  destination = "a"\n}\n'
        'template {\n  contents = "x"\n  destination = "b"\n  syntax = "go"\n}\n'
        'template {\n  source = "t.ctmpl"\n  destination = "c"\n  syntax = "Jinja"\n}\n'
        'template {\n  source = "t.j2"\n  destination = "d"\n  syntax = "go"\n'
        "  trim_blocks = false\n  lstrip_blocks = false\n}\n",
    )
    a, b, c, d = config.templates
    assert [t.template_syntax for t in (a, b, c, d)] == ["jinja", "go", "jinja", "go"]
    assert (a.trim_blocks, a.lstrip_blocks) == (True, True)
    assert (d.trim_blocks, d.lstrip_blocks) == (False, False)


def test_bad_syntax_value_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _config(
            tmp_path, 'template {\n  contents = "x"\n  destination = "a"\n  syntax = "hcl"\n}\n'
        )
    assert str(info.value) == (
        f'{tmp_path}/ct.hcl: template[1].syntax: "hcl" is not a template syntax; use "go" or '
        '"jinja" (go: consul-template\'s text/template, jinja: Jinja2)'
    )


def test_template_syntax_flag_sets_the_default_for_template_flags() -> None:
    flags = parse_flags(["-template", "a.j2:a", "-template-syntax", "go", "-template", "b.ctmpl:b"])
    assert [t.template_syntax for t in flags.templates] == ["go", "go"]
    flags = parse_flags(["-template-syntax=jinja", "-template", "b.ctmpl:b"])
    assert [t.template_syntax for t in flags.templates] == ["jinja"]
    flags = parse_flags(["-template-syntax=auto", "-template", "b.ctmpl:b", "-template", "c.j2:c"])
    assert [t.template_syntax for t in flags.templates] == ["go", "jinja"]
    with pytest.raises(ConfigError) as info:
        parse_flags(["-template-syntax", "erb"])
    assert str(info.value) == (
        'flag -template-syntax: "erb" is not a template syntax; use "go", "jinja" or "auto" '
        "(go: consul-template's text/template, jinja: Jinja2)"
    )


def _jinja(text: str, **kw: bool) -> TemplateConfig:
    return TemplateConfig(destination="o", contents=text, origin="t", **kw)


def test_trim_and_lstrip_blocks_per_template() -> None:
    text = "a\n  {% if true %}\n  b\n  {% endif %}\nc\n"
    engine = TemplateEngine(Config())
    assert engine.load(_jinja(text)).execute({}).text == "a\n  b\nc\n"
    off = engine.load(_jinja(text, trim_blocks=False, lstrip_blocks=False)).execute({})
    assert off.text == "a\n  \n  b\n  \nc\n"


def _load_error(text: str) -> str:
    engine = TemplateEngine(Config())
    try:
        compiled = engine.load(_jinja(text))
    except TemplateError as exc:
        return str(exc)
    error = compiled.execute({}).error
    assert error is not None
    return str(error)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{{ printf("%d", 3) }}',
            "t.contents:1: 'printf' is undefined (printf is Go template syntax; in Jinja write "
            '"%s:%d" | format(a, b))',
        ),
        (
            "{{ len(x) }}",
            "t.contents:1: 'len' is undefined (len is Go template syntax; in Jinja write "
            "x | length)",
        ),
        (
            "{{ index(x, 1) }}",
            "t.contents:1: 'index' is undefined (index is Go template syntax; in Jinja write "
            "x[key] or x[0])",
        ),
        (
            "{{ eq(a, b) }}",
            "t.contents:1: 'eq' is undefined (eq is Go template syntax; in Jinja write a == b "
            "(or a in [b, c]))",
        ),
        (
            "{{ x | len }}",
            "t.contents:1: syntax error: No filter named 'len' (len is Go template syntax; in "
            "Jinja write x | length)",
        ),
        (
            'x\n{{ printf "%d" 3 }}',
            "t.contents:2: syntax error: expected token 'end of print statement', got 'string' "
            '(printf is Go template syntax; in Jinja write "%s:%d" | format(a, b))',
        ),
        (
            '{{ key "foo" }}',
            "t.contents:1: syntax error: expected token 'end of print statement', got 'string' "
            '(key is called the Go way; in Jinja write key(...), or set syntax = "go" in its '
            "template block to keep Go syntax)",
        ),
        (
            '{{range service "web"}}\n    server {{.Address}};{{end}}\n',
            "t.contents:1: syntax error: expected token 'end of print statement', got 'service' "
            '(this looks like Go template syntax (consul-template\'s); set syntax = "go" in '
            "its template block, or name the file .ctmpl)",
        ),
        (
            "a\n{{ .Foo }}\n",
            "t.contents:2: syntax error: unexpected '.' (this looks like Go template syntax "
            '(consul-template\'s); set syntax = "go" in its template block, or name the file '
            ".ctmpl)",
        ),
        # Names that are not Go's keep the usual suggestion.
        ("{{ servce('web') }}", "t.contents:1: 'servce' is undefined (did you mean 'service'?)"),
    ],
)
def test_go_syntax_in_jinja_gets_a_hint(text: str, message: str) -> None:
    assert _load_error(text) == message
