"""What ConsulClient.get puts on the wire, seen by a real HTTP server on loopback.

Blocking GETs go to httpx's connection pool directly (not through ``httpx.AsyncClient.send``),
so the client's own headers, the token, basic auth, a watch's own token and the query string
are assembled by ctemplate: these tests read them back as the server received them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ctemplate.config import AuthConfig, ConsulConfig
from ctemplate.consul.client import ConsulClient


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, dict[str, str]]] = []

    def do_GET(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        headers["tokens"] = repr(self.headers.get_all("X-Consul-Token"))  # each one sent
        self.seen.append((self.path, headers))
        body = json.dumps([{"Key": "a b", "Value": base64.b64encode(b"v").decode()}]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Consul-Index", "42")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Recorder.seen = []
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
    assert "gzip" in headers["accept-encoding"]


def test_a_watch_token_replaces_the_default_token(server: str) -> None:
    config = ConsulConfig(address=server, token="default-token")
    _get(config, "/v1/kv/k", headers={"X-Consul-Token": "watch-token"})
    (path, headers) = _Recorder.seen[0]
    assert path == "/v1/kv/k"
    assert headers["tokens"] == repr(["watch-token"])  # one token, the watch's
    assert "authorization" not in headers
