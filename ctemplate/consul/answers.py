"""Decoding the answers of one blocking-query loop, reusing what did not change.

A change to one of 1,000 keys under a prefix wakes the prefix's loop with the whole prefix
again: 169 KiB of JSON, of which one element differs. ``json.loads`` of all of it took ~2 ms,
the largest part of ctemplate's work for that change (and the same for the health checks of 300
services, or 5,000 instances of a service).

Consul indents its JSON by four spaces a level, so the elements of an array of objects are
separated by exactly ``"\\n    },\\n    {\\n"``. :class:`AnswerDecoder` cuts an answer there,
looks each piece up among the previous answer's pieces (bytes equal: the same decoded object,
shared) and decodes only the pieces it has not seen.

Why the result is always ``json.loads(body)``: each piece is decoded on its own as
``{piece}``, and every piece must be a JSON object for the cut to be used. JSON values delimit
themselves, so an array whose elements are those objects *is* the body, whatever the cut
points were; a cut that fell anywhere else (a proxy that re-indents, a key holding those bytes
escaped) leaves a piece that is not an object, and the whole body is decoded as before. A piece
reused from the last answer has the same bytes as one that decoded then, so it decodes now.

The decoded objects are shared between answers: nothing downstream changes them (records are
built from them; :class:`.records.HealthServiceDecoder` and the KV-prefix watch compare them).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["AnswerDecoder"]

_HEAD = b"[\n    {\n"
_SEPARATOR = b"\n    },\n    {\n"
_TAIL = b"\n    }\n]"

# Smaller answers are decoded whole (cutting them saves nothing); larger ones too, so that a
# loop does not hold a second copy of a very large answer (5,000 instances: ~10 MiB).
_MIN_BODY = 2048
_MAX_BODY = 4 * 1024 * 1024


class AnswerDecoder:
    """``json.loads`` for one loop's answers, with the elements of its last answer kept."""

    __slots__ = ("_last", "reused")

    def __init__(self) -> None:
        self._last: dict[bytes, Any] = {}  # piece -> its decoded object, of the last answer
        self.reused = 0  # elements taken from the last answer, over the loop's life

    def __call__(self, body: bytes) -> Any:
        text = body.rstrip(b"\n")
        if not (
            _MIN_BODY <= len(body) <= _MAX_BODY and text.startswith(_HEAD) and text.endswith(_TAIL)
        ):
            return self._whole(body)
        pieces = text[len(_HEAD) : len(text) - len(_TAIL)].split(_SEPARATOR)
        last = self._last
        kept: dict[bytes, Any] = {}
        elements: list[Any] = []
        append = elements.append
        reused = 0
        for piece in pieces:
            element = last.get(piece)
            if element is None:
                try:
                    element = json.loads(b"{" + piece + b"}")
                except ValueError:  # cut in the wrong place: decoded whole
                    return self._whole(body)
            else:
                reused += 1
            kept[piece] = element
            append(element)
        self._last = kept
        self.reused += reused
        return elements

    def _whole(self, body: bytes) -> Any:
        self._last = {}
        return json.loads(body)
