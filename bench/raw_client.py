"""The baseline: a minimal blocking-query loop on one Consul key, written to one file.

It does what ctemplate must do for ``{{ key("k") }}`` and nothing else: long-poll
``GET /v1/kv/<key>?index=N&wait=60s&stale`` (stale reads, as ctemplate's default ``max_stale``
of 2s), and on a new index with a new value write the value the way ctemplate writes files
(temporary file in the same directory, fsync, chmod, rename, fsync of the directory). Same HTTP
library as ctemplate (httpx, keep-alive), but synchronous: no event loop, no retries, no
template engine, no thread hop.

    .venv/bin/python bench/raw_client.py --addr 127.0.0.1:8500 --key bench/k --dest /tmp/raw.out

The loop is bounded: it stops after ``--max-seconds`` or ``--max-requests``, whichever comes
first (or on SIGTERM/SIGINT, which end the process).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import sys
import tempfile
import time

import httpx


def write_atomic(dest: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(dest))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def run(
    addr: str, key: str, dest: str, *, wait: float, max_seconds: float, max_requests: int
) -> int:
    deadline = time.monotonic() + max_seconds
    # $RAW_TRACE_OUT: one line "decoded written value" (perf_counter) per write, appended
    # after the write (outside the measured path), for bench/reaction.py --trace.
    trace_path = os.environ.get("RAW_TRACE_OUT")
    index = 0
    last: bytes | None = None
    url = f"/v1/kv/{key.lstrip('/')}"
    with httpx.Client(base_url=f"http://{addr}", trust_env=False) as http:
        for _ in range(max_requests):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            params = {"stale": ""}
            if index > 0:
                params["index"] = str(index)
                params["wait"] = f"{int(min(wait, left) * 1000)}ms"
            timeout = httpx.Timeout(10.0, read=wait + wait / 16 + 10.0)
            try:
                resp = http.get(url, params=params, timeout=timeout)
            except httpx.HTTPError as exc:
                print(f"raw_client: {exc}", file=sys.stderr)
                time.sleep(1.0)
                continue
            new_index = int(resp.headers.get("X-Consul-Index", "0"))
            if new_index < index:  # agent restarted: read afresh
                index = 0
                continue
            if new_index == index:
                continue
            index = max(new_index, 1)
            if resp.status_code != 200:  # 404: no key yet, keep blocking
                continue
            value = base64.b64decode(resp.json()[0]["Value"] or b"")
            answered = time.perf_counter()
            if value != last:
                write_atomic(dest, value)
                last = value
                if trace_path:
                    written = time.perf_counter()
                    with open(trace_path, "a") as f:
                        f.write(f"{answered} {written} {value.decode('utf-8', 'replace')}\n")
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
