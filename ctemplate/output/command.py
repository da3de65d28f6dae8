"""Commands run after a file changed (reload nginx, ...).

A string runs through ``sh -c``; a list runs as an argv. Each command gets its own process
group (session), so a timeout kills the command and everything it started: SIGTERM to the
group, then SIGKILL after a short grace period.

Its output goes to unlinked temporary files, not pipes: a command is finished when its process
exits, even if a child it left in the background (``nginx`` started by a script, ``sleep 30 &``)
keeps the output open; only the tail of each is read back, for messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from ..errors import CommandError

__all__ = ["CommandResult", "describe", "kill_group", "run_command", "start_process"]

log = logging.getLogger(__name__)

_TAIL = 2000  # bytes of stderr kept for the error message
_KEEP = 64 * 1024  # bytes of each output read back
_GRACE = 2.0  # seconds between SIGTERM and SIGKILL


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command ended: exit status, its output and how long it ran."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


def describe(command: str | tuple[str, ...]) -> str:
    return command if isinstance(command, str) else " ".join(command)


def kill_group(pid: int, sig: int) -> None:
    """``sig`` to the process group led by ``pid``; nothing if it is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def start_process(*argv: str, **options: Any) -> asyncio.subprocess.Process:
    """``asyncio.create_subprocess_exec`` that is safe to cancel; the child must lead its own
    process group (``start_new_session`` or ``process_group=0``).

    The child is running before asyncio has connected its pipes. Cancelled in between, Python
    3.11 kills the child alone and then waits for every pipe to close: a descendant holding one
    (``sleep 300 &``) kept ctemplate from stopping until it ended. Here the start runs in a task of
    its own that a cancellation does not interrupt; it is let finish (within the grace period), the
    child's whole group is killed, and the cancellation goes on.
    """
    start = asyncio.ensure_future(asyncio.create_subprocess_exec(*argv, **options))
    try:
        return await asyncio.shield(start)
    except asyncio.CancelledError:
        start.add_done_callback(_kill_started)
        with contextlib.suppress(BaseException):
            await asyncio.wait({start}, timeout=_GRACE)
            if start.done() and not start.cancelled() and start.exception() is None:
                # Killed with its group: its pipes close now. Waited for, so that no pipe is
                # left for the garbage collector to close on a loop that may be gone.
                await asyncio.wait_for(start.result().wait(), _GRACE)
        raise


def _kill_started(start: asyncio.Future[asyncio.subprocess.Process]) -> None:
    if start.cancelled() or start.exception() is not None:
        return  # nothing started (the error is the caller's, which was cancelled)
    proc = start.result()
    kill_group(proc.pid, signal.SIGKILL)
    if proc.stdin is not None:  # nobody else will close it (see ScriptHandler.run)
        proc.stdin.close()


async def run_command(
    command: str | tuple[str, ...],
    *,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
    what: str = "command",
) -> CommandResult:
    """Run a command to completion; raise CommandError on a non-zero exit or a timeout.

    ``timeout <= 0`` waits forever.
    """
    argv: tuple[str, ...] = ("/bin/sh", "-c", command) if isinstance(command, str) else command
    if not argv:
        raise CommandError(f"{what}: empty command")
    started = time.monotonic()
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        returncode = await _run(
            argv, command, out_file.fileno(), err_file.fileno(), timeout, env, what
        )
        out, err = _tail(out_file.fileno()), _tail(err_file.fileno())
    seconds = time.monotonic() - started
    stdout = out.decode("utf-8", errors="replace")
    stderr = err.decode("utf-8", errors="replace")
    result = CommandResult(returncode, stdout, stderr, seconds)
    if result.returncode != 0:
        tail = stderr[-_TAIL:].strip() or stdout[-_TAIL:].strip()
        tail = "; ".join(line.strip() for line in tail.splitlines() if line.strip())  # one line
        tail_text = f": {tail}" if tail else ""
        raise CommandError(
            f"{what} {describe(command)!r} exited with status {result.returncode}{tail_text}"
        )
    return result


def _tail(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, _KEEP, max(0, size - _KEEP))


async def _run(
    argv: tuple[str, ...],
    command: str | tuple[str, ...],
    stdout: int,
    stderr: int,
    timeout: float,
    env: dict[str, str] | None,
    what: str,
) -> int:
    """Start ``argv`` and wait for its exit (not for its output to close); its exit status."""
    try:
        proc = await start_process(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            env=env,
        )
    except OSError as exc:
        raise CommandError(f"{what} {describe(command)!r} could not start: {exc.strerror}") from exc
    try:
        return await asyncio.wait_for(proc.wait(), timeout if timeout > 0 else None)
    except TimeoutError:
        kill_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), _GRACE)
        except TimeoutError:
            kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()
        # Children that ignored SIGTERM go too.
        kill_group(proc.pid, signal.SIGKILL)
        raise CommandError(
            f"{what} {describe(command)!r} ran past its timeout of {timeout:g}s and was killed "
            "with its process group (raise command_timeout if it needs longer)"
        ) from None
    except asyncio.CancelledError:
        kill_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await proc.wait()
        raise
