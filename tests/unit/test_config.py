"""Config loading: HCL (both forms) and JSON files, directories, environment, flags, errors."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest

from ctemplate.config import (
    AuthConfig,
    Config,
    ConsulConfig,
    RetryConfig,
    SSLConfig,
    TemplateConfig,
    WaitConfig,
    load_config,
    load_config_file,
    parse_bool,
    parse_duration,
    parse_log_level,
    parse_perms,
    parse_signal,
    parse_wait,
)
from ctemplate.config.flags import parse_flags
from ctemplate.errors import ConfigError

WORKSHOP = """\
consul = "127.0.0.1:8500"
retry = "10s"
max_stale = "10m"
log_level = "info"
pid_file = "/var/run/consul-template.pid"
template {
  source = "/usr/local/sample.conf.ctmpl"
  destination = "/etc/nginx/conf.d/sample.conf"
  command = "systemctl reload nginx"
}
"""

SECRET = "s3cr3t-7a0c-4bd1-token"


def tmpl_block(source: str, destination: str) -> str:
    return f'template {{\n  source = "{source}"\n  destination = "{destination}"\n}}\n'


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # File names in messages are the paths as given: run in tmp_path so they read "ct.hcl".
    monkeypatch.chdir(tmp_path)


def write(name: str, text: str) -> str:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return name


def load(*argv: str, env: dict[str, str] | None = None) -> Config:
    return load_config(parse_flags(list(argv)), env or {})


def load_text(text: str, name: str = "ct.hcl") -> Config:
    return load("-config", write(name, text))


def error_of(text: str, name: str = "ct.hcl") -> str:
    with pytest.raises(ConfigError) as info:
        load_text(text, name)
    return str(info.value)


def template(**options: object) -> TemplateConfig:
    options.setdefault("origin", "ct.hcl: template[1]")
    return TemplateConfig(**options)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# Whole files


def test_defaults() -> None:
    assert load() == Config()


def test_workshop_example_older_form() -> None:
    assert load_text(WORKSHOP) == Config(
        consul=ConsulConfig(address="127.0.0.1:8500", retry=RetryConfig(backoff=10.0)),
        templates=(
            template(
                source="/usr/local/sample.conf.ctmpl",
                destination="/etc/nginx/conf.d/sample.conf",
                command="systemctl reload nginx",
            ),
        ),
        max_stale=600.0,
        log_level="info",
        pid_file="/var/run/consul-template.pid",
    )


CURRENT_FORM = """\
# the current consul-template form
consul {
  address = "consul.example:8501"
  auth {
    username = "ops"
    password = "hunter2"
  }
  retry {
    enabled = true
    attempts = 5
    backoff = "500ms"
    max_backoff = "30s"
  }
  ssl {
    verify = false
    ca_cert = "/etc/ssl/ca.pem"
    server_name = "consul.example"
  }
}
wait {
  min = "2s"
  max = "10s"
}
max_stale = "1m"
block_query_wait = "30s"
log_level = "DEBUG"
kill_signal = "TERM"
reload_signal = ""
default_delimiters {
  left = "[["
  right = "]]"
}
template {
  source = "in.ctmpl"
  destination = "out/a.conf"
  command = ["nginx", "-s", "reload"]
  command_timeout = "1m"
  check_command = "nginx -t -c out/a.conf"
  perms = 0640
  backup = true
  create_dest_dirs = false
  wait = "1s:3s"
  left_delimiter = "<%"
  right_delimiter = "%>"
  error_on_missing_key = "true"
}
template {
  contents = <<EOT
{{ key "a" }}
EOT
  destination = "b.txt"
  perms = "0600"
  wait {
    min = "5s"
  }
}
"""

CURRENT_FORM_CONFIG = Config(
    consul=ConsulConfig(
        address="consul.example:8501",
        auth=AuthConfig(enabled=True, username="ops", password="hunter2"),
        retry=RetryConfig(enabled=True, attempts=5, backoff=0.5, max_backoff=30.0),
        ssl=SSLConfig(
            enabled=True, verify=False, ca_cert="/etc/ssl/ca.pem", server_name="consul.example"
        ),
    ),
    templates=(
        template(
            source="in.ctmpl",
            destination="out/a.conf",
            command=("nginx", "-s", "reload"),
            command_timeout=60.0,
            check_command="nginx -t -c out/a.conf",
            perms=0o640,
            backup=True,
            create_dest_dirs=False,
            wait=WaitConfig(1.0, 3.0),
            left_delimiter="<%",
            right_delimiter="%>",
            error_on_missing_key=True,
        ),
        template(
            # python-hcl2 drops a heredoc's final newline
            contents='{{ key "a" }}',
            destination="b.txt",
            perms=0o600,
            wait=WaitConfig(5.0, 20.0),
            origin="ct.hcl: template[2]",
        ),
    ),
    wait=WaitConfig(2.0, 10.0),
    max_stale=60.0,
    block_query_wait=30.0,
    log_level="debug",
    kill_signal="SIGTERM",
    reload_signal="",
    default_left_delimiter="[[",
    default_right_delimiter="]]",
)


def test_current_form() -> None:
    assert load_text(CURRENT_FORM) == CURRENT_FORM_CONFIG


CURRENT_FORM_JSON = """\
{
  "consul": {
    "address": "consul.example:8501",
    "auth": {"username": "ops", "password": "hunter2"},
    "retry": {"enabled": true, "attempts": 5, "backoff": "500ms", "max_backoff": "30s"},
    "ssl": {"verify": false, "ca_cert": "/etc/ssl/ca.pem", "server_name": "consul.example"}
  },
  "wait": {"min": "2s", "max": "10s"},
  "max_stale": "1m",
  "block_query_wait": 30,
  "log_level": "DEBUG",
  "kill_signal": "TERM",
  "reload_signal": "",
  "default_delimiters": {"left": "[[", "right": "]]"},
  "template": [
    {
      "source": "in.ctmpl",
      "destination": "out/a.conf",
      "command": ["nginx", "-s", "reload"],
      "command_timeout": "1m",
      "check_command": "nginx -t -c out/a.conf",
      "perms": "0640",
      "backup": true,
      "create_dest_dirs": false,
      "wait": "1s:3s",
      "left_delimiter": "<%",
      "right_delimiter": "%>",
      "error_on_missing_key": true
    },
    {
      "contents": "{{ key \\"a\\" }}",
      "destination": "b.txt",
      "perms": "0600",
      "wait": {"min": "5s"}
    }
  ]
}
"""


def test_json_config() -> None:
    expected = replace(
        CURRENT_FORM_CONFIG,
        templates=tuple(
            replace(t, origin=t.origin.replace("ct.hcl", "ct.json"))
            for t in CURRENT_FORM_CONFIG.templates
        ),
    )
    assert load_text(CURRENT_FORM_JSON, "ct.json") == expected


def test_json_single_template_object() -> None:
    config = load_text('{"template": {"source": "a", "destination": "b"}}', "ct.json")
    assert config.templates == (
        template(source="a", destination="b", origin="ct.json: template[1]"),
    )


def test_load_config_file_returns_only_what_the_file_sets() -> None:
    layer = load_config_file(write("ct.hcl", 'max_stale = "5s"\nlog_level = "warning"\n'))
    assert layer == {"max_stale": 5.0, "log_level": "warn"}


def test_directory_of_configs(caplog: pytest.LogCaptureFixture) -> None:
    write("conf.d/b.hcl", 'template {\n  source = "b"\n  destination = "B"\n}\nmax_stale = "1s"\n')
    write("conf.d/a.json", '{"template": [{"source": "a", "destination": "A"}], "max_stale": "9s"}')
    write("conf.d/c/d.hcl", 'template {\n  source = "d"\n  destination = "D"\n}\n')
    write("conf.d/e.hcl", 'template {\n  source = "e"\n  destination = "E"\n}\nmax_stale = "3s"\n')
    write("elsewhere.hcl", 'template {\n  source = "x"\n  destination = "X"\n}\n')
    os.symlink(os.path.abspath("elsewhere.hcl"), "conf.d/link.hcl")
    os.symlink(os.path.abspath("conf.d/c"), "conf.d/linkdir")
    with caplog.at_level(logging.WARNING, logger="ctemplate.config"):
        config = load("-config", "conf.d")
    assert config.templates == (
        template(source="a", destination="A", origin="conf.d/a.json: template[1]"),
        template(source="b", destination="B", origin="conf.d/b.hcl: template[1]"),
        template(source="d", destination="D", origin="conf.d/c/d.hcl: template[1]"),
        template(source="e", destination="E", origin="conf.d/e.hcl: template[1]"),
    )
    assert config.max_stale == 3.0  # lexical order: e.hcl is read last
    assert "conf.d/link.hcl: symbolic link in a config directory; skipped" in caplog.messages


def test_missing_config_path() -> None:
    with pytest.raises(ConfigError) as info:
        load("-config", "nope.hcl")
    assert str(info.value) == 'flag -config: "nope.hcl": no such file or directory'


# ------------------------------------------------------------------------------------------
# Merging and precedence


def test_precedence_defaults_env_files_flags() -> None:
    env = {"CONSUL_HTTP_ADDR": "env:8500", "CT_LOG": "trace"}
    write("one.hcl", 'consul {\n  address = "one:8500"\n}\nmax_stale = "4s"\n')
    write("two.hcl", 'consul = "two:8500"\n')
    assert load(env=env).consul.address == "env:8500"
    assert load("-config", "one.hcl", env=env).consul.address == "one:8500"
    config = load("-config", "one.hcl", "-config", "two.hcl", env=env)
    assert (config.consul.address, config.max_stale, config.log_level) == ("two:8500", 4.0, "trace")
    config = load("-config", "one.hcl", "-config", "two.hcl", "-consul-addr", "flag:8500", env=env)
    assert config.consul.address == "flag:8500"
    assert load("-config", "one.hcl", "-max-stale", "0").max_stale == 0.0


def test_nested_maps_merge_across_files_and_templates_append() -> None:
    write("one.hcl", 'consul {\n  address = "one:8500"\n}\n' + tmpl_block("a", "A"))
    write("two.hcl", "consul {\n  retry {\n    attempts = 3\n  }\n}\n" + tmpl_block("b", "B"))
    write("three.json", '{"consul": {"retry": {"backoff": "1s"}}}')
    argv = "-config one.hcl -config two.hcl -config three.json -template c:C"
    config = load(*argv.split(), "-consul-retry-max-backoff", "2m")
    assert config.consul == ConsulConfig(
        address="one:8500", retry=RetryConfig(attempts=3, backoff=1.0, max_backoff=120.0)
    )
    assert config.templates == (
        template(source="a", destination="A", origin="one.hcl: template[1]"),
        template(source="b", destination="B", origin="two.hcl: template[1]"),
        TemplateConfig(source="c", destination="C", origin="-template[1]"),
    )


def test_single_blocks_written_twice_in_one_file_last_wins() -> None:
    config = load_text(
        'consul {\n  address = "first:1"\n}\nconsul {\n  retry {\n    attempts = 1\n  }\n}\n'
        'wait {\n  min = "1s"\n}\nwait {\n  min = "2s"\n  max = "3s"\n}\n'
        'default_delimiters {\n  left = "[["\n}\ndefault_delimiters {\n  right = "]]"\n}\n'
    )
    assert config.consul == ConsulConfig(retry=RetryConfig(attempts=1))  # address not kept
    assert config.wait == WaitConfig(2.0, 3.0)
    assert (config.default_left_delimiter, config.default_right_delimiter) == (None, "]]")


def test_once_and_dry_come_from_flags_only(caplog: pytest.LogCaptureFixture) -> None:
    write("ct.hcl", "once = true\n")
    with caplog.at_level(logging.WARNING, logger="ctemplate.config"):
        assert load("-config", "ct.hcl").once is False
    assert caplog.messages == ["ct.hcl: once: not supported by ctemplate yet; ignored"]
    config = load("-once", "-dry")
    assert (config.once, config.dry) == (True, True)


def test_all_flags_reach_the_config() -> None:
    write("tok", "flag-token\n")
    argv = """
        -consul-addr=https://flag:8501/ -consul-token-file tok -consul-auth u:p:q
        -consul-retry=false -consul-retry-attempts 0 -consul-retry-backoff 1s
        -consul-retry-max-backoff 2s -consul-ssl-ca-cert ca -consul-ssl-ca-path capath
        -consul-ssl-cert c -consul-ssl-key k -consul-ssl-server-name sn -consul-ssl-verify=false
        -wait 5s -max-stale 0s -log-level ERROR -pid-file p.pid -status-addr 127.0.0.1:9110
        -kill-signal sigterm -reload-signal USR1
        -default-left-delimiter << -default-right-delimiter >>
        -template a:b -once -dry
    """
    config = load(*argv.split())
    assert config == Config(
        consul=ConsulConfig(
            address="flag:8501",
            token="flag-token",
            token_file="tok",
            auth=AuthConfig(enabled=True, username="u", password="p:q"),
            retry=RetryConfig(enabled=False, attempts=0, backoff=1.0, max_backoff=2.0),
            ssl=SSLConfig(
                enabled=True,
                verify=False,
                cert="c",
                key="k",
                ca_cert="ca",
                ca_path="capath",
                server_name="sn",
            ),
        ),
        templates=(TemplateConfig(source="a", destination="b", origin="-template[1]"),),
        wait=WaitConfig(5.0, 20.0),
        max_stale=0.0,
        log_level="err",
        pid_file="p.pid",
        status_address="127.0.0.1:9110",
        kill_signal="SIGTERM",
        reload_signal="SIGUSR1",
        default_left_delimiter="<<",
        default_right_delimiter=">>",
        once=True,
        dry=True,
    )


def test_legacy_retry_flag_and_consul_retry_backoff_wins() -> None:
    assert load("-retry", "10s").consul.retry.backoff == 10.0
    assert load("-retry", "10s", "-consul-retry-backoff", "1s").consul.retry.backoff == 1.0


def test_wait_zero_disables() -> None:
    write("one.hcl", 'wait = "5s"\n')
    write("two.hcl", 'wait = "0"\n')
    assert load("-config", "one.hcl").wait == WaitConfig(5.0, 20.0)
    assert load("-config", "one.hcl", "-config", "two.hcl").wait is None


# ------------------------------------------------------------------------------------------
# Environment


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CONSUL_HTTP_ADDR": "http://c:8500"}, ConsulConfig(address="c:8500")),
        (
            {"CONSUL_HTTP_ADDR": "https://c:8501"},
            ConsulConfig(address="c:8501", ssl=SSLConfig(enabled=True)),
        ),
        (
            {"CONSUL_HTTP_ADDR": "https://c:8501", "CONSUL_HTTP_SSL": "false"},
            ConsulConfig(address="c:8501", ssl=SSLConfig(enabled=False)),
        ),
        ({"CONSUL_HTTP_TOKEN": "a", "CONSUL_TOKEN": "b"}, ConsulConfig(token="b")),
        ({"CONSUL_HTTP_TOKEN": "a"}, ConsulConfig(token="a")),
        (
            {"CONSUL_HTTP_AUTH": "user:pa:ss"},
            ConsulConfig(auth=AuthConfig(enabled=True, username="user", password="pa:ss")),
        ),
        (
            {"CONSUL_HTTP_SSL": "1", "CONSUL_HTTP_SSL_VERIFY": "false"},
            ConsulConfig(ssl=SSLConfig(enabled=True, verify=False)),
        ),
        (
            {
                "CONSUL_CACERT": "ca.pem",
                "CONSUL_CAPATH": "cas",
                "CONSUL_CLIENT_CERT": "c.pem",
                "CONSUL_CLIENT_KEY": "k.pem",
                "CONSUL_TLS_SERVER_NAME": "sn",
            },
            # as with the consul api client, these alone do not switch TLS on
            ConsulConfig(
                ssl=SSLConfig(
                    ca_cert="ca.pem", ca_path="cas", cert="c.pem", key="k.pem", server_name="sn"
                )
            ),
        ),
        ({"CONSUL_HTTP_ADDR": ""}, ConsulConfig()),
    ],
)
def test_environment(env: dict[str, str], expected: ConsulConfig) -> None:
    assert load(env=env).consul == expected


@pytest.mark.parametrize(
    ("env", "level"),
    [
        ({"CONSUL_TEMPLATE_LOG_LEVEL": "warn"}, "warn"),
        ({"CONSUL_TEMPLATE_LOG_LEVEL": "warn", "CONSUL_TEMPLATE_LOG": "Debug"}, "debug"),
        ({"CONSUL_TEMPLATE_LOG": "debug", "CT_LOG": "ERR"}, "err"),
    ],
)
def test_environment_log_level(env: dict[str, str], level: str) -> None:
    assert load(env=env).log_level == level


def test_environment_is_overridden_by_files() -> None:
    write("ct.hcl", 'log_level = "warn"\nconsul {\n  ssl {\n    enabled = false\n  }\n}\n')
    config = load("-config", "ct.hcl", env={"CT_LOG": "trace", "CONSUL_HTTP_SSL": "true"})
    assert (config.log_level, config.consul.ssl.enabled) == ("warn", False)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CONSUL_HTTP_SSL": "yes"},
            'env CONSUL_HTTP_SSL: "yes" is not a boolean; write true or false',
        ),
        (
            {"CONSUL_HTTP_SSL_VERIFY": "nah"},
            'env CONSUL_HTTP_SSL_VERIFY: "nah" is not a boolean; write true or false',
        ),
        (
            {"CT_LOG": "loud"},
            'env CT_LOG: "loud" is not a log level; use one of trace, debug, info, warn, err',
        ),
        (
            {"CONSUL_HTTP_ADDR": "https://"},
            'env CONSUL_HTTP_ADDR: "https://" has no host; write e.g. 127.0.0.1:8500',
        ),
        (
            {"CONSUL_HTTP_TOKEN_FILE": "missing-token"},
            'env CONSUL_HTTP_TOKEN_FILE: cannot read "missing-token": No such file or directory',
        ),
    ],
)
def test_environment_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(env=env)
    assert str(info.value) == message


# ------------------------------------------------------------------------------------------
# Tokens


def test_token_file_is_read_and_wins_over_token_in_the_same_layer() -> None:
    write("tok", f"  {SECRET}\n")
    config = load_text('consul {\n  token = "other"\n  token_file = "tok"\n}\n')
    assert (config.consul.token, config.consul.token_file) == (SECRET, "tok")


def test_token_file_env_order_and_flag_token_overrides_it() -> None:
    write("a", "from-a\n")
    write("b", "from-b\n")
    env = {"CONSUL_HTTP_TOKEN_FILE": "a", "CONSUL_TOKEN_FILE": "b", "CONSUL_TOKEN": "t"}
    assert load(env=env).consul.token == "from-b"
    config = load("-consul-token", "flag", env=env)
    assert (config.consul.token, config.consul.token_file) == ("flag", None)


def test_token_never_shown() -> None:
    write("tok", SECRET)
    config = load("-consul-token-file", "tok", "-consul-auth", f"user:{SECRET}")
    assert config.consul.token == SECRET
    assert SECRET not in repr(config)
    assert SECRET not in repr(parse_flags(["-consul-token", SECRET, "-consul-auth", f"u:{SECRET}"]))
    messages = []
    for text in (
        f'consul {{\n  token = "{SECRET}"\n  tokn = "{SECRET}"\n}}\n',
        f"consul {{\n  token = {SECRET} {SECRET}\n}}\n",
        f"consul {{\n  token = 8{SECRET}\n}}\n",
        f'consul {{\n  token = "{SECRET}\n}}\n',
        f'consul {{\n  token = "{SECRET}" "{SECRET}"\n}}\n',
        f"consul {{\n  token = [{SECRET!r}]\n}}\n",
        f'consul {{\n  auth {{\n    password = "{SECRET}"\n    pasword = 1\n  }}\n}}\n',
    ):
        messages.append(error_of(text))
    messages.append(error_of(f'{{"consul": {{"token": "{SECRET}", "x": 1}}}}', "ct.json"))
    messages.append(error_of(f'{{"consul": {{"token": "{SECRET}" 1}}}}', "ct.json"))
    for argv in (["-consul-token"], ["-consul-auth", f":{SECRET}"]):
        with pytest.raises(ConfigError) as info:
            parse_flags(argv)
        messages.append(str(info.value))
    assert all(SECRET not in message for message in messages), messages
    assert all(message.count("\n") == 0 for message in messages)


def test_unreadable_token_file() -> None:
    assert (
        error_of('consul {\n  token_file = "nope"\n}\n')
        == 'ct.hcl: consul.token_file: cannot read "nope": No such file or directory'
    )
    with pytest.raises(ConfigError) as info:
        load("-consul-token-file", "nope")
    assert str(info.value) == (
        'flag -consul-token-file: cannot read "nope": No such file or directory'
    )


# ------------------------------------------------------------------------------------------
# Consul block details


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('consul {\n  ssl {\n    cert = "c"\n  }\n}\n', SSLConfig(enabled=True, cert="c")),
        ("consul {\n  ssl {\n    verify = true\n  }\n}\n", SSLConfig(enabled=True)),
        (
            'consul {\n  ssl {\n    enabled = false\n    cert = "c"\n  }\n}\n',
            SSLConfig(enabled=False, cert="c"),
        ),
        ('consul {\n  address = "https://c:8501"\n}\n', SSLConfig(enabled=True)),
        ('consul = "HTTPS://c:8501"\n', SSLConfig(enabled=True)),
        ('consul {\n  address = "c:8500"\n}\n', SSLConfig()),
    ],
)
def test_ssl_enabled_automatically(text: str, expected: SSLConfig) -> None:
    assert load_text(text).consul.ssl == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('consul {\n  auth {\n    username = "u"\n  }\n}\n', AuthConfig(True, "u", "")),
        (
            'consul {\n  auth {\n    enabled = false\n    username = "u"\n  }\n}\n',
            AuthConfig(False, "u", ""),
        ),
        ("consul {\n  auth {\n    enabled = true\n  }\n}\n", AuthConfig(True, "", "")),
    ],
)
def test_auth_enabled_automatically(text: str, expected: AuthConfig) -> None:
    assert load_text(text).consul.auth == expected


def test_address_scheme_is_stripped() -> None:
    assert load_text('consul = "http://c:8500/"\n').consul == ConsulConfig(address="c:8500")


# ------------------------------------------------------------------------------------------
# Templates


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"systemctl reload nginx"', "systemctl reload nginx"),
        ('"echo a,b"', "echo a,b"),  # consul-template would split on the comma; we do not
        ('["echo", "a b", "c:d"]', ("echo", "a b", "c:d")),
        ('["systemctl reload nginx"]', "systemctl reload nginx"),
        ('["true"]', "true"),
        ('""', None),
        ("[]", None),
    ],
)
def test_command_forms(value: str, expected: object) -> None:
    text = f'template {{\n  source = "s"\n  destination = "d"\n  command = {value}\n'
    text += f"  check_command = {value}\n}}\n"
    config = load_text(text)
    assert config.templates[0].command == expected
    assert config.templates[0].check_command == expected


def test_relative_source_is_kept_as_written() -> None:
    config = load_text('template {\n  source = "tpl/a.ctmpl"\n  destination = "../out"\n}\n')
    assert config.templates[0].source == "tpl/a.ctmpl"
    assert config.templates[0].destination == "../out"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'destination = "d"',
            "ct.hcl: template[2]: set source (a template file) or contents (the template text)",
        ),
        (
            'source = ""\ndestination = "d"',
            "ct.hcl: template[2]: set source (a template file) or contents (the template text)",
        ),
        (
            'source = "s"\ncontents = "c"\ndestination = "d"',
            "ct.hcl: template[2]: source and contents are both set; keep one",
        ),
        ('source = "s"', "ct.hcl: template[2]: destination is required (the file to write)"),
        (
            'source = "s"\ndestnation = "d"',
            'ct.hcl: template[2].destnation: unknown key (did you mean "destination"?)',
        ),
        (
            'source = "s"\ndestination = "d"\nbackup = "maybe"',
            'ct.hcl: template[2].backup: "maybe" is not a boolean; write true or false',
        ),
        (
            'source = "s"\ndestination = "d"\nbackup = 1',
            "ct.hcl: template[2].backup: expected true or false, got a number",
        ),
        (
            'source = "s"\ndestination = "d"\ncommand_timeout = []',
            'ct.hcl: template[2].command_timeout: expected a duration such as "5s", got a list',
        ),
        (
            'source = "s"\ndestination = "d"\ncommand = 5',
            "ct.hcl: template[2].command: expected a string or a list of strings, got a number",
        ),
        (
            'source = "s"\ndestination = "d"\ncommand = ["a", 1]',
            "ct.hcl: template[2].command: expected a string or a list of strings, got a list",
        ),
        (
            "source = 1\ndestination = 2",
            "ct.hcl: template[2].source: expected a string, got a number",
        ),
        (
            'source = "s"\ndestination = "d"\nperms = 644.5',
            'ct.hcl: template[2].perms: expected a file mode such as "0644", got a number',
        ),
        (
            'source = "s"\ndestination = "d"\nwait = "5s:1s"',
            'ct.hcl: template[2].wait: "5s:1s": max must not be less than min',
        ),
        (
            'source = "s"\ndestination = "d"\nwait {\n  mni = "1s"\n}',
            'ct.hcl: template[2].wait.mni: unknown key (did you mean "min"?)',
        ),
    ],
)
def test_template_errors(body: str, message: str) -> None:
    first = 'template {\n  source = "ok"\n  destination = "ok"\n}\n'
    assert error_of(f"{first}template {{\n{body}\n}}\n") == message


def test_ignored_template_keys_warn(caplog: pytest.LogCaptureFixture) -> None:
    text = (
        'vault {\n  address = "https://vault"\n}\n'
        'template {\n  source = "s"\n  destination = "d"\n  user = "nginx"\n'
        '  exec {\n    command = "x"\n  }\n}\n'
        'consul {\n  transport {\n    dial_timeout = "5s"\n  }\n}\n'
    )
    with caplog.at_level(logging.WARNING, logger="ctemplate.config"):
        config = load_text(text)
    assert config.templates == (template(source="s", destination="d"),)
    assert sorted(caplog.messages) == [
        "ct.hcl: consul.transport: not supported by ctemplate yet; ignored",
        "ct.hcl: template[1].exec: not supported by ctemplate yet; ignored",
        "ct.hcl: template[1].user: not supported by ctemplate yet; ignored",
        "ct.hcl: vault: not supported by ctemplate yet; ignored",
    ]


# ------------------------------------------------------------------------------------------
# Errors in files


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('max_stal = "1s"\n', 'ct.hcl: max_stal: unknown key (did you mean "max_stale"?)'),
        ('frobnicate = "1s"\n', "ct.hcl: frobnicate: unknown key"),
        (
            "consul {\n  ssl {\n    verfy = true\n  }\n}\n",
            'ct.hcl: consul.ssl.verfy: unknown key (did you mean "verify"?)',
        ),
        (
            'consul {\n  adress = "x"\n}\n',
            'ct.hcl: consul.adress: unknown key (did you mean "address"?)',
        ),
        (
            "consul {\n  retry {\n    attempt = 3\n  }\n}\n",
            'ct.hcl: consul.retry.attempt: unknown key (did you mean "attempts"?)',
        ),
        (
            'default_delimiters {\n  lefty = "x"\n}\n',
            'ct.hcl: default_delimiters.lefty: unknown key (did you mean "left"?)',
        ),
        (
            'wait {\n  min = "5x"\n}\n',
            'ct.hcl: wait.min: "5x" is not a duration (write e.g. "5s" or "250ms")',
        ),
        (
            'wait {\n  min = "5s"\n  max = "1s"\n}\n',
            "ct.hcl: wait: max must not be less than min",
        ),
        ('wait {\n  max = "5s"\n}\n', "ct.hcl: wait: max is set without min; set min too"),
        (
            'wait = "1s:2s:3s"\n',
            'ct.hcl: wait: "1s:2s:3s" is not a wait value; write "min" or "min:max", e.g. "5s:30s"',
        ),
        ('max_stale = "-1s"\n', 'ct.hcl: max_stale: "-1s" must not be negative'),
        ("max_stale = -1\n", "ct.hcl: max_stale: -1 must not be negative"),
        (
            'block_query_wait = "60"\n',
            'ct.hcl: block_query_wait: "60" is not a duration (write e.g. "5s" or "250ms")',
        ),
        (
            'retry = "soon"\n',
            'ct.hcl: retry: "soon" is not a duration (write e.g. "5s" or "250ms")',
        ),
        (
            'log_level = "verbose"\n',
            'ct.hcl: log_level: "verbose" is not a log level; use one of trace, debug, info, '
            "warn, err",
        ),
        (
            'kill_signal = "SIGFOO"\n',
            'ct.hcl: kill_signal: "SIGFOO" is not a signal name; write e.g. "SIGHUP" or "SIGTERM"',
        ),
        (
            'kill_signal = "KILL"\n',
            'ct.hcl: kill_signal: SIGKILL cannot be caught; write e.g. "SIGTERM"',
        ),
        ("pid_file = true\n", "ct.hcl: pid_file: expected a string, got a boolean"),
        (
            'status_address = "9110"\n',
            'ct.hcl: status_address: "9110" is not host:port; write e.g. "127.0.0.1:9110"',
        ),
        (
            'status_address = "localhost:http"\n',
            'ct.hcl: status_address: "localhost:http" is not host:port; write e.g. '
            '"127.0.0.1:9110"',
        ),
        (
            'status_address = "127.0.0.1:70000"\n',
            'ct.hcl: status_address: "127.0.0.1:70000" is not host:port; write e.g. '
            '"127.0.0.1:9110"',
        ),
        ('consul = ""\n', "ct.hcl: consul: must not be empty"),
        ("consul = 8500\n", "ct.hcl: consul: expected a block, got a number"),
        (
            'consul {\n  address = "http://"\n}\n',
            'ct.hcl: consul.address: "http://" has no host; write e.g. 127.0.0.1:8500',
        ),
        (
            "consul {\n  retry {\n    attempts = -1\n  }\n}\n",
            "ct.hcl: consul.retry.attempts: -1 must not be negative; 0 means retry forever",
        ),
        (
            'consul {\n  retry {\n    attempts = "3"\n  }\n}\n',
            "ct.hcl: consul.retry.attempts: expected a whole number (0 = retry forever), "
            "got a string",
        ),
        (
            'consul {\n  ssl {\n    enabled = "on"\n  }\n}\n',
            'ct.hcl: consul.ssl.enabled: "on" is not a boolean; write true or false',
        ),
        ('template = "x"\n', "ct.hcl: template: expected a block, got a string"),
        (
            'consul = "a:1"\nconsul {\n  token = "x"\n}\n',
            "ct.hcl: consul: written both as a value and as a block; keep one",
        ),
    ],
)
def test_file_errors(text: str, message: str) -> None:
    assert error_of(text) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('consul {\n  address = "x"\n  retry {}\n}}\n', "ct.hcl:4:2: unexpected '}'"),
        (
            'template {\n  source = "a"\n  destination = "b"\n',
            "ct.hcl:4:1: unexpected end of file; a '}' is missing",
        ),
        (
            'log_level = "info\n',
            'ct.hcl:1:14: unexpected end of file; a string is missing its closing "',
        ),
        ('max_stale = "1s"\n@oops\n', "ct.hcl:2:1: unexpected '@'"),
        ("retry = [1 2]\n", "ct.hcl:1:12: unexpected number"),
    ],
)
def test_hcl_syntax_errors(text: str, message: str) -> None:
    assert error_of(text) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{\n  "max_stale": "1s",\n}\n',
            "ct.json:3:1: expecting property name enclosed in double quotes",
        ),
        ('{"max_stale" "1s"}', "ct.json:1:14: expecting ':' delimiter"),
        ('["max_stale"]', "ct.json: expected a JSON object at the top level"),
        (
            '{"consul": {"adress": "x"}}',
            'ct.json: consul.adress: unknown key (did you mean "address"?)',
        ),
        (
            '{"template": [{"source": "a", "destination": "b"}, {"source": "a"}]}',
            "ct.json: template[2]: destination is required (the file to write)",
        ),
    ],
)
def test_json_errors(text: str, message: str) -> None:
    assert error_of(text, "ct.json") == message


def test_unreadable_and_non_utf8_files() -> None:
    Path("bin.hcl").write_bytes(b'log_level = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load("-config", "bin.hcl")
    assert str(info.value) == "bin.hcl: not UTF-8 text (byte 13)"


# ------------------------------------------------------------------------------------------
# Value parsers


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("0", 0.0),
        ("1.5s", 1.5),
        ("100ms", 0.1),
        ("1us", 1e-06),
        ("1µs", 1e-06),
        ("1ns", 1e-09),
        ("2h45m", 9900.0),
        (".5s", 0.5),
        ("+3s", 3.0),
        ("-0", 0.0),
        (10, 10.0),  # bare numbers are seconds
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value, where="x") == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5x", 'x: "5x" is not a duration (write e.g. "5s" or "250ms")'),
        ("10", 'x: "10" is not a duration (write e.g. "5s" or "250ms")'),
        ("", 'x: "" is not a duration (write e.g. "5s" or "250ms")'),
        ("s", 'x: "s" is not a duration (write e.g. "5s" or "250ms")'),
        ("1m 30s", 'x: "1m 30s" is not a duration (write e.g. "5s" or "250ms")'),
        ("-5s", 'x: "-5s" must not be negative'),
        (-1.5, "x: -1.5 must not be negative"),
        (True, 'x: expected a duration such as "5s", got a boolean'),
        (None, 'x: expected a duration such as "5s", got null'),
        ({}, 'x: expected a duration such as "5s", got a block'),
    ],
)
def test_parse_duration_errors(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value, where="x")
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5s", WaitConfig(5.0, 20.0)),
        ("5s:10s", WaitConfig(5.0, 10.0)),
        ("5s:5s", WaitConfig(5.0, 5.0)),
        ("0", WaitConfig(0.0, 0.0)),
        (3, WaitConfig(3.0, 12.0)),
        ({"min": "1s"}, WaitConfig(1.0, 4.0)),
        ({"min": "1s", "max": "2s"}, WaitConfig(1.0, 2.0)),
        ([{"min": "1s"}, {"min": "2s"}], WaitConfig(2.0, 8.0)),  # last block wins
    ],
)
def test_parse_wait(value: object, expected: WaitConfig) -> None:
    assert parse_wait(value, where="w") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5s:1s", 'w: "5s:1s": max must not be less than min'),
        ("5x:10s", 'w: "5x" is not a duration (write e.g. "5s" or "250ms")'),
        ("1s:2s:3s", 'w: "1s:2s:3s" is not a wait value; write "min" or "min:max", e.g. "5s:30s"'),
        ({"min": "2s", "max": "1s"}, "w: max must not be less than min"),
        ({"min": "x"}, 'w.min: "x" is not a duration (write e.g. "5s" or "250ms")'),
        (True, 'w: expected a wait value such as "5s:30s" or a block { min, max }, got a boolean'),
    ],
)
def test_parse_wait_errors(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_wait(value, where="w")
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("0644", 0o644),
        ("644", 0o644),
        ("0o755", 0o755),
        ("0600", 0o600),
        ("4755", 0o4755),
        (644, 0o644),  # what python-hcl2 gives for `perms = 0644`
        (600, 0o600),
        (0, 0),
        ("0", 0),
    ],
)
def test_parse_perms(value: object, mode: int) -> None:
    assert parse_perms(value, where="p") == mode


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (888, 'p: 888 is not an octal file mode; write it as a string such as "0644"'),
        (649, 'p: 649 is not an octal file mode; write it as a string such as "0644"'),
        (17777, 'p: 17777 is not an octal file mode; write it as a string such as "0644"'),
        (-644, 'p: -644 is not an octal file mode; write it as a string such as "0644"'),
        ("0844", 'p: "0844" is not a file mode; write e.g. "0644"'),
        ("rw-r--r--", 'p: "rw-r--r--" is not a file mode; write e.g. "0644"'),
        ("", 'p: "" is not a file mode; write e.g. "0644"'),
        ("17777", 'p: "17777" is not a file mode; write e.g. "0644"'),
        (True, 'p: expected a file mode such as "0644", got a boolean'),
    ],
)
def test_parse_perms_errors(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_perms(value, where="p")
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "perms"),
    [
        ("perms = 0644", 0o644),
        ('perms = "0755"', 0o755),
        ("perms = 0", None),
        ('perms = "0"', None),
    ],
)
def test_perms_in_files(text: str, perms: int | None) -> None:
    config = load_text(f'template {{\n  source = "s"\n  destination = "d"\n  {text}\n}}\n')
    assert config.templates[0].perms == perms


def test_perms_in_files_error() -> None:
    assert error_of('template {\n  source = "s"\n  destination = "d"\n  perms = 0968\n}\n') == (
        "ct.hcl: template[1].perms: 968 is not an octal file mode; write it as a string such as "
        '"0644"'
    )


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("trace", "trace"),
        ("DEBUG", "debug"),
        ("Info", "info"),
        ("warn", "warn"),
        ("WARNING", "warn"),
        ("err", "err"),
        ("error", "err"),
    ],
)
def test_parse_log_level(value: str, level: str) -> None:
    assert parse_log_level(value, where="l") == level


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("SIGHUP", "SIGHUP"),
        ("HUP", "SIGHUP"),
        ("sigterm", "SIGTERM"),
        ("usr2", "SIGUSR2"),
        ("", ""),
        ("SIGNULL", ""),
    ],
)
def test_parse_signal(value: str, name: str) -> None:
    assert parse_signal(value, where="s") == name


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("true", True), ("FALSE", False), ("1", True), ("f", False)],
)
def test_parse_bool(value: object, expected: bool) -> None:
    assert parse_bool(value, where="b") is expected
