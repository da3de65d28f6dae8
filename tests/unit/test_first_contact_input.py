"""First contact (issue 15): the mistakes a new user makes, each answered by one precise line
and the right exit code. These run the real command; the ones needing Consul are in
tests/integration/test_first_contact_consul.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from ctemplate_proc import run_ctemplate

from ctemplate.config.flags import parse_flags

FORMS = "write host:port, http://host:port or https://host:port, e.g. 127.0.0.1:8500"


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("ctemplate: error: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0].removeprefix("ctemplate: error: ")


# --- 4. a malformed Consul address ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("localhost:abc", f'"localhost:abc" is not a Consul address; {FORMS}'),
        ("local host:8500", f'"local host:8500" is not a Consul address; {FORMS}'),
        ("127.0.0.1:99999", f'"127.0.0.1:99999" is not a Consul address; {FORMS}'),
        ("http://[::1", f'"http://[::1" is not a Consul address; {FORMS}'),
        ("tcp://c:8500", f'"tcp://c:8500": the scheme tcp:// is not supported; {FORMS}'),
    ],
)
def test_malformed_consul_addr_flag_is_a_flag_error(
    value: str, message: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_ctemplate(["-once", "-consul-addr", value, "-template", f"/dev/null:{out}"])
    assert result.returncode == 13, result.stderr
    assert _error_line(result.stderr) == f"flag -consul-addr: {message}"
    assert not out.exists()


def test_malformed_consul_http_addr_is_an_env_error(tmp_path: Path) -> None:
    result = run_ctemplate(
        ["-once", "-template", f"/dev/null:{tmp_path / 'out'}"],
        env={"CONSUL_HTTP_ADDR": "consul:85OO"},
    )
    assert result.returncode == 15, result.stderr
    assert _error_line(result.stderr) == (
        f'env CONSUL_HTTP_ADDR: "consul:85OO" is not a Consul address; {FORMS}'
    )


def test_malformed_consul_address_in_a_file_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "ct.hcl"
    config.write_text('consul {\n  address = "https://consul/v1"\n}\n')
    result = run_ctemplate(["-once", "-config", str(config), "-template", "/dev/null:/dev/null"])
    assert result.returncode == 15, result.stderr
    assert _error_line(result.stderr) == (
        f'{config}: consul.address: "https://consul/v1" is not a Consul address; {FORMS}'
    )


@pytest.mark.parametrize(
    "value",
    [
        "127.0.0.1:8500",
        "consul",
        "http://c:8500/",
        "https://c.example:8501",
        "[::1]:8500",
        "consul.service.consul.:8500",
    ],
)
def test_good_addresses_pass(value: str) -> None:
    assert parse_flags(["-consul-addr", value]).consul_addr == value


# --- 5. consul-template's older flags ---------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "attr", "value", "expected"),
    [
        ("consul", "consul-addr", "consul_addr", "c:8500", "c:8500"),
        ("token", "consul-token", "consul_token", "t0k", "t0k"),
        ("auth", "consul-auth", "consul_auth", "u:p", "u:p"),
        ("ssl-cert", "consul-ssl-cert", "consul_ssl_cert", "c.pem", "c.pem"),
        ("ssl-key", "consul-ssl-key", "consul_ssl_key", "k.pem", "k.pem"),
        ("ssl-ca-cert", "consul-ssl-ca-cert", "consul_ssl_ca_cert", "ca.pem", "ca.pem"),
        ("ssl-ca-path", "consul-ssl-ca-path", "consul_ssl_ca_path", "/ca", "/ca"),
        ("ssl-server-name", "consul-ssl-server-name", "consul_ssl_server_name", "n", "n"),
        ("ssl-verify", "consul-ssl-verify", "consul_ssl_verify", "false", False),
        ("ssl", "consul-ssl", "consul_ssl", "true", True),
    ],
)
def test_old_flag_spellings_are_accepted_with_a_warning(
    old: str, new: str, attr: str, value: str, expected: object
) -> None:
    flags = parse_flags([f"-{old}={value}"])
    assert getattr(flags, attr) == expected
    assert flags.deprecations == (
        f"flag -{old}: deprecated consul-template spelling (renamed in its 0.18); "
        f"accepted as -{new}, write -{new}",
    )


def test_old_consul_flag_warns_once_and_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_ctemplate(
        ["-consul", "127.0.0.1:1", "-once", "-template", f"/dev/null:{out}"], timeout=30
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "[WARN]" in line]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].endswith(
        "[WARN] flag -consul: deprecated consul-template spelling (renamed in its 0.18); "
        "accepted as -consul-addr, write -consul-addr"
    )
    assert out.exists()


def test_old_ssl_no_verify_says_what_to_write() -> None:
    result = run_ctemplate(["-ssl-no-verify"])
    assert result.returncode == 13
    assert _error_line(result.stderr) == (
        "flag -ssl-no-verify: no longer exists; write -consul-ssl-verify=false"
    )


def test_old_flag_errors_name_the_flag_typed() -> None:
    result = run_ctemplate(["-consul", "a b"])
    assert result.returncode == 13
    assert _error_line(result.stderr) == f'flag -consul: "a b" is not a Consul address; {FORMS}'


# --- 6. an unquoted HCL value -----------------------------------------------------------------


def test_unquoted_hcl_value_names_the_line(tmp_path: Path) -> None:
    config = tmp_path / "ct.hcl"
    config.write_text(
        f'# first\ntemplate {{\n  source = ok.j2\n  destination = "{tmp_path / "out"}"\n}}\n'
    )
    result = run_ctemplate(["-once", "-config", str(config)])
    assert result.returncode == 15, result.stderr
    assert _error_line(result.stderr) == (
        f'{config}:3: source: the value must be quoted; write source = "ok.j2"'
    )


def test_unquoted_secret_is_not_echoed(tmp_path: Path) -> None:
    config = tmp_path / "ct.hcl"
    config.write_text("consul {\n  token = s3cr3t.value\n}\n")
    result = run_ctemplate(["-once", "-config", str(config), "-template", "/dev/null:/dev/null"])
    assert result.returncode == 15, result.stderr
    assert _error_line(result.stderr) == (
        f'{config}:2: token: the value must be quoted; write token = "..."'
    )
    assert "s3cr3t" not in result.stderr


def test_quoted_interpolation_is_left_alone(tmp_path: Path) -> None:
    config = tmp_path / "ct.hcl"
    config.write_text('template {\n  contents = "${ok.j2}"\n  destination = "/dev/null"\n}\n')
    result = run_ctemplate(["-once", "-dry", "-config", str(config)])
    assert result.returncode == 0, result.stderr
    assert "${ok.j2}" in result.stdout


# --- 9. -dry never claims to keep a file ------------------------------------------------------


def test_dry_errors_do_not_claim_to_keep_a_file(tmp_path: Path) -> None:
    src = tmp_path / "t.j2"
    src.write_text('{{ parseInt("eighty") }}\n')
    out = tmp_path / "out"
    result = run_ctemplate(["-once", "-dry", "-template", f"{src}:{out}"])
    assert result.returncode == 14
    (line,) = [x for x in result.stderr.splitlines() if "[ERR]" in x]
    assert line.split(" [ERR] ", 1)[1] == (
        f"{src}:1: parseInt: a string of 6 characters is not a whole number; "
        f"{out} is not printed (-dry)"
    )
    assert "keeping the last good" not in result.stderr


# --- 10. maps in key order, lists as lists, chained lookups through a missing key -------------


def test_maps_print_in_key_order_and_lists_as_lists(tmp_path: Path) -> None:
    src = tmp_path / "t.j2"
    src.write_text(
        '{% set y = "b: 1\\na: {d: 1, c: 2}" | parseYAML %}'
        'yaml={{ y }} keys={{ y | join(",") }}\n'
        'merge={{ {"b": 1} | mergeMap({"a": 2}) }} '
        'over={{ {"b": 1} | mergeMapWithOverride({"a": 2}) }}\n'
        'json={{ \'{"z": [1, {"q": 1, "p": 2}], "m": 0}\' | parseJSON }}\n'
        'tuple={{ ("x",) }} nested={{ {"k": ("v",)} }}\n'
        '{% set m = {"a": 1} %}one=[{{ m.missing }}] chain=[{{ m.missing.deeper }}]'
        ' item=[{{ m["missing"]["deeper"] }}]\n'
    )
    result = run_ctemplate(["-once", "-dry", "-template", f"{src}:{tmp_path / 'out'}"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n", 1)[1] == (
        "yaml={'a': {'c': 2, 'd': 1}, 'b': 1} keys=a,b\n"
        "merge={'a': 2, 'b': 1} over={'a': 2, 'b': 1}\n"
        "json={'m': 0, 'z': [1, {'p': 2, 'q': 1}]}\n"
        "tuple=['x'] nested={'k': ['v']}\n"
        "one=[] chain=[] item=[]\n"
    )


def test_missing_record_field_is_still_an_error(tmp_path: Path) -> None:
    src = tmp_path / "t.j2"
    src.write_text('{% set m = {"a": 1} %}{{ m.missing.deeper }}{{ "x".Nope }}\n')
    result = run_ctemplate(["-once", "-dry", "-template", f"{src}:{tmp_path / 'out'}"])
    assert result.returncode == 14
    assert "str has no attribute 'Nope'" in result.stderr


# --- 11. the first HCL file after an install is slow: say why -----------------------------------


def test_first_hcl_parse_says_the_parser_is_being_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import hcl2.parser

    from ctemplate.config.files import _note_parser_build

    missing = tmp_path / ".lark_cache.bin"
    monkeypatch.setattr(hcl2.parser, "PARSER_FILE", missing)
    with caplog.at_level("INFO", logger="ctemplate.config.files"):
        _note_parser_build()
        missing.write_bytes(b"")  # cached: nothing more to say
        _note_parser_build()
    assert [r.getMessage() for r in caplog.records] == [
        "(config) building python-hcl2's parser (first HCL file since it was installed; takes a "
        f"few seconds, then cached in {missing})"
    ]
