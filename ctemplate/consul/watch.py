"""Keeping query answers fresh: blocking-query loops planned within a connection budget.

The runner tells the watcher which queries its templates use (:meth:`Watcher.sync`); the
planner (:mod:`ctemplate.plan`) decides which long polls serve them: one dedicated blocking
query per query while they fit the budget, and past that one recursive read per KV prefix and
one health sentinel per datacenter. Every loop delivers into one cache, ``Watcher.data``, keyed
by the queries' canonical identities; templates cannot tell how an answer was obtained.

Blocking-query rules (Consul's documentation, and what consul-template learned the hard way):

* send the last ``X-Consul-Index`` back as ``index``; the same index means nothing changed;
* an index that goes backwards (agent restarted, snapshot restored) resets to 0: read afresh;
* after a failed request the next one does not block: a restarted agent would otherwise hold
  a query with the old, higher index for its whole ``wait`` before answering;
* an index of 0 is treated as 1, so the next request still blocks;
* a new index with equal data is not a change (``==`` on frozen records);
* stale reads are allowed up to ``max_stale``; an answer whose ``X-Consul-LastContact`` is older
  is asked again of the leader;
* at least ``min_interval`` (+ jitter) between two requests of one loop, so a flapping service
  cannot turn into a request storm;
* transient failures are retried with exponential backoff and jitter (tenacity), until
  ``retry_attempts`` or ``max_unavailable`` says to give up (by default never, in a daemon).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConsulError
from .answers import AnswerDecoder
from .client import ConsulClient, ConsulResponse
from .plan import Plan, plan
from .poll import poll_consul, poll_file
from .queries import (
    FileQuery,
    HealthServiceQuery,
    KVGetQuery,
    KVListQuery,
    PolledQuery,
    Query,
)
from .retry import WatchSettings, with_retries

__all__ = ["RESERVED_CONNECTIONS", "QueryFailure", "WatchSettings", "Watcher"]

log = logging.getLogger(__name__)

# Connections kept free of long polls, for short reads (sentinel re-reads, polled endpoints).
RESERVED_CONNECTIONS = 4
_SETTLE_MAX = 1.0  # seconds a loop waits for the runner to write before asking again
_REREAD_CONCURRENCY = RESERVED_CONNECTIONS


# An answer handler returns whether everything the loop serves now has data (for -once).
_OnAnswer = Callable[[ConsulResponse], bool]


class _Poll:
    """One blocking-query loop on one endpoint, following every rule in the module docstring."""

    def __init__(
        self,
        watcher: Watcher,
        name: str,
        path: str,
        params: dict[str, str],
        on_answer: _OnAnswer,
    ) -> None:
        self.watcher = watcher
        self.name = name
        self.path = path
        self.params = params
        self.on_answer = on_answer
        self.index = 0
        self.failed = False  # the last request failed: the next one must not block
        self.blocked = False  # the last answer came from a blocking request
        self.reported: str | None = None  # the non-transient error last reported
        self.decode = AnswerDecoder()  # this loop's answers, unchanged elements reused

    async def run(self) -> None:
        try:
            await self._run()
        finally:  # stopped (no longer needed, or a new plan): its failure state goes with it
            self.watcher.failing.pop(self.name, None)

    async def _run(self) -> None:
        w = self.watcher
        s = w.settings
        last_start = 0.0
        first = True
        while True:
            if not first:
                delay = last_start + s.min_interval + random.uniform(0, s.jitter) - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            last_start = time.monotonic()
            try:
                resp = await self._fetch()
            except ConsulError as exc:
                self.failed = True
                if exc.transient:  # a configured limit was reached
                    w.fail(self.name, exc)
                    return
                # Not worth a fast retry (403, 400...): report once, then try again slowly.
                self._report(exc)
                await asyncio.sleep(s.retry_max_backoff)
                continue
            first = False
            if resp.index < self.index:
                # The agent restarted empty or a snapshot was restored: this answer is the
                # current state at a lower index, so it is taken as a fresh read.
                log.info(
                    "(watch) %s: index went backwards (%d -> %d); reading afresh",
                    self.name,
                    self.index,
                    resp.index,
                )
                self.index = 0
            elif resp.index == self.index and self.blocked:
                w.query_ok(self.name)
                continue
            self.index = max(resp.index, 1)
            changes = w.changes
            try:
                done = self.on_answer(resp)
            except Exception as exc:  # an answer of an unexpected shape (a proxy, a bug)
                log.debug("details", exc_info=exc)
                self.index = 0
                self.failed = True
                error = ConsulError(
                    f"{self.name}: cannot read Consul's answer ({type(exc).__name__}: "
                    f"{exc}); reading again in {s.retry_max_backoff:g}s",
                    transient=False,
                )
                w.query_failed(self.name, error)
                self._report(error)
                await asyncio.sleep(s.retry_max_backoff)
                continue
            self.reported = None
            w.query_ok(self.name)
            if s.once and done:
                return
            if w.changes != changes:
                await w.settled()

    def _report(self, error: ConsulError) -> None:
        if str(error) != self.reported:
            self.reported = str(error)
            self.watcher.fail(self.name, error)

    async def _fetch(self) -> ConsulResponse:
        s = self.watcher.settings
        client = self.watcher.client

        async def attempt() -> ConsulResponse:
            # After a failure, ask without blocking: a restarted agent holds a query whose
            # index is ahead of its own for the whole wait.
            index = 0 if self.failed else self.index
            self.failed = True  # until this attempt succeeds
            stale = s.max_stale > 0
            try:
                resp = await client.get(
                    self.path,
                    self.params,
                    index=index,
                    wait=s.wait,
                    stale=stale,
                    decode=self.decode,
                )
                if stale and resp.last_contact > s.max_stale:
                    log.debug(
                        "(watch) %s: stale by %.1fs; asking the leader",
                        self.name,
                        resp.last_contact,
                    )
                    resp = await client.get(
                        self.path, self.params, index=index, wait=s.wait, decode=self.decode
                    )
            except ConsulError as exc:
                self.watcher.query_failed(self.name, exc)
                raise
            self.failed = False
            self.blocked = index > 0
            return resp

        return await with_retries(s, client.note_retry, attempt)


class _Channel:
    """A running task that keeps the answers of some queries fresh."""

    task: asyncio.Task[None] | None = None

    def start(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self.task = asyncio.get_running_loop().create_task(coro, name=name)

    def cancel(self) -> asyncio.Task[None] | None:
        if self.task is not None:
            self.task.cancel()
        return self.task


def _deliver_decoded(watcher: Watcher, query: Query, data: Any) -> bool:
    """Decode one query's raw answer into the cache; True if the query now has data."""
    key = str(query)
    value = watcher.decode(key, query, data)
    if value is None and query.block_on_nil:
        if key in watcher.data:  # it existed and was deleted: templates must wait again
            watcher.forget(key)
        return False
    watcher.deliver(key, value)
    return True


class _Dedicated(_Channel):
    """One blocking query for one query (or the query's own loop, for polled ones)."""

    def __init__(self, watcher: Watcher, query: Query) -> None:
        key = str(query)
        if isinstance(query, FileQuery):  # a local file: stat() every 2 seconds
            self.start(poll_file(query, watcher), key)
            return
        if isinstance(query, PolledQuery):  # an endpoint without blocking queries
            self.start(poll_consul(query, watcher), key)
            return
        path, params = query.endpoint()
        poll = _Poll(watcher, key, path, params, lambda r: _deliver_decoded(watcher, query, r.data))
        self.start(poll.run(), key)


class _KVPrefix(_Channel):
    """One recursive blocking read under a common prefix, answering many KV queries."""

    def __init__(
        self, watcher: Watcher, dc: str | None, prefix: str, members: tuple[Query, ...]
    ) -> None:
        self.watcher = watcher
        self.members = members
        self._answer = _KVAnswers(watcher, members)
        params = {"recurse": ""}
        if dc:
            params["dc"] = dc
        name = f"kv.prefix({prefix}{'@' + dc if dc else ''})"
        path = KVListQuery(prefix=prefix).endpoint()[0]
        self.start(_Poll(watcher, name, path, params, self._answer).run(), name)


_ABSENT = object()  # a key missing from an answer
_UNSEEN = object()  # a key not (successfully) delivered yet: equal to no answer's value


class _KVAnswers:
    """Hands each member of a KV prefix its part of each recursive answer.

    A change to one key wakes the whole prefix, so only what changed since the last answer is
    decoded and delivered:

    * a ``key``-like member (:class:`KVGetQuery`) is delivered when its key's raw ``Value`` (the
      base64 text, the only field its decoded value depends on; ``None`` for a key without a
      value) differs from the one last delivered, or when the key appeared or went away. Raw
      equality, not ``ModifyIndex``: a value rewritten at the same index (a proxy, a restored
      snapshot) is still seen. Members are looked up by key, so a thousand of them cost one
      dictionary lookup and one string comparison each per answer;
    * a ``ls``/``tree`` member (:class:`KVListQuery`) is delivered when the raw entries under
      its prefix differ (``==`` on the decoded JSON) from those it was last handed.

    A skipped member's delivery already put its value in the cache (or took it out), and
    nothing else delivers its key while this loop serves it (a new plan for the group starts a
    new loop with a new handler). A member that fails to decode (a value that is not base64)
    is not remembered as delivered: it is tried again with the next answer; the others are
    delivered meanwhile, and the first error is raised once they are (the loop reports it and
    reads again). 1,000 ``key()`` members, one changed: ~0.1 ms instead of ~1 ms to decode,
    compare and deliver them all.
    """

    def __init__(self, watcher: Watcher, members: tuple[Query, ...]) -> None:
        self.watcher = watcher
        # key -> the KVGetQuery members on it (key() and keyOrDefault() of one key are two)
        gets: dict[str, list[Query]] = {}
        lists: list[KVListQuery] = []
        for q in members:
            if isinstance(q, KVGetQuery):
                gets.setdefault(q.key, []).append(q)
            else:
                assert isinstance(q, KVListQuery)
                lists.append(q)
        self._gets = {k: tuple(qs) for k, qs in gets.items()}
        self._lists = tuple(lists)
        self._seen: dict[str, Any] = {}  # key -> raw Value last delivered (_ABSENT: no key)
        self._listed: list[Any] = [_UNSEEN] * len(lists)  # raw entries last delivered
        self._waiting: set[Query] = set(members)  # members without data (for -once)

    def __call__(self, resp: ConsulResponse) -> bool:
        """Deliver what changed; True if every member now has data."""
        entries: list[dict[str, Any]] = resp.data or []
        by_key = {e.get("Key"): e for e in entries}
        seen = self._seen
        seen_get = seen.get
        error: Exception | None = None
        for k, queries in self._gets.items():
            entry = by_key.get(k)
            raw = _ABSENT if entry is None else entry.get("Value")
            if seen_get(k, _UNSEEN) == raw:
                continue
            data = None if entry is None else [entry]
            try:
                for q in queries:
                    self._delivered(q, _deliver_decoded(self.watcher, q, data))
            except Exception as exc:
                seen.pop(k, None)  # tried again with the next answer
                error = error or exc
                continue
            seen[k] = raw
        for i, lq in enumerate(self._lists):
            data = [e for e in entries if str(e.get("Key", "")).startswith(lq.prefix)] or None
            if self._listed[i] == data:
                continue
            try:
                self._delivered(lq, _deliver_decoded(self.watcher, lq, data))
            except Exception as exc:
                self._listed[i] = _UNSEEN
                error = error or exc
                continue
            self._listed[i] = data
        if error is not None:
            raise error
        return not self._waiting

    def _delivered(self, query: Query, done: bool) -> None:
        if done:
            self._waiting.discard(query)
        else:
            self._waiting.add(query)


class _Sentinel(_Channel):
    """Service queries of one datacenter, read again only when the catalog says they changed.

    Three blocking queries watch the tables every health answer is built from: checks, services
    and nodes. Every field of a node entry, and each check's ``ModifyIndex`` (which Consul moves
    on any change to the check), are compared, so anything a template can read of them (a
    node's ``Meta``, a check's ``Notes``) leads to a re-read. A changed check names
    its service (or its node, for node checks: every member); a change of the services or nodes
    table cannot be attributed (the services list holds only names and tags) and reads every
    member. Re-reads whose answer equals the cached one are not delivered.
    """

    def __init__(
        self, watcher: Watcher, dc: str | None, members: tuple[HealthServiceQuery, ...]
    ) -> None:
        self.watcher = watcher
        self.dc = dc
        self.name = f"health.sentinel({dc or 'local'})"
        self.members: dict[str, HealthServiceQuery] = {}
        self._pending: set[str] = set()
        self._wanted = asyncio.Event()
        self._baselines: dict[str, Any] = {}
        self._ready = asyncio.Event()
        params = {"dc": dc} if dc else {}
        self._tables = {
            "checks": "/v1/health/state/any",
            "services": "/v1/catalog/services",
            "nodes": "/v1/catalog/nodes",
        }
        self._polls = [
            _Poll(watcher, f"{self.name}:{table}", path, dict(params), self._on_table(table))
            for table, path in self._tables.items()
        ]
        self.update(members)
        self.start(self._run(), self.name)

    def update(self, members: tuple[HealthServiceQuery, ...]) -> None:
        """Serve exactly ``members`` from now on; new ones are read at once."""
        wanted = {str(q): q for q in members}
        new = wanted.keys() - self.members.keys()
        self.members = wanted
        self._reread(new)

    async def _run(self) -> None:
        if self.watcher.settings.once:  # one read of each member is all -once needs
            self._ready.set()
            await self._reread_pending()
            return
        async with asyncio.TaskGroup() as tg:
            for poll in self._polls:
                tg.create_task(poll.run())
            tg.create_task(self._reread_loop())

    def _on_table(self, table: str) -> _OnAnswer:
        def answer(resp: ConsulResponse) -> bool:
            summary = _summaries[table](resp)
            before = self._baselines.get(table)
            self._baselines[table] = summary
            if before is None:
                if len(self._baselines) == len(self._tables):
                    self._ready.set()  # members are read only after every baseline exists
                return True
            self._reread(_changed[table](before, summary, self.members.values()))
            return True

        return answer

    def _reread(self, keys: Iterable[str]) -> None:
        keys = set(keys)
        if keys:
            self._pending |= keys
            self._wanted.set()

    async def _reread_loop(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await self._reread_pending()

    async def _reread_pending(self) -> None:
        await self._ready.wait()
        keys, self._pending = self._pending, set()
        queries = [self.members[k] for k in sorted(keys) if k in self.members]
        if not queries:
            return
        log.debug("(watch) %s: reading %d services again", self.name, len(queries))
        limit = asyncio.Semaphore(_REREAD_CONCURRENCY)
        changes = self.watcher.changes

        async def read(q: HealthServiceQuery) -> Any:
            async with limit:
                return await self.watcher.read(str(q), *q.endpoint())

        # Deliver together: the runner then renders once, not once per service read.
        answers = await asyncio.gather(*(read(q) for q in queries))
        for q, data in zip(queries, answers, strict=True):
            if data is not _FAILED:
                _deliver_decoded(self.watcher, q, data)
        if self.watcher.changes != changes:
            await self.watcher.settled()


_FAILED = object()


# Raft bookkeeping of node entries: no record exposes it.
_RAFT_FIELDS = frozenset({"CreateIndex", "ModifyIndex"})


def _entry(item: Any) -> Any:
    """Every field of a node entry except its Raft indexes (which no record exposes): whatever
    a template can read of it (Meta, Datacenter, TaggedAddresses...) is compared (``==`` on
    the decoded JSON), so a change to any of them leads to a re-read."""
    if not isinstance(item, dict):
        return item
    return {k: v for k, v in item.items() if k not in _RAFT_FIELDS}


_CheckSummary = dict[tuple[str, str], tuple[str, int, str, str]]


def _check_summary(data: Any) -> _CheckSummary:
    """Per check: its service, ``ModifyIndex``, status and output.

    Consul moves a check's ``ModifyIndex`` whenever it writes a change to any of its fields
    (and leaves it alone when a registration repeats it unchanged), so comparing it tells a
    change of anything a template can read of a check (``Notes``, ``Name``, ``ServiceTags``,
    ``ModifyIndex`` itself), at a fifth of the cost of comparing whole entries; status and
    output are compared as well, in case a proxy or a restore reuses an index.
    """
    return {
        (c.get("Node") or "", c.get("CheckID") or ""): (
            c.get("ServiceName") or "",
            c.get("ModifyIndex") or 0,
            c.get("Status") or "",
            c.get("Output") or "",
        )
        for c in data or ()
        if isinstance(c, dict)
    }


def _checks_changed(
    before: _CheckSummary,
    after: _CheckSummary,
    members: Iterable[HealthServiceQuery],
) -> set[str]:
    names: set[str] = set()
    for k in before.keys() | after.keys():
        old, new = before.get(k), after.get(k)
        if old == new:
            continue
        service = (new or old or ("", 0, "", ""))[0]
        if not service:  # a node check (serfHealth, maintenance) concerns every service on it
            return {str(q) for q in members}
        names.add(service)
    return {str(q) for q in members if q.name in names}


def _services_changed(
    before: tuple[int, Any], after: tuple[int, Any], members: Iterable[HealthServiceQuery]
) -> set[str]:
    """Every member, whenever the services table moved.

    ``/v1/catalog/services`` lists names and tags only: a new port, address, ``Meta``, weight
    or tagged address of an instance moves the table's index without changing the list, and
    two registrations answered together can change one service's tags and another's port. The
    list cannot say which services such a change concerns, so all members are read again (an
    unchanged answer is then not delivered: no render, no write).
    """
    if before == after:  # the same index (a read after a failure): nothing changed
        return set()
    return {str(q) for q in members}


def _nodes_changed(before: Any, after: Any, members: Iterable[HealthServiceQuery]) -> set[str]:
    return {str(q) for q in members} if before != after else set()


_summaries: dict[str, Callable[[ConsulResponse], Any]] = {
    "checks": lambda resp: _check_summary(resp.data),
    "services": lambda resp: (resp.index, resp.data),
    "nodes": lambda resp: {
        (n.get("Node") or "", n.get("ID") or ""): _entry(n)
        for n in resp.data or ()
        if isinstance(n, dict)
    },
}
_changed: dict[str, Callable[[Any, Any, Iterable[HealthServiceQuery]], set[str]]] = {
    "checks": _checks_changed,
    "services": _services_changed,
    "nodes": _nodes_changed,
}


@dataclass(slots=True)
class QueryFailure:
    """The current failure streak of one query (or of a loop serving several)."""

    error: str  # the latest error's message
    since: float  # time.monotonic() of the first failure of the streak
    count: int = 1  # failed requests in the streak
    logged: bool = False  # its start was logged: its end will be
    member: bool = False  # a query read by a sentinel (keyed by the query, not by a loop)


class Watcher:
    """Keeps the answers of the queries templates use fresh, within a connection budget.

    ``on_change(key)`` is called for every delivered change; ``on_error(key, error)`` when a
    loop fails. ``data`` is the cache templates read.
    """

    def __init__(
        self,
        client: ConsulClient,
        settings: WatchSettings,
        on_change: Callable[[str], None],
        on_error: Callable[[str, ConsulError], None],
    ) -> None:
        self.client = client
        self.settings = settings
        self.data: dict[str, Any] = {}
        self._decoders: dict[str, Callable[[Any], Any]] = {}  # see decode()
        self.changes = 0  # deliveries so far: a loop that delivered waits for the runner
        self.plan = Plan()
        self._wanted: frozenset[str] = frozenset()
        self._dedicated: dict[str, _Dedicated] = {}
        self._kv: dict[tuple[str | None, str], tuple[tuple[Query, ...], _KVPrefix]] = {}
        self._sentinels: dict[str | None, _Sentinel] = {}
        self._settled = asyncio.Event()
        self._on_change = on_change
        self._on_error = on_error
        # Loops and queries whose last request failed, by name: /health lists them.
        self.failing: dict[str, QueryFailure] = {}

    @property
    def dedicated_limit(self) -> int:
        return max(1, self.settings.max_connections - RESERVED_CONNECTIONS)

    def sync(self, queries: Mapping[str, Query]) -> None:
        """Watch exactly ``queries`` (canonical key -> query) from now on."""
        wanted = frozenset(queries)
        if wanted == self._wanted:
            return
        self._wanted = wanted
        new = plan(queries.values(), self.dedicated_limit)
        if new.long_polls > self.dedicated_limit:
            log.warning(
                "(watch) %d long polls are needed for %d queries, more than the %d connections "
                "allowed (consul.max_connections); some will wait for a free connection",
                new.long_polls,
                len(queries),
                self.settings.max_connections,
            )
        if (len(new.dedicated), len(new.kv), len(new.services)) != (
            len(self.plan.dedicated),
            len(self.plan.kv),
            len(self.plan.services),
        ):
            log.debug(
                "(watch) %d queries: %d dedicated, %d KV prefixes, %d health sentinels",
                len(queries),
                len(new.dedicated),
                len(new.kv),
                len(new.services),
            )
        self.plan = new
        self._apply(new)
        for key in list(self.data):
            if key not in wanted:
                del self.data[key]
        for key in list(self._decoders):
            if key not in wanted:
                del self._decoders[key]
        for key, failure in list(self.failing.items()):
            if failure.member and key not in wanted:
                del self.failing[key]

    def _apply(self, p: Plan) -> None:
        dedicated = {str(q): q for q in p.dedicated}
        for key in self._dedicated.keys() - dedicated.keys():
            self._dedicated.pop(key).cancel()
            log.debug("(watch) %s: stopped", key)
        for key, q in dedicated.items():
            if key not in self._dedicated:
                self._dedicated[key] = _Dedicated(self, q)
        for group in list(self._kv):
            if p.kv.get(group) != self._kv[group][0]:
                self._kv.pop(group)[1].cancel()
        for group, members in p.kv.items():
            if group not in self._kv:
                dc, prefix = group
                self._kv[group] = (members, _KVPrefix(self, dc, prefix, members))
        for dc in list(self._sentinels):
            if dc not in p.services:
                self._sentinels.pop(dc).cancel()
        for dc, svc in p.services.items():
            if dc in self._sentinels:
                self._sentinels[dc].update(svc)
            else:
                self._sentinels[dc] = _Sentinel(self, dc, svc)

    async def stop(self) -> None:
        channels: list[_Channel] = [
            *self._dedicated.values(),
            *(c for _m, c in self._kv.values()),
            *self._sentinels.values(),
        ]
        self._dedicated.clear()
        self._kv.clear()
        self._sentinels.clear()
        tasks = [t for t in (c.cancel() for c in channels) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def read(self, name: str, path: str, params: dict[str, str]) -> Any:
        """One non-blocking read with the retry policy; ``_FAILED`` after reporting an error."""
        s = self.settings

        async def attempt() -> Any:
            try:
                resp = await self.client.get(path, params, stale=s.max_stale > 0)
            except ConsulError as exc:
                self.query_failed(name, exc, member=True)
                raise
            self.query_ok(name)
            return resp.data

        try:
            return await with_retries(s, self.client.note_retry, attempt)
        except ConsulError as exc:
            self.fail(name, exc)
        return _FAILED

    def decode(self, key: str, query: Query, data: Any) -> Any:
        """``query.decode(data)``, through one decoder per watched query, which may reuse what it
        built from the query's previous answer (the records of unchanged service instances)."""
        if key not in self._wanted:
            return query.decode(data)
        decoder = self._decoders.get(key)
        if decoder is None:
            decoder = self._decoders[key] = query.decoder()
        return decoder(data)

    def deliver(self, key: str, value: Any) -> bool:
        """Store new data; True if it differs from what templates saw before."""
        if key not in self._wanted:
            return False
        if key in self.data and self.data[key] == value:
            return False
        self.data[key] = value
        self.changes += 1
        self._settled.clear()
        self._on_change(key)
        return True

    def forget(self, key: str) -> None:
        """Drop data that no longer exists (a deleted key): templates using it wait again."""
        self.data.pop(key, None)
        self.changes += 1
        self._settled.clear()
        self._on_change(key)

    def fail(self, key: str, error: ConsulError) -> None:
        self._on_error(key, error)

    def query_failed(self, key: str, error: ConsulError, *, member: bool = False) -> None:
        """Note that a request of ``key`` (a query, or a loop serving several) failed.

        Each query has its own failure state, so one that keeps failing while the others
        succeed (a datacenter that is gone, a 403, an answer that trickles) is logged once when
        it starts failing and once when it recovers, and shows on ``/health``; it does not touch
        the client's "reachable" state. While the agent cannot be reached at all, the client
        logs the outage once and the queries say nothing more.
        """
        failure = self.failing.get(key)
        if failure is None:
            failure = self.failing[key] = QueryFailure(str(error), time.monotonic(), member=member)
        else:
            failure.error = str(error)
            failure.count += 1
        if failure.logged:
            return
        if not error.transient:  # reported once by the loop (on_error), retried slowly
            failure.logged = True
        elif self.client.available:
            failure.logged = True
            log.warning(
                "(watch) %s: %s; retrying with backoff, keeping the last good files", key, error
            )

    def query_ok(self, key: str) -> None:
        """A request of ``key`` succeeded: it is no longer failing."""
        failure = self.failing.pop(key, None) if self.failing else None
        if failure is not None and failure.logged:
            log.info(
                "(watch) %s: Consul answers again after %.1fs (%d failed request%s)",
                key,
                time.monotonic() - failure.since,
                failure.count,
                "" if failure.count == 1 else "s",
            )

    def settle(self) -> None:
        """Called by the runner once it has written what the delivered changes affect."""
        self._settled.set()

    async def settled(self) -> None:
        """Wait (briefly) until the runner has acted on what was delivered, so the next long
        poll does not compete with the write for the CPU."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps the wait in a task of its
        # own, two more turns of the loop and a task for every change.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SETTLE_MAX):
                await self._settled.wait()
