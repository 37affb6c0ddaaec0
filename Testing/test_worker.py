"""The panel's background worker with real threads: progress, cancel, errors, re-entry, one thread."""
import threading
import time

import pytest

from InteractiveRefineLib.core.errors import CancelledError, PromptError
from InteractiveRefineLib.core.worker import BusyError, Worker


def until(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


@pytest.fixture
def worker():
    w = Worker()
    yield w
    w.shutdown()


def test_result_progress_and_delivery_once(worker):
    gate = threading.Event()

    def task(progress, cancel):
        progress(0.5, "half")
        gate.wait(5)
        return 42

    job = worker.submit("task", task)
    until(lambda: job.fraction == 0.5)
    snap = worker.poll()
    assert snap is not job and snap.state == "running" and snap.message == "half" and worker.busy
    gate.set()
    until(lambda: job.finished)
    assert snap.state == "running"  # a snapshot: it does not change under the GUI's feet
    done = worker.poll()
    assert done.result == 42 and done.state == "done" and done.fraction == 1.0 and done.seconds > 0
    assert worker.poll() is None  # delivered once


def test_runs_off_the_calling_thread_on_one_persistent_thread(worker):
    names = []
    for _ in range(3):
        worker.submit("t", lambda p, c: names.append(threading.get_ident()))
        worker.wait(5)
    assert len(set(names)) == 1 and names[0] != threading.get_ident()


def test_reentry_is_blocked_while_running(worker):
    gate = threading.Event()
    worker.submit("first", lambda p, c: gate.wait(5))
    with pytest.raises(BusyError, match="first is still running"):
        worker.submit("second", lambda p, c: None)
    gate.set()
    worker.wait(5)
    worker.submit("second", lambda p, c: "ok")
    assert worker.wait(5).result == "ok"


def test_cancel_reaches_the_task(worker):
    started = threading.Event()

    def task(progress, cancel):
        started.set()
        for i in range(1000):
            if cancel():
                raise CancelledError("stopped")
            progress(i / 1000, "working")
            time.sleep(0.005)
        return "finished"

    job = worker.submit("long", task)
    started.wait(5)
    t0 = time.monotonic()
    assert worker.cancel()
    worker.wait(5)
    assert job.state == "cancelled" and job.result is None and time.monotonic() - t0 < 1.0
    assert not worker.cancel()  # nothing left to cancel
    worker.submit("next", lambda p, c: c())
    assert worker.wait(5).result is False  # the next job starts with cancel cleared


def test_errors_are_kept_for_the_gui_and_the_thread_survives(worker):
    def bad(progress, cancel):
        raise PromptError("no box")

    job = worker.submit("bad", bad)
    worker.wait(5)
    assert job.state == "failed" and isinstance(job.error, PromptError)
    assert worker.alive
    worker.submit("good", lambda p, c: 1)
    assert worker.wait(5).result == 1


def test_gui_thread_stays_free_while_a_cpu_bound_task_runs(worker):
    """A task in pure Python holds the GIL between switches: the polling thread still gets it often."""
    def busy(progress, cancel):
        end, n = time.monotonic() + 0.5, 0
        while time.monotonic() < end:
            n += 1
        return n

    worker.submit("busy", busy)
    gaps, last = [], time.monotonic()
    while worker.busy:
        worker.poll()
        now = time.monotonic()
        gaps.append(now - last)
        last = now
        time.sleep(0.005)
    assert worker.wait(5).result > 0 and len(gaps) > 10
    assert max(gaps) < 0.25, f"the polling thread was starved for {max(gaps):.3f} s"


def test_shutdown_stops_the_thread():
    w = Worker()
    w.submit("t", lambda p, c: None)
    w.wait(5)
    w.shutdown()
    assert not w.alive
