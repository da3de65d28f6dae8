"""The worker threads templates execute and are written in (runner._Workers).

Promises: a job stuck in a worker (a slow plugin) holds up no other job; a finished worker is
reused for the next job instead of a thread being started per change.
"""

from __future__ import annotations

import threading

from ctemplate.runner import _Workers


def test_a_stuck_job_holds_up_no_other() -> None:
    workers = _Workers()
    release, second_ran = threading.Event(), threading.Event()
    workers.submit(lambda: release.wait(30))
    try:
        workers.submit(second_ran.set)
        assert second_ran.wait(30), "the second job waited for the stuck one"
    finally:
        release.set()


def test_an_idle_worker_is_reused() -> None:
    workers = _Workers()
    threads: list[int] = []
    first_done = threading.Event()

    def record(done: threading.Event) -> None:
        threads.append(threading.get_ident())
        done.set()

    workers.submit(lambda: record(first_done))
    assert first_done.wait(30)
    # The worker counts itself idle right after its job returned.
    for _ in range(3000):
        with workers._lock:
            if workers._idle == 1:
                break
        threading.Event().wait(0.01)
    second_done = threading.Event()
    workers.submit(lambda: record(second_done))
    assert second_done.wait(30)
    assert threads[0] == threads[1]
    with workers._lock:
        assert workers._idle == 1
