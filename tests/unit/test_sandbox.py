"""The sandbox rule every front end applies to attribute access (language/sandbox.py)."""

from __future__ import annotations

import os

import pytest

from ctemplate.consul.records import HealthService
from ctemplate.language import helpers
from ctemplate.language.sandbox import is_safe_attribute


def _service() -> HealthService:
    fields = {f: "" for f in HealthService.__dataclass_fields__}
    return HealthService(**fields)  # type: ignore[arg-type]


CASES = [
    # (value, attribute, allowed)
    ("abc", "upper", True),
    ("abc", "split", True),
    ({"a": 1}, "items", True),
    ({"a": 1}, "get", True),
    ([1], "index", True),
    ("abc", "__class__", False),
    ("abc", "format", False),  # '{0.__class__}'.format(x) reads attributes unchecked
    ("abc", "format_map", False),
    (b"abc", "format", False),  # bytes has no format, but the rule does not depend on it
    (helpers.join, "__globals__", False),
    (helpers.join, "__code__", False),
    (str, "mro", False),
    (os, "system", False),  # a module is never reachable
    ({"a": 1}, "_private", False),
    ({"a": 1}, "", False),
]


@pytest.mark.parametrize(("value", "name", "allowed"), CASES)
def test_is_safe_attribute(value, name, allowed):
    assert is_safe_attribute(value, name) is allowed


def test_record_fields_are_reachable():
    service = _service()
    for name in ("Address", "Port", "Tags", "ServiceMeta", "Node"):
        assert is_safe_attribute(service, name)
    assert not is_safe_attribute(service, "__dataclass_fields__")
