#!/usr/bin/env python3
"""A tiny HTTP backend, like the workshop's rack app: every GET answers
``OK: response from NAME``.

    python3 contrib/backend.py --name backend-1 [--host 127.0.0.1] [--port 0]

With ``--port 0`` it binds a free port. When it is ready it prints one line on stdout,
``listening 127.0.0.1:PORT``, so whoever started it knows where it is. SIGTERM and SIGINT stop
it quietly; SIGKILL (the workshop's ``kill -9``) stops it the hard way. Standard library only.
"""

from __future__ import annotations

import argparse
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    server_version = "backend"
    protocol_version = "HTTP/1.1"
    name = "backend"

    def _answer(self, with_body: bool) -> None:
        body = f"OK: response from {self.name}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", self.name)
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restarted backend gets its old port back at once


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the name in every answer")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)

    Handler.name = args.name
    try:
        server = Server((args.host, args.port), Handler)
    except OSError as exc:
        print(
            f"backend {args.name}: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening {args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
