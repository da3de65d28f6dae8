"""CPU per request of ``ConsulClient.get``, for an A/B of client changes.

Starts a Consul dev agent (``tests/consul_harness.py``), then, in a child process importing
``ctemplate`` from ``--src`` (default: this working tree), sends ``--requests`` sequential
non-blocking GETs of one small KV key and prints the process CPU time and wall time per request
(best of ``--runs``). Use it to see what the client's per-request bookkeeping costs (e.g. the
bound on the whole answer, added for answers that trickle in):

    .venv/bin/python bench/request_cost.py
    .venv/bin/python bench/request_cost.py --src /tmp/base   # a copy of another version
"""

from __future__ import annotations

import argparse
import json
import subprocess

from _common import REPO, add_tests_to_path, python

_CHILD = r"""
import asyncio, json, sys, time
from ctemplate.config import ConsulConfig
from ctemplate.consul.client import ConsulClient

async def main(addr: str, n: int, runs: int) -> None:
    client = ConsulClient(ConsulConfig(address=addr), max_connections=4)
    for _ in range(50):  # warm up: connection, imports, caches
        await client.get("/v1/kv/bench/k")
    best_cpu = best_wall = float("inf")
    for _ in range(runs):
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            await client.get("/v1/kv/bench/k")
        best_cpu = min(best_cpu, (time.process_time() - c0) / n)
        best_wall = min(best_wall, (time.perf_counter() - w0) / n)
    await client.aclose()
    print(json.dumps({"cpu_us": best_cpu * 1e6, "wall_us": best_wall * 1e6}))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", default=str(REPO), help="directory holding ctemplate/")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    add_tests_to_path()
    from consul_harness import ConsulAgent, find_consul

    with ConsulAgent(find_consul()) as agent:
        agent.put_kv("bench/k", "v")
        out = subprocess.run(
            [python(), "-P", "-c", _CHILD, agent.http_addr, str(args.requests), str(args.runs)],
            # -P: the working directory (this checkout) must not come before --src on sys.path.
            env={"PYTHONPATH": args.src, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
    result = json.loads(out.stdout)
    print(
        f"{args.src}: {result['cpu_us']:.0f} us CPU, {result['wall_us']:.0f} us wall per GET "
        f"(best of {args.runs} x {args.requests})"
    )


if __name__ == "__main__":
    main()
