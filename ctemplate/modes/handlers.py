"""What a watch does with a change: run a script, or send an HTTP request (Consul's handlers).

A script handler gets the JSON on stdin and ``CONSUL_INDEX`` in its environment, as from
``consul watch``. It runs in its own process group; at its timeout the whole group
gets SIGTERM, then SIGKILL after a short grace period, so a hung handler and everything it
started go away and the watch carries on. ``args`` runs as an argv; the older ``handler`` string
runs through ``$SHELL -c`` (``/bin/sh`` when ``SHELL`` is unset), as Consul does.

An HTTP handler sends the same JSON with ``Content-Type: application/json`` and
``X-Consul-Index`` to ``http_handler_config.path``; any answer outside 2xx is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Protocol

import httpx

from ..config.model import HttpHandlerConfig, WatchConfig
from ..errors import CommandError
from ..output.command import kill_group, start_process

__all__ = ["Handler", "HttpHandler", "ScriptHandler", "make_handler"]

log = logging.getLogger(__name__)

_TAIL = 2000  # bytes of output kept for the failure message
_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
_LINGER = 0.5  # seconds to read output still coming after the handler exited
_POLL = 0.01  # seconds between checks whether the handler exited


class Handler(Protocol):
    """One way of handing a change over; raises :class:`CommandError` when it fails."""

    def describe(self) -> str: ...

    async def run(self, index: int, body: bytes) -> None: ...


def _one_line(data: bytes) -> str:
    text = data[-_TAIL:].decode("utf-8", "replace")
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


class ScriptHandler:
    """A command run once per change.

    ``passthrough``: the command's stdout is ctemplate's stdout and its stderr is copied to
    ctemplate's stderr (the CLI, as ``consul watch``); otherwise both are kept for the log.
    """

    def __init__(
        self, argv: tuple[str, ...], *, timeout: float = 30.0, passthrough: bool = False
    ) -> None:
        if not argv:
            raise ValueError("empty handler")
        self.argv = argv
        self.timeout = timeout
        self.passthrough = passthrough

    def describe(self) -> str:
        return " ".join(self.argv)

    async def run(self, index: int, body: bytes) -> None:
        env = {**os.environ, "CONSUL_INDEX": str(index)}
        try:
            proc = await start_process(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=None if self.passthrough else asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                # Its own process group (not a new session: setsid() in the child made each
                # start 10-15 ms slower here, bench/watch_latency.py), so the group can be killed.
                process_group=0,
                env=env,
            )
        except OSError as exc:
            raise CommandError(
                f"handler {self.describe()!r} could not start: {exc.strerror or exc}"
            ) from exc
        tail = bytearray()

        async def feed() -> None:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(body)
                await proc.stdin.drain()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.close()

        async def drain(stream: asyncio.StreamReader | None, copy: bool) -> None:
            if stream is None:
                return
            while chunk := await stream.read(65536):
                if copy:
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.buffer.flush()
                tail.extend(chunk)
                del tail[: max(0, len(tail) - _TAIL)]

        tasks = [
            asyncio.ensure_future(feed()),
            asyncio.ensure_future(drain(proc.stdout, False)),
            asyncio.ensure_future(drain(proc.stderr, self.passthrough)),
        ]

        async def exited() -> int:
            # Not proc.wait(): before Python 3.12 it also waits for the pipes to close.
            while proc.returncode is None:
                await asyncio.sleep(_POLL)
            return proc.returncode

        async def complete() -> int:
            code = await exited()
            # A descendant left running in the background may hold the pipes open: read what
            # is there, but do not wait for it (consul watch does not either).
            await asyncio.wait(tasks, timeout=_LINGER)
            return code

        try:
            code = await asyncio.wait_for(complete(), self.timeout if self.timeout > 0 else None)
        except TimeoutError:
            kill_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(exited(), _GRACE)
            except TimeoutError:
                kill_group(proc.pid, signal.SIGKILL)
                await exited()
            kill_group(proc.pid, signal.SIGKILL)  # descendants that ignored SIGTERM
            raise CommandError(
                f"handler {self.describe()!r} ran past its timeout of {self.timeout:g}s and was "
                "killed with its process group (raise the watch's timeout if it needs longer)"
            ) from None
        except asyncio.CancelledError:
            kill_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(exited(), _GRACE)
                await asyncio.wait(tasks, timeout=_GRACE)  # the pipes' ends, with the group's
            raise
        finally:
            for task in tasks:
                task.cancel()
            # The feeding task may have been cancelled before it closed the handler's stdin (a
            # handler that exited or was killed without reading it): closed here, or the pipe
            # is left to the garbage collector, which closes it on a loop that may be gone.
            assert proc.stdin is not None
            proc.stdin.close()
        if tail and not self.passthrough:  # the agent logs a handler's output at debug too
            log.debug("(watch) handler %r output: %s", self.describe(), _one_line(bytes(tail)))
        if code != 0:
            detail = _one_line(bytes(tail))
            raise CommandError(
                f"handler {self.describe()!r} exited with status {code}"
                + (f": {detail}" if detail else "")
            )


class HttpHandler:
    """Consul's ``http`` handler: the JSON as the body of one request per change."""

    def __init__(self, config: HttpHandlerConfig) -> None:
        self.config = config

    def describe(self) -> str:
        return f"{self.config.method} {self.config.path}"

    async def run(self, index: int, body: bytes) -> None:
        c = self.config
        headers: list[tuple[str, str]] = [
            ("Content-Type", "application/json"),
            ("X-Consul-Index", str(index)),
        ]
        for name, values in c.header:
            headers.extend((name, value) for value in values)
        verify: bool = not c.tls_skip_verify
        try:
            async with httpx.AsyncClient(verify=verify, timeout=c.timeout, trust_env=False) as http:
                resp = await http.request(c.method, c.path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise CommandError(f"http handler {self.describe()}: {reason}") from exc
        if not 200 <= resp.status_code < 300:
            first = resp.text.strip().splitlines()[0][:200] if resp.text.strip() else ""
            raise CommandError(
                f"http handler {self.describe()}: answered {resp.status_code}"
                + (f": {first}" if first else "")
            )


def shell_argv(command: str) -> tuple[str, ...]:
    """``$SHELL -c command`` (``/bin/sh`` without ``SHELL``), as Consul runs a handler string."""
    return (os.environ.get("SHELL") or "/bin/sh", "-c", command)


def make_handler(watch: WatchConfig, *, passthrough: bool = False) -> Handler | None:
    """The handler a watch names, or None (print the JSON)."""
    if watch.handler_type == "http":
        assert watch.http is not None
        return HttpHandler(watch.http)
    if watch.args:
        return ScriptHandler(watch.args, timeout=watch.timeout, passthrough=passthrough)
    if watch.handler:
        return ScriptHandler(
            shell_argv(watch.handler), timeout=watch.timeout, passthrough=passthrough
        )
    return None
