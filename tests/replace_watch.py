"""Timing file replacements: used by the nginx tests and by contrib/demo.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path


class ReplaceWatch:
    """Notes when a file is replaced (ctemplate renames a new file over it, so the inode
    changes), checking every millisecond in a thread.

    ``error`` is the exception raised when the file changed without being replaced.
    """

    def __init__(self, path: Path, error: type[Exception] = AssertionError) -> None:
        self.path = path
        self.times: list[float] = []
        self._error = error
        self._stop = threading.Event()
        self._changed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._inode = self._current()

    def _current(self) -> int | None:
        try:
            return self.path.stat().st_ino
        except FileNotFoundError:
            return None

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            inode = self._current()
            if inode != self._inode:
                self.times.append(time.monotonic())
                self._inode = inode
                self._changed.set()

    def last(self) -> float:
        """When the file was last replaced (waiting a moment for the thread to notice)."""
        if not self._changed.wait(1.0):
            raise self._error(f"{self.path} changed, but was not replaced by a rename")
        return self.times[-1]

    def __enter__(self) -> ReplaceWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
