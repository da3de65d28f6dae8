"""Watch blocks in config files (both forms), and the pure parts of the watch loop."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest
from cancel_start import SCRIPT, cancel_while_starting

from ctemplate.config import load_config_file
from ctemplate.config.model import HttpHandlerConfig, WatchConfig
from ctemplate.errors import CommandError, ConfigError
from ctemplate.modes.commands import _WATCH, _parse
from ctemplate.modes.handlers import ScriptHandler
from ctemplate.modes.watch import _prune, event_index, payload, request


def _load(tmp_path: Path, text: str, name: str = "w.hcl") -> tuple[WatchConfig, ...]:
    path = tmp_path / name
    path.write_text(text)
    return tuple(load_config_file(path)["watches"])


def test_both_forms_and_json(tmp_path: Path) -> None:
    hcl = """
watch {
  type = "keyprefix"
  prefix = "pepabo/"
  args = ["/usr/local/bin/handler", "-v"]
  timeout = "5s"
  skip_initial = true
  state_file = "/tmp/s"
}
watches = [{
  type = "service"
  service = "web"
  tag = ["a", "b"]
  passingonly = true
  handler_type = "http"
  http_handler_config = {
    path = "https://h.example/x"
    method = "put"
    header = { "x-a" = ["1", "2"] }
    timeout = "3s"
    tls_skip_verify = true
  }
}]
"""
    first, second = _load(tmp_path, hcl)
    assert first == WatchConfig(
        type="keyprefix",
        prefix="pepabo/",
        args=("/usr/local/bin/handler", "-v"),
        timeout=5.0,
        skip_initial=True,
        state_file="/tmp/s",
        origin=f"{tmp_path}/w.hcl: watch[1]",
    )
    assert second.tags == ("a", "b") and second.passingonly
    assert second.http == HttpHandlerConfig(
        path="https://h.example/x",
        method="PUT",
        header=(("x-a", ("1", "2")),),
        timeout=3.0,
        tls_skip_verify=True,
    )
    (json_watch,) = _load(
        tmp_path,
        '{"watches": [{"type": "event", "name": "hello", "handler": "jq ."}]}',
        "w.json",
    )
    assert (json_watch.type, json_watch.name, json_watch.handler) == ("event", "hello", "jq .")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'watch { type = "checks"\n service = "a"\n state = "passing"\n args = ["x"] }',
            "not both",
        ),
        ('watch { type = "checks"\n state = "bad"\n args = ["x"] }', 'watch[1].state: "bad"'),
        ('watch { type = "key"\n key = "k"\n args = [] }', "watch[1].args: expected a non-empty"),
        ('watch { type = "key"\n key = "k"\n args = ["x"]\n handler = "y" }', "not both"),
        (
            'watch { type = "key"\n key = "k"\n handler_type = "http"\n'
            ' http_handler_config = { path = "ftp://x" } }',
            "http_handler_config.path: expected an http:// or https:// URL",
        ),
        ('watch { type = "key"\n key = "k"\n args = ["x"]\n timeout = "soon" }', "timeout"),
        (
            'watch { type = "key"\n key = "k"\n prefix = "p/"\n args = ["x"] }',
            "watch[1].prefix: does not apply to a key watch; remove it",
        ),
    ],
)
def test_bad_watch_blocks(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert message in str(info.value)
    assert str(info.value).startswith(f"{tmp_path}/w.hcl: ")


def test_event_index_is_consuls_fold_of_the_id() -> None:
    # lower = 0x0000000100000002, upper = 0x0000000000000003
    assert event_index("00000001-0000-0002-0000-000000000003") == (0x100000002 ^ 3)
    assert event_index("not a uuid") == 0


def test_prune_hands_only_events_after_the_last_seen() -> None:
    ids = [f"00000000-0000-0000-0000-00000000000{i}" for i in range(1, 4)]
    events = [{"ID": i} for i in ids]
    assert _prune(events, None) == events
    assert _prune(events, event_index(ids[1])) == events[2:]
    assert _prune(events, event_index(ids[2])) == []
    assert _prune(events, 12345) == events  # the last one left the buffer: all of them


def test_payload_shapes_like_consul_watch() -> None:
    key = WatchConfig(type="key", key="k")
    assert payload(key, None) is None
    assert payload(key, [{"Key": "k", "Value": "dg=="}]) == {
        "Key": "k",
        "Value": "dg==",
        "Session": "",
    }
    services = WatchConfig(type="services")
    assert payload(services, {"web": ["b", "a"]}) == {"web": ["a", "b"]}
    assert payload(WatchConfig(type="keyprefix", prefix="p/"), None) is None


def test_requests() -> None:
    svc = WatchConfig(type="service", service="web", tags=("a", "b"), passingonly=True)
    assert request(svc) == ("/v1/health/service/web", {"tag": ["a", "b"], "passing": "1"})
    assert request(WatchConfig(type="checks")) == ("/v1/health/state/any", {})
    assert request(WatchConfig(type="event", name="x", datacenter="dc2")) == (
        "/v1/event/list",
        {"dc": "dc2", "name": "x"},
    )


def test_watch_flags_stop_at_the_handler() -> None:
    values, rest = _parse(
        ["--type=key", "-key", "a", "-tag", "x", "-tag=y", "jq", "-r", "."], _WATCH, "watch"
    )
    assert values == {"type": "key", "key": "a", "tags": ["x", "y"]}
    assert rest == ["jq", "-r", "."]


def test_script_handler_gets_stdin_and_index_and_does_not_wait_for_background_children(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    pid_file = tmp_path / "bg.pid"
    script = f'cat > {out}; echo "$CONSUL_INDEX" >> {out}; sleep 30 & echo $! > {pid_file}'
    handler = ScriptHandler(("/bin/sh", "-c", script), timeout=10)

    async def run() -> float:
        started = time.monotonic()
        await handler.run(42, b'{"a":1}\n')
        took = time.monotonic() - started
        os.kill(int(pid_file.read_text()), signal.SIGKILL)  # its pipes close, then its transport
        await asyncio.sleep(0.3)
        return took

    assert asyncio.run(run()) < 5  # not the background sleep's 30 s
    assert out.read_text() == '{"a":1}\n42\n'


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_script_handler_cancelled_while_starting_ends_at_once_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    # The flaky SIGTERM test of `ctemplate watch` had this cause: cancelled before asyncio had
    # connected the handler's pipes, Python killed the shell alone and waited for pipes that its
    # background sleep held open, for 300 s.
    pid_file = tmp_path / "bg.pid"
    handler = ScriptHandler(("/bin/sh", "-c", SCRIPT.format(pid_file=pid_file)), timeout=0)
    assert asyncio.run(cancel_while_starting(handler.run(7, b"null\n"), pid_file)) is None
    # Nothing left open for the garbage collector to close once the loop is gone (it printed
    # "Exception ignored in: BaseSubprocessTransport.__del__ ... Event loop is closed").
    gc.collect()


def test_script_handler_failure_names_status_and_stderr_tail() -> None:
    handler = ScriptHandler(("/bin/sh", "-c", "echo first >&2; echo 'last words' >&2; exit 3"))
    with pytest.raises(CommandError) as info:
        asyncio.run(handler.run(1, b"null\n"))
    assert str(info.value).endswith('exit 3" exited with status 3: first; last words')


def test_watch_blocks_take_their_long_polls_from_the_connection_budget() -> None:
    from ctemplate.config import Config, ConsulConfig
    from ctemplate.runner import Runner

    watches = tuple(WatchConfig(type="key", key=f"k{i}", args=("true",)) for i in range(3))
    # A port nothing listens on: the watches only retry until they are stopped.
    config = Config(consul=ConsulConfig(address="127.0.0.1:9", max_connections=20))

    async def budgets(cfg: Config) -> tuple[int, int]:
        runner = Runner(cfg)
        runner._start_consul(cfg)
        try:
            assert runner._watcher is not None
            return runner._watcher.settings.max_connections, len(runner._watches.stats())
        finally:
            await runner._stop_consul()

    assert asyncio.run(budgets(config)) == (20, 0)
    assert asyncio.run(budgets(replace(config, watches=watches))) == (17, 3)
    assert asyncio.run(budgets(replace(config, watches=watches, once=True))) == (20, 0)
