"""Writing output files: atomically, only when the bytes change, never through a planted link.

The new content goes to a temporary file created beside the destination (``O_EXCL``,
``O_NOFOLLOW``), is fsynced, gets its owner and then its mode (in that order: ``chown`` clears
the setuid and setgid bits), and is renamed over the destination; a reader sees the old file or
the new one, never a mix, and a full disk leaves the old file whole. ``-dry`` prints
``> destination`` and the content instead.

The symlink rule (README, "Security"):

* The last component of a path ctemplate writes (a destination, its ``.bak``, the pid file, a
  ``writeToFile`` file) is never followed: a symlink there is replaced by the new file, as the
  configured path names it. Its target is not read, not written, and lends neither its owner nor
  its mode.
* Symlinks in the directories above are followed only when owned by root or by ctemplate's own
  user (links the operator made); a link owned by anyone else is refused, naming the link, as
  the kernel's ``protected_symlinks`` does in shared directories. ``writeToFile``, whose path
  comes from a template, also refuses a symlinked parent directory outright (as consul-template).
* Every step after the directory is opened works relative to that open directory, so a link
  swapped in meanwhile is not followed either.
* A rewritten file keeps the owner and mode of the regular file it replaces at that very path,
  as consul-template does; ownership is never taken from anything else.

``.bak`` is a hard link to the previous file made under a temporary name and renamed into
place (so it costs no space, and a full disk cannot truncate the previous good backup); where
hard links are refused it is a complete copy, renamed into place the same way.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from ..errors import RenderError

__all__ = [
    "Current",
    "RenderResult",
    "check_links",
    "install",
    "open_directory",
    "read_current",
    "real_directory",
    "render",
    "write_small_file",
]

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_MAX_LINKS = 40  # as the kernel's limit on symlinks in one path


@dataclass(frozen=True, slots=True)
class RenderResult:
    """What writing a rendered template did to its destination."""

    changed: bool  # the destination now has new bytes (or would have, in dry mode)
    written: bool  # the file was actually replaced


@dataclass(frozen=True, slots=True)
class Current:
    """What is at a path now, read without following a symlink in its last component."""

    data: bytes | None = None  # a regular file's bytes, None if there is none
    stat: os.stat_result | None = None  # the regular file's, None if there is none
    link: str | None = None  # the target of a symlink there (never followed)


def check_links(path: str, shown: str) -> None:
    """Refuse ``path`` if resolving it would follow a symlink owned by another user than root or
    ctemplate's own (see the module's docstring). Components that do not exist yet end the walk:
    ctemplate creates them."""
    trusted = {0, os.geteuid()}
    pending = [p for p in os.path.abspath(path).split(os.sep) if p]
    current = os.sep
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise RenderError(f"{shown}: cannot look at {candidate}: {exc.strerror}") from None
        if not stat.S_ISLNK(st.st_mode):
            current = candidate
            continue
        if st.st_uid not in trusted:
            raise RenderError(
                f"{shown}: {candidate} is a symlink owned by uid {st.st_uid}; ctemplate follows "
                "only links owned by root or its own user (replace the link with a directory, "
                "or name the real path)"
            )
        links += 1
        if links > _MAX_LINKS:
            raise RenderError(f"{shown}: too many levels of symlinks at {candidate}")
        target = os.readlink(candidate)
        if os.path.isabs(target):
            current = os.sep
        pending[:0] = [p for p in target.split(os.sep) if p]


def _not_a_directory(shown: str, directory: str) -> RenderError:
    parent = directory
    while not os.path.lexists(parent) and parent != os.path.dirname(parent):
        parent = os.path.dirname(parent)
    return RenderError(f"{shown}: {parent} is not a directory; fix the destination's path")


def open_directory(
    directory: str,
    shown: str,
    *,
    create: bool,
    refuse_link: bool = False,
    create_hint: str = "create it, or set create_dest_dirs = true",
) -> int:
    """Open ``directory`` (creating it if ``create``) after :func:`check_links`; with
    ``refuse_link`` the directory itself must not be a symlink. Returns the descriptor."""
    check_links(directory, shown)
    flags = _DIR_FLAGS | (os.O_NOFOLLOW if refuse_link else 0)
    for attempt in (1, 2):
        try:
            return os.open(directory, flags)
        except FileNotFoundError:
            if attempt == 2 or not create:
                raise RenderError(
                    f"{shown}: directory {directory} does not exist ({create_hint})"
                ) from None
            try:
                os.makedirs(directory, mode=0o755, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise _not_a_directory(shown, directory) from None
            except OSError as exc:
                raise RenderError(f"{shown}: cannot create {directory}: {exc.strerror}") from None
            check_links(directory, shown)  # what was created, no link in it
        except NotADirectoryError:
            if refuse_link and os.path.islink(directory):
                break
            raise _not_a_directory(shown, directory) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP and refuse_link:
                break
            raise RenderError(f"{shown}: cannot open {directory}: {exc.strerror}") from None
    raise RenderError(
        f"{shown}: the directory {directory} is a symlink; refusing to write through it "
        "(name the real directory)"
    )


def real_directory(dir_fd: int, directory: str) -> str:
    """Where an open directory really is (all links resolved, whatever happened to the path
    since it was opened)."""
    try:
        return os.readlink(f"/proc/self/fd/{dir_fd}")
    except OSError:
        return os.path.realpath(directory)


def read_current(dir_fd: int, name: str, shown: str) -> Current:
    """The regular file ``name`` in the open directory, its stat, or the symlink found there."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return Current()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            try:
                return Current(link=os.readlink(name, dir_fd=dir_fd))
            except OSError:
                return Current(link="?")
        raise RenderError(f"{shown}: cannot read the current file: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise RenderError(f"{shown}: is a directory; point destination at a file")
        if not stat.S_ISREG(st.st_mode):
            raise RenderError(
                f"{shown}: is not a regular file (a pipe or device?); point destination at a file"
            )
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return Current(b"".join(chunks), st)
    except OSError as exc:
        raise RenderError(f"{shown}: cannot read the current file: {exc.strerror}") from None
    finally:
        os.close(fd)


def _temp_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(4)}.tmp"


def _unlink(dir_fd: int, name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


def _stage(
    dir_fd: int, name: str, data: bytes, mode: int, owner: tuple[int, int] | None, shown: str
) -> str:
    """A complete, fsynced temporary file beside ``name`` with its owner, then its mode (chown
    after chmod would clear setuid/setgid). Returns its name; on error nothing is left."""
    tmp = _temp_name(name)
    try:
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
    except OSError as exc:
        raise RenderError(
            f"{shown}: cannot create a temporary file beside it: {exc.strerror}"
        ) from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        if owner is not None:
            st = os.fstat(fd)
            if (st.st_uid, st.st_gid) != owner:
                # Best effort, as consul-template: not root, the file stays ours.
                with contextlib.suppress(PermissionError):
                    os.fchown(fd, *owner)
        os.fchmod(fd, mode)
    except OSError as exc:
        os.close(fd)
        _unlink(dir_fd, tmp)
        raise RenderError(f"{shown}: cannot write: {exc.strerror}") from None
    os.close(fd)
    return tmp


def _backup(dir_fd: int, name: str, current: Current, shown: str) -> None:
    """``name.bak`` := the current file, atomically (see the module's docstring)."""
    assert current.data is not None and current.stat is not None
    bak = f"{name}.bak"
    tmp = _temp_name(bak)
    same = False
    with contextlib.suppress(OSError):
        os.link(name, tmp, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        linked = os.stat(tmp, dir_fd=dir_fd, follow_symlinks=False)
        same = (linked.st_dev, linked.st_ino) == (current.stat.st_dev, current.stat.st_ino)
    if not same:
        # No hard link here (or the file changed under us): a complete copy instead.
        _unlink(dir_fd, tmp)
        owner = (current.stat.st_uid, current.stat.st_gid)
        mode = current.stat.st_mode & 0o7777
        tmp = _stage(dir_fd, bak, current.data, mode, owner, f"{shown}.bak")
    try:
        os.replace(tmp, bak, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        _unlink(dir_fd, tmp)
        raise RenderError(f"{shown}: cannot write the backup {shown}.bak: {exc.strerror}") from None


def install(
    dir_fd: int,
    directory: str,
    name: str,
    data: bytes,
    *,
    shown: str,
    mode: int,
    owner: tuple[int, int] | None = None,
    check: Callable[[str], None] | None = None,
    backup: Current | None = None,
    visible: Callable[[], None] | None = None,
) -> None:
    """Stage ``data`` beside ``name`` in the open directory, run ``check`` on the staged path,
    back up ``backup`` (the current file) if given, rename the staged file over ``name``, then
    fsync the directory.

    ``visible()`` is called between the rename and the directory's fsync: the new file is
    complete and durable by then (fsynced before the rename), only the directory entry is not
    yet on disk, so a caller can report the file written without waiting for that second
    fsync (a crash in between leaves the previous complete file, never an empty one). Whatever
    must follow the entry being on disk (a reload command) waits for this function to
    return."""
    tmp = _stage(dir_fd, name, data, mode, owner, shown)
    try:
        if check is not None:
            check(os.path.join(directory, tmp))
        if backup is not None:
            _backup(dir_fd, name, backup, shown)
        try:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            raise RenderError(f"{shown}: cannot replace the file: {exc.strerror}") from None
        tmp = ""
        if visible is not None:
            visible()
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)
    finally:
        if tmp:
            _unlink(dir_fd, tmp)


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
    visible: Callable[[], None] | None = None,
) -> RenderResult:
    """Write ``content`` to ``destination`` if it differs from what is there.

    ``check(staged_path)`` runs on the complete temporary file before it replaces the
    destination; if it raises, the destination is left as it was. ``visible()`` is called
    once the new file is in place, before the directory's fsync (see :func:`install`); it is
    not called when nothing is written.
    """
    # surrogateescape: bytes that came in undecodable (os.environ) go out unchanged.
    data = content.encode("utf-8", "surrogateescape")
    path = os.path.abspath(destination)
    directory, name = os.path.split(path)
    if not name or destination.endswith(os.sep):
        raise RenderError(f"{destination}: is a directory; point destination at a file")
    try:
        dir_fd = open_directory(directory, destination, create=create_dest_dirs and not dry)
    except RenderError:
        if not dry or os.path.lexists(directory):
            raise
        dir_fd = -1  # -dry: a directory that would be created
    try:
        try:
            current = read_current(dir_fd, name, destination) if dir_fd >= 0 else Current()
        except RenderError:
            if not dry:
                raise
            current = Current()  # -dry writes nothing: only print what would be written
        if current.data == data:
            return RenderResult(changed=False, written=False)
        if dry:
            out = dry_out or sys.stdout
            out.write(f"> {destination}\n{content}")
            out.flush()
            return RenderResult(changed=True, written=False)
        if current.link is not None:
            log.warning(
                "(runner) %s: was a symlink to %s; replacing the link with the rendered file "
                "(a destination's link is never followed)",
                destination,
                current.link,
            )
        mode = perms
        if mode is None:
            mode = stat.S_IMODE(current.stat.st_mode) if current.stat is not None else 0o644
        owner = (current.stat.st_uid, current.stat.st_gid) if current.stat is not None else None
        install(
            dir_fd,
            directory,
            name,
            data,
            shown=destination,
            mode=mode,
            owner=owner,
            check=check,
            backup=current if backup and current.data is not None else None,
            visible=visible,
        )
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)
    return RenderResult(changed=True, written=True)


def write_small_file(path: str, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically under the symlink rule (the pid file)."""
    directory, name = os.path.split(os.path.abspath(path))
    dir_fd = open_directory(directory, path, create=False, create_hint="create it first")
    try:
        install(dir_fd, directory, name, data, shown=path, mode=mode)
    finally:
        os.close(dir_fd)
