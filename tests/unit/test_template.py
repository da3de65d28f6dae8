"""Executing templates against cached data: discovery of missing queries, helpers, errors."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from ctemplate.config import Config, TemplateConfig, load_config_file
from ctemplate.consul.queries import (
    CatalogNodeQuery,
    FileProblem,
    FileQuery,
    HealthServiceQuery,
    KVListQuery,
)
from ctemplate.consul.records import KeyPair
from ctemplate.errors import ConfigError, TemplateError
from ctemplate.language.jinja import TemplateEngine


def _load(text, tmp_path, config=None, **kw):
    src = tmp_path / "t.j2"
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


def test_key_arguments_and_values(tmp_path):
    """key() of a number, of a string built with ~, of an empty string; a key without a value
    prints as empty; every use is recorded, and an absent one is missing."""
    t = _load('{{ key(5) }}|{{ key("a/" ~ 1) }}|{{ key("") }}|{{ key("novalue") }}|\n', tmp_path)
    data = {"kv.block(5)": "five", "kv.block(a/1)": "one", "kv.block(novalue)": None}
    ex = t.execute(data)
    assert ex.text == "five|one|||\n"
    assert sorted(ex.used) == ["kv.block(5)", "kv.block(a/1)", "kv.block(novalue)"]
    ex = t.execute({"kv.block(5)": "five"})
    assert ex.text is None
    assert sorted(ex.missing) == ["kv.block(a/1)", "kv.block(novalue)"]
    # An empty value from a missing map key is not the empty string: the query is refused.
    t = _load("{% set m = {} %}{{ key(m.nothing) }}", tmp_path)
    assert str(t.execute({}).error) == f'{tmp_path}/t.j2:1: key(""): expected "path[@dc]"'


def test_concatenation_prints_each_operand_as_str(tmp_path):
    """``~`` is ``str()`` of each operand joined (whatever the operands hold: no formatting of
    ``%`` in them); in an autoescape block, Jinja's Markup-aware join."""
    t = _load(
        '{{ 1 ~ none ~ [1, "a"] ~ "%s%d%%" ~ {"k": 1} ~ (1, 2) ~ true ~ 2.5 ~ "é" }}\n'
        '{% set m = {} %}[{{ "a" ~ m.missing ~ "b" }}]\n'
        '{% autoescape true %}{{ "<" ~ "b" }}{% endautoescape %}|{{ "<" ~ "b" }}\n',
        tmp_path,
    )
    assert t.execute({}).text == ("1None[1, 'a']%s%d%%{'k': 1}(1, 2)True2.5é\n[ab]\n&lt;b|<b\n")
    t = _load('x\n{{ "a" ~ nosuch }}\n', tmp_path)
    assert str(t.execute({}).error) == f"{tmp_path}/t.j2:2: 'nosuch' is undefined"


def test_misspelt_field_names_file_line_and_suggestion(tmp_path):
    t = _load('line one\n{% for s in service("web") %}\n{{ s.Adress }}\n{% endfor %}\n', tmp_path)
    ex = t.execute({"health.service(web|passing)": (_svc("n1", "10.0.0.1", 80),)})
    assert str(ex.error) == (
        f"{tmp_path}/t.j2:3: HealthService has no attribute 'Adress' (did you mean 'Address'?)"
    )


def test_bad_query_quotes_it_with_the_grammar(tmp_path):
    t = _load('a\nb\n{{ service("web@") }}\n', tmp_path)
    assert str(t.execute({}).error) == (
        f'{tmp_path}/t.j2:3: service("web@"): expected "[tag.]name[@dc][~near][|filter,...]"'
    )


def test_undefined_name_is_an_error(tmp_path):
    t = _load("{{ nosuch }}\n", tmp_path)
    assert str(t.execute({}).error) == f"{tmp_path}/t.j2:1: 'nosuch' is undefined"


def test_syntax_error_at_load(tmp_path):
    with pytest.raises(TemplateError) as info:
        _load("ok\n{% for %}\n", tmp_path)
    assert str(info.value) == (
        f"{tmp_path}/t.j2:2: syntax error: Expected an expression, got 'end of statement block'"
    )


def test_missing_source_file(tmp_path):
    with pytest.raises(TemplateError) as info:
        TemplateEngine(Config()).load(
            TemplateConfig(
                destination="o", source=str(tmp_path / "nope.j2"), origin="ct.hcl: template[2]"
            )
        )
    assert str(info.value) == (
        f"ct.hcl: template[2]: source '{tmp_path}/nope.j2' does not exist; check the path"
    )


def test_custom_delimiters(tmp_path):
    t = _load('[[ key("k") ]] {{ literal }}\n', tmp_path, left_delimiter="[[", right_delimiter="]]")
    assert t.execute({"kv.block(k)": "v"}).text == "v {{ literal }}\n"


def test_errors_during_discovery_are_not_reported(tmp_path):
    # services() is still empty in the first pass; indexing it must not count as an error.
    t = _load("{{ services()[0].Name }}\n", tmp_path)
    ex = t.execute({})
    assert ex.error is None and ex.missing.keys() == {"catalog.services"}


def test_safe_ls_and_safe_tree_wait_while_empty(tmp_path):
    t = _load(
        '{% for p in safeLs("app/") %}{{ p.Key }}{% endfor %}|{{ safeTree("x/") | length }}',
        tmp_path,
    )
    empty = {"kv.list(app/)": (), "kv.list(x/)": ()}
    ex = t.execute(empty)
    assert ex.text is None and sorted(ex.missing) == ["kv.list(app/)", "kv.list(x/)"]
    pairs = KVListQuery(prefix="app/").decode([{"Key": "app/a", "Value": "MQ=="}])
    xs = KVListQuery(prefix="x/").decode([{"Key": "x/d/e", "Value": "MQ=="}])
    assert t.execute({"kv.list(app/)": pairs, "kv.list(x/)": xs}).text == "a|1"


def test_node_without_a_name_asks_the_agent_first(tmp_path):
    t = _load("{{ node().Node.Node }}", tmp_path)
    assert t.execute({}).missing.keys() == {"agent.self"}
    ex = t.execute({"agent.self": "n1"})
    assert ex.missing.keys() == {"catalog.node(n1)"}
    node = CatalogNodeQuery(name="n1").decode({"Node": {"Node": "n1"}, "Services": {}})
    assert t.execute({"agent.self": "n1", "catalog.node(n1)": node}).text == "n1"


def test_unknown_node_is_none_with_a_hint(tmp_path):
    t = _load('{% if node("x") %}yes{% else %}no{% endif %}\n{{ node("x").Node }}', tmp_path)
    ex = t.execute({"catalog.node(x)": None})
    assert str(ex.error) == (
        f"{tmp_path}/t.j2:2: None has no attribute 'Node' (the value is empty, e.g. node() of "
        "an unknown node; guard it with {% if ... %})"
    )


def test_file_problems_are_template_errors_with_the_line(tmp_path):
    t = _load('a\n{{ file("conf.ini") }}', tmp_path)
    ex = t.execute(
        {"file(conf.ini)": FileProblem('file("conf.ini"): no such file; check the path')}
    )
    assert str(ex.error) == f'{tmp_path}/t.j2:2: file("conf.ini"): no such file; check the path'
    assert t.execute({"file(conf.ini)": "x=1\n"}).text == "a\nx=1\n"


def test_file_outside_the_sandbox_even_through_a_symlink(tmp_path):
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "ok.txt").write_text("ok")
    (tmp_path / "secret").write_text("s")
    (sandbox / "link").symlink_to(tmp_path / "secret")
    t = _load(
        f'{{{{ file("{sandbox}/ok.txt") }}}}\n{{{{ file("{sandbox}/link") }}}}',
        tmp_path,
        sandbox_path=str(sandbox),
    )
    ex = t.execute({f"file({sandbox}/ok.txt)": "ok"})
    assert str(ex.error) == (
        f'{tmp_path}/t.j2:2: file("{sandbox}/link"): outside the sandbox {sandbox} (it resolves '
        f"to {tmp_path}/secret); sandbox_path allows only paths inside it"
    )
    # The watch re-checks on every read, so a link swapped in later is caught too.
    assert FileQuery(str(sandbox / "link"), sandbox=str(sandbox)).read() == FileProblem(
        f'file("{sandbox}/link"): outside the sandbox {sandbox} (it resolves to '
        f"{tmp_path}/secret); sandbox_path allows only paths inside it"
    )
    assert FileQuery(str(sandbox / "ok.txt"), sandbox=str(sandbox)).read() == "ok"


def test_include_and_import_relative_to_the_template(tmp_path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "head.j2").write_text("head {{ key('k') }}\n")
    (tmp_path / "macros.j2").write_text("{% macro up(s) %}{{ s | toUpper }}{% endmacro %}")
    t = _load(
        '{% include "parts/head.j2" %}{% import "macros.j2" as m %}{{ m.up("x") }}\n', tmp_path
    )
    ex = t.execute({})
    assert ex.missing.keys() == {"kv.block(k)"}  # queries in included templates are discovered
    assert t.execute({"kv.block(k)": "v"}).text == "head v\nX\n"


def test_errors_in_included_templates_name_both_files(tmp_path):
    (tmp_path / "inc.j2").write_text("fine\n{{ nosuch }}\n")
    (tmp_path / "bad.j2").write_text("{% if %}\n")
    t = _load('one\n{% include "inc.j2" %}\n', tmp_path)
    assert str(t.execute({}).error) == (
        f"{tmp_path}/inc.j2:2: 'nosuch' is undefined (included from {tmp_path}/t.j2:2)"
    )
    t = _load('{% include "bad.j2" %}', tmp_path)
    assert str(t.execute({}).error) == (
        f"{tmp_path}/bad.j2:1: syntax error: Expected an expression, got 'end of statement block'"
    )
    t = _load('{% include "../etc/passwd" %}', tmp_path)
    assert str(t.execute({}).error) == (
        f"{tmp_path}/t.j2:1: template '../etc/passwd' not found in {tmp_path} (include and "
        "import paths are relative to the including template's directory)"
    )


def test_include_confined_to_the_sandbox(tmp_path):
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (tmp_path / "outside.j2").write_text("secret")
    (sandbox / "inc.j2").symlink_to(tmp_path / "outside.j2")
    src = sandbox / "t.j2"
    src.write_text('{% include "inc.j2" %}')
    t = TemplateEngine(Config()).load(
        TemplateConfig(destination="o", source=str(src), sandbox_path=str(sandbox))
    )
    assert str(t.execute({}).error) == (
        f'{src}:1: include("{sandbox}/inc.j2"): outside the sandbox {sandbox} (it resolves to '
        f"{tmp_path}/outside.j2); sandbox_path allows only paths inside it"
    )


def test_function_denylist(tmp_path):
    (tmp_path / "m.j2").write_text("{% macro run() %}{{ plugin('true') }}{% endmacro %}")
    t = _load(
        'ok {{ key("a") }}\n{{ plugin("echo", "x") }}', tmp_path, function_denylist=("plug*",)
    )
    assert str(t.execute({"kv.block(a)": "v"}).error) == (
        f"{tmp_path}/t.j2:2: plugin() is disabled by function_denylist (pattern 'plug*')"
    )
    t = _load('{{ "x" | plugin("echo") }}', tmp_path, function_denylist=("plugin",))
    assert "plugin() is disabled" in str(t.execute({}).error)
    t = _load('{% import "m.j2" as m %}{{ m.run() }}', tmp_path, function_denylist=("plugin",))
    assert "plugin() is disabled" in str(t.execute({}).error)
    # Other templates are not affected.
    assert _load('{{ plugin("echo", "x") }}', tmp_path).execute({}).text == "x"


def test_a_data_function_is_called_directly_only_while_its_name_is_the_function(tmp_path):
    """``key("a")`` calls ctemplate's key() without the sandbox's layers (budget._RuntimeOnly's
    visit_Call); a template that gives the name to something else calls that, through the
    sandbox, and a denylisted name stays denied."""
    data = {"kv.block(a)": "A", "kv.block(b)": "B", "kv.block(A)": "second", "kv.block(k)": "a"}
    t = _load('{{ key("a") }} {{ key(key("k")) }} {{ key(key(key("k"))) }}', tmp_path)
    assert t.execute(data).text == "A A second"
    code = t._template.environment.compile('{{ key("a") }}', raw=True)
    assert "environment.data_calls['key']" in code  # the direct call is what runs
    # Shadowed by a macro, a set value, a loop variable: what the name now holds is called.
    text = '{% macro key(x) %}M{{ x }}{% endmacro %}{{ key("a") }}'
    assert _load(text, tmp_path).execute(data).text == "Ma"
    text = '{% set key = keyOrDefault %}{{ key("missing", "dflt") }}{{ key("b", "-") }}'
    ex = _load(text, tmp_path).execute(data)
    assert ex.text is None and sorted(ex.missing) == ["kv.get(b)", "kv.get(missing)"]
    both = {"kv.get(missing)": None, "kv.get(b)": "B"}
    assert _load(text, tmp_path).execute(both).text == "dfltB"
    text = "{% for key in [service] %}{{ key('web') | length }}{% endfor %}"
    assert _load(text, tmp_path).execute({"health.service(web|passing)": ()}).text == "0"
    text = '{% set key = "s" %}{{ key("a") }}'
    assert "'str' object is not callable" in str(_load(text, tmp_path).execute(data).error)
    # Denylisted: the name holds the refusal, which is called.
    t = _load('{{ key("a") }}', tmp_path, function_denylist=("key",))
    assert str(t.execute(data).error) == (
        f"{tmp_path}/t.j2:1: key() is disabled by function_denylist (pattern 'key')"
    )
    # Called with a keyword or unpacked arguments: Jinja's own call, same result.
    assert _load('{{ keyOrDefault("b", default="x") }}', tmp_path).execute(both).text == "B"
    assert _load('{{ key(*["a"]) }}', tmp_path).execute(data).text == "A"


def test_write_to_file(tmp_path):
    out = tmp_path / "d" / "f.txt"
    t = _load(
        f'{{{{ writeToFile("{out}", "a", "0600") }}}}'
        f'{{{{ "b" | writeToFile("{out}", append=true, newline=true) }}}}done',
        tmp_path,
    )
    assert t.execute({}).text == "done"
    assert out.read_text() == "ab\n"
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    # Not while data is missing: the content could still be incomplete.
    out.unlink()
    t = _load(f'{{{{ key("k") | writeToFile("{out}") }}}}', tmp_path)
    assert t.execute({}).missing and not out.exists()
    assert t.execute({"kv.block(k)": "v"}).text == "" and out.read_text() == "v"


def test_write_to_file_refuses_symlinks_and_the_outside_of_the_sandbox(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep")
    (tmp_path / "link").symlink_to(target)
    t = _load(f'{{{{ writeToFile("{tmp_path}/link", "x") }}}}', tmp_path)
    assert str(t.execute({}).error) == (
        f'{tmp_path}/t.j2:1: writeToFile("{tmp_path}/link"): the file is a symlink; refusing '
        "to follow it"
    )
    assert target.read_text() == "keep"
    sandbox = tmp_path / "sb"
    sandbox.mkdir()
    t = _load(
        f'{{{{ writeToFile("{sandbox}/ok", "x") }}}}{{{{ writeToFile("{tmp_path}/no", "x") }}}}',
        tmp_path,
        sandbox_path=str(sandbox),
    )
    assert str(t.execute({}).error) == (
        f'{tmp_path}/t.j2:1: writeToFile("{tmp_path}/no"): outside the sandbox {sandbox}; '
        "sandbox_path allows only paths inside it"
    )
    assert (sandbox / "ok").read_text() == "x" and not (tmp_path / "no").exists()


def test_write_to_file_is_skipped_in_dry_mode(tmp_path):
    out = tmp_path / "f"
    src = tmp_path / "t.j2"
    src.write_text(f'{{{{ writeToFile("{out}", "x") }}}}')
    t = TemplateEngine(Config(dry=True)).load(TemplateConfig(destination="o", source=str(src)))
    assert t.execute({}).text == "" and not out.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ servise('web') }}", "1: 'servise' is undefined (did you mean 'service'?)"),
        ("{{ keyExists() }}", "1: keyExists() missing 1 required positional argument: 'path'"),
        ("x\n{{ plugin('false') }}", '2: plugin("false") exited with status 1'),
    ],
)
def test_runtime_error_texts(text, message, tmp_path):
    assert str(_load(text, tmp_path).execute({}).error) == f"{tmp_path}/t.j2:{message}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ x | toJson }}", "1: syntax error: No filter named 'toJson' (did you mean 'toJSON'?)"),
        (
            "\n{{ 'web' | service }}",
            "2: syntax error: No filter named 'service' (service is a function, not a filter: "
            "call it as service(...))",
        ),
        (
            "{% for x in y %}\n",
            "1: syntax error: Unexpected end of template. Jinja was looking "
            "for the following tags: 'endfor' or 'else'. The innermost block that needs to be "
            "closed is 'for'.",
        ),
    ],
)
def test_load_error_texts(text, message, tmp_path):
    with pytest.raises(TemplateError) as info:
        _load(text, tmp_path)
    assert str(info.value) == f"{tmp_path}/t.j2:{message}"


def test_loop_controls_and_do_are_available(tmp_path):
    t = _load(
        "{% for i in loop(5) %}{% if i == 2 %}{% break %}{% endif %}{{ i }}{% endfor %}"
        "{% set l = [] %}{% do l.append(1) %}{{ l }}",
        tmp_path,
    )
    assert t.execute({}).text == "01[1]"


@pytest.mark.parametrize(
    ("block", "denylist", "sandbox"),
    [
        (
            'function_denylist = ["plugin", "write*"]\nsandbox_path = "/srv/sb"',
            ("plugin", "write*"),
            "/srv/sb",
        ),
        ('function_blacklist = "plugin, file"', ("plugin", "file"), None),
        ("", (), None),
    ],
)
def test_template_options_from_hcl(block, denylist, sandbox, tmp_path):
    config = tmp_path / "ct.hcl"
    config.write_text(f'template {{\n  contents = "x"\n  destination = "out"\n  {block}\n}}\n')
    (tc,) = load_config_file(config)["templates"]
    assert (tc.function_denylist, tc.sandbox_path) == (denylist, sandbox)


def test_bad_template_options_from_hcl(tmp_path):
    config = tmp_path / "ct.hcl"
    config.write_text('template {\n  contents = "x"\n  destination = "o"\n  sandbox_path = ""\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config_file(config)
    assert str(info.value) == f"{config}: template[1].sandbox_path: must not be empty"
    config.write_text(
        'template {\n  contents = "x"\n  destination = "o"\n  function_denylist = 1\n}\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config_file(config)
    assert str(info.value) == (
        f"{config}: template[1].function_denylist: expected a list of function names such as "
        '["plugin", "file"], got a number'
    )


def test_no_plugin_starts_while_the_daemon_stops(tmp_path):
    """After stop_plugins() (the runner stopping) a template's next plugin is refused with a
    clear error instead of being started and waited for; allow_plugins() (a runner starting)
    lets them run again."""
    from ctemplate.language import local

    t = _load('{{ plugin("echo", "x") }}', tmp_path)
    local.stop_plugins()
    try:
        assert str(t.execute({}).error) == (
            f'{tmp_path}/t.j2:1: plugin("echo"): not run, ctemplate is stopping'
        )
    finally:
        local.allow_plugins()
    assert t.execute({}).text == "x"


def test_plugin_timeout_holds_even_when_a_descendant_keeps_its_output_open(tmp_path):
    """A plugin that leaves a process in another session holding its stdout is still given up
    at its timeout (and at a stop), not when that process exits."""
    import threading
    import time

    from ctemplate.language import local

    escaped = tmp_path / "escaped.pid"
    script = tmp_path / "plug.sh"
    script.write_text(f"setsid sleep 30 &\necho $! >> {escaped}\necho hi\nsleep 30\n")
    try:
        started = time.monotonic()
        with pytest.raises(TemplateError, match=r"did not finish in 1s and was killed"):
            local.plugin("sh", str(script), timeout=1)
        assert time.monotonic() - started < 3

        errors: list[TemplateError] = []

        def run() -> None:
            try:
                local.plugin("sh", str(script))
            except TemplateError as exc:
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.5)
        local.stop_plugins()
        thread.join(3)
        assert not thread.is_alive()
        assert [str(e) for e in errors] == ['plugin("sh"): killed: ctemplate is stopping']
    finally:
        local.allow_plugins()
        for pid in escaped.read_text().split() if escaped.exists() else ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
