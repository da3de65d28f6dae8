"""Path rules shared by every stage: the sandbox of ``sandbox_path``.

With ``sandbox_path`` set, a path's real location (every symlink resolved) must be inside the
sandbox's real location, so a symlink cannot lead out of it. ``file`` (a watched query),
``writeToFile`` and ``{% include %}`` all check through :func:`check_sandbox`.
"""

from __future__ import annotations

import json
import os

from .errors import TemplateError

__all__ = ["SandboxError", "call", "check_sandbox", "read_in_sandbox"]


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


def _real_path_of(fd: int, path: str) -> str:
    """Where an open file really is, whatever happened to ``path`` since it was opened."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)


def read_in_sandbox(path: str, sandbox: str, *, what: str = "file") -> str:
    """The text of ``path``, checked against ``sandbox`` before it is opened (for the message)
    and again on the file actually opened, so a symlink swapped in between cannot lead out."""
    check_sandbox(path, sandbox, what=what)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    with open(fd, encoding="utf-8", errors="replace", closefd=True) as f:
        check_sandbox(_real_path_of(fd, path), sandbox, what=what, shown=path)
        return f.read()
