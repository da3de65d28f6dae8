"""Exec mode: ctemplate starts, signals and restarts the process its files configure.

Each ``exec`` block is one :class:`Child`. The :class:`Supervisor` gets three things from the
runner: "these destinations are rendered (and these of them changed)" after every pass,
"this signal arrived" for the signals ctemplate does not use itself, and "stop". It tells the
runner one thing back: "a child ended and is not restarted; exit with this status".

A child

* starts once every template it depends on (``templates``, default all) has rendered once;
* runs in its own session and process group, so a terminal's Ctrl-C reaches it only through
  ctemplate, and every signal goes to the whole group: a string command runs through
  ``sh -c``, and Debian's ``dash`` does not ``exec`` its last command, so the application is
  the shell's child. The shell gets a no-op ``trap`` for those signals, so it survives them
  and exits with the application's status; a trap does not pass to the programs it starts;
* gets ``reload_signal`` when one of its files changed (after a random ``splay``, at most one
  per ``min_reload_interval``: a burst of changes gives one signal), or, with no reload
  signal, is stopped and started again;
* is stopped with ``kill_signal``, then SIGKILL to its process group after ``kill_timeout``;
  whatever is left of the group is killed too, so nothing stays behind;
* when it ends by itself, is started again after a capped exponential backoff if its
  ``restart`` policy says so; otherwise ctemplate stops (the other children gracefully) and
  exits with its status (128 + N for a child killed by signal N).

stdin, stdout and stderr are ctemplate's own, passed through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
import random
import shlex
import shutil
import signal
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from ..config import ExecConfig
from ..errors import ConfigError
from ..output.command import start_process
from ..status import ExecState

__all__ = ["FORWARDED", "Child", "Supervisor", "check_execs", "child_env", "exit_status"]

log = logging.getLogger(__name__)

# Signals passed on to the children unless ctemplate uses them itself (its stop and reload
# signals). Not the ones a fault raises (SEGV, BUS, FPE, ILL), not SIGPIPE or SIGCHLD, and not
# SIGURG (Go's runtime uses it; forwarding it was consul-template bug GH-1486).
FORWARDED: tuple[str, ...] = (
    *("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGALRM"),
    *("SIGCONT", "SIGTTIN", "SIGTTOU", "SIGTSTP", "SIGIO", "SIGPROF", "SIGXCPU", "SIGXFSZ"),
)
_TRAPPED = " ".join(name[3:] for name in FORWARDED)  # for the shell's no-op trap

_SHELL_WORDS = frozenset(
    {
        *("!", ".", ":", "[", "{", "(", "alias", "bg", "break", "case", "cd", "command"),
        *("continue", "echo", "eval", "exit", "export", "false", "fg", "for", "getopts", "hash"),
        *("if", "jobs", "kill", "printf", "pwd", "read", "readonly", "return", "set", "shift"),
        *("test", "times", "trap", "true", "type", "ulimit", "umask", "unset", "until", "wait"),
        *("while",),
    }
)


def exit_status(returncode: int) -> int:
    """A process's status as a shell reports it: 128 + N for a death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _program(command: str | tuple[str, ...]) -> str | None:
    """The program a command starts, when it can be told without running a shell."""
    if isinstance(command, tuple):
        return command[0]
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    while words and ("=" in words[0] and words[0].split("=", 1)[0].isidentifier()):
        words.pop(0)  # VAR=value prefixes
    if words and words[0] == "exec":
        words.pop(0)
    if not words or words[0] in _SHELL_WORDS or any(c in words[0] for c in "$`;&|<>()*?"):
        return None
    return words[0]


def check_execs(
    execs: Iterable[ExecConfig], destinations: Iterable[str], environ: Mapping[str, str]
) -> None:
    """Before anything starts: each command's program exists and each ``templates`` entry
    names a template's destination. Raises :class:`ConfigError` naming the key."""
    known = {os.path.abspath(d) for d in destinations}
    for config in execs:
        program = _program(config.command)
        if program is not None:
            env = child_env(config, environ)
            if "/" in program:
                found = os.path.isfile(program) and os.access(program, os.X_OK)
            else:
                found = shutil.which(program, path=env.get("PATH", os.defpath)) is not None
            if not found:
                raise ConfigError(
                    f"{config.origin}.command: {program!r} is not an executable file"
                    + ("" if "/" in program else " on the PATH")
                    + "; check the command's spelling or install it"
                )
        for destination in config.templates:
            if os.path.abspath(destination) not in known:
                raise ConfigError(
                    f"{config.origin}.templates: {destination!r} is not the destination of "
                    "any template; list template destinations"
                )


def child_env(config: ExecConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """The child's environment (see :class:`~ctemplate.config.ExecEnvConfig`)."""
    rules = config.env
    env: dict[str, str] = {}
    if not rules.pristine:
        for name, value in environ.items():
            if rules.allowlist and not any(fnmatch.fnmatchcase(name, p) for p in rules.allowlist):
                continue
            if any(fnmatch.fnmatchcase(name, p) for p in rules.denylist):
                continue
            env[name] = value
    for entry in rules.custom:
        name, _, value = entry.partition("=")
        env[name] = value
    return env


def _argv(config: ExecConfig) -> tuple[str, ...]:
    command = config.command
    if isinstance(command, tuple):
        return command
    # A no-op trap keeps the shell alive through the signals the group gets; the program it
    # runs starts with those signals at their defaults (traps are not inherited).
    return ("/bin/sh", "-c", f"trap : {_TRAPPED}\n{command}")


def _signum(name: str, default: signal.Signals) -> signal.Signals:
    return getattr(signal, name) if name else default


class Child:
    """One supervised process: one ``exec`` block."""

    def __init__(
        self,
        config: ExecConfig,
        number: int,
        env: dict[str, str],
        ended: Callable[[Child, int], None],
    ) -> None:
        self.config = config
        self.name = f"exec[{number}]"
        self._env = env
        self._ended = ended
        self._proc: asyncio.subprocess.Process | None = None
        self._waiter: asyncio.Task[None] | None = None
        self._action: asyncio.Task[None] | None = None  # a pending reload, restart or backoff
        self._last_action = -float("inf")  # monotonic time of the last reload signal/restart
        self._started_at = 0.0
        self._failures = 0  # consecutive ends restarted by the policy: the backoff exponent
        self._closed = False
        self._sleeping = False  # the pending action is still in its delay: safe to cancel
        self._spawning = False  # between fork and knowing the pid
        self.started = False  # started at least once
        self.starts = 0
        self.last_exit: int | None = None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def state(self) -> ExecState:
        command = self.config.command
        return ExecState(
            name=self.name,
            command=command if isinstance(command, str) else shlex.join(command),
            running=self.pid is not None,
            pid=self.pid,
            restarts=max(self.starts - 1, 0),
            last_exit=self.last_exit,
        )

    # --- starting and ending ------------------------------------------------------------

    async def start(self) -> None:
        if self._closed or self._spawning or self.pid is not None:
            return  # a start still under way reads the files as they are now
        argv = _argv(self.config)
        self.started = True
        self.starts += 1
        self._spawning = True
        try:
            self._proc = await start_process(*argv, env=self._env, start_new_session=True)
        except OSError as exc:
            self._spawning = False
            log.error("(exec) %s: cannot start %r: %s", self.name, argv[0], exc.strerror or exc)
            self._on_end(127)
            return
        finally:
            self._spawning = False
        self._started_at = time.monotonic()
        log.info("(exec) %s: started %s (pid %d)", self.name, self.state().command, self._proc.pid)
        self._waiter = asyncio.ensure_future(self._wait(self._proc))

    async def _wait(self, proc: asyncio.subprocess.Process) -> None:
        returncode = await proc.wait()
        self._kill_group(proc.pid, signal.SIGKILL)  # what the child left in its group
        self._on_end(exit_status(returncode))

    def _on_end(self, status: int) -> None:
        self.last_exit = status
        if self._closed:
            return
        policy = self.config.restart
        if policy == "always" or (policy == "on-failure" and status != 0):
            ran = time.monotonic() - self._started_at
            if ran >= self.config.restart_max_backoff:
                self._failures = 0  # it ran long enough: start the sequence again
            delay = min(
                self.config.restart_backoff * 2**self._failures, self.config.restart_max_backoff
            )
            self._failures = min(self._failures + 1, 62)
            log.warning(
                "(exec) %s: exited with status %d; restarting in %.2fs (restart = %s)",
                self.name,
                status,
                delay,
                policy,
            )
            self._replace_action(self._restart_later(delay))
            return
        if status == 0:
            log.info("(exec) %s: exited with status 0; stopping", self.name)
        else:
            log.error("(exec) %s: exited with status %d; stopping", self.name, status)
        self._ended(self, status)

    async def _restart_later(self, delay: float) -> None:
        await self._sleep(delay)
        self._action = None
        await self.start()

    def _replace_action(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._action is not None:
            self._action.cancel()
        self._action = asyncio.ensure_future(coro)

    async def _sleep(self, delay: float) -> None:
        self._sleeping = True
        try:
            await asyncio.sleep(max(delay, 0.0))
        finally:
            self._sleeping = False

    # --- signals --------------------------------------------------------------------------

    @staticmethod
    def _kill_group(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    def send(self, sig: int) -> bool:
        """Signal the child's process group; False if it is not running."""
        pid = self.pid
        if pid is None:
            return False
        self._kill_group(pid, sig)
        return True

    def changed(self) -> None:
        """One of its files changed: reload signal or restart, after splay and at most once
        per ``min_reload_interval`` (changes meanwhile join the pending one)."""
        if self._closed or not self.started or self._action is not None:
            return  # not started yet, or a reload/restart/backoff is pending: it sees the files
        now = time.monotonic()
        delay = random.uniform(0, self.config.splay) if self.config.splay > 0 else 0.0
        delay = max(delay, self._last_action + self.config.min_reload_interval - now)
        self._action = asyncio.ensure_future(self._reload_after(delay))

    async def _reload_after(self, delay: float) -> None:
        await self._sleep(delay)
        if self._spawning:  # starting right now: it reads the files as they are
            self._action = None
            return
        self._last_action = time.monotonic()
        sig = self.config.reload_signal
        if sig and self.send(getattr(signal, sig)):
            log.info("(exec) %s: files changed; sent %s", self.name, sig)
            self._action = None
            return
        log.info("(exec) %s: files changed; restarting the child", self.name)
        await self._terminate()
        self._action = None
        await self.start()

    async def _terminate(self) -> None:
        """kill_signal to the group, SIGKILL after kill_timeout; returns when it has ended."""
        proc, waiter = self._proc, self._waiter
        if proc is None or waiter is None or proc.returncode is not None:
            return
        # Its end is ours: not a reason to exit or restart. Hold _on_end off by waiting here.
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        self._kill_group(proc.pid, _signum(self.config.kill_signal, signal.SIGTERM))
        try:
            # kill_timeout = 0: SIGKILL at once, as in consul-template
            returncode = await asyncio.wait_for(proc.wait(), self.config.kill_timeout)
        except TimeoutError:
            log.warning(
                "(exec) %s: still running %gs after %s; sending SIGKILL to its process group",
                self.name,
                self.config.kill_timeout,
                self.config.kill_signal or "SIGTERM",
            )
            self._kill_group(proc.pid, signal.SIGKILL)
            returncode = await proc.wait()
        self._kill_group(proc.pid, signal.SIGKILL)
        self.last_exit = exit_status(returncode)
        log.info("(exec) %s: stopped (status %d)", self.name, self.last_exit)

    async def stop(self) -> None:
        """Stop for good: no more restarts."""
        self._closed = True
        if self._action is not None:
            if self._sleeping:  # else let it finish its stop; start() does nothing now
                self._action.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._action
            self._action = None
        await self._terminate()


class Supervisor:
    """Every child of one ctemplate run, and the runner's hooks into them."""

    def __init__(
        self,
        execs: Iterable[ExecConfig],
        environ: Mapping[str, str],
        exit: Callable[[int], None],
    ) -> None:
        self._exit = exit
        self.children = [
            Child(config, number, child_env(config, environ), self._ended)
            for number, config in enumerate(execs, start=1)
        ]
        # The files each child depends on; None: every template's (after a reload too).
        self._files: dict[Child, frozenset[str] | None] = {
            child: frozenset(os.path.abspath(d) for d in child.config.templates) or None
            for child in self.children
        }
        self._forwarding: list[int] = []
        self._starting: set[asyncio.Task[None]] = set()
        self._stopped = False
        self.status: int | None = None  # the status ctemplate exits with, once known

    def _ended(self, child: Child, status: int) -> None:
        if self.status is None:
            self.status = status
        self._exit(status)

    def rendered(
        self, destinations: Iterable[str], rendered: Iterable[str], changed: Iterable[str]
    ) -> None:
        """After a pass: of every template's ``destinations``, ``rendered`` ones have complete
        output (written or already current); ``changed`` ones were written just now."""
        if self._stopped:
            return
        every = frozenset(os.path.abspath(d) for d in destinations)
        done = {os.path.abspath(d) for d in rendered}
        now = {os.path.abspath(d) for d in changed}
        for child, files in self._files.items():
            files = every if files is None else files
            if not child.started:
                if files <= done:
                    task = asyncio.ensure_future(child.start())
                    self._starting.add(task)
                    task.add_done_callback(self._starting.discard)
            elif not now.isdisjoint(files):
                child.changed()

    def forward(self, signum: int) -> None:
        """A signal ctemplate does not use itself: pass it to every running child."""
        name = signal.Signals(signum).name
        for child in self.children:
            if child.send(signum):
                log.info("(exec) %s: forwarded %s", child.name, name)

    def install_signals(self, own: Iterable[str]) -> None:
        """Forward every signal of :data:`FORWARDED` that is not in ``own`` (the runner's)."""
        loop = asyncio.get_running_loop()
        for name in FORWARDED:
            if name in own:
                continue
            signum = getattr(signal, name)
            loop.add_signal_handler(signum, self.forward, signum)
            self._forwarding.append(signum)

    def remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in self._forwarding:
            loop.remove_signal_handler(signum)
        self._forwarding.clear()

    async def stop(self) -> int:
        """Stop every child (in parallel, each gracefully); return the status to exit with:
        that of the child that ended ctemplate, else that of the first child (0 if it never
        started)."""
        self._stopped = True
        for task in list(self._starting):
            with contextlib.suppress(Exception):
                await task
        await asyncio.gather(*(child.stop() for child in self.children))
        if self.status is None:
            first = self.children[0] if self.children else None
            self.status = first.last_exit if first is not None and first.last_exit else 0
        return self.status

    def states(self) -> tuple[ExecState, ...]:
        return tuple(child.state() for child in self.children)
