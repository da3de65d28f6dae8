"""Count a process's TCP connections to one port, from /proc (Linux)."""

from __future__ import annotations

import os
import threading
import time


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections from process ``pid`` to ``port`` on any address."""
    inodes: set[str] = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except FileNotFoundError:
        return 0
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    remote, state, inode = fields[2], fields[3], fields[9]
                    if state == "01" and inode in inodes and int(remote.split(":")[1], 16) == port:
                        count += 1
        except FileNotFoundError:
            continue
    return count


class PeakConnections:
    """Samples ``connections_to`` every 20 ms in a thread; ``peak`` is the highest count."""

    def __init__(self, pid: int, port: int) -> None:
        self.pid, self.port, self.peak = pid, port, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, connections_to(self.pid, self.port))
            time.sleep(0.02)

    def __enter__(self) -> PeakConnections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
