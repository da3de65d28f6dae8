"""The floor: the least a program can do to follow one Consul key into one file.

Issue #16's yardstick: a minimal ``urllib`` blocking-query loop (standard library only, no
third-party HTTP stack), long-polling ``GET /v1/kv/<key>?index=N&wait=60s&stale`` and, on a
new value, writing it to a temporary file renamed over the destination, **without fsync**
(ctemplate fsyncs the file and its directory; this loop does not, so it is a floor, not a
rival). ``raw_client.py`` is the fairer comparison (same library, same durable write).

    .venv/bin/python bench/floor_client.py --addr 127.0.0.1:8500 --key bench/k --dest /tmp/f.out

Two more shapes, for ``bench/hot.py``'s other scenarios (same loop, same write):

* ``--service web``: ``GET /v1/health/service/web?passing``, one line ``Node Address:Port``
  per passing instance (the address of the service, else of the node), as the template
  ``{% for s in service("web") %}{{ s.Node }} {{ s.Address }}:{{ s.Port }}`` prints them;
* ``--prefix bench/keys/k --count 1000``: one recursive read of the prefix, one line
  ``i=value`` for i in 0..count-1, as 1,000 ``key()`` calls in one template print them.

The loop is bounded: it stops after ``--max-seconds`` or ``--max-requests``, whichever comes
first (or on SIGTERM/SIGINT, which end the process).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def one_key(body: bytes) -> bytes:
    return base64.b64decode(json.loads(body)[0]["Value"] or b"")


def service_lines(body: bytes) -> bytes:
    lines = []
    for entry in json.loads(body):
        svc, node = entry["Service"], entry["Node"]
        address = svc.get("Address") or node.get("Address", "")
        lines.append(f"{node['Node']} {address}:{svc['Port']}\n")
    lines.sort()  # as ctemplate's service(): by node, then address
    return "".join(lines).encode()


def key_lines(prefix: str, count: int) -> Callable[[bytes], bytes]:
    def render(body: bytes) -> bytes:
        values = {e["Key"]: base64.b64decode(e["Value"] or b"").decode() for e in json.loads(body)}
        return "".join(f"{i}={values.get(f'{prefix}{i}', '')}\n" for i in range(count)).encode()

    return render


def run(
    addr: str,
    path: str,
    render: Callable[[bytes], bytes],
    dest: str,
    *,
    wait: float,
    max_seconds: float,
    max_requests: int,
) -> int:
    deadline = time.monotonic() + max_seconds
    url = f"http://{addr}{path}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    tmp = os.path.join(os.path.dirname(os.path.abspath(dest)), f".{os.path.basename(dest)}.tmp")
    index = 0
    last: bytes | None = None
    for _ in range(max_requests):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        query = f"&index={index}&wait={int(min(wait, left) * 1000)}ms" if index > 0 else ""
        try:
            with opener.open(url + query, timeout=wait + wait / 16 + 10.0) as resp:
                body = resp.read()
                new_index = int(resp.headers.get("X-Consul-Index", "0"))
        except urllib.error.HTTPError as exc:  # 404: no key yet
            new_index = int(exc.headers.get("X-Consul-Index", "0"))
            index = new_index if new_index > index else 0
            if new_index == 0:
                time.sleep(1.0)
            continue
        except OSError as exc:
            print(f"floor_client: {exc}", file=sys.stderr)
            time.sleep(1.0)
            continue
        if new_index < index:  # agent restarted: read afresh
            index = 0
            continue
        if new_index == index:
            continue
        index = max(new_index, 1)
        value = render(body)
        if value != last:
            with open(tmp, "wb") as f:
                f.write(value)
            os.replace(tmp, dest)
            last = value
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--addr", required=True, help="Consul HTTP address, host:port")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--key")
    what.add_argument("--service")
    what.add_argument("--prefix", help="with --count: that many keys prefix0..prefixN-1")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--dest", required=True)
    p.add_argument("--wait", type=float, default=60.0, help="blocking wait, seconds")
    p.add_argument("--max-seconds", type=float, default=3600.0)
    p.add_argument("--max-requests", type=int, default=1_000_000)
    a = p.parse_args(argv)
    if a.key:
        path, render = f"/v1/kv/{a.key.lstrip('/')}?stale", one_key
    elif a.service:
        path, render = f"/v1/health/service/{a.service}?passing&stale", service_lines
    else:
        prefix = a.prefix.lstrip("/")
        path, render = f"/v1/kv/{prefix}?recurse&stale", key_lines(prefix, a.count)
    return run(
        a.addr,
        path,
        render,
        a.dest,
        wait=a.wait,
        max_seconds=a.max_seconds,
        max_requests=a.max_requests,
    )


if __name__ == "__main__":
    sys.exit(main())
