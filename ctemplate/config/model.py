"""The configuration model: frozen dataclasses, one per block of consul-template's configuration.

Every value is already validated and converted (durations in seconds, modes as ints, signal names
normalised); ``==`` tells whether two configurations differ. Reading files, the environment and
flags into this model is :mod:`ctemplate.config.load`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    # Budgets of one execution: past them it is stopped and the template reported as failed.
    execution_timeout: float = 60.0  # seconds
    execution_max_size: int = 64 * 1024 * 1024  # bytes of output, and of any one value made
    plugin_max_output: int = 1024 * 1024  # bytes a plugin() may print
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
