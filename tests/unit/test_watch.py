"""The KV-prefix watch: one recursive answer handed to many KV queries."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ctemplate.consul.client import ConsulResponse
from ctemplate.consul.queries import KVGetQuery, KVListQuery, Query
from ctemplate.consul.watch import Watcher, WatchSettings, _KVPrefix


class SilentClient:  # long polls that never answer: the tests hand the prefix its answers
    async def get(self, *_args: Any, **_kwargs: Any) -> Any:
        await asyncio.Event().wait()


def _entry(key: str, value: str, index: int = 5) -> dict[str, Any]:
    return {
        "LockIndex": 0,
        "Key": key,
        "Flags": 0,
        "Value": base64.b64encode(value.encode()).decode(),
        "CreateIndex": index,
        "ModifyIndex": index,
    }


A = KVGetQuery(key="app/a", block=True)
B = KVGetQuery(key="app/b", block=True)
C = KVGetQuery(key="app/c")  # keyOrDefault: absence is an answer
LIST = KVListQuery(prefix="app/l/")


@pytest.fixture
async def setup() -> AsyncIterator[tuple[Watcher, _KVPrefix, list[str]]]:
    changed: list[str] = []
    # One connection: the four queries are served by one recursive read of "app/".
    watcher = Watcher(
        SilentClient(), WatchSettings(max_connections=1), changed.append, lambda _k, _e: None
    )
    queries: dict[str, Query] = {str(q): q for q in (A, B, C, LIST)}
    watcher.sync(queries)
    [(members, prefix)] = watcher._kv.values()
    assert set(members) == set(queries.values())
    try:
        yield watcher, prefix, changed
    finally:
        await watcher.stop()


def _answer(prefix: _KVPrefix, entries: list[dict[str, Any]]) -> bool:
    # A fresh copy, as every answer is a new parse of Consul's JSON.
    return prefix._answer(ConsulResponse([dict(e) for e in entries], 1, 0.0, True))


def _values(watcher: Watcher) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, str | None) else [p.Value for p in v])
        for k, v in watcher.data.items()
    }


async def test_only_changed_keys_are_delivered(setup):
    watcher, prefix, changed = setup
    first = [_entry("app/a", "1"), _entry("app/b", "2"), _entry("app/l/x", "3")]
    assert _answer(prefix, first) is True
    assert sorted(changed) == sorted(str(q) for q in (A, B, C, LIST))
    assert _values(watcher) == {str(A): "1", str(B): "2", str(C): None, str(LIST): ["3"]}

    changed.clear()
    second = [_entry("app/a", "1"), _entry("app/b", "2b", 9), _entry("app/l/x", "3")]
    assert _answer(prefix, second) is True
    assert changed == [str(B)]
    assert watcher.data[str(B)] == "2b"

    changed.clear()
    assert _answer(prefix, second) is True  # a new index, the same data
    assert changed == []

    # A key appears under a list's prefix; c comes to exist.
    changed.clear()
    third = [*second, _entry("app/c", "4"), _entry("app/l/y", "5")]
    assert _answer(prefix, third) is True
    assert sorted(changed) == sorted([str(C), str(LIST)])
    assert _values(watcher) == {str(A): "1", str(B): "2b", str(C): "4", str(LIST): ["3", "5"]}


async def test_unchanged_members_are_not_decoded_again(setup, monkeypatch):
    watcher, prefix, _changed = setup
    entries = [_entry("app/a", "1"), _entry("app/b", "2"), _entry("app/l/x", "3")]
    _answer(prefix, entries)
    decoded: list[str] = []
    real = watcher.decode

    def decode(key: str, query: Query, data: Any) -> Any:
        decoded.append(key)
        return real(key, query, data)

    monkeypatch.setattr(watcher, "decode", decode)
    entries[1] = _entry("app/b", "2b", 9)
    _answer(prefix, entries)
    assert decoded == [str(B)]


async def test_a_deleted_key_is_waited_for_and_delivered_when_it_comes_back(setup):
    watcher, prefix, changed = setup
    entries = [_entry("app/a", "1"), _entry("app/b", "2")]
    assert _answer(prefix, entries) is True
    changed.clear()
    # b is deleted: key() waits for it again, and the answer is no longer complete.
    assert _answer(prefix, entries[:1]) is False
    assert changed == [str(B)] and str(B) not in watcher.data
    changed.clear()
    assert _answer(prefix, entries[:1]) is False  # still missing: nothing to deliver
    assert changed == []
    # It comes back exactly as it was (an agent wiped and seeded again reuses indexes).
    assert _answer(prefix, entries) is True
    assert changed == [str(B)] and watcher.data[str(B)] == "2"


async def test_a_member_that_cannot_be_decoded_is_tried_again_and_the_others_are_delivered(setup):
    watcher, prefix, changed = setup
    good = [_entry("app/a", "1"), _entry("app/b", "2")]
    _answer(prefix, good)
    # a gets a new value, b's cannot be decoded (not base64), c comes to exist.
    bad = [_entry("app/a", "new", 9), dict(_entry("app/b", "2"), Value="x"), _entry("app/c", "3")]
    with pytest.raises(ValueError):
        _answer(prefix, bad)
    assert watcher.data[str(A)] == "new" and watcher.data[str(B)] == "2"
    assert watcher.data[str(C)] == "3"  # a member after the bad one is not held back
    changed.clear()
    # The next answer is the first one again: a goes back to "1", c away; b (decoded again,
    # since its last decoding failed) is unchanged in the cache.
    assert _answer(prefix, good) is True
    assert sorted(changed) == sorted([str(A), str(C)])
    assert _values(watcher) == {str(A): "1", str(B): "2", str(C): None, str(LIST): []}
    # And a bad value that stays bad fails each answer, until it is fixed.
    with pytest.raises(ValueError):
        _answer(prefix, bad)
    with pytest.raises(ValueError):
        _answer(prefix, bad)
    changed.clear()
    fixed = [bad[0], _entry("app/b", "fixed", 12), bad[2]]
    assert _answer(prefix, fixed) is True
    assert changed == [str(B)]
    assert _values(watcher) == {str(A): "new", str(B): "fixed", str(C): "3", str(LIST): []}


async def test_a_value_rewritten_at_the_same_index_is_delivered(setup):
    """Raw values are compared, not ``ModifyIndex``: a proxy or a restored snapshot can hand
    back another value at an index already seen."""
    watcher, prefix, changed = setup
    _answer(prefix, [_entry("app/a", "1", 7), _entry("app/b", "2", 7)])
    changed.clear()
    assert _answer(prefix, [_entry("app/a", "1", 7), _entry("app/b", "other", 7)]) is True
    assert changed == [str(B)] and watcher.data[str(B)] == "other"


async def test_a_key_with_no_value_and_a_value_that_is_not_utf8(setup):
    watcher, prefix, changed = setup
    no_value = dict(_entry("app/a", ""), Value=None)  # a key created without a value
    not_utf8 = dict(_entry("app/b", ""), Value=base64.b64encode(b"caf\xe9").decode())
    assert _answer(prefix, [no_value, not_utf8]) is True
    assert watcher.data[str(A)] == "" and watcher.data[str(B)] == "caf\ufffd"
    changed.clear()
    # The value becomes text; the key without a value gets one.
    assert _answer(prefix, [_entry("app/a", "set"), _entry("app/b", "café")]) is True
    assert sorted(changed) == sorted([str(A), str(B)])
    assert _values(watcher)[str(A)] == "set" and watcher.data[str(B)] == "café"


async def test_many_members_one_changed_key_is_delivered_to_each_query_on_it():
    """1,500 keys under one prefix (past the 1,000 of the benchmarks), two queries on one key
    (``key`` and ``keyOrDefault``): a change reaches exactly the queries on the changed key."""
    changed: list[str] = []
    watcher = Watcher(
        SilentClient(), WatchSettings(max_connections=1), changed.append, lambda _k, _e: None
    )
    gets = [KVGetQuery(key=f"big/k{i}", block=True) for i in range(1500)]
    default = KVGetQuery(key="big/k1200")  # keyOrDefault("big/k1200")
    watcher.sync({str(q): q for q in (*gets, default)})
    try:
        [(_members, prefix)] = watcher._kv.values()
        entries = [_entry(f"big/k{i}", f"v{i}") for i in range(1500)]
        assert _answer(prefix, entries) is True
        assert len(changed) == 1501
        changed.clear()
        entries[1200] = _entry("big/k1200", "new", 99)
        entries[1499] = _entry("big/k1499", "v1499", 99)  # a new index, the same value
        assert _answer(prefix, entries) is True
        assert sorted(changed) == sorted([str(gets[1200]), str(default)])
        assert watcher.data[str(gets[1200])] == watcher.data[str(default)] == "new"
        assert watcher.data[str(gets[1499])] == "v1499"
        # k1200 deleted: key() waits again, keyOrDefault() sees it absent.
        changed.clear()
        assert _answer(prefix, entries[:1200] + entries[1201:]) is False
        assert sorted(changed) == sorted([str(gets[1200]), str(default)])
        assert str(gets[1200]) not in watcher.data and watcher.data[str(default)] is None
    finally:
        await watcher.stop()
