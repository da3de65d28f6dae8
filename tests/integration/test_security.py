"""Security: what a template can reach, symlinks planted by another user, secrets in errors.

Each test runs the real ``ctemplate`` command (against the session's Consul agent where data is
needed) and checks what a user sees: the error line, the exit status, the files left behind,
and that nothing outside what the configuration names was run, read or written (README,
"Security").
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
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
    src = tmp_path / "escape.j2"
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
    src = tmp_path / "ok.j2"
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
    assert read(out) == (f"10.0.0.7:8080 BLUE {name}-8080\nfast [['mode', 'fast']] 2 a\n"), (
        result.stderr
    )


def test_daemon_reports_escape_and_keeps_rendering_the_others(consul, unique, tmp_path):
    """Promise: in the daemon, a template that tries an escape is reported once naming its file
    and line; the other templates keep following Consul; the command was never run."""
    key = f"{unique}/n"
    consul.put_kv(key, "1")
    marker = tmp_path / "MARKER"
    bad = tmp_path / "bad.j2"
    bad.write_text(
        f"n={{{{ key(\"{key}\") }}}}\n{{{{ key.__globals__['os'].system('touch {marker}') }}}}\n"
    )
    good = tmp_path / "good.j2"
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
    part = tmp_path / "part.j2"
    part.write_text(f"{{{{ plugin('touch', '{marker}') }}}}\n")
    cases = {
        "call": f"{{{{ plugin('touch', '{marker}') }}}}",
        "filter": f"{{{{ '{marker}' | plugin('touch') }}}}",
        "map": f"{{{{ ['{marker}'] | map('plugin', 'touch') | list }}}}",
        "include": "{% include 'part.j2' %}",
    }
    for name, text in cases.items():
        src = tmp_path / f"{name}.j2"
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
    (sandbox / "link.j2").symlink_to(secret)
    cases = {
        "file": f"{{{{ file('{secret}') }}}}",
        "include-link": "{% include 'link.j2' %}",
        "open": f"{{{{ file.__globals__['__builtins__']['open']('{secret}').read() }}}}",
    }
    for name, text in cases.items():
        src = sandbox / f"{name}.j2"
        src.write_text(text + "\n")
        out = tmp_path / f"{name}.out"
        config = tmp_path / f"{name}.hcl"
        config.write_text(_hcl(consul, _template(src, out, sandbox_path=str(sandbox))))
        result = run_ctemplate(["-config", str(config), "-once"], timeout=30)
        assert result.returncode == 14, (name, result.stderr)
        assert f"[ERR] {src}:1: " in result.stderr, (name, result.stderr)
        assert SECRET not in result.stderr, name
        assert not out.exists(), name


# --- 2. symlinks planted by another user ---------------------------------------------------------

OTHER_UID = 4321  # "another user": the tests run as root, so a chown simulates one


def _plant_link(link: Path, target: Path | str) -> None:
    """A symlink made by another user (its owner is what the symlink rule looks at)."""
    link.symlink_to(target)
    os.lchown(link, OTHER_UID, OTHER_UID)


def _victim(path: Path, text: str = "precious\n", mode: int = 0o600) -> Path:
    """A root-only file that a planted link points at."""
    path.write_text(text)
    path.chmod(mode)
    return path


def _once(consul, tmp_path: Path, *templates: str, extra: str = "") -> object:
    config = tmp_path / "ct.hcl"
    config.write_text(_hcl(consul, *templates, extra=extra))
    return run_ctemplate(["-config", str(config), "-once"], timeout=30)


def test_planted_bak_symlink_is_replaced_not_followed(consul, tmp_path):
    """Promise: with ``backup = true`` a ``.bak`` planted as a symlink by another user is
    replaced by the backup; the file it points at keeps its content and its mode."""
    victim = _victim(tmp_path / "root-only.conf")
    src, dest = tmp_path / "app.j2", tmp_path / "app.conf"
    src.write_text("version 1\n")
    template = _template(src, dest, backup=True)
    assert _once(consul, tmp_path, template).returncode == 0
    _plant_link(tmp_path / "app.conf.bak", victim)
    src.write_text("version 2\n")
    result = _once(consul, tmp_path, template)
    assert result.returncode == 0, result.stderr
    assert read(dest) == "version 2\n"
    bak = tmp_path / "app.conf.bak"
    assert not bak.is_symlink()
    assert read(bak) == "version 1\n"
    assert read(victim) == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_planted_destination_symlink_lends_neither_owner_nor_mode(consul, tmp_path):
    """Promise: a destination planted as a symlink is replaced by the rendered file (the path
    the configuration names); the rendered file does not take the link target's owner or mode,
    the target is not written, and the log says what happened."""
    theirs = tmp_path / "theirs.conf"
    theirs.write_text("their file\n")
    os.chown(theirs, OTHER_UID, OTHER_UID)
    theirs.chmod(0o666)
    dest = tmp_path / "app.conf"
    _plant_link(dest, theirs)
    src = tmp_path / "app.j2"
    src.write_text("secret=42\n")
    result = _once(consul, tmp_path, _template(src, dest))
    assert result.returncode == 0, result.stderr
    assert not dest.is_symlink()
    assert read(dest) == "secret=42\n"
    st = dest.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o644)
    assert read(theirs) == "their file\n"
    assert (
        f"[WARN] (runner) {dest}: was a symlink to {theirs}; replacing the link with the "
        "rendered file (a destination's link is never followed)"
    ) in result.stderr


def test_rewrite_keeps_the_owner_of_the_file_it_replaces(consul, tmp_path):
    """Promise: a rewritten destination keeps the owner and mode of the regular file at that
    path (as consul-template), so a service user can still read it."""
    src, dest = tmp_path / "app.j2", tmp_path / "app.conf"
    dest.write_text("old\n")
    os.chown(dest, OTHER_UID, OTHER_UID)
    dest.chmod(0o640)
    src.write_text("new\n")
    result = _once(consul, tmp_path, _template(src, dest))
    assert result.returncode == 0, result.stderr
    st = dest.stat()
    assert (read(dest), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
        "new\n",
        OTHER_UID,
        OTHER_UID,
        0o640,
    )


def test_parent_directory_link_of_another_user_is_refused(consul, tmp_path):
    """Promise: a symlink in a destination's directory path is followed only if root or
    ctemplate's own user made it; another user's link is refused naming it, and nothing is
    written where it points. The operator's own link is followed."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    planted = tmp_path / "conf.d"
    _plant_link(planted, elsewhere)
    src = tmp_path / "app.j2"
    src.write_text("x\n")
    result = _once(consul, tmp_path, _template(src, planted / "app.conf"))
    assert result.returncode == 14, result.stderr
    assert (
        f"[ERR] {planted}/app.conf: {planted} is a symlink owned by uid {OTHER_UID}; ctemplate "
        "follows only links owned by root or its own user (replace the link with a directory, "
        f"or name the real path); keeping the last good {planted}/app.conf"
    ) in result.stderr
    assert list(elsewhere.iterdir()) == []

    os.lchown(planted, 0, 0)  # the operator's link
    result = _once(consul, tmp_path, _template(src, planted / "app.conf"))
    assert result.returncode == 0, result.stderr
    assert read(elsewhere / "app.conf") == "x\n"


def test_pid_file_planted_symlink_is_replaced(consul, tmp_path):
    """Promise: a pid file planted as a symlink is replaced by the pid file; the file it
    points at is left alone."""
    victim = _victim(tmp_path / "root-only.conf")
    pid_file = tmp_path / "ct.pid"
    _plant_link(pid_file, victim)
    src = tmp_path / "app.j2"
    src.write_text("x\n")
    config = tmp_path / "ct.hcl"
    config.write_text(
        _hcl(consul, _template(src, tmp_path / "out"), extra=f'pid_file = "{pid_file}"\n')
    )
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: read(tmp_path / "out") == "x\n", what="render", log=ct.log())
        assert not pid_file.is_symlink(), ct.log()
        assert read(pid_file) == str(ct.pid)
    assert read(victim) == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_write_to_file_refuses_symlinked_parent_and_file(consul, tmp_path):
    """Promise: ``writeToFile`` (its path comes from a template) refuses a symlinked parent
    directory and a symlinked file, even links made by root; nothing is written through
    them."""
    outside = tmp_path / "outside"
    outside.mkdir()
    linked_dir = tmp_path / "certs"
    linked_dir.symlink_to(outside)  # root's own link: still refused for writeToFile
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    victim = _victim(tmp_path / "root-only.conf")
    _plant_link(real_dir / "key.pem", victim)
    cases = {
        "parent": (
            linked_dir / "key.pem",
            f'writeToFile("{linked_dir}/key.pem"): the directory {linked_dir} is a symlink; '
            "refusing to write through it (name the real directory)",
        ),
        "file": (
            real_dir / "key.pem",
            f'writeToFile("{real_dir}/key.pem"): the file is a symlink; refusing to follow it',
        ),
    }
    for name, (path, message) in cases.items():
        src = tmp_path / f"{name}.j2"
        src.write_text(f'{{{{ writeToFile("{path}", "KEY") }}}}done\n')
        out = tmp_path / f"{name}.out"
        result = _once(consul, tmp_path, _template(src, out))
        assert result.returncode == 14, (name, result.stderr)
        assert f"[ERR] {src}:1: {message}; keeping the last good {out}" in result.stderr, name
    assert list(outside.iterdir()) == []
    assert read(victim) == "precious\n"


def test_write_to_file_sandbox_checks_the_directory_it_opens(consul, tmp_path):
    """Promise: with ``sandbox_path``, ``writeToFile`` writes only inside the sandbox, also
    when a directory on the way is a link (made by root) leading out of it."""
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (sandbox / "up").symlink_to(outside)
    src = sandbox / "w.j2"
    src.write_text(f'{{{{ writeToFile("{sandbox}/up/sub/f", "x") }}}}\n')
    result = _once(consul, tmp_path, _template(src, tmp_path / "w.out", sandbox_path=str(sandbox)))
    assert result.returncode == 14, result.stderr
    assert f"[ERR] {src}:1: " in result.stderr
    assert "outside the sandbox" in result.stderr
    assert list((outside / "sub").iterdir()) == []


# --- 13. setuid, setgid and sticky bits stay -----------------------------------------------------


def test_special_mode_bits_hold_on_every_write(consul, tmp_path):
    """Promise: ``perms = "4755"`` (and ``writeToFile``'s perms) hold on every write, not only
    the first: the owner is set before the mode (``chown`` clears setuid/setgid)."""
    src, dest = tmp_path / "tool.j2", tmp_path / "tool"
    wtf = tmp_path / "helper"
    for version in (1, 2, 3):
        src.write_text(
            f'#!/bin/sh\necho {version}\n{{{{ writeToFile("{wtf}", "v{version}", "2755", '
            'user="root", group="root") }}\n'
        )
        result = _once(consul, tmp_path, _template(src, dest, perms="4755"))
        assert result.returncode == 0, result.stderr
        assert read(dest) == f"#!/bin/sh\necho {version}\n\n"
        assert stat.S_IMODE(dest.stat().st_mode) == 0o4755, version
        assert read(wtf) == f"v{version}"
        assert stat.S_IMODE(wtf.stat().st_mode) == 0o2755, version


# --- 12. full disks: atomic writeToFile and backups ---------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A real 128 KiB filesystem (tmpfs; the tests run as root), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k,mode=0755", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert mounted.returncode == 0, f"cannot mount a small tmpfs (root needed): {mounted.stderr}"
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` up, then free ``leave`` bytes."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))


def test_write_to_file_on_a_full_disk_keeps_the_previous_file(consul, tmp_path, small_disk):
    """Promise: ``writeToFile`` replaces its file atomically: when the disk is full the
    template fails naming the file and the reason, and the previous content stays whole (it
    used to be truncated); no temporary file is left behind."""
    target = small_disk / "cert.pem"
    good = "GOOD\n" * 2000
    target.write_text(good)
    _fill(small_disk, leave=4096)
    src = tmp_path / "w.j2"
    src.write_text(f'{{{{ writeToFile("{target}", "NEW-" * 8000) }}}}done\n')
    out = tmp_path / "w.out"
    result = _once(consul, tmp_path, _template(src, out))
    assert result.returncode == 14, result.stderr
    assert (
        f'[ERR] {src}:1: writeToFile("{target}"): cannot write: No space left on device; '
        f"keeping the last good {out}"
    ) in result.stderr
    assert read(target) == good
    assert sorted(p.name for p in small_disk.iterdir()) == ["cert.pem", "filler"]

    (small_disk / "filler").unlink()  # room again: the new content, whole
    result = _once(consul, tmp_path, _template(src, out))
    assert result.returncode == 0, result.stderr
    assert read(target) == "NEW-" * 8000


def test_backup_on_a_nearly_full_disk_keeps_a_whole_backup(consul, tmp_path, small_disk):
    """Promise: ``backup = true`` never leaves a truncated ``.bak``: the backup is a hard link
    made under a temporary name and renamed into place, so it needs no room; when even the new
    file does not fit, the destination and its backup are left as they were."""
    src, dest = tmp_path / "app.j2", small_disk / "app.conf"
    bak = small_disk / "app.conf.bak"
    template = _template(src, dest, backup=True)
    small, large = "b" * 4000 + "\n", "d" * 40000 + "\n"
    for text in (small, large):
        src.write_text(text)
        result = _once(consul, tmp_path, template)
        assert result.returncode == 0, result.stderr
    assert (read(dest), read(bak)) == (large, small)

    _fill(small_disk, leave=8192)  # room for the new file, not for a copy of the large one
    new = "n" * 4000 + "\n"
    src.write_text(new)
    result = _once(consul, tmp_path, template)
    assert result.returncode == 0, result.stderr
    assert (read(dest), read(bak)) == (new, large)

    _fill(small_disk, leave=0)  # no room at all: nothing changes, the error says why
    src.write_text("z" * 20000 + "\n")
    result = _once(consul, tmp_path, template)
    assert result.returncode == 14, result.stderr
    assert (
        f"[ERR] {dest}: cannot write: No space left on device; keeping the last good {dest}"
    ) in result.stderr
    assert (read(dest), read(bak)) == (new, large)
    assert sorted(p.name for p in small_disk.iterdir()) == ["app.conf", "app.conf.bak", "filler"]


# --- 3. tokens and passwords never shown ---------------------------------------------------------

TOKEN = "5ecr3t-t0ken-c4fe"
RULE = "a token is one line of visible ASCII characters (the value is not shown)"


def _token_cases(tmp_path: Path) -> list[tuple[str, list[str], dict[str, str], str]]:
    """(id, extra args, environment, the expected error line)."""
    two_lines = tmp_path / "two-lines.token"
    two_lines.write_text(f"{TOKEN}\nsecond line\n")
    accented = tmp_path / "accented.token"
    accented.write_text(f"{TOKEN}é\n")
    config = tmp_path / "token.hcl"
    config.write_text(f'consul {{\n  token = "{TOKEN}\\u0001"\n}}\n')
    return [
        (
            "file-two-lines",
            ["-consul-token-file", str(two_lines)],
            {},
            f'flag -consul-token-file: "{two_lines}": the ACL token holds a line break (the file '
            f"has more than one line); {RULE}",
        ),
        (
            "file-non-ascii",
            ["-consul-token-file", str(accented)],
            {},
            f'flag -consul-token-file: "{accented}": the ACL token holds a character that is '
            f"not ASCII; {RULE}",
        ),
        (
            "env-non-ascii",
            [],
            {"CONSUL_HTTP_TOKEN": f"{TOKEN}é"},
            f"env CONSUL_HTTP_TOKEN: the ACL token holds a character that is not ASCII; {RULE}",
        ),
        (
            "env-file-two-lines",
            [],
            {"CONSUL_HTTP_TOKEN_FILE": str(two_lines)},
            f'env CONSUL_HTTP_TOKEN_FILE: "{two_lines}": the ACL token holds a line break (the '
            f"file has more than one line); {RULE}",
        ),
        (
            "config-control-character",
            ["-config", str(config)],
            {},
            f"{config}: consul.token: the ACL token holds a space or control character; {RULE}",
        ),
    ]


@pytest.mark.parametrize(
    "case",
    [
        "file-two-lines",
        "file-non-ascii",
        "env-non-ascii",
        "env-file-two-lines",
        "config-control-character",
    ],
)
def test_token_a_header_cannot_carry_is_a_config_error(consul, tmp_path, case):
    """Promise: a token that an HTTP header cannot carry (a second line in the token file, a
    non-ASCII or control character) is a configuration error at start: exit 15, one line naming
    the file, flag or variable, never the token itself (it used to be quoted in a warning and
    on /health, or to be an "internal error")."""
    cases = {c[0]: c[1:] for c in _token_cases(tmp_path)}
    args, env, expected = cases[case]
    src = tmp_path / "k.j2"
    src.write_text('x={{ key("a") }}\n')
    result = run_ctemplate(
        [
            "-consul-addr",
            consul.http_addr,
            *args,
            "-template",
            f"{src}:{tmp_path}/k.out",
            "-once",
            "-once-timeout",
            "10s",
        ],
        env=env,
        timeout=30,
    )
    assert (result.returncode, result.stderr) == (15, f"ctemplate: error: {expected}\n")
    assert TOKEN not in result.stderr


def test_password_in_the_address_is_never_shown(consul, tmp_path):
    """Promise: ``http://user:password@host`` in consul.address works (the credentials become
    basic auth) and the password appears neither in the log nor on /health when Consul cannot
    be reached."""
    from consul_harness import free_port

    key = f"sec-{os.getpid()}/pw"
    consul.put_kv(key, "ok")
    src = tmp_path / "k.j2"
    src.write_text(f'x={{{{ key("{key}") }}}}\n')
    out = tmp_path / "k.out"
    good = run_ctemplate(
        [
            "-consul-addr",
            f"http://admin:hunter2-pw@{consul.http_addr}",
            "-template",
            f"{src}:{out}",
            "-once",
        ],
        timeout=30,
    )
    assert good.returncode == 0, good.stderr
    assert read(out) == "x=ok\n"

    dead, status = free_port(), f"127.0.0.1:{free_port()}"
    args = [
        "-consul-addr",
        f"http://admin:hunter2-pw@127.0.0.1:{dead}",
        "-status-addr",
        status,
        "-template",
        f"{src}:{tmp_path}/other.out",
    ]
    with Daemon(args) as ct:
        wait_for(lambda: "cannot reach Consul" in ct.log(), what="the outage", log=ct.log())

        def health() -> str:
            import urllib.error
            import urllib.request

            try:
                with urllib.request.urlopen(f"http://{status}/health", timeout=5) as resp:
                    return resp.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.read().decode()
            except OSError:
                return ""

        wait_for(lambda: "cannot reach Consul" in health(), what="/health", log=ct.log())
        body = health()
        log = ct.log()
    assert f"http://127.0.0.1:{dead}" in log
    assert "hunter2" not in log
    assert "hunter2" not in body
    assert "admin" not in body


def test_kv_values_are_not_quoted_in_errors(consul, unique, tmp_path):
    """Promise: an error about a value read from Consul's KV store names the template's file,
    line and function, and what kind of value it was, never the value: neither in the log nor
    on /health."""
    from consul_harness import free_port

    consul.put_kv(f"{unique}/port", "hunter2-port")
    consul.put_kv(f"{unique}/doc", "user: hunter2-doc\npassword: [unclosed\n")
    consul.put_kv(f"{unique}/b64", "hunter2-b64!")
    cases = {
        "port": ("parseInt", "parseInt: a string of 12 characters is not a whole number"),
        "doc": ("parseYAML", "parseYAML: not YAML: "),
        "b64": ("base64Decode", "base64Decode: a string of 12 characters is not valid base64"),
    }
    args = ["-consul-addr", consul.http_addr]
    status = f"127.0.0.1:{free_port()}"
    for name, (function, _) in cases.items():
        src = tmp_path / f"{name}.j2"
        src.write_text(f'{{{{ key("{unique}/{name}") | {function} }}}}\n')
        args += ["-template", f"{src}:{tmp_path}/{name}.out"]
    with Daemon([*args, "-status-addr", status]) as ct:
        wait_for(lambda: ct.log().count("[ERR]") == 3, what="three errors", log=ct.log())
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{status}/health", timeout=5) as resp:
                body = resp.read().decode()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode()
        log = ct.log()
    for name, (_, message) in cases.items():
        assert f"[ERR] {tmp_path}/{name}.j2:1: {message}" in log, log
    assert "hunter2" not in log
    assert "not YAML" in body
    assert "hunter2" not in body
