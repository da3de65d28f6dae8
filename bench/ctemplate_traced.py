"""``ctemplate`` with timestamps: where does the time between a Consul answer and the file go?

Runs the real CLI (same flags) after wrapping four engine functions, without changing them:

* ``ConsulClient.get``: when each request started and when its answer was decoded;
* ``Watcher.deliver``: when new data reached the cache;
* ``Runner._pass``: when a pass started;
* ``runner.render``: when it started, when the destination file was renamed into place (its
  ``visible`` callback) and when it returned (after the directory's fsync).

Timestamps are ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux, so comparable with the
benchmark process). They are kept in memory and written as JSON to ``$CTEMPLATE_TRACE_OUT`` at
exit (SIGTERM makes ctemplate return normally). ``bench/reaction.py --trace`` uses this.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import sys
import time
from typing import Any

Event = tuple[str, float, float, str]  # kind, start, end, value
EVENTS: list[Event] = []


def _kv_value(data: Any) -> str:
    if isinstance(data, list) and data and isinstance(data[0], dict):
        raw = data[0].get("Value")
        if raw:
            return base64.b64decode(raw).decode("utf-8", "replace")
    return ""


def install() -> None:
    from ctemplate import runner
    from ctemplate.consul import client as consul
    from ctemplate.consul import watch

    get = consul.ConsulClient.get

    async def traced_get(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        resp = await get(self, *args, **kwargs)
        EVENTS.append(("get", t0, time.perf_counter(), _kv_value(resp.data)))
        return resp

    consul.ConsulClient.get = traced_get  # type: ignore[method-assign]

    deliver = watch.Watcher.deliver

    def traced_deliver(self: Any, key: str, value: Any) -> bool:
        t = time.perf_counter()
        EVENTS.append(("deliver", t, t, str(value)))
        return deliver(self, key, value)

    watch.Watcher.deliver = traced_deliver  # type: ignore[method-assign]

    run_pass = runner.Runner._pass

    async def traced_pass(self: Any) -> bool:
        t0 = time.perf_counter()
        ok = await run_pass(self)
        EVENTS.append(("pass", t0, time.perf_counter(), ""))
        return ok

    runner.Runner._pass = traced_pass  # type: ignore[method-assign]

    render = runner.render  # type: ignore[attr-defined]

    def traced_render(destination: str, content: str, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        visible = kwargs.get("visible")
        if visible is not None:  # the file is in place (the directory's fsync follows)

            def traced_visible() -> None:
                t = time.perf_counter()
                EVENTS.append(("visible", t, t, content))
                visible()

            kwargs["visible"] = traced_visible
        result = render(destination, content, **kwargs)
        EVENTS.append(("render", t0, time.perf_counter(), content))
        return result

    runner.render = traced_render  # type: ignore[attr-defined]

    def dump() -> None:
        out = os.environ.get("CTEMPLATE_TRACE_OUT")
        if out:
            with open(out, "w") as f:
                json.dump(EVENTS, f)

    atexit.register(dump)


def main() -> int:
    install()
    from ctemplate.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
