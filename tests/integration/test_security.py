"""Security: what a template can reach, symlinks planted by another user, secrets in errors.

Each test runs the real ``ctemplate`` command (against the session's Consul agent where data is
needed) and checks what a user sees: the error line, the exit status, the files left behind,
and that nothing outside what the configuration names was run, read or written (README,
"Security").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ctemplate_proc import Daemon, read, run_ctemplate, wait_for

SECRET = "TOP-SECRET-4242"
OUT_OF_REACH = (
    "is out of reach (templates run sandboxed: no name starting with '_', no Python internals)"
)


def _hcl(consul, *templates: str, extra: str = "") -> str:
    return f'consul {{\n  address = "{consul.http_addr}"\n}}\n{extra}' + "".join(templates)


def _template(src: Path, dest: Path | str, **options: object) -> str:
    lines = [f'  source = "{src}"', f'  destination = "{dest}"']
    lines += [f"  {key} = {json.dumps(value)}" for key, value in options.items()]
    return "template {\n" + "\n".join(lines) + "\n}\n"


# --- 1. the sandbox -----------------------------------------------------------------------------

# (id, template line, what the error names). {marker} is a file the escape would create,
# {secret} a file it would read; neither must happen.
ESCAPES = [
    (
        "helper-globals-os-system",
        "{{ service.__globals__['os'].system('touch {marker}') }}",
        "'__globals__' of a value of type 'function'",
    ),
    (
        "key-globals",
        "{{ key.__globals__ }}",
        "'__globals__' of a value of type 'function'",
    ),
    (
        "string-class-mro",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "'__class__' of a value of type 'str'",
    ),
    (
        "cycler-init-globals-os",
        "{{ cycler.__init__.__globals__.os.system('touch {marker}') }}",
        "'__init__' of a value of type 'type'",
    ),
    (
        "joiner-init-globals",
        "{{ joiner.__init__.__globals__.os.popen('touch {marker}') }}",
        "'__init__' of a value of type 'type'",
    ),
    (
        "lipsum-globals",
        "{{ lipsum.__globals__['os'].system('touch {marker}') }}",
        "'__globals__' of a value of type 'function'",
    ),
    (
        "namespace-init",
        "{{ namespace.__init__.__globals__ }}",
        "'__init__' of a value of type 'type'",
    ),
    (
        "str-format-attribute",
        "{{ '{0.__init__.__globals__}'.format(env) }}",
        "'__init__' of a value of type 'function'",
    ),
    (
        "attr-filter",
        "{{ (env | attr('__globals__'))['__builtins__']['open']('{secret}').read() }}",
        "'__globals__' of a value of type 'function'",
    ),
    (
        "subscript-dunder",
        "{{ env['__globals__']['__builtins__']['open']('{secret}').read() }}",
        "'__globals__' of a value of type 'function'",
    ),
    (
        "denied-writeToFile-through-other-helper",
        "{{ key.__globals__['local'].write_to_file('{marker}', 'x') }}",
        "'__globals__' of a value of type 'function'",
    ),
    (
        "self-reference-internals",
        "{{ self._TemplateReference__context.environment }}",
        "'_TemplateReference__context' of a value of type 'TemplateReference'",
    ),
]


@pytest.mark.parametrize(("line", "names"), [e[1:] for e in ESCAPES], ids=[e[0] for e in ESCAPES])
def test_template_escape_is_refused(consul, tmp_path, line, names):
    """Promise: templates run sandboxed. An escape through Python attributes fails with one
    error line naming the template's file and line; the command it tried did not run, the file
    it tried to read was not read, and no output file was written. Dangerous functions are
    denied as well, to show that the denylist cannot be walked around either."""
    marker = tmp_path / "MARKER"
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    src = tmp_path / "escape.tmpl"
    text = line.replace("{marker}", str(marker)).replace("{secret}", str(secret))
    src.write_text(f"first line is fine\n{text}\n")
    out = tmp_path / "out"
    config = tmp_path / "ct.hcl"
    deny = ["plugin", "writeToFile", "file", "env"]
    config.write_text(_hcl(consul, _template(src, out, function_denylist=deny)))
    result = run_ctemplate(["-config", str(config), "-once"], timeout=30)
    assert result.returncode == 14, result.stderr
    errors = [ln.split("[ERR] ", 1)[1] for ln in result.stderr.splitlines() if "[ERR]" in ln]
    assert errors == [f"{src}:2: {names} {OUT_OF_REACH}; keeping the last good {out}"], (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr
    assert not marker.exists()
    assert not out.exists()


def test_records_and_ordinary_methods_still_work(consul, unique, tmp_path):
    """Promise: the sandbox keeps public data reachable: record fields, map keys, string and
    map methods, ``str.format`` with plain fields, Jinja's own globals."""
    name = f"{unique}-web"
    consul.register_service(name, address="10.0.0.7", port=8080, tags=["blue"])
    key = f"{unique}/cfg"
    consul.put_kv(key, '{"mode": "fast"}')
    src = tmp_path / "ok.tmpl"
    src.write_text(
        f'{{% for s in service("{name}") %}}{{{{ s.Address }}}}:{{{{ s.Port }}}} '
        "{{ s.Tags | join(',') | upper }} {{ '{}-{}'.format(s.Name, s.Port) }}\n"
        "{% endfor %}"
        f'{{% set cfg = key("{key}") | parseJSON %}}{{{{ cfg.get("mode") }}}} '
        "{{ cfg.items() | list }} {% set ns = namespace(n=1) %}{% set ns.n = ns.n + 1 %}"
        "{{ ns.n }} {{ cycler('a', 'b').next() }}\n"
    )
    out = tmp_path / "ok.out"
    result = run_ctemplate(
        ["-consul-addr", consul.http_addr, "-template", f"{src}:{out}", "-once"], timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert read(out) == (f"10.0.0.7:8080 BLUE {name}-8080\nfast [('mode', 'fast')] 2 a\n"), (
        result.stderr
    )


def test_daemon_reports_escape_and_keeps_rendering_the_others(consul, unique, tmp_path):
    """Promise: in the daemon, a template that tries an escape is reported once naming its file
    and line; the other templates keep following Consul; the command was never run."""
    key = f"{unique}/n"
    consul.put_kv(key, "1")
    marker = tmp_path / "MARKER"
    bad = tmp_path / "bad.tmpl"
    bad.write_text(
        f"n={{{{ key(\"{key}\") }}}}\n{{{{ key.__globals__['os'].system('touch {marker}') }}}}\n"
    )
    good = tmp_path / "good.tmpl"
    good.write_text(f'n={{{{ key("{key}") }}}}\n')
    config = tmp_path / "ct.hcl"
    config.write_text(
        _hcl(consul, _template(bad, tmp_path / "bad.out"), _template(good, tmp_path / "good.out"))
    )
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: read(tmp_path / "good.out") == "n=1\n", what="good", log=ct.log())
        wait_for(lambda: "[ERR]" in ct.log(), what="the error", log=ct.log())
        consul.put_kv(key, "2")
        wait_for(lambda: read(tmp_path / "good.out") == "n=2\n", what="good again", log=ct.log())
        log = ct.log()
        assert ct.proc.poll() is None
    errors = [ln.split("[ERR] ", 1)[1] for ln in log.splitlines() if "[ERR]" in ln]
    assert errors[0] == (
        f"{bad}:2: '__globals__' of a value of type 'function' {OUT_OF_REACH}; "
        f"keeping the last good {tmp_path}/bad.out"
    ), log
    assert not marker.exists()
    assert not (tmp_path / "bad.out").exists()


def test_denied_function_cannot_be_reached_through_filters_or_includes(consul, tmp_path):
    """Promise: ``function_denylist`` holds whichever way a function is named: as a function,
    as a filter, through ``map``, and in an included template."""
    marker = tmp_path / "MARKER"
    part = tmp_path / "part.tmpl"
    part.write_text(f"{{{{ plugin('touch', '{marker}') }}}}\n")
    cases = {
        "call": f"{{{{ plugin('touch', '{marker}') }}}}",
        "filter": f"{{{{ '{marker}' | plugin('touch') }}}}",
        "map": f"{{{{ ['{marker}'] | map('plugin', 'touch') | list }}}}",
        "include": "{% include 'part.tmpl' %}",
    }
    for name, text in cases.items():
        src = tmp_path / f"{name}.tmpl"
        src.write_text(text + "\n")
        out = tmp_path / f"{name}.out"
        config = tmp_path / f"{name}.hcl"
        config.write_text(_hcl(consul, _template(src, out, function_denylist=["plug*"])))
        result = run_ctemplate(["-config", str(config), "-once"], timeout=30)
        assert result.returncode == 14, (name, result.stderr)
        where = f"{part}:1" if name == "include" else f"{src}:1"
        assert (
            f"[ERR] {where}: plugin() is disabled by function_denylist (pattern 'plug*')"
            in result.stderr
        ), (name, result.stderr)
        assert not marker.exists(), name
        assert not out.exists(), name


def test_sandbox_path_is_not_bypassed(consul, tmp_path):
    """Promise: with ``sandbox_path``, neither ``file``, ``{% include %}`` (through a symlink
    inside the sandbox) nor Python's ``open`` reached through a helper reads a file outside."""
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    (sandbox / "link.tmpl").symlink_to(secret)
    cases = {
        "file": f"{{{{ file('{secret}') }}}}",
        "include-link": "{% include 'link.tmpl' %}",
        "open": f"{{{{ file.__globals__['__builtins__']['open']('{secret}').read() }}}}",
    }
    for name, text in cases.items():
        src = sandbox / f"{name}.tmpl"
        src.write_text(text + "\n")
        out = tmp_path / f"{name}.out"
        config = tmp_path / f"{name}.hcl"
        config.write_text(_hcl(consul, _template(src, out, sandbox_path=str(sandbox))))
        result = run_ctemplate(["-config", str(config), "-once"], timeout=30)
        assert result.returncode == 14, (name, result.stderr)
        assert f"[ERR] {src}:1: " in result.stderr, (name, result.stderr)
        assert SECRET not in result.stderr, name
        assert not out.exists(), name
