"""Bad input: each case checks the exact line a user sees, the exit status, and that no
traceback is printed (README, "Promises": errors say where, what, and what to do).

Exit statuses are consul-template's: 13 bad flags, 14 runtime error, 15 bad configuration.
"""

from __future__ import annotations

import time

import pytest
from ctemplate_proc import read, run_ctemplate

CONFIG_CASES = [
    (
        "unknown-key",
        'templte {\n  source = "a"\n}\n',
        'ct.hcl: templte: unknown key (did you mean "template"?)',
    ),
    (
        "unknown-nested-key",
        'template {\n  source = "a"\n  destination = "b"\n  on_command_faillure = "exit"\n}\n',
        'ct.hcl: template[1].on_command_faillure: unknown key (did you mean "on_command_failure"?)',
    ),
    (
        "syntax-missing-brace",
        'consul {\n  address = "127.0.0.1:8500"\n',
        "ct.hcl:3:1: unexpected end of file; a '}' is missing",
    ),
    ("syntax-extra-brace", 'max_stale = "1s"\n}\n', "ct.hcl:2:1: unexpected '}'"),
    (
        "duration-words",
        'max_stale = "5 seconds"\n',
        'ct.hcl: max_stale: "5 seconds" is not a duration (write e.g. "5s" or "250ms")',
    ),
    (
        "duration-without-unit",
        'template {\n  source = "a"\n  destination = "b"\n  command_timeout = "10"\n}\n',
        'ct.hcl: template[1].command_timeout: "10" is not a duration (write e.g. "5s" or "250ms")',
    ),
    (
        "negative-duration",
        'max_unavailable = "-1m"\n',
        'ct.hcl: max_unavailable: "-1m" must not be negative',
    ),
    (
        "wait-max-below-min",
        'wait {\n  min = "10s"\n  max = "1s"\n}\n',
        "ct.hcl: wait: max must not be less than min",
    ),
    (
        "on-command-failure-choice",
        'template {\n  source = "a"\n  destination = "b"\n  on_command_failure = "ignore"\n}\n',
        'ct.hcl: template[1].on_command_failure: "ignore" is not a choice; use "log" (report and '
        'carry on) or "exit" (stop ctemplate)',
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_bad_config_file(tmp_path, text, expected):
    """Promise: a bad configuration file is one error line naming the file and the key (or
    line:column), exit status 15, no traceback."""
    config = tmp_path / "ct.hcl"
    config.write_text(text)
    result = run_ctemplate(["-config", str(config)])
    assert (result.returncode, result.stderr) == (15, f"ctemplate: error: {tmp_path}/{expected}\n")


def test_config_file_not_utf8(tmp_path):
    """Promise: a config file that is not UTF-8 is reported with the byte offset, status 15."""
    config = tmp_path / "ct.hcl"
    config.write_bytes(b'max_stale = "\xff"\n')
    result = run_ctemplate(["-config", str(config)])
    assert (result.returncode, result.stderr) == (
        15,
        f"ctemplate: error: {config}: not UTF-8 text (byte 13)\n",
    )


FLAG_CASES = [
    ("unknown", ["-onse"], "unknown flag -onse (did you mean -once?)"),
    (
        "wait-max-below-min",
        ["-wait", "5s:1s"],
        'flag -wait: "5s:1s": max must not be less than min',
    ),
    (
        "wait-not-a-duration",
        ["-wait", "5"],
        'flag -wait: "5" is not a duration (write e.g. "5s" or "250ms")',
    ),
    (
        "once-timeout-without-once",
        ["-once-timeout", "5s"],
        ("flag -once-timeout: only works with -once; add -once"),
    ),
    (
        "max-unavailable-words",
        ["-max-unavailable", "forever"],
        'flag -max-unavailable: "forever" is not a duration (write e.g. "5s" or "250ms")',
    ),
    (
        "retry-attempts-negative",
        ["-consul-retry-attempts", "-1"],
        'flag -consul-retry-attempts: "-1" is not a whole number; write e.g. 12 '
        "(0 = retry forever)",
    ),
    (
        "missing-value",
        ["-consul-addr"],
        "flag -consul-addr: missing value; write -consul-addr=host:port",
    ),
    (
        "template-without-destination",
        ["-template", "a.j2"],
        'flag -template: "a.j2": expected "source:destination[:command]" with a non-empty '
        "source and destination",
    ),
    ("positional", ["render"], 'unexpected argument "render" (ctemplate takes only flags)'),
]


@pytest.mark.parametrize(
    ("argv", "expected"), [c[1:] for c in FLAG_CASES], ids=[c[0] for c in FLAG_CASES]
)
def test_bad_flags(argv, expected):
    """Promise: a bad flag is one error line naming the flag, exit status 13, no traceback."""
    result = run_ctemplate(argv if "-template" in argv else ["-template", "a:b", *argv])
    assert (result.returncode, result.stderr) == (13, f"ctemplate: error: {expected}\n")


def test_missing_and_broken_template_files(tmp_path):
    """Promise: a template file that is missing, not UTF-8 or has a syntax error stops the start
    with one error line naming it (status 14); nothing is written."""
    (tmp_path / "bin.j2").write_bytes(b'\xff\xfe{{ key("x") }}\n')
    (tmp_path / "bad.j2").write_text("ok\n{% for x in %}\n")
    cases = [
        (
            "nope.j2",
            f"-template[1]: source '{tmp_path}/nope.j2' does not exist; check the path",
        ),
        (
            "bin.j2",
            f"-template[1]: cannot read source '{tmp_path}/bin.j2': 'utf-8' codec can't decode "
            "byte 0xff in position 0: invalid start byte",
        ),
        (
            "bad.j2",
            f"{tmp_path}/bad.j2:2: syntax error: Expected an expression, got 'end of statement "
            "block'",
        ),
    ]
    for name, expected in cases:
        result = run_ctemplate(
            [
                "-consul-addr",
                "127.0.0.1:1",
                "-once",
                "-template",
                f"{tmp_path / name}:{tmp_path}/out",
            ]
        )
        assert (result.returncode, result.stderr) == (14, f"ctemplate: error: {expected}\n")
    assert not (tmp_path / "out").exists()


def test_kv_value_not_utf8(consul, unique, tmp_path):
    """Promise: a KV value that is not UTF-8 does not break rendering: its undecodable bytes
    become U+FFFD (documented) and the rest of the value is kept."""
    consul.put_kv(f"{unique}/bin", b"caf\xc3\xa9 \xff\xfe end")
    src = tmp_path / "t.j2"
    src.write_text(f'v={{{{ key("{unique}/bin") }}}}\n')
    result = run_ctemplate(
        ["-consul-addr", consul.http_addr, "-once", "-template", f"{src}:{tmp_path}/out"]
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_text(encoding="utf-8") == "v=café \ufffd\ufffd end\n"


def test_kv_value_of_10_megabytes(consul_agent_factory, tmp_path):
    """Promise: a 10 MB KV value (agent configured to accept it) is read, rendered and written
    whole, in a few seconds."""
    agent = consul_agent_factory(extra_args=["-hcl", "limits { kv_max_value_size = 16777216 }"])
    line = "0123456789abcdef" * 8 + "\n"  # 129 bytes
    value = line * (10 * 1024 * 1024 // len(line))
    agent.put_kv("big/blob", value)
    src = tmp_path / "t.j2"
    src.write_text('{{ key("big/blob") }}')
    started = time.monotonic()
    result = run_ctemplate(
        ["-consul-addr", agent.http_addr, "-once", "-template", f"{src}:{tmp_path}/out"]
    )
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert read(tmp_path / "out") == value
    assert took < 20, took
