"""ctemplate as process 1 (a container's entry point): reap every orphan, forward signals.

Process 1 inherits every orphan of its namespace, and must wait for them or they stay
zombies. Waiting for "any child" in the process that also runs commands, plugins and the exec
child would steal their exit statuses from the code waiting for them (``subprocess``,
``asyncio``). So, as ``tini`` does, process 1 forks: the child runs ctemplate as usual, and
process 1 does nothing but

* forward every catchable signal to it (the kernel drops signals sent to process 1 that it
  has no handler for, so ``docker stop``'s SIGTERM needs a handler here);
* reap whatever ends: orphans are discarded, and when ctemplate itself ends, process 1 exits
  with its status (128 + N for a death by signal N), which ends the container.

Orphans are reparented to process 1, never to the ctemplate process, so nothing there can be
reaped by anyone but its own waiter.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType

__all__ = ["become_init"]

# Signals that stay with process 1: SIGCHLD (it reaps), and the faults and job control it
# should not fake. Everything else catchable is forwarded.
_KEEP = frozenset(
    {
        *(signal.SIGCHLD, signal.SIGKILL, signal.SIGSTOP, signal.SIGSEGV, signal.SIGBUS),
        *(signal.SIGFPE, signal.SIGILL, signal.SIGPIPE, signal.SIGURG),
    }
)


def become_init() -> None:
    """If this is process 1, fork: return in the child (which runs ctemplate); process 1
    forwards signals and reaps until that child ends, then exits with its status."""
    if os.getpid() != 1:
        return
    worker = os.fork()
    if worker == 0:
        return

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signum)

    for signum in signal.valid_signals():
        if signum in _KEEP or not isinstance(signum, signal.Signals):
            continue
        with contextlib.suppress(OSError, ValueError):
            signal.signal(signum, forward)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:  # no child left (cannot happen before the worker ends)
            os._exit(0)
        if pid == worker:
            code = os.waitstatus_to_exitcode(status)
            sys.stdout.flush()
            os._exit(128 - code if code < 0 else code)
