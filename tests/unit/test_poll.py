"""The polling loops for what cannot be long-polled: non-blocking Consul endpoints, local files."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from ctemplate.consul.client import ConsulResponse
from ctemplate.consul.poll import poll_consul, poll_file
from ctemplate.consul.queries import CatalogDatacentersQuery, FileProblem, FileQuery
from ctemplate.consul.watch import WatchSettings
from ctemplate.errors import ConsulError


@dataclass
class FakeWatcher:
    client: Any
    settings: WatchSettings = field(default_factory=WatchSettings)
    delivered: list[tuple[str, Any]] = field(default_factory=list)
    failed: list[tuple[str, ConsulError]] = field(default_factory=list)

    def deliver(self, key: str, value: Any) -> bool:
        if self.delivered and self.delivered[-1] == (key, value):
            return False
        self.delivered.append((key, value))
        return True

    failing: dict[str, Any] = field(default_factory=dict)

    def fail(self, key: str, error: ConsulError) -> None:
        self.failed.append((key, error))

    def query_failed(self, key: str, error: ConsulError) -> None:
        self.failing[key] = str(error)

    def query_ok(self, key: str) -> None:
        self.failing.pop(key, None)


class FakeClient:
    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, str] | None]] = []
        self.retries: list[int] = []

    def note_retry(self, attempt: int, delay: float) -> None:
        self.retries.append(attempt)

    async def get(self, path: str, params: dict[str, str] | None = None, **_: Any) -> Any:
        self.calls.append((path, params))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return ConsulResponse(data=answer, index=0, last_contact=0.0, known_leader=True)


async def test_datacenters_are_polled_and_sorted(monkeypatch):
    monkeypatch.setattr(CatalogDatacentersQuery, "poll_interval", 0.01)
    client = FakeClient([["dc2", "dc1"], ["dc2", "dc1"], ["dc3", "dc1"]])
    watcher = FakeWatcher(client)
    task = asyncio.create_task(poll_consul(CatalogDatacentersQuery(), watcher))
    while len(watcher.delivered) < 2:
        await asyncio.sleep(0.01)
    task.cancel()
    assert watcher.delivered == [
        ("catalog.datacenters", ("dc1", "dc2")),
        ("catalog.datacenters", ("dc1", "dc3")),
    ]
    assert client.calls[0] == ("/v1/catalog/datacenters", None)


async def test_ignore_failing_drops_datacenters_that_do_not_answer():
    client = FakeClient([["dc1", "dc2"], {}, ConsulError("GET: 500", transient=True)])
    watcher = FakeWatcher(client, WatchSettings(once=True))
    await poll_consul(CatalogDatacentersQuery(ignore_failing=True), watcher)
    assert watcher.delivered == [("catalog.datacenters(ignore-failing)", ("dc1",))]
    assert client.calls[1:] == [
        ("/v1/catalog/services", {"dc": "dc1", "consistent": ""}),
        ("/v1/catalog/services", {"dc": "dc2", "consistent": ""}),
    ]


async def test_transient_failures_are_retried_then_reported():
    down = ConsulError("GET /v1/catalog/datacenters: cannot reach Consul", transient=True)
    client = FakeClient([down, ["dc1"]])
    watcher = FakeWatcher(client, WatchSettings(once=True, retry_backoff=0.001))
    await poll_consul(CatalogDatacentersQuery(), watcher)
    assert watcher.delivered == [("catalog.datacenters", ("dc1",))] and not watcher.failed

    client = FakeClient([down])
    watcher = FakeWatcher(client, WatchSettings(retry_backoff=0.001, retry_attempts=2))
    await poll_consul(CatalogDatacentersQuery(), watcher)
    assert len(client.calls) == 3
    ((key, error),) = watcher.failed
    assert key == "catalog.datacenters"
    assert str(error) == f"{down}; gave up after 2 retries, the limit of -consul-retry-attempts"
    assert client.retries == [1, 2]


async def test_files_are_delivered_again_when_they_change(tmp_path, monkeypatch):
    monkeypatch.setattr(FileQuery, "poll_interval", 0.01)
    path = tmp_path / "f.txt"
    query = FileQuery(str(path))
    watcher = FakeWatcher(client=None)

    async def until(n: int) -> None:
        while len(watcher.delivered) < n:
            await asyncio.sleep(0.01)

    task = asyncio.create_task(poll_file(query, watcher))
    await until(1)
    path.write_text("one")
    await until(2)
    path.write_text("two, longer")
    await until(3)
    task.cancel()
    assert [v for _, v in watcher.delivered] == [
        FileProblem(f'file("{path}"): no such file; check the path'),
        "one",
        "two, longer",
    ]


@pytest.mark.parametrize("once", [True])
async def test_once_stops_after_the_first_read(tmp_path, once):
    path = tmp_path / "f.txt"
    path.write_text("x")
    watcher = FakeWatcher(client=None, settings=WatchSettings(once=once))
    await asyncio.wait_for(poll_file(FileQuery(str(path)), watcher), 5)
    assert watcher.delivered == [(f"file({path})", "x")]
