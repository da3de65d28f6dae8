"""The configuration model: frozen dataclasses, one per block of consul-template's configuration.

Every value is already validated and converted (durations in seconds, modes as ints, signal names
normalised); ``==`` tells whether two configurations differ. Reading files, the environment and
flags into this model is :mod:`ctemplate.config.load`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Syntax = Literal["go", "jinja"]

# File name endings of Go text/template sources (consul-template's own files); every other
# source, and inline contents, is Jinja unless the template says ``syntax``.
GO_EXTENSIONS = (".ctmpl", ".tmpl", ".tpl", ".gotmpl")


@dataclass(frozen=True, slots=True)
class WaitConfig:
    """Quiescence: render only after ``min`` seconds without changes, at the latest after
    ``max``."""

    min: float
    max: float


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """``consul { retry { ... } }``: how failed requests to Consul are retried."""

    enabled: bool = True
    # 0 = retry forever. None = not set: unlimited in daemon mode, 12 with -once.
    attempts: int | None = None
    backoff: float = 0.25  # seconds, first retry delay
    max_backoff: float = 60.0  # seconds, cap on a single delay


@dataclass(frozen=True, slots=True)
class SSLConfig:
    """``consul { ssl { ... } }``: TLS to the agent (off: plain HTTP)."""

    enabled: bool = False
    verify: bool = True
    cert: str | None = None
    key: str | None = None
    ca_cert: str | None = None
    ca_path: str | None = None
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """``consul { auth { ... } }``: HTTP basic authentication (the password is never shown)."""

    enabled: bool = False
    username: str = ""
    password: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class ConsulConfig:
    """The ``consul`` block: which agent, with which token, how many connections."""

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
    """One ``template`` block (or ``-template`` flag): source, destination, commands."""

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
    # "go" | "jinja"; None: by the source's extension (see GO_EXTENSIONS), Jinja for contents.
    syntax: Syntax | None = None
    # Jinja only: drop the newline after a block tag / strip spaces before it (Jinja's options).
    trim_blocks: bool = True
    lstrip_blocks: bool = True
    # Budgets of one execution: past them it is stopped and the template reported as failed.
    execution_timeout: float = 60.0  # seconds
    execution_max_size: int = 64 * 1024 * 1024  # bytes of output, and of any one value made
    plugin_max_output: int = 1024 * 1024  # bytes a plugin() may print
    # Where this template was declared, for messages: "ct.hcl: template[1]" or "-template[1]".
    origin: str = ""

    @property
    def template_syntax(self) -> Syntax:
        """The syntax this template is read in: ``syntax`` if set, else by extension."""
        if self.syntax is not None:
            return self.syntax
        if self.source is not None and self.source.lower().endswith(GO_EXTENSIONS):
            return "go"
        return "jinja"


@dataclass(frozen=True, slots=True)
class HttpHandlerConfig:
    """Consul's ``http_handler_config``: where a watch POSTs (or PUTs) its JSON."""

    path: str
    method: str = "POST"
    header: tuple[tuple[str, tuple[str, ...]], ...] = ()  # name -> values, in order
    timeout: float = 10.0  # seconds
    tls_skip_verify: bool = False


# The parameters each watch type takes besides the common ones (datacenter, token, handler...),
# as Consul's api/watch: any other one is an error there ("Invalid parameters").
WATCH_TYPE_PARAMS: dict[str, tuple[str, ...]] = {
    "key": ("key", "stale"),
    "keyprefix": ("prefix", "stale"),
    "services": ("stale",),
    "nodes": ("stale",),
    "service": ("service", "tag", "passingonly", "stale"),
    "checks": ("service", "state", "stale"),
    "event": ("name",),
}


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """One watch, as ``consul watch`` takes it: a type, its parameters and a handler.

    ``args`` runs as an argv; ``handler`` (a string) through ``$SHELL -c`` (``/bin/sh``);
    ``http`` POSTs the JSON instead. None of the three: print the JSON (the CLI without a
    handler).
    """

    type: str  # key | keyprefix | services | nodes | service | checks | event
    key: str = ""
    prefix: str = ""
    service: str = ""
    tags: tuple[str, ...] = ()
    passingonly: bool = False
    state: str = ""  # checks: the check state (any, passing, warning, critical)
    name: str = ""  # event name ("" = every event)
    datacenter: str = ""
    token: str = field(default="", repr=False)  # this watch's own token; "" = the client's
    stale: bool = False
    handler_type: str = "script"  # script | http
    args: tuple[str, ...] = ()
    handler: str = ""  # a shell command line (the older form)
    http: HttpHandlerConfig | None = None
    timeout: float = 30.0  # seconds a script handler may run; 0 = no limit
    skip_initial: bool = False  # do not run the handler with the data found at start
    state_file: str = ""  # keeps the last index (event: the last event) across restarts
    origin: str = ""  # "ct.hcl: watch[1]" or "-type key"


@dataclass(frozen=True, slots=True)
class DedupConfig:
    """``deduplicate { ... }`` / ``-dedup``: one instance per template reads Consul and shares
    the data it rendered from through the KV store (ctemplate.modes.dedup)."""

    enabled: bool = False
    prefix: str = "ctemplate/dedup/"  # KV prefix of the locks and the shared data
    ttl: float = 15.0  # seconds, TTL of the Consul session (renewed at half of it)
    max_stale: float = 2.0  # seconds; stale reads of the shared data allowed this old
    # seconds, wait of the blocking reads of a lock and of the shared data: both answer at once
    # on a change, so a long wait only saves idle requests (Consul's maximum is 10 minutes)
    block_query_wait: float = 300.0


@dataclass(frozen=True, slots=True)
class ExecEnvConfig:
    """The child's environment: ctemplate's own (plus ``CONSUL_HTTP_*``) filtered by the
    ``allowlist`` and ``denylist`` globs (deny wins), or nothing with ``pristine``; then
    ``custom`` ``KEY=value`` entries, which always win."""

    pristine: bool = False
    custom: tuple[str, ...] = ()
    allowlist: tuple[str, ...] = ()
    denylist: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExecConfig:
    """One supervised child (an ``exec`` block, or the ``-exec`` flags)."""

    # A str runs through `sh -c` in its own process group; a tuple is an argv.
    command: str | tuple[str, ...]
    splay: float = 0.0  # seconds: random delay in [0, splay) before a reload signal or restart
    reload_signal: str = ""  # "" = restart the child when its files change
    kill_signal: str = "SIGINT"
    kill_timeout: float = 30.0  # seconds from kill_signal to SIGKILL of the process group
    env: ExecEnvConfig = ExecEnvConfig()
    restart: str = "never"  # never | on-failure | always
    restart_backoff: float = 1.0  # seconds before the first restart, doubled each time
    restart_max_backoff: float = 60.0  # cap on one delay
    min_reload_interval: float = 0.0  # seconds: at most one reload signal/restart per interval
    templates: tuple[str, ...] = ()  # destinations it depends on; () = every template
    origin: str = ""  # "ct.hcl: exec[1]" or "-exec", for messages


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration: flags over files over defaults, checked and final."""

    consul: ConsulConfig = ConsulConfig()
    dedup: DedupConfig = DedupConfig()
    templates: tuple[TemplateConfig, ...] = ()
    watches: tuple[WatchConfig, ...] = ()
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
    execs: tuple[ExecConfig, ...] = ()  # supervised children (exec mode)
