"""Command-line flags: every form consul-template (Go's flag package) accepts, and the errors."""

from __future__ import annotations

import pytest

from ctemplate.config import TemplateConfig, WaitConfig
from ctemplate.config.flags import _SPECS, Flags, parse_flags, usage
from ctemplate.errors import ConfigError


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], Flags()),
        (["-once"], Flags(once=True)),
        (["--once"], Flags(once=True)),
        (["-once=true"], Flags(once=True)),
        (["--once=false"], Flags(once=False)),
        (["-once=1", "-dry=T"], Flags(once=True, dry=True)),
        (["-consul-retry=false"], Flags(consul_retry=False)),
        (["-consul-ssl"], Flags(consul_ssl=True)),
        (["-consul-ssl-verify=false"], Flags(consul_ssl_verify=False)),
        (["-wait=5s:10s"], Flags(wait=WaitConfig(5.0, 10.0))),
        (["-wait", "5s"], Flags(wait=WaitConfig(5.0, 20.0))),
        (["--wait", "1m:2m"], Flags(wait=WaitConfig(60.0, 120.0))),
        (["--wait=250ms"], Flags(wait=WaitConfig(0.25, 1.0))),
        (["-wait=1s", "-wait=2s"], Flags(wait=WaitConfig(2.0, 8.0))),  # last one wins
        (["-config", "a.hcl", "--config=b.d", "-config=c"], Flags(configs=("a.hcl", "b.d", "c"))),
        (["-consul-addr", "10.0.0.1:8500"], Flags(consul_addr="10.0.0.1:8500")),
        (["-consul-addr=https://c:8501"], Flags(consul_addr="https://c:8501")),
        (["-consul-token", "abc"], Flags(consul_token="abc")),
        (["-consul-token="], Flags(consul_token="")),
        (["-consul-token", "-starts-with-dash"], Flags(consul_token="-starts-with-dash")),
        (["-consul-token-file=/run/tok"], Flags(consul_token_file="/run/tok")),
        (["-consul-auth", "user"], Flags(consul_auth="user")),
        (["-consul-auth=user:pa:ss"], Flags(consul_auth="user:pa:ss")),
        (["-consul-retry-attempts", "0"], Flags(consul_retry_attempts=0)),
        (["-consul-retry-attempts=12"], Flags(consul_retry_attempts=12)),
        (["-consul-retry-backoff", "250ms"], Flags(consul_retry_backoff=0.25)),
        (["-consul-retry-max-backoff=1m"], Flags(consul_retry_max_backoff=60.0)),
        (["-consul-ssl-ca-cert", "ca.pem"], Flags(consul_ssl_ca_cert="ca.pem")),
        (["-consul-ssl-ca-path", "cas"], Flags(consul_ssl_ca_path="cas")),
        (["-consul-ssl-cert", "c.pem"], Flags(consul_ssl_cert="c.pem")),
        (["-consul-ssl-key", "k.pem"], Flags(consul_ssl_key="k.pem")),
        (["-consul-ssl-server-name", "consul"], Flags(consul_ssl_server_name="consul")),
        (["-max-stale", "10m"], Flags(max_stale=600.0)),
        (["-max-stale=0"], Flags(max_stale=0.0)),
        (["-log-level", "WARNING"], Flags(log_level="warn")),
        (["-log-level=err"], Flags(log_level="err")),
        (["-pid-file", "/run/ct.pid"], Flags(pid_file="/run/ct.pid")),
        (["-status-addr", "[::1]:9110"], Flags(status_address="[::1]:9110")),
        (["-status-addr="], Flags(status_address="")),
        (["-kill-signal", "term"], Flags(kill_signal="SIGTERM")),
        (["-reload-signal="], Flags(reload_signal="")),
        (["-reload-signal", "SIGUSR1"], Flags(reload_signal="SIGUSR1")),
        (["-default-left-delimiter", "[["], Flags(default_left_delimiter="[[")),
        (["-default-right-delimiter=]]"], Flags(default_right_delimiter="]]")),
        (["-retry", "10s"], Flags(retry=10.0)),
        (["-version"], Flags(version=True)),
        (["-v"], Flags(version=True)),
        (["--version"], Flags(version=True)),
        (["-once", "--"], Flags(once=True)),
        (["-help=false", "-once"], Flags(once=True)),
    ],
)
def test_flag_forms(argv: list[str], expected: Flags) -> None:
    assert parse_flags(argv) == expected


@pytest.mark.parametrize(
    ("value", "source", "destination", "command"),
    [
        ("a:b", "a", "b", None),
        ("a:b:", "a", "b", None),
        ("a:b:c", "a", "b", "c"),
        ("a:b:c:d", "a", "b", "c:d"),
        (
            "/in/nginx.ctmpl:/etc/nginx/nginx.conf:nginx -s reload && echo ok: done",
            "/in/nginx.ctmpl",
            "/etc/nginx/nginx.conf",
            "nginx -s reload && echo ok: done",
        ),
    ],
)
def test_template_flag(value: str, source: str, destination: str, command: str | None) -> None:
    assert parse_flags(["-template", value]).templates == (
        TemplateConfig(
            source=source, destination=destination, command=command, origin="-template[1]"
        ),
    )


def test_template_flag_repeats_in_order() -> None:
    flags = parse_flags(["-template=a:b", "--template", "c:d:e"])
    assert flags.templates == (
        TemplateConfig(source="a", destination="b", origin="-template[1]"),
        TemplateConfig(source="c", destination="d", command="e", origin="-template[2]"),
    )


@pytest.mark.parametrize("argv", [["-h"], ["-help"], ["--help"], ["-h", "-bogus"], ["-once", "-h"]])
def test_help_stops_parsing(argv: list[str]) -> None:
    assert parse_flags(argv) == Flags(help=True)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-foo"], "unknown flag -foo (see ctemplate -help)"),
        (["--foo=1"], "unknown flag -foo (see ctemplate -help)"),
        (["-consul-adr", "x"], "unknown flag -consul-adr (did you mean -consul-addr?)"),
        (["-onse"], "unknown flag -onse (did you mean -once?)"),
        (["-wait"], "flag -wait: missing value; write -wait=min[:max]"),
        (["--consul-addr"], "flag -consul-addr: missing value; write -consul-addr=host:port"),
        (["-wait=5s:1s"], 'flag -wait: "5s:1s": max must not be less than min'),
        (["-wait", "5x"], 'flag -wait: "5x" is not a duration (write e.g. "5s" or "250ms")'),
        (["-wait=-1s"], 'flag -wait: "-1s" must not be negative'),
        (
            ["-max-stale", "10"],
            'flag -max-stale: "10" is not a duration (write e.g. "5s" or "250ms")',
        ),
        (["-once=maybe"], 'flag -once: "maybe" is not a boolean; write true or false'),
        (["-once", "false"], 'unexpected argument "false" (ctemplate takes only flags)'),
        (["extra"], 'unexpected argument "extra" (ctemplate takes only flags)'),
        (["-once", "--", "x"], 'unexpected argument "x" (ctemplate takes only flags)'),
        (["-"], 'unexpected argument "-" (ctemplate takes only flags)'),
        (["---once"], 'bad flag syntax: "---once"'),
        (["-=x"], 'bad flag syntax: "-=x"'),
        (
            ["-template", "a"],
            'flag -template: "a": expected "source:destination[:command]" with a non-empty '
            "source and destination",
        ),
        (
            ["-template=:b"],
            'flag -template: ":b": expected "source:destination[:command]" with a non-empty '
            "source and destination",
        ),
        (
            ["-template=a::c"],
            'flag -template: "a::c": expected "source:destination[:command]" with a non-empty '
            "source and destination",
        ),
        (
            ["-consul-retry-attempts", "-1"],
            'flag -consul-retry-attempts: "-1" is not a whole number; write e.g. 12 '
            "(0 = retry forever)",
        ),
        (
            ["-log-level", "loud"],
            'flag -log-level: "loud" is not a log level; use one of trace, debug, info, warn, err',
        ),
        (
            ["-kill-signal", "SIGNOPE"],
            'flag -kill-signal: "SIGNOPE" is not a signal name; write e.g. "SIGHUP" or "SIGTERM"',
        ),
        (
            ["-reload-signal=STOP"],
            'flag -reload-signal: SIGSTOP cannot be caught; write e.g. "SIGTERM"',
        ),
        (["-consul-addr="], "flag -consul-addr: must not be empty"),
        (["-config", ""], "flag -config: must not be empty"),
        (
            ["-consul-auth", ":pw"],
            "flag -consul-auth: expected user[:password] with a non-empty user",
        ),
        (["-h=maybe"], 'flag -help: "maybe" is not a boolean; write true or false'),
    ],
)
def test_flag_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_flags(argv)
    assert str(info.value) == message


def test_secrets_not_in_repr() -> None:
    flags = parse_flags(["-consul-token", "tok-123", "-consul-auth", "u:pw-456"])
    assert (flags.consul_token, flags.consul_auth) == ("tok-123", "u:pw-456")
    assert "tok-123" not in repr(flags)
    assert "pw-456" not in repr(flags)


def test_usage_lists_every_flag() -> None:
    text = usage()
    assert text.startswith("Usage: ctemplate [flags]\n")
    for name in _SPECS:
        assert f"  -{name}" in text
    assert "-version, -v" in text
    assert "-help, -h" in text
    assert all(len(line) <= 100 for line in text.splitlines())
