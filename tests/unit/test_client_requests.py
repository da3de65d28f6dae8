"""What ConsulClient.get puts on the wire, seen by a real HTTP server on loopback.

Blocking GETs go to httpx's connection pool directly (not through ``httpx.AsyncClient.send``),
so the client's own headers, the token, basic auth, a watch's own token and the query string
are assembled by ctemplate: these tests read them back as the server received them.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ctemplate.config import AuthConfig, ConsulConfig
from ctemplate.consul.client import ConsulClient
from ctemplate.errors import ConsulError


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Consul
    seen: list[tuple[str, dict[str, str]]] = []
    gzip = False  # compress answers (Consul does when asked)
    close_after = False  # close each connection once answered (Consul's idle timeout)

    def do_GET(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        headers["tokens"] = repr(self.headers.get_all("X-Consul-Token"))  # each one sent
        self.seen.append((self.path, headers))
        value = base64.b64encode(f"v{len(self.seen)}".encode()).decode()
        body = json.dumps([{"Key": "a b", "Value": value}]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Consul-Index", "42")
        if self.gzip:
            body = gzip.compress(body)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.close_after:
            # As an idle connection timing out: the answer is complete, then the socket closes
            # with nothing said (no "Connection: close"), before the client's next request.
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        sent = self.rfile.read(length)
        self.seen.append((self.path, {"body": sent.decode()}))
        body = json.dumps({"ID": "s1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Recorder.seen = []
    _Recorder.gzip = _Recorder.close_after = False
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _get(config: ConsulConfig, *args: Any, **kwargs: Any) -> Any:
    async def run() -> Any:
        client = ConsulClient(config, max_connections=2)
        try:
            return await client.get(*args, **kwargs)
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_a_blocking_get_carries_token_auth_and_its_query(server: str) -> None:
    config = ConsulConfig(
        address=server,
        token="secret-token",
        auth=AuthConfig(enabled=True, username="admin", password="pw:1"),
    )
    resp = _get(
        config, "/v1/kv/a%20b", {"dc": "dc2", "tag": ["x y", "z"]}, index=7, wait=2.0, stale=True
    )
    assert (resp.index, resp.data[0]["Key"]) == (42, "a b")
    (path, headers) = _Recorder.seen[0]
    assert path == "/v1/kv/a%20b?dc=dc2&tag=x+y&tag=z&index=7&wait=2000ms&stale="
    assert headers["tokens"] == repr(["secret-token"])
    assert headers["authorization"] == "Basic " + base64.b64encode(b"admin:pw:1").decode()
    assert headers["user-agent"] == "ctemplate"
    assert headers["accept-encoding"] == "identity"  # an agent on this host: no compression


def test_a_watch_token_replaces_the_default_token(server: str) -> None:
    config = ConsulConfig(address=server, token="default-token")
    _get(config, "/v1/kv/k", headers={"X-Consul-Token": "watch-token"})
    (path, headers) = _Recorder.seen[0]
    assert path == "/v1/kv/k"
    assert headers["tokens"] == repr(["watch-token"])  # one token, the watch's
    assert "authorization" not in headers


def test_the_path_goes_out_percent_encoded_once(server: str) -> None:
    # Characters a path may not hold are encoded; escapes already there are kept as they are.
    _get(ConsulConfig(address=server), "/v1/kv/dir/ä b?#", {"recurse": ""})
    _get(ConsulConfig(address=server), "/v1/kv/a%2Fb")
    assert [p for p, _h in _Recorder.seen] == [
        "/v1/kv/dir/%C3%A4%20b%3F%23?recurse=",
        "/v1/kv/a%2Fb",
    ]


def test_a_gzip_answer_is_decoded(server: str) -> None:
    # Asked for from an agent across a network only; decoded whenever it comes.
    _Recorder.gzip = True
    resp = _get(ConsulConfig(address=server), "/v1/kv/k")
    assert (resp.index, base64.b64decode(resp.data[0]["Value"])) == (42, b"v1")


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("127.0.0.1:8500", True),
        ("127.0.0.2:8500", True),
        ("[::1]:8500", True),
        ("localhost:8500", True),
        ("http://LOCALHOST:8500", True),
        ("10.0.0.1:8500", False),
        ("consul.service.consul:8500", False),
        ("https://consul.example:8501", False),
    ],
)
def test_compression_is_asked_for_only_across_a_network(address: str, local: bool) -> None:
    client = ConsulClient(ConsulConfig(address=address))
    assert client._headers["accept-encoding"] == ("identity" if local else "gzip")


def test_a_connection_the_agent_closed_while_idle_is_not_reused(server: str) -> None:
    """The next GET opens a new connection instead of failing on the dead one."""
    _Recorder.close_after = True

    async def run() -> list[bytes]:
        client = ConsulClient(ConsulConfig(address=server), max_connections=1)
        try:
            values = []
            for _ in range(3):
                resp = await client.get("/v1/kv/k")
                values.append(base64.b64decode(resp.data[0]["Value"]))
                await asyncio.sleep(0.05)  # the close reaches the client's socket
            assert client.available and client.failed_requests == 0
            return values
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [b"v1", b"v2", b"v3"]


def test_a_refused_connection_names_the_reason_and_what_to_do() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(ConsulError) as err:
        _get(ConsulConfig(address=f"127.0.0.1:{port}"), "/v1/kv/k")
    assert str(err.value) == (
        f"GET /v1/kv/k: cannot reach Consul at http://127.0.0.1:{port}: connection refused; "
        "is the agent running? (set -consul-addr or CONSUL_HTTP_ADDR)"
    )


def test_a_write_goes_through_the_same_pool(server: str) -> None:
    async def run() -> tuple[int, Any]:
        client = ConsulClient(ConsulConfig(address=server), max_connections=1)
        try:
            await client.get("/v1/kv/k")  # the one connection the budget allows, kept alive
            return await client.write("PUT", "/v1/session/create", json_body={"TTL": "10s"})
        finally:
            await client.aclose()

    assert asyncio.run(run()) == (200, {"ID": "s1"})
    assert _Recorder.seen[-1] == ("/v1/session/create", {"body": '{"TTL": "10s"}'})


def test_a_write_to_an_agent_that_is_gone_is_a_consul_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def run() -> None:
        client = ConsulClient(ConsulConfig(address=f"127.0.0.1:{port}"))
        try:
            await client.write("PUT", "/v1/session/create", json_body={})
        finally:
            await client.aclose()

    with pytest.raises(ConsulError) as err:
        asyncio.run(run())
    assert str(err.value) == (
        f"PUT /v1/session/create: cannot reach Consul at http://127.0.0.1:{port}: "
        "connection refused"
    )
