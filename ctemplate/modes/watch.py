"""``consul watch``'s loop: one blocking query per watch, a handler run per change.

The rules, as in Consul's ``api/watch`` package:

* the first query does not block, so the handler runs at start with the current data
  (``skip_initial`` opts out; a state file keeps what was last handed over, so a restart does not
  fire again on unchanged data);
* later queries block on the last ``X-Consul-Index``; the same index runs nothing, and neither does
  a new index whose data equals the last (``==`` on the decoded JSON);
* the handler gets the Consul API's JSON for the type (:func:`payload`), compact, on stdin;
* ``event`` watches follow ``/v1/event/list``: the index is not a raft index but the newest event's
  ID folded into 64 bits (:func:`event_index`), not monotonic; only the events after the one whose
  ID matches the last index are handed over (the whole buffer at start).

What ctemplate adds: runs of one watch never overlap and changes during a run are coalesced into
one more run (events are appended, other types keep the newest data); a failing or hung handler is
reported and the watch carries on; transient errors use ctemplate's retry policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import tempfile
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..config.model import WATCH_TYPE_PARAMS, WatchConfig
from ..consul.client import ConsulClient, ConsulResponse
from ..consul.retry import WatchSettings, gave_up, retrying
from ..errors import CommandError, ConfigError, ConsulError
from .handlers import Handler

__all__ = [
    "TYPES",
    "WatchLoop",
    "WatchStats",
    "encode",
    "event_index",
    "payload",
    "request",
    "validate",
]

log = logging.getLogger(__name__)

TYPES = ("key", "keyprefix", "services", "nodes", "service", "checks", "event")
CHECK_STATES = ("any", "passing", "warning", "critical")

# Members Consul's Go client fills in with zero values when the HTTP API leaves them out, so a
# handler sees the same members as from ``consul watch`` (Consul 1.8's api structs).
_CHECK_DEFINITION = {
    "Interval": "0s",
    "Timeout": "0s",
    "DeregisterCriticalServiceAfter": "0s",
    "HTTP": "",
    "Header": None,
    "Method": "",
    "Body": "",
    "TLSSkipVerify": False,
    "TCP": "",
}


def validate(w: WatchConfig) -> None:
    """Check a watch's parameters as Consul does; :class:`ConfigError` names ``w.origin``."""
    where = w.origin or "watch"
    if w.type not in TYPES:
        raise ConfigError(
            f"{where}: type {json.dumps(w.type)} is not one of {', '.join(TYPES)}"
            if w.type
            else f"{where}: type is required (one of {', '.join(TYPES)})"
        )
    needs = {"key": "key", "keyprefix": "prefix", "service": "service"}.get(w.type)
    if needs and not getattr(w, needs):
        raise ConfigError(f"{where}: a {w.type} watch needs {needs}")
    given = {
        "key": bool(w.key),
        "prefix": bool(w.prefix),
        "service": bool(w.service),
        "tag": bool(w.tags),
        "passingonly": w.passingonly,
        "state": bool(w.state),
        "name": bool(w.name),
        "stale": w.stale,
    }
    for name, set_ in given.items():
        if set_ and name not in WATCH_TYPE_PARAMS[w.type]:
            raise ConfigError(f"{where}: {name} does not apply to a {w.type} watch; remove it")
    if w.type == "checks":
        if w.service and w.state:
            raise ConfigError(f"{where}: a checks watch takes service or state, not both")
        if w.state and w.state not in CHECK_STATES:
            raise ConfigError(
                f"{where}: state {json.dumps(w.state)} is not one of {', '.join(CHECK_STATES)}"
            )
    if w.handler_type not in ("script", "http"):
        raise ConfigError(
            f'{where}: handler_type {json.dumps(w.handler_type)} must be "script" or "http"'
        )
    if w.handler_type == "http" and w.http is None:
        raise ConfigError(f'{where}: handler_type "http" needs an http_handler_config block')
    if w.args and w.handler:
        raise ConfigError(f"{where}: give args or handler, not both")


def request(w: WatchConfig) -> tuple[str, dict[str, str | list[str]]]:
    """The endpoint and parameters of a watch's query."""
    params: dict[str, str | list[str]] = {}
    if w.datacenter:
        params["dc"] = w.datacenter
    if w.type == "key":
        return f"/v1/kv/{quote(w.key)}", params
    if w.type == "keyprefix":
        params["recurse"] = ""
        return f"/v1/kv/{quote(w.prefix)}", params
    if w.type == "services":
        return "/v1/catalog/services", params
    if w.type == "nodes":
        return "/v1/catalog/nodes", params
    if w.type == "service":
        if w.tags:
            params["tag"] = list(w.tags)
        if w.passingonly:
            params["passing"] = "1"
        return f"/v1/health/service/{quote(w.service, safe='')}", params
    if w.type == "checks":
        if w.service:
            return f"/v1/health/checks/{quote(w.service, safe='')}", params
        return f"/v1/health/state/{w.state or 'any'}", params
    if w.name:
        params["name"] = w.name
    return "/v1/event/list", params


def event_index(event_id: str) -> int:
    """An event ID folded into the 64-bit index ``/v1/event/list`` answers with (Consul's
    ``IDToIndex``: the two halves of the UUID XOR-ed)."""
    try:
        lower = int(event_id[0:8] + event_id[9:13] + event_id[14:18], 16)
        upper = int(event_id[19:23] + event_id[24:36], 16)
    except ValueError:
        return 0
    return lower ^ upper


def _kv(pair: Any) -> Any:
    if isinstance(pair, dict):
        pair.setdefault("Session", "")
    return pair


def _checks(checks: Any) -> Any:
    if isinstance(checks, list):
        for check in checks:
            if isinstance(check, dict):
                definition = check.get("Definition")
                if isinstance(definition, dict):
                    for name, zero in _CHECK_DEFINITION.items():
                        definition.setdefault(name, zero)
    return checks


def payload(w: WatchConfig, data: Any) -> Any:
    """What the handler gets for an answer: the API's JSON, shaped as ``consul watch`` hands it
    (a single KV pair rather than a list of one, ``null`` for no key, zero-valued members the
    Go client would add)."""
    if w.type == "key":
        return _kv(data[0]) if isinstance(data, list) and data else None
    if w.type == "keyprefix":
        return [_kv(p) for p in data] if isinstance(data, list) else None
    if w.type == "checks":
        return _checks(data)
    if w.type == "service" and isinstance(data, list):
        for entry in data:
            if isinstance(entry, dict):
                _checks(entry.get("Checks"))
        return data
    if w.type == "event":
        return data if isinstance(data, list) else []
    if w.type == "services" and isinstance(data, dict):
        # Consul lists a service's tags in no stable order (a map behind the endpoint), so two
        # equal answers could differ: sorted, a new index with the same tags runs nothing.
        return {
            name: sorted(tags) if isinstance(tags, list) else tags for name, tags in data.items()
        }
    return data


def encode(value: Any) -> bytes:
    """Compact JSON with a final newline, as Go's ``json.Encoder`` writes it."""
    return (json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _prune(events: list[Any], last: int | None) -> list[Any]:
    """The events after the one whose ID matches ``last`` (all of them when none does)."""
    if last is None:
        return events
    for i, event in enumerate(events):
        if isinstance(event, dict) and event_index(str(event.get("ID", ""))) == last:
            return events[i + 1 :]
    return events


def identity(w: WatchConfig) -> str:
    """The watch's identity in its state file and its name in logs and /metrics."""
    what = {
        "key": w.key,
        "keyprefix": w.prefix,
        "service": w.service + "".join(f"[{t}]" for t in w.tags),
        "checks": w.service or w.state or "any",
        "event": w.name or "*",
    }.get(w.type, "")
    dc = f"@{w.datacenter}" if w.datacenter else ""
    return f"{w.type}({what}{dc})" if what else f"{w.type}{('(' + dc + ')') if dc else ''}"


@dataclass
class WatchStats:
    """What /health and /metrics show of one watch (mutable, updated by its loop)."""

    name: str  # where the watch was declared ("ct.hcl: watch[1]")
    query: str  # what it watches ("keyprefix(pepabo/)")
    runs: int = 0
    failures: int = 0
    seconds: float = 0.0
    last_index: int = 0
    last_error: str = ""
    running: bool = False
    has_data: bool = False


@dataclass(frozen=True, slots=True)
class _State:
    index: int
    digest: str


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class WatchLoop:
    """One watch: its blocking-query loop and its handler runs.

    ``handler=None`` returns after the first answer, which :attr:`first` then holds (the CLI
    without a handler prints it).
    """

    def __init__(
        self,
        watch: WatchConfig,
        client: ConsulClient,
        settings: WatchSettings,
        handler: Handler | None,
    ) -> None:
        validate(watch)
        self.watch = watch
        self.client = client
        self.settings = settings
        self.handler = handler
        self.name = watch.origin or identity(watch)
        self.stats = WatchStats(self.name, identity(watch))
        self.first: Any = None
        self._pending: tuple[int, Any] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._path, self._params = request(watch)
        self._headers = {"X-Consul-Token": watch.token} if watch.token else None

    # --- the query loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Watch until cancelled; raises :class:`ConsulError` when the retry limits are hit."""
        w = self.watch
        is_event = w.type == "event"
        state = self._load_state()
        send = 0  # the index the next request blocks on
        last: int | None = None  # the last index seen
        last_value: Any = None
        first = True
        failed = False
        last_start = 0.0
        try:
            while True:
                delay = last_start + self.settings.min_interval - time.monotonic()
                if not first and delay > 0:
                    await asyncio.sleep(delay + random.uniform(0, self.settings.jitter))
                last_start = time.monotonic()
                try:
                    resp = await self._fetch(0 if failed else send)
                except ConsulError as exc:
                    if exc.transient or self.handler is None:  # a limit, or printing once
                        raise
                    failed = True
                    self.stats.last_error = str(exc)
                    log.error("(watch) %s: %s", self.name, exc)
                    await asyncio.sleep(self.settings.retry_max_backoff)
                    continue
                failed = False
                new = resp.index
                if last is not None and new == last:
                    send = last
                    continue
                value = resp.data
                if is_event:
                    prune_from = last if last is not None else (state.index if state else None)
                    value = _prune(value if isinstance(value, list) else [], prune_from)
                value = payload(w, value)
                old, last = last, new
                if is_event or old is None or new >= old:
                    send = max(new, 1) if not is_event else new
                else:  # the index went backwards: read afresh, without blocking
                    send = 0
                if old is not None and value == last_value:
                    continue
                last_value = value
                self.stats.last_index = new
                self.stats.has_data = True
                if self.handler is None:
                    self.first = value
                    return
                if first:
                    first = False
                    if w.skip_initial:
                        log.info("(watch) %s: skipping the data found at start", self.name)
                        continue
                    if state is not None and (
                        (is_event and not value)
                        or (not is_event and state.digest == _digest(encode(value)))
                    ):
                        log.info("(watch) %s: unchanged since the state file", self.name)
                        continue
                self._offer(new, value)
        finally:
            if self._runner is not None:
                self._runner.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._runner

    async def _fetch(self, index: int) -> ConsulResponse:
        from tenacity import RetryError  # not at import: a daemon without watches never needs it

        s = self.settings
        try:
            async for attempt in retrying(s):
                with attempt:
                    return await self.client.get(
                        self._path,
                        self._params,
                        index=index,
                        wait=s.wait,
                        stale=self.watch.stale,
                        headers=self._headers,
                    )
        except RetryError as exc:
            raise gave_up(exc, s) from exc.last_attempt.exception()
        raise AssertionError("unreachable")

    # --- handler runs: never two at once, changes during a run coalesced -------------------

    def _offer(self, index: int, value: Any) -> None:
        if self._pending is not None and self.watch.type == "event":
            value = [*self._pending[1], *value]
        self._pending = (index, value)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain(), name=f"watch {self.name}")

    async def _drain(self) -> None:
        while self._pending is not None:
            index, value = self._pending
            self._pending = None
            await self._run_handler(index, value)

    async def _run_handler(self, index: int, value: Any) -> None:
        assert self.handler is not None
        body = encode(value)
        started = time.monotonic()
        self.stats.running = True
        try:
            await self.handler.run(index, body)
        except CommandError as exc:
            self.stats.failures += 1
            self.stats.last_error = str(exc)
            log.error("(watch) %s: %s", self.name, exc)
        else:
            self.stats.last_error = ""
            if self.watch.type == "event" and isinstance(value, list) and value:
                # The state of an event watch is the last event handed over.
                self._save_state(event_index(str(value[-1].get("ID", ""))), body)
            elif self.watch.type != "event":
                self._save_state(index, body)
        finally:
            self.stats.running = False
            self.stats.runs += 1
            self.stats.seconds += time.monotonic() - started

    # --- the state file ------------------------------------------------------------------

    def _load_state(self) -> _State | None:
        path = self.watch.state_file
        if not path:
            return None
        try:
            with open(path, encoding="utf-8") as handle:
                raw = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("(watch) %s: ignoring the state file %s: %s", self.name, path, exc)
            return None
        if not isinstance(raw, dict) or raw.get("watch") != identity(self.watch):
            log.warning(
                "(watch) %s: the state file %s belongs to another watch; ignoring it",
                self.name,
                path,
            )
            return None
        try:
            return _State(int(raw["index"]), str(raw["digest"]))
        except (KeyError, TypeError, ValueError):
            log.warning("(watch) %s: ignoring the malformed state file %s", self.name, path)
            return None

    def _save_state(self, index: int, body: bytes) -> None:
        path = self.watch.state_file
        if not path:
            return
        data = json.dumps({"watch": identity(self.watch), "index": index, "digest": _digest(body)})
        directory = os.path.dirname(os.path.abspath(path))
        try:
            fd, tmp = tempfile.mkstemp(prefix=".ctemplate-watch-", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(data + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)  # replaces a planted symlink instead of following it
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            log.error("(watch) %s: cannot write the state file %s: %s", self.name, path, exc)
