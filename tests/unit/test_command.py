"""Commands: shell strings, argv lists, failures with stderr, timeouts killing the group."""

from __future__ import annotations

import os
import time

import pytest
from cancel_start import SCRIPT, cancel_while_starting

from ctemplate.errors import CommandError
from ctemplate.output.command import run_command


async def test_shell_string_and_argv():
    r = await run_command("echo one; echo two")
    assert r.stdout == "one\ntwo\n"
    r = await run_command(("printf", "%s", "a b"))
    assert r.stdout == "a b"


async def test_failure_reports_status_and_stderr_tail():
    with pytest.raises(CommandError) as info:
        await run_command("echo nope >&2; exit 3", what="out.conf: command")
    assert str(info.value) == (
        "out.conf: command 'echo nope >&2; exit 3' exited with status 3: nope"
    )


async def test_missing_program():
    with pytest.raises(CommandError, match="could not start: No such file or directory"):
        await run_command(("/nonexistent/reload",))


async def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(CommandError, match=r"ran past its timeout of 0\.5s and was killed"):
        # The grandchild ignores SIGTERM; the group is SIGKILLed after the grace period.
        await run_command(
            f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; sleep 30' & wait", timeout=0.5
        )
    assert time.monotonic() - started < 10
    pid = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"grandchild {pid} survived the timeout")


async def test_cancelled_while_starting_leaves_nothing_running(tmp_path):
    # Stopping ctemplate at the moment a command starts used to kill the shell alone: what it
    # had already started in the background ran on.
    pid_file = tmp_path / "bg.pid"
    command = run_command(SCRIPT.format(pid_file=pid_file), timeout=0)
    assert await cancel_while_starting(command, pid_file) is None
