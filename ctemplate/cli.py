"""The ``ctemplate`` command: parse flags, load the configuration, set up logging, run.

Errors print one line, ``ctemplate: error: ...``, and exit non-zero; tracebacks only with
``-log-level debug`` (or trace).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import time

from .errors import ConfigError, CtemplateError

__all__ = ["main"]

EXIT_FLAGS = 13  # consul-template's exit codes
EXIT_CONFIG = 15
EXIT_ERROR = 14

TRACE = 5
_LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "err": logging.ERROR,
}
_NAMES = {
    TRACE: "TRACE",
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERR",
    logging.CRITICAL: "ERR",
}


class _Formatter(logging.Formatter):
    """``2026-11-24T19:50:18.123Z [INFO] (runner) message``"""

    def __init__(self, tracebacks: bool) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        t = time.gmtime(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        level = _NAMES.get(record.levelno, record.levelname)
        line = f"{self.formatTime(record)} [{level}] {record.getMessage()}"
        if record.exc_info and self.tracebacks:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level_name: str) -> None:
    logging.addLevelName(TRACE, "TRACE")
    level = _LEVELS.get(level_name, logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(tracebacks=level <= logging.DEBUG))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _error(message: str) -> None:
    print(f"ctemplate: error: {message}", file=sys.stderr)


CONVERT_USAGE = "Usage: ctemplate convert FILE [-o OUT]   (Go template -> Jinja; stdout without -o)"


def convert_command(args: list[str]) -> int:
    """``ctemplate convert FILE [-o OUT]``: exit 0 converted, 1 converted with parts left as
    markers (listed on stderr), 13 bad usage, 14 unreadable or not a Go template."""
    from .errors import TemplateError
    from .language.convert import convert_text

    if args in (["-h"], ["-help"], ["--help"]):
        print(CONVERT_USAGE)
        return 0
    out: str | None = None
    if len(args) == 3 and args[1] in ("-o", "--o", "-out"):
        out = args[2]
    elif len(args) != 1 or args[0].startswith("-"):
        _error(f"convert: expected FILE [-o OUT]\n{CONVERT_USAGE}")
        return EXIT_FLAGS
    path = args[0]
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        result = convert_text(text, path)
    except (OSError, UnicodeDecodeError) as exc:
        _error(f"convert: cannot read {path}: {exc}")
        return EXIT_ERROR
    except TemplateError as exc:
        _error(f"convert: {exc}")
        return EXIT_ERROR
    if out is None:
        sys.stdout.write(result.text)
    else:
        tmp = f"{out}.ctemplate-convert.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(result.text)
            os.replace(tmp, out)
        except OSError as exc:
            _error(f"convert: cannot write {out}: {exc}")
            return EXIT_ERROR
    for problem in result.problems:
        print(f"{path}:{problem.line}: not converted: {problem.message}", file=sys.stderr)
    return 1 if result.problems else 0


def _raise_open_files_limit() -> None:
    """Raise the soft limit of open files to the hard one, as Go programs (consul-template)
    do at start: systemd's default soft limit (1024) is easily reached by a daemon holding
    connections to Consul, status clients and files being written."""
    import resource

    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "convert":
        return convert_command(args[1:])
    if args and args[0] in ("watch", "event"):  # consul watch / consul event
        from .modes import commands

        run_mode = commands.watch_main if args[0] == "watch" else commands.event_main
        return run_mode(args[1:], setup_logging)
    # Start-up allocates ~47,000 objects that live as long as the process (modules, classes,
    # functions): the cyclic collector would scan them again and again while they are being
    # imported (~15 ms of a -once). It pauses until the engine is imported; then they are
    # frozen (gc.freeze: never scanned again) and collection resumes.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _main(args, collecting)
    finally:
        if collecting:
            gc.enable()


def _main(args: list[str], collecting: bool) -> int:
    from . import __version__
    from .config.flags import parse_flags, usage

    try:
        flags = parse_flags(args)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_FLAGS
    if flags.help:
        print(usage())
        return 0
    if flags.version:
        print(f"ctemplate v{__version__}")
        return 0

    if os.getpid() == 1:  # a container's entry point: reap orphans (see modes/init.py)
        from .modes.init import become_init

        become_init()

    from .config import Config, load_config
    from .config.files import release_hcl_parser

    setup_logging(flags.log_level or "info")  # warnings while loading the configuration
    for line in flags.deprecations:
        logging.getLogger(__name__).warning("%s", line)
    try:
        config = load_config(flags, os.environ)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    setup_logging(config.log_level)

    import asyncio

    from .runner import run

    # A Consul answer can hold 100,000+ JSON containers (5,000 service instances); with the
    # default threshold (700) the collector runs a full pass over them for nearly every
    # answer. Collecting young objects every 50,000 allocations cut the CPU per change of the
    # 5,000-instance benchmark from ~190 to ~135 ms with no more memory (bench/scenarios.py).
    gc.set_threshold(50_000, 20, 20)
    if collecting:
        if not config.once and release_hcl_parser():
            gc.collect()  # the parser's objects, before what is left is frozen for good
        gc.freeze()
        gc.enable()
    _raise_open_files_limit()

    def reload() -> Config:
        reloaded = load_config(flags, os.environ)
        release_hcl_parser()
        return reloaded

    try:
        return asyncio.run(run(config, reload))
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    except CtemplateError as exc:
        _error(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # a bug: say so in one line; the traceback at debug level
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        _error(f"internal error: {type(exc).__name__}: {exc} (run with -log-level debug)")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
