"""``ctemplate watch`` and ``ctemplate event``: consul watch's and consul event's command lines.

Flags follow config/flags.py's rules (``-flag`` or ``--flag``, ``-flag=v`` or ``-flag v``, booleans
never take the next argument); the first argument that is not a flag starts the handler (watch) or
is the payload (event), as with Go's ``flag`` package. Consul's HTTP flags (``-http-addr``,
``-token``, ``-token-file``, ``-datacenter``, ``-stale``, ``-ca-file``, ``-ca-path``,
``-client-cert``, ``-client-key``, ``-tls-server-name``) and ctemplate's ``-consul-*`` flags
both work; ``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN`` and the other ``CONSUL_*`` variables are
read as by the daemon. A bad flag prints one line and exits 13.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..config import Config, Flags, load_config
from ..config.model import WatchConfig
from ..config.values import parse_bool, parse_duration, parse_log_level
from ..consul.client import ConsulClient
from ..consul.retry import WatchSettings
from ..errors import ConfigError, CtemplateError

__all__ = ["event_main", "watch_main"]

EXIT_OK = 0
EXIT_FLAGS = 13
EXIT_ERROR = 14


@dataclass(frozen=True, slots=True)
class _Opt:
    dest: str
    metavar: str  # "" for booleans
    help: str
    repeat: bool = False


# Consul's HTTP flags -> the daemon's -consul-* flags (one set of rules for both).
_HTTP: dict[str, _Opt] = {
    "http-addr": _Opt("consul_addr", "address", "Consul's HTTP address (CONSUL_HTTP_ADDR)"),
    "consul-addr": _Opt("consul_addr", "address", "same as -http-addr"),
    "token": _Opt("consul_token", "token", "ACL token (CONSUL_HTTP_TOKEN)"),
    "consul-token": _Opt("consul_token", "token", "same as -token"),
    "token-file": _Opt("consul_token_file", "path", "file holding the ACL token"),
    "consul-token-file": _Opt("consul_token_file", "path", "same as -token-file"),
    "datacenter": _Opt("datacenter", "dc", "datacenter to query (default: the agent's)"),
    "ca-file": _Opt("consul_ssl_ca_cert", "path", "CA certificate file (CONSUL_CACERT)"),
    "consul-ssl-ca-cert": _Opt("consul_ssl_ca_cert", "path", "same as -ca-file"),
    "ca-path": _Opt("consul_ssl_ca_path", "dir", "directory of CA certificates"),
    "consul-ssl-ca-path": _Opt("consul_ssl_ca_path", "dir", "same as -ca-path"),
    "client-cert": _Opt("consul_ssl_cert", "path", "client certificate file"),
    "consul-ssl-cert": _Opt("consul_ssl_cert", "path", "same as -client-cert"),
    "client-key": _Opt("consul_ssl_key", "path", "client key file"),
    "consul-ssl-key": _Opt("consul_ssl_key", "path", "same as -client-key"),
    "tls-server-name": _Opt("consul_ssl_server_name", "name", "server name to verify (SNI)"),
    "consul-ssl-server-name": _Opt("consul_ssl_server_name", "name", "same as -tls-server-name"),
    "consul-ssl": _Opt("consul_ssl", "", "talk HTTPS to Consul"),
    "consul-ssl-verify": _Opt("consul_ssl_verify", "", "verify Consul's certificate"),
    "log-level": _Opt("log_level", "level", "trace, debug, info, warn or err (default warn)"),
    "help": _Opt("help", "", "print this help and exit"),
}

_WATCH: dict[str, _Opt] = {
    "type": _Opt("type", "type", "key, keyprefix, services, nodes, service, checks or event"),
    "key": _Opt("key", "key", "the key to watch (type key)"),
    "prefix": _Opt("prefix", "prefix", "the key prefix to watch (type keyprefix)"),
    "service": _Opt("service", "name", "the service (type service; optional for checks)"),
    "tag": _Opt("tags", "tag", "service tag to filter on (repeatable; type service)", True),
    "passingonly": _Opt("passingonly", "true|false", "only instances passing all checks"),
    "state": _Opt("state", "state", "check state: any, passing, warning, critical (checks)"),
    "name": _Opt("name", "name", "event name to watch (type event)"),
    "stale": _Opt("stale", "", "allow any server to answer (stale reads)"),
    "shell": _Opt("shell", "", "run the handler through $SHELL -c (default true)"),
    "timeout": _Opt("timeout", "duration", "kill a handler after this (default 30s, 0 = never)"),
    "skip-initial": _Opt("skip_initial", "", "do not run the handler with the data found at start"),
    "state-file": _Opt("state_file", "path", "keep the last index here across restarts"),
    **_HTTP,
}

_EVENT: dict[str, _Opt] = {
    "name": _Opt("name", "name", "name of the event (required)"),
    "node": _Opt("node", "regexp", "only nodes whose name matches"),
    "service": _Opt("service", "regexp", "only nodes with a matching service"),
    "tag": _Opt("tag", "regexp", "only instances with a matching tag (needs -service)"),
    **_HTTP,
}


def _parse(
    argv: list[str], opts: Mapping[str, _Opt], command: str
) -> tuple[dict[str, Any], list[str]]:
    """Flags up to the first argument that is not one; returns (values, the rest)."""
    values: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            index += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        index += 1
        body = arg[2:] if arg.startswith("--") else arg[1:]
        name, has_value, value = body.partition("=")
        if not name or name.startswith("-"):
            raise ConfigError(f"bad flag syntax: {json.dumps(arg)}")
        if name == "h":
            name = "help"
        opt = opts.get(name)
        if opt is None:
            import difflib

            close = difflib.get_close_matches(name, list(opts), n=1, cutoff=0.75)
            hint = f"did you mean -{close[0]}?" if close else f"see ctemplate {command} -help"
            raise ConfigError(f"unknown flag -{name} ({hint})")
        where = f"flag -{name}"
        if not opt.metavar:
            values[opt.dest] = parse_bool(value, where=where) if has_value else True
            if opt.dest == "help" and values["help"]:
                return values, []
            continue
        if not has_value:
            if index >= len(argv):
                raise ConfigError(f"{where}: missing value; write -{name}={opt.metavar}")
            value = argv[index]
            index += 1
        if opt.repeat:
            values.setdefault(opt.dest, []).append(value)
        else:
            values[opt.dest] = value
    return values, argv[index:]


def _usage(command: str, synopsis: str, opts: Mapping[str, _Opt]) -> str:
    lines = [f"Usage: ctemplate {command} [flags] {synopsis}", ""]
    for name, opt in opts.items():
        left = f"-{name}" + (f" {opt.metavar}" if opt.metavar else "")
        lines.append(f"  {left:<36} {opt.help}")
    return "\n".join(lines)


def _config(values: dict[str, Any], environ: Mapping[str, str]) -> Config:
    """The Consul part of the configuration: defaults < CONSUL_* variables < flags."""
    fields = {k: v for k, v in values.items() if k.startswith("consul_")}
    return load_config(Flags(**fields), environ)


def _settings(config: Config) -> WatchSettings:
    r = config.consul.retry
    return WatchSettings(
        wait=config.block_query_wait,
        max_stale=0.0,
        retry_backoff=r.backoff,
        retry_max_backoff=r.max_backoff,
        retry_attempts=r.attempts or 0,
        retry_enabled=r.enabled,
        max_connections=config.consul.max_connections,
    )


def _error(message: str) -> None:
    print(f"ctemplate: error: {message}", file=sys.stderr)


def _watch_config(values: dict[str, Any], rest: list[str]) -> WatchConfig:
    def text(name: str) -> str:
        return str(values.get(name, ""))

    passingonly = False
    if "passingonly" in values:
        passingonly = parse_bool(values["passingonly"], where="flag -passingonly")
    timeout = 30.0
    if "timeout" in values:
        timeout = parse_duration(values["timeout"], where="flag -timeout")
    shell = values.get("shell", True)
    watch = WatchConfig(
        type=text("type"),
        key=text("key"),
        prefix=text("prefix"),
        service=text("service"),
        tags=tuple(values.get("tags", ())),
        passingonly=passingonly,
        state=text("state"),
        name=text("name"),
        datacenter=text("datacenter"),
        stale=bool(values.get("stale", False)),
        args=() if shell else tuple(rest),
        handler=" ".join(rest) if shell else "",
        timeout=timeout,
        skip_initial=bool(values.get("skip_initial", False)),
        state_file=text("state_file"),
        origin="ctemplate watch",
    )
    from .watch import validate

    validate(watch)
    return watch


LogSetup = Callable[[str], None]


def watch_main(
    argv: list[str], setup_logging: LogSetup, environ: Mapping[str, str] | None = None
) -> int:
    """``ctemplate watch [flags] [handler...]``; returns the exit code. ``setup_logging`` is the
    CLI's (its log format), called with the level."""
    env = os.environ if environ is None else environ
    try:
        values, rest = _parse(argv, _WATCH, "watch")
        if values.get("help"):
            print(_usage("watch", "[handler...]", _WATCH))
            return EXIT_OK
        if "log_level" in values:
            values["log_level"] = parse_log_level(values["log_level"], where="flag -log-level")
        watch = _watch_config(values, rest)
        config = _config(values, env)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_FLAGS
    setup_logging(values.get("log_level") or "warn")
    return _run(lambda: _watch(watch, config))


def _run(main: Callable[[], Any]) -> int:
    try:
        return int(asyncio.run(main()))
    except KeyboardInterrupt:
        return EXIT_OK
    except CtemplateError as exc:
        _error(str(exc))
        return EXIT_ERROR


async def _watch(watch: WatchConfig, config: Config) -> int:
    import signal

    from .handlers import make_handler
    from .watch import WatchLoop

    handler = make_handler(watch, passthrough=True)
    settings = _settings(config)
    if handler is None and not settings.retry_attempts:
        # Printing once: give up soon (consul watch fails at once) rather than wait for the agent.
        settings = WatchSettings(**{**_asdict(settings), "retry_attempts": 2})
    client = ConsulClient(config.consul, max_connections=4)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopping = False

    def stop() -> None:
        nonlocal stopping
        stopping = True
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        watcher = WatchLoop(watch, client, settings, handler)
        await watcher.run()
        if handler is None:
            print(json.dumps(watcher.first, indent=4, ensure_ascii=False))
        return EXIT_OK
    except asyncio.CancelledError:
        if stopping:
            return EXIT_OK
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await client.aclose()


def _asdict(settings: WatchSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


def event_main(
    argv: list[str], setup_logging: LogSetup, environ: Mapping[str, str] | None = None
) -> int:
    """``ctemplate event -name NAME [-node RE] [-service RE] [-tag RE] [PAYLOAD]``."""
    env = os.environ if environ is None else environ
    try:
        values, rest = _parse(argv, _EVENT, "event")
        if values.get("help"):
            print(_usage("event", "[payload]", _EVENT))
            return EXIT_OK
        if not values.get("name"):
            raise ConfigError("flag -name: an event name is required; write -name=NAME")
        if values.get("tag") and not values.get("service"):
            raise ConfigError("flag -tag: only works with -service; add -service=REGEXP")
        if len(rest) > 1:
            raise ConfigError(
                f"unexpected argument {json.dumps(rest[1])} (the payload is one argument; quote it)"
            )
        config = _config(values, env)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_FLAGS
    setup_logging(values.get("log_level") or "warn")
    payload = rest[0].encode() if rest else b""
    return _run(lambda: _fire(values, payload, config))


async def _fire(values: dict[str, Any], payload: bytes, config: Config) -> int:
    client = ConsulClient(config.consul, max_connections=1)
    params = {k: values[k] for k in ("node", "service", "tag") if values.get(k)}
    if values.get("datacenter"):
        params["dc"] = values["datacenter"]
    try:
        _status, answer = await client.write(
            "PUT", f"/v1/event/fire/{quote(values['name'], safe='')}", params, content=payload
        )
    finally:
        await client.aclose()
    event_id = answer.get("ID", "") if isinstance(answer, dict) else ""
    print(f"Event ID: {event_id}")
    logging.getLogger(__name__).debug("event %s fired", event_id)
    return EXIT_OK
