"""Cancel a coroutine at the moment its child process runs but asyncio still connects the pipes.

``start`` is a coroutine that starts a child running ``sleep 300 & echo $! > PID_FILE; wait``.
The loop is turned until the child is forked, then held (a blocking wait in the test) until
the child has started its background ``sleep``; then the coroutine is cancelled. What a user
sees is checked: the coroutine ends with the cancellation within a bound, and nothing it started
is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

SCRIPT = "sleep 300 & echo $! > {pid_file}; wait"


def _children() -> set[int]:
    """This process's children (forked by its main thread, where the loop runs)."""
    me = os.getpid()
    with open(f"/proc/{me}/task/{me}/children", encoding="ascii") as listing:
        return {int(pid) for pid in listing.read().split()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    return False


async def cancel_while_starting(start: Coroutine[Any, Any, Any], pid_file: Path) -> str | None:
    """What went wrong (None when nothing did)."""
    before = _children()
    task = asyncio.ensure_future(start)
    for _ in range(100):  # a few turns of the loop, until the child is forked
        await asyncio.sleep(0)
        if _children() - before:
            break
    else:
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        return "no child was started"
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().strip()):  # the loop is held
        if time.monotonic() > deadline:
            task.cancel()
            return "the child never started its background sleep"
        time.sleep(0.01)
    background = int(pid_file.read_text())
    try:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        if not done:
            return "still running 10 s after it was cancelled"
        if not task.cancelled():
            return f"ended without the cancellation: {task.exception() or task.result()!r}"
        # The loop is held from here on: whatever the cancelled coroutine left for the loop to
        # finish later (a pipe's end not yet read) is still undone when the caller's loop closes.
        for _ in range(100):
            if not alive(background):
                return None
            time.sleep(0.05)
        return f"the child's background sleep (pid {background}) outlived the cancellation"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(background, signal.SIGKILL)  # ours: never left behind by the test itself
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=5)
