"""De-duplication's announcements: the difference between two payloads (modes/delta.py) and the
event that carries it (modes/dedup.py). A follower rebuilds the new payload from the one it holds
only when the result hashes to the announced version; anything else must send it to the KV
store (``apply`` gives None), never to a wrong file."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from test_dedup_payload import _service

from ctemplate.modes import delta
from ctemplate.modes.dedup import (
    EVENT_PAYLOAD_MAX,
    Announcement,
    canonical,
    encode_event,
    encode_payload,
    event_name,
    payload_body,
)


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 4)
    if kind == 0:
        return rng.randrange(-5, 5)
    if kind == 1:
        return rng.choice(["a", "b", "", "ü", "10.0.0.1"])
    if kind == 2:
        return rng.choice([True, False, None, 1.5])
    if kind == 3:
        return rng.randrange(3)
    if kind in (4, 5):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {rng.choice("abcdef"): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def _mutate(rng: random.Random, doc: Any, depth: int = 0) -> Any:
    """A copy of ``doc`` with a few random changes at random depths."""
    if rng.random() < 0.3 or depth > 5:
        return _random_json(rng, depth)
    if isinstance(doc, dict):
        out = dict(doc)
        for key in list(out):
            if rng.random() < 0.3:
                out[key] = _mutate(rng, out[key], depth + 1)
            elif rng.random() < 0.1:
                del out[key]
        if rng.random() < 0.3:
            out[rng.choice("abcdefgh")] = _random_json(rng, depth + 1)
        return out
    if isinstance(doc, list):
        items = [_mutate(rng, v, depth + 1) if rng.random() < 0.3 else v for v in doc]
        if rng.random() < 0.3:
            items.insert(rng.randrange(len(items) + 1), _random_json(rng, depth + 1))
        if items and rng.random() < 0.3:
            del items[rng.randrange(len(items))]
        return items
    return _random_json(rng, depth)


def test_a_difference_turns_the_old_document_into_exactly_the_new_one() -> None:
    rng = random.Random(1613)
    for _ in range(3000):
        old = _random_json(rng)
        new = _mutate(rng, old)
        ops = delta.diff(old, new)
        # It travels as JSON text; applied to a copy, the bytes match the new document's.
        got = delta.apply(copy.deepcopy(old), json.loads(json.dumps(ops)))
        assert canonical(got) == canonical(new), (old, new, ops)


def test_no_change_is_no_operation_and_small_changes_are_small() -> None:
    old = payload_body({"svc": (_service("n1", 80), _service("n2", 81), _service("n3", 82))})
    assert delta.diff(old, copy.deepcopy(old)) == []
    new = payload_body({"svc": (_service("n1", 80), _service("n2", 9090), _service("n3", 82))})
    ops = delta.diff(old, new)
    # The port, the tagged address's port and the ID (web-<port>) of one instance: nothing else.
    assert all(op[0] == "s" and op[1][:4] == ["values", "svc", "@t", 1] for op in ops), ops
    assert sorted(op[1][-1] for op in ops) == ["ID", "Port", "Port"]


@pytest.mark.parametrize(
    "ops",
    [
        [["s", ["nope", "x"], 1]],
        [["d", ["values", "missing"]]],
        [["l", ["values"], 0, 1, []]],  # not an array
        [["l", ["list"], 2, 9, []]],
        [["x", []]],
        "not a list",
    ],
)
def test_a_difference_that_does_not_fit_is_refused(ops: Any) -> None:
    with pytest.raises(delta.DeltaError):
        delta.apply({"values": {}, "list": [1, 2]}, ops)


def _versions() -> tuple[tuple[Any, bytes, str], tuple[Any, bytes, str]]:
    services = [_service(f"n{i}", 8000 + i) for i in range(40)]
    old_values = {"health.service(web|passing)": tuple(services)}
    new_values = {"health.service(web|passing)": (*services[:7], *services[8:])}  # one leaves
    out = []
    for values in (old_values, new_values):
        body = payload_body(values)
        data, digest = encode_payload(values)
        out.append((body, data, digest))
    return out[0], out[1]


def test_a_follower_rebuilds_the_announced_version_from_the_one_it_holds() -> None:
    (old_body, old_raw, old_digest), (new_body, new_raw, new_digest) = _versions()
    payload = encode_event(new_digest, 77, old_digest, old_raw, old_body, new_body)
    assert len(payload) <= EVENT_PAYLOAD_MAX
    a = Announcement.parse(payload)
    assert a is not None and a.index == 77 and a.packed  # the difference travels in the event
    rebuilt = a.apply(old_digest, old_raw, copy.deepcopy(old_body))
    assert rebuilt is not None
    body, data, digest = rebuilt
    assert body == new_body
    assert (data, digest) == (new_raw, new_digest)


def test_an_announcement_from_another_base_or_tampered_with_is_not_applied() -> None:
    (old_body, old_raw, old_digest), (new_body, _new_raw, new_digest) = _versions()
    payload = encode_event(new_digest, 77, old_digest, old_raw, old_body, new_body)
    a = Announcement.parse(payload)
    assert a is not None
    # A follower that holds another version (it missed one): the MAC does not verify.
    other_body = payload_body({"health.service(web|passing)": (_service("zz", 1),)})
    other_raw = canonical(other_body)
    other_digest = encode_payload({"health.service(web|passing)": (_service("zz", 1),)})[1]
    assert a.apply(other_digest, other_raw, other_body) is None
    # One flipped byte anywhere after the magic: refused (MAC, hash or index).
    for i in range(4, len(payload)):
        forged = bytearray(payload)
        forged[i] ^= 0x01
        b = Announcement.parse(bytes(forged))
        assert b is None or b.index != 77 or b.apply(old_digest, old_raw, old_body) is None
    # Without knowing the old payload's full hash, a forger cannot sign a difference.
    forged_event = encode_event(new_digest, 78, "00" * 32, old_raw, old_body, new_body)
    f = Announcement.parse(forged_event)
    assert f is not None and f.apply(old_digest, old_raw, copy.deepcopy(old_body)) is None


def test_a_large_change_is_announced_without_its_difference() -> None:
    (old_body, old_raw, old_digest), _ = _versions()
    big_values = {"health.service(web|passing)": tuple(_service(f"m{i}", i) for i in range(40))}
    big_body = payload_body(big_values)
    big_digest = encode_payload(big_values)[1]
    payload = encode_event(big_digest, 90, old_digest, old_raw, old_body, big_body)
    a = Announcement.parse(payload)
    assert a is not None and a.packed == b"" and a.index == 90
    assert a.apply(old_digest, old_raw, old_body) is None  # the follower reads the data key


def test_not_ctemplate_events_are_ignored_and_names_depend_on_prefix_and_template() -> None:
    assert Announcement.parse(b"deploy v2") is None
    assert Announcement.parse(b"CTE1 short") is None
    a = event_name("ctemplate/dedup/", "ab" * 32)
    assert a.startswith("ctemplate-dedup-") and len(a) == 28
    assert a != event_name("other/", "ab" * 32) != event_name("ctemplate/dedup/", "cd" * 32)
