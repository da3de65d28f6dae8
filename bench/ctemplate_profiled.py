"""``ctemplate`` under cProfile, switched on and off by signals: where does CPU per change go?

Runs the real CLI (same flags). The profiler starts disabled; ``SIGUSR1`` enables it,
``SIGUSR2`` disables it, and the statistics (``pstats`` format) are written to
``$CTEMPLATE_PROFILE_OUT`` at exit (SIGTERM makes ctemplate return normally).
``bench/scenarios.py --profile`` enables it just before the measured changes and disables it
just after, so start-up and idle time stay out of the profile.

cProfile follows the thread that enabled it: here the main thread, which runs the event loop
(HTTP, JSON decoding, records, planning, Jinja). File writes happen in a worker thread
(``asyncio.to_thread``) and are not in the profile. Profiling slows Python code down (often
1.5-2x): figures from a profiled run are for proportions, not for latency.
"""

from __future__ import annotations

import atexit
import cProfile
import os
import signal
import sys
from types import FrameType

PROFILER = cProfile.Profile()


def install() -> None:
    def enable(_signum: int, _frame: FrameType | None) -> None:
        PROFILER.enable()

    def disable(_signum: int, _frame: FrameType | None) -> None:
        PROFILER.disable()

    signal.signal(signal.SIGUSR1, enable)
    signal.signal(signal.SIGUSR2, disable)

    def dump() -> None:
        PROFILER.disable()
        out = os.environ.get("CTEMPLATE_PROFILE_OUT")
        if out:
            PROFILER.dump_stats(out)

    atexit.register(dump)


def main() -> int:
    install()
    from ctemplate.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
