"""Scenarios from one key to 5,000 instances: ctemplate beside a raw blocking-query client.

For each scenario it starts its own Consul dev agent(s) (``tests/consul_harness.py``, loopback
only), seeds them, and runs side by side, in the same run:

* ctemplate in daemon mode (``ctemplate -consul-addr ... -template t.j2:ct.out -log-level
  err``, default ``consul { max_connections = 32 }``);
* the raw client: ``raw_client.py`` for one key, ``raw_multi.py`` (consul-template's model,
  one blocking loop per dependency) for everything else.

Scenarios (``--scenarios``, comma-separated, default all):

1. ``one-key``: ``{{ key("bench/k") }}``; change: PUT a new value;
2. ``one-service``: ``service("web")`` over 5 instances on catalog-registered external nodes;
   change: flip one instance's check (passing <-> critical);
3. ``keys-1000``: 1,000 ``key`` dependencies in one template (``bench/keys/k0..k999``); change:
   PUT a new value at a random one of them;
4. ``services-300``: ``services()`` -> ``service(name)`` over 300 tagged services of 2
   instances each; change: flip one instance's check of a random service;
5. ``instances-5000``: ``service("big")`` with 5,000 instances (500 external nodes of 10
   instances); change: flip one instance's check.

Passes per scenario (see ``bench/README.md`` and ``docs/performance.md`` for the method):

* **limit** (3, 4): the raw client alone against the agent ctemplate uses (default
  ``limits.http_max_conns_per_client`` = 200), from its own source address 127.0.0.2, for
  ``--limit-seconds``: peak connections, errors, whether it ever rendered, and whether a
  neighbour on the same address still gets an answer;
* **latency**: both sides started; first render; ``--idle`` seconds idle (CPU, RSS); then
  changes, each measured from the write returning to the file showing it (inotify), both
  sides; CPU per change (utime+stime from /proc), peak connections (sampled from /proc).
  In 3 and 4 the raw client needs 1,000 / 301 connections, so it runs against a *second*
  agent started with ``limits { http_max_conns_per_client = 4096 }``; every change is written
  to both agents (order alternating) and each side's latency counts from its own agent's
  write. ctemplate always runs against the agent with the default limit;
* **traffic**: the same, fewer changes, each side through its own counting proxy
  (``_proxy.py``): requests and bytes per direction per change, connections through it;
* **once** (3, 4, 5): wall time of ``ctemplate -once`` and ``raw_multi.py --once`` (median of
  ``--once-runs``), peak connections during the run.

    .venv/bin/python bench/scenarios.py                    # everything, ~7 minutes
    .venv/bin/python bench/scenarios.py --quick            # shorter windows, ~3 minutes
    .venv/bin/python bench/scenarios.py --scenarios one-key,keys-1000 --json /tmp/s.json
    .venv/bin/python bench/scenarios.py --scenarios instances-5000 --profile   # cProfile

Prints one table (scenario x metric, ctemplate vs raw) and PASS/FAIL per target; the exit
status only says whether the benchmark itself ran.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import pstats
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _common import (
    BENCH,
    Check,
    Observer,
    PeakSampler,
    Summary,
    add_tests_to_path,
    child_env,
    consul_version,
    cpu_seconds,
    ctemplate_command,
    die_with_parent,
    python,
    raise_nofile,
    read_text,
    rss_kib,
)
from _proxy import Counters, CountingProxy

MAX_CONNECTIONS = 32  # ctemplate's default consul.max_connections: the target's bound
# http_max_conns_per_client of the raw client's second agent. Generous on purpose: a client that
# exits leaves its long polls counted by the agent until their wait ends (Consul 1.8 does not
# stop a blocking query when its client goes away), so each raw run of 1,000 loops keeps
# ~1,000 connections counted for up to a minute after it stopped.
RAISED_LIMIT = 16384
RSS_TARGET_MIB = 50.0
IDLE_CPU_TARGET = 1.0  # percent
LATENCY_RATIO_TARGET = 2.0
TXN_OPS = 64  # Consul's limit per /v1/txn


# --- scenarios -------------------------------------------------------------------------------


@dataclass
class Change:
    apply: Callable[[Any], None]  # (agent) -> None
    check: Check  # the destination file shows the change


def _has_line(line: str) -> Check:
    needle = "\n" + line

    def check(text: str | None) -> bool:
        return text is not None and needle in "\n" + text

    return check


def _lacks_line(line: str) -> Check:
    needle = "\n" + line

    def check(text: str | None) -> bool:
        return text is not None and needle not in "\n" + text

    return check


def _register_all(agent: Any, bodies: list[dict[str, Any]], threads: int = 8) -> None:
    """``/v1/catalog/register`` every body, ``threads`` at a time (Raft batches them)."""
    clients = [httpx.Client(base_url=agent.url, timeout=30.0) for _ in range(threads)]
    try:

        def send(i: int) -> None:
            r = clients[i % threads].put("/v1/catalog/register", json=bodies[i])
            if r.status_code != 200 or r.json() is not True:
                raise RuntimeError(f"catalog register: {r.status_code} {r.text[:200]}")

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(send, range(len(bodies))))
    finally:
        for c in clients:
            c.close()


@dataclass
class Instance:
    service: str
    sid: str
    node: str
    address: str
    port: int
    passing: bool = True

    def body(self, tags: list[str]) -> dict[str, Any]:
        return {
            "Node": self.node,
            "Address": self.address,
            "Service": {"Service": self.service, "ID": self.sid, "Port": self.port, "Tags": tags},
            "Checks": [
                {
                    "Node": self.node,
                    "CheckID": f"{self.sid}-check",
                    "Name": "http",
                    "Status": "passing",
                    "ServiceID": self.sid,
                }
            ],
        }

    def flip(self) -> Callable[[Any], None]:
        self.passing = not self.passing
        status = "passing" if self.passing else "critical"

        def apply(agent: Any) -> None:
            agent.set_external_check(
                self.node, self.address, f"{self.sid}-check", status, service_id=self.sid
            )

        return apply


class Scenario:
    name = ""
    title = ""
    multi = False  # the raw client needs more connections than the agent allows a client
    once = False  # time -once
    changes = 100
    quick_changes = 30
    idle = 5.0
    quick_idle = 2.0
    template = ""

    def seed(self, agent: Any) -> None:
        raise NotImplementedError

    def raw_argv(self, addr: str, dest: Path) -> list[str]:
        raise NotImplementedError

    def next_change(self, i: int, rng: random.Random) -> Change:
        raise NotImplementedError


class OneKey(Scenario):
    name = "one-key"
    title = "1. one key"
    template = '{{ key("bench/k") }}'

    def seed(self, agent: Any) -> None:
        agent.put_kv("bench/k", "v0-initial")

    def raw_argv(self, addr: str, dest: Path) -> list[str]:
        return [
            python(),
            str(BENCH / "raw_client.py"),
            "--addr",
            addr,
            "--key",
            "bench/k",
            "--dest",
            str(dest),
        ]

    def next_change(self, i: int, rng: random.Random) -> Change:
        value = f"v{i + 1}-{rng.getrandbits(32):08x}"

        def equal(text: str | None) -> bool:
            return text == value

        return Change(lambda agent: agent.put_kv("bench/k", value), equal)


class ServiceScenario(Scenario):
    """Instances of services on external nodes; a change flips one instance's check."""

    tags = ["bench"]
    instances: list[Instance]

    def seed(self, agent: Any) -> None:
        _register_all(agent, [inst.body(self.tags) for inst in self.instances])

    def line(self, inst: Instance) -> str:
        return f"{inst.node} {inst.address}:{inst.port}\n"

    def pick(self, rng: random.Random) -> Instance:
        return rng.choice(self.instances)

    def next_change(self, i: int, rng: random.Random) -> Change:
        inst = self.pick(rng)
        apply = inst.flip()
        line = self.line(inst)
        return Change(apply, _has_line(line) if inst.passing else _lacks_line(line))


class OneService(ServiceScenario):
    name = "one-service"
    title = "2. one service (5 instances)"
    template = '{% for s in service("web") %}\n{{ s.Node }} {{ s.Address }}:{{ s.Port }}\n'
    template += "{% endfor %}\n"

    def __init__(self) -> None:
        self.instances = [
            Instance("web", f"web-{j}", f"web-node{j}", f"10.0.0.{10 + j}", 8000 + j)
            for j in range(5)
        ]

    def raw_argv(self, addr: str, dest: Path) -> list[str]:
        return _raw_multi(addr, dest, "--mode", "service", "--service", "web")


class Keys(Scenario):
    name = "keys-1000"
    title = "3. 1,000 keys, one template"
    multi = True
    once = True
    changes = 60
    quick_changes = 20
    idle = 60.0
    quick_idle = 10.0
    count = 1000
    prefix = "bench/keys/k"
    template = (
        "{% for i in range(" + str(count) + ") %}\n"
        "{{ i }}={{ key('" + prefix + "' ~ i) }}\n"
        "{% endfor %}\n"
    )

    def seed(self, agent: Any) -> None:
        ops = [
            {
                "KV": {
                    "Verb": "set",
                    "Key": f"{self.prefix}{i}",
                    "Value": base64.b64encode(f"v0-{i}".encode()).decode(),
                }
            }
            for i in range(self.count)
        ]
        for start in range(0, len(ops), TXN_OPS):
            agent.txn(ops[start : start + TXN_OPS])

    def raw_argv(self, addr: str, dest: Path) -> list[str]:
        return [
            *_raw_multi(addr, dest, "--mode", "keys", "--prefix", self.prefix),
            "--count",
            str(self.count),
        ]

    def next_change(self, i: int, rng: random.Random) -> Change:
        k = rng.randrange(self.count)
        value = f"c{i + 1}-{rng.getrandbits(32):08x}"
        key = f"{self.prefix}{k}"
        return Change(lambda agent: agent.put_kv(key, value), _has_line(f"{k}={value}\n"))


class Services(ServiceScenario):
    name = "services-300"
    title = "4. services() -> service(name), 300 services"
    multi = True
    once = True
    changes = 60
    quick_changes = 20
    idle = 60.0
    quick_idle = 10.0
    count = 300
    per_service = 2
    nodes = 30
    template = (
        "{% for s in services() if 'bench' in s.Tags %}\n"
        "{% for i in service(s.Name) %}\n"
        "{{ s.Name }} {{ i.Node }} {{ i.Address }}:{{ i.Port }}\n"
        "{% endfor %}\n"
        "{% endfor %}\n"
    )

    def __init__(self) -> None:
        self.instances = []
        for i in range(self.count):
            for j in range(self.per_service):
                n = (i * self.per_service + j) % self.nodes
                self.instances.append(
                    Instance(
                        f"svc-{i:03d}",
                        f"svc-{i:03d}-{j}",
                        f"sn{n:02d}",
                        f"10.2.0.{n + 1}",
                        20000 + i * 10 + j,
                    )
                )

    def line(self, inst: Instance) -> str:
        return f"{inst.service} {inst.node} {inst.address}:{inst.port}\n"

    def pick(self, rng: random.Random) -> Instance:
        i = rng.randrange(self.count)  # a random service, then one of its instances
        return self.instances[i * self.per_service + rng.randrange(self.per_service)]

    def raw_argv(self, addr: str, dest: Path) -> list[str]:
        return _raw_multi(addr, dest, "--mode", "services", "--tag", "bench")


class Instances(ServiceScenario):
    name = "instances-5000"
    title = "5. one service, 5,000 instances"
    once = True
    changes = 30
    quick_changes = 10
    count = 5000
    per_node = 10
    template = '{% for s in service("big") %}\n{{ s.Node }} {{ s.Address }}:{{ s.Port }}\n'
    template += "{% endfor %}\n"

    def __init__(self) -> None:
        self.instances = []
        for j in range(self.count):
            n = j // self.per_node
            address = f"10.3.{n // 250}.{n % 250 + 1}"
            self.instances.append(Instance("big", f"big-{j}", f"bn{n:03d}", address, 10000 + j))

    def raw_argv(self, addr: str, dest: Path) -> list[str]:
        return _raw_multi(addr, dest, "--mode", "service", "--service", "big")


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "one-key": OneKey,
    "one-service": OneService,
    "keys-1000": Keys,
    "services-300": Services,
    "instances-5000": Instances,
}


def _raw_multi(addr: str, dest: Path, *args: str) -> list[str]:
    return [python(), str(BENCH / "raw_multi.py"), "--addr", addr, "--dest", str(dest), *args]


# --- processes -------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0

    def start(self) -> Proc:
        with open(self.log, "ab") as log:
            self.started = time.perf_counter()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                preexec_fn=die_with_parent,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join((read_text(self.log) or "").splitlines()[-lines:])


@contextlib.contextmanager
def running(*procs: Proc) -> Iterator[None]:
    try:
        for p in procs:
            p.start()
        yield
    finally:
        for p in procs:
            p.stop()


# --- the passes ------------------------------------------------------------------------------


@dataclass
class Env:
    """Everything a scenario's passes share."""

    args: argparse.Namespace
    sc: Scenario
    tmp: Path
    agent: Any  # the agent ctemplate uses (default limits)
    raw_agent: Any  # the agent the raw client uses (a second one with a raised limit, or agent)
    rng: random.Random
    counter: int = 0  # changes made so far (values stay unique across passes)
    order: int = 0
    profile: Path | None = None
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def agents(self) -> list[Any]:
        return [self.agent] if self.raw_agent is self.agent else [self.agent, self.raw_agent]


def _ct_argv(e: Env, addr: str, tmpl: Path, dest: Path, *extra: str) -> list[str]:
    flags = ["-consul-addr", addr, "-template", f"{tmpl}:{dest}", "-log-level", "err", *extra]
    if e.profile is not None and "-once" not in extra:
        return [python(), str(BENCH / "ctemplate_profiled.py"), *flags]
    return [*ctemplate_command(), *flags]


def _exists(text: str | None) -> bool:
    return text is not None


def _apply(e: Env, change: Change) -> dict[str, float]:
    """Write one change to every agent (order alternating); perf_counter() after each write,
    by side."""
    agents = e.agents
    if e.order % 2:
        agents = agents[::-1]
    e.order += 1
    done: dict[int, float] = {}
    for a in agents:
        change.apply(a)
        done[id(a)] = time.perf_counter()
    return {"ctemplate": done[id(e.agent)], "raw": done[id(e.raw_agent)]}


def _changes(
    e: Env, procs: dict[str, Proc], files: dict[str, Path], observer: Observer, n: int
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Make ``n`` changes, waiting for both files after each; latencies by side (seconds)."""
    a = e.args
    lat: dict[str, list[float]] = {s: [] for s in files}
    missed = dict.fromkeys(files, 0)
    for _ in range(n):
        change = e.sc.next_change(e.counter, e.rng)
        e.counter += 1
        written = _apply(e, change)
        seen = observer.wait_for({s: (p, change.check) for s, p in files.items()}, a.timeout)
        for side in files:
            if side in seen:
                lat[side].append(max(seen[side] - written[side], 0.0))
            else:
                missed[side] += 1
        for p in procs.values():
            if not p.alive():
                raise RuntimeError(f"{p.name} exited; log:\n{p.log_tail()}")
        time.sleep(e.rng.uniform(a.gap_min, a.gap_max))
    return lat, missed


def _first_render(
    procs: dict[str, Proc], files: dict[str, Path], observer: Observer, timeout: float
) -> dict[str, float]:
    seen = observer.wait_for({s: (p, _exists) for s, p in files.items()}, timeout)
    for side, p in procs.items():
        if side not in seen:
            raise RuntimeError(
                f"{side} did not write {files[side]} within {timeout}s (alive: {p.alive()}); "
                f"log:\n{p.log_tail()}"
            )
    return {s: seen[s] - procs[s].started for s in procs}


def latency_pass(e: Env) -> dict[str, Any]:
    a, sc = e.args, e.sc
    out = e.tmp / "latency"
    out.mkdir()
    tmpl = e.tmp / "t.j2"
    files = {"ctemplate": out / "ct.out", "raw": out / "raw.out"}
    extra = {"CTEMPLATE_PROFILE_OUT": str(e.profile)} if e.profile else None
    env = child_env(extra)
    procs = {
        "ctemplate": Proc(
            "ctemplate",
            _ct_argv(e, e.agent.http_addr, tmpl, files["ctemplate"]),
            e.tmp / "ct-latency.log",
            env,
        ),
        "raw": Proc(
            "raw", sc.raw_argv(e.raw_agent.http_addr, files["raw"]), e.tmp / "raw-latency.log", env
        ),
    }
    ports = {"ctemplate": e.agent.http_port, "raw": e.raw_agent.http_port}
    observer = Observer(out, a.watch)
    samplers: dict[str, PeakSampler] = {}
    r: dict[str, Any] = {}
    try:
        with running(*procs.values()):
            samplers = {s: PeakSampler(p.pid, ports[s], 0.1).start() for s, p in procs.items()}
            r["first_render_s"] = _first_render(procs, files, observer, a.start_timeout)
            time.sleep(1.0)  # let start-up settle (lazy imports, GC, the last passes)
            texts = {s: read_text(p) for s, p in files.items()}
            r["same_output"] = texts["ctemplate"] == texts["raw"]
            r["output_bytes"] = len(texts["ctemplate"] or "")
            r["rss_start_kib"] = {s: rss_kib(p.pid) for s, p in procs.items()}
            # Changes first, then the idle window: the changes then end well before the first
            # long polls reach their 60 s wait (1,000 raw loops re-polling inside the changes
            # would be counted as CPU per change), and a window of a minute after them holds
            # exactly one round of wait expiries, as any minute of a daemon's idle life does.
            _changes(e, procs, files, observer, a.warmup)
            n = (
                a.changes
                if a.changes is not None
                else (sc.quick_changes if a.quick else sc.changes)
            )
            cpu1 = {s: cpu_seconds(p.pid) for s, p in procs.items()}
            agent_cpu1 = {id(x): cpu_seconds(x.pid) for x in e.agents}
            if e.profile is not None:
                procs["ctemplate"].signal(signal.SIGUSR1)
            t1 = time.perf_counter()
            lat, missed = _changes(e, procs, files, observer, n)
            r["run_s"] = time.perf_counter() - t1
            if e.profile is not None:
                procs["ctemplate"].signal(signal.SIGUSR2)
            r["changes"] = n
            r["cpu_ms_per_change"] = {
                s: (cpu_seconds(p.pid) - cpu1[s]) / n * 1000 for s, p in procs.items()
            }
            r["agent_cpu_ms_per_change"] = [
                (cpu_seconds(x.pid) - agent_cpu1[id(x)]) / n * 1000 for x in e.agents
            ]
            r["rss_end_kib"] = {s: rss_kib(p.pid) for s, p in procs.items()}
            r["latency_ms"] = {s: [round(x * 1000, 3) for x in v] for s, v in lat.items()}
            r["missed"] = missed
            time.sleep(1.0)  # the last change's write and next request
            idle = sc.quick_idle if a.quick else sc.idle
            idle = a.idle if a.idle is not None else idle
            cpu0 = {s: cpu_seconds(p.pid) for s, p in procs.items()}
            t0 = time.perf_counter()
            time.sleep(idle)
            span = time.perf_counter() - t0
            r["idle_s"] = span
            r["idle_cpu_pct"] = {
                s: (cpu_seconds(p.pid) - cpu0[s]) / span * 100 for s, p in procs.items()
            }
            r["rss_idle_kib"] = {s: rss_kib(p.pid) for s, p in procs.items()}
    finally:
        observer.close()
        r["peak_connections"] = {s: smp.stop() for s, smp in samplers.items()}
    return r


def traffic_pass(e: Env) -> dict[str, Any]:
    a, sc = e.args, e.sc
    out = e.tmp / "traffic"
    out.mkdir()
    tmpl = e.tmp / "t.j2"
    files = {"ctemplate": out / "ct.out", "raw": out / "raw.out"}
    proxies = {
        "ctemplate": CountingProxy(e.agent.http_addr),
        "raw": CountingProxy(e.raw_agent.http_addr),
    }
    for p in proxies.values():
        p.start()
    env = child_env()
    saved_profile, e.profile = e.profile, None
    procs = {
        "ctemplate": Proc(
            "ctemplate",
            _ct_argv(e, proxies["ctemplate"].addr, tmpl, files["ctemplate"]),
            e.tmp / "ct-traffic.log",
            env,
        ),
        "raw": Proc(
            "raw", sc.raw_argv(proxies["raw"].addr, files["raw"]), e.tmp / "raw-traffic.log", env
        ),
    }
    e.profile = saved_profile
    observer = Observer(out, a.watch)
    r: dict[str, Any] = {}
    try:
        with running(*procs.values()):
            _first_render(procs, files, observer, a.start_timeout)
            time.sleep(1.0)
            r["startup"] = {s: _counters(p.snapshot(), 1) for s, p in proxies.items()}
            n = a.traffic_changes if a.traffic_changes is not None else (10 if a.quick else 20)
            before = {s: p.snapshot() for s, p in proxies.items()}
            for p in proxies.values():
                p.reset_peak()
            _lat, missed = _changes(e, procs, files, observer, n)
            time.sleep(0.5)  # the requests that follow the last change
            after = {s: p.snapshot() for s, p in proxies.items()}
            r["changes"] = n
            r["missed"] = missed
            r["per_change"] = {s: _counters(after[s] - before[s], n) for s in proxies}
            r["proxy_peak_connections"] = {s: after[s].peak for s in proxies}
    finally:
        observer.close()
        for p in proxies.values():
            p.stop()
    return r


def _counters(c: Counters, n: int) -> dict[str, float]:
    return {
        "requests": c.requests / n,
        "bytes_up": c.bytes_up / n,
        "bytes_down": c.bytes_down / n,
        "connections": c.connections / n,
    }


def once_pass(e: Env) -> dict[str, Any]:
    a, sc = e.args, e.sc
    out = e.tmp / "once"
    out.mkdir()
    tmpl = e.tmp / "t.j2"
    env = child_env()
    runs = a.once_runs if a.once_runs is not None else (2 if a.quick else 5)
    r: dict[str, Any] = {"runs": runs}
    saved_profile, e.profile = e.profile, None
    try:
        argvs = {
            "ctemplate": _ct_argv(e, e.agent.http_addr, tmpl, out / "ct.out", "-once"),
            "raw": [*sc.raw_argv(e.raw_agent.http_addr, out / "raw.out"), "--once"],
        }
    finally:
        e.profile = saved_profile
    ports = {"ctemplate": e.agent.http_port, "raw": e.raw_agent.http_port}
    dests = {"ctemplate": out / "ct.out", "raw": out / "raw.out"}
    for side, argv in argvs.items():
        walls: list[float] = []
        peak = 0
        codes: list[int | None] = []
        for i in range(runs + 1):  # the first run warms the page cache; not counted
            dests[side].unlink(missing_ok=True)
            p = Proc(side, argv, e.tmp / f"{side}-once.log", env).start()
            sampler = PeakSampler(p.pid, ports[side], 0.01).start()
            assert p.proc is not None
            try:
                code = p.proc.wait(a.start_timeout)
            except subprocess.TimeoutExpired:
                code = None
            wall = time.perf_counter() - p.started
            p.stop()
            peak = max(peak, sampler.stop())
            if i > 0:
                walls.append(wall)
                codes.append(code)
        r[side] = {
            "wall_s": walls,
            "median_s": statistics.median(walls),
            "exit_codes": codes,
            "peak_connections": peak,
            "written": read_text(dests[side]) is not None,
        }
    ct_text, raw_text = read_text(dests["ctemplate"]), read_text(dests["raw"])
    r["same_output"] = ct_text is not None and ct_text == raw_text
    # One more, untimed, run per side through a counting proxy: connections, requests and bytes
    # of a whole -once run (a run is too short for /proc sampling to be sure to see it); for
    # ctemplate at debug level, to see how it planned its watches.
    upstream = {"ctemplate": e.agent.http_addr, "raw": e.raw_agent.http_addr}
    for side in ("ctemplate", "raw"):
        with CountingProxy(upstream[side]) as proxy:
            if side == "ctemplate":
                argv = _ct_argv(e, proxy.addr, tmpl, dests[side], "-once", "-log-level", "debug")
            else:
                argv = [*sc.raw_argv(proxy.addr, dests[side]), "--once"]
            p = Proc(side, argv, e.tmp / f"{side}-once-proxy.log", env).start()
            assert p.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.proc.wait(a.start_timeout)
            p.stop()
            time.sleep(0.2)
            c = proxy.snapshot()
        r[side]["proxy"] = {
            "requests": c.requests,
            "bytes_up": c.bytes_up,
            "bytes_down": c.bytes_down,
            "connections": c.connections,
            "peak": c.peak,
        }
        r[side]["peak_connections"] = max(r[side]["peak_connections"], c.peak)
    log = read_text(e.tmp / "ctemplate-once-proxy.log") or ""
    plans = [ln for ln in log.splitlines() if " dedicated, " in ln]
    r["plan"] = plans[-1].split("] ", 1)[-1] if plans else "?"
    return r


def limit_pass(e: Env) -> dict[str, Any]:
    """The raw client against the agent with the default per-client limit, bounded in time."""
    a, sc = e.args, e.sc
    out = e.tmp / "limit"
    out.mkdir()
    seconds = a.limit_seconds if a.limit_seconds is not None else (8.0 if a.quick else 20.0)
    stats = e.tmp / "raw-limit-stats.json"
    argv = [
        *sc.raw_argv(e.agent.http_addr, out / "raw.out"),
        "--source-addr",
        a.raw_source,
        "--stats",
        str(stats),
        "--max-seconds",
        str(seconds + 30),
    ]
    p = Proc("raw", argv, e.tmp / "raw-limit.log", child_env())
    r: dict[str, Any] = {"seconds": seconds, "source": a.raw_source}
    with running(p):
        sampler = PeakSampler(p.pid, e.agent.http_port, 0.1).start()
        cpu0 = cpu_seconds(p.pid)
        time.sleep(seconds)
        r["cpu_pct"] = (cpu_seconds(p.pid) - cpu0) / seconds * 100
        r["neighbour_same_address"] = _probe(e.agent.url, a.raw_source)
        r["neighbour_other_address"] = _probe(e.agent.url, "127.0.0.1")
        r["peak_connections"] = sampler.stop()
    r["rendered"] = (out / "raw.out").exists()
    try:
        r["stats"] = json.loads(read_text(stats) or "{}")
    except ValueError:
        r["stats"] = {}
    return r


def _probe(url: str, source: str) -> str:
    """One GET /v1/status/leader from ``source``: "ok (N ms)" or what went wrong."""
    transport = httpx.HTTPTransport(local_address=source, retries=0)
    t0 = time.perf_counter()
    try:
        with httpx.Client(transport=transport, timeout=3.0, trust_env=False) as c:
            resp = c.get(url + "/v1/status/leader")
        took = (time.perf_counter() - t0) * 1000
        return f"HTTP {resp.status_code} in {took:.0f} ms"
    except httpx.HTTPError as exc:
        return f"failed: {type(exc).__name__}: {exc}"[:120]


# --- one scenario ----------------------------------------------------------------------------


def run_scenario(args: argparse.Namespace, sc: Scenario) -> dict[str, Any]:
    add_tests_to_path()
    from consul_harness import ConsulAgent, find_consul

    binary = find_consul()
    t0 = time.perf_counter()
    agent = ConsulAgent(binary, log_level="warn")
    raw_agent = agent
    agents = [agent]
    if sc.multi:
        raised = f"limits {{ http_max_conns_per_client = {RAISED_LIMIT} }}"
        raw_agent = ConsulAgent(binary, log_level="warn", extra_args=["-hcl", raised])
        agents.append(raw_agent)
    result: dict[str, Any] = {"name": sc.name, "title": sc.title}
    try:
        for x in agents:
            x.start()
        t1 = time.perf_counter()
        for x in agents:
            sc.seed(x)
        result["seed_s"] = time.perf_counter() - t1
        with tempfile.TemporaryDirectory(prefix=f"ctemplate-{sc.name}-") as tmp_name:
            tmp = Path(tmp_name)
            (tmp / "t.j2").write_text(sc.template)
            profile = tmp / "ct.prof" if args.profile else None
            e = Env(args, sc, tmp, agent, raw_agent, random.Random(args.seed), profile=profile)
            if sc.multi and not args.no_limit_pass:
                _say(f"{sc.name}: limit pass (raw client, agent's default limit)")
                result["limit"] = limit_pass(e)
            _say(f"{sc.name}: latency pass")
            result["latency"] = latency_pass(e)
            if profile is not None and profile.exists():
                result["profile"] = _profile_summary(profile, args.profile_top)
                if args.profile_out:
                    args.profile_out.mkdir(parents=True, exist_ok=True)
                    (args.profile_out / f"{sc.name}.prof").write_bytes(profile.read_bytes())
            if not args.no_traffic:
                _say(f"{sc.name}: traffic pass")
                result["traffic"] = traffic_pass(e)
            if sc.once and not args.no_once:
                _say(f"{sc.name}: -once runs")
                result["once"] = once_pass(e)
            result["agent_is_shared"] = raw_agent is agent
    finally:
        for x in agents:
            x.close()
    result["seconds"] = time.perf_counter() - t0
    return result


def _profile_summary(path: Path, top: int) -> list[str]:
    import io

    buf = io.StringIO()
    st = pstats.Stats(str(path), stream=buf)
    st.strip_dirs().sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    return buf.getvalue().splitlines()


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- report ----------------------------------------------------------------------------------


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def _kib(b: float) -> str:
    return f"{b / 1024:.1f}" if b >= 1024 else f"{b / 1024:.2f}"


def rows(res: dict[str, Any]) -> list[list[str]]:
    """One row per scenario and side."""
    out: list[list[str]] = []
    lat = res.get("latency", {})
    tr = res.get("traffic", {})
    once = res.get("once", {})
    for side in ("ctemplate", "raw"):
        s = Summary.of([x / 1000 for x in lat.get("latency_ms", {}).get(side, [])])
        per = tr.get("per_change", {}).get(side, {})
        peak = lat.get("peak_connections", {}).get(side, 0)
        if side in once:
            peak = max(peak, once[side]["peak_connections"])
        out.append(
            [
                res["name"] if side == "ctemplate" else "",
                side,
                f"{s.p50 * 1000:.2f}",
                f"{s.p95 * 1000:.2f}",
                str(lat.get("missed", {}).get(side, "")),
                f"{lat.get('cpu_ms_per_change', {}).get(side, float('nan')):.2f}",
                f"{lat.get('idle_cpu_pct', {}).get(side, float('nan')):.2f}",
                _mib(lat.get("rss_idle_kib", {}).get(side, 0)),
                f"{per.get('requests', float('nan')):.2f}",
                _kib(per.get("bytes_up", 0)),
                _kib(per.get("bytes_down", 0)),
                str(peak),
                f"{once[side]['median_s']:.2f}" if side in once else "-",
            ]
        )
    return out


HEADER = [
    "scenario",
    "side",
    "p50 ms",
    "p95 ms",
    "missed",
    "CPU ms/chg",
    "idle CPU %",
    "RSS MiB",
    "req/chg",
    "KiB up/chg",
    "KiB down/chg",
    "peak conns",
    "-once s",
]


def table(results: list[dict[str, Any]], markdown: bool = False) -> str:
    body = [r for res in results for r in rows(res)]
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(HEADER)]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*HEADER)] + [fmt.format(*r) for r in body])


def details(res: dict[str, Any]) -> list[str]:
    lines = [f"{res['title']}  ({res['seconds']:.0f} s, seeding {res['seed_s']:.1f} s)"]
    lat = res.get("latency")
    if lat:
        agents = (
            "same agent"
            if res.get("agent_is_shared")
            else (
                f"raw client on a second agent with http_max_conns_per_client={RAISED_LIMIT}, "
                "ctemplate on the default (200)"
            )
        )
        fr = lat["first_render_s"]
        lines.append(
            f"  {agents}; first render ctemplate {fr['ctemplate']:.2f} s, raw {fr['raw']:.2f} s;"
            f" identical output: {'yes' if lat['same_output'] else 'NO'} ({lat['output_bytes']}"
            f" bytes); idle window {lat['idle_s']:.0f} s; {lat['changes']} changes in "
            f"{lat['run_s']:.0f} s"
        )
        ratio = _ratio(res)
        agent_cpu = ", ".join(f"{x:.2f}" for x in lat["agent_cpu_ms_per_change"])
        rss = "; ".join(
            f"{side} {_mib(lat['rss_start_kib'][side])} / {_mib(lat['rss_end_kib'][side])} / "
            f"{_mib(lat['rss_idle_kib'][side])}"
            for side in ("ctemplate", "raw")
        )
        lines.append(
            f"  p50 ratio ctemplate/raw {ratio:.2f}x; consul agent(s) CPU ms/change: {agent_cpu};"
            f" RSS MiB after first render / after the changes / after the idle window: {rss}"
        )
    tr = res.get("traffic")
    if tr:
        su = tr["startup"]
        lines.append(
            "  start-up traffic (to first render + 1 s): "
            + "; ".join(
                f"{s} {su[s]['requests']:.0f} requests, {_kib(su[s]['bytes_up'])} KiB up, "
                f"{_kib(su[s]['bytes_down'])} KiB down"
                for s in su
            )
            + "; new connections per change: ctemplate "
            f"{tr['per_change']['ctemplate']['connections']:.2f}, "
            f"raw {tr['per_change']['raw']['connections']:.2f}"
        )
    once = res.get("once")
    if once:
        ct1 = once["ctemplate"]
        lines.append(
            f"  -once ({once['runs']} runs): ctemplate median {ct1['median_s']:.2f} s"
            f" (exit {ct1['exit_codes']}, peak {ct1['peak_connections']}"
            f" conns), raw median {once['raw']['median_s']:.2f} s (exit "
            f"{once['raw']['exit_codes']}, peak {once['raw']['peak_connections']} conns); "
            f"identical output: {'yes' if once['same_output'] else 'NO'}"
        )
        lines.append(
            "  one -once run through the counting proxy: "
            + "; ".join(
                f"{side} {once[side]['proxy']['requests']} requests, "
                f"{once[side]['proxy']['connections']} connections (peak "
                f"{once[side]['proxy']['peak']}), {_kib(once[side]['proxy']['bytes_up'])} KiB up,"
                f" {_kib(once[side]['proxy']['bytes_down'])} KiB down"
                for side in ("ctemplate", "raw")
            )
        )
        lines.append(f"  ctemplate's plan: {once['plan']}")
    lim = res.get("limit")
    if lim:
        st = lim.get("stats", {})
        lines.append(
            f"  raw client vs the default agent limit, {lim['seconds']:.0f} s from "
            f"{lim['source']}: peak {lim['peak_connections']} connections, "
            f"{st.get('have_data', '?')}/{st.get('loops', '?')} dependencies answered, "
            f"rendered: {'yes' if lim['rendered'] else 'NO'}, {st.get('requests', '?')} requests,"
            f" errors {st.get('errors', {})}, CPU {lim['cpu_pct']:.0f}%"
        )
        lines.append(
            f"  meanwhile a neighbour on {lim['source']}: {lim['neighbour_same_address']}; "
            f"on 127.0.0.1: {lim['neighbour_other_address']}"
        )
    prof = res.get("profile")
    if prof:
        lines.append("  cProfile of ctemplate's main thread over the measured changes:")
        lines += ["    " + ln for ln in prof if ln.strip()]
    return lines


def _ratio(res: dict[str, Any]) -> float:
    lat = res.get("latency", {}).get("latency_ms", {})
    ct, raw = lat.get("ctemplate", []), lat.get("raw", [])
    if not ct or not raw:
        return float("nan")
    return float(statistics.median(ct) / statistics.median(raw))


def targets(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    out: list[str] = []

    def verdict(name: str, ok: bool | None, why: str) -> None:
        word = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        out.append(f"{word}  {name}: {why}")

    for key in ("keys-1000", "services-300"):
        res = results.get(key)
        if res is None:
            verdict(f"{key} within {MAX_CONNECTIONS} connections", None, "not run")
            continue
        lat, once = res.get("latency", {}), res.get("once", {})
        ct_once = once.get("ctemplate", {})
        once_ok = bool(ct_once) and all(c == 0 for c in ct_once["exit_codes"])
        once_ok = once_ok and ct_once.get("written", False)
        reacts = lat.get("missed", {}).get("ctemplate", 1) == 0 and lat.get("changes", 0) > 0
        peak = max(
            lat.get("peak_connections", {}).get("ctemplate", 0), ct_once.get("peak_connections", 0)
        )
        verdict(
            f"{key}: renders with -once, reacts in daemon mode, never above {MAX_CONNECTIONS}"
            " connections",
            once_ok and reacts and 0 < peak <= MAX_CONNECTIONS,
            f"-once exit codes {ct_once.get('exit_codes')}, daemon missed "
            f"{lat.get('missed', {}).get('ctemplate')}/{lat.get('changes')} changes, peak "
            f"{peak} connections (daemon and -once)",
        )
    res = results.get("one-key")
    if res is None:
        verdict("one-key p50 within 2x of raw", None, "not run")
    else:
        ratio = _ratio(res)
        verdict(
            f"one-key change-to-file p50 within {LATENCY_RATIO_TARGET:g}x of the raw client",
            ratio <= LATENCY_RATIO_TARGET,
            f"{ratio:.2f}x in the same run",
        )
    res = results.get("keys-1000")
    if res is None:
        verdict("idle RSS with 1,000 dependencies", None, "not run")
    else:
        rss = res["latency"]["rss_idle_kib"]["ctemplate"] / 1024
        verdict(
            f"idle RSS with 1,000 dependencies <= {RSS_TARGET_MIB:g} MiB",
            rss <= RSS_TARGET_MIB,
            f"{rss:.1f} MiB (end of the run: "
            f"{res['latency']['rss_end_kib']['ctemplate'] / 1024:.1f} MiB)",
        )
    for key in ("keys-1000", "services-300"):
        res = results.get(key)
        if res is None:
            verdict(f"{key} idle CPU", None, "not run")
            continue
        lat = res["latency"]
        pct = lat["idle_cpu_pct"]["ctemplate"]
        window = lat["idle_s"]
        note = "" if window >= 59 else " (shorter than the target's minute: --quick/--idle)"
        verdict(
            f"{key}: idle CPU < {IDLE_CPU_TARGET:g}% over a minute",
            pct < IDLE_CPU_TARGET,
            f"{pct:.2f}% over {window:.0f} s{note}",
        )
    return out


def report(results: list[dict[str, Any]], meta: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"scenarios benchmark  {meta['date']}  ({meta['machine']}; {meta['consul']})",
        f"mode: {'quick' if args.quick else 'full'}"
        + ("  [PROFILED ctemplate: latencies inflated]" if args.profile else "")
        + f"  load average before {meta['load_before']}, after {meta['load_after']}"
        + f"  total {meta['total_s']:.0f} s",
        "",
        table(results),
        "",
        "latency: write returned -> file shows the change; CPU: utime+stime per change; idle CPU"
        " and RSS: over/after the idle window that follows the changes; req and bytes: through "
        "a counting proxy, per change (up = to Consul, as on the wire: Consul gzips answers for "
        "httpx); peak conns: to the agent, daemon and -once",
        "",
    ]
    for res in results:
        lines += details(res)
        lines.append("")
    lines.append("targets:")
    lines += ["  " + t for t in targets({r["name"]: r for r in results}, args)]
    return "\n".join(lines)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="ctemplate vs a raw blocking-query client, by scenario")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    p.add_argument("--quick", action="store_true", help="short idle windows and fewer changes")
    p.add_argument("--changes", type=int, help="measured changes per scenario (default: each's)")
    p.add_argument("--traffic-changes", type=int, help="changes in the traffic pass (20)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured changes first")
    p.add_argument("--idle", type=float, help="idle window, seconds (default 60 for 3-4, 5)")
    p.add_argument("--gap-min", type=float, default=0.15, help="seconds between changes, min")
    p.add_argument("--gap-max", type=float, default=0.25, help="seconds between changes, max")
    p.add_argument("--timeout", type=float, default=15.0, help="per change, seconds")
    p.add_argument("--start-timeout", type=float, default=120.0, help="first render, -once")
    p.add_argument("--once-runs", type=int, help="timed -once runs per side (5)")
    p.add_argument("--limit-seconds", type=float, help="raw client vs the agent limit (20)")
    p.add_argument("--raw-source", default="127.0.0.2", help="raw client's source address")
    p.add_argument("--no-limit-pass", action="store_true")
    p.add_argument("--no-traffic", action="store_true")
    p.add_argument("--no-once", action="store_true")
    p.add_argument("--profile", action="store_true", help="cProfile ctemplate over the changes")
    p.add_argument("--profile-top", type=int, default=25)
    p.add_argument("--profile-out", type=Path, help="keep the .prof files in this directory")
    p.add_argument("--watch", default="inotify", choices=["inotify", "poll"])
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", type=Path, help="also write the results (with samples) here")
    p.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        p.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")
    if args.gap_min < 0 or args.gap_max < args.gap_min:
        p.error("need 0 <= --gap-min <= --gap-max")
    signal.signal(signal.SIGTERM, _terminate)
    raise_nofile()
    add_tests_to_path()
    from consul_harness import find_consul

    t0 = time.perf_counter()
    meta: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}",
        "consul": consul_version(find_consul()),
        "load_before": " ".join((read_text(Path("/proc/loadavg")) or "").split()[:3]),
    }
    results = []
    for name in names:
        _say(f"{name}: starting")
        results.append(run_scenario(args, SCENARIOS[name]()))
    meta["load_after"] = " ".join((read_text(Path("/proc/loadavg")) or "").split()[:3])
    meta["total_s"] = time.perf_counter() - t0
    print(report(results, meta, args))
    if args.markdown:
        print()
        print(table(results, markdown=True))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
