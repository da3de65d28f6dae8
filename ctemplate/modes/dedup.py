"""De-duplication: one instance per template reads Consul, every other instance reads its data.

When the same template runs on many hosts, each host would hold the same blocking queries, and
the Consul servers' load would grow with the fleet. With ``deduplicate { enabled = true }`` the
instances elect one *leader* per template through a Consul lock; the leader watches the
template's queries as usual and publishes, in the KV store, the data it rendered from; every
other instance (a *follower*) learns of each new version from a user event (below) and renders
from it, exactly as the leader does. Host-local inputs (``env``, ``file``, ``node()`` of the
local agent, ``caLeaf``'s private keys) are never published: each host reads its own.

Keys, under ``prefix`` (default ``ctemplate/dedup/``) and the template's id::

    <prefix><id>/lock                the lock; held by the leader's session (deleted with it)
    <prefix><id>/data                "CTD1 {header}\\n" + the payload, or only the header when the
                                     payload is split into chunks
    <prefix><id>/chunks/<hash>/NNNN  the chunks of a payload past Consul's 512 KB value limit

The payload is the JSON of ``{query identity: value}`` (records tagged with their type, read back
only into ctemplate's own record classes), zlib-compressed; the header names its SHA-256 hash,
its size and how many chunks hold it. Chunks are named by the hash and written before the data
key, which the leader writes in a transaction that checks it still holds the lock: a reader never
mixes two versions (it checks the hash) and a deposed leader cannot overwrite newer data.

The template's id is a hash of what decides which queries it makes and how: its text, syntax and
delimiters. Not its source path, destination, command or permissions, so hosts that write the
file to different places share the work.

Each new payload is announced with a Consul user event named ``ctemplate-dedup-<12 hex>`` (a hash
of the prefix and the id). Events travel by gossip to every agent, and followers wait for them
with a blocking read of their own agent's event list, which the agent answers itself: between
changes a follower costs the servers nothing but its lock watch. When the change is small (up to
about 270 compressed bytes: a check flips, an instance comes or goes) the event carries it as a
difference from the previous payload (:mod:`.delta`); the follower applies it and checks the
result against the new hash, again without a request to the servers. Otherwise, or when the
difference does not fit what the follower holds, it reads the data key once. The event is
authenticated with an HMAC keyed by the previous payload's full hash (known only to those who
could read the data), sent twice (gossip loses a few events in a thousand), and every follower
also reads the data key once per ``block_query_wait`` without events, so a lost or forged event
costs at most a read, never a wrong file.

One Consul session per process (TTL ``ttl``, ``Behavior = "delete"``, lock delay 1 ms), held only
while the process leads a template or tries to take a free lock (a follower of everything renews
nothing), renewed at half the TTL. Consul may take up to twice the TTL to invalidate
the session of an instance that died; then its lock key is deleted, the followers' blocking reads
of it return at once, and one of them takes over.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import socket
import time
import zlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ..config import DedupConfig
from ..consul import records
from ..consul.client import ConsulClient
from ..consul.queries import AgentSelfQuery, ConnectCALeafQuery, FileQuery, Query
from ..errors import ConsulError
from . import delta

__all__ = ["Dedup", "decode_payload", "encode_payload", "shareable", "template_id"]

log = logging.getLogger(__name__)

MAGIC = b"CTD1 "
CHUNK_SIZE = 400 * 1024  # Consul refuses values over 512 KiB
_RETRY = 2.0  # seconds between attempts after a failed request
_LOCK_DELAY_RETRY = 0.5  # seconds, when the lock is free but Consul's lock delay refuses it
_ANNOUNCED_WAIT = 10.0  # seconds to wait for an announced version on a lagging server
# Gossip loses a few events in a thousand per agent (measured: 4 of 600 on 5 agents), found
# again only at the next push-pull (30 s, more in large clusters): each announcement is sent a
# second time this many seconds later, unless a newer version was published meanwhile.
_REANNOUNCE = 2.0
EVENT_MAGIC = b"CTE1"
# Consul refuses a user event whose name, payload and envelope pass 512 bytes; with the 28
# characters of the name a payload of ~350 bytes still goes: keep a margin.
EVENT_PAYLOAD_MAX = 320
_EVENT_HEADER = len(EVENT_MAGIC) + 16 + 8  # magic, the new hash's first 16 bytes, ModifyIndex
_EVENT_MAC = 16
_ZDICT = 32 * 1024  # zlib's window: the previous payload's tail is the delta's dictionary
_DELTA_MAX_TEXT = 64 * 1024  # differences larger than this are not worth compressing
_DELTA_MAX_OUT = 8 * 1024 * 1024  # a decompressed difference past this is refused

Role = str  # "starting" | "leader" | "follower"


def template_id(text: str, *, syntax: str = "", left: str = "", right: str = "") -> str:
    """The identity of a template's work: what decides which queries it makes."""
    h = hashlib.sha256(b"ctemplate-dedup-1\0")
    for part in (syntax, left, right, text):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def shareable(query: Query) -> bool:
    """Whether a query's answer may be published: not host-local, not a secret."""
    return not isinstance(query, FileQuery | AgentSelfQuery | ConnectCALeafQuery)


# --- the payload ------------------------------------------------------------------------------

_RECORDS: dict[str, type[Any]] = {
    name: cls
    for name, cls in vars(records).items()
    if isinstance(cls, type)
    and dataclasses.is_dataclass(cls)
    and cls.__module__ == records.__name__
}


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, tuple):
        return {"@t": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"@d": {str(k): _encode(v) for k, v in value.items()}}
    if isinstance(value, datetime):
        return {"@dt": value.isoformat()}
    name = type(value).__name__
    if dataclasses.is_dataclass(value) and _RECORDS.get(name) is type(value):
        return {
            "@r": name,
            "f": {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)},
        }
    raise TypeError(f"cannot publish a {name}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "@t" in value:
        return tuple(_decode(v) for v in value["@t"])
    if "@d" in value:
        return {k: _decode(v) for k, v in value["@d"].items()}
    if "@dt" in value:
        return datetime.fromisoformat(value["@dt"])
    cls = _RECORDS.get(value.get("@r", ""))
    if cls is None:
        raise ValueError(f"unknown record type {value.get('@r')!r}")
    return cls(**{k: _decode(v) for k, v in value["f"].items()})


def payload_body(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as a JSON document (records tagged with their type)."""
    return {"v": 1, "values": {k: _encode(v) for k, v in values.items()}}


def canonical(body: Any) -> bytes:
    """The one byte form of a JSON document (sorted keys, no spaces): what the hash covers."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def encode_payload(values: Mapping[str, Any]) -> tuple[bytes, str]:
    """The JSON bytes of ``values`` (stable: sorted keys) and their SHA-256 hex digest."""
    data = canonical(payload_body(values))
    return data, hashlib.sha256(data).hexdigest()


def body_values(body: Any) -> dict[str, Any]:
    """The values a payload document holds, read back into ctemplate's records."""
    if not isinstance(body, dict) or body.get("v") != 1 or not isinstance(body.get("values"), dict):
        raise ValueError("not a version 1 payload")
    return {k: _decode(v) for k, v in body["values"].items()}


def decode_payload(data: bytes) -> dict[str, Any]:
    return body_values(json.loads(data))


def event_name(prefix: str, tid: str) -> str:
    """The user event that announces a template's payloads."""
    return "ctemplate-dedup-" + hashlib.sha256(f"{prefix}\0{tid}".encode()).hexdigest()[:12]


def encode_event(
    digest: str, index: int, prev_digest: str, prev_raw: bytes, prev_body: Any, body: Any
) -> bytes:
    """The announcement of payload ``digest`` (written at ``index``): with the difference from
    the previous payload when there is one and it fits, else only the hash and the index."""
    packed = b""
    if prev_body is not None and prev_digest and prev_raw:
        text = json.dumps(delta.diff(prev_body, body), separators=(",", ":"), ensure_ascii=False)
        if len(text) <= _DELTA_MAX_TEXT:
            z = zlib.compressobj(9, zdict=prev_raw[-_ZDICT:])
            packed = z.compress(text.encode()) + z.flush()
            if _EVENT_HEADER + _EVENT_MAC + len(packed) > EVENT_PAYLOAD_MAX:
                packed = b""
    header = EVENT_MAGIC + bytes.fromhex(digest)[:16] + index.to_bytes(8, "big")
    return header + _mac(prev_digest, header + packed) + packed


def _mac(key_digest: str, message: bytes) -> bytes:
    if not key_digest:
        return bytes(_EVENT_MAC)
    return hmac.new(bytes.fromhex(key_digest), message, "sha256").digest()[:_EVENT_MAC]


@dataclasses.dataclass(frozen=True, slots=True)
class Announcement:
    """A decoded event: the new payload's hash prefix, its ModifyIndex, MAC and difference."""

    digest16: bytes
    index: int
    mac: bytes
    packed: bytes
    signed: bytes

    @classmethod
    def parse(cls, payload: bytes) -> Announcement | None:
        if len(payload) < _EVENT_HEADER + _EVENT_MAC or not payload.startswith(EVENT_MAGIC):
            return None
        m = len(EVENT_MAGIC)
        header = payload[:_EVENT_HEADER]
        packed = payload[_EVENT_HEADER + _EVENT_MAC :]
        return cls(
            digest16=payload[m : m + 16],
            index=int.from_bytes(payload[m + 16 : _EVENT_HEADER], "big"),
            mac=payload[_EVENT_HEADER : _EVENT_HEADER + _EVENT_MAC],
            packed=packed,
            signed=header + packed,
        )

    def apply(self, digest: str, raw: bytes, body: Any) -> tuple[Any, bytes, str] | None:
        """The payload this announcement leads to from the one held (``digest``, its bytes
        ``raw`` and document ``body``, which may be changed in place), or None when it does not
        lead there from it (another base, a bad MAC, a difference that does not fit)."""
        if not self.packed or not digest or not raw or body is None:
            return None
        if not hmac.compare_digest(_mac(digest, self.signed), self.mac):
            return None
        try:
            z = zlib.decompressobj(zdict=raw[-_ZDICT:])
            text = z.decompress(self.packed, _DELTA_MAX_OUT)
            if z.unconsumed_tail or not z.eof:
                return None
            new_body = delta.apply(body, json.loads(text))
        except (zlib.error, ValueError, TypeError, RecursionError):
            return None
        data = canonical(new_body)
        new_digest = hashlib.sha256(data).hexdigest()
        if bytes.fromhex(new_digest)[:16] != self.digest16:
            return None
        return new_body, data, new_digest


# --- one template's election and data ----------------------------------------------------------


@dataclasses.dataclass(eq=False)
class _Template:
    id: str
    base: str  # "<prefix><id>/"
    name: str  # the template, for messages: "upstream.conf.j2 (dedup 1c9c3bd7df1a)"
    event: str  # the user event that announces its payloads
    role: Role = "starting"
    values: dict[str, Any] | None = None  # follower: the published data last applied
    # The newest payload this instance knows to be published (the leader: what it wrote; a
    # follower: what it applied): its hash, ModifyIndex, bytes and document, the base of the
    # next difference. ``raw`` and ``body`` are empty when only the hash is known.
    digest: str = ""
    applied_index: int = 0
    raw: bytes = b""
    body: Any = None
    published_chunks: int = 0  # how many chunks the published payload has (0: inline)
    checked_at: float = 0.0  # when a follower last read the data key or applied a difference
    not_leader: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    pending: dict[str, Any] | None = None
    wake_publisher: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    publishes: int = 0
    no_events: bool = False  # follower: announcements do not reach it: follow the data key
    missed: int = 0  # follower: versions in a row found by a check, not announced
    deltas: int = 0  # follower: payloads rebuilt from an event's difference (no read)
    reads: int = 0  # follower: payloads read from the data key

    @property
    def lock(self) -> str:
        return f"{self.base}lock"

    @property
    def data(self) -> str:
        return f"{self.base}data"

    def known(self, digest: str, index: int, raw: bytes, body: Any) -> None:
        self.digest, self.applied_index, self.raw, self.body = digest, index, raw, body


class Dedup:
    """Elections and shared data for the templates of one process.

    ``on_data(id)``: a follower's data changed; ``on_role(id)``: the role of a template changed.
    Both are called on the event loop; the runner executes the template again.
    """

    def __init__(
        self,
        client: ConsulClient,
        config: DedupConfig,
        *,
        on_data: Callable[[str], None],
        on_role: Callable[[str], None],
    ) -> None:
        self._client = client
        self._config = config
        self._on_data = on_data
        self._on_role = on_role
        self._templates: dict[str, _Template] = {}
        self._session = ""
        self._session_lock = asyncio.Lock()
        self._acquiring = 0  # acquisitions in flight (they need the session)
        self._renewed_at = 0.0
        self._session_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._holder = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()

    # --- what the runner asks --------------------------------------------------------------

    def role(self, tid: str) -> Role:
        t = self._templates.get(tid)
        return t.role if t else "starting"

    def values(self, tid: str) -> Mapping[str, Any] | None:
        """The published data a follower renders from (None: nothing published yet)."""
        t = self._templates.get(tid)
        if t is None or t.role == "leader":
            return None
        return t.values

    def publish(self, tid: str, values: dict[str, Any]) -> None:
        """A leader rendered from ``values``: share them (if they differ from what is shared)."""
        t = self._templates.get(tid)
        if t is None or t.role != "leader":
            return
        t.pending = values
        t.wake_publisher.set()

    def publishes(self, tid: str) -> int:
        """Payloads this instance published as the template's leader."""
        t = self._templates.get(tid)
        return t.publishes if t else 0

    def follower_counts(self, tid: str) -> tuple[int, int]:
        """As a follower: payloads rebuilt from events alone, and payloads read from Consul."""
        t = self._templates.get(tid)
        return (t.deltas, t.reads) if t else (0, 0)

    def sync(self, ids: Mapping[str, str]) -> None:
        """Take part in the elections of exactly these templates."""
        for tid in list(self._templates):
            if tid not in ids:
                for task in self._templates.pop(tid).tasks:
                    task.cancel()
        for tid in ids.keys() - self._templates.keys():
            t = _Template(
                tid,
                f"{self._config.prefix}{tid}/",
                ids[tid],
                event_name(self._config.prefix, tid),
            )
            t.not_leader.set()
            self._templates[tid] = t
            t.tasks = [
                asyncio.create_task(self._contest(t), name=f"dedup lock {tid[:12]}"),
                asyncio.create_task(self._follow(t), name=f"dedup data {tid[:12]}"),
                asyncio.create_task(self._publisher(t), name=f"dedup publish {tid[:12]}"),
            ]

    async def stop(self) -> None:
        """Give up every lock at once (destroying the session deletes the lock keys), so another
        instance takes over without waiting for the TTL."""
        tasks = [task for t in self._templates.values() for task in t.tasks]
        if self._session_task:
            tasks.append(self._session_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session:
            sid, self._session = self._session, ""
            await self._destroy(sid)

    # --- the session: held only while this instance leads a template or tries to ---------------

    async def _ensure_session(self) -> str:
        async with self._session_lock:
            if not self._session:
                _, data = await self._client.write(
                    "PUT",
                    "/v1/session/create",
                    json_body={
                        "Name": "ctemplate de-duplication",
                        "Behavior": "delete",
                        "TTL": f"{self._config.ttl:g}s",
                        "LockDelay": "1ms",
                    },
                )
                sid = data.get("ID") if isinstance(data, dict) else None
                if not sid:
                    raise ConsulError("PUT /v1/session/create: Consul sent no session ID")
                self._session = str(sid)
                self._renewed_at = time.monotonic()
                self._session_task = asyncio.create_task(
                    self._renew(self._session), name="dedup session"
                )
                log.debug("(dedup) session %s created", self._session)
        return self._session

    async def _renew(self, sid: str) -> None:
        ttl = self._config.ttl
        while self._session == sid:
            await asyncio.sleep(ttl / 2)
            if self._session != sid:
                return
            try:
                status, _ = await self._client.write(
                    "PUT", f"/v1/session/renew/{sid}", ok=(200, 404)
                )
            except ConsulError as exc:
                log.debug("(dedup) session: %s", exc)
                if time.monotonic() - self._renewed_at > ttl:
                    log.warning("(dedup) the session could not be renewed for %gs: %s", ttl, exc)
                    self._lose_session()
                    return
                continue
            if status == 404:
                log.warning("(dedup) the session was lost (invalidated by Consul)")
                self._lose_session()
                return
            self._renewed_at = time.monotonic()

    def _lose_session(self) -> None:
        self._session = ""
        self._session_task = None
        for t in self._templates.values():
            self._set_role(t, "follower")

    def _release_if_idle(self) -> None:
        """A follower of every template needs no session: give it up (no renewals), and create
        one again when a lock is free."""
        if not self._session or self._acquiring:
            return
        if any(t.role == "leader" for t in self._templates.values()):
            return
        sid, self._session = self._session, ""
        if self._session_task is not None:
            self._session_task.cancel()
            self._session_task = None
        task = asyncio.create_task(self._destroy(sid), name="dedup session destroy")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _destroy(self, sid: str) -> None:
        with contextlib.suppress(ConsulError):
            await self._client.write("PUT", f"/v1/session/destroy/{sid}")

    def _set_role(self, t: _Template, role: Role) -> None:
        if t.role == role:
            return
        before, t.role = t.role, role
        if role == "leader":
            t.not_leader.clear()
            t.values = None
            log.info("(dedup) %s: leader: this instance reads Consul for it", t.name)
        else:
            t.not_leader.set()
            if before == "leader":
                log.info("(dedup) %s: follower: another instance leads it", t.name)
        self._on_role(t.id)

    # --- the lock ------------------------------------------------------------------------------

    async def _contest(self, t: _Template) -> None:
        index = 0
        while True:
            try:
                resp = await self._client.get(
                    f"/v1/kv/{t.lock}", index=index, wait=self._config.block_query_wait
                )
                index = resp.index if resp.index >= index else 0
                holder = ""
                if resp.data:
                    holder = str(resp.data[0].get("Session") or "")
                if holder and holder == self._session:
                    self._set_role(t, "leader")
                    continue
                if holder:
                    self._set_role(t, "follower")
                    self._release_if_idle()
                    continue
                if t.role == "leader":  # the key is gone or released: not ours any more
                    self._set_role(t, "follower")
                self._acquiring += 1
                try:
                    sid = await self._ensure_session()
                    _, acquired = await self._client.write(
                        "PUT", f"/v1/kv/{t.lock}", {"acquire": sid}, content=self._holder
                    )
                finally:
                    self._acquiring -= 1
                if acquired is True:
                    await self._read_published(t)
                    self._set_role(t, "leader")
                else:
                    self._set_role(t, "follower")
                    self._release_if_idle()
                    await asyncio.sleep(_LOCK_DELAY_RETRY)
                    index = 0
            except ConsulError as exc:
                log.debug("(dedup) %s: lock: %s", t.name, exc)
                index = 0
                await asyncio.sleep(_RETRY)

    async def _read_published(self, t: _Template) -> None:
        """A new leader learns what is published, so it writes again only on a real change (and
        can announce the next one as a difference when it followed this one)."""
        with contextlib.suppress(ConsulError, ValueError):
            resp = await self._client.get(f"/v1/kv/{t.data}")
            if resp.data:
                entry = resp.data[0]
                raw = base64.b64decode(entry.get("Value") or "")
                header = _header(raw)
                digest = str(header.get("hash", ""))
                if digest != t.digest:
                    t.known(digest, int(entry.get("ModifyIndex") or 0), b"", None)
                t.published_chunks = int(header.get("chunks") or 0)

    # --- publishing (leader) ---------------------------------------------------------------------

    async def _publisher(self, t: _Template) -> None:
        while True:
            await t.wake_publisher.wait()
            t.wake_publisher.clear()
            values, t.pending = t.pending, None
            if values is None or t.role != "leader":
                continue
            try:
                body = payload_body(values)
                data = canonical(body)
            except (TypeError, ValueError) as exc:
                log.error("(dedup) %s: cannot publish this data: %s", t.name, exc)
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest == t.digest:
                continue
            try:
                await self._write_payload(t, body, data, digest)
            except ConsulError as exc:
                log.warning("(dedup) %s: publishing failed, retrying: %s", t.name, exc)
                if t.pending is None:
                    t.pending = values
                await asyncio.sleep(_RETRY)
                t.wake_publisher.set()

    async def _write_payload(self, t: _Template, body: Any, data: bytes, digest: str) -> None:
        packed = zlib.compress(data, 6)
        old, old_chunks = t.digest, t.published_chunks
        header: dict[str, Any] = {"hash": digest, "size": len(data), "chunks": 0}
        inline = packed
        if len(MAGIC) + 200 + len(packed) > CHUNK_SIZE:
            pieces = [packed[i : i + CHUNK_SIZE] for i in range(0, len(packed), CHUNK_SIZE)]
            for n, piece in enumerate(pieces):
                await self._client.write(
                    "PUT", f"/v1/kv/{t.base}chunks/{digest}/{n:04d}", content=piece
                )
            header["chunks"] = len(pieces)
            inline = b""
        value = MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + inline
        status, answer = await self._client.write(
            "PUT",
            "/v1/txn",
            json_body=[
                {"KV": {"Verb": "check-session", "Key": t.lock, "Session": self._session}},
                {"KV": {"Verb": "set", "Key": t.data, "Value": base64.b64encode(value).decode()}},
            ],
            ok=(200, 409),
        )
        if status == 409:  # the lock is not ours any more: someone else publishes now
            log.info("(dedup) %s: lost the lock while publishing; not published", t.name)
            self._set_role(t, "follower")
            return
        index = _txn_index(answer)
        prev = (t.digest, t.raw, t.body)
        t.known(digest, index, data, body)
        t.published_chunks = int(header["chunks"])
        t.publishes += 1
        log.debug("(dedup) %s: published %d bytes (%d compressed)", t.name, len(data), len(packed))
        payload = encode_event(digest, index, *prev, body)
        if await self._announce(t, payload):
            # Among the template's tasks, so that stop() and sync() cancel it with them.
            task = asyncio.create_task(self._reannounce(t, digest, payload), name="dedup again")
            t.tasks.append(task)
            task.add_done_callback(t.tasks.remove)
        if old_chunks and old != digest:  # the chunks of the previous version
            with contextlib.suppress(ConsulError):
                await self._client.write("DELETE", f"/v1/kv/{t.base}chunks/{old}", {"recurse": ""})

    async def _reannounce(self, t: _Template, digest: str, payload: bytes) -> None:
        await asyncio.sleep(_REANNOUNCE)
        if t.role == "leader" and t.digest == digest:  # (a newer one was announced itself)
            await self._announce(t, payload)

    async def _announce(self, t: _Template, payload: bytes) -> bool:
        """Fire the event that tells the followers; without the difference if Consul refuses it,
        and again after a failure (followers that miss it read the data within
        ``block_query_wait``). True once Consul took it."""
        for attempt in range(3):
            try:
                await self._client.write("PUT", f"/v1/event/fire/{t.event}", content=payload)
                log.debug("(dedup) %s: announced (%d bytes)", t.name, len(payload))
                return True
            except ConsulError as exc:
                if exc.status == 403:
                    log.warning(
                        "(dedup) %s: the ACL token may not fire the event %s, so followers "
                        'see changes late; grant event_prefix "ctemplate-dedup-" { policy = '
                        '"write" }: %s',
                        t.name,
                        t.event,
                        exc,
                    )
                    return False
                log.debug("(dedup) %s: announcing: %s", t.name, exc)
                payload = payload[: _EVENT_HEADER + _EVENT_MAC]
                if attempt < 2:
                    await asyncio.sleep(_RETRY / 4)
        log.warning(
            "(dedup) %s: could not announce the new data; followers read it within %gs",
            t.name,
            self._config.block_query_wait,
        )
        return False

    # --- reading (follower) -----------------------------------------------------------------------

    async def _follow(self, t: _Template) -> None:
        """A follower waits for announcements on its own agent's event list (no request to the
        servers), applies their differences, and reads the data key when one does not do."""
        ev_index = 0
        seen: dict[str, None] = {}  # event IDs handled, oldest first (the agent keeps 256)
        wait = self._config.block_query_wait
        while True:
            try:
                if t.role == "leader":  # the leader knows what it published
                    await t.not_leader.wait()
                    continue
                if t.values is None:  # nothing applied yet: wait for the first payload
                    await self._read_data(t, "first")
                    continue
                if t.no_events:  # announcements do not reach it: a blocking read of the data
                    await self._read_data(t, "newer")
                    continue
                # Consul leaves out the events a token may not read (no error): see t.missed.
                resp = await self._client.get(
                    "/v1/event/list", {"name": t.event}, index=ev_index, wait=wait
                )
                ev_index = resp.index
                fresh = []
                for ev in resp.data or []:
                    eid = str(ev.get("ID") or "") if isinstance(ev, dict) else ""
                    if eid and eid not in seen:
                        seen[eid] = None
                        payload = base64.b64decode(ev.get("Payload") or "")
                        if (a := Announcement.parse(payload)) is not None:
                            fresh.append(a)
                log.debug(
                    "(dedup) %s: event list at index %d: %d new announcements",
                    t.name,
                    ev_index,
                    len(fresh),
                )
                while len(seen) > 512:
                    del seen[next(iter(seen))]
                for a in sorted(fresh, key=lambda a: a.index):
                    if t.role != "leader":
                        await self._on_announcement(t, a)
                if fresh:
                    t.missed = 0
                elif time.monotonic() - t.checked_at >= wait * 0.9 and await self._read_data(t):
                    # A version came that no announcement told of: events lost, or filtered
                    # out by the ACL (Consul drops the events a token may not read).
                    t.missed += 1
                    if t.missed >= 2:
                        log.warning(
                            "(dedup) %s: no announcement reached this follower for the last "
                            "%d versions, so it now reads the shared data on every change; if "
                            'ACLs are on, grant event_prefix "ctemplate-dedup-" { policy = '
                            '"read" }',
                            t.name,
                            t.missed,
                        )
                        t.no_events = True
            except ConsulError as exc:
                log.debug("(dedup) %s: data: %s", t.name, exc)
                ev_index = 0
                await asyncio.sleep(_RETRY)
            except (ValueError, TypeError, KeyError, zlib.error) as exc:
                log.warning("(dedup) %s: unreadable shared data, ignored: %s", t.name, exc)
                t.checked_at = time.monotonic()
                await asyncio.sleep(_RETRY)

    async def _on_announcement(self, t: _Template, a: Announcement) -> None:
        if a.index <= t.applied_index or (t.digest and bytes.fromhex(t.digest)[:16] == a.digest16):
            return  # older than, or the same as, what is applied
        rebuilt = a.apply(t.digest, t.raw, t.body)
        log.debug(
            "(dedup) %s: announcement of index %d: %s",
            t.name,
            a.index,
            "rebuilt from its difference" if rebuilt else "reading the data",
        )
        if rebuilt is None:
            t.body = None if a.packed else t.body  # it may have been changed half way
            await self._read_data(t, at_least=a.index)
            return
        body, data, digest = rebuilt
        t.values = body_values(body)
        t.known(digest, a.index, data, body)
        t.checked_at = time.monotonic()  # in step with the leader as of now
        t.deltas += 1
        self._on_data(t.id)

    async def _read_data(self, t: _Template, mode: str = "check", *, at_least: int = 0) -> bool:
        """Read the data key and apply it if it is newer than what is applied.

        ``first``: nothing is applied (a start, or a leader that became a follower): wait until
        something is published, not older than the version this instance last knew. ``newer``:
        wait up to ``block_query_wait`` for a version newer than the applied one (how a follower
        that may not read events follows). ``check``: one read; with ``at_least``, wait a little
        for that announced ModifyIndex (a stale server may not have it yet). True when a newer
        version was applied.
        """
        stale = self._config.max_stale > 0
        wait = self._config.block_query_wait
        if mode == "first":
            index = max(t.applied_index - 1, 0)
        elif mode == "newer":
            index = t.applied_index
        else:
            index, wait = max(at_least - 1, 0), _ANNOUNCED_WAIT
        while True:
            resp = await self._client.get(f"/v1/kv/{t.data}", index=index, wait=wait, stale=stale)
            t.checked_at = time.monotonic()
            if t.role == "leader":
                return False
            if not resp.data:
                if mode != "check":  # nothing published (or it was deleted): keep waiting
                    index = resp.index if resp.index >= index else 0
                    continue
                return False
            entry = resp.data[0]
            modified = int(entry.get("ModifyIndex") or 0)
            if modified < t.applied_index or (modified == t.applied_index and mode != "first"):
                if mode == "first":  # a stale read of an older version: wait for the one known
                    index = max(t.applied_index - 1, 0)
                    continue
                return False  # not newer than what was applied (a stale read of an older one)
            raw = base64.b64decode(entry.get("Value") or "")
            read = await self._read_payload(t, raw, stale)
            if read is None:  # a newer version is being written: read the key again
                index = 0
                await asyncio.sleep(_LOCK_DELAY_RETRY)
                continue
            if t.role == "leader":
                return False
            values, body, data, digest = read
            t.values = values
            t.known(digest, modified, data, body)
            t.reads += 1
            self._on_data(t.id)
            return True

    async def _read_payload(
        self, t: _Template, raw: bytes, stale: bool
    ) -> tuple[dict[str, Any], Any, bytes, str] | None:
        header = _header(raw)
        digest = str(header["hash"])
        count = int(header.get("chunks") or 0)
        if count == 0:
            packed = raw[raw.index(b"\n") + 1 :]
        else:
            resp = await self._client.get(
                f"/v1/kv/{t.base}chunks/{digest}/", {"recurse": ""}, stale=stale
            )
            entries = sorted(resp.data or [], key=lambda e: str(e.get("Key")))
            if len(entries) != count:
                return None
            packed = b"".join(base64.b64decode(e.get("Value") or "") for e in entries)
        try:
            data = zlib.decompress(packed)
        except zlib.error:
            return None
        if hashlib.sha256(data).hexdigest() != digest:
            return None
        body = json.loads(data)
        return body_values(body), body, data, digest


def _txn_index(answer: Any) -> int:
    """The ModifyIndex a transaction's ``set`` got (its second result)."""
    try:
        return int(answer["Results"][1]["KV"]["ModifyIndex"])
    except (KeyError, IndexError, TypeError, ValueError):
        return 0


def _header(raw: bytes) -> dict[str, Any]:
    if not raw.startswith(MAGIC) or b"\n" not in raw:
        raise ValueError("not ctemplate's shared data (another version or program?)")
    header = json.loads(raw[len(MAGIC) : raw.index(b"\n")])
    if not isinstance(header, dict) or "hash" not in header:
        raise ValueError("shared data without a hash")
    return header
