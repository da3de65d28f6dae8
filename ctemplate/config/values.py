"""Parsers of single configuration values, shared by config files, the environment and flags.

Each takes the raw value and ``where`` (``ct.hcl: template[1].perms``, ``flag -wait``) and returns
the converted value or raises a one-line :class:`~ctemplate.errors.ConfigError` naming ``where``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from ctemplate.errors import ConfigError

from .model import WaitConfig

logger = logging.getLogger(__name__)

IGNORED_KEYS: frozenset[str] = frozenset(
    {
        "err_on_failed_lookup",
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


_SIZE = re.compile(r"(\d+)\s*(|b|kb|kib|mb|mib|gb|gib)", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size(value: object, *, where: str) -> int:
    """A size in bytes, greater than zero: a whole number (bytes) or a string such as
    ``"64MiB"``, ``"1MB"``, ``"512KiB"`` (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _type_error(where, 'a size such as "1MiB"', value)
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.fullmatch(value.strip())
        if match is None:
            raise ConfigError(
                f'{where}: {_quote(value)} is not a size; write e.g. "1MiB", "512KiB" or a '
                "number of bytes"
            )
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if size <= 0:
        raise ConfigError(f"{where}: {_quote(value)} must be greater than zero")
    return size


def parse_positive_duration(value: object, *, where: str) -> float:
    """A duration (see :func:`parse_duration`) greater than zero."""
    seconds = parse_duration(value, where=where)
    if seconds <= 0:
        raise ConfigError(f"{where}: {_quote(value)} must be greater than zero")
    return seconds


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


def parse_syntax(value: object, *, where: str, auto: bool = False) -> str | None:
    """A template syntax: ``"go"`` or ``"jinja"`` (any case); with ``auto``, ``"auto"`` too
    (None: decided by the source's extension)."""
    text = _parse_str(value, where=where).strip().lower()
    if auto and text == "auto":
        return None
    if text not in ("go", "jinja"):
        choices = '"go", "jinja" or "auto"' if auto else '"go" or "jinja"'
        raise ConfigError(
            f"{where}: {_quote(value)} is not a template syntax; use {choices} "
            "(go: consul-template's text/template, jinja: Jinja2)"
        )
    return text


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


def parse_exec_command(value: object, *, where: str) -> str | tuple[str, ...]:
    """The supervised child's command: a list is an argv; a string with whitespace runs
    through ``sh -c``; a single word runs directly (as consul-template does, for images
    without a shell). Empty is an error."""
    command = _parse_command(value, where=where)
    if command is None:
        raise ConfigError(f"{where}: must not be empty; write the command that starts the child")
    if isinstance(command, str) and not any(c.isspace() for c in command.strip()):
        return (command.strip(),)
    return command


def parse_restart(value: object, *, where: str) -> str:
    """``never`` (consul-template's behaviour), ``on-failure`` or ``always``."""
    text = _parse_str(value, where=where).strip().lower().replace("_", "-")
    if text not in _RESTART:
        raise ConfigError(
            f'{where}: {_quote(value)} is not a restart policy; use "never", "on-failure" '
            'or "always"'
        )
    return text


def parse_string_list(value: object, *, where: str) -> list[str]:
    """A list of strings, or one string (a one-element list)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return list(value)
    raise _type_error(where, "a list of strings", value)


def parse_env_entries(value: object, *, where: str) -> list[str]:
    """``exec.env.custom``: ``KEY=value`` strings (the value may be empty)."""
    entries = parse_string_list(value, where=where)
    for entry in entries:
        name, eq, _ = entry.partition("=")
        if not eq or not name or any(c.isspace() for c in name):
            # Only the name is shown: the value may be a secret.
            raise ConfigError(
                f'{where}: {_quote(name)} is not KEY=value; write e.g. "APP_MODE=production"'
            )
    return entries


_RESTART = ("never", "on-failure", "always")


# Layers: key checks and merging

_COMMAND_FAILURE = ("log", "exit")
_WAIT_KEYS = ("min", "max")


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


def check_token(token: str, where: str, *, from_file: bool = False) -> str:
    """``token`` if an HTTP header can carry it (one line of visible ASCII characters, as every
    Consul ACL token is), else a :class:`ConfigError` naming ``where`` and never the value: a
    message quoting it would put the secret in the log and on /health."""
    for char in token:
        if char in "\r\n":
            problem = "a line break" + (" (the file has more than one line)" if from_file else "")
        elif not char.isascii():
            problem = "a character that is not ASCII"
        elif not char.isprintable() or char.isspace():
            problem = "a space or control character"
        else:
            continue
        raise ConfigError(
            f"{where}: the ACL token holds {problem}; a token is one line of visible ASCII "
            "characters (the value is not shown)"
        )
    return token


def _split_userinfo(consul: dict[str, Any], address: str) -> str:
    """``user:password@host:port``: the credentials become ``consul.auth`` (unless it is set)
    and leave the address, so no URL, log line or /health page carries the password."""
    userinfo, at, host = address.rpartition("@")
    if not at:
        return address
    if "auth" not in consul:
        username, _, password = userinfo.partition(":")
        consul["auth"] = {"enabled": True, "username": username, "password": password}
    return host


_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a trailing dot (FQDN) is fine
_ADDRESS_FORMS = "host:port, http://host:port or https://host:port, e.g. 127.0.0.1:8500"


def check_consul_address(value: str, *, where: str) -> None:
    """Reject a Consul address that cannot be turned into a URL, naming ``where`` and the
    accepted forms; a scheme other than http(s) (``tcp://``, ``unix://``) is refused here
    rather than failing later as an invalid URL."""
    text = value.strip()
    lower = text.lower()
    prefix = ""
    for scheme in ("https://", "http://"):
        if lower.startswith(scheme):
            prefix, text = text[: len(scheme)], text[len(scheme) :]
            break
    else:
        if "://" in text:
            scheme = text.split("://", 1)[0]
            raise ConfigError(
                f"{where}: {_quote(value)}: the scheme {scheme}:// is not supported; "
                f"write {_ADDRESS_FORMS}"
            )
    # user:password@ becomes basic auth (_split_userinfo): checked and shown without it, so no
    # message carries the password.
    host_part = _split_userinfo({}, text)
    if host_part != text:
        text = host_part
        value = prefix + host_part
    text = text.rstrip("/")
    if text.startswith("["):  # [IPv6]:port
        host, close, rest = text[1:].partition("]")
        ok = bool(close) and ":" in host and all(c in "0123456789abcdefABCDEF:." for c in host)
        ok = ok and (not rest or rest.startswith(":"))
        has_port, port = bool(rest), rest[1:]
    else:
        host, has_colon, port = text.partition(":")
        ok = bool(_HOST_NAME.fullmatch(host)) and ":" not in port
        has_port = bool(has_colon)
    if ok and has_port:
        ok = port.isascii() and port.isdigit() and 1 <= int(port) <= 65535
    if not ok:
        raise ConfigError(
            f"{where}: {_quote(value)} is not a Consul address; write {_ADDRESS_FORMS}"
        )


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
        address = _split_userinfo(consul, address.rstrip("/"))
        if not address:
            raise ConfigError(
                f"{address_where}: {_quote(_split_userinfo({}, consul['address']))} has no "
                "host; write e.g. 127.0.0.1:8500"
            )
        check_consul_address(consul["address"], where=address_where)
        consul["address"] = address
    auth = consul.get("auth")
    if auth and "enabled" not in auth and (auth.get("username") or auth.get("password")):
        auth["enabled"] = True
    ssl = consul.get("ssl")
    if auto_ssl and ssl and "enabled" not in ssl:
        ssl["enabled"] = True
    return consul


def _merge(base: dict[str, Any], upper: dict[str, Any]) -> None:
    """Merge ``upper`` into ``base``: maps key by key, templates and watches appended, anything else
    replaced. A layer that sets consul ``token`` or ``token_file`` replaces both."""
    if "token" in upper or "token_file" in upper:
        for key in ("token", "token_file", "_token_file_where"):
            base.pop(key, None)
    for key, value in upper.items():
        if key in ("templates", "watches", "execs"):
            base[key] = [*base.get(key, []), *value]
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, dict):
            base[key] = {}
            _merge(base[key], value)
        else:
            base[key] = value
