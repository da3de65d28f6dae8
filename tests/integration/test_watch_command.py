"""``ctemplate watch`` against the real ``consul watch`` (the oracle), on a real agent.

Both watch the same thing with the same recording handler (a shell script appending
``CONSUL_INDEX`` and the JSON it read on stdin, one line per run); the same changes are made, one at
a time, each after both have handled the previous one; then the runs are compared one by one
(parsed JSON, so member order does not matter; nothing else is normalised).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from consul_harness import ConsulAgent, find_consul
from ctemplate_proc import COMMAND, run_ctemplate, wait_for
from test_tls import tls_agent as tls_agent  # the TLS agent fixture

RECORDER = """#!/bin/sh
body=$(cat)
printf '%s %s\\n' "$CONSUL_INDEX" "$body" >> "$1"
"""


def read_runs(path: Path, *, sort_tags: bool = False) -> list[tuple[int, Any]]:
    """The runs a recording handler wrote: (CONSUL_INDEX, the JSON it read)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    runs = []
    for line in text.splitlines():
        index, _, body = line.partition(" ")
        data = json.loads(body)
        if sort_tags and isinstance(data, dict):
            data = {name: sorted(tags) for name, tags in data.items()}
        runs.append((int(index), data))
    return runs


class Watch:
    """A watch process (consul's or ctemplate's) whose handler records every run."""

    def __init__(
        self,
        argv: Sequence[str],
        out: Path,
        env: dict[str, str] | None = None,
        sort_tags: bool = False,
    ) -> None:
        self.out = out
        self.sort_tags = sort_tags  # /v1/catalog/services lists tags in no stable order
        self.log = out.with_suffix(".log")
        self._log = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SHELL": "/bin/sh", **(env or {})},
        )

    def runs(self) -> list[tuple[int, Any]]:
        return read_runs(self.out, sort_tags=self.sort_tags)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def recorder(tmp_path: Path) -> Path:
    path = tmp_path / "record.sh"
    path.write_text(RECORDER)
    return path


@pytest.fixture
def watches() -> Iterator[list[Watch]]:
    started: list[Watch] = []
    yield started
    for w in started:
        w.stop()


def start_pair(
    agent: ConsulAgent,
    args: Sequence[str],
    recorder: Path,
    tmp_path: Path,
    watches: list[Watch],
) -> tuple[Watch, Watch]:
    addr = ["-http-addr", agent.http_addr]
    consul = Watch(
        [find_consul(), "watch", *addr, *args, "sh", str(recorder), str(tmp_path / "consul.out")],
        tmp_path / "consul.out",
        sort_tags="services" in args,
    )
    ours = Watch(
        [*COMMAND, "watch", *addr, *args, "sh", str(recorder), str(tmp_path / "ours.out")],
        tmp_path / "ours.out",
    )
    watches.extend([consul, ours])
    return consul, ours


def _distinct(runs: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """Runs without those whose data equals the previous run's after normalisation.

    consul watch skips a new index only when the raw JSON is deeply equal; Consul's order of a
    service's tags is not stable, so the oracle sometimes runs again on the same (sorted) data,
    which ctemplate (sorting tags first) rightly skips."""
    kept: list[tuple[int, Any]] = []
    for index, data in runs:
        if kept and kept[-1][1] == data:
            continue
        kept.append((index, data))
    return kept


def settle(consul: Watch, ours: Watch, at_least: int, what: str) -> None:
    """Wait until both handled ``at_least`` runs and agree, then give a late run time to come."""

    def agreed() -> bool:
        a, b = _distinct(consul.runs()), ours.runs()
        return len(a) >= at_least and a == b

    with contextlib.suppress(AssertionError):  # the comparison below shows the difference
        wait_for(agreed, timeout=20, what=what)
    time.sleep(0.4)
    assert ours.runs() == _distinct(consul.runs()), (
        f"{what}:\nconsul watch: {consul.runs()}\nctemplate:    {ours.runs()}\n"
        f"ctemplate log:\n{ours.log.read_text()}"
    )


def run_sequence(
    consul: Watch, ours: Watch, steps: Sequence[tuple[str, Callable[[], object], int]]
) -> None:
    settle(consul, ours, 1, "the run at start")
    expected = len(consul.runs())
    for what, change, runs in steps:
        change()
        expected += runs
        settle(consul, ours, expected, what)


def test_key(
    consul: ConsulAgent, unique: str, recorder: Path, tmp_path: Path, watches: list[Watch]
) -> None:
    key = f"{unique}/watched"
    c, o = start_pair(consul, ["-type", "key", "-key", key], recorder, tmp_path, watches)
    run_sequence(
        c,
        o,
        [
            ("put v1", lambda: consul.put_kv(key, "v1"), 1),
            ("put v2", lambda: consul.put_kv(key, "v2"), 1),
            ("an unrelated key", lambda: consul.put_kv(f"{unique}/other", "x"), 0),
            ("flags", lambda: consul.put_kv(key, "v2", flags=42), 1),
            ("delete", lambda: consul.delete_kv(key), 1),
        ],
    )
    runs = o.runs()
    assert runs[0][1] is None
    assert base64.b64decode(runs[1][1]["Value"]) == b"v1"
    assert runs[-1][1] is None


def test_keyprefix(
    consul: ConsulAgent, unique: str, recorder: Path, tmp_path: Path, watches: list[Watch]
) -> None:
    prefix = f"{unique}/p/"
    c, o = start_pair(
        consul, ["-type", "keyprefix", "-prefix", prefix], recorder, tmp_path, watches
    )
    run_sequence(
        c,
        o,
        [
            ("put a", lambda: consul.put_kv(prefix + "a", "1"), 1),
            ("put b/c", lambda: consul.put_kv(prefix + "b/c", "2"), 1),
            ("outside", lambda: consul.put_kv(f"{unique}/q/a", "3"), 0),
            ("delete a", lambda: consul.delete_kv(prefix + "a"), 1),
            ("delete all", lambda: consul.delete_kv(prefix, recurse=True), 1),
        ],
    )
    assert [p["Key"] for p in o.runs()[2][1]] == [prefix + "a", prefix + "b/c"]


def _catalog(agent: ConsulAgent, body: dict[str, Any], dereg: bool = False) -> None:
    path = "/v1/catalog/deregister" if dereg else "/v1/catalog/register"
    resp = agent.request("PUT", path, json=body)
    assert resp.status_code == 200, resp.text


def _wait_quiet(agent: ConsulAgent, svc: str) -> None:
    """Wait until a new agent's catalog stops moving (its own registration, anti-entropy): both
    watches of a pair start a moment apart, and must see the same index at start."""
    index = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        resp = agent.request(
            "GET", f"/v1/health/service/{svc}", params={"index": str(index), "wait": "2s"}
        )
        new = int(resp.headers.get("X-Consul-Index", "0"))
        if index and new == index:
            return  # no change for two seconds
        index = new
    raise AssertionError("the new agent's catalog never settled")


def test_services_nodes_service_checks(
    consul_agent_factory: Callable[..., ConsulAgent],
    unique: str,
    recorder: Path,
    tmp_path: Path,
    watches: list[Watch],
) -> None:
    """The catalog types, on an agent of their own (they see every service and node)."""
    agent = consul_agent_factory()
    svc = f"web-{unique}"
    _wait_quiet(agent, svc)
    pairs = []
    for name, args in (
        ("services", ["-type", "services"]),
        ("nodes", ["-type", "nodes"]),
        ("service", ["-type", "service", "-service", svc]),
        ("service-tag", ["-type", "service", "-service", svc, "-tag", "blue"]),
        ("service-passing", ["-type", "service", "-service", svc, "-passingonly=true"]),
        ("checks", ["-type", "checks", "-service", svc]),
        ("checks-critical", ["-type", "checks", "-state", "critical"]),
    ):
        d = tmp_path / name
        d.mkdir()
        pairs.append((name, *start_pair(agent, args, recorder, d, watches)))
    for name, c, o in pairs:
        settle(c, o, 1, f"{name}: the run at start")

    def node(name: str, status: str, tags: list[str]) -> dict[str, Any]:
        return {
            "Node": name,
            "Address": "127.0.0.9",
            "Service": {"ID": f"{svc}-{name}", "Service": svc, "Tags": tags, "Port": 80},
            "Check": {
                "CheckID": f"{svc}-{name}",
                "Name": "alive",
                "Status": status,
                "ServiceID": f"{svc}-{name}",
            },
        }

    steps: list[tuple[str, Callable[[], object]]] = [
        ("register n1", lambda: _catalog(agent, node("n1", "passing", ["blue"]))),
        ("register n2", lambda: _catalog(agent, node("n2", "critical", ["green"]))),
        ("n2 passes", lambda: _catalog(agent, node("n2", "passing", ["green"]))),
        ("n1 retagged", lambda: _catalog(agent, node("n1", "passing", ["green", "x"]))),
        ("n1 fails", lambda: _catalog(agent, node("n1", "critical", ["green", "x"]))),
        ("n2 gone", lambda: _catalog(agent, {"Node": "n2"}, dereg=True)),
    ]
    for what, change in steps:
        change()
        for name, c, o in pairs:
            time.sleep(0.1)
            settle(c, o, 1, f"{name}: after {what}")
    for name, _c, o in pairs:
        assert len(o.runs()) >= 2 or name in ("service-tag",), name


def test_event(
    consul: ConsulAgent, unique: str, recorder: Path, tmp_path: Path, watches: list[Watch]
) -> None:
    name = f"ev-{unique}"
    c, o = start_pair(consul, ["-type", "event", "-name", name], recorder, tmp_path, watches)

    def fire(event: str, payload: str = "", **filters: str) -> Callable[[], object]:
        return lambda: consul.request(
            "PUT", f"/v1/event/fire/{event}", params=filters, content=payload.encode()
        )

    run_sequence(
        c,
        o,
        [
            ("first", fire(name), 1),
            ("payload", fire(name, "hi there"), 1),
            ("another name", fire(f"other-{unique}"), 0),
            ("third", fire(name, "3"), 1),
        ],
    )
    runs = o.runs()
    assert runs[0][1] == []
    assert [base64.b64decode(r[1][0]["Payload"] or "") for r in runs[1:]] == [
        b"",
        b"hi there",
        b"3",
    ]


def test_without_handler_prints_once_like_consul(consul: ConsulAgent, unique: str) -> None:
    consul.put_kv(f"{unique}/k", "hello")
    args = ["-http-addr", consul.http_addr, "-type", "keyprefix", "-prefix", f"{unique}/"]
    ours = run_ctemplate(["watch", *args])
    theirs = subprocess.run(
        [find_consul(), "watch", *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert ours.returncode == 0, ours.stderr
    assert json.loads(ours.stdout) == json.loads(theirs.stdout)
    assert ours.stdout.startswith("[\n    {")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-type", "bogus"], 'type "bogus" is not one of key, keyprefix'),
        (["-type", "key", "-key", "a", "-prefix", "b"], "prefix does not apply to a key watch"),
        (["-type", "key"], "a key watch needs key"),
        (["-type", "checks", "-service", "a", "-state", "passing"], "service or state, not both"),
        (["-type", "key", "-key"], "flag -key: missing value"),
        (["-tpye", "key"], "unknown flag -tpye (did you mean -type?)"),
        (["-type", "service", "-service", "x", "-passingonly", "maybe"], "flag -passingonly"),
    ],
)
def test_bad_flags_one_line_exit_13(args: list[str], message: str) -> None:
    result = run_ctemplate(["watch", *args])
    assert result.returncode == 13
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("ctemplate: error: ")
    assert message in result.stderr


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (an orphan's zombie may stay unreaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_hung_handler_killed_at_timeout_and_next_change_runs(
    consul: ConsulAgent, unique: str, tmp_path: Path
) -> None:
    key = f"{unique}/hang"
    log = tmp_path / "runs"
    child = tmp_path / "child.pid"
    # Each run records its value; the run of "hang" starts a child in its group and blocks.
    script = tmp_path / "h.sh"
    script.write_text(
        f"""#!/bin/sh
body=$(cat)
echo "$body" >> {log}
case "$body" in *aGFuZw*) sleep 300 & echo $! > {child}; wait;; esac
"""
    )
    w = Watch(
        [
            *COMMAND,
            "watch",
            "-http-addr",
            consul.http_addr,
            "-type",
            "key",
            "-key",
            key,
            "-timeout",
            "1s",
            "sh",
            str(script),
        ],
        tmp_path / "unused",
    )
    try:
        wait_for(lambda: log.exists(), what="the run at start")
        consul.put_kv(key, "hang")
        wait_for(lambda: child.exists(), what="the hanging run")
        pid = int(child.read_text())
        consul.put_kv(key, "next")
        wait_for(lambda: "bmV4dA" in log.read_text(), timeout=20, what="the next run")
        assert not _alive(pid)  # the handler's child went with its process group
        wait_for(lambda: "timeout of 1s" in w.log.read_text(), what="the report")
        assert w.proc.poll() is None  # the watch carries on
    finally:
        w.stop()


def test_skip_initial_and_state_file_across_restart(
    consul: ConsulAgent, unique: str, recorder: Path, tmp_path: Path
) -> None:
    key = f"{unique}/st"
    consul.put_kv(key, "v1")
    out = tmp_path / "out"
    base = [*COMMAND, "watch", "-http-addr", consul.http_addr, "-type", "key", "-key", key]

    w = Watch([*base, "-skip-initial", "sh", str(recorder), str(out)], out)
    try:
        time.sleep(2)
        assert w.runs() == []  # nothing at start
        consul.put_kv(key, "v2")
        wait_for(lambda: len(w.runs()) == 1, what="the run after a change")
    finally:
        w.stop()
    out.unlink()

    state = tmp_path / "key.state"
    w = Watch([*base, "-state-file", str(state), "sh", str(recorder), str(out)], out)
    try:
        wait_for(lambda: len(w.runs()) == 1, what="the first run, no state yet")
        wait_for(state.exists, what="the state file")
    finally:
        w.stop()
    w = Watch([*base, "-state-file", str(state), "sh", str(recorder), str(out)], out)
    try:
        time.sleep(2)
        assert len(w.runs()) == 1  # unchanged data: no run after the restart
        consul.put_kv(key, "v3")
        wait_for(lambda: len(w.runs()) == 2, what="the run after a change")
    finally:
        w.stop()
    consul.put_kv(key, "v4")  # changed while stopped
    w = Watch([*base, "-state-file", str(state), "sh", str(recorder), str(out)], out)
    try:
        wait_for(lambda: len(w.runs()) == 3, what="the run for a change made while stopped")
        assert base64.b64decode(w.runs()[-1][1]["Value"]) == b"v4"
    finally:
        w.stop()


def test_event_state_file_hands_only_new_events(
    consul: ConsulAgent, unique: str, recorder: Path, tmp_path: Path
) -> None:
    name = f"st-{unique}"
    out = tmp_path / "out"
    state = tmp_path / "ev.state"
    argv = [*COMMAND, "watch", "-http-addr", consul.http_addr, "-type", "event", "-name", name,
            "-state-file", str(state), "sh", str(recorder), str(out)]  # fmt: skip
    consul.request("PUT", f"/v1/event/fire/{name}", content=b"one")
    w = Watch(argv, out)
    try:
        wait_for(lambda: len(w.runs()) == 1, what="the buffer at start")
        wait_for(state.exists, what="the state file")
    finally:
        w.stop()
    consul.request("PUT", f"/v1/event/fire/{name}", content=b"two")
    w = Watch(argv, out)
    try:
        wait_for(lambda: len(w.runs()) == 2, what="the new event")
        time.sleep(1)
        runs = w.runs()
        assert len(runs) == 2
        assert [base64.b64decode(e["Payload"]) for e in runs[1][1]] == [b"two"]
    finally:
        w.stop()


def _lines(w: Watch) -> list[Any]:
    return [json.loads(line) for line in w.log.read_text().splitlines() if line.strip()]


def test_workshop_step8(
    consul_agent_factory: Callable[..., ConsulAgent],
    unique: str,
    tmp_path: Path,
    watches: list[Watch],
) -> None:
    """Step 8 of the workshop: the `hello` event watch and the `pepabo/` keyprefix watch, on a
    back node and a front node joined to a server, with ``consul watch`` beside ctemplate."""
    server = consul_agent_factory(node_name=f"srv-{unique}")
    join = f"-join=127.0.0.1:{server.ports['serf_lan']}"

    def client(name: str) -> ConsulAgent:
        data = tmp_path / name
        data.mkdir()
        return consul_agent_factory(
            node_name=name, extra_args=["-server=false", f"-data-dir={data}", join]
        )

    back, front = client(f"back-{unique}"), client(f"front-{unique}")
    jq = ["jq", "-c", "."]

    def watch(agent: ConsulAgent, who: str, args: list[str]) -> Watch:
        program = [find_consul()] if who == "consul" else COMMAND
        name = f"{who}-{agent.node_name}-{args[1]}"
        w = Watch([*program, "watch", "-http-addr", agent.http_addr, *args, *jq],
                  tmp_path / f"{name}.out")  # fmt: skip
        watches.append(w)
        return w

    hello = ["-type", "event", "-name", "hello"]
    ours_back, consul_back = watch(back, "ours", hello), watch(back, "consul", hello)
    ours_front = watch(front, "ours", hello)
    for w in (ours_back, consul_back, ours_front):
        wait_for(lambda w=w: w.log.exists() and _lines(w) == [[]], what="[] at start")
    assert ours_back.log.read_text().splitlines()[0] == "[]"

    def event(*args: str) -> None:
        fired = run_ctemplate(["event", "-http-addr", front.http_addr, *args])
        assert fired.returncode == 0, fired.stderr
        assert fired.stdout.startswith("Event ID: ")

    event("-name", "hello")
    event("-name", "hello", "I am consul!!")
    event("-name", "not-hello")
    event("-name", "hello", "-node", "back.*")
    wait_for(lambda: len(_lines(ours_back)) == 4, what="three hello events on back")
    wait_for(lambda: len(_lines(consul_back)) == 4, what="consul watch: three on back")
    wait_for(lambda: len(_lines(ours_front)) == 3, what="two hello events on front")
    time.sleep(1)
    back_runs = _lines(ours_back)
    assert back_runs == _lines(consul_back)
    assert [e["Name"] for run in back_runs[1:] for e in run] == ["hello"] * 3
    assert back_runs[2][0]["Payload"] == "SSBhbSBjb25zdWwhIQ=="
    assert back_runs[3][0]["NodeFilter"] == "back.*"
    assert _lines(ours_front) == back_runs[:3]  # back.* never reached front

    prefix = ["-type", "keyprefix", "-prefix", "pepabo/"]
    ours_kv, consul_kv = watch(back, "ours", prefix), watch(back, "consul", prefix)
    for w in (ours_kv, consul_kv):
        wait_for(lambda w=w: w.log.exists() and _lines(w) == [None], what="null at start")
    curls = [
        ("PUT", "pepabo/hi", 2),
        ("PUT", "pepabo/foo/bar", 3),
        ("PUT", "not-pepabo/hi", 3),
        ("DELETE", "pepabo/hi", 4),
    ]
    for method, key, runs in curls:
        resp = front.request(method, f"/v1/kv/{key}", content=b"sample")
        assert resp.status_code == 200
        wait_for(lambda runs=runs: len(_lines(ours_kv)) == runs, what=f"{method} {key}")
        wait_for(lambda runs=runs: len(_lines(consul_kv)) == runs, what=f"consul: {key}")
    time.sleep(0.5)
    kv_runs = _lines(ours_kv)
    assert kv_runs == _lines(consul_kv)
    assert [[p["Key"] for p in run or ()] for run in kv_runs] == [
        [],
        ["pepabo/hi"],
        ["pepabo/foo/bar", "pepabo/hi"],
        ["pepabo/foo/bar"],
    ]


def test_runs_never_overlap_and_changes_during_a_run_are_coalesced(
    consul: ConsulAgent, unique: str, tmp_path: Path
) -> None:
    """A slow handler: five changes during its first run give one more run, with the newest data
    (a key) or with every event that arrived (an event watch)."""
    key, name = f"{unique}/slow", f"slow-{unique}"
    spans = {kind: tmp_path / f"{kind}.spans" for kind in ("key", "event")}
    script = tmp_path / "slow.sh"
    script.write_text(
        """#!/bin/sh
start=$(date +%s.%N)
body=$(cat)
sleep 1.5
printf '%s %s %s\\n' "$start" "$(date +%s.%N)" "$body" >> "$1"
"""
    )
    base = [*COMMAND, "watch", "-http-addr", consul.http_addr]
    procs = [
        Watch([*base, "-type", "key", "-key", key, "sh", str(script), str(spans["key"])],
              spans["key"]),
        Watch([*base, "-type", "event", "-name", name, "sh", str(script), str(spans["event"])],
              spans["event"]),
    ]  # fmt: skip

    def spans_of(kind: str) -> list[tuple[float, float, Any]]:
        if not spans[kind].exists():
            return []
        rows = []
        for line in spans[kind].read_text().splitlines():
            start, end, body = line.split(" ", 2)
            rows.append((float(start), float(end), json.loads(body)))
        return rows

    try:
        wait_for(lambda: spans["key"].exists() and spans["event"].exists(), what="runs at start")
        consul.put_kv(key, "first")
        consul.request("PUT", f"/v1/event/fire/{name}", content=b"e0")
        time.sleep(0.5)  # the second runs are under way
        for i in range(1, 6):
            consul.put_kv(key, f"v{i}")
            consul.request("PUT", f"/v1/event/fire/{name}", content=f"e{i}".encode())
            time.sleep(0.1)
        wait_for(lambda: len(spans_of("key")) >= 3 and len(spans_of("event")) >= 3, timeout=20,
                 what="the coalesced runs")  # fmt: skip
        time.sleep(2.5)  # a wrong extra run would have finished by now
        for kind in ("key", "event"):
            rows = spans_of(kind)
            assert len(rows) == 3, (kind, rows)
            for before, after in itertools.pairwise(rows):
                assert after[0] >= before[1], f"{kind}: runs overlap: {rows}"
        assert base64.b64decode(spans_of("key")[2][2]["Value"]) == b"v5"
        payloads = [base64.b64decode(e["Payload"]) for e in spans_of("event")[2][2]]
        assert payloads == [f"e{i}".encode() for i in range(1, 6)]
    finally:
        for w in procs:
            w.stop()


def test_environment_and_tls_flags_like_consul_watch(
    tls_agent: tuple[ConsulAgent, int, Path], consul: ConsulAgent, unique: str
) -> None:
    """CONSUL_HTTP_ADDR / CONSUL_HTTP_TOKEN from the environment; Consul's TLS flags against an
    agent that requires a client certificate."""
    consul.put_kv(f"{unique}/env", "from env")
    env = {"CONSUL_HTTP_ADDR": consul.http_addr, "CONSUL_HTTP_TOKEN": "anonymous-ok"}
    ours = run_ctemplate(["watch", "-type", "key", "-key", f"{unique}/env"], env=env)
    assert ours.returncode == 0, ours.stderr
    assert base64.b64decode(json.loads(ours.stdout)["Value"]) == b"from env"

    _agent, port, certs = tls_agent
    args = [
        "-http-addr", f"https://127.0.0.1:{port}",
        "-ca-file", f"{certs}/consul-agent-ca.pem",
        "-client-cert", f"{certs}/dc1-client-consul-0.pem",
        "-client-key", f"{certs}/dc1-client-consul-0-key.pem",
        "-tls-server-name", "server.dc1.consul",
        "-type", "key", "-key", "tls/greeting",
    ]  # fmt: skip
    ours = run_ctemplate(["watch", *args])
    # consul watch 1.8 passes its TLS flags only to its first request, not to the watch's own
    # client (which reads the environment): the oracle gets them as CONSUL_* variables.
    tls_env = {
        "CONSUL_HTTP_ADDR": f"https://127.0.0.1:{port}",
        "CONSUL_CACERT": f"{certs}/consul-agent-ca.pem",
        "CONSUL_CLIENT_CERT": f"{certs}/dc1-client-consul-0.pem",
        "CONSUL_CLIENT_KEY": f"{certs}/dc1-client-consul-0-key.pem",
        "CONSUL_TLS_SERVER_NAME": "server.dc1.consul",
    }
    theirs = subprocess.run(
        [find_consul(), "watch", "-type", "key", "-key", "tls/greeting"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **tls_env},
    )
    assert ours.returncode == 0 and theirs.returncode == 0, (ours.stderr, theirs.stderr)
    assert json.loads(ours.stdout) == json.loads(theirs.stdout)
    assert base64.b64decode(json.loads(ours.stdout)["Value"]) == b"hello over TLS"


def test_sigterm_stops_the_watch_and_its_running_handler(
    consul: ConsulAgent, unique: str, tmp_path: Path
) -> None:
    child = tmp_path / "child.pid"
    w = Watch(
        [*COMMAND, "watch", "-http-addr", consul.http_addr, "-type", "key", "-key",
         f"{unique}/t", "-timeout", "0", f"sleep 300 & echo $! > {child}; wait"],
        tmp_path / "unused",
    )  # fmt: skip
    try:
        wait_for(child.exists, what="the handler running")
        pid = int(child.read_text())
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(10) == 0
        wait_for(lambda: not _alive(pid), timeout=5, what="the handler's child gone")
    finally:
        w.stop()


def test_unknown_datacenter_is_one_line_and_exit_14_when_printing(consul: ConsulAgent) -> None:
    result = run_ctemplate(
        ["watch", "-http-addr", consul.http_addr, "-type", "services", "-datacenter", "nope"]
    )
    assert result.returncode == 14
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(
        'ctemplate: error: GET /v1/catalog/services: unknown datacenter "nope"'
    )
