"""The fault-tolerance settings: max_unavailable, -once-timeout, on_command_failure, the
waiting-warning delays, and the template guards require()/abort()."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from ctemplate.config import Config, load_config
from ctemplate.config.flags import parse_flags, usage
from ctemplate.errors import ConfigError
from ctemplate.language.guards import GuardError, abort, require
from ctemplate.language.jinja import FILTERS, GLOBALS
from ctemplate.runner import _waiting_delays, _watch_settings


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def load(*argv: str) -> Config:
    return load_config(parse_flags(list(argv)), {})


def load_text(text: str, name: str = "ct.hcl") -> Config:
    Path(name).write_text(text)
    return load("-config", name)


def error_of(text: str, name: str = "ct.hcl") -> str:
    with pytest.raises(ConfigError) as info:
        load_text(text, name)
    return str(info.value)


def flag_error(*argv: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_flags(list(argv))
    return str(info.value)


TEMPLATE = 'template {\n  source = "a"\n  destination = "b"\n  %s\n}\n'


# --- defaults --------------------------------------------------------------------------------


def test_defaults_never_give_up_in_daemon_mode() -> None:
    config = load()
    assert (config.max_unavailable, config.once_timeout) == (0.0, 0.0)
    settings = _watch_settings(config)
    assert (settings.retry_attempts, settings.max_unavailable) == (0, 0.0)
    # -once keeps consul-template's 12 retries.
    assert _watch_settings(load("-once")).retry_attempts == 12


# --- max_unavailable -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ('max_unavailable = "5m"\n', 300.0),
        ('max_unavailable = "0"\n', 0.0),
        ("max_unavailable = 90\n", 90.0),
    ],
)
def test_max_unavailable_in_hcl(text: str, seconds: float) -> None:
    config = load_text(text)
    assert config.max_unavailable == seconds
    assert _watch_settings(config).max_unavailable == seconds


def test_max_unavailable_in_json_and_flag_wins() -> None:
    assert load_text('{"max_unavailable": "30s"}', "ct.json").max_unavailable == 30.0
    Path("ct.hcl").write_text('max_unavailable = "30s"\n')
    assert load("-config", "ct.hcl", "-max-unavailable", "2m").max_unavailable == 120.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('max_unavailable = "soon"\n', 'ct.hcl: max_unavailable: "soon" is not a duration'),
        ('max_unavailable = "-1s"\n', 'ct.hcl: max_unavailable: "-1s" must not be negative'),
        ("max_unavailable = true\n", 'ct.hcl: max_unavailable: expected a duration such as "5s"'),
        (
            'max_unavailabel = "1m"\n',
            'ct.hcl: max_unavailabel: unknown key (did you mean "max_unavailable"?)',
        ),
    ],
)
def test_max_unavailable_errors(text: str, message: str) -> None:
    assert error_of(text).startswith(message)


# --- -once-timeout ---------------------------------------------------------------------------


def test_once_timeout_flag() -> None:
    assert load("-once", "-once-timeout", "30s").once_timeout == 30.0
    assert load("-once", "--once-timeout=1m30s").once_timeout == 90.0
    assert load("-once").once_timeout == 0.0


def test_once_timeout_needs_once_and_a_duration() -> None:
    assert (
        flag_error("-once-timeout", "5s") == "flag -once-timeout: only works with -once; add -once"
    )
    assert flag_error("-once", "-once-timeout", "5") == (
        'flag -once-timeout: "5" is not a duration (write e.g. "5s" or "250ms")'
    )
    assert flag_error("-once", "-once-timeout") == (
        "flag -once-timeout: missing value; write -once-timeout=duration"
    )


def test_once_timeout_is_not_a_config_key() -> None:
    assert error_of('once_timeout = "5s"\n').startswith("ct.hcl: once_timeout: unknown key")


def test_new_flags_are_in_the_help() -> None:
    text = usage()
    assert "-once-timeout duration" in text
    assert "-max-unavailable duration" in text


# --- on_command_failure ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [('"log"', "log"), ('"exit"', "exit"), ('"EXIT"', "exit")]
)
def test_on_command_failure(value: str, expected: str) -> None:
    config = load_text(TEMPLATE % f"on_command_failure = {value}")
    assert config.templates[0].on_command_failure == expected


def test_on_command_failure_default_and_json() -> None:
    assert load_text(TEMPLATE % "").templates[0].on_command_failure == "log"
    config = load_text(
        '{"template": [{"source": "a", "destination": "b", "on_command_failure": "exit"}]}',
        "ct.json",
    )
    assert config.templates[0].on_command_failure == "exit"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'on_command_failure = "ignore"',
            'ct.hcl: template[1].on_command_failure: "ignore" is not a choice; use "log" (report '
            'and carry on) or "exit" (stop ctemplate)',
        ),
        (
            "on_command_failure = true",
            "ct.hcl: template[1].on_command_failure: expected a string, got a boolean",
        ),
        (
            'on_command_faillure = "exit"',
            "ct.hcl: template[1].on_command_faillure: unknown key "
            '(did you mean "on_command_failure"?)',
        ),
    ],
)
def test_on_command_failure_errors(line: str, message: str) -> None:
    assert error_of(TEMPLATE % line) == message


# --- waiting-warning delays (a hidden test knob) ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", (10.0, 60.0)), ("1s", (1.0, 60.0)), ("500ms:2s", (0.5, 2.0)), ("0:0", (0.0, 0.1))],
)
def test_waiting_delays(value: str, expected: tuple[float, float]) -> None:
    assert _waiting_delays({"CTEMPLATE_WAITING_WARN": value}) == expected


def test_waiting_delays_error() -> None:
    with pytest.raises(ConfigError, match='env CTEMPLATE_WAITING_WARN: "x" is not a duration'):
        _waiting_delays({"CTEMPLATE_WAITING_WARN": "x:1s"})


# --- require() and abort() -------------------------------------------------------------------


def render(text: str) -> str:
    env = jinja2.Environment()
    env.globals.update(GLOBALS)
    env.filters.update(FILTERS)
    return env.from_string(text).render(web=["a", "b"], empty=[], name="x")


def test_require_passes_items_through() -> None:
    assert render("{% for s in web | require(2) %}{{ s }}{% endfor %}") == "ab"
    assert render("{% for s in require(web) %}{{ s }}{% endfor %}") == "ab"
    assert render("{{ name | require }}") == "x"
    assert render("{{ empty | require(0) | length }}") == "0"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{{ empty | require(1, "no web backends") }}',
            "require: no web backends (got 0, need at least 1)",
        ),
        ("{{ web | require(3) }}", "require: got 2 items, need at least 3"),
        ('{{ abort("app/config is empty") }}', "abort: app/config is empty"),
        ("{{ abort() }}", "abort: abort() called"),
        ("{{ web | require(-1) }}", "require: the minimum must be a whole number >= 0, not -1"),
        ("{{ 3 | require }}", "require: expected a list or a string, got int"),
    ],
)
def test_guards_refuse(text: str, message: str) -> None:
    with pytest.raises(GuardError) as info:
        render(text)
    assert str(info.value) == message


def test_guard_functions_directly() -> None:
    items = ("x",)
    assert require(items) is items
    with pytest.raises(GuardError):
        abort("stop")
