"""Path rules shared by every stage: the sandbox of ``sandbox_path``.

With ``sandbox_path`` set, a path's real location (every symlink resolved) must be inside the
sandbox's real location, so a symlink cannot lead out of it. ``file`` (a watched query),
``writeToFile`` and ``{% include %}`` all check through :func:`check_sandbox`.
"""

from __future__ import annotations

import json
import os

from .errors import TemplateError

__all__ = ["SandboxError", "call", "check_sandbox"]


class SandboxError(TemplateError):
    """A path leads outside ``sandbox_path``."""


def call(name: str, arg: str) -> str:
    """How a call looks in messages: ``file("/etc/app.conf")``."""
    return f"{name}({json.dumps(arg, ensure_ascii=False)})"


def check_sandbox(path: str, sandbox: str, *, what: str = "file", shown: str = "") -> str:
    """The real path of ``path`` if it is inside ``sandbox`` (both symlink-resolved), else
    :class:`SandboxError`. ``shown``: the path the message names, if not ``path``."""
    real = os.path.realpath(path)
    root = os.path.realpath(sandbox)
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        really = "" if real == os.path.abspath(path) else f" (it resolves to {real})"
        raise SandboxError(
            f"{call(what, shown or path)}: outside the sandbox {sandbox}{really}; "
            "sandbox_path allows only paths inside it"
        )
    return real
