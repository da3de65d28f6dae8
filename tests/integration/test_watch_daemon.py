"""Watch blocks in the daemon: both config forms, the HTTP handler, SIGHUP, /health and /metrics."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from consul_harness import ConsulAgent, find_consul, free_port
from ctemplate_proc import Daemon, run_ctemplate, wait_for
from test_watch_command import RECORDER, Watch, read_runs


class Receiver:
    """A loopback HTTP server recording every request: (method, headers, JSON body)."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        received = self.requests

        class Handle(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self._record()

            def do_PUT(self) -> None:
                self._record()

            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((self.command, dict(self.headers), json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_daemon_watches_http_and_script_like_consul_watch(
    consul: ConsulAgent, unique: str, tmp_path: Path, receiver: Receiver
) -> None:
    prefix = f"{unique}/d/"
    recorder = tmp_path / "record.sh"
    recorder.write_text(RECORDER)
    script_out = tmp_path / "script.out"
    status = f"127.0.0.1:{free_port()}"
    config = tmp_path / "ct.hcl"
    config.write_text(
        f"""
consul {{ address = "{consul.http_addr}" }}
status_address = "{status}"
watch {{
  type   = "keyprefix"
  prefix = "{prefix}"
  args   = ["sh", "{recorder}", "{script_out}"]
}}
watches = [{{
  type = "keyprefix"
  prefix = "{prefix}"
  handler_type = "http"
  http_handler_config = {{
    path = "{receiver.url}"
    method = "PUT"
    header = {{ "x-team" = ["ops", "web"] }}
    timeout = "5s"
  }}
}}]
"""
    )
    oracle = Watch(
        [find_consul(), "watch", "-http-addr", consul.http_addr, "-type", "keyprefix",
         "-prefix", prefix, "sh", str(recorder), str(tmp_path / "consul.out")],
        tmp_path / "consul.out",
    )  # fmt: skip
    with Daemon(["-config", str(config)]) as daemon:
        try:
            for n, change in enumerate(
                [None, ("a", "1"), ("b/c", "2"), ("a", "3")],
                start=1,
            ):
                if change:
                    consul.put_kv(prefix + change[0], change[1])
                wait_for(
                    lambda n=n: (
                        len(oracle.runs()) == n
                        and len(read_runs(script_out)) == n
                        and len(receiver.requests) == n
                    ),
                    timeout=20,
                    what=f"run {n}",
                    log=daemon.log(),
                )
            assert read_runs(script_out) == oracle.runs()
            http_runs = [(int(h["X-Consul-Index"]), body) for _m, h, body in receiver.requests]
            assert http_runs == oracle.runs()
            method, headers, _ = receiver.requests[0]
            assert method == "PUT"
            assert headers["Content-Type"] == "application/json"
            assert headers["x-team"] in ("ops, web", "ops")  # repeated header

            page = httpx.get(f"http://{status}/metrics").text
            assert f'ctemplate_watch_runs_total{{watch="{config}: watch[1]",' in page
            assert 'query="keyprefix(' in page
            assert "ctemplate_watch_runs_total" in page and " 4" in page
            doc = httpx.get(f"http://{status}/health").json()
            assert [w["runs"] for w in doc["watches"]] == [4, 4]
            assert doc["watches"][0]["last_index"] == oracle.runs()[-1][0]

            # SIGHUP with one watch less: the http watch stops, the script watch goes on.
            config.write_text(
                config.read_text().split("watches = [")[0]  # keep the watch {} block only
            )
            daemon.signal(signal.SIGHUP)
            wait_for(
                lambda: len(httpx.get(f"http://{status}/health").json()["watches"]) == 1,
                what="the reload",
                log=daemon.log(),
            )
            consul.put_kv(prefix + "z", "9")
            wait_for(lambda: len(oracle.runs()) == 5, what="consul's run 5")
            # The restarted watch runs at start (5) and for the change (6), or both at once.
            wait_for(
                lambda: read_runs(script_out)[-1] == oracle.runs()[-1],
                what="ours",
                log=daemon.log(),
            )
            assert len(receiver.requests) == 4
        finally:
            oracle.stop()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('watch { prefix = "a/" \n args = ["/bin/true"] }', "watch[1].type: is required"),
        (
            'watch { type = "keyprefx" \n args = ["/bin/true"] }',
            'watch[1].type: "keyprefx" is not a watch type',
        ),
        ('watch { type = "key" \n args = ["/bin/true"] }', "watch[1].key: a key watch needs key"),
        ('watches = [{ type = "services" }]', 'watches[1]: a script watch needs args = ["/path'),
        (
            'watches = [{ type = "services" \n handler_type = "http" }]',
            'watches[1]: handler_type = "http" needs http_handler_config',
        ),
        (
            'watches = [{ type = "services" \n args = ["x"] \n prefx = "a" }]',
            'watches[1].prefx: unknown key (did you mean "prefix"?)',
        ),
    ],
)
def test_bad_watch_blocks_name_file_and_key(tmp_path: Path, body: str, message: str) -> None:
    config = tmp_path / "w.hcl"
    config.write_text(body + "\n")
    result = run_ctemplate(["-config", str(config), "-once"])
    assert result.returncode == 15
    assert result.stderr.strip() == f"ctemplate: error: {config}: {message}" or (
        message in result.stderr and result.stderr.count("\n") == 1
    ), result.stderr


def test_failing_http_handler_is_counted_and_the_watch_goes_on(
    consul: ConsulAgent, unique: str, tmp_path: Path
) -> None:
    failing = Receiver(status=500)
    status = f"127.0.0.1:{free_port()}"
    config = tmp_path / "ct.json"
    config.write_text(
        json.dumps(
            {
                "consul": {"address": consul.http_addr},
                "status_address": status,
                "watches": [
                    {
                        "type": "key",
                        "key": f"{unique}/k",
                        "handler_type": "http",
                        "http_handler_config": {"path": failing.url},
                    }
                ],
            }
        )
    )
    try:
        with Daemon(["-config", str(config)]) as daemon:
            wait_for(lambda: len(failing.requests) == 1, what="the run at start", log=daemon.log())
            consul.put_kv(f"{unique}/k", "v")
            wait_for(lambda: len(failing.requests) == 2, what="the next run", log=daemon.log())

            def watch_doc() -> dict[str, Any]:
                doc: dict[str, Any] = httpx.get(f"http://{status}/health").json()["watches"][0]
                return doc

            wait_for(lambda: watch_doc()["failures"] == 2, what="two failures", log=daemon.log())
            assert watch_doc()["runs"] == 2
            assert f"http handler POST {failing.url}: answered 500" in watch_doc()["error"]
            assert "answered 500" in daemon.log()
    finally:
        failing.close()


def test_a_watch_token_of_its_own_is_sent_and_never_shown(
    consul_agent_factory: Any, tmp_path: Path
) -> None:
    """The daemon's token is unknown to the agent (403 for everything); a watch with a token of its
    own runs, the other is refused and says so, and neither token is ever shown."""
    master = "5e3b1c2a-0000-4000-8000-00000000beef"
    unknown = "3d5c1a8e-dead-beef-0000-5ecre7t0ken1"
    agent = consul_agent_factory(
        extra_args=[
            "-hcl",
            f'acl {{ enabled = true default_policy = "allow" tokens {{ master = "{master}" }} }}',
        ]
    )
    resp = agent.request("PUT", "/v1/kv/acl/k", content=b"v", headers={"X-Consul-Token": master})
    assert resp.status_code == 200, resp.text
    out, denied = tmp_path / "out", tmp_path / "denied"
    status = f"127.0.0.1:{free_port()}"
    config = tmp_path / "ct.hcl"
    config.write_text(
        f"""
consul {{
  address = "{agent.http_addr}"
  token   = "{unknown}"
}}
status_address = "{status}"
watch {{
  type  = "key"
  key   = "acl/k"
  token = "{master}"
  args  = ["sh", "-c", "cat > {out}"]
}}
watch {{
  type = "key"
  key  = "acl/k"
  args = ["sh", "-c", "cat > {denied}"]
}}
"""
    )
    with Daemon(["-config", str(config), "-log-level", "trace"]) as daemon:
        wait_for(lambda: out.exists() and out.read_text(), what="the run with the token",
                 log=daemon.log())  # fmt: skip
        assert json.loads(out.read_text())["Key"] == "acl/k"

        def second_error() -> str:
            doc = httpx.get(f"http://{status}/health").json()
            return str(doc["watches"][1]["error"] or "")

        wait_for(lambda: "403" in second_error(), what="the refusal", log=daemon.log())
        assert "check the ACL token" in second_error()
        assert not denied.exists()
        shown = daemon.log() + httpx.get(f"http://{status}/health").text
        shown += httpx.get(f"http://{status}/metrics").text
        assert master not in shown and unknown not in shown
