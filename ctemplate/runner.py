"""The loop: execute templates, watch what they need, write complete output, run commands.

One pass: every template whose inputs changed is executed against a snapshot of the cache, in a
worker thread (one still running after a moment, say a slow ``plugin``, is taken by a later pass
and holds up nothing else); queries it needs and nobody watches yet get a watch; a template
with nothing missing is written if its bytes changed (after its quiescence period, if it has
one); then the commands of changed files run, each distinct command once. Signal handlers only
set flags; this loop owns reload and shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import queue
import shlex
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .config import Config, TemplateConfig, WaitConfig, parse_duration
from .consul.client import ConsulClient, base_url
from .consul.queries import Query
from .consul.retry import describe as describe_retries
from .consul.watch import RESERVED_CONNECTIONS, Watcher, WatchSettings
from .errors import (
    CommandError,
    ConfigError,
    ConsulError,
    CtemplateError,
    RenderError,
    TemplateError,
)
from .language import budget, local
from .language.execution import Execution
from .language.frontends import Compiled, TemplateEngines
from .modes.daemon import WatchSet
from .output.command import describe, run_command
from .output.write import render, write_small_file

if TYPE_CHECKING:  # imported where used: -once and most daemons need neither (start-up time)
    from . import status
    from .modes.dedup import Dedup
    from .modes.exec import Supervisor

__all__ = ["EXIT_ERROR", "EXIT_OK", "Runner", "run"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 14  # consul-template's exit code for runtime errors

_WAITING_FIRST = 10.0  # seconds before the first "still waiting for" warning
_WAITING_EVERY = 60.0  # then at most this often per template
# Tests shorten both delays: CTEMPLATE_WAITING_WARN="first[:every]", e.g. "1s:2s".
_WAITING_ENV = "CTEMPLATE_WAITING_WARN"
# Templates execute in worker threads. One still running after this long (a slow plugin) stops
# holding up the pass: the others are written, and its result is taken when it is ready.
_EXECUTION_BUDGET = 0.2  # seconds
# A write that failed (a directory in the way, a full disk, too many open files) is tried again
# after this long, doubling up to the cap, until it succeeds; no data change is needed.
_WRITE_RETRY_FIRST = 0.5  # seconds
_WRITE_RETRY_MAX = 30.0
# How often the daemon checks that the files it wrote are still there (deleted: written again).
_DESTINATION_CHECK = 2.0  # seconds
# How often the daemon looks whether a template source changed (then it is loaded again).
_SOURCE_CHECK = 1.0  # seconds
_ABSENT = object()


def _waiting_delays(environ: Mapping[str, str]) -> tuple[float, float]:
    text = environ.get(_WAITING_ENV, "").strip()
    if not text:
        return _WAITING_FIRST, _WAITING_EVERY
    first, _, every = text.partition(":")
    where = f"env {_WAITING_ENV}"
    first_s = parse_duration(first, where=where)
    every_s = parse_duration(every, where=where) if every else _WAITING_EVERY
    return first_s, max(every_s, 0.1)


def _engine(config: Config) -> TemplateEngines:
    """Both front ends; each template is loaded by the one of its syntax."""
    return TemplateEngines(config)


@dataclass(eq=False)
class _Unit:
    """One template of the configuration and its state in the runner."""

    config: TemplateConfig
    compiled: Compiled
    queries: dict[str, Query] = field(default_factory=dict)  # used in the last execution
    dirty: bool = True
    rendered: bool = False  # complete output seen at least once
    due: bool = False  # quiescence period over
    timer: asyncio.TimerHandle | None = None
    deadline: float = 0.0
    last_error: str | None = None
    waiting_since: float | None = None
    warned_at: float = 0.0
    running: asyncio.Future[_Outcome] | None = None  # an execution not yet taken
    running_on: Mapping[str, Any] = field(default_factory=dict)  # the data it runs against
    # The watcher's (changes, len(data)) when that data was taken: equal after the execution,
    # nothing arrived meanwhile (no need to compare every key the template used).
    running_gen: tuple[int, int] = (-1, -1)
    discard: bool = False  # the running execution is of a template replaced since
    synced: asyncio.Future[None] | None = None  # the last write's directory fsync
    write_failures: int = 0  # writes that failed in a row
    write_retry: asyncio.TimerHandle | None = None  # the next attempt after a failed write
    dedup_id: str | None = None  # de-duplication: the template's identity (modes.dedup)
    # For /health and /metrics (status_address).
    last_rendered: float | None = None  # Unix time of the last complete render
    renders: int = 0
    errors: int = 0
    command_runs: int = 0
    command_failures: int = 0
    command_seconds: float = 0.0
    # The last command run for this file failed (its message, Unix time): /health says the
    # template is degraded until a command of it succeeds.
    command_error: str | None = None
    command_failed_at: float | None = None

    @property
    def name(self) -> str:
        return self.compiled.name


def _dedup_id(compiled: Compiled, tc: TemplateConfig, config: Config) -> str | None:
    """The de-duplication identity of a template: its text, syntax and delimiters."""
    if not config.dedup.enabled or config.once:
        return None
    from .modes.dedup import template_id

    return template_id(
        compiled.text,
        syntax=compiled.syntax,
        left=tc.left_delimiter or config.default_left_delimiter or "",
        right=tc.right_delimiter or config.default_right_delimiter or "",
    )


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
    return WatchSettings(
        wait=config.block_query_wait,
        max_stale=config.max_stale,
        retry_backoff=retry.backoff,
        retry_max_backoff=retry.max_backoff,
        retry_attempts=attempts,
        retry_enabled=retry.enabled,
        max_unavailable=config.max_unavailable,
        once=config.once,
        max_connections=config.consul.max_connections,
    )


_WORKER_IDLE = 60.0  # seconds an idle worker thread waits for the next job before it ends


class _Workers:
    """The threads templates execute (and are written) in: an idle one is reused (no thread is
    started per change), otherwise a new one starts, so an execution stuck in a slow plugin
    holds up no other. Idle threads end after ``_WORKER_IDLE`` seconds. Daemon threads: a stop
    never waits for one (an interrupted execution ends at once, but the interpreter joins no
    thread at exit). File writes of the quiescence path and ``file()`` polls use the loop's
    default executor, not these."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a job, minus jobs queued for them
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
                self._jobs.put(job)
                return
        threading.Thread(
            target=self._serve, args=(job,), name="ctemplate-execute", daemon=True
        ).start()

    def _serve(self, job: Callable[[], None]) -> None:
        while True:
            job()
            del job
            with self._lock:
                self._idle += 1
            while True:
                try:
                    job = self._jobs.get(timeout=_WORKER_IDLE)
                    break
                except queue.Empty:
                    with self._lock:
                        if self._idle > 0:  # more threads wait than jobs are queued: leave
                            self._idle -= 1
                            return
                    # A job was queued for this thread just as it timed out: take it.


_workers = _Workers()
_WRITE_DRAIN = 30.0  # seconds a stop waits for writes under way in workers


class _Writes:
    """Writes under way in worker threads (a context manager per write); :meth:`close` stops new
    ones and waits for those under way."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0
        self.closed = False

    def __enter__(self) -> None:
        with self._cond:
            self._count += 1

    def __exit__(self, *_exc: object) -> None:
        with self._cond:
            self._count -= 1
            self._cond.notify_all()

    def close(self, timeout: float) -> None:
        with self._cond:
            self.closed = True
            self._cond.wait_for(lambda: self._count == 0, timeout)


@dataclass(slots=True)
class _Outcome:
    """What a worker did for one unit: the execution, and the write if it made it."""

    execution: Execution
    written: bool = False  # the worker wrote the output (``changed`` and ``error`` are its)
    changed: bool = False  # the destination has new bytes (or would, in -dry)
    error: BaseException | None = None  # the write failed
    synced: asyncio.Future[None] | None = None  # the directory's fsync after the rename


def _start_execution(
    unit: _Unit,
    data: Mapping[str, Any],
    write: Callable[[str, Callable[[], None]], bool | None] | None = None,
    settled: Callable[[], None] | None = None,
) -> asyncio.Future[_Outcome]:
    """Execute ``unit``'s template against ``data`` in a worker thread, under its budgets;
    with ``write``, also write a complete output in that same thread (one hand-off per change,
    not two).

    ``write(text, visible)`` returns whether the file changed (None: not written, ctemplate is
    stopping) and calls ``visible()`` once the new file is in place: the future is settled
    then. When the template has a command, the directory's fsync that follows settles
    ``_Outcome.synced``, which the command waits for (output/write.py); without one nothing
    waits for it, and the worker posts nothing more to the loop. ``settled()`` is called on the
    loop right after the future is settled, in the same turn (a done callback would run a turn
    later). The write is skipped if the unit's result is to be discarded by then (a reload or an
    edit of the template while it ran).

    The budget's watchdog is not woken for each execution: a timer on the loop wakes it only
    for one still running after the watchdog's polling period (most end within a
    millisecond, and a wake-up of that thread per change costs more than the execution)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_Outcome] = loop.create_future()
    compiled, tc, context = unit.compiled, unit.config, contextvars.copy_context()
    synced: asyncio.Future[None] | None = (
        loop.create_future() if write is not None and tc.command else None
    )
    shown = False  # visible() was called: the file is in place

    def settle(result: _Outcome | None, error: BaseException | None) -> None:
        watch.cancel()
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]
        if settled is not None:
            settled()

    def post(fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(fn, *args)

    def work() -> None:
        nonlocal shown
        try:
            execution = context.run(
                budget.run,
                compiled.execute,
                data,
                name=compiled.name,
                timeout=tc.execution_timeout,
                max_size=tc.execution_max_size,
                wake=False,
            )
        except BaseException as exc:  # a bug: the pass reports it as the template's failure
            post(settle, None, exc)
            return
        outcome = _Outcome(execution)
        if write is None or not execution.complete or unit.discard:
            post(settle, outcome, None)
            return
        assert execution.text is not None

        def visible() -> None:
            nonlocal shown
            shown = True
            outcome.written = outcome.changed = True
            outcome.synced = synced
            post(settle, outcome, None)

        changed: bool | None
        try:
            changed = context.run(write, execution.text, visible)
        except BaseException as exc:  # reported by the pass as the write's failure
            changed = False
            if not shown:  # (after visible(): the file is in place)
                outcome.written, outcome.error = True, exc
        if shown:
            if synced is not None:
                post(_set_result, synced)
            return
        if changed is None:  # ctemplate is stopping: nothing was written
            post(settle, outcome, None)
            return
        outcome.written, outcome.changed = True, changed
        post(settle, outcome, None)

    watch = loop.call_later(budget.POLL, budget.wake)
    _workers.submit(work)
    return future


def _set_result(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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
        self._dedup: Dedup | None = None
        self._watches = WatchSet(self._on_watch_error)  # the config's watch blocks
        self._file_watch: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()  # set by a stop signal: interrupts running commands
        self._status: status.StatusServer | None = None
        self._command_backlog: list[list[tuple[str | tuple[str, ...], _Unit]]] = []
        self._command_task: asyncio.Task[None] | None = None
        self._waiting_first, self._waiting_every = _waiting_delays(os.environ)
        self._exec: Supervisor | None = None  # exec mode: the supervised children
        self._writes = _Writes()  # writes under way in worker threads

    # --- set-up ---------------------------------------------------------------------------

    def _load_units(self, config: Config) -> list[_Unit]:
        engine = _engine(config)
        units = [_Unit(tc, engine.load(tc)) for tc in config.templates]
        for unit in units:
            unit.dedup_id = _dedup_id(unit.compiled, unit.config, config)
        return units

    def _start_consul(self, config: Config) -> None:
        settings = _watch_settings(config)
        self._client = ConsulClient(config.consul, max_connections=settings.max_connections)
        self._client.outage_note = describe_retries(settings) + (
            "; nothing is written (-dry)" if config.dry else "; keeping the last good files"
        )
        self._client.retry_limit = settings.retry_attempts if settings.retry_enabled else 0
        # Each retry gets a warning when the retries are bounded (-once gives up after 12).
        self._client.retry_warn = settings.retry_enabled and (
            settings.retry_attempts > 0 or settings.max_unavailable > 0
        )
        # Each watch block holds one long poll: the templates plan within what is left.
        watches = () if config.once else config.watches
        if config.once and config.watches:
            log.info("(watch) watch blocks do not run with -once")
        # De-duplication holds two long polls per template (its lock and its shared data).
        dedup_polls = 0
        if config.dedup.enabled and not config.once:
            dedup_polls = 2 * len({u.dedup_id for u in self._units if u.dedup_id})
        taken = len(watches) + dedup_polls
        budget = replace(settings, max_connections=max(1, settings.max_connections - taken))
        self._watcher = Watcher(self._client, budget, self._on_change, self._on_watch_error)
        if watches and budget.max_connections - RESERVED_CONNECTIONS < 1:
            log.warning(
                "(watch) %d watch blocks leave no long poll for templates within "
                "consul.max_connections = %d; raise it",
                len(watches),
                settings.max_connections,
            )
        self._watches.start(watches, self._client, settings)
        if config.dedup.enabled and not config.once:
            from .modes.dedup import Dedup

            self._dedup = Dedup(
                self._client, config.dedup, on_data=self._on_dedup, on_role=self._on_dedup
            )
            self._sync_dedup()

    def _sync_dedup(self) -> None:
        if self._dedup is not None:
            self._dedup.sync(
                {
                    u.dedup_id: f"{u.name} (dedup {u.dedup_id[:12]})"
                    for u in self._units
                    if u.dedup_id
                }
            )

    def _on_dedup(self, tid: str) -> None:
        """Shared data arrived for a template, or its de-duplication role changed."""
        for unit in self._units:
            if unit.dedup_id == tid:
                unit.dirty = True
        self._wake.set()

    def _unit_data(self, unit: _Unit, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """What a template executes against: for a de-duplication follower, the data its
        leader published over the local cache (host-local queries stay local)."""
        if unit.dedup_id is None or self._dedup is None:
            return data
        published = self._dedup.values(unit.dedup_id)
        if not published:
            return data
        return {**data, **published}

    def _leads_or_alone(self, unit: _Unit) -> bool:
        return (
            unit.dedup_id is None
            or self._dedup is None
            or self._dedup.role(unit.dedup_id) == "leader"
        )

    async def _stop_consul(self) -> None:
        await self._watches.stop()
        if self._dedup:
            await self._dedup.stop()
            self._dedup = None
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
        if self.config.once or error.transient:
            # -once cannot finish without the data; a daemon gives up only when the user
            # configured a limit (consul.retry.attempts, max_unavailable). run() raises it and
            # the CLI prints it as its one error line.
            if self._fatal is None:
                self._fatal = error
            self._wake.set()
        else:  # 403, 400, an unreadable answer: reported once, retried slowly
            keeping = (
                "nothing is written (-dry)" if self.config.dry else "keeping the last good files"
            )
            log.error("(watch) %s: %s; %s", key, error, keeping)

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

    def _own_signals(self) -> set[str]:
        """The signals ctemplate acts on itself; exec mode forwards the others."""
        own = {"SIGINT", "SIGTERM", self.config.kill_signal}
        if not self.config.once:
            own.add(self.config.reload_signal)
        return own - {""}

    def _start_exec(self) -> None:
        config = self.config
        if not config.execs:
            return
        if config.dry:
            log.warning("(exec) -dry writes no files: the exec children are not started")
            return
        from .modes.exec import Supervisor

        self._exec = Supervisor(config.execs, _command_env(config), self._child_ended)
        self._exec.install_signals(self._own_signals())

    def _child_ended(self, status: int) -> None:
        """A child ended and is not restarted: ctemplate stops and exits with its status."""
        self._stop = True
        self._stopping.set()
        self._wake.set()

    async def _finish(self) -> int:
        """The exit status of a stop: the children's (stopped gracefully), else 0."""
        if self._exec is None:
            return EXIT_OK
        return await self._exec.stop()

    def _request_stop(self, name: str) -> None:
        log.info("(runner) received %s, stopping", name)
        self._stop = True
        self._stopping.set()
        self._wake.set()

    def _request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped; raise :class:`CtemplateError` for a fatal error (a template that
        cannot be loaded at start, Consul unreachable past a configured limit, a command
        failing under ``on_command_failure = "exit"``, ``-once-timeout``)."""
        config = self.config
        self._event_loop = asyncio.get_running_loop()
        self._units = self._load_units(config)
        local.allow_plugins()
        await self._start_status(config)
        self._install_signals()
        self._start_exec()
        self._write_pid_file()
        self._start_consul(config)
        self._restart_file_watch()
        destinations = None
        if not (config.once or config.dry):
            destinations = asyncio.get_running_loop().create_task(
                self._watch_destinations(), name="destinations"
            )
        try:
            return await self._loop()
        finally:
            if self._exec:  # also on a fatal error: no child outlives ctemplate
                await self._exec.stop()
                self._exec.remove_signals()
            if destinations is not None:
                destinations.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await destinations
            if self._status:
                await self._status.stop()
            if self._file_watch:
                self._file_watch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._file_watch
            for unit in self._units:
                if unit.timer:
                    unit.timer.cancel()
                if unit.write_retry:
                    unit.write_retry.cancel()
            local.stop_plugins()  # executions still running finish at once
            budget.interrupt_all()  # even those in a loop that never ends
            # A write under way in a worker ends (no temporary file left behind, the
            # directory fsynced), as one made by the pass would have; none starts after this.
            await asyncio.to_thread(self._writes.close, _WRITE_DRAIN)
            self._stopping.set()  # commands still running are killed with their groups
            if self._command_task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._command_task
            await self._stop_consul()
            self._remove_signals()
            self._remove_pid_file()

    async def _loop(self) -> int:
        command_failed = False
        deadline: float | None = None
        if self.config.once and self.config.once_timeout > 0:
            deadline = time.monotonic() + self.config.once_timeout
        while True:
            if self._stop:
                return await self._finish()
            if self._reload:
                self._reload = False
                await self._apply_reload()
            if self._source_changes:
                self._reload_sources()
            if self._fatal is not None:
                raise self._fatal
            ok = await self._pass()
            command_failed = command_failed or not ok
            if self._fatal is not None:
                raise self._fatal
            # -once: done when every template was written or failed (a failed one does not
            # keep the others from being written); any failure makes the status 14.
            if self.config.once and all(u.rendered or u.last_error for u in self._units):
                if command_failed or any(u.last_error for u in self._units):
                    return EXIT_ERROR
                if self._exec is not None:  # -once -exec: until the child ends
                    while not self._stop:
                        await self._wake.wait()
                        self._wake.clear()
                return await self._finish()
            timeout = self._warn_waiting()
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._once_timed_out()
                timeout = left if timeout is None else min(timeout, left)
            # asyncio.timeout, not wait_for (a task of its own per wait on Python 3.11).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()

    async def _pass(self) -> bool:
        """Execute affected templates, write what is complete, run commands. False if a
        command failed."""
        assert self._watcher is not None
        watcher = self._watcher
        changed, self._changed = self._changed, set()
        snapshot: dict[str, Any] | None = None  # the data as this pass found it
        generation = (-1, -1)
        started: list[asyncio.Future[_Outcome]] = []
        # Resolved by the last execution of this pass to end (not asyncio.wait(): its done
        # callbacks cost one more turn of the loop per change). Executions end in callbacks
        # posted by their workers, so none ends before this pass waits.
        all_ended = asyncio.get_running_loop().create_future()
        running = 0

        def ended() -> None:
            nonlocal running
            running -= 1
            if running == 0 and not all_ended.done():
                all_ended.set_result(None)

        for unit in self._units:
            if not (unit.dirty or unit.due or not changed.isdisjoint(unit.queries)):
                continue
            if unit.running is not None:  # still executing: checked when it is taken
                continue
            unit.dirty = False
            if snapshot is None:
                snapshot = dict(watcher.data)
                generation = (watcher.changes, len(watcher.data))
            data = self._unit_data(unit, snapshot)
            unit.running_on = data
            unit.running_gen = generation
            # Written in the worker too when no quiescence period can hold the write back.
            write = self._write_in_worker(unit) if self._writes_at_once(unit) else None
            unit.running = _start_execution(unit, data, write, ended)
            started.append(unit.running)
        if started:
            running = len(started)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_EXECUTION_BUDGET):
                    await all_ended
            for task in started:
                if not task.done():  # the next pass takes it
                    task.add_done_callback(lambda _task: self._wake.set())
        commands: list[tuple[str | tuple[str, ...], _Unit]] = []
        written: list[str] = []  # destinations whose file changed in this pass
        now = time.monotonic()
        for unit in self._units:
            if unit.running is None or not unit.running.done():
                continue
            try:
                outcome = unit.running.result()
            except Exception as exc:  # a bug in a front end: this template's failure only
                failure = TemplateError(f"{unit.name}: internal error: {exc}")
                outcome = _Outcome(Execution(error=failure))
            execution = outcome.execution
            unit.running = None
            seen, unit.running_on = unit.running_on, {}
            if unit.discard:  # of the template before a reload or an edit: run the new one
                unit.discard = False
                unit.dirty = True
                self._wake.set()
                continue
            # Data that arrived while it ran (values are replaced, never changed in place).
            # Deliveries count in watcher.changes, removals shrink the cache: neither moved,
            # nothing arrived (1,000 keys used: no 1,000 comparisons per change). A follower's
            # shared data arriving meanwhile has made it dirty already (_on_dedup).
            if unit.running_gen != (watcher.changes, len(watcher.data)):
                current = self._unit_data(unit, watcher.data)
                if any(current.get(k, _ABSENT) is not seen.get(k, _ABSENT) for k in execution.used):
                    unit.dirty = True
            if unit.dirty:
                self._wake.set()
            if execution.used or execution.error is None:  # (interrupted late: keep them)
                unit.queries = execution.used
            if execution.missing:
                self._sync_watches()  # start watching what is missing before writing others
            if execution.error is not None:
                self._template_failed(unit, execution.error)
                continue
            if not execution.complete:
                if unit.waiting_since is None:
                    unit.waiting_since = now
                continue
            unit.waiting_since = None
            if unit.dedup_id and self._dedup and self._leads_or_alone(unit):
                from .modes.dedup import shareable

                # The leader shares what it rendered from (not host-local answers).
                self._dedup.publish(
                    unit.dedup_id,
                    {k: seen[k] for k, q in execution.used.items() if shareable(q) and k in seen},
                )
            if not outcome.written and self._quiescent(unit):
                continue
            unit.due = False
            assert execution.text is not None
            try:
                if outcome.written:
                    unit.synced = outcome.synced
                    if outcome.error is not None:
                        raise outcome.error
                    result = outcome.changed
                else:
                    result = await asyncio.to_thread(self._write, unit, execution.text)
            except CtemplateError as exc:
                self._write_failed(unit, exc)
                continue
            except Exception as exc:  # never let one file take the others down
                error = RenderError(
                    f"{unit.config.destination}: cannot write: {type(exc).__name__}: {exc}"
                )
                error.__cause__ = exc
                self._write_failed(unit, error)
                continue
            unit.write_failures = 0
            if unit.write_retry is not None:
                unit.write_retry.cancel()
                unit.write_retry = None
            if unit.last_error:
                log.info("(runner) %s: rendered again after an error", unit.config.destination)
                unit.last_error = None
            unit.rendered = True
            unit.last_rendered = time.time()
            if result and not self.config.dry:
                written.append(unit.config.destination)
                unit.renders += 1
                if unit.config.command:
                    commands.append((unit.config.command, unit))
        self._sync_watches()
        watcher.settle()
        if self.config.once:  # -once ends when its commands did
            ok = await self._run_commands(commands)
        else:
            if commands:
                self._queue_commands(commands)
            ok = True
        if self._exec is not None:  # start children whose files are ready, reload on changes
            every = [u.config.destination for u in self._units]
            done = [u.config.destination for u in self._units if u.rendered]
            self._exec.rendered(every, done, written)
        return ok

    def _queue_commands(self, commands: list[tuple[str | tuple[str, ...], _Unit]]) -> None:
        """Run a pass' commands in the background, after those of earlier passes: a slow command
        (or one whose child keeps running) holds up no other template's file."""
        self._command_backlog.append(commands)
        if self._command_task is None or self._command_task.done():
            self._command_task = asyncio.get_running_loop().create_task(
                self._drain_commands(), name="commands"
            )

    async def _drain_commands(self) -> None:
        while self._command_backlog:
            # Passes queued while a command ran are merged: each distinct command runs once,
            # after every write that asked for it.
            batch = [c for pass_ in self._command_backlog for c in pass_]
            self._command_backlog.clear()
            await self._run_commands(batch)
            if self._fatal is not None:  # on_command_failure = "exit"
                self._wake.set()
                return

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

    def _writes_at_once(self, unit: _Unit) -> bool:
        """True if a complete output of ``unit`` is written as soon as it is made (no
        quiescence period can hold it back: see :meth:`_quiescent`). Exec mode writes in the
        pass, so that children start or reload only after the directory's fsync."""
        wait: WaitConfig | None = unit.config.wait or self.config.wait
        if self._exec is not None:
            return False
        return self.config.once or wait is None or not unit.rendered or unit.due

    def _write_in_worker(self, unit: _Unit) -> Callable[[str, Callable[[], None]], bool | None]:
        def write(text: str, visible: Callable[[], None]) -> bool | None:
            with self._writes:
                if self._writes.closed:  # stopping: no new write (as when the pass wrote)
                    return None
                return self._write(unit, text, visible)

        return write

    def _write(self, unit: _Unit, text: str, visible: Callable[[], None] | None = None) -> bool:
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
            visible=visible,
        )
        if result.written:
            log.info("(runner) %s: rendered", tc.destination)
        elif not result.changed:
            log.debug("(runner) %s: unchanged", tc.destination)
        return result.changed

    def _make_check(self, tc: TemplateConfig) -> Callable[[str], None]:
        """The check run on the staged file (in the render thread) before it is installed."""
        command = tc.check_command
        assert command is not None
        loop = self._event_loop

        def check(staged: str) -> None:
            env = _command_env(self.config)
            env["CTEMPLATE_STAGED"] = staged
            env["CTEMPLATE_DESTINATION"] = tc.destination
            # confd's placeholder for the staged file works too: check_command = "check {{.src}}"
            if isinstance(command, str):
                argv: str | tuple[str, ...] = command.replace("{{.src}}", shlex.quote(staged))
            else:
                argv = tuple(a.replace("{{.src}}", staged) for a in command)
            run = run_command(
                argv,
                timeout=tc.command_timeout,
                env=env,
                what=f"{tc.destination}: check_command",
            )
            try:
                asyncio.run_coroutine_threadsafe(run, loop).result()
            except CommandError as exc:
                raise RenderError(f"{exc}; the old file stays") from exc

        return check

    def _write_failed(self, unit: _Unit, error: CtemplateError) -> None:
        """A write failed: report it, and try again on a capped exponential backoff, so the
        file follows the data once the cause is gone (not only at the next change). A
        ``check_command`` that refused the file is not retried: it is asked again at the next
        change."""
        self._template_failed(unit, error)
        if isinstance(error.__cause__, CommandError) or self.config.once:
            return
        delay = min(_WRITE_RETRY_FIRST * 2**unit.write_failures, _WRITE_RETRY_MAX)
        unit.write_failures += 1
        if unit.write_retry is not None:
            unit.write_retry.cancel()
        unit.write_retry = asyncio.get_running_loop().call_later(delay, self._retry_write, unit)
        log.debug("(runner) %s: writing again in %.1fs", unit.config.destination, delay)

    def _retry_write(self, unit: _Unit) -> None:
        unit.write_retry = None
        unit.dirty = True
        self._wake.set()

    async def _watch_destinations(self) -> None:
        """Every ``_DESTINATION_CHECK`` seconds, write again the files deleted since they were
        written (one ``lstat`` per file; watching directories would miss a destination whose
        directory is removed and created again)."""
        while True:
            await asyncio.sleep(_DESTINATION_CHECK)
            units = [
                u
                for u in self._units
                if u.rendered and u.last_error is None and not u.dirty and u.running is None
            ]
            if not units:
                continue
            paths = [u.config.destination for u in units]
            present = await asyncio.to_thread(_present, paths)
            for unit, there in zip(units, present, strict=True):
                if not there and unit in self._units:
                    log.warning(
                        "(runner) %s: deleted since it was written; writing it again",
                        unit.config.destination,
                    )
                    unit.dirty = True
                    self._wake.set()

    def _template_failed(self, unit: _Unit, error: CtemplateError) -> None:
        unit.errors += 1
        message = str(error)
        if message != unit.last_error:
            if self.config.dry:  # nothing is written with -dry: there is no file to keep
                log.error("%s; %s is not printed (-dry)", message, unit.config.destination)
            else:
                log.error("%s; keeping the last good %s", message, unit.config.destination)
        unit.last_error = message
        log.debug("details", exc_info=error)

    def _sync_watches(self) -> None:
        """Watch what the templates use now, and nothing else."""
        assert self._watcher is not None
        queries: dict[str, Query] = {}
        for unit in self._units:
            if self._leads_or_alone(unit):
                queries.update(unit.queries)
                continue
            # A de-duplication follower reads Consul only for what its leader does not share:
            # host-local queries, and any its own execution used that the leader's did not.
            assert self._dedup is not None and unit.dedup_id is not None
            published = self._dedup.values(unit.dedup_id)
            from .modes.dedup import shareable

            for key, query in unit.queries.items():
                if not shareable(query) or (published is not None and key not in published):
                    queries[key] = query
        self._watcher.sync(queries)

    async def _run_commands(self, commands: list[tuple[str | tuple[str, ...], _Unit]]) -> bool:
        # A command follows its file onto the disk: the directory's fsync after the rename
        # (made in the worker once the file was visible) must be done.
        syncing = {u.synced for _c, u in commands if u.synced is not None and not u.synced.done()}
        if syncing:
            await asyncio.wait(syncing)
        ok = True
        seen: set[str | tuple[str, ...]] = set()
        env = _command_env(self.config) if commands else {}
        fatal = {c for c, u in commands if u.config.on_command_failure == "exit"}
        for command, unit in commands:
            if command in seen:
                continue
            seen.add(command)
            if self._stopping.is_set():
                break
            task = asyncio.ensure_future(
                run_command(
                    command,
                    timeout=unit.config.command_timeout,
                    env=env,
                    what=f"{unit.config.destination}: command",
                )
            )
            stopping = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not task.done():  # stopping: kill the command and its process group
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, CtemplateError):
                    await task
                log.warning(
                    "(runner) %s: stopping; killed command %r with its process group",
                    unit.config.destination,
                    describe(command),
                )
                break
            unit.command_runs += 1
            sharing = [u for c, u in commands if c == command]  # a command runs once for all
            try:
                result = task.result()
            except CommandError as exc:
                unit.command_failures += 1
                ok = False
                for u in sharing:
                    u.command_error, u.command_failed_at = str(exc), time.time()
                if command in fatal:
                    self._fatal = CommandError(f'{exc} (on_command_failure = "exit")')
                    break
                log.error("%s", exc)
                continue
            unit.command_seconds += result.seconds
            for u in sharing:
                if u.command_error is not None:
                    log.info("(runner) %s: command succeeded again", u.config.destination)
                u.command_error = u.command_failed_at = None
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
            due = max(
                unit.waiting_since + self._waiting_first, unit.warned_at + self._waiting_every
            )
            if now >= due:
                missing = self._missing(unit)
                if missing:
                    log.warning(
                        "(runner) %s: still waiting after %.0fs for: %s (not written until "
                        "they have data)%s",
                        unit.config.destination,
                        waited,
                        ", ".join(missing),
                        self._waiting_hint(missing),
                    )
                unit.warned_at = now
                due = now + self._waiting_every
            left = due - now
            next_check = left if next_check is None else min(next_check, left)
        return next_check

    def _waiting_hint(self, missing: list[str]) -> str:
        """With -once and no -once-timeout the wait has no end: say how to end it."""
        if not self.config.once or self.config.once_timeout > 0:
            return ""
        if any(k.startswith("kv.block(") for k in missing):
            return (
                "; -once waits until they exist: use keyOrDefault or keyExists for a key that "
                "may be absent, or bound the wait with -once-timeout"
            )
        return "; -once waits until they have data: bound the wait with -once-timeout"

    def _missing(self, unit: _Unit) -> list[str]:
        data = self._watcher.data if self._watcher is not None else {}
        return sorted(k for k in unit.queries if k not in data)

    def _once_timed_out(self) -> CtemplateError:
        waiting = [
            f"{u.config.destination} ({', '.join(self._missing(u)) or 'nothing rendered yet'})"
            for u in self._units
            if not (u.rendered or u.last_error)
        ]
        message = (
            f"-once-timeout: gave up after {self.config.once_timeout:g}s; still waiting for "
            + "; ".join(waiting)
        )
        client = self._client
        if client is not None and not client.available and client.last_error:
            message += f"; Consul is unreachable: {client.last_error}"
        elif self._watcher is not None and self._watcher.failing:
            # The agent answers, but not these queries (a datacenter that is gone, a 403...).
            message += "; failing: " + "; ".join(
                f"{key}: {f.error}" for key, f in sorted(self._watcher.failing.items())
            )
        return CtemplateError(message)

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
            if unit.write_retry:
                unit.write_retry.cancel()
        old = self.config
        self.config = config
        settings = _watch_settings(config)
        if (config.consul, settings) != (old.consul, _watch_settings(old)):
            await self._stop_consul()
            self._start_consul(config)
        elif len(config.watches) != len(old.watches):
            await self._stop_consul()  # the templates' share of the budget changes
            self._start_consul(config)
        elif config.watches != old.watches and self._client is not None:
            await self._watches.stop()
            self._watches.start(() if config.once else config.watches, self._client, settings)
        # Executions still running keep their unit's place (one at a time per destination) and
        # its queries stay watched until the new template runs.
        running = {u.config.destination: u for u in self._units if u.running is not None}
        for unit in units:
            prev = running.get(unit.config.destination)
            if prev is not None:
                unit.running, unit.running_on, unit.discard = prev.running, prev.running_on, True
                unit.queries = prev.queries
        self._units = units
        self._sync_dedup()
        self._restart_file_watch()
        if config.pid_file != old.pid_file:
            self._remove_pid_file(old.pid_file)
            self._write_pid_file()
        if config.status_address != old.status_address or (
            config.status_address and self._status is None
        ):
            if self._status:
                await self._status.stop()
            try:
                await self._start_status(config)
            except CtemplateError as exc:
                log.error("%s; /health and /metrics are off until the next reload", exc)

    def _reload_sources(self) -> None:
        paths, self._source_changes = self._source_changes, set()
        engine = _engine(self.config)
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
            unit.dedup_id = _dedup_id(unit.compiled, unit.config, self.config)
            unit.dirty = True
            unit.discard = unit.running is not None  # the old template's result is not written
        self._sync_dedup()

    def _restart_file_watch(self) -> None:
        if self._file_watch:
            self._file_watch.cancel()
        self._file_watch = None
        if self.config.once:
            return
        sources = {os.path.abspath(u.config.source) for u in self._units if u.config.source}
        if not sources:
            return
        paths = sorted(sources)
        # Taken now, on the loop as the templates were just read: an edit from here on is seen.
        loaded = _identities(paths)
        self._file_watch = asyncio.get_running_loop().create_task(
            self._watch_sources(paths, loaded), name="template-sources"
        )

    async def _watch_sources(
        self, paths: list[str], loaded: list[tuple[int, int, int, int] | None]
    ) -> None:
        """Reload templates whose source changed: edited in place, replaced, or resolving to
        another file through a symlink (a Kubernetes ConfigMap swaps its ``..data`` link to a
        new directory; the source ``dir/t.tmpl -> ..data/t.tmpl`` itself never changes).

        Every ``_SOURCE_CHECK`` seconds, what each source leads to (the device, inode, size and
        modification time of the file at the end of its links) is compared with ``loaded``,
        taken when the templates were read: one ``stat`` per source, in a worker thread (a hung
        network mount must not stop the loop). A file watcher (inotify) would see an edit
        sooner, but it took 3.2 MiB of an idle daemon's 32 and two threads, woke for every file
        written or read in a watched directory (an output next to its template: ~0.4 ms of CPU
        per change) and does not work on network filesystems (docs/performance.md).
        """
        try:
            while True:  # until cancelled (a reload or a stop)
                await asyncio.sleep(_SOURCE_CHECK)
                now = await asyncio.to_thread(_identities, paths)
                changed = {p for p, old, new in zip(paths, loaded, now, strict=True) if old != new}
                loaded = now
                if changed:
                    self._source_changes.update(changed)
                    self._wake.set()
        except Exception as exc:  # watching is a convenience; never take the daemon down
            log.warning("(runner) cannot watch template files for changes: %s", exc)

    # --- status endpoint (status_address) --------------------------------------------------

    async def _start_status(self, config: Config) -> None:
        self._status = None
        if config.status_address:
            from . import status

            server = status.StatusServer(config.status_address, self._snapshot)
            await server.start()
            self._status = server

    def _dedup_state(self, unit: _Unit) -> dict[str, Any]:
        if unit.dedup_id is None or self._dedup is None:
            return {}
        tid = unit.dedup_id
        deltas, reads = self._dedup.follower_counts(tid)
        return {
            "dedup_role": self._dedup.role(tid),
            "dedup_publishes": self._dedup.publishes(tid),
            "dedup_deltas": deltas,
            "dedup_reads": reads,
        }

    def _snapshot(self) -> status.Snapshot:
        from . import status

        client = self._client
        queries: set[str] = set()
        templates = []
        for unit in self._units:
            queries.update(unit.queries)
            if unit.last_error is not None:
                state = "error"
            elif unit.command_error is not None:
                state = "degraded"
            elif unit.rendered and unit.waiting_since is None:
                state = "rendered"
            else:
                state = "waiting"
            templates.append(
                status.TemplateState(
                    source=unit.config.source or "(contents)",
                    destination=unit.config.destination,
                    state=state,
                    waiting_for=tuple(self._missing(unit)) if state == "waiting" else (),
                    error=unit.last_error,
                    last_rendered=unit.last_rendered,
                    renders=unit.renders,
                    errors=unit.errors,
                    command_runs=unit.command_runs,
                    command_failures=unit.command_failures,
                    command_seconds=unit.command_seconds,
                    command_error=unit.command_error,
                    command_failed_at=unit.command_failed_at,
                    **self._dedup_state(unit),
                )
            )
        now = time.monotonic()
        failing = tuple(
            status.FailingQuery(key, f.error, now - f.since, f.count)
            for key, f in sorted(self._watcher.failing.items() if self._watcher else ())
        )
        consul = status.ConsulState(
            address=client.base_url if client else base_url(self.config.consul),
            reachable=client.available if client else False,
            last_error=client.last_error if client else "",
            requests=client.requests if client else 0,
            failed_requests=client.failed_requests if client else 0,
            watched_queries=len(queries),
            failing=failing,
        )
        execs = self._exec.states() if self._exec else ()
        return status.Snapshot(consul, tuple(templates), execs, watches=self._watches.stats())

    # --- pid file -------------------------------------------------------------------------

    def _write_pid_file(self) -> None:
        path = self.config.pid_file
        if not path:
            return
        # Atomically, never through a symlink planted at the path (output/write.py's rule).
        try:
            write_small_file(path, str(os.getpid()).encode())
        except RenderError as exc:
            log.error("pid_file %s", exc)

    def _remove_pid_file(self, path: str | None = None) -> None:
        path = path or self.config.pid_file
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _present(paths: list[str]) -> list[bool]:
    """Whether each path exists (a dangling symlink counts: it was not deleted)."""
    return [os.path.lexists(p) for p in paths]


def _identities(paths: list[str]) -> list[tuple[int, int, int, int] | None]:
    """What each template source leads to now (None: not there). ``stat`` follows links, so a
    link swapped to another file changes it as an edit or a replacement does."""
    out: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return out


def _keep_modes(config: Config, old: Config) -> Config:
    # Exec blocks are read at start: a reload neither restarts nor reconfigures the children.
    return replace(config, once=old.once, dry=old.dry, execs=old.execs)


async def run(config: Config, reload: Callable[[], Config] | None = None) -> int:
    """Run until stopped (or, with ``config.once``, until every template was rendered once).

    Returns the exit status; a fatal error (see :meth:`Runner.run`) is raised as a
    :class:`CtemplateError` whose message is the one line to show.
    """
    if not config.templates and not config.watches:
        raise ConfigError(
            "no templates: give -template src:dest or a config file with template {} or watch {}"
        )
    if config.execs:  # a missing program or a bad templates entry: before anything starts
        from .modes.exec import check_execs

        check_execs(config.execs, [t.destination for t in config.templates], _command_env(config))
    return await Runner(config, reload).run()
