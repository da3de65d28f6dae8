"""Configuration: consul-template's HCL (both the current and the older form) or JSON files,
environment variables and command-line flags, merged into frozen dataclasses.

Precedence, lowest first: built-in defaults < environment < config files (in the order given)
< command-line flags.

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
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ctemplate.errors import ConfigError

from .files import _config_files, load_config_file
from .model import (
    AuthConfig,
    Config,
    ConsulConfig,
    DedupConfig,
    ExecConfig,
    ExecEnvConfig,
    RetryConfig,
    SSLConfig,
    WaitConfig,
)
from .values import _finish_consul, _merge, _quote, check_token, parse_bool, parse_log_level

if TYPE_CHECKING:
    from .flags import Flags

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
        consul["token"] = check_token(found[1].strip(), f"env {found[0]}")
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
        consul["token"] = check_token(flags.consul_token.strip(), "flag -consul-token")
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
    if flags.dedup:
        layer["dedup"] = {"enabled": True}
    exec_flags: dict[str, Any] = {}
    for key, value in (
        ("command", flags.exec_command),
        ("reload_signal", flags.exec_reload_signal),
        ("kill_signal", flags.exec_kill_signal),
        ("kill_timeout", flags.exec_kill_timeout),
        ("splay", flags.exec_splay),
        ("restart", flags.exec_restart),
        ("min_reload_interval", flags.exec_min_reload_interval),
    ):
        if value is not None:
            exec_flags[key] = value
    env: dict[str, Any] = {}
    if flags.exec_env_pristine is not None:
        env["pristine"] = flags.exec_env_pristine
    for key, entries in (
        ("custom", flags.exec_env_custom),
        ("allowlist", flags.exec_env_allowlist),
        ("denylist", flags.exec_env_denylist),
    ):
        if entries:
            env[key] = list(entries)
    if env:
        exec_flags["env"] = env
    if exec_flags:
        layer["exec_flags"] = exec_flags
    return layer


# --------------------------------------------------------------------------------------------
# Merging


def _read_token_file(path: str, where: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {_quote(path)} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {_quote(path)}: {exc.strerror or exc}") from None
    shown = json.dumps(path, ensure_ascii=False)  # the whole path, however long
    return check_token(token, f"{where}: {shown}", from_file=True)


def _execs(merged: dict[str, Any]) -> tuple[ExecConfig, ...]:
    """The exec blocks, the ``-exec*`` flags applied to the first one (consul-template has
    one exec block; its flags override the file's values, and env lists append)."""
    blocks: list[dict[str, Any]] = [dict(b) for b in merged.get("execs", [])]
    flags: dict[str, Any] = merged.get("exec_flags", {})
    if flags:
        if not blocks:
            if "command" not in flags:
                name = next(iter(flags)).replace("_", "-")
                raise ConfigError(
                    f"flag -exec-{name}: there is no child to apply it to; add -exec COMMAND "
                    "or an exec block"
                )
            blocks.append({"origin": "flag -exec"})
        first = blocks[0]
        env = dict(first.get("env", {}))
        for key, value in flags.get("env", {}).items():
            env[key] = [*env.get(key, []), *value] if isinstance(value, list) else value
        first.update({k: v for k, v in flags.items() if k != "env"})
        if env:
            first["env"] = env
    result = []
    for block in blocks:
        env = block.pop("env", {})
        block.pop("enabled", None)
        block.pop("timeout", None)
        env_options: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in env.items()
        }
        options: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in block.items()
        }
        result.append(ExecConfig(env=ExecEnvConfig(**env_options), **options))
    return tuple(result)


def _build(merged: dict[str, Any]) -> Config:
    consul: dict[str, Any] = merged.get("consul", {})
    token: str = consul.get("token", "")
    token_file: str | None = consul.get("token_file")
    if token_file is not None:
        token = _read_token_file(token_file, consul["_token_file_where"])
    wait: WaitConfig | None = merged.get("wait")
    pid_file: str | None = merged.get("pid_file") or None
    dedup = DedupConfig(**merged.get("dedup", {}))
    if merged.get("once"):  # as in consul-template: -once renders alone
        dedup = replace(dedup, enabled=False)
    return Config(
        dedup=dedup,
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
        watches=tuple(merged.get("watches", ())),
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
        execs=_execs(merged),
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
