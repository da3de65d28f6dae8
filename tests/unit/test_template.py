"""Executing templates against cached data: discovery of missing queries, helpers, errors."""

from __future__ import annotations

import pytest

from ctemplate.config import Config, TemplateConfig
from ctemplate.errors import TemplateError
from ctemplate.queries import HealthServiceQuery, KVListQuery
from ctemplate.records import KeyPair
from ctemplate.template import TemplateEngine


def _load(text, tmp_path, config=None, **kw):
    src = tmp_path / "t.tmpl"
    src.write_text(text)
    return TemplateEngine(config or Config()).load(
        TemplateConfig(destination="out", source=str(src), origin="ct.hcl: template[1]", **kw)
    )


def _svc(node, addr, port):
    return HealthServiceQuery(name="web").decode(
        [
            {
                "Node": {"Node": node, "Address": addr},
                "Service": {"ID": node, "Service": "web", "Port": port},
                "Checks": [],
            }
        ]
    )[0]


def test_missing_data_is_discovered_and_nothing_is_rendered(tmp_path):
    t = _load(
        '{% for s in service("web") %}{{ s.Address }}{% endfor %}{{ key("a/b") }}\n', tmp_path
    )
    ex = t.execute({})
    assert ex.text is None and not ex.complete
    assert sorted(ex.missing) == ["health.service(web|passing)", "kv.block(a/b)"]


def test_complete_render(tmp_path):
    t = _load(
        "upstream app {\n"
        '{% for s in service("web") %}\n'
        "    server {{ s.Address }}:{{ s.Port }};\n"
        "{% endfor %}\n"
        "}\n",
        tmp_path,
    )
    data = {"health.service(web|passing)": (_svc("n1", "10.0.0.1", 80), _svc("n2", "10.0.0.2", 81))}
    ex = t.execute(data)
    assert ex.complete
    assert ex.text == "upstream app {\n    server 10.0.0.1:80;\n    server 10.0.0.2:81;\n}\n"


def test_kv_helpers(tmp_path):
    pairs = KVListQuery(prefix="app/").decode(
        [
            {"Key": "app/", "Value": None},
            {"Key": "app/a", "Value": "MQ=="},
            {"Key": "app/dir/", "Value": None},
            {"Key": "app/dir/b", "Value": "Mg=="},
        ]
    )
    t = _load(
        '{{ keyOrDefault("x/missing", "dflt") }} {{ keyExists("x/missing") }} '
        '{{ keyExists("x/there") }} {{ key("x/there") }}\n'
        '{% for p in ls("app/") %}\n'
        "ls {{ p.Key }}={{ p.Value }}\n"
        "{% endfor %}\n"
        '{% for p in tree("app/") %}\n'
        "tree {{ p.Key }}={{ p.Value }}\n"
        "{% endfor %}\n",
        tmp_path,
    )
    data = {
        "kv.get(x/missing)": None,
        "kv.get(x/there)": "v",
        "kv.block(x/there)": "v",
        "kv.list(app/)": pairs,
    }
    ex = t.execute(data)
    assert ex.text == "dflt False True v\nls a=1\ntree a=1\ntree dir/b=2\n"
    assert isinstance(pairs[1], KeyPair)


def test_key_or_default_counts_as_missing_until_answered(tmp_path):
    t = _load('{{ keyOrDefault("x", "d") }}', tmp_path)
    assert t.execute({}).missing.keys() == {"kv.get(x)"}


def test_misspelt_field_names_file_line_and_suggestion(tmp_path):
    t = _load('line one\n{% for s in service("web") %}\n{{ s.Adress }}\n{% endfor %}\n', tmp_path)
    ex = t.execute({"health.service(web|passing)": (_svc("n1", "10.0.0.1", 80),)})
    assert str(ex.error) == (
        f"{tmp_path}/t.tmpl:3: HealthService has no attribute 'Adress' (did you mean 'Address'?)"
    )


def test_bad_query_quotes_it_with_the_grammar(tmp_path):
    t = _load('a\nb\n{{ service("web@") }}\n', tmp_path)
    assert str(t.execute({}).error) == (
        f'{tmp_path}/t.tmpl:3: service("web@"): expected "[tag.]name[@dc][~near][|filter,...]"'
    )


def test_undefined_name_is_an_error(tmp_path):
    t = _load("{{ nosuch }}\n", tmp_path)
    assert str(t.execute({}).error) == f"{tmp_path}/t.tmpl:1: 'nosuch' is undefined"


def test_syntax_error_at_load(tmp_path):
    with pytest.raises(TemplateError) as info:
        _load("ok\n{% for %}\n", tmp_path)
    assert str(info.value) == (
        f"{tmp_path}/t.tmpl:2: syntax error: Expected an expression, got 'end of statement block'"
    )


def test_missing_source_file(tmp_path):
    with pytest.raises(TemplateError) as info:
        TemplateEngine(Config()).load(
            TemplateConfig(
                destination="o", source=str(tmp_path / "nope.tmpl"), origin="ct.hcl: template[2]"
            )
        )
    assert str(info.value) == (
        f"ct.hcl: template[2]: source '{tmp_path}/nope.tmpl' does not exist; check the path"
    )


def test_custom_delimiters(tmp_path):
    t = _load('[[ key("k") ]] {{ literal }}\n', tmp_path, left_delimiter="[[", right_delimiter="]]")
    assert t.execute({"kv.block(k)": "v"}).text == "v {{ literal }}\n"


def test_errors_during_discovery_are_not_reported(tmp_path):
    # services() is still empty in the first pass; indexing it must not count as an error.
    t = _load("{{ services()[0].Name }}\n", tmp_path)
    ex = t.execute({})
    assert ex.error is None and ex.missing.keys() == {"catalog.services"}
