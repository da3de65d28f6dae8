"""The floor: the least a program can do to follow one Consul key into one file.

Issue #16's yardstick: a minimal ``urllib`` blocking-query loop (standard library only, no
third-party HTTP stack), long-polling ``GET /v1/kv/<key>?index=N&wait=60s&stale`` and, on a
new value, writing it to a temporary file renamed over the destination, **without fsync**
(ctemplate fsyncs the file and its directory; this loop does not, so it is a floor, not a
rival). ``raw_client.py`` is the fairer comparison (same library, same durable write).

    .venv/bin/python bench/floor_client.py --addr 127.0.0.1:8500 --key bench/k --dest /tmp/f.out

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


def run(
    addr: str, key: str, dest: str, *, wait: float, max_seconds: float, max_requests: int
) -> int:
    deadline = time.monotonic() + max_seconds
    url = f"http://{addr}/v1/kv/{key.lstrip('/')}?stale"
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
        value = base64.b64decode(json.loads(body)[0]["Value"] or b"")
        if value != last:
            with open(tmp, "wb") as f:
                f.write(value)
            os.replace(tmp, dest)
            last = value
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--addr", required=True, help="Consul HTTP address, host:port")
    p.add_argument("--key", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--wait", type=float, default=60.0, help="blocking wait, seconds")
    p.add_argument("--max-seconds", type=float, default=3600.0)
    p.add_argument("--max-requests", type=int, default=1_000_000)
    a = p.parse_args(argv)
    return run(
        a.addr,
        a.key,
        a.dest,
        wait=a.wait,
        max_seconds=a.max_seconds,
        max_requests=a.max_requests,
    )


if __name__ == "__main__":
    sys.exit(main())
