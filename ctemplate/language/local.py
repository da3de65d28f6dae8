"""Template functions that touch the local machine: environment, time, files, external programs.

``file`` itself is a watched query (:class:`~ctemplate.queries.FileQuery`); this module holds the
sandbox rule it shares with ``writeToFile`` and ``{% include %}``: with ``sandbox_path`` set, a
path's real location (every symlink resolved) must be inside the sandbox's real location, so a
symlink cannot lead out of it.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import selectors
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..errors import RenderError, TemplateError
from ..output import write
from ..paths import SandboxError, call, check_sandbox
from .execution import current

__all__ = [
    "PLUGIN_MAX_OUTPUT",
    "PLUGIN_TIMEOUT",
    "SandboxError",
    "allow_plugins",
    "check_sandbox",
    "env",
    "env_or_default",
    "go_time_format",
    "must_env",
    "plugin",
    "stop_plugins",
    "timestamp",
    "write_to_file",
]

PLUGIN_TIMEOUT = 30.0  # seconds, as consul-template
PLUGIN_MAX_OUTPUT = 1024 * 1024  # bytes of stdout (plugin_max_output), outside an execution

# Replaced in tests to freeze the clock.
now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


# --- environment ------------------------------------------------------------------------------


def env(name: Any, default: Any = "") -> str:
    """``env("HOME")``: the variable's value, ``""`` (or ``default``) when unset."""
    return os.environ.get(str(name), str(default))


def must_env(name: Any) -> str:
    value = os.environ.get(str(name), "")
    if not value:
        raise TemplateError(f"{call('mustEnv', str(name))}: required environment variable is empty")
    return value


def env_or_default(name: Any, default: Any) -> str:
    """The value if the variable is set, even to ``""``; else ``default``."""
    value = os.environ.get(str(name))
    return str(default) if value is None else value


# --- time -------------------------------------------------------------------------------------


def timestamp(fmt: Any = None) -> str:
    """The current time in UTC.

    No argument: RFC 3339 (``2024-05-01T12:00:00Z``); ``"unix"``: seconds since the epoch; a
    format containing ``%``: Python's ``strftime`` (``"%Y-%m-%d"``); anything else: a Go layout
    (``"2006-01-02"``), so consul-template templates keep working.
    """
    t = now().astimezone(UTC)
    if fmt is None or fmt == "":
        return go_time_format(t, "2006-01-02T15:04:05Z07:00")
    fmt = str(fmt)
    if fmt == "unix":
        return str(int(t.timestamp()))
    if "%" in fmt:
        return t.strftime(fmt)
    return go_time_format(t, fmt)


_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _offset(t: datetime, *, z: bool, colon: bool, seconds: bool, hours_only: bool) -> str:
    delta = t.utcoffset()
    total = int(delta.total_seconds()) if delta is not None else 0
    if z and total == 0:
        return "Z"
    sign = "-" if total < 0 else "+"
    total = abs(total)
    hh, mm, ss = total // 3600, total // 60 % 60, total % 60
    if hours_only:
        return f"{sign}{hh:02d}"
    sep = ":" if colon else ""
    text = f"{sign}{hh:02d}{sep}{mm:02d}"
    if seconds:
        text += f"{sep}{ss:02d}"
    return text


def _chunk(layout: str, i: int, t: datetime) -> tuple[str, int] | None:
    """The formatted value of the Go layout element starting at ``layout[i]`` and its length, or
    None when no element starts there (Go's ``nextStdChunk``)."""
    rest = layout[i:]
    c = rest[0]
    hour12 = t.hour % 12 or 12
    if c == "J" and rest.startswith("Jan"):
        if rest.startswith("January"):
            return _MONTHS[t.month - 1], 7
        return _MONTHS[t.month - 1][:3], 3
    if c == "M":
        if rest.startswith("Monday"):
            return _DAYS[t.weekday()], 6
        if rest.startswith("Mon"):
            return _DAYS[t.weekday()][:3], 3
        if rest.startswith("MST"):
            return (t.tzname() or "UTC"), 3
    if c == "0":
        if rest.startswith("002"):
            return f"{t.timetuple().tm_yday:03d}", 3
        if len(rest) >= 2 and "1" <= rest[1] <= "6":
            value = {
                "1": f"{t.month:02d}",
                "2": f"{t.day:02d}",
                "3": f"{hour12:02d}",
                "4": f"{t.minute:02d}",
                "5": f"{t.second:02d}",
                "6": f"{t.year % 100:02d}",
            }[rest[1]]
            return value, 2
    if c == "1":
        if rest.startswith("15"):
            return f"{t.hour:02d}", 2
        return str(t.month), 1
    if c == "2":
        if rest.startswith("2006"):
            return f"{t.year:04d}", 4
        return str(t.day), 1
    if c == "_":
        if rest.startswith("_2006"):
            return "_" + f"{t.year:04d}", 5
        if rest.startswith("__2"):
            return f"{t.timetuple().tm_yday:>3d}", 3
        if rest.startswith("_2"):
            return f"{t.day:>2d}", 2
    if c == "3":
        return str(hour12), 1
    if c == "4":
        return str(t.minute), 1
    if c == "5":
        return str(t.second), 1
    if rest.startswith("PM"):
        return ("PM" if t.hour >= 12 else "AM"), 2
    if rest.startswith("pm"):
        return ("pm" if t.hour >= 12 else "am"), 2
    if c in "-Z":
        z = c == "Z"
        for pattern, colon, seconds, hours_only in (
            ("07:00:00", True, True, False),
            ("070000", False, True, False),
            ("07:00", True, False, False),
            ("0700", False, False, False),
            ("07", False, False, True),
        ):
            if rest[1:].startswith(pattern):
                text = _offset(t, z=z, colon=colon, seconds=seconds, hours_only=hours_only)
                return text, 1 + len(pattern)
    if c in ".," and len(rest) >= 2 and rest[1] in "09":
        digit = rest[1]
        n = 1
        while n < len(rest) and rest[n] == digit:
            n += 1
        if not (n < len(rest) and rest[n].isdigit()):
            width = n - 1
            frac = f"{t.microsecond:06d}000"[:width]
            if digit == "9":
                frac = frac.rstrip("0")
                return (c + frac if frac else ""), n
            return c + frac, n
    return None


def go_time_format(t: datetime, layout: str) -> str:
    """Format ``t`` with a Go reference-time layout (``"Mon Jan 2 15:04:05 MST 2006"``)."""
    out: list[str] = []
    i = 0
    while i < len(layout):
        found = _chunk(layout, i, t)
        if found is None:
            out.append(layout[i])
            i += 1
            continue
        text, length = found
        out.append(text)
        i += length
    return "".join(out)


# --- external programs and files --------------------------------------------------------------


# Plugins still running, so that a stopping daemon need not wait for them (stop_plugins), and
# whether new ones may start (not while stopping).
_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()
_stopping = False


def plugin(command: Any, *args: Any, timeout: float = PLUGIN_TIMEOUT) -> str:
    """Run ``command`` with ``args`` (no shell) and return its standard output, trimmed.

    Arguments are trimmed and empty ones dropped, as consul-template does. The program runs in
    its own process group, which is killed as a whole on timeout and by :func:`stop_plugins`.
    """
    name = str(command)
    if not name:
        return ""
    argv = [name, *(a for a in (str(x).strip() for x in args) if a)]
    what = call("plugin", name)
    with _running_lock:
        if _stopping:
            raise TemplateError(f"{what}: not run, ctemplate is stopping")
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise TemplateError(
                f"{what}: cannot run it: {exc.strerror}; give a path or a program on PATH"
            ) from None
        _running.add(proc)
    deadline = time.monotonic() + timeout
    p = current.get(None)
    cap = p.options.plugin_max_output if p is not None else PLUGIN_MAX_OUTPUT
    try:
        out, err_bytes = _communicate(proc, what, deadline, timeout, cap)
    except BaseException:  # its own errors, and an interrupted execution: no plugin left behind
        _kill_group(proc)
        with contextlib.suppress(BaseException):
            proc.wait(1.0)
        raise
    finally:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        with _running_lock:
            _running.discard(proc)
    if proc.returncode != 0:
        err = err_bytes.decode("utf-8", "replace").strip() or out.decode("utf-8", "replace").strip()
        status = (
            f"was killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exited with status {proc.returncode}"
        )
        detail = f": {err[-1000:]}" if err else ""
        raise TemplateError(f"{what} {status}{detail}")
    return out.decode("utf-8", "replace").strip()


_ERR_TAIL = 64 * 1024  # bytes of a plugin's stderr kept for its error message


def _communicate(
    proc: subprocess.Popen[bytes], what: str, deadline: float, timeout: float, cap: int
) -> tuple[bytes, bytes]:
    """The plugin's stdout (at most ``cap`` bytes) and the tail of its stderr, once it exited.

    Read in short slices: a stop must be noticed even when a descendant that left the process
    group keeps the pipes open after the group was killed."""
    out, err = bytearray(), bytearray()
    with selectors.DefaultSelector() as selector:
        for pipe, buffer in ((proc.stdout, out), (proc.stderr, err)):
            assert pipe is not None
            selector.register(pipe, selectors.EVENT_READ, buffer)
        while True:
            if _stopping:
                raise TemplateError(f"{what}: killed: ctemplate is stopping")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TemplateError(f"{what}: did not finish in {timeout:g}s and was killed")
            if not selector.get_map():  # both pipes closed: wait for the exit
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(min(0.5, left))
                    return bytes(out), bytes(err)
                continue
            for key, _ in selector.select(min(0.5, left)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = key.data
                buffer += chunk
                if buffer is out and len(out) > cap:
                    raise TemplateError(
                        f"{what}: printed more than {cap:,} bytes and was killed with its "
                        "process group (raise plugin_max_output if this is meant)"
                    )
                if buffer is err and len(err) > 2 * _ERR_TAIL:
                    del err[:-_ERR_TAIL]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The group outlives its leader while children remain, so kill it even if the leader exited.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def stop_plugins() -> None:
    """The daemon is stopping: kill every running plugin with its process group, and refuse to
    start new ones (a template still executing would otherwise start its next one)."""
    global _stopping
    with _running_lock:
        _stopping = True
        running = list(_running)
    for proc in running:
        _kill_group(proc)


def allow_plugins() -> None:
    """Plugins may run (again): a runner starting."""
    global _stopping
    with _running_lock:
        _stopping = False


def _perms(value: Any) -> int | None:
    """``"0644"`` (octal digits, as consul-template) or a number such as ``0o644``."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        try:
            mode = int(str(value).strip().removeprefix("0o"), 8)
        except ValueError:
            mode = -1
    if not 0 <= mode <= 0o7777:
        raise TemplateError(f'writeToFile: perms {value!r} is not a file mode; write e.g. "0644"')
    return mode


def _uid(user: Any) -> int:
    text = str(user)
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(text).pw_uid
    if text.isdigit():
        return int(text)
    raise TemplateError(f"writeToFile: unknown user {text!r}")


def _gid(group: Any) -> int:
    text = str(group)
    with contextlib.suppress(KeyError):
        return grp.getgrnam(text).gr_gid
    if text.isdigit():
        return int(text)
    raise TemplateError(f"writeToFile: unknown group {text!r}")


def write_to_file(
    path: Any,
    content: Any,
    perms: Any = None,
    append: bool = False,
    newline: bool = False,
    user: Any = None,
    group: Any = None,
    *,
    sandbox: str | None = None,
) -> str:
    """Write (or append) ``content`` to ``path``; returns ``""`` so it can sit in a template.

    The path comes from a template (maybe from KV data), so it gets the strictest form of the
    symlink rule (:mod:`ctemplate.output.write`): neither the file nor its parent directory may
    be a symlink, other links in the path must be root's or ctemplate's own, and with a sandbox
    the directory actually opened must be inside it. A write replaces the file atomically (a
    temporary file beside it, fsynced, renamed over it), so a full disk leaves the previous
    content whole; unchanged content is not rewritten. ``append`` adds to the file in place
    (``O_APPEND``, never through a symlink). A rewritten file keeps its owner and mode unless
    ``user``, ``group`` or ``perms`` say otherwise; ``chown`` comes before ``chmod`` so a
    setuid or setgid bit in ``perms`` stays.
    """
    target = str(path)
    what = call("writeToFile", target)
    if not target:
        raise TemplateError("writeToFile: the path is empty")
    mode = _perms(perms)
    uid = _uid(user) if user not in (None, "") else -1
    gid = _gid(group) if group not in (None, "") else -1
    directory, name = os.path.split(os.path.abspath(target))
    if not name or target.endswith(os.sep):
        raise TemplateError(f"{what}: the path names a directory; name a file")
    if sandbox:
        check_sandbox(directory, sandbox, what="writeToFile", shown=target)
    text = str(content) + ("\n" if newline else "")
    data = text.encode("utf-8", "surrogateescape")
    try:
        dir_fd = write.open_directory(directory, what, create=True, refuse_link=True)
    except RenderError as exc:
        raise TemplateError(str(exc)) from None
    try:
        if sandbox:
            check_sandbox(
                write.real_directory(dir_fd, directory), sandbox, what="writeToFile", shown=target
            )
        if append:
            _append(dir_fd, name, data, mode, uid, gid, what)
            return ""
        current = write.read_current(dir_fd, name, what)
        if current.link is not None:
            raise TemplateError(f"{what}: the file is a symlink; refusing to follow it")
        st = current.stat
        new_mode = mode if mode is not None else (stat.S_IMODE(st.st_mode) if st else 0o644)
        owner = (
            uid if uid != -1 else (st.st_uid if st else os.geteuid()),
            gid if gid != -1 else (st.st_gid if st else os.getegid()),
        )
        if (
            st is not None
            and current.data == data
            and stat.S_IMODE(st.st_mode) == new_mode
            and (st.st_uid, st.st_gid) == owner
        ):
            return ""  # nothing to change: the file keeps its time stamps
        write.install(dir_fd, directory, name, data, shown=what, mode=new_mode, owner=owner)
    except RenderError as exc:
        raise TemplateError(str(exc)) from None
    finally:
        os.close(dir_fd)
    return ""


def _append(
    dir_fd: int, name: str, data: bytes, mode: int | None, uid: int, gid: int, what: str
) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o644 if mode is None else mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise TemplateError(f"{what}: the file is a symlink; refusing to follow it") from None
        raise TemplateError(f"{what}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TemplateError(f"{what}: not a regular file; name a file")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        if mode is not None:
            os.fchmod(fd, mode)  # after fchown, which clears setuid/setgid
    except OSError as exc:
        raise TemplateError(f"{what}: {exc.strerror}") from None
    finally:
        os.close(fd)
