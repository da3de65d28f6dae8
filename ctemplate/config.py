"""Configuration: consul-template's HCL (both the current and the older form) or JSON files,
environment variables and command-line flags, merged into frozen dataclasses.

Precedence, lowest first: built-in defaults < environment < config files (in the order given)
< command-line flags.

This is the only module that imports ``hcl2``, and it does so lazily.

Each source is first turned into a *layer*: a plain nested dict holding only the keys that
source set, already validated and converted (durations in seconds, modes as ints, signal
names normalised). Layers are merged key by key (``template`` blocks append) and the result
becomes a :class:`Config`. :func:`load_config_file` returns the layer of one file.

Messages of :class:`~ctemplate.errors.ConfigError` are one line:
``<file>: <keypath>: <problem>[; what to do]``, ``<file>:<line>:<col>: <problem>`` for syntax
errors, ``env <NAME>: ...`` for environment variables and ``flag -<name>: ...`` for flags.
Token and password values never appear in a message or a repr.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ctemplate.errors import ConfigError

if TYPE_CHECKING:
    from ctemplate.flags import Flags

__all__ = [
    "IGNORED_KEYS",
    "AuthConfig",
    "Config",
    "ConsulConfig",
    "RetryConfig",
    "SSLConfig",
    "TemplateConfig",
    "WaitConfig",
    "load_config",
    "load_config_file",
    "parse_bool",
    "parse_duration",
    "parse_log_level",
    "parse_perms",
    "parse_signal",
    "parse_wait",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WaitConfig:
    """Quiescence: render only after ``min`` seconds without changes, at the latest after
    ``max``."""

    min: float
    max: float


@dataclass(frozen=True, slots=True)
class RetryConfig:
    enabled: bool = True
    # 0 = retry forever. None = not set: unlimited in daemon mode, 12 with -once.
    attempts: int | None = None
    backoff: float = 0.25  # seconds, first retry delay
    max_backoff: float = 60.0  # seconds, cap on a single delay


@dataclass(frozen=True, slots=True)
class SSLConfig:
    enabled: bool = False
    verify: bool = True
    cert: str | None = None
    key: str | None = None
    ca_cert: str | None = None
    ca_path: str | None = None
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class AuthConfig:
    enabled: bool = False
    username: str = ""
    password: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class ConsulConfig:
    address: str = "127.0.0.1:8500"
    token: str = field(default="", repr=False)  # never logged
    token_file: str | None = None
    # Connections ctemplate may hold open to the agent (Consul's per-client limit is 200).
    max_connections: int = 32
    auth: AuthConfig = AuthConfig()
    retry: RetryConfig = RetryConfig()
    ssl: SSLConfig = SSLConfig()


@dataclass(frozen=True, slots=True)
class TemplateConfig:
    destination: str
    source: str | None = None  # path to the template file
    contents: str | None = None  # inline template text (exactly one of source/contents)
    # A str runs through `sh -c` in its own process group; a tuple is an argv.
    command: str | tuple[str, ...] | None = None
    command_timeout: float = 30.0
    check_command: str | tuple[str, ...] | None = None
    perms: int | None = None  # None: keep the existing file's mode, else 0o644
    backup: bool = False
    create_dest_dirs: bool = True
    wait: WaitConfig | None = None
    left_delimiter: str | None = None
    right_delimiter: str | None = None
    error_on_missing_key: bool = False
    # Glob patterns of template functions that fail when called (e.g. "plugin", "writeTo*").
    function_denylist: tuple[str, ...] = ()
    # file(), writeToFile() and {% include %} must stay inside this directory (symlinks resolved).
    sandbox_path: str | None = None
    on_command_failure: str = "log"  # "log": report and carry on; "exit": stop ctemplate (14)
    # Where this template was declared, for messages: "ct.hcl: template[1]" or "-template[1]".
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    consul: ConsulConfig = ConsulConfig()
    templates: tuple[TemplateConfig, ...] = ()
    wait: WaitConfig | None = None
    max_stale: float = 2.0  # seconds; 0 = consistent reads only
    block_query_wait: float = 60.0  # seconds, `wait=` of every blocking query
    # Give up (exit 14) when a query has failed for this long without a break; 0 = never.
    max_unavailable: float = 0.0
    log_level: str = "info"  # trace | debug | info | warn | err
    pid_file: str | None = None
    status_address: str | None = None  # host:port of /health and /metrics; None = off
    kill_signal: str = "SIGINT"
    reload_signal: str = "SIGHUP"
    default_left_delimiter: str | None = None
    default_right_delimiter: str | None = None
    once: bool = False
    once_timeout: float = 0.0  # -once: exit 14 after this many seconds; 0 = wait for the data
    dry: bool = False


# --------------------------------------------------------------------------------------------
# Keys

# consul-template keys ctemplate accepts but does not implement yet: each is skipped with a
# warning. Paths are written without template indices; a listed key covers its whole subtree.
IGNORED_KEYS: frozenset[str] = frozenset(
    {
        "deduplicate",
        "err_on_failed_lookup",
        "exec",
        "log_file",
        "nomad",
        "once",  # consul-template itself only honours -once (its file value is overwritten)
        "parse_only",
        "parseonly",
        "syslog",
        "template_error_fatal",
        "vault",
        "consul.namespace",
        "consul.partition",
        "consul.ssl.ca_cert_bytes",
        "consul.transport",
        "template.error_fatal",
        "template.exec",
        "template.gid",
        "template.group",
        "template.source_perms",
        "template.uid",
        "template.user",
    }
)

_TOP_KEYS = (
    "consul",
    "template",
    "wait",
    "max_stale",
    "block_query_wait",
    "max_unavailable",
    "log_level",
    "pid_file",
    "status_address",
    "kill_signal",
    "reload_signal",
    "default_delimiters",
    "retry",
)
_CONSUL_KEYS = ("address", "token", "token_file", "max_connections", "auth", "retry", "ssl")
_AUTH_KEYS = ("enabled", "username", "password")
_RETRY_KEYS = ("enabled", "attempts", "backoff", "max_backoff")
_SSL_KEYS = ("enabled", "verify", "cert", "key", "ca_cert", "ca_path", "server_name")
_TEMPLATE_KEYS = (
    "source",
    "contents",
    "destination",
    "command",
    "command_timeout",
    "check_command",
    "perms",
    "backup",
    "create_dest_dirs",
    "wait",
    "left_delimiter",
    "right_delimiter",
    "error_on_missing_key",
    "function_denylist",
    "function_blacklist",  # consul-template's deprecated name of function_denylist
    "sandbox_path",
    "on_command_failure",
)
_COMMAND_FAILURE = ("log", "exit")
_WAIT_KEYS = ("min", "max")
_DELIMITER_KEYS = ("left", "right")

_LOG_LEVELS = {
    "trace": "trace",
    "debug": "debug",
    "info": "info",
    "warn": "warn",
    "warning": "warn",
    "err": "err",
    "error": "err",
}

# The signal names consul-template accepts (signals_unix.go). SIGNULL means "disabled".
_SIGNALS = frozenset(
    {
        *("SIGNULL", "SIGABRT", "SIGALRM", "SIGBUS", "SIGCONT", "SIGFPE", "SIGHUP", "SIGILL"),
        *("SIGINT", "SIGIO", "SIGIOT", "SIGKILL", "SIGPIPE", "SIGPROF", "SIGQUIT", "SIGSEGV"),
        *("SIGSTOP", "SIGSYS", "SIGTERM", "SIGTRAP", "SIGTSTP", "SIGTTIN", "SIGTTOU"),
        *("SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGXCPU", "SIGXFSZ"),
    }
)
_UNCATCHABLE = frozenset({"SIGKILL", "SIGSTOP"})

# Go's strconv.ParseBool
_TRUE = frozenset({"1", "t", "true"})
_FALSE = frozenset({"0", "f", "false"})


# --------------------------------------------------------------------------------------------
# Value parsers (shared with ctemplate.flags)


def _quote(value: object) -> str:
    """A value for a one-line message: JSON-quoted strings, shortened if long."""
    if isinstance(value, str):
        if len(value) > 60:
            value = value[:57] + "..."
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a block"
    return type(value).__name__


def _type_error(where: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"{where}: expected {expected}, got {_kind(value)}")


def parse_bool(value: object, *, where: str) -> bool:
    """``true``/``false`` or one of the strings Go's ``strconv.ParseBool`` accepts
    (``"true"``, ``"false"``, ``"1"``, ``"0"``, ``"t"``, ``"f"``; any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{where}: {_quote(value)} is not a boolean; write true or false")
    raise _type_error(where, "true or false", value)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {  # in nanoseconds, as Go counts
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # micro sign
    "μs": 1_000,  # greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_duration(value: object, *, where: str) -> float:
    """A duration in seconds.

    Strings use Go's syntax (``"250ms"``, ``"10s"``, ``"1m30s"``, ``"1.5h"``, ``"0"``; units
    ``ns us µs ms s m h``). A bare number, as JSON or HCL without quotes gives it, counts as
    seconds (consul-template would read it as nanoseconds, which nobody means). A string
    without a unit other than ``"0"`` is an error, as in Go. Negative values are errors.
    """
    if isinstance(value, bool):
        raise _type_error(where, 'a duration such as "5s"', value)
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ConfigError(f"{where}: {value} is too large for a duration") from None
        if not math.isfinite(seconds):
            raise ConfigError(f"{where}: {value!r} is not a duration")
        if seconds < 0:
            raise ConfigError(f"{where}: {value!r} must not be negative")
        return seconds
    if not isinstance(value, str):
        raise _type_error(where, 'a duration such as "5s"', value)
    text = value.strip()
    body = text[1:] if text[:1] in ("+", "-") else text
    if body == "0":
        return 0.0
    nanoseconds = 0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            break
        unit = _DURATION_UNITS[match.group(2)]
        whole, _, fraction = match.group(1).partition(".")
        nanoseconds += int(whole or "0") * unit
        if fraction:  # Go truncates below a nanosecond too
            nanoseconds += int(fraction) * unit // 10 ** len(fraction)
        pos = match.end()
    if not body or pos != len(body):
        raise ConfigError(
            f'{where}: {_quote(value)} is not a duration (write e.g. "5s" or "250ms")'
        )
    if text.startswith("-") and nanoseconds:
        raise ConfigError(f"{where}: {_quote(value)} must not be negative")
    return nanoseconds / 1_000_000_000


def parse_wait(value: object, *, where: str) -> WaitConfig:
    """Quiescence bounds: ``"5s"`` (max = 4 * min, consul-template's rule), ``"5s:10s"``,
    a bare number of seconds, or a block ``{min, max}`` (max again defaulting to 4 * min).

    A min of 0 means "no quiescence"; callers turn such a value into ``None``.
    """
    if isinstance(value, list):
        value = _single_block(value, where)
    if isinstance(value, dict):
        block = _check_keys(value, generic="wait", path=where, known=_WAIT_KEYS, prefix=".")
        if "min" not in block and "max" in block:
            raise ConfigError(f"{where}: max is set without min; set min too")
        minimum = parse_duration(block.get("min", 0), where=f"{where}.min")
        if block.get("max") is None:
            return WaitConfig(minimum, minimum * 4)
        maximum = parse_duration(block["max"], where=f"{where}.max")
        if maximum < minimum:
            raise ConfigError(f"{where}: max must not be less than min")
        return WaitConfig(minimum, maximum)
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) > 2:
            raise ConfigError(
                f'{where}: {_quote(value)} is not a wait value; write "min" or "min:max", '
                'e.g. "5s:30s"'
            )
        minimum = parse_duration(parts[0], where=where)
        if len(parts) == 1:
            return WaitConfig(minimum, minimum * 4)
        maximum = parse_duration(parts[1], where=where)
        if maximum < minimum:
            raise ConfigError(f"{where}: {_quote(value)}: max must not be less than min")
        return WaitConfig(minimum, maximum)
    if isinstance(value, int | float) and not isinstance(value, bool):
        minimum = parse_duration(value, where=where)
        return WaitConfig(minimum, minimum * 4)
    raise _type_error(where, 'a wait value such as "5s:30s" or a block { min, max }', value)


def parse_perms(value: object, *, where: str) -> int:
    """A file mode: the string ``"0644"`` (read base 8, as Go does), or a bare number.

    HCL1 reads ``perms = 0644`` as octal; python-hcl2 gives the integer 644, so the decimal
    digits of a number are read as octal digits (644 -> 0o644). 0 means "not set".
    """
    if isinstance(value, bool):
        raise _type_error(where, 'a file mode such as "0644"', value)
    if isinstance(value, int):
        digits = str(value)
        if value < 0 or not re.fullmatch(r"[0-7]+", digits) or int(digits, 8) > 0o7777:
            raise ConfigError(
                f'{where}: {value} is not an octal file mode; write it as a string such as "0644"'
            )
        return int(digits, 8)
    if isinstance(value, str):
        text = value.strip()
        if text[:2] in ("0o", "0O"):
            text = text[2:]
        if not re.fullmatch(r"[0-7]{1,5}", text) or int(text, 8) > 0o7777:
            raise ConfigError(f'{where}: {_quote(value)} is not a file mode; write e.g. "0644"')
        return int(text, 8)
    raise _type_error(where, 'a file mode such as "0644"', value)


def parse_log_level(value: object, *, where: str) -> str:
    """``trace debug info warn err`` (any case; ``warning`` and ``error`` too), normalised."""
    if not isinstance(value, str):
        raise _type_error(where, "a log level", value)
    level = _LOG_LEVELS.get(value.strip().lower())
    if level is None:
        raise ConfigError(
            f"{where}: {_quote(value)} is not a log level; use one of trace, debug, info, warn, err"
        )
    return level


def parse_signal(value: object, *, where: str) -> str:
    """A signal name, ``"SIGHUP"`` or ``"HUP"`` (any case), normalised to ``"SIGHUP"``.

    ``""`` (or ``"SIGNULL"``) means "disabled" and gives ``""``.
    """
    if not isinstance(value, str):
        raise _type_error(where, 'a signal name such as "SIGHUP"', value)
    name = value.strip().upper()
    if not name:
        return ""
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name not in _SIGNALS:
        raise ConfigError(
            f'{where}: {_quote(value)} is not a signal name; write e.g. "SIGHUP" or "SIGTERM"'
        )
    if name in _UNCATCHABLE:
        raise ConfigError(f'{where}: {name} cannot be caught; write e.g. "SIGTERM"')
    return "" if name == "SIGNULL" else name


def _parse_str(value: object, *, where: str) -> str:
    if not isinstance(value, str):
        raise _type_error(where, "a string", value)
    return value


def _parse_nonempty(value: object, *, where: str) -> str:
    text = _parse_str(value, where=where)
    if not text.strip():
        raise ConfigError(f"{where}: must not be empty")
    return text


def parse_listen_address(value: object, *, where: str) -> str:
    """``host:port`` to listen on (``[::1]:9110`` for IPv6); ``""`` turns it off."""
    text = _parse_str(value, where=where).strip()
    if not text:
        return ""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f'{where}: {_quote(text)} is not host:port; write e.g. "127.0.0.1:9110"')
    return text


def _parse_attempts(value: object, *, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(where, "a whole number (0 = retry forever)", value)
    if value < 0:
        raise ConfigError(f"{where}: {value} must not be negative; 0 means retry forever")
    return value


def _parse_max_connections(value: object, *, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(where, "a whole number", value)
    if not 5 <= value <= 200:
        raise ConfigError(
            f"{where}: {value} is out of range; write a number from 5 to 200 "
            "(Consul accepts 200 connections per client address)"
        )
    return value


def _parse_command_failure(value: object, *, where: str) -> str:
    """What a failed or timed-out command does: ``"log"`` (report it, carry on) or ``"exit"``."""
    text = _parse_str(value, where=where).strip().lower()
    if text not in _COMMAND_FAILURE:
        raise ConfigError(
            f'{where}: {_quote(value)} is not a choice; use "log" (report and carry on) '
            'or "exit" (stop ctemplate)'
        )
    return text


def _parse_patterns(value: object, *, where: str) -> list[str]:
    """Function-name globs: a list of strings, or one string (split on commas, as
    consul-template's string-to-list hook does)."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        items = list(value)
    else:
        raise _type_error(where, 'a list of function names such as ["plugin", "file"]', value)
    return [item.strip() for item in items if item.strip()]


def _parse_command(value: object, *, where: str) -> str | tuple[str, ...] | None:
    """A string runs through ``sh -c``; a list is an argv. Empty gives None.

    consul-template splits a string command on commas (a mapstructure hook quirk: ``"a,b"``
    becomes ``["a", "b"]``); we deliberately do not, so ``echo a,b`` stays one command.
    A one-element list whose only item contains whitespace is a shell command line, as in
    consul-template (``command = ["systemctl reload nginx"]``).
    """
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        argv = tuple(str(item) for item in value)
        if not argv:
            return None
        if len(argv) == 1:
            return argv[0] if argv[0].strip() else None
        return argv
    raise _type_error(where, "a string or a list of strings", value)


# --------------------------------------------------------------------------------------------
# Files


def _suggest(key: str, known: tuple[str, ...]) -> str:
    import difflib

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _check_keys(
    block: dict[str, Any], *, generic: str, path: str, known: tuple[str, ...], prefix: str
) -> dict[str, Any]:
    """The block without ignored keys and nulls; unknown keys are errors.

    ``generic`` is the key path without indices ("template"), used for IGNORED_KEYS;
    ``path`` is what messages show ("ct.hcl: template[1]"); ``prefix`` joins the two.
    """
    result: dict[str, Any] = {}
    for key, value in block.items():
        full = f"{generic}.{key}" if generic else key
        shown = f"{path}{prefix}{key}"
        if key in known:
            if value is not None:
                result[key] = value
        elif full in IGNORED_KEYS:
            logger.warning("%s: not supported by ctemplate yet; ignored", shown)
        else:
            raise ConfigError(f"{shown}: unknown key{_suggest(key, known)}")
    return result


def _single_block(value: object, where: str) -> dict[str, Any]:
    """A block written once or more (the last one wins, as in consul-template), or a map."""
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return dict(value[-1]) if value else {}
    if isinstance(value, dict):
        return value
    raise _type_error(where, "a block", value)


def _blocks(value: object, where: str) -> list[dict[str, Any]]:
    """A repeatable block: a list of maps, or one map (JSON's short form)."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return list(value)
    raise _type_error(where, "a block", value)


class _FileReader:
    """Turns the parsed contents of one config file into a layer."""

    def __init__(self, name: str) -> None:
        self.name = name

    def where(self, keypath: str) -> str:
        return f"{self.name}: {keypath}"

    def keys(
        self, value: object, *, generic: str, keypath: str, known: tuple[str, ...]
    ) -> dict[str, Any]:
        block = _single_block(value, self.where(keypath))
        return _check_keys(
            block, generic=generic, path=self.where(keypath), known=known, prefix="."
        )

    def layer(self, data: dict[str, Any]) -> dict[str, Any]:
        top = _check_keys(data, generic="", path=f"{self.name}: ", known=_TOP_KEYS, prefix="")
        layer: dict[str, Any] = {}
        consul: dict[str, Any] = {}
        if "retry" in top:  # older form: top-level retry = "10s" is the consul retry backoff
            backoff = parse_duration(top["retry"], where=self.where("retry"))
            consul["retry"] = {"backoff": backoff}
        address_where = self.where("consul.address")
        if "consul" in top:
            value = top["consul"]
            if isinstance(value, str):  # older form: consul = "127.0.0.1:8500"
                address_where = self.where("consul")
                consul["address"] = _parse_nonempty(value, where=address_where)
            else:
                _merge(consul, self.consul(value))
        if consul:
            layer["consul"] = _finish_consul(consul, address_where=address_where, auto_ssl=True)
        if "wait" in top:
            layer["wait"] = parse_wait(top["wait"], where=self.where("wait"))
        for key in ("max_stale", "block_query_wait", "max_unavailable"):
            if key in top:
                layer[key] = parse_duration(top[key], where=self.where(key))
        if "log_level" in top:
            layer["log_level"] = parse_log_level(top["log_level"], where=self.where("log_level"))
        if "pid_file" in top:
            layer["pid_file"] = _parse_str(top["pid_file"], where=self.where("pid_file"))
        if "status_address" in top:
            where = self.where("status_address")
            layer["status_address"] = parse_listen_address(top["status_address"], where=where)
        for key in ("kill_signal", "reload_signal"):
            if key in top:
                layer[key] = parse_signal(top[key], where=self.where(key))
        if "default_delimiters" in top:
            delimiters = self.keys(
                top["default_delimiters"],
                generic="default_delimiters",
                keypath="default_delimiters",
                known=_DELIMITER_KEYS,
            )
            for key in _DELIMITER_KEYS:
                if key in delimiters:
                    where = self.where(f"default_delimiters.{key}")
                    layer[f"default_{key}_delimiter"] = _parse_str(delimiters[key], where=where)
        if "template" in top:
            blocks = _blocks(top["template"], self.where("template"))
            layer["templates"] = [
                self.template(block, index) for index, block in enumerate(blocks, start=1)
            ]
        return layer

    def consul(self, value: object) -> dict[str, Any]:
        block = self.keys(value, generic="consul", keypath="consul", known=_CONSUL_KEYS)
        consul: dict[str, Any] = {}
        for key in ("address", "token_file"):
            if key in block:
                consul[key] = _parse_nonempty(block[key], where=self.where(f"consul.{key}"))
        if "token_file" in consul:
            consul["_token_file_where"] = self.where("consul.token_file")
        if "token" in block:
            consul["token"] = _parse_str(block["token"], where=self.where("consul.token"))
        if "max_connections" in block:
            consul["max_connections"] = _parse_max_connections(
                block["max_connections"], where=self.where("consul.max_connections")
            )
        if "auth" in block:
            auth = self.keys(
                block["auth"], generic="consul.auth", keypath="consul.auth", known=_AUTH_KEYS
            )
            consul["auth"] = {}
            if "enabled" in auth:
                where = self.where("consul.auth.enabled")
                consul["auth"]["enabled"] = parse_bool(auth["enabled"], where=where)
            for key in ("username", "password"):
                if key in auth:
                    where = self.where(f"consul.auth.{key}")
                    consul["auth"][key] = _parse_str(auth[key], where=where)
        if "retry" in block:
            retry = self.keys(
                block["retry"], generic="consul.retry", keypath="consul.retry", known=_RETRY_KEYS
            )
            consul["retry"] = {}
            if "enabled" in retry:
                where = self.where("consul.retry.enabled")
                consul["retry"]["enabled"] = parse_bool(retry["enabled"], where=where)
            if "attempts" in retry:
                where = self.where("consul.retry.attempts")
                consul["retry"]["attempts"] = _parse_attempts(retry["attempts"], where=where)
            for key in ("backoff", "max_backoff"):
                if key in retry:
                    where = self.where(f"consul.retry.{key}")
                    consul["retry"][key] = parse_duration(retry[key], where=where)
        if "ssl" in block:
            ssl = self.keys(
                block["ssl"], generic="consul.ssl", keypath="consul.ssl", known=_SSL_KEYS
            )
            consul["ssl"] = {}
            for key in ("enabled", "verify"):
                if key in ssl:
                    where = self.where(f"consul.ssl.{key}")
                    consul["ssl"][key] = parse_bool(ssl[key], where=where)
            for key in ("cert", "key", "ca_cert", "ca_path", "server_name"):
                if key in ssl:
                    where = self.where(f"consul.ssl.{key}")
                    consul["ssl"][key] = _parse_nonempty(ssl[key], where=where)
        return consul

    def template(self, value: dict[str, Any], index: int) -> TemplateConfig:
        keypath = f"template[{index}]"
        block = self.keys(value, generic="template", keypath=keypath, known=_TEMPLATE_KEYS)
        origin = self.where(keypath)

        def where(key: str) -> str:
            return f"{origin}.{key}"

        options: dict[str, Any] = {}
        for key in ("source", "contents", "destination", "left_delimiter", "right_delimiter"):
            if key in block:
                text = _parse_str(block[key], where=where(key))
                if text:
                    options[key] = text
        if "source" in options and "contents" in options:
            raise ConfigError(f"{origin}: source and contents are both set; keep one")
        if "source" not in options and "contents" not in options:
            raise ConfigError(
                f"{origin}: set source (a template file) or contents (the template text)"
            )
        if "destination" not in options:
            raise ConfigError(f"{origin}: destination is required (the file to write)")
        for key in ("command", "check_command"):
            if key in block:
                options[key] = _parse_command(block[key], where=where(key))
        if "command_timeout" in block:
            options["command_timeout"] = parse_duration(
                block["command_timeout"], where=where("command_timeout")
            )
        if "perms" in block:
            options["perms"] = parse_perms(block["perms"], where=where("perms")) or None
        for key in ("backup", "create_dest_dirs", "error_on_missing_key"):
            if key in block:
                options[key] = parse_bool(block[key], where=where(key))
        denylist: list[str] = []
        for key in ("function_denylist", "function_blacklist"):
            if key in block:
                denylist += _parse_patterns(block[key], where=where(key))
        if denylist:
            options["function_denylist"] = tuple(denylist)
        if "sandbox_path" in block:
            options["sandbox_path"] = _parse_nonempty(
                block["sandbox_path"], where=where("sandbox_path")
            )
        if "wait" in block:
            wait = parse_wait(block["wait"], where=where("wait"))
            options["wait"] = wait if wait.min else None
        if "on_command_failure" in block:
            options["on_command_failure"] = _parse_command_failure(
                block["on_command_failure"], where=where("on_command_failure")
            )
        return TemplateConfig(origin=origin, **options)


def _syntax_message(exc: Exception) -> str:
    """A short description of a lark parse error (lark lists every expected token)."""
    token = getattr(exc, "token", None)
    expected = set(getattr(exc, "expected", None) or ())
    if token is None:
        char = getattr(exc, "char", None)
        if isinstance(char, str) and char.strip():
            return f"unexpected character {char!r}"
        return "unexpected end of file"
    kind = getattr(token, "type", "")
    text = str(token).strip()
    if kind == "$END":
        if "STRING_CHARS" in expected and "DBLQUOTE" in expected:
            return 'unexpected end of file; a string is missing its closing "'
        if "RSQB" in expected:
            return "unexpected end of file; a ']' is missing"
        if "RBRACE" in expected:
            return "unexpected end of file; a '}' is missing"
        return "unexpected end of file"
    if kind in ("INT_LITERAL", "FLOAT_LITERAL"):
        return "unexpected number"
    if kind in ("HEREDOC_TEMPLATE", "HEREDOC_TEMPLATE_TRIM"):
        return "unexpected heredoc"
    if kind == "STRING_CHARS" or kind == "TEMPLATE_STRING":
        # Only show the first character: the text may be a secret written without quotes.
        return f"unexpected {text[0]!r}" if text else "unexpected end of line"
    if kind == "NL_OR_COMMENT" or not text:
        return "unexpected end of line"
    if kind == "NAME" and text not in _ALL_KEYS:
        return "unexpected name"  # not shown: it may be a secret written without quotes
    return f"unexpected {text!r}"


_ALL_KEYS = frozenset(
    {
        *_TOP_KEYS,
        *_CONSUL_KEYS,
        *_AUTH_KEYS,
        *_RETRY_KEYS,
        *_SSL_KEYS,
        *_TEMPLATE_KEYS,
        *_WAIT_KEYS,
        *_DELIMITER_KEYS,
        *(key.rpartition(".")[2] for key in IGNORED_KEYS),
        *("true", "false", "null", "if", "in", "for", "for_each", "else", "endif", "endfor"),
    }
)


def _parse_hcl(text: str, name: str) -> dict[str, Any]:
    import hcl2
    from lark.exceptions import UnexpectedInput

    options = hcl2.SerializationOptions(
        strip_string_quotes=True,
        explicit_blocks=False,
        with_comments=False,
        # Heredocs become plain strings. python-hcl2 drops their final newline (HCL1 keeps it).
        preserve_heredocs=False,
    )
    try:
        data = hcl2.loads(text, serialization_options=options)
    except UnexpectedInput as exc:
        raise ConfigError(f"{name}:{exc.line}:{exc.column}: {_syntax_message(exc)}") from None
    except RuntimeError as exc:  # python-hcl2 reports some semantic errors this way
        match = re.fullmatch(r"Attribute (\w+) is already defined\.", str(exc))
        if match:
            raise ConfigError(
                f"{name}: {match.group(1)}: written both as a value and as a block; keep one"
            ) from None
        raise ConfigError(f"{name}: cannot parse this file as HCL") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: cannot parse this file as HCL")
    return data


def _parse_json(text: str, name: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        message = exc.msg[:1].lower() + exc.msg[1:]
        raise ConfigError(f"{name}:{exc.lineno}:{exc.colno}: {message}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a JSON object at the top level")
    return data


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse one HCL or JSON (``*.json``) config file into a layer (see the module docstring).

    The layer is a nested dict of the keys the file set, validated and converted; its
    ``"templates"`` entry is a list of :class:`TemplateConfig` numbered per file.
    """
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8-sig") as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}") from None
    parse = _parse_json if name.lower().endswith(".json") else _parse_hcl
    data = parse(text, name)
    return _FileReader(name).layer(data)


def _walk(directory: str) -> Iterator[str]:
    """Regular files under ``directory``, recursively, in lexical order, like Go's filepath.Walk.

    Symbolic links are not followed (neither to files nor to directories).
    """
    try:
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot read directory: {exc.strerror or exc}") from None
    for entry in entries:
        if entry.is_symlink():
            logger.warning("%s: symbolic link in a config directory; skipped", entry.path)
        elif entry.is_dir(follow_symlinks=False):
            yield from _walk(entry.path)
        elif entry.is_file(follow_symlinks=False):
            yield entry.path


def _config_files(path: str) -> list[str]:
    if not path:
        raise ConfigError("flag -config: must not be empty")
    try:
        is_dir = os.path.isdir(path)
        exists = is_dir or os.path.exists(path)
    except OSError:  # pragma: no cover - e.g. a name that is too long
        exists = is_dir = False
    if not exists:
        raise ConfigError(f"flag -config: {_quote(path)}: no such file or directory")
    return list(_walk(path)) if is_dir else [path]


# --------------------------------------------------------------------------------------------
# Environment and flags


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    def get(*names: str) -> tuple[str, str] | None:
        for name in names:
            value = environ.get(name, "")
            if value:
                return name, value
        return None

    consul: dict[str, Any] = {}
    ssl: dict[str, Any] = {}
    if found := get("CONSUL_HTTP_ADDR"):
        consul["address"] = found[1].strip()
    if found := get("CONSUL_TOKEN", "CONSUL_HTTP_TOKEN"):
        consul["token"] = found[1].strip()
    if found := get("CONSUL_TOKEN_FILE", "CONSUL_HTTP_TOKEN_FILE"):
        consul["token_file"] = found[1]
        consul["_token_file_where"] = f"env {found[0]}"
    if found := get("CONSUL_HTTP_AUTH"):
        username, _, password = found[1].partition(":")
        consul["auth"] = {"enabled": True, "username": username, "password": password}
    if found := get("CONSUL_HTTP_SSL"):
        ssl["enabled"] = parse_bool(found[1], where=f"env {found[0]}")
    if found := get("CONSUL_HTTP_SSL_VERIFY"):
        ssl["verify"] = parse_bool(found[1], where=f"env {found[0]}")
    for key, name in (
        ("ca_cert", "CONSUL_CACERT"),
        ("ca_path", "CONSUL_CAPATH"),
        ("cert", "CONSUL_CLIENT_CERT"),
        ("key", "CONSUL_CLIENT_KEY"),
        ("server_name", "CONSUL_TLS_SERVER_NAME"),
    ):
        if found := get(name):
            ssl[key] = found[1]
    if ssl:
        consul["ssl"] = ssl
    layer: dict[str, Any] = {}
    if consul:
        # As with the consul api client, CONSUL_CACERT and friends alone do not turn TLS on:
        # CONSUL_HTTP_SSL=true or an https:// address does.
        layer["consul"] = _finish_consul(
            consul, address_where="env CONSUL_HTTP_ADDR", auto_ssl=False
        )
    if found := get("CT_LOG", "CONSUL_TEMPLATE_LOG", "CONSUL_TEMPLATE_LOG_LEVEL"):
        layer["log_level"] = parse_log_level(found[1], where=f"env {found[0]}")
    return layer


def _flags_layer(flags: Flags) -> dict[str, Any]:
    consul: dict[str, Any] = {}
    if flags.consul_addr is not None:
        consul["address"] = flags.consul_addr
    if flags.consul_token is not None:
        consul["token"] = flags.consul_token
    if flags.consul_token_file is not None:
        consul["token_file"] = flags.consul_token_file
        consul["_token_file_where"] = "flag -consul-token-file"
    if flags.consul_auth is not None:
        username, _, password = flags.consul_auth.partition(":")
        consul["auth"] = {"enabled": True, "username": username, "password": password}
    retry: dict[str, Any] = {}
    if flags.retry is not None:  # legacy -retry: the consul retry backoff
        retry["backoff"] = flags.retry
    retry_flags: tuple[tuple[str, object], ...] = (
        ("enabled", flags.consul_retry),
        ("attempts", flags.consul_retry_attempts),
        ("backoff", flags.consul_retry_backoff),
        ("max_backoff", flags.consul_retry_max_backoff),
    )
    for key, value in retry_flags:
        if value is not None:
            retry[key] = value
    if retry:
        consul["retry"] = retry
    ssl: dict[str, Any] = {}
    ssl_flags: tuple[tuple[str, object], ...] = (
        ("enabled", flags.consul_ssl),
        ("verify", flags.consul_ssl_verify),
        ("cert", flags.consul_ssl_cert),
        ("key", flags.consul_ssl_key),
        ("ca_cert", flags.consul_ssl_ca_cert),
        ("ca_path", flags.consul_ssl_ca_path),
        ("server_name", flags.consul_ssl_server_name),
    )
    for key, value in ssl_flags:
        if value is not None:
            ssl[key] = value
    if ssl:
        consul["ssl"] = ssl
    layer: dict[str, Any] = {}
    if consul:
        layer["consul"] = _finish_consul(consul, address_where="flag -consul-addr", auto_ssl=True)
    top_flags: tuple[tuple[str, object], ...] = (
        ("wait", flags.wait),
        ("max_stale", flags.max_stale),
        ("max_unavailable", flags.max_unavailable),
        ("log_level", flags.log_level),
        ("pid_file", flags.pid_file),
        ("status_address", flags.status_address),
        ("kill_signal", flags.kill_signal),
        ("reload_signal", flags.reload_signal),
        ("default_left_delimiter", flags.default_left_delimiter),
        ("default_right_delimiter", flags.default_right_delimiter),
    )
    for key, value in top_flags:
        if value is not None:
            layer[key] = value
    if flags.templates:
        layer["templates"] = list(flags.templates)
    layer["once"] = flags.once
    if flags.once_timeout is not None:
        layer["once_timeout"] = flags.once_timeout
    layer["dry"] = flags.dry
    return layer


# --------------------------------------------------------------------------------------------
# Merging


def _finish_consul(consul: dict[str, Any], *, address_where: str, auto_ssl: bool) -> dict[str, Any]:
    """Per-layer rules: strip the address scheme (https:// turns TLS on), enable auth when a
    username or password is set, and TLS when any other ssl key is set (consul-template)."""
    address = consul.get("address")
    if isinstance(address, str):
        lower = address.lower()
        if lower.startswith("https://"):
            address = address[len("https://") :]
            consul.setdefault("ssl", {}).setdefault("enabled", True)
        elif lower.startswith("http://"):
            address = address[len("http://") :]
        address = address.rstrip("/")
        if not address:
            raise ConfigError(
                f"{address_where}: {_quote(consul['address'])} has no host; "
                "write e.g. 127.0.0.1:8500"
            )
        consul["address"] = address
    auth = consul.get("auth")
    if auth and "enabled" not in auth and (auth.get("username") or auth.get("password")):
        auth["enabled"] = True
    ssl = consul.get("ssl")
    if auto_ssl and ssl and "enabled" not in ssl:
        ssl["enabled"] = True
    return consul


def _merge(base: dict[str, Any], upper: dict[str, Any]) -> None:
    """Merge ``upper`` into ``base``: maps key by key, templates appended, anything else
    replaced. A layer that sets consul ``token`` or ``token_file`` replaces both."""
    if "token" in upper or "token_file" in upper:
        for key in ("token", "token_file", "_token_file_where"):
            base.pop(key, None)
    for key, value in upper.items():
        if key == "templates":
            base[key] = [*base.get(key, []), *value]
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, dict):
            base[key] = {}
            _merge(base[key], value)
        else:
            base[key] = value


def _read_token_file(path: str, where: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {_quote(path)} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {_quote(path)}: {exc.strerror or exc}") from None


def _build(merged: dict[str, Any]) -> Config:
    consul: dict[str, Any] = merged.get("consul", {})
    token: str = consul.get("token", "")
    token_file: str | None = consul.get("token_file")
    if token_file is not None:
        token = _read_token_file(token_file, consul["_token_file_where"])
    wait: WaitConfig | None = merged.get("wait")
    pid_file: str | None = merged.get("pid_file") or None
    return Config(
        consul=ConsulConfig(
            address=consul.get("address", _DEFAULTS.consul.address),
            token=token,
            token_file=token_file,
            max_connections=consul.get("max_connections", _DEFAULTS.consul.max_connections),
            auth=AuthConfig(**consul.get("auth", {})),
            retry=RetryConfig(**consul.get("retry", {})),
            ssl=SSLConfig(**consul.get("ssl", {})),
        ),
        templates=tuple(merged.get("templates", ())),
        wait=wait if wait is not None and wait.min else None,
        max_stale=merged.get("max_stale", _DEFAULTS.max_stale),
        block_query_wait=merged.get("block_query_wait", _DEFAULTS.block_query_wait),
        max_unavailable=merged.get("max_unavailable", _DEFAULTS.max_unavailable),
        log_level=merged.get("log_level", _DEFAULTS.log_level),
        pid_file=pid_file,
        status_address=merged.get("status_address") or None,
        kill_signal=merged.get("kill_signal", _DEFAULTS.kill_signal),
        reload_signal=merged.get("reload_signal", _DEFAULTS.reload_signal),
        default_left_delimiter=merged.get("default_left_delimiter") or None,
        default_right_delimiter=merged.get("default_right_delimiter") or None,
        once=merged.get("once", False),
        once_timeout=merged.get("once_timeout", _DEFAULTS.once_timeout),
        dry=merged.get("dry", False),
    )


_DEFAULTS = Config()


def load_config(flags: Flags, environ: Mapping[str, str]) -> Config:
    """The final configuration: defaults < ``environ`` < ``flags.configs`` files < ``flags``.

    Each ``-config`` path is a file or a directory (every regular file inside, recursively, in
    lexical order; symbolic links are skipped). ``*.json`` files are JSON, the rest HCL.
    Relative template ``source`` paths stay as written: they are relative to the working
    directory, as in consul-template. A ``consul.token_file`` is read here, once; its stripped
    content becomes the token. Raises :class:`ConfigError` with a one-line message.
    """
    merged: dict[str, Any] = {}
    _merge(merged, _env_layer(environ))
    for path in flags.configs:
        for name in _config_files(path):
            _merge(merged, load_config_file(name))
    _merge(merged, _flags_layer(flags))
    return _build(merged)
