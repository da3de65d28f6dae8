"""A small application for exec-mode tests: an HTTP server that serves its config file.

    python exec_child.py --config FILE --state DIR [--ignore-term] [--exit N --after S]
                         [--orphans N]

* ``GET /`` answers the contents of ``--config`` as read at start or at the last SIGHUP
  (reloading on SIGHUP is what a real server does);
* it writes ``DIR/port`` when it listens, and appends ``start <pid>`` / ``hup <pid>`` /
  ``usr1 <pid>`` / ``term <pid>`` lines to ``DIR/events`` (one line per event, with the time);
* SIGUSR1: only the ``usr1`` event line;
* SIGTERM or SIGINT: exits 0 (a graceful stop), unless ``--ignore-term``;
* ``--exit N --after S``: exits with status N after S seconds;
* ``--orphans N``: starts N processes that its own shell child abandons (they are orphaned
  and end 0.2 s later); after 1.5 s it writes to ``DIR/zombies`` the pids of those orphans
  that still exist (a zombie nobody reaped) and every zombie of its PID namespace, then exits
  with ``--exit``'s status.
"""

from __future__ import annotations

import argparse
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType


def _event(state: Path, what: str) -> None:
    with open(state / "events", "a") as f:
        f.write(f"{what} {os.getpid()} {time.time():.3f}\n")


def _zombies() -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[0] == "Z":
            found.append(entry)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--exit", type=int, default=None)
    parser.add_argument("--after", type=float, default=0.0)
    parser.add_argument("--orphans", type=int, default=0)
    args = parser.parse_args()
    state = Path(args.state)
    content = {"text": Path(args.config).read_text()}

    def hup(_signum: int, _frame: FrameType | None) -> None:
        content["text"] = Path(args.config).read_text()
        _event(state, "hup")

    def term(signum: int, _frame: FrameType | None) -> None:
        _event(state, "term")
        if not args.ignore_term:
            os._exit(0)

    signal.signal(signal.SIGHUP, hup)
    signal.signal(signal.SIGUSR1, lambda _s, _f: _event(state, "usr1"))
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = content["text"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    _event(state, "start")
    tmp = state / "port.tmp"
    tmp.write_text(str(server.server_address[1]))
    tmp.rename(state / "port")
    threading.Thread(target=server.serve_forever, daemon=True).start()

    if args.orphans:
        pids = []
        for _ in range(args.orphans):
            # The shell prints its background child's pid and exits: the sleep is orphaned.
            out = subprocess.run(
                ["/bin/sh", "-c", "sleep 0.2 >/dev/null 2>&1 & echo $!"],
                capture_output=True,
                text=True,
                check=True,
            )
            pids.append(out.stdout.strip())
        time.sleep(1.5)
        left = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
        (state / "zombies").write_text(
            f"orphans {' '.join(pids)}\nleft {' '.join(left)}\nzombies {' '.join(_zombies())}\n"
        )
        sys.exit(args.exit or 0)
    if args.exit is not None:
        time.sleep(args.after)
        sys.exit(args.exit)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
