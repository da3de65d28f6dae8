"""De-duplication: one instance per template reads Consul, every other instance reads its data.

When the same template runs on many hosts, each host would hold the same blocking queries, and
the Consul servers' load would grow with the fleet. With ``deduplicate { enabled = true }`` the
instances elect one *leader* per template through a Consul lock; the leader watches the
template's queries as usual and publishes, in the KV store, the data it rendered from; every
other instance (a *follower*) holds one blocking read on that published data and renders from
it, exactly as the leader does. Host-local inputs (``env``, ``file``, ``node()`` of the local
agent, ``caLeaf``'s private keys) are never published: each host reads its own.

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

__all__ = ["Dedup", "decode_payload", "encode_payload", "shareable", "template_id"]

log = logging.getLogger(__name__)

MAGIC = b"CTD1 "
CHUNK_SIZE = 400 * 1024  # Consul refuses values over 512 KiB
_RETRY = 2.0  # seconds between attempts after a failed request
_LOCK_DELAY_RETRY = 0.5  # seconds, when the lock is free but Consul's lock delay refuses it

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


def encode_payload(values: Mapping[str, Any]) -> tuple[bytes, str]:
    """The JSON bytes of ``values`` (stable: sorted keys) and their SHA-256 hex digest."""
    body = {"v": 1, "values": {k: _encode(v) for k, v in values.items()}}
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return data, hashlib.sha256(data).hexdigest()


def decode_payload(data: bytes) -> dict[str, Any]:
    body = json.loads(data)
    if not isinstance(body, dict) or body.get("v") != 1:
        raise ValueError("not a version 1 payload")
    return {k: _decode(v) for k, v in body["values"].items()}


# --- one template's election and data ----------------------------------------------------------


@dataclasses.dataclass(eq=False)
class _Template:
    id: str
    base: str  # "<prefix><id>/"
    name: str  # the template, for messages: "upstream.conf.j2 (dedup 1c9c3bd7df1a)"
    role: Role = "starting"
    values: dict[str, Any] | None = None  # follower: the published data last applied
    applied_index: int = 0  # ModifyIndex of the data key last applied
    published: str = ""  # leader: hash of the payload now in the KV store
    published_chunks: int = 0  # how many chunks that payload has (0: inline)
    not_leader: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    pending: dict[str, Any] | None = None
    wake_publisher: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    publishes: int = 0

    @property
    def lock(self) -> str:
        return f"{self.base}lock"

    @property
    def data(self) -> str:
        return f"{self.base}data"


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

    def sync(self, ids: Mapping[str, str]) -> None:
        """Take part in the elections of exactly these templates."""
        for tid in list(self._templates):
            if tid not in ids:
                for task in self._templates.pop(tid).tasks:
                    task.cancel()
        for tid in ids.keys() - self._templates.keys():
            t = _Template(tid, f"{self._config.prefix}{tid}/", ids[tid])
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
        """A new leader learns what is published, so it writes again only on a real change."""
        with contextlib.suppress(ConsulError, ValueError):
            resp = await self._client.get(f"/v1/kv/{t.data}")
            if resp.data:
                raw = base64.b64decode(resp.data[0].get("Value") or "")
                header = _header(raw)
                t.published = str(header.get("hash", ""))
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
                data, digest = encode_payload(values)
            except (TypeError, ValueError) as exc:
                log.error("(dedup) %s: cannot publish this data: %s", t.name, exc)
                continue
            if digest == t.published:
                continue
            try:
                await self._write_payload(t, data, digest)
            except ConsulError as exc:
                log.warning("(dedup) %s: publishing failed, retrying: %s", t.name, exc)
                if t.pending is None:
                    t.pending = values
                await asyncio.sleep(_RETRY)
                t.wake_publisher.set()

    async def _write_payload(self, t: _Template, data: bytes, digest: str) -> None:
        packed = zlib.compress(data, 6)
        old, old_chunks = t.published, t.published_chunks
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
        status, _ = await self._client.write(
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
        t.published = digest
        t.published_chunks = int(header["chunks"])
        t.publishes += 1
        log.debug("(dedup) %s: published %d bytes (%d compressed)", t.name, len(data), len(packed))
        if old_chunks and old != digest:  # the chunks of the previous version
            with contextlib.suppress(ConsulError):
                await self._client.write("DELETE", f"/v1/kv/{t.base}chunks/{old}", {"recurse": ""})

    # --- reading (follower) -----------------------------------------------------------------------

    async def _follow(self, t: _Template) -> None:
        index = 0
        stale = self._config.max_stale > 0
        while True:
            try:
                if t.role == "leader":  # the leader knows what it published
                    await t.not_leader.wait()
                    index = 0
                resp = await self._client.get(
                    f"/v1/kv/{t.data}",
                    index=index,
                    wait=self._config.block_query_wait,
                    stale=stale,
                )
                index = resp.index if resp.index >= index else 0
                if t.role == "leader" or not resp.data:
                    continue  # nothing published yet: keep what was applied, if anything
                entry = resp.data[0]
                modified = int(entry.get("ModifyIndex") or 0)
                if modified <= t.applied_index:
                    continue  # not newer than what was applied (a stale read of an older one)
                raw = base64.b64decode(entry.get("Value") or "")
                values = await self._read_payload(t, raw, stale)
                if values is None:  # a newer version is being written: read the key again
                    index = 0
                    await asyncio.sleep(_LOCK_DELAY_RETRY)
                    continue
                if t.role == "leader":
                    continue
                t.values = values
                t.applied_index = modified
                self._on_data(t.id)
            except ConsulError as exc:
                log.debug("(dedup) %s: data: %s", t.name, exc)
                index = 0
                await asyncio.sleep(_RETRY)
            except (ValueError, TypeError, KeyError, zlib.error) as exc:
                log.warning("(dedup) %s: unreadable shared data, ignored: %s", t.name, exc)
                await asyncio.sleep(_RETRY)

    async def _read_payload(self, t: _Template, raw: bytes, stale: bool) -> dict[str, Any] | None:
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
        return decode_payload(data)


def _header(raw: bytes) -> dict[str, Any]:
    if not raw.startswith(MAGIC) or b"\n" not in raw:
        raise ValueError("not ctemplate's shared data (another version or program?)")
    header = json.loads(raw[len(MAGIC) : raw.index(b"\n")])
    if not isinstance(header, dict) or "hash" not in header:
        raise ValueError("shared data without a hash")
    return header
