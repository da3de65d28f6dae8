"""Reading configuration files: consul-template's HCL (current and older forms) or JSON.

This is the only module that imports ``hcl2``, and it does so lazily. Each file becomes a *layer*:
a plain nested dict holding only the keys that file set, already validated and converted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from ctemplate.errors import ConfigError

from .model import WATCH_TYPE_PARAMS, HttpHandlerConfig, TemplateConfig, WatchConfig
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
    check_token,
    parse_bool,
    parse_duration,
    parse_env_entries,
    parse_exec_command,
    parse_listen_address,
    parse_log_level,
    parse_perms,
    parse_positive_duration,
    parse_restart,
    parse_signal,
    parse_size,
    parse_string_list,
    parse_syntax,
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
    "watch",  # ctemplate's block form
    "watches",  # Consul's agent-config form, accepted as is
    "deduplicate",
    "exec",
)
_DEDUP_KEYS = ("enabled", "prefix", "ttl", "max_stale", "block_query_wait")
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
    "syntax",
    "trim_blocks",
    "lstrip_blocks",
    "execution_timeout",
    "execution_max_size",
    "plugin_max_output",
)
_DELIMITER_KEYS = ("left", "right")
_WATCH_TYPES = ("key", "keyprefix", "services", "nodes", "service", "checks", "event")
_WATCH_KEYS = (
    "type",
    "key",
    "prefix",
    "service",
    "tag",
    "passingonly",
    "state",
    "name",
    "datacenter",
    "token",
    "stale",
    "handler_type",
    "args",
    "handler",
    "http_handler_config",
    # ctemplate's own
    "timeout",
    "skip_initial",
    "state_file",
)
_HTTP_HANDLER_KEYS = ("path", "method", "header", "timeout", "tls_skip_verify")
_CHECK_STATES = ("any", "passing", "warning", "critical")
_EXEC_KEYS = (
    "command",
    "enabled",
    "timeout",  # consul-template's; meaningless for a supervised child: read and unused
    "splay",
    "reload_signal",
    "kill_signal",
    "kill_timeout",
    "env",
    "restart",
    "restart_backoff",
    "restart_max_backoff",
    "min_reload_interval",
    "templates",
)
_EXEC_ENV_KEYS = (
    "pristine",
    "custom",
    "allowlist",
    "denylist",
    "whitelist",  # consul-template's older names
    "blacklist",
)

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
        if "deduplicate" in top:
            layer["dedup"] = self.dedup(top["deduplicate"])
        if "template" in top:
            blocks = _blocks(top["template"], self.where("template"))
            layer["templates"] = [
                self.template(block, index) for index, block in enumerate(blocks, start=1)
            ]
        if "exec" in top:
            blocks = _blocks(top["exec"], self.where("exec"))
            execs = [self.exec(block, index) for index, block in enumerate(blocks, start=1)]
            layer["execs"] = [e for e in execs if e.get("enabled", True)]
        watches: list[WatchConfig] = []
        for key in ("watch", "watches"):
            if key in top:
                blocks = _blocks(top[key], self.where(key))
                watches += [
                    self.watch(block, f"{key}[{index}]")
                    for index, block in enumerate(blocks, start=1)
                ]
        if watches:
            layer["watches"] = watches
        return layer

    def watch(self, value: dict[str, Any], keypath: str) -> WatchConfig:
        """One watch in ctemplate's ``watch { ... }`` or Consul's ``watches = [{ ... }]`` form."""
        block = self.keys(value, generic="watch", keypath=keypath, known=_WATCH_KEYS)
        origin = self.where(keypath)

        def where(key: str) -> str:
            return f"{origin}.{key}"

        options: dict[str, Any] = {"origin": origin}
        for key in ("type", "key", "prefix", "service", "state", "name", "datacenter"):
            if key in block:
                options[key] = _parse_str(block[key], where=where(key))
        if "token" in block:
            options["token"] = _parse_str(block["token"], where=where("token"))
        kind = options.get("type", "")
        if kind not in _WATCH_TYPES:
            problem = f"{_quote(kind)} is not a watch type" if kind else "is required"
            raise ConfigError(f"{where('type')}: {problem}; use one of {', '.join(_WATCH_TYPES)}")
        needs = {"key": "key", "keyprefix": "prefix", "service": "service"}.get(kind)
        if needs and not options.get(needs):
            raise ConfigError(f"{where(needs)}: a {kind} watch needs {needs}")
        for key in ("key", "prefix", "service", "tag", "passingonly", "state", "name", "stale"):
            if key in block and key not in WATCH_TYPE_PARAMS[kind]:
                raise ConfigError(f"{where(key)}: does not apply to a {kind} watch; remove it")
        if kind == "checks" and options.get("service") and options.get("state"):
            raise ConfigError(f"{origin}: a checks watch takes service or state, not both")
        if options.get("state") and options["state"] not in _CHECK_STATES:
            raise ConfigError(
                f"{where('state')}: {_quote(options['state'])} is not one of "
                + ", ".join(_CHECK_STATES)
            )
        if "tag" in block:  # a string, or a list of them (Consul accepts both)
            tags = block["tag"]
            if isinstance(tags, str):
                tags = [tags]
            options["tags"] = tuple(_parse_patterns(tags, where=where("tag")))
        for key in ("passingonly", "stale", "skip_initial"):
            if key in block:
                options[key] = parse_bool(block[key], where=where(key))
        if "timeout" in block:
            options["timeout"] = parse_duration(block["timeout"], where=where("timeout"))
        if "state_file" in block:
            options["state_file"] = _parse_nonempty(block["state_file"], where=where("state_file"))
        handler_type = _parse_str(block.get("handler_type", "script"), where=where("handler_type"))
        if handler_type not in ("script", "http"):
            raise ConfigError(
                f'{where("handler_type")}: {_quote(handler_type)} must be "script" or "http"'
            )
        options["handler_type"] = handler_type
        if "args" in block:
            args = block["args"]
            if not (isinstance(args, list) and args and all(isinstance(a, str) for a in args)):
                raise ConfigError(
                    f'{where("args")}: expected a non-empty list of strings, e.g. ["/bin/handler"]'
                )
            options["args"] = tuple(args)
        if "handler" in block:
            options["handler"] = _parse_nonempty(block["handler"], where=where("handler"))
        if handler_type == "script":
            if "args" in options and "handler" in options:
                raise ConfigError(f"{origin}: set args or handler, not both")
            if "args" not in options and "handler" not in options:
                raise ConfigError(
                    f'{origin}: a script watch needs args = ["/path/to/handler", ...]'
                )
            if "http_handler_config" in block:
                raise ConfigError(
                    f'{where("http_handler_config")}: only with handler_type = "http"'
                )
        else:
            if "args" in options or "handler" in options:
                raise ConfigError(f'{origin}: args and handler are for handler_type = "script"')
            if "http_handler_config" not in block:
                raise ConfigError(f'{origin}: handler_type = "http" needs http_handler_config')
            options["http"] = self.http_handler(block["http_handler_config"], keypath)
        return WatchConfig(**options)

    def http_handler(self, value: object, keypath: str) -> HttpHandlerConfig:
        keypath = f"{keypath}.http_handler_config"
        block = self.keys(
            value, generic="watch.http_handler_config", keypath=keypath, known=_HTTP_HANDLER_KEYS
        )

        def where(key: str) -> str:
            return self.where(f"{keypath}.{key}")

        path = _parse_nonempty(block.get("path", ""), where=where("path"))
        if not path.lower().startswith(("http://", "https://")):
            raise ConfigError(f"{where('path')}: expected an http:// or https:// URL")
        options: dict[str, Any] = {"path": path}
        if "method" in block:
            options["method"] = _parse_nonempty(block["method"], where=where("method")).upper()
        if "timeout" in block:
            options["timeout"] = parse_duration(block["timeout"], where=where("timeout"))
        if "tls_skip_verify" in block:
            options["tls_skip_verify"] = parse_bool(
                block["tls_skip_verify"], where=where("tls_skip_verify")
            )
        if "header" in block:
            header = _single_block(block["header"], where("header"))
            pairs: list[tuple[str, tuple[str, ...]]] = []
            for name, values in header.items():
                if isinstance(values, str):
                    values = [values]
                if not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
                    raise ConfigError(
                        f'{where("header")}.{name}: expected a list of strings, e.g. ["value"]'
                    )
                pairs.append((str(name), tuple(values)))
            options["header"] = tuple(pairs)
        return HttpHandlerConfig(**options)

    def dedup(self, value: object) -> dict[str, Any]:
        """``deduplicate { ... }``: ``enabled`` is implied by any other key, as in
        consul-template."""
        block = self.keys(value, generic="deduplicate", keypath="deduplicate", known=_DEDUP_KEYS)
        result: dict[str, Any] = {}
        if "prefix" in block:
            where = self.where("deduplicate.prefix")
            prefix = _parse_nonempty(block["prefix"], where=where).strip("/")
            if not prefix:
                raise ConfigError(f'{where}: must name a KV prefix, e.g. "ctemplate/dedup/"')
            result["prefix"] = prefix + "/"
        for key in ("ttl", "max_stale", "block_query_wait"):
            if key in block:
                result[key] = parse_duration(block[key], where=self.where(f"deduplicate.{key}"))
        if result.get("block_query_wait", 0) > 600:
            raise ConfigError(
                f"{self.where('deduplicate.block_query_wait')}: Consul waits at most 10m"
            )
        if "ttl" in result and not 10.0 <= result["ttl"] <= 86400.0:
            raise ConfigError(
                f"{self.where('deduplicate.ttl')}: Consul accepts session TTLs from 10s to 24h"
            )
        if "enabled" in block:
            result["enabled"] = parse_bool(
                block["enabled"], where=self.where("deduplicate.enabled")
            )
        elif result:
            result["enabled"] = True
        return result

    def exec(self, value: dict[str, Any], index: int) -> dict[str, Any]:
        """One ``exec`` block as validated options (see ``load._build_exec``)."""
        keypath = f"exec[{index}]"
        block = self.keys(value, generic="exec", keypath=keypath, known=_EXEC_KEYS)
        origin = self.where(keypath)

        def env_keys(env: object) -> dict[str, Any]:
            return self.keys(
                env, generic="exec.env", keypath=f"{keypath}.env", known=_EXEC_ENV_KEYS
            )

        return parse_exec_options(block, origin, env_keys)

    def consul(self, value: object) -> dict[str, Any]:
        block = self.keys(value, generic="consul", keypath="consul", known=_CONSUL_KEYS)
        consul: dict[str, Any] = {}
        for key in ("address", "token_file"):
            if key in block:
                consul[key] = _parse_nonempty(block[key], where=self.where(f"consul.{key}"))
        if "token_file" in consul:
            consul["_token_file_where"] = self.where("consul.token_file")
        if "token" in block:
            where = self.where("consul.token")
            consul["token"] = check_token(_parse_str(block["token"], where=where), where)
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
        if "syntax" in block:
            options["syntax"] = parse_syntax(block["syntax"], where=where("syntax"))
        for key in (
            "backup",
            "create_dest_dirs",
            "error_on_missing_key",
            "trim_blocks",
            "lstrip_blocks",
        ):
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


def parse_exec_options(
    block: dict[str, Any], origin: str, env_keys: Callable[[object], dict[str, Any]]
) -> dict[str, Any]:
    """Validate and convert the keys of an ``exec`` block; ``origin`` prefixes messages."""

    def where(key: str) -> str:
        return f"{origin}.{key}"

    options: dict[str, Any] = {"origin": origin}
    if "enabled" in block:
        options["enabled"] = parse_bool(block["enabled"], where=where("enabled"))
    if "command" in block:
        options["command"] = parse_exec_command(block["command"], where=where("command"))
    elif options.get("enabled", True):
        raise ConfigError(f"{origin}: command is required (the program to start and supervise)")
    for key in ("timeout", "splay", "kill_timeout", "restart_backoff", "restart_max_backoff"):
        if key in block:
            options[key] = parse_duration(block[key], where=where(key))
    if "min_reload_interval" in block:
        options["min_reload_interval"] = parse_duration(
            block["min_reload_interval"], where=where("min_reload_interval")
        )
    for key in ("reload_signal", "kill_signal"):
        if key in block:
            options[key] = parse_signal(block[key], where=where(key))
    if "restart" in block:
        options["restart"] = parse_restart(block["restart"], where=where("restart"))
    if "templates" in block:
        options["templates"] = parse_string_list(block["templates"], where=where("templates"))
    if "env" in block:
        env = env_keys(block["env"])
        options["env"] = {}
        if "pristine" in env:
            options["env"]["pristine"] = parse_bool(env["pristine"], where=where("env.pristine"))
        if "custom" in env:
            options["env"]["custom"] = parse_env_entries(env["custom"], where=where("env.custom"))
        for key, old in (("allowlist", "whitelist"), ("denylist", "blacklist")):
            patterns: list[str] = []
            for name in (key, old):
                if name in env:
                    patterns += parse_string_list(env[name], where=where(f"env.{name}"))
            if patterns:
                options["env"][key] = patterns
    return options


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
        *_WATCH_KEYS,
        *_HTTP_HANDLER_KEYS,
        *_EXEC_KEYS,
        *_EXEC_ENV_KEYS,
        *(key.rpartition(".")[2] for key in IGNORED_KEYS),
        *("true", "false", "null", "if", "in", "for", "for_each", "else", "endif", "endfor"),
    }
)


def _note_parser_build() -> None:
    """Say why the first HCL file after an install takes seconds: python-hcl2 builds its LALR
    parser on first use (~10 s on a slow machine) and caches it next to its code
    (``hcl2/.lark_cache.bin``); later runs load the cache in ~0.1 s. Where that directory is
    read-only the parser is built on every start."""
    try:
        from hcl2.parser import PARSER_FILE
    except ImportError:  # another python-hcl2 layout: nothing to say
        return
    if not os.path.exists(PARSER_FILE):
        logger.info(
            "(config) building python-hcl2's parser (first HCL file since it was installed; "
            "takes a few seconds, then cached in %s)",
            PARSER_FILE,
        )


def release_hcl_parser() -> bool:
    """Drop python-hcl2's parser once the files are read; whether there was one to drop.

    python-hcl2 keeps it, with its LALR tables, for the process' life (an ``lru_cache``);
    dropped and collected, a one-template daemon with an HCL file idles 1.5 MiB lower (44.2 ->
    42.7 MiB). A daemon reads its files again only on a reload, which builds the parser again
    from python-hcl2's cache file (~0.1 s).
    """
    module = sys.modules.get("hcl2.parser")  # imported only once an HCL file was parsed
    clear = getattr(getattr(module, "parser", None), "cache_clear", None)
    if clear is None:
        return False
    clear()
    return True


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
    _note_parser_build()
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
    _check_unquoted(data, text, name)
    return data


_SECRET_KEYS = frozenset({"token", "password", "username"})


def _check_unquoted(data: object, text: str, name: str, key: str = "") -> None:
    """Reject a value written without quotes (``source = ok.j2``).

    python-hcl2 reads a bare expression as the interpolation ``"${ok.j2}"``, which would then
    be reported as a file named ``${ok.j2}``. A value that is a whole interpolation is looked
    for, unquoted, on a ``key = ...`` line of the file; a quoted ``"${...}"`` is left alone.
    """
    if isinstance(data, dict):
        for k, v in data.items():
            _check_unquoted(v, text, name, str(k))
    elif isinstance(data, list):
        for v in data:
            _check_unquoted(v, text, name, key)
    elif isinstance(data, str) and key and data.startswith("${") and data.endswith("}"):
        inner = data[2:-1]
        pattern = rf"^[ \t]*{re.escape(key)}[ \t]*=[ \t]*{re.escape(inner)}[ \t]*(?:#.*|//.*)?$"
        match = re.search(pattern, text, re.MULTILINE)
        if match is None:
            return
        line = text.count("\n", 0, match.start()) + 1
        example = '"..."' if key in _SECRET_KEYS else json.dumps(inner)
        raise ConfigError(
            f"{name}:{line}: {key}: the value must be quoted; write {key} = {example}"
        )


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
