"""The persistent compute process, end to end with real child processes: the file protocol (nothing
unpickled), requests, progress, cancel, errors, a killed or crashed child (clear message, caller's segment
untouched, restart on the next request), a launcher in between (as PythonSlicer is), the parent's end, and
the emulated Slicer main loop that holds the GIL between polls."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from InteractiveRefineLib.compute.client import ComputeClient, ComputeError
from InteractiveRefineLib.compute.mailbox import Mailbox, ProtocolError, pack_mask, unpack_mask
from InteractiveRefineLib.compute.service import ComputeService, parent_alive
from InteractiveRefineLib.core.errors import CancelledError, PromptError
from InteractiveRefineLib.core.prompts import box_from_mask, main_object
from InteractiveRefineLib.evaluation.panel_timing import hold_gil
from InteractiveRefineLib.evaluation.robot import next_scribble
from InteractiveRefineLib.panel.refine_controller import RefineController

POSIX = os.name == "posix"


def _alive(pid):
    return parent_alive(pid) and not _zombie(pid)


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


@pytest.fixture
def client():
    c = ComputeClient()
    yield c
    c.stop()


def test_mailbox_round_trip_and_nothing_is_unpickled(tmp_path):
    parent, child = Mailbox(tmp_path, "parent"), Mailbox(tmp_path, "child")
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    parent.post({"op": "x", "n": 1}, {"image": a, "mask": a > 5})
    parent.post({"op": "y"})
    got = child.fetch()
    assert [m["op"] for m, _ in got] == ["x", "y"] and child.fetch() == []
    np.testing.assert_array_equal(got[0][1]["image"], a)
    assert got[0][1]["mask"].dtype == bool and not list(tmp_path.joinpath("to_child").iterdir())  # consumed
    with pytest.raises(ProtocolError, match="Python objects"):
        parent.post({"op": "z"}, {"objects": np.array([{"a": 1}], dtype=object)})
    # a pickled array planted in the mailbox is refused, never loaded
    seq = 3
    np.save(tmp_path / "to_child" / f"{seq:06d}-evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "to_child" / f"{seq:06d}.json").write_text(json.dumps({"op": "evil", "arrays": ["evil"]}))
    parent._sent = seq
    with pytest.raises(ProtocolError):
        child.fetch()
    mask = np.zeros((5, 6, 7), bool)
    mask[1:3, 2, 3:6] = True
    lo, crop = pack_mask(mask)
    assert lo == [1, 2, 3] and crop.shape == (2, 1, 3)
    np.testing.assert_array_equal(unpack_mask(mask.shape, lo, crop), mask)
    np.testing.assert_array_equal(unpack_mask(mask.shape, *pack_mask(np.zeros_like(mask))), np.zeros_like(mask))


def test_the_compute_process_takes_the_given_thread_count():
    """As every command (core/threads.py; 0: the idle cores), not torch's one thread per core, which crawled on
    a loaded machine. Asked for a count that neither would choose on this machine."""
    from InteractiveRefineLib.core.threads import default_threads

    n = next(k for k in range(1, 9) if k not in {default_threads(), os.cpu_count()})
    child = ComputeClient(threads=n)
    try:
        assert child.call("ping", timeout=60)[0]["threads"] == n
    finally:
        child.stop()


def test_a_child_whose_mailbox_is_gone_ends_without_making_it_again(tmp_path):
    """Stopped while it started (the launcher killed, the folder removed before its hello), the child must end,
    not recreate the folder and idle with torch loaded until Slicer exits."""
    import threading

    from InteractiveRefineLib.compute.service import serve

    gone, stop = tmp_path / "mailbox", threading.Event()
    with pytest.raises(ProtocolError, match="is gone: the parent stopped this process"):
        Mailbox(gone, "child")
    assert not gone.exists()
    stop.set()  # were the folder made again, the loop would end at once: no hang
    assert serve(gone, parent_pid=os.getpid(), stop=stop) == 0 and not gone.exists()


def test_the_panels_stop_waits_briefly_then_kills_a_busy_child():
    """On a scene close the panels stop the compute process with GUI_STOP_WAIT: a child busy with a step that
    cannot stop is killed after that, the GUI does not wait for the step (it waited up to 3 s)."""
    c = ComputeClient()
    job = c.submit("debug.work", {"seconds": 20.0, "ignore_cancel": True})
    while job.state != "running":
        c.poll()
        time.sleep(0.01)
    t0 = time.monotonic()
    c.stop(timeout=c.GUI_STOP_WAIT)
    assert time.monotonic() - t0 < c.GUI_STOP_WAIT + 1.0 and not c.running and job.state == "cancelled"


def test_a_request_that_is_not_cancellable_is_left_to_finish():
    """Cancel skips a request submitted as not cancellable (the panels' box and adopt steps): sent, it would stop
    the step half-way or, past kill_after, end the child with every session in it."""
    c = ComputeClient(kill_after=0.3)
    try:
        job = c.submit("debug.work", {"seconds": 1.0}, cancellable=False)
        while job.state != "running":
            c.poll()
            time.sleep(0.01)
        assert c.cancel(job) is False and c.cancel() is False
        assert c.wait(job, 30).state == "done" and c.generation == 1 and c.running
    finally:
        c.stop()


def test_requests_progress_cancel_errors_and_a_crash(client):
    fields, arrays = client.call("ping", timeout=60)
    pid = fields["pid"]
    assert pid != os.getpid() and client.child_pid == pid and client.generation == 1
    job = client.submit("debug.work", {"seconds": 30.0})
    seen = []
    while job.fraction < 0.02:
        client.poll()
        seen.append(job.state)
        time.sleep(0.02)
    assert job.state == "running" and job.started is not None
    assert client.cancel(job)
    client.wait(job, 10)
    assert job.state == "cancelled" and isinstance(job.error, CancelledError) and job.seconds < 10
    with pytest.raises(PromptError, match="unknown compute request"):
        client.call("no.such.op")
    job = client.wait(client.submit("refine.box", {"session": "none"}), 10)
    assert job.state == "failed" and isinstance(job.error, PromptError) and "not open" in str(job.error)
    assert client.call("ping")[0]["pid"] == pid  # errors do not end the process
    job = client.wait(client.submit("debug.exit", {"code": 7}), 30)
    assert job.state == "failed" and isinstance(job.error, ComputeError)
    assert "ended while running debug.exit" in str(job.error) and "exited with code 7" in str(job.error)
    assert "next request starts" in str(job.error)
    assert client.call("ping", timeout=60)[0]["pid"] != pid and client.generation == 2  # restarted


@pytest.mark.skipif(not POSIX, reason="SIGKILL")
def test_stop_ends_the_child_through_a_launcher():
    """PythonSlicer is a launcher that runs the real interpreter as its child: stopping must end both."""
    shim = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"

    def launcher(args, env_update):
        env = dict(os.environ, **env_update)
        return subprocess.Popen([sys.executable, "-c", shim] + args, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    c = ComputeClient(launcher=launcher)
    pid = c.call("ping", timeout=60)[0]["pid"]
    launcher_pid = c._proc.pid
    assert pid != launcher_pid
    job = c.submit("debug.work", {"seconds": 60.0})
    folder = c._folder
    c.stop(timeout=0.5)  # busy for 60 s: shutdown is not read in time, so both are killed
    assert job.state == "cancelled" and not c.running and not folder.exists()
    end = time.monotonic() + 10  # the orphaned interpreter is reaped by init: give a loaded machine time
    while (_alive(pid) or _alive(launcher_pid)) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _alive(pid) and not _alive(launcher_pid)


@pytest.mark.skipif(not POSIX, reason="SIGKILL")
def test_a_clean_stop_signals_no_pid_that_may_be_reused(monkeypatch):
    """After a clean shutdown the child's (and launcher's) pids are free and may belong to another process by
    now: stop() must not send them a kill."""
    from InteractiveRefineLib.compute import client as client_module

    shim = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
    killed = []
    monkeypatch.setattr(client_module, "_kill_pid", killed.append)
    for launcher in (None, lambda args, env_update: subprocess.Popen(
            [sys.executable, "-c", shim] + args, env=dict(os.environ, **env_update),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)):
        c = ComputeClient(launcher=launcher)
        pid = c.call("ping", timeout=60)[0]["pid"]
        c.stop(timeout=30)  # idle: the child reads shutdown and exits on its own
        assert not _alive(pid) and not c.running
    assert killed == []


@pytest.mark.skipif(not POSIX, reason="POSIX process handling")
def test_the_child_ends_with_its_parent(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, "-m", "InteractiveRefineLib.compute", "--folder", str(tmp_path),
                              "--parent-pid", str(parent.pid), "--log", str(tmp_path / "log.txt")], env=env)
    box = Mailbox(tmp_path, "parent")
    end = time.monotonic() + 60
    while not box.fetch() and time.monotonic() < end:  # hello
        time.sleep(0.05)
    parent.kill()
    parent.wait()
    assert child.wait(10) == 0  # noticed within a few seconds, ended cleanly
    assert not (tmp_path / "to_child").exists()  # and removed the mailbox nobody else would remove


@pytest.mark.skipif(not POSIX, reason="POSIX process handling")
def test_the_child_ends_when_its_mailbox_is_removed(tmp_path):
    """A client that stopped without reaching the child (the launcher in between had ended, so the child's
    pid is no longer signalled) removes the mailbox: the child must not live on, holding its memory."""
    folder = tmp_path / "mailbox"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, "-m", "InteractiveRefineLib.compute", "--folder", str(folder),
                              "--parent-pid", str(os.getpid())], env=env)
    try:
        box = Mailbox(folder, "parent")
        end = time.monotonic() + 60
        while not box.fetch() and time.monotonic() < end:  # hello
            time.sleep(0.05)
        import shutil
        shutil.rmtree(folder)
        assert child.wait(15) == 0
    finally:
        if child.poll() is None:
            child.kill()


def _segment(c, start, timeout=120):
    start()
    status = c.wait(timeout)
    assert status.job.state == "done", status.job.error
    return status.update


@pytest.mark.skipif(not POSIX, reason="SIGKILL")
def test_killed_child_leaves_the_segment_and_the_next_request_works(client, chaos8):
    import signal

    image, label = chaos8
    ref = main_object(label == 2)
    box = box_from_mask(ref, 0, int(np.argmax(ref.sum(axis=(1, 2)))))
    c = RefineController(image, device="cpu", reference=label == 2, client=client)
    segment = np.zeros(ref.shape, bool)  # what the panel's segment holds

    def write(update):
        if update.extent is not None:
            segment[...] = update.mask
    first = _segment(c, lambda: c.start_box(box))
    write(first)
    assert first.dice > 0.7 and c.can_undo() is False and c.has_object
    stroke = next_scribble(first.mask, ref, box, image.spacing_kji, np.random.default_rng(0))
    fg = np.zeros(ref.shape, bool)
    fg[tuple(np.asarray(stroke.voxels).T)] = True
    c.set_scribbles(fg, np.zeros_like(fg)) if stroke.label == "fg" else c.set_scribbles(np.zeros_like(fg), fg)
    job = c.start_refine("supervised")
    while job.state != "running":
        c.poll()
        time.sleep(0.01)
    os.kill(client.child_pid, signal.SIGKILL)  # e.g. the kernel's out-of-memory killer
    status = c.wait(30)
    assert status.job.state == "failed" and status.update is None
    assert "ended while running refine" in str(status.job.error) and "SIGKILL" in str(status.job.error)
    assert "segmentation is as it was" in str(status.job.error)
    np.testing.assert_array_equal(segment, first.mask)  # nothing was written
    assert not c.has_object and not c.can_undo() and not c.busy
    with pytest.raises(PromptError, match="restarted"):
        c.start_refine()
    again = _segment(c, lambda: c.start_box(box, segment))  # the next request starts a new process
    assert client.generation == 2 and again.dice > 0.7
    assert [e["event"] for e in c.log.events].count("session_start") == 2
    c.close()


def _run(c, loop, seconds):
    """(work units, compute seconds) of one debug.work request while the GUI loop runs; and the longest stall."""
    job = c.submit("debug.work", {"seconds": seconds})
    stall, t0 = 0.0, time.perf_counter()
    while not job.finished:
        if loop == "gil":
            hold_gil(0.1)
        else:
            time.sleep(0.1)
        t = time.perf_counter()
        c.poll()
        stall = max(stall, time.perf_counter() - t)
        assert time.perf_counter() - t0 < 60
    assert job.state == "done", job.error
    fields = job.result[0]
    return fields["units"], fields["seconds"], stall


def _speeds(c, pairs=8, seconds=0.4):
    """Work units per second under each loop, over alternating short runs (the order flips each pair, so a
    change in the machine's load hits both alike); and the longest stall."""
    totals = {"sleep": [0, 0.0], "gil": [0, 0.0]}
    stall = 0.0
    for i in range(pairs):
        for loop in (("sleep", "gil") if i % 2 == 0 else ("gil", "sleep")):
            units, secs, s = _run(c, loop, seconds)
            totals[loop][0] += units
            totals[loop][1] += secs
            stall = max(stall, s)
    return totals["sleep"][0] / totals["sleep"][1], totals["gil"][0] / totals["gil"][1], stall


@pytest.mark.skipif(not POSIX and os.name != "nt", reason="needs usleep or Sleep")
def test_compute_keeps_its_speed_while_the_main_loop_holds_the_gil(client):
    """Slicer's main thread holds the GIL while Qt idles. The compute process must keep most of its free speed
    under such a loop, and no poll may freeze the GUI; the same work on a thread of this process (what the
    panels did before) crawls under the same loop: the emulation bites. The margins are wide on purpose
    (on this machine: 0.99x for the process, 0.013x for the thread, stalls of 1 ms): a shared CI machine's
    load must not fail the test. The speed itself is measured by the `panel-timing` benchmark."""
    client.call("ping", timeout=60)
    free, gil, stall = _speeds(client)
    assert gil >= 0.6 * free, (free, gil)
    assert stall <= 0.25, stall
    threaded = ComputeClient(service_factory=ComputeService)
    try:
        units, secs, _ = _run(threaded, "gil", 1.0)
    finally:
        threaded.stop()
    assert units / secs < 0.2 * free, (units / secs, free)


def test_a_cuda_error_ends_the_loop_and_the_next_request_restarts_it():
    """After a CUDA error (not out-of-memory) the context may be broken: the request fails with the error,
    the loop ends, and the next request gets a fresh one. Out of memory keeps the loop."""
    def factory():
        service = ComputeService()

        def broken(args, arrays, progress, cancel, op=None):
            raise RuntimeError(args["text"])
        service.handlers["debug.raise"] = broken
        return service
    c = ComputeClient(service_factory=factory)
    try:
        job = c.wait(c.submit("debug.raise", {"text": "CUDA out of memory. Tried to allocate 2 GiB"}), 10)
        assert job.state == "failed" and "out of memory" in str(job.error)
        c.poll()
        assert c.running and c.generation == 1
        job = c.wait(c.submit("debug.raise", {"text": "CUDA error: device-side assert triggered"}), 10)
        assert job.state == "failed" and "restarts on the next request" in str(job.error)
        end = time.monotonic() + 5
        while c.running and time.monotonic() < end:
            time.sleep(0.01)
        assert not c.running
        assert c.call("ping", timeout=10) and c.generation == 2
    finally:
        c.stop()


def test_the_reply_a_child_posts_just_before_it_ends_is_not_lost():
    """The child posts its last reply (here the CUDA error that ends it) and ends between two steps of a poll:
    the reply must still be read, not replaced by a generic 'it ended' failure."""
    def factory():
        service = ComputeService()

        def broken(args, arrays, progress, cancel, op=None):
            time.sleep(0.3)
            raise RuntimeError("CUDA error: device-side assert triggered")
        service.handlers["debug.raise"] = broken
        return service
    c = ComputeClient(service_factory=factory)
    try:
        job = c.submit("debug.raise")
        real_fetch = c._box.fetch

        def fetch_then_the_child_ends(*a, **k):
            got = real_fetch(*a, **k)
            c._thread.join(10)  # the child posts its error and ends right after this read
            return got
        c._box.fetch = fetch_then_the_child_ends
        c.wait(job, 20)
        assert job.state == "failed" and "device-side assert" in str(job.error), job.error
    finally:
        c.stop()


def test_an_in_thread_loop_that_outlives_stop_removes_its_mailbox():
    """In-thread mode (the `segment` command): a request that cannot stop outlives stop()'s wait; when it ends,
    the loop removes the mailbox folder itself (the client no longer waits for it)."""
    c = ComputeClient(service_factory=ComputeService)
    c.call("ping", timeout=10)
    job = c.submit("debug.work", {"seconds": 6.0, "ignore_cancel": True})
    thread, folder = c._thread, c._folder
    while job.state != "running":
        c.poll()
        time.sleep(0.01)
    c.stop(timeout=0.1)
    assert job.state == "cancelled" and thread.is_alive() and folder.exists()
    thread.join(30)
    assert not thread.is_alive() and not folder.exists()


def test_cancelling_a_queued_request_never_ends_the_running_one():
    """Requests run one after another (both panels share the process): cancelling one still queued leaves the
    running one alone, however long it runs, and the queued one ends as cancelled without running; a running
    request that ignores its cancel ends the process after kill_after seconds."""
    c = ComputeClient(kill_after=0.3)
    try:
        pid = c.call("ping", timeout=60)[0]["pid"]
        running = c.submit("debug.work", {"seconds": 1.2})
        queued = c.submit("debug.work", {"seconds": 0.1})
        while running.state != "running":
            c.poll()
            time.sleep(0.01)
        assert c.cancel(queued)
        time.sleep(0.6)  # longer than kill_after
        c.wait(running, 10)
        c.wait(queued, 10)
        assert running.state == "done" and c.generation == 1
        assert queued.state == "cancelled" and "before it started" in str(queued.error)
        assert c.call("ping")[0]["pid"] == pid  # still the same process: nothing was killed

        s = ComputeClient(kill_after=0.3)  # a real child: the last resort ends a request that ignores cancel
        try:
            job = s.submit("debug.work", {"seconds": 30.0, "ignore_cancel": True})
            while job.state != "running":
                s.poll()
                time.sleep(0.01)
            first = s.child_pid
            s.cancel(job)
            s.wait(job, 20)
            assert job.state == "cancelled" and "ended" in str(job.error) and not s.running
            assert s.call("ping", timeout=60)[0]["pid"] != first  # and the next request starts a new one
        finally:
            s.stop()
    finally:
        c.stop()
