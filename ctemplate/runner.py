"""The loop: execute templates, watch what they need, write complete output, run commands.

One pass: every template whose inputs changed is executed against the cache; queries it needs
and nobody watches yet get a watch; a template with nothing missing is written if its bytes
changed (after its quiescence period, if it has one); then the commands of changed files run,
each distinct command once. Signal handlers only set flags; this loop owns reload and shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .command import describe, run_command
from .config import Config, TemplateConfig, WaitConfig
from .consul import ConsulClient, base_url
from .errors import CommandError, ConfigError, ConsulError, CtemplateError, RenderError
from .render import render
from .template import CompiledTemplate, TemplateEngine
from .watch import Watcher, WatchSettings

__all__ = ["EXIT_ERROR", "EXIT_OK", "Runner", "run"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 14  # consul-template's exit code for runtime errors

_WAITING_FIRST = 10.0  # seconds before the first "still waiting for" warning
_WAITING_EVERY = 60.0  # then at most this often per template


@dataclass(eq=False)
class _Unit:
    config: TemplateConfig
    compiled: CompiledTemplate
    deps: set[str] = field(default_factory=set)
    dirty: bool = True
    rendered: bool = False  # complete output seen at least once
    due: bool = False  # quiescence period over
    timer: asyncio.TimerHandle | None = None
    deadline: float = 0.0
    last_error: str | None = None
    waiting_since: float | None = None
    warned_at: float = 0.0

    @property
    def name(self) -> str:
        return self.compiled.name


def _command_env(config: Config) -> dict[str, str]:
    env = dict(os.environ)
    env["CONSUL_HTTP_ADDR"] = base_url(config.consul)
    if config.consul.token:
        env["CONSUL_HTTP_TOKEN"] = config.consul.token
    env["CONSUL_HTTP_SSL"] = "true" if config.consul.ssl.enabled else "false"
    env["CONSUL_HTTP_SSL_VERIFY"] = "true" if config.consul.ssl.verify else "false"
    return env


def _watch_settings(config: Config) -> WatchSettings:
    retry = config.consul.retry
    attempts = retry.attempts
    if attempts is None:
        attempts = 12 if config.once else 0
    if not retry.enabled:
        attempts = 1 if config.once else 0
    return WatchSettings(
        wait=config.block_query_wait,
        max_stale=config.max_stale,
        retry_backoff=retry.backoff,
        retry_max_backoff=retry.max_backoff,
        retry_attempts=attempts,
        once=config.once,
    )


class Runner:
    def __init__(self, config: Config, reload: Callable[[], Config] | None = None) -> None:
        self.config = config
        self._reload_config = reload
        self._wake = asyncio.Event()
        self._changed: set[str] = set()
        self._stop = False
        self._reload = False
        self._fatal: CtemplateError | None = None
        self._source_changes: set[str] = set()
        self._units: list[_Unit] = []
        self._client: ConsulClient | None = None
        self._watcher: Watcher | None = None
        self._file_watch: asyncio.Task[None] | None = None
        self._file_watch_stop: asyncio.Event | None = None
        self._errors_this_pass = 0

    # --- set-up ---------------------------------------------------------------------------

    def _load_units(self, config: Config) -> list[_Unit]:
        engine = TemplateEngine(config)
        return [_Unit(tc, engine.load(tc)) for tc in config.templates]

    def _start_consul(self, config: Config) -> None:
        self._client = ConsulClient(config.consul)
        self._watcher = Watcher(
            self._client, _watch_settings(config), self._on_change, self._on_watch_error
        )

    async def _stop_consul(self) -> None:
        if self._watcher:
            await self._watcher.stop()
        if self._client:
            await self._client.aclose()
        self._watcher = None
        self._client = None

    def _on_change(self, key: str) -> None:
        self._changed.add(key)
        self._wake.set()

    def _on_watch_error(self, key: str, error: ConsulError) -> None:
        if self.config.once or not error.transient:
            log.error("(watch) %s: %s", key, error)
        if self.config.once or error.transient:
            # -once cannot finish without the data; a daemon gives up only when the user
            # configured a retry limit (consul.retry.attempts).
            self._fatal = error
            self._wake.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        stops = {"SIGINT", "SIGTERM"}
        if self.config.kill_signal:
            stops.add(self.config.kill_signal)
        for name in stops:
            loop.add_signal_handler(getattr(signal, name), self._request_stop, name)
        if self.config.reload_signal and not self.config.once:
            loop.add_signal_handler(
                getattr(signal, self.config.reload_signal), self._request_reload
            )

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        names = {"SIGINT", "SIGTERM", self.config.kill_signal, self.config.reload_signal}
        for name in names - {""}:
            loop.remove_signal_handler(getattr(signal, name))

    def _request_stop(self, name: str) -> None:
        log.info("(runner) received %s, stopping", name)
        self._stop = True
        self._wake.set()

    def _request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> int:
        config = self.config
        try:
            self._units = self._load_units(config)
        except CtemplateError as exc:
            log.error("%s", exc)
            return EXIT_ERROR
        self._install_signals()
        self._write_pid_file()
        self._start_consul(config)
        self._restart_file_watch()
        try:
            return await self._loop()
        finally:
            if self._file_watch_stop:
                self._file_watch_stop.set()
            if self._file_watch:
                self._file_watch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._file_watch
            for unit in self._units:
                if unit.timer:
                    unit.timer.cancel()
            await self._stop_consul()
            self._remove_signals()
            self._remove_pid_file()

    async def _loop(self) -> int:
        command_failed = False
        while True:
            if self._stop:
                return EXIT_OK
            if self._reload:
                self._reload = False
                await self._apply_reload()
            if self._source_changes:
                self._reload_sources()
            if self._fatal is not None:
                return EXIT_ERROR
            ok = await self._pass()
            command_failed = command_failed or not ok
            if self._fatal is not None:
                return EXIT_ERROR
            if self.config.once and all(u.rendered for u in self._units):
                if command_failed or self._errors_this_pass:
                    return EXIT_ERROR
                return EXIT_OK
            if self.config.once and self._errors_this_pass:
                return EXIT_ERROR
            timeout = self._warn_waiting()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    async def _pass(self) -> bool:
        """Execute affected templates, write what is complete, run commands. False if a
        command failed."""
        assert self._watcher is not None
        watcher = self._watcher
        changed, self._changed = self._changed, set()
        commands: list[tuple[str | tuple[str, ...], _Unit]] = []
        self._errors_this_pass = 0
        now = time.monotonic()
        for unit in self._units:
            if not (unit.dirty or unit.due or unit.deps & changed):
                continue
            unit.dirty = False
            execution = unit.compiled.execute(watcher.data)
            unit.deps = set(execution.used)
            for query in execution.missing.values():
                watcher.add(query)
            if execution.error is not None:
                self._template_failed(unit, execution.error)
                continue
            if not execution.complete:
                if unit.waiting_since is None:
                    unit.waiting_since = now
                continue
            unit.waiting_since = None
            if self._quiescent(unit):
                continue
            unit.due = False
            assert execution.text is not None
            try:
                result = await asyncio.to_thread(self._write, unit, execution.text)
            except CtemplateError as exc:
                self._template_failed(unit, exc)
                continue
            if unit.last_error:
                log.info("(runner) %s: rendered again after an error", unit.config.destination)
                unit.last_error = None
            unit.rendered = True
            if result and unit.config.command and not self.config.dry:
                commands.append((unit.config.command, unit))
        self._drop_unused_watches()
        return await self._run_commands(commands)

    def _quiescent(self, unit: _Unit) -> bool:
        """True if the write must wait for its quiet period (after the first render)."""
        wait: WaitConfig | None = unit.config.wait or self.config.wait
        if self.config.once or wait is None or not unit.rendered or unit.due:
            return False
        loop = asyncio.get_running_loop()
        now = loop.time()
        if unit.timer is None:
            unit.deadline = now + wait.max
        else:
            unit.timer.cancel()
        fire = min(now + wait.min, unit.deadline)
        unit.timer = loop.call_at(fire, self._quiet_over, unit)
        return True

    def _quiet_over(self, unit: _Unit) -> None:
        unit.timer = None
        unit.due = True
        self._wake.set()

    def _write(self, unit: _Unit, text: str) -> bool:
        tc = unit.config
        check = None
        if tc.check_command:
            check = self._make_check(tc)
        result = render(
            tc.destination,
            text,
            perms=tc.perms,
            backup=tc.backup,
            create_dest_dirs=tc.create_dest_dirs,
            dry=self.config.dry,
            check=check,
        )
        if result.written:
            log.info("(runner) %s: rendered", tc.destination)
        elif not result.changed:
            log.debug("(runner) %s: unchanged", tc.destination)
        return result.changed

    def _make_check(self, tc: TemplateConfig) -> Callable[[str], None]:
        command = tc.check_command
        assert command is not None

        def check(staged: str) -> None:
            env = _command_env(self.config)
            env["CTEMPLATE_STAGED"] = staged
            env["CTEMPLATE_DESTINATION"] = tc.destination
            # confd's placeholder for the staged file works too: check_command = "check {{.src}}"
            if isinstance(command, str):
                argv: Any = ["/bin/sh", "-c", command.replace("{{.src}}", shlex.quote(staged))]
            else:
                argv = [a.replace("{{.src}}", staged) for a in command]
            try:
                proc = subprocess.run(
                    argv,
                    env=env,
                    capture_output=True,
                    timeout=tc.command_timeout if tc.command_timeout > 0 else None,
                    start_new_session=True,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise RenderError(
                    f"{tc.destination}: check_command {describe(command)!r} timed out; "
                    "the old file stays"
                ) from None
            except OSError as exc:
                raise RenderError(
                    f"{tc.destination}: check_command {describe(command)!r} could not start: "
                    f"{exc.strerror}"
                ) from exc
            if proc.returncode != 0:
                out = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()[-2000:]
                raise RenderError(
                    f"{tc.destination}: check_command {describe(command)!r} failed with status "
                    f"{proc.returncode}; the old file stays: {out}"
                )

        return check

    def _template_failed(self, unit: _Unit, error: CtemplateError) -> None:
        self._errors_this_pass += 1
        message = str(error)
        if message != unit.last_error:
            log.error("%s; keeping the last good %s", message, unit.config.destination)
        unit.last_error = message
        log.debug("details", exc_info=error)

    def _drop_unused_watches(self) -> None:
        assert self._watcher is not None
        used: set[str] = set()
        for unit in self._units:
            used |= unit.deps
        unused = [k for k in self._watcher.watched() if k not in used]
        if unused:
            self._watcher.remove(unused)

    async def _run_commands(self, commands: list[tuple[str | tuple[str, ...], _Unit]]) -> bool:
        ok = True
        seen: set[str | tuple[str, ...]] = set()
        env = _command_env(self.config) if commands else {}
        for command, unit in commands:
            if command in seen:
                continue
            seen.add(command)
            try:
                result = await run_command(
                    command,
                    timeout=unit.config.command_timeout,
                    env=env,
                    what=f"{unit.config.destination}: command",
                )
            except CommandError as exc:
                log.error("%s", exc)
                ok = False
                continue
            log.info(
                "(runner) %s: command %r finished in %.2fs",
                unit.config.destination,
                describe(command),
                result.seconds,
            )
        return ok

    def _warn_waiting(self) -> float | None:
        """Warn about templates still waiting for data; return seconds until the next check."""
        if self._watcher is None:
            return None
        now = time.monotonic()
        next_check: float | None = None
        for unit in self._units:
            if unit.waiting_since is None:
                continue
            waited = now - unit.waiting_since
            due = max(unit.waiting_since + _WAITING_FIRST, unit.warned_at + _WAITING_EVERY)
            if now >= due:
                missing = sorted(k for k in unit.deps if k not in self._watcher.data)
                if missing:
                    log.warning(
                        "(runner) %s: still waiting after %.0fs for: %s",
                        unit.name,
                        waited,
                        ", ".join(missing),
                    )
                unit.warned_at = now
                due = now + _WAITING_EVERY
            left = due - now
            next_check = left if next_check is None else min(next_check, left)
        return next_check

    # --- reloads --------------------------------------------------------------------------

    async def _apply_reload(self) -> None:
        if self._reload_config is None:
            return
        log.info("(runner) reloading configuration")
        try:
            config = self._reload_config()
            config = _keep_modes(config, self.config)
            units = self._load_units(config)
        except CtemplateError as exc:
            log.error("%s; keeping the previous configuration", exc)
            return
        for unit in self._units:
            if unit.timer:
                unit.timer.cancel()
        old = self.config
        self.config = config
        if (config.consul, _watch_settings(config)) != (old.consul, _watch_settings(old)):
            await self._stop_consul()
            self._start_consul(config)
        self._units = units
        self._restart_file_watch()
        if config.pid_file != old.pid_file:
            self._remove_pid_file(old.pid_file)
            self._write_pid_file()

    def _reload_sources(self) -> None:
        paths, self._source_changes = self._source_changes, set()
        engine = TemplateEngine(self.config)
        for unit in self._units:
            src = unit.config.source
            if src is None or os.path.abspath(src) not in paths:
                continue
            try:
                unit.compiled = engine.load(unit.config)
            except CtemplateError as exc:
                log.error("%s; still using the previous version of %s", exc, src)
                continue
            log.info("(runner) %s: template changed, rendering again", src)
            unit.dirty = True

    def _restart_file_watch(self) -> None:
        if self._file_watch_stop:
            self._file_watch_stop.set()
        if self._file_watch:
            self._file_watch.cancel()
        self._file_watch = None
        if self.config.once:
            return
        sources = {os.path.abspath(u.config.source) for u in self._units if u.config.source}
        if not sources:
            return
        self._file_watch_stop = asyncio.Event()
        self._file_watch = asyncio.get_running_loop().create_task(
            self._watch_sources(sources, self._file_watch_stop), name="template-sources"
        )

    async def _watch_sources(self, sources: set[str], stop: asyncio.Event) -> None:
        from watchfiles import awatch  # only daemons watch files

        logging.getLogger("watchfiles").setLevel(logging.WARNING)

        dirs = sorted({os.path.dirname(s) for s in sources})
        try:
            async for changes in awatch(
                *dirs,
                stop_event=stop,
                watch_filter=lambda _change, path: path in sources,
                debounce=200,
                step=50,
                recursive=False,
            ):
                self._source_changes.update(path for _change, path in changes)
                self._wake.set()
        except Exception as exc:  # watching is a convenience; never take the daemon down
            log.warning("(runner) cannot watch template files for changes: %s", exc)

    # --- pid file -------------------------------------------------------------------------

    def _write_pid_file(self) -> None:
        path = self.config.pid_file
        if not path:
            return
        try:
            with open(path, "w") as f:
                f.write(str(os.getpid()))
        except OSError as exc:
            log.error("pid_file %s: cannot write: %s", path, exc.strerror)

    def _remove_pid_file(self, path: str | None = None) -> None:
        path = path or self.config.pid_file
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _keep_modes(config: Config, old: Config) -> Config:
    from dataclasses import replace

    return replace(config, once=old.once, dry=old.dry)


async def run(config: Config, reload: Callable[[], Config] | None = None) -> int:
    """Run until stopped (or, with ``config.once``, until every template was rendered once)."""
    if not config.templates:
        raise ConfigError("no templates: give -template src:dest or a config file with template {}")
    return await Runner(config, reload).run()
