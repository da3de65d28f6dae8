"""Exec mode's configuration: ``exec`` blocks, the ``-exec*`` flags, the child's environment,
and bad input refused with one line naming the key (exit 15) before anything starts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from ctemplate_proc import run_ctemplate

from ctemplate.config import ExecConfig, ExecEnvConfig, load_config, parse_flags
from ctemplate.errors import ConfigError
from ctemplate.modes.exec import check_execs, child_env

TEMPLATE = 'template {\n  contents = "x"\n  destination = "/tmp/ct-exec-unit.out"\n}\n'


def _load(tmp_path: Path, text: str, *flags: str) -> tuple[ExecConfig, ...]:
    config = tmp_path / "ct.hcl"
    config.write_text(TEMPLATE + text)
    return load_config(parse_flags(["-config", str(config), *flags]), {}).execs


def test_block_as_consul_template_writes_it(tmp_path):
    (block,) = _load(
        tmp_path,
        'exec {\n  command = "app --serve"\n  splay = "5s"\n  reload_signal = "HUP"\n'
        '  kill_signal = "SIGTERM"\n  kill_timeout = "2s"\n  timeout = "0"\n'
        '  env {\n    pristine = false\n    custom = ["A=1"]\n    whitelist = ["PATH"]\n'
        '    denylist = ["SECRET_*"]\n  }\n}\n',
    )
    assert block == ExecConfig(
        command="app --serve",
        splay=5.0,
        reload_signal="SIGHUP",
        kill_signal="SIGTERM",
        kill_timeout=2.0,
        env=ExecEnvConfig(custom=("A=1",), allowlist=("PATH",), denylist=("SECRET_*",)),
        origin=f"{tmp_path}/ct.hcl: exec[1]",
    )


def test_defaults_and_our_extensions(tmp_path):
    first, second = _load(
        tmp_path,
        'exec {\n  command = ["app", "-v"]\n}\n'
        'exec {\n  command = "sidecar"\n  restart = "on-failure"\n  restart_backoff = "2s"\n'
        '  restart_max_backoff = "30s"\n  min_reload_interval = "10s"\n'
        '  templates = ["/tmp/ct-exec-unit.out"]\n}\n'
        'exec {\n  enabled = false\n  command = "off"\n}\n',
    )
    assert first.command == ("app", "-v")
    assert (first.reload_signal, first.kill_signal, first.kill_timeout) == ("", "SIGINT", 30.0)
    assert (first.restart, first.splay, first.min_reload_interval) == ("never", 0.0, 0.0)
    assert second.command == ("sidecar",)  # one word runs without a shell
    assert second.restart == "on-failure"
    assert (second.restart_backoff, second.restart_max_backoff) == (2.0, 30.0)
    assert second.min_reload_interval == 10.0
    assert second.templates == ("/tmp/ct-exec-unit.out",)


def test_flags_set_the_first_block_and_append_env_lists(tmp_path):
    first, second = _load(
        tmp_path,
        'exec {\n  command = "a b"\n  env {\n    custom = ["A=1"]\n  }\n}\n'
        'exec {\n  command = "c d"\n}\n',
        "-exec-reload-signal=SIGUSR1",
        "-exec-splay",
        "1s",
        "-exec-env-custom",
        "B=2",
        "-exec-restart",
        "always",
    )
    assert first.command == "a b"
    assert (first.reload_signal, first.splay, first.restart) == ("SIGUSR1", 1.0, "always")
    assert first.env.custom == ("A=1", "B=2")
    assert second.reload_signal == "" and second.env.custom == ()


def test_exec_flag_alone_makes_a_child():
    flags = parse_flags(["-template", "a:b", "-exec", "app --x", "-exec-kill-timeout", "3s"])
    (block,) = load_config(flags, {}).execs
    assert (block.command, block.kill_timeout, block.origin) == ("app --x", 3.0, "flag -exec")


def test_child_env_rules():
    environ = {"PATH": "/bin", "HOME": "/root", "SECRET_KEY": "s", "APP_X": "1"}
    base = ExecConfig(command="x")
    assert child_env(base, environ) == environ
    allow = ExecConfig(command="x", env=ExecEnvConfig(allowlist=("PATH", "APP_*", "SECRET_*")))
    assert child_env(allow, environ) == {"PATH": "/bin", "APP_X": "1", "SECRET_KEY": "s"}
    deny = ExecConfig(
        command="x",
        env=ExecEnvConfig(allowlist=("*",), denylist=("SECRET_*",), custom=("HOME=/app",)),
    )
    assert child_env(deny, environ) == {"PATH": "/bin", "HOME": "/app", "APP_X": "1"}
    pristine = ExecConfig(command="x", env=ExecEnvConfig(pristine=True, custom=("A=", "B=c=d")))
    assert child_env(pristine, environ) == {"A": "", "B": "c=d"}


@pytest.mark.parametrize(
    "command",
    ['"nosuch-program-xyz --flag"', '["nosuch-program-xyz"]', '"FOO=1 exec nosuch-program-xyz"'],
)
def test_missing_program_is_refused_before_start(tmp_path, command):
    with pytest.raises(ConfigError) as info:
        check_execs(_load(tmp_path, f"exec {{\n  command = {command}\n}}\n"), [], {"PATH": "/bin"})
    assert str(info.value) == (
        f"{tmp_path}/ct.hcl: exec[1].command: 'nosuch-program-xyz' is not an executable file "
        "on the PATH; check the command's spelling or install it"
    )


def test_shell_syntax_and_known_programs_pass_the_check(tmp_path):
    execs = _load(
        tmp_path,
        f'exec {{\n  command = "{sys.executable} -V"\n}}\n'
        'exec {\n  command = "cd / && $APP"\n}\n'
        'exec {\n  command = "exec sleep 1"\n}\n',
    )
    check_execs(execs, ["/tmp/ct-exec-unit.out"], {"PATH": "/usr/bin:/bin"})


BAD = [
    (
        'exec {\n  command = "sleep 1"\n  reload_signal = "SIGFOO"\n}\n',
        'exec[1].reload_signal: "SIGFOO" is not a signal name; write e.g. "SIGHUP" or "SIGTERM"',
    ),
    (
        'exec {\n  command = "sleep 1"\n  kill_timeout = "-5s"\n}\n',
        'exec[1].kill_timeout: "-5s" must not be negative',
    ),
    (
        'exec {\n  command = "sleep 1"\n  restart = "sometimes"\n}\n',
        'exec[1].restart: "sometimes" is not a restart policy; use "never", "on-failure" '
        'or "always"',
    ),
    (
        'exec {\n  splay = "1s"\n}\n',
        "exec[1]: command is required (the program to start and supervise)",
    ),
    (
        'exec {\n  command = ""\n}\n',
        "exec[1].command: must not be empty; write the command that starts the child",
    ),
    (
        'exec {\n  command = "sleep 1"\n  env {\n    custom = ["NOVALUE"]\n  }\n}\n',
        'exec[1].env.custom: "NOVALUE" is not KEY=value; write e.g. "APP_MODE=production"',
    ),
    (
        'exec {\n  command = "sleep 1"\n  env {\n    pristine = "maybe"\n  }\n}\n',
        'exec[1].env.pristine: "maybe" is not a boolean; write true or false',
    ),
    (
        'exec {\n  command = "sleep 1"\n  templates = ["/elsewhere.conf"]\n}\n',
        "exec[1].templates: '/elsewhere.conf' is not the destination of any template; "
        "list template destinations",
    ),
    (
        'exec {\n  command = "nosuch-program-xyz"\n}\n',
        "exec[1].command: 'nosuch-program-xyz' is not an executable file on the PATH; "
        "check the command's spelling or install it",
    ),
    (
        'exec {\n  command = "sleep 1"\n  kill_sigal = "SIGTERM"\n}\n',
        'exec[1].kill_sigal: unknown key (did you mean "kill_signal"?)',
    ),
]


@pytest.mark.parametrize(("block", "message"), BAD)
def test_bad_exec_block_is_one_line_and_exit_15(tmp_path, block, message):
    config = tmp_path / "ct.hcl"
    config.write_text(TEMPLATE + block)
    # An address nothing listens on: the error comes before any request.
    result = run_ctemplate(["-config", str(config), "-consul-addr", "127.0.0.1:9"], timeout=30)
    assert result.returncode == 15, result.stderr
    assert result.stderr == f"ctemplate: error: {config}: {message}\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["-exec-splay", "1s"],
            15,  # a configuration error: the flag itself is well formed
            "flag -exec-splay: there is no child to apply it to; add -exec "
            "COMMAND or an exec block",
        ),
        (
            ["-exec", "sleep 1", "-exec-kill-signal", "KILL"],
            13,
            'flag -exec-kill-signal: SIGKILL cannot be caught; write e.g. "SIGTERM"',
        ),
        (
            ["-exec", "sleep 1", "-exec-kill-timeout", "-1s"],
            13,
            'flag -exec-kill-timeout: "-1s" must not be negative',
        ),
    ],
)
def test_bad_exec_flags(args, code, message):
    result = run_ctemplate(["-template", "a:b", "-consul-addr", "127.0.0.1:9", *args], timeout=30)
    assert result.returncode == code, result.stderr
    assert result.stderr == f"ctemplate: error: {message}\n"


def test_json_config_one_block_or_a_list(tmp_path):
    config = tmp_path / "ct.json"
    template = {"contents": "x", "destination": "/tmp/ct-exec-unit.out"}
    one = {"command": ["app", "-v"], "reload_signal": "SIGUSR2", "env": {"custom": ["A=1"]}}
    config.write_text(json.dumps({"template": [template], "exec": one}))
    (block,) = load_config(parse_flags(["-config", str(config)]), {}).execs
    assert (block.command, block.reload_signal, block.env.custom) == (
        ("app", "-v"),
        "SIGUSR2",
        ("A=1",),
    )
    assert block.origin == f"{config}: exec[1]"
    two = [{"command": "a"}, {"command": "b c"}]
    config.write_text(json.dumps({"template": [template], "exec": two}))
    execs = load_config(parse_flags(["-config", str(config)]), {}).execs
    assert [e.command for e in execs] == [("a",), "b c"]
