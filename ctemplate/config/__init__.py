"""Configuration: what the user asked for, from files, the environment and flags.

* :mod:`.model`: the frozen dataclasses (``Config``, ``TemplateConfig``, ...);
* :mod:`.values`: parsers of single values (durations, perms, signals, addresses);
* :mod:`.files`: consul-template's HCL (current and older forms) and JSON files;
* :mod:`.flags`: the command line, parsed as Go's ``flag`` package does;
* :mod:`.load`: the merge, defaults < environment < files (in order) < flags.

Nothing here knows of Consul, templates or the loop; every other stage reads this model.
"""

from __future__ import annotations

from .files import load_config_file
from .flags import Flags, parse_flags, usage
from .load import load_config
from .model import (
    AuthConfig,
    Config,
    ConsulConfig,
    DedupConfig,
    ExecConfig,
    ExecEnvConfig,
    RetryConfig,
    SSLConfig,
    TemplateConfig,
    WaitConfig,
)
from .values import (
    IGNORED_KEYS,
    parse_bool,
    parse_duration,
    parse_listen_address,
    parse_log_level,
    parse_perms,
    parse_signal,
    parse_wait,
)

__all__ = [
    "IGNORED_KEYS",
    "AuthConfig",
    "Config",
    "ConsulConfig",
    "DedupConfig",
    "ExecConfig",
    "ExecEnvConfig",
    "Flags",
    "RetryConfig",
    "SSLConfig",
    "TemplateConfig",
    "WaitConfig",
    "load_config",
    "load_config_file",
    "parse_bool",
    "parse_duration",
    "parse_flags",
    "parse_listen_address",
    "parse_log_level",
    "parse_perms",
    "parse_signal",
    "parse_wait",
    "usage",
]
