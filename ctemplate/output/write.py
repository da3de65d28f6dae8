"""Writing output files: atomically, only when the bytes change.

The new content goes to a temporary file in the destination's directory (same filesystem),
is fsynced, gets its mode, and is renamed over the destination; a reader sees the old file or
the new one, never a mix. ``-dry`` prints ``> destination`` and the content instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from ..errors import RenderError

__all__ = ["RenderResult", "render"]


@dataclass(frozen=True, slots=True)
class RenderResult:
    changed: bool  # the destination now has new bytes (or would have, in dry mode)
    written: bool  # the file was actually replaced


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise RenderError(f"{path}: is a directory; point destination at a file") from None
    except NotADirectoryError:
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.lexists(parent) and parent != os.path.dirname(parent):
            parent = os.path.dirname(parent)
        raise RenderError(
            f"{path}: {parent} is not a directory; fix the destination's path"
        ) from None
    except OSError as exc:
        raise RenderError(f"{path}: cannot read the current file: {exc.strerror}") from exc


def render(
    destination: str,
    content: str,
    *,
    perms: int | None = None,
    backup: bool = False,
    create_dest_dirs: bool = True,
    dry: bool = False,
    dry_out: TextIO | None = None,
    check: Callable[[str], None] | None = None,
) -> RenderResult:
    """Write ``content`` to ``destination`` if it differs from what is there.

    ``check(staged_path)`` runs on the complete temporary file before it replaces the
    destination; if it raises, the destination is left as it was.
    """
    # surrogateescape: bytes that came in undecodable (os.environ) go out unchanged.
    data = content.encode("utf-8", "surrogateescape")
    existing = _read(destination)
    if existing == data:
        return RenderResult(changed=False, written=False)
    if dry:
        out = dry_out or sys.stdout
        out.write(f"> {destination}\n{content}")
        out.flush()
        return RenderResult(changed=True, written=False)

    directory = os.path.dirname(os.path.abspath(destination))
    if not os.path.isdir(directory):
        if not create_dest_dirs:
            raise RenderError(
                f"{destination}: directory {directory} does not exist "
                "(create it, or set create_dest_dirs = true)"
            )
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise RenderError(f"{destination}: cannot create {directory}: {exc.strerror}") from exc

    mode = perms
    if mode is None:
        try:
            mode = os.stat(destination).st_mode & 0o7777
        except OSError:
            mode = 0o644
    base = os.path.basename(destination)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise RenderError(
            f"{destination}: cannot create a temporary file in {directory}: {exc.strerror}"
        ) from exc
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            if existing is not None:
                with contextlib.suppress(OSError):  # best effort, as consul-template
                    st = os.stat(destination)
                    os.chown(tmp, st.st_uid, st.st_gid)
        except OSError as exc:
            raise RenderError(f"{destination}: cannot write: {exc.strerror}") from exc
        if check is not None:
            check(tmp)
        if backup and existing is not None:
            try:
                shutil.copy2(destination, destination + ".bak")
            except OSError as exc:
                raise RenderError(
                    f"{destination}: cannot write the backup {destination}.bak: {exc.strerror}"
                ) from exc
        try:
            os.replace(tmp, destination)
        except OSError as exc:
            raise RenderError(f"{destination}: cannot replace the file: {exc.strerror}") from exc
        tmp = ""
        with contextlib.suppress(OSError):
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return RenderResult(changed=True, written=True)
