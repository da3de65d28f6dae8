"""The baseline for many dependencies: consul-template's model, one blocking loop per dependency.

consul-template gives every dependency of a template its own goroutine and its own long-poll
connection; when one answers with new data, the template is rendered again from the cache and
the file written (when every dependency has data). This is that model with the least code: one
thread per dependency, each with its own keep-alive ``httpx.Client`` (one connection per loop,
as each consul-template long poll holds one), a lock around the cache and the render, and the
same atomic write as ``raw_client.py`` (temp file, fsync, chmod, rename, fsync of the
directory). No retry library, no rate limit, no template engine.

Modes (the output is byte for byte what the matching template in ``bench/scenarios.py``
renders):

* ``keys``: ``--count`` keys ``<prefix>0 .. <prefix>N-1``, one loop each on
  ``/v1/kv/<key>``; one line ``i=value`` per key;
* ``service``: one loop on ``/v1/health/service/<name>?passing=1``; one line
  ``Node Address:Port`` per passing instance, sorted by node and service ID;
* ``services``: one loop on ``/v1/catalog/services``, and one more loop per service carrying
  ``--tag`` (started as the list shows them); lines ``Name Node Address:Port``.

Every request is a stale read (``stale``, as ctemplate's default ``max_stale``) with
``wait=--wait``. After an error the loop backs off (0.25 s doubling up to 8 s, with jitter) and
asks again without blocking, as consul-template does. ``--source-addr`` binds the client's
sockets to another loopback address (e.g. 127.0.0.2): Consul counts its per-client connection
limit per source address. ``--shared-client`` makes all loops share one ``httpx.Client`` (one
pool) instead of one each (see bench/README.md for why that is not the default). ``--stats
FILE`` writes counters at exit (JSON: requests, errors by kind, renders, seconds to the first
complete render, loops started).

Bounded: ``--max-seconds``; ``--once`` exits after the first complete render; SIGTERM/SIGINT
exit at once (daemon threads are not joined: a blocked loop would hold the exit for its
``wait``).

    .venv/bin/python bench/raw_multi.py --addr 127.0.0.1:8500 --mode keys --prefix app/k \\
        --count 1000 --dest /tmp/raw.out
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any
from urllib.parse import quote

import httpx
from raw_client import write_atomic

Decoder = Callable[[Any], Any]


def _kv_value(data: Any) -> Any:
    if not data:
        return None
    return base64.b64decode(data[0].get("Value") or b"").decode("utf-8", "replace")


def _instances(data: Any) -> Any:
    out = []
    for e in data or ():
        node = e.get("Node") or {}
        svc = e.get("Service") or {}
        address = svc.get("Address") or node.get("Address") or ""
        out.append(
            (node.get("Node") or "", svc.get("ID") or "", address, int(svc.get("Port") or 0))
        )
    out.sort()
    return tuple(out)


def _service_names(data: Any) -> Any:
    return tuple(sorted((data or {}).items()))


class RawClient:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop = threading.Event()
        self.rendered = threading.Event()
        self.lock = threading.Lock()
        self.cache: dict[str, Any] = {}
        self.wanted: list[str] = []  # dependency keys a complete render needs
        self.loops: set[str] = set()
        self.started = time.monotonic()
        self.first_complete = -1.0
        self.requests = 0
        self.renders = 0
        self.errors: Counter[str] = Counter()
        self.last_text: str | None = None
        self.shared: httpx.Client | None = None
        if args.shared_client:
            self.shared = self.client(None)

    def client(self, limit: int | None) -> httpx.Client:
        limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        transport = httpx.HTTPTransport(
            limits=limits, local_address=self.args.source_addr or None, retries=0, verify=False
        )
        return httpx.Client(
            base_url=f"http://{self.args.addr}", transport=transport, trust_env=False
        )

    # --- loops ------------------------------------------------------------------------------

    def spawn(self, key: str, path: str, params: dict[str, str], decode: Decoder) -> None:
        """Start one blocking loop (a thread) for one dependency; called with the lock held or
        before any loop runs."""
        if key in self.loops:
            return
        self.loops.add(key)
        t = threading.Thread(
            target=self.loop, args=(key, path, params, decode), name=key, daemon=True
        )
        t.start()

    def loop(self, key: str, path: str, params: dict[str, str], decode: Decoder) -> None:
        a = self.args
        http = self.shared or self.client(1)
        deadline = self.started + a.max_seconds
        index = 0
        failures = 0
        for _ in range(a.max_requests):
            left = deadline - time.monotonic()
            if left <= 0 or self.stop.is_set():
                return
            q = dict(params)
            q["stale"] = ""
            if index > 0:
                q["index"] = str(index)
                q["wait"] = f"{int(min(a.wait, left) * 1000)}ms"
            read = a.wait + a.wait / 16 + 10.0 if index > 0 else 30.0
            with self.lock:
                self.requests += 1
            try:
                resp = http.get(path, params=q, timeout=httpx.Timeout(10.0, read=read))
                if resp.status_code not in (200, 404):
                    raise httpx.HTTPStatusError(
                        f"status {resp.status_code}", request=resp.request, response=resp
                    )
            except httpx.HTTPError as exc:
                with self.lock:
                    self.errors[type(exc).__name__] += 1
                failures += 1
                index = 0  # after a failure, ask again without blocking
                pause = min(0.25 * 2 ** (failures - 1), 8.0) * random.uniform(1.0, 1.25)
                if self.stop.wait(pause):
                    return
                continue
            failures = 0
            new_index = int(resp.headers.get("X-Consul-Index", "0"))
            if new_index < index:
                index = 0
                continue
            if new_index == index:
                continue
            index = max(new_index, 1)
            data = resp.json() if resp.status_code == 200 else None
            self.deliver(key, decode(data))

    # --- cache and render -------------------------------------------------------------------

    def deliver(self, key: str, value: Any) -> None:
        with self.lock:
            if value is None:  # a missing key: the render waits for it (as `key` blocks)
                self.cache.pop(key, None)
                return
            if self.cache.get(key) == value:
                return
            self.cache[key] = value
            if key == "catalog.services":
                self.follow_services(value)
            if all(k in self.cache for k in self.wanted):
                self.render()

    def follow_services(self, names: Any) -> None:
        tag = self.args.tag
        wanted = ["catalog.services"]
        for name, tags in names:
            if tag and tag not in (tags or ()):
                continue
            key = f"health.service({name})"
            wanted.append(key)
            path = f"/v1/health/service/{quote(name, safe='')}"
            self.spawn(key, path, {"passing": "1"}, _instances)
        self.wanted = wanted

    def render(self) -> None:
        a = self.args
        lines: list[str] = []
        if a.mode == "keys":
            for i in range(a.count):
                lines.append(f"{i}={self.cache[f'{a.prefix}{i}']}\n")
        elif a.mode == "service":
            for node, _id, address, port in self.cache["service"]:
                lines.append(f"{node} {address}:{port}\n")
        else:
            for name, tags in self.cache["catalog.services"]:
                if a.tag and a.tag not in (tags or ()):
                    continue
                for node, _id, address, port in self.cache[f"health.service({name})"]:
                    lines.append(f"{name} {node} {address}:{port}\n")
        text = "".join(lines)
        if text != self.last_text:
            write_atomic(a.dest, text.encode())
            self.last_text = text
            self.renders += 1
        if self.first_complete < 0:
            self.first_complete = time.monotonic() - self.started
        self.rendered.set()

    # --- run --------------------------------------------------------------------------------

    def run(self) -> int:
        a = self.args
        threading.stack_size(512 * 1024)
        if a.mode == "keys":
            self.wanted = [f"{a.prefix}{i}" for i in range(a.count)]
            for key in self.wanted:
                self.spawn(key, f"/v1/kv/{key.lstrip('/')}", {}, _kv_value)
        elif a.mode == "service":
            self.wanted = ["service"]
            path = f"/v1/health/service/{quote(a.service, safe='')}"
            self.spawn("service", path, {"passing": "1"}, _instances)
        else:
            self.wanted = ["catalog.services"]
            self.spawn("catalog.services", "/v1/catalog/services", {}, _service_names)
        deadline = self.started + a.max_seconds
        ok = True
        if a.once:
            ok = self.rendered.wait(max(deadline - time.monotonic(), 0.0))
        else:
            self.stop.wait(max(deadline - time.monotonic(), 0.0))
        self.finish()
        return 0 if ok else 1

    def finish(self) -> None:
        self.stop.set()
        if self.args.stats:
            with self.lock:
                stats = {
                    "requests": self.requests,
                    "errors": dict(self.errors),
                    "renders": self.renders,
                    "first_complete_s": self.first_complete,
                    "loops": len(self.loops),
                    "have_data": len(self.cache),
                    "seconds": time.monotonic() - self.started,
                }
            tmp = self.args.stats + ".tmp"
            with open(tmp, "w") as f:
                json.dump(stats, f)
            os.replace(tmp, self.args.stats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--addr", required=True, help="Consul HTTP address, host:port")
    p.add_argument("--mode", required=True, choices=["keys", "service", "services"])
    p.add_argument("--dest", required=True)
    p.add_argument("--prefix", default="", help="keys: key name prefix")
    p.add_argument("--count", type=int, default=1, help="keys: how many")
    p.add_argument("--service", default="", help="service: its name")
    p.add_argument("--tag", default="", help="services: only services with this tag")
    p.add_argument("--source-addr", default="", help="bind sockets to this local address")
    p.add_argument(
        "--shared-client",
        action="store_true",
        help="one httpx.Client (one pool) for all loops instead of one per loop",
    )
    p.add_argument("--wait", type=float, default=60.0, help="blocking wait, seconds")
    p.add_argument("--once", action="store_true", help="exit after the first complete render")
    p.add_argument("--stats", default="", help="write counters here (JSON) at exit")
    p.add_argument("--max-seconds", type=float, default=3600.0)
    p.add_argument("--max-requests", type=int, default=1_000_000, help="per loop")
    args = p.parse_args(argv)
    client = RawClient(args)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        client.finish()
        os._exit(128 + signum)  # loops blocked in a long poll are not waited for

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = client.run()
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
