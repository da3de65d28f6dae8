"""A loop's answers decoded with the unchanged elements of its last answer reused
(consul/answers.py): the result is always ``json.loads`` of the body."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest

from ctemplate.consul.answers import AnswerDecoder


def _kv(i: int, value: str, index: int = 7) -> dict[str, Any]:
    return {
        "LockIndex": 0,
        "Key": f"app/config/k{i}",
        "Flags": 0,
        "Value": base64.b64encode(value.encode()).decode(),
        "CreateIndex": 5,
        "ModifyIndex": index,
    }


def _consul(data: Any) -> bytes:
    """As Consul writes a body: indented by four spaces, a newline at the end."""
    return json.dumps(data, indent=4).encode() + b"\n"


def test_unchanged_elements_are_reused_and_the_changed_one_decoded_afresh() -> None:
    decode = AnswerDecoder()
    first = [_kv(i, f"v{i}") for i in range(200)]
    got = decode(_consul(first))
    assert got == first
    assert decode.reused == 0

    second = [dict(e) for e in first]
    second[17] = _kv(17, "changed", index=9)
    again = decode(_consul(second))
    assert again == second
    assert decode.reused == 199
    # The same objects as before, except the one that changed.
    assert all(again[i] is got[i] for i in range(200) if i != 17)
    assert again[17] is not got[17] and again[17]["ModifyIndex"] == 9

    # A key added and one deleted: still exactly the body's elements, in its order.
    third = [e for i, e in enumerate(second) if i != 3] + [_kv(500, "new")]
    assert decode(_consul(third)) == third


@pytest.mark.parametrize(
    "key",
    [
        "a},{b",  # the separator of compact JSON
        "x\n    },\n    {\ny",  # the separator of indented JSON, inside a string (escaped)
        '"quoted" and \\ backslash',
        "<&> üñï 🙂",
        "\u2028line separators\u2029",
    ],
)
def test_keys_holding_separator_like_text_decode_as_json_does(key: str) -> None:
    decode = AnswerDecoder()
    data = [_kv(i, "v") for i in range(50)]
    data[10]["Key"] = key
    body = _consul(data)
    assert decode(body) == json.loads(body)
    data[20]["Value"] = None
    body = _consul(data)
    assert decode(body) == json.loads(body)
    assert decode.reused == 49


def test_a_cut_in_the_wrong_place_falls_back_to_decoding_the_whole_body() -> None:
    """Nested objects indented like elements (no Consul does this; a proxy might): the pieces
    are not objects, and the whole body is decoded as before."""
    decode = AnswerDecoder()
    nested = [{"Node": f"n{i}", "Checks": [{"x": i, "y": "z" * 40}, {"x": -i}]} for i in range(40)]
    body = json.dumps(nested, indent=4).encode()
    flattened = body.replace(b"\n            ", b"\n    ").replace(b"\n        ", b"\n    ")
    assert b'"Checks": [\n    {\n    "x": 0' in flattened  # the checks cut apart
    assert json.loads(flattened) == nested
    assert decode(flattened) == nested
    assert decode(flattened) == nested
    assert decode.reused == 0


@pytest.mark.parametrize(
    "body",
    [
        json.dumps([_kv(i, "v") for i in range(100)]).encode(),  # compact
        json.dumps([_kv(i, "v") for i in range(100)], indent=2).encode(),  # other indent
        _consul([f"app/config/k{i}" for i in range(300)]),  # ?keys: strings
        _consul({f"svc{i}": ["a", "b"] for i in range(300)}),  # a map (catalog services)
        _consul([_kv(1, "v")]),  # small
        b"null",
    ],
)
def test_other_shapes_are_decoded_whole(body: bytes) -> None:
    decode = AnswerDecoder()
    assert decode(body) == json.loads(body)
    assert decode(body) == json.loads(body)
    assert decode.reused == 0


def test_a_broken_body_is_refused_as_json_refuses_it() -> None:
    decode = AnswerDecoder()
    body = _consul([_kv(i, "v") for i in range(100)])
    decode(body)
    broken = body[: len(body) // 2] + b"\n    }\n]\n"  # cut off mid-element
    with pytest.raises(ValueError):
        json.loads(broken)
    with pytest.raises(ValueError):
        decode(broken)
    # And the next good answer is decoded from scratch, right.
    assert decode(body) == json.loads(body)


def test_random_answers_decode_as_json_does() -> None:
    rng = random.Random(16)
    decode = AnswerDecoder()
    data = [_kv(i, f"v{i}") for i in range(120)]
    for _ in range(200):
        i = rng.randrange(len(data))
        what = rng.random()
        if what < 0.5:
            data[i] = _kv(
                i, rng.choice(["", "x", "}", "\n    },\n    {\n", "ü" * rng.randrange(9)])
            )
        elif what < 0.7 and len(data) > 2:
            del data[i]
        elif what < 0.9:
            data.insert(i, {"Nested": {"Deep": [1, {"k": "v"}]}, "Key": str(rng.random())})
        else:
            data[i] = {}
        body = _consul(data)
        assert decode(body) == json.loads(body)
    assert decode.reused > 0
