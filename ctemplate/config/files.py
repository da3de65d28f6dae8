"""Reading configuration files: consul-template's HCL (current and older forms) or JSON.

This is the only module that imports ``hcl2``, and it does so lazily. Each file becomes a *layer*:
a plain nested dict holding only the keys that file set, already validated and converted.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

from ctemplate.errors import ConfigError

from .model import TemplateConfig
from .values import (
    _WAIT_KEYS,
    IGNORED_KEYS,
    _blocks,
    _check_keys,
    _finish_consul,
    _merge,
    _parse_attempts,
    _parse_command,
    _parse_command_failure,
    _parse_max_connections,
    _parse_nonempty,
    _parse_patterns,
    _parse_str,
    _quote,
    _single_block,
    parse_bool,
    parse_duration,
    parse_listen_address,
    parse_log_level,
    parse_perms,
    parse_positive_duration,
    parse_signal,
    parse_size,
    parse_wait,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Keys

# consul-template keys ctemplate accepts but does not implement yet: each is skipped with a
# warning. Paths are written without template indices; a listed key covers its whole subtree.

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
    "execution_timeout",
    "execution_max_size",
    "plugin_max_output",
)
_DELIMITER_KEYS = ("left", "right")

# --------------------------------------------------------------------------------------------
# Files


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
        if "execution_timeout" in block:
            options["execution_timeout"] = parse_positive_duration(
                block["execution_timeout"], where=where("execution_timeout")
            )
        for key in ("execution_max_size", "plugin_max_output"):
            if key in block:
                options[key] = parse_size(block[key], where=where(key))
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
