"""Command-line flags, parsed the way consul-template (Go's ``flag`` package) parses them.

Every flag may be written ``-flag`` or ``--flag``; values as ``-flag=value`` or ``-flag value``;
booleans as ``-flag`` or ``-flag=true|false`` (a boolean never takes the next argument).
``--`` ends the flags. Positional arguments are an error, as in consul-template.

Values are validated and converted here (durations in seconds, signal and log level names
normalised), so a bad value is reported as ``flag -wait: ...``. :func:`ctemplate.config.load_config`
merges the result over the environment and the config files.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ctemplate.errors import ConfigError

from .model import TemplateConfig, WaitConfig
from .values import (
    check_consul_address,
    parse_bool,
    parse_duration,
    parse_env_entries,
    parse_exec_command,
    parse_listen_address,
    parse_log_level,
    parse_restart,
    parse_signal,
    parse_syntax,
    parse_wait,
)

__all__ = ["Flags", "parse_flags", "usage"]


@dataclass(frozen=True, slots=True)
class Flags:
    """What the user passed on the command line; ``None`` or ``()`` means "not given"."""

    configs: tuple[str, ...] = ()  # -config, in order
    consul_addr: str | None = None
    consul_token: str | None = field(default=None, repr=False)
    consul_token_file: str | None = None
    consul_auth: str | None = field(default=None, repr=False)  # "user[:pass]"
    consul_retry: bool | None = None
    consul_retry_attempts: int | None = None
    consul_retry_backoff: float | None = None  # seconds
    consul_retry_max_backoff: float | None = None  # seconds
    consul_ssl: bool | None = None
    consul_ssl_ca_cert: str | None = None
    consul_ssl_ca_path: str | None = None
    consul_ssl_cert: str | None = None
    consul_ssl_key: str | None = None
    consul_ssl_server_name: str | None = None
    consul_ssl_verify: bool | None = None
    templates: tuple[TemplateConfig, ...] = ()  # -template, origin "-template[N]"
    template_syntax: str | None = None  # "go" | "jinja" | "auto" (by extension, the default)
    once: bool = False
    once_timeout: float | None = None  # seconds
    dry: bool = False
    dedup: bool = False
    wait: WaitConfig | None = None
    max_stale: float | None = None  # seconds
    max_unavailable: float | None = None  # seconds
    log_level: str | None = None  # normalised: trace | debug | info | warn | err
    pid_file: str | None = None
    status_address: str | None = None  # "" = off
    kill_signal: str | None = None  # normalised "SIGINT"; "" = disabled
    reload_signal: str | None = None  # normalised "SIGHUP"; "" = disabled
    default_left_delimiter: str | None = None
    default_right_delimiter: str | None = None
    retry: float | None = None  # legacy -retry: the consul retry backoff, seconds
    # exec mode: they set the first exec block (-exec creates it when no file has one)
    exec_command: str | tuple[str, ...] | None = None
    exec_reload_signal: str | None = None  # "" = restart the child on changes
    exec_kill_signal: str | None = None
    exec_kill_timeout: float | None = None
    exec_splay: float | None = None
    exec_env_pristine: bool | None = None
    exec_env_custom: tuple[str, ...] = ()
    exec_env_allowlist: tuple[str, ...] = ()
    exec_env_denylist: tuple[str, ...] = ()
    exec_restart: str | None = None
    exec_min_reload_interval: float | None = None
    version: bool = False
    help: bool = False
    # One line per old consul-template spelling used (``-consul``, ``-ssl``...), logged by the
    # CLI once logging is set up.
    deprecations: tuple[str, ...] = ()


def _string(value: str, where: str) -> str:
    return value


def _nonempty(value: str, where: str) -> str:
    if not value.strip():
        raise ConfigError(f"{where}: must not be empty")
    return value


def _consul_address(value: str, where: str) -> str:
    _nonempty(value, where)
    check_consul_address(value, where=where)
    return value


def _duration(value: str, where: str) -> float:
    return parse_duration(value, where=where)


def _attempts(value: str, where: str) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise ConfigError(
            f"{where}: {json.dumps(value)} is not a whole number; write e.g. 12 (0 = retry forever)"
        )
    return int(text)


def _syntax(value: str, where: str) -> str:
    return parse_syntax(value, where=where, auto=True) or "auto"


def _wait(value: str, where: str) -> WaitConfig:
    return parse_wait(value, where=where)


def _log_level(value: str, where: str) -> str:
    return parse_log_level(value, where=where)


def _signal(value: str, where: str) -> str:
    return parse_signal(value, where=where)


def _listen_address(value: str, where: str) -> str:
    return parse_listen_address(value, where=where)


def _exec_command(value: str, where: str) -> str | tuple[str, ...]:
    return parse_exec_command(value, where=where)


def _restart(value: str, where: str) -> str:
    return parse_restart(value, where=where)


def _env_entry(value: str, where: str) -> str:
    return parse_env_entries(value, where=where)[0]


def _auth(value: str, where: str) -> str:
    # Never echo the value: it holds a password.
    if not value.partition(":")[0]:
        raise ConfigError(f"{where}: expected user[:password] with a non-empty user")
    return value


@dataclass(frozen=True, slots=True)
class _Spec:
    """One command-line flag: the Flags attribute it sets, its usage text, its parser."""

    attr: str
    metavar: str  # "" for booleans
    help: str
    convert: Callable[[str, str], Any] = _string


_BOOL = ""

_SPECS: dict[str, _Spec] = {
    "config": _Spec("configs", "path", "config file or directory (repeatable)", _nonempty),
    "consul-addr": _Spec("consul_addr", "host:port", "Consul address", _consul_address),
    "consul-token": _Spec("consul_token", "token", "Consul ACL token"),
    "consul-token-file": _Spec(
        "consul_token_file", "path", "file holding the Consul ACL token", _nonempty
    ),
    "consul-auth": _Spec("consul_auth", "user[:pass]", "HTTP basic auth for Consul", _auth),
    "consul-retry": _Spec("consul_retry", _BOOL, "retry failed Consul requests (default true)"),
    "consul-retry-attempts": _Spec(
        "consul_retry_attempts", "n", "retries before giving up (0 = forever)", _attempts
    ),
    "consul-retry-backoff": _Spec(
        "consul_retry_backoff", "duration", "first retry delay (default 250ms)", _duration
    ),
    "consul-retry-max-backoff": _Spec(
        "consul_retry_max_backoff", "duration", "longest retry delay (default 1m)", _duration
    ),
    "consul-ssl": _Spec("consul_ssl", _BOOL, "talk HTTPS to Consul"),
    "consul-ssl-ca-cert": _Spec("consul_ssl_ca_cert", "path", "CA certificate file", _nonempty),
    "consul-ssl-ca-path": _Spec(
        "consul_ssl_ca_path", "dir", "directory of CA certificates", _nonempty
    ),
    "consul-ssl-cert": _Spec("consul_ssl_cert", "path", "client certificate file", _nonempty),
    "consul-ssl-key": _Spec("consul_ssl_key", "path", "client key file", _nonempty),
    "consul-ssl-server-name": _Spec(
        "consul_ssl_server_name", "name", "server name to verify (SNI)", _nonempty
    ),
    "consul-ssl-verify": _Spec(
        "consul_ssl_verify", _BOOL, "verify Consul's certificate (default true)"
    ),
    "template": _Spec("templates", "src:dest[:command]", "template to render (repeatable)"),
    "template-syntax": _Spec(
        "template_syntax",
        "go|jinja|auto",
        "syntax of -template sources (auto: .ctmpl .tmpl .tpl: go)",
        _syntax,
    ),
    "once": _Spec("once", _BOOL, "render every template once, then exit"),
    "once-timeout": _Spec(
        "once_timeout", "duration", "with -once: give up after this long (exit 14)", _duration
    ),
    "dry": _Spec("dry", _BOOL, "print rendered templates to stdout, write nothing"),
    "dedup": _Spec("dedup", _BOOL, "de-duplication: one instance per template reads Consul"),
    "wait": _Spec("wait", "min[:max]", "quiescence, e.g. 5s:30s (max default 4*min)", _wait),
    "max-stale": _Spec(
        "max_stale", "duration", "accept stale reads this old (default 2s)", _duration
    ),
    "max-unavailable": _Spec(
        "max_unavailable",
        "duration",
        "exit 14 when Consul fails for this long (default 0 = never)",
        _duration,
    ),
    "log-level": _Spec("log_level", "level", "trace, debug, info, warn or err", _log_level),
    "pid-file": _Spec("pid_file", "path", "write the process id to this file"),
    "status-addr": _Spec(
        "status_address",
        "host:port",
        "serve /health and /metrics here, e.g. 127.0.0.1:9110",
        _listen_address,
    ),
    "kill-signal": _Spec("kill_signal", "signal", "stop on this signal (default SIGINT)", _signal),
    "reload-signal": _Spec(
        "reload_signal", "signal", "reload on this signal (default SIGHUP)", _signal
    ),
    "default-left-delimiter": _Spec(
        "default_left_delimiter", "text", "left template delimiter (default {{)"
    ),
    "default-right-delimiter": _Spec(
        "default_right_delimiter", "text", "right template delimiter (default }})"
    ),
    "retry": _Spec("retry", "duration", "legacy: same as -consul-retry-backoff", _duration),
    "exec": _Spec(
        "exec_command", "command", "start and supervise this command (exec mode)", _exec_command
    ),
    "exec-reload-signal": _Spec(
        "exec_reload_signal",
        "signal",
        "send to the child when files change (default: restart)",
        _signal,
    ),
    "exec-kill-signal": _Spec(
        "exec_kill_signal", "signal", "stop the child with this (default SIGINT)", _signal
    ),
    "exec-kill-timeout": _Spec(
        "exec_kill_timeout", "duration", "then SIGKILL after this long (default 30s)", _duration
    ),
    "exec-splay": _Spec(
        "exec_splay", "duration", "random delay before a reload or restart (default 0)", _duration
    ),
    "exec-env-pristine": _Spec(
        "exec_env_pristine", _BOOL, "the child gets only the -exec-env-custom variables"
    ),
    "exec-env-custom": _Spec(
        "exec_env_custom", "KEY=value", "set this variable for the child (repeatable)", _env_entry
    ),
    "exec-env-allowlist": _Spec(
        "exec_env_allowlist", "glob", "pass only variables matching (repeatable)", _nonempty
    ),
    "exec-env-denylist": _Spec(
        "exec_env_denylist", "glob", "never pass variables matching (repeatable)", _nonempty
    ),
    "exec-restart": _Spec(
        "exec_restart", "policy", "never, on-failure or always (default never)", _restart
    ),
    "exec-min-reload-interval": _Spec(
        "exec_min_reload_interval",
        "duration",
        "at most one reload or restart per this long (default 0)",
        _duration,
    ),
    "version": _Spec("version", _BOOL, "print the version and exit"),
    "help": _Spec("help", _BOOL, "print this help and exit"),
}
_ALIASES = {"v": "version", "h": "help"}
# Spellings consul-template accepted before 0.18, when its Consul flags gained the "consul-"
# prefix (-consul was the address). Accepted with a one-line warning so old scripts keep working.
_RENAMED = {
    "consul": "consul-addr",
    "token": "consul-token",
    "auth": "consul-auth",
    "ssl": "consul-ssl",
    "ssl-verify": "consul-ssl-verify",
    "ssl-cert": "consul-ssl-cert",
    "ssl-key": "consul-ssl-key",
    "ssl-ca-cert": "consul-ssl-ca-cert",
    "ssl-ca-path": "consul-ssl-ca-path",
    "ssl-server-name": "consul-ssl-server-name",
}
# Older spellings that cannot be mapped one to one: what to write instead.
_REPLACED = {
    "ssl-no-verify": "-consul-ssl-verify=false",
    "consul-ssl-no-verify": "-consul-ssl-verify=false",
}
_REPEATABLE = frozenset({"exec-env-custom", "exec-env-allowlist", "exec-env-denylist"})


def usage() -> str:
    """The text ``ctemplate -help`` prints."""
    lines = [
        "Usage: ctemplate [flags]",
        "       ctemplate watch [flags] [handler...]   consul watch (ctemplate watch -help)",
        "       ctemplate event [flags] [payload]      consul event (ctemplate event -help)",
        "       ctemplate convert FILE [-o OUT]   (a Go template rewritten as Jinja)",
        "",
        "Render files from Consul data with templates (consul-template compatible).",
        "Flags may start with - or --; values follow as -flag=value or -flag value.",
        "",
    ]
    for name, spec in _SPECS.items():
        aliases = [f"-{alias}" for alias, target in _ALIASES.items() if target == name]
        left = ", ".join([f"-{name}", *aliases])
        if spec.metavar:
            left = f"{left} {spec.metavar}"
        lines.append(f"  {left:<36} {spec.help}")
    return "\n".join(lines)


def _template(value: str, where: str, index: int) -> TemplateConfig:
    # Split on the first two colons only: the command may contain colons itself.
    parts = value.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ConfigError(
            f'{where}: {json.dumps(value)}: expected "source:destination[:command]" '
            "with a non-empty source and destination"
        )
    command = parts[2] if len(parts) == 3 and parts[2].strip() else None
    return TemplateConfig(
        source=parts[0], destination=parts[1], command=command, origin=f"-template[{index}]"
    )


def _unknown(name: str) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(name, [*_SPECS, *_ALIASES], n=1, cutoff=0.75)
    if close:
        return ConfigError(f"unknown flag -{name} (did you mean -{close[0]}?)")
    return ConfigError(f"unknown flag -{name} (see ctemplate -help)")


def parse_flags(argv: list[str]) -> Flags:
    """Parse the arguments after the program name. Raises :class:`ConfigError`.

    ``-h``/``-help`` stops at once and returns ``Flags(help=True)``.
    """
    values: dict[str, Any] = {}
    configs: list[str] = []
    templates: list[TemplateConfig] = []
    deprecations: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--":
            if index < len(argv):
                raise ConfigError(
                    f"unexpected argument {json.dumps(argv[index])} (ctemplate takes only flags)"
                )
            break
        if not arg.startswith("-") or arg == "-":
            raise ConfigError(f"unexpected argument {json.dumps(arg)} (ctemplate takes only flags)")
        body = arg[2:] if arg.startswith("--") else arg[1:]
        name, has_value, value = body.partition("=")
        if not name or name.startswith("-"):
            raise ConfigError(f"bad flag syntax: {json.dumps(arg)}")
        name = _ALIASES.get(name, name)
        typed = name
        if name in _RENAMED:
            old, name = name, _RENAMED[name]
            deprecations.append(
                f"flag -{old}: deprecated consul-template spelling (renamed in its 0.18); "
                f"accepted as -{name}, write -{name}"
            )
        if name in _REPLACED:
            raise ConfigError(f"flag -{name}: no longer exists; write {_REPLACED[name]}")
        spec = _SPECS.get(name)
        if spec is None:
            raise _unknown(name)
        where = f"flag -{typed}"
        if not spec.metavar:  # boolean
            flag_value = parse_bool(value, where=where) if has_value else True
            if name == "help" and flag_value:
                return Flags(help=True)
            values[spec.attr] = flag_value
            continue
        if not has_value:
            if index >= len(argv):
                raise ConfigError(f"{where}: missing value; write -{name}={spec.metavar}")
            value = argv[index]
            index += 1
        if name == "config":
            configs.append(_nonempty(value, where))
        elif name in _REPEATABLE:
            values.setdefault(spec.attr, ())
            values[spec.attr] += (spec.convert(value, where),)
        elif name == "template":
            templates.append(_template(value, where, len(templates) + 1))
        else:
            values[spec.attr] = spec.convert(value, where)
    if values.get("once_timeout") and not values.get("once"):
        raise ConfigError("flag -once-timeout: only works with -once; add -once")
    syntax = values.get("template_syntax")
    if syntax in ("go", "jinja"):
        templates = [dataclasses.replace(tc, syntax=syntax) for tc in templates]
    return Flags(
        configs=tuple(configs),
        templates=tuple(templates),
        deprecations=tuple(deprecations),
        **values,
    )
