"""Templates that take long to execute (a slow ``plugin``): they run in worker threads, and
nothing about them may lose a change, loop, pile up, or hold up the other templates.

Each test runs the real ``ctemplate`` command against the session's Consul agent.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from ctemplate_proc import Daemon, read, run_ctemplate, wait_for


def _config(consul, tmp_path: Path, *templates: tuple[Path, str], extra: str = "") -> Path:
    body = f'consul {{\n  address = "{consul.http_addr}"\n}}\n'
    for src, dest in templates:
        body += f'template {{\n  source = "{src}"\n  destination = "{tmp_path / dest}"\n{extra}}}\n'
    config = tmp_path / "ct.hcl"
    config.write_text(body)
    return config


def _script(path: Path, text: str) -> str:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return str(path)


def test_data_arriving_during_a_slow_execution_is_used(consul, unique, tmp_path):
    """Promise: a template whose execution is still running when data it needs arrives (another
    template asked for the same key first) is executed again with it: the file is written and
    -once finishes, instead of waiting for a change that already happened."""
    key = f"{unique}/k"
    consul.put_kv(key, "v1")
    fast, slow = tmp_path / "a.j2", tmp_path / "b.j2"
    fast.write_text(f'a={{{{ key("{key}") }}}}\n')
    slow.write_text(f'{{{{ plugin("sleep", "1") }}}}b={{{{ key("{key}") }}}}\n')
    config = _config(consul, tmp_path, (fast, "a.out"), (slow, "b.out"))
    result = run_ctemplate(["-config", str(config), "-once", "-once-timeout", "15s"], timeout=30)
    assert result.returncode == 0, result.stderr
    assert (read(tmp_path / "a.out"), read(tmp_path / "b.out")) == ("a=v1\n", "b=v1\n")


def test_slow_template_with_a_quiet_period_runs_once_per_change(consul, unique, tmp_path):
    """Promise: a template with `wait` whose execution outlasts a pass is executed again only
    when its data changes, not in an endless loop of quiet periods."""
    key = f"{unique}/k"
    consul.put_kv(key, "v1")
    runs = tmp_path / "runs"
    plugin = _script(tmp_path / "slow.sh", f"echo x >> {runs}\nsleep 0.5\necho ok\n")
    src = tmp_path / "t.j2"
    src.write_text(f'{{{{ plugin("{plugin}") }}}} {{{{ key("{key}") }}}}\n')
    wait = '  wait {\n    min = "500ms"\n    max = "2s"\n  }\n'
    config = _config(consul, tmp_path, (src, "out"), extra=wait)
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: read(tmp_path / "out") == "ok v1\n", what="first render", log=ct.log())
        consul.put_kv(key, "v2")
        wait_for(lambda: read(tmp_path / "out") == "ok v2\n", what="the change", log=ct.log())
        time.sleep(1.0)  # the execution that wrote it is done
        before = len(runs.read_text().splitlines())
        time.sleep(3.0)  # nothing changes in Consul
        after = len(runs.read_text().splitlines())
        log = ct.log()
    assert after == before, f"{after - before} executions while nothing changed\n{log}"


def test_reload_during_a_slow_execution_does_not_start_a_second_one(consul, tmp_path):
    """Promise: SIGHUP while a template is executing does not run that template twice at once;
    its result is dropped and the reloaded template runs when the first is done."""
    live = tmp_path / "live"
    live.mkdir()
    plugin = _script(tmp_path / "slow.sh", f"touch {live}/$$\nsleep 2\nrm {live}/$$\necho ok\n")
    src = tmp_path / "t.j2"
    src.write_text(f'{{{{ plugin("{plugin}") }}}}\n')
    config = _config(consul, tmp_path, (src, "out"))
    with Daemon(["-config", str(config)]) as ct:
        wait_for(lambda: len(os.listdir(live)) == 1, what="the plugin running", log=ct.log())
        peak = 1
        for _ in range(3):
            ct.signal(signal.SIGHUP)
            time.sleep(0.3)
            peak = max(peak, len(os.listdir(live)))
        wait_for(lambda: read(tmp_path / "out") == "ok\n", timeout=10, what="render", log=ct.log())
        log = ct.log()
    assert peak == 1, f"{peak} executions of the same template at once\n{log}"


def test_many_slow_templates_do_not_hold_up_a_fast_one(consul, unique, tmp_path):
    """Promise: however many templates wait on slow plugins, a template that needs no plugin is
    written at once (executions have their own threads, not the ones writes use)."""
    key = f"{unique}/k"
    consul.put_kv(key, "v1")
    fast, slow = tmp_path / "fast.j2", tmp_path / "slow.j2"
    fast.write_text(f'k={{{{ key("{key}") }}}}\n')
    slow.write_text('{{ plugin("sleep", "30") }}slow\n')
    slow_ones = [(slow, f"slow{i}.out") for i in range((os.cpu_count() or 1) + 4)]
    config = _config(consul, tmp_path, (fast, "fast.out"), *slow_ones)
    with Daemon(["-config", str(config)]) as ct:
        took = wait_for(
            lambda: read(tmp_path / "fast.out") == "k=v1\n", timeout=20, what="fast", log=ct.log()
        )
        assert took < 5, ct.log()
        consul.put_kv(key, "v2")
        wait_for(lambda: read(tmp_path / "fast.out") == "k=v2\n", timeout=5, log=ct.log())
