"""What a template may reach: the one rule every front end applies to attribute access.

Templates are untrusted input (they may come from a repository many people write to, and their
data from Consul's KV store). Without a sandbox, Python's attribute access leads from any value
to the interpreter: ``{{ env.__globals__['os'].system('id') }}`` runs a command even with every
dangerous function in ``function_denylist``, and ``{{ ''.__class__.__mro__ }}`` walks to every
class loaded. So a template may read only public data:

* no attribute whose name starts with ``_`` (dunders such as ``__globals__``, ``__class__``,
  ``__init__``, and private names);
* none of Python's internal attributes (a function's code and globals, a frame, a generator's
  frame, a type's ``mro``: :func:`jinja2.sandbox.is_internal_attribute`);
* nothing of a module, were one ever handed to a template;
* not ``str.format`` / ``str.format_map`` as plain values: a format string such as
  ``'{0.__class__}'`` reads attributes of its arguments without asking. The Jinja front end
  gives templates a checked ``format`` instead (Jinja's sandboxed formatter); another front end
  that calls methods itself must refuse them (or do the same).

Record fields (``HealthService.Address``), map keys and ordinary methods of strings, lists and
maps (``upper``, ``split``, ``items``, ``get``) stay reachable.

:func:`is_safe_attribute` is the rule; :class:`SandboxedEnvironment` is Jinja's sandbox bound to
it. A second front end (Go syntax) calls :func:`is_safe_attribute` before every field or method
access and raises :class:`UnsafeAccess` (a :class:`~ctemplate.errors.TemplateError`) on refusal.
"""

from __future__ import annotations

import types
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment as _JinjaSandbox
from jinja2.sandbox import is_internal_attribute

from ..errors import TemplateError

__all__ = ["SandboxedEnvironment", "UnsafeAccess", "is_safe_attribute", "refusal"]

_FORMATS = frozenset({"format", "format_map"})


class UnsafeAccess(TemplateError):
    """A template tried to reach something outside its sandbox."""


# The rule depends only on the value's type and the name, and a template reads the same few
# fields of the same few types over and over (Address and Port of 5,000 records): the answers
# are remembered. With that and the safe case first in ``getattr`` below, the sandboxed nginx
# template takes 1.1-1.2x the CPU time of the plain one, instead of 1.7-2.7x (bench/sandbox.py).
# Bounded: names can come from data (``attr(name)``).
_decided: dict[tuple[type, str], bool] = {}
_DECIDED_MAX = 4096


def is_safe_attribute(obj: Any, name: str) -> bool:
    """Whether a template may read ``obj.<name>`` (see the module's docstring for the rule)."""
    key = (type(obj), name)
    try:
        return _decided[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable name
        return False
    safe = _decide(obj, name)
    if len(_decided) >= _DECIDED_MAX:
        _decided.clear()
    _decided[key] = safe
    return safe


def _decide(obj: Any, name: str) -> bool:
    if not isinstance(name, str) or not name or name.startswith("_"):
        return False
    if isinstance(obj, types.ModuleType):
        return False
    if isinstance(obj, str | bytes) and name in _FORMATS:
        return False
    return not is_internal_attribute(obj, name)


def refusal(obj: Any, name: str) -> str:
    """The message for a refused access, the same in every front end."""
    return (
        f"{name!r} of a value of type {type(obj).__name__!r} is out of reach (templates run "
        "sandboxed: no name starting with '_', no Python internals)"
    )


class SandboxedEnvironment(_JinjaSandbox):
    """Jinja's sandbox with ctemplate's rule for attributes.

    ``str.format`` stays usable in Jinja because Jinja's sandbox hands templates a checked
    formatter for it (``wrap_str_format``) before this rule is asked; everything else goes
    through :func:`is_safe_attribute`. A refused attribute is an undefined value that raises
    :class:`jinja2.exceptions.SecurityError` with :func:`refusal`'s message when used.
    """

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return is_safe_attribute(obj, attr)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``obj.attribute`` in a template: Jinja's sandboxed lookup with the common case (a
        safe attribute) first; ``str.format`` is never safe, so it is wrapped only on the way
        out, exactly as Jinja does."""
        try:
            value = getattr(obj, attribute)
        except AttributeError:
            return super().getattr(obj, attribute)  # then obj[attribute], or undefined
        if is_safe_attribute(obj, attribute):
            return value
        formatter = self.wrap_str_format(value)
        if formatter is not None:
            return formatter
        return self.unsafe_undefined(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        return self.undefined(refusal(obj, attribute), name=attribute, obj=obj, exc=SecurityError)
