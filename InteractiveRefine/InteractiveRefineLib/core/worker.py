"""One persistent background thread for long work, polled from the GUI thread.

The Slicer panels must stay responsive while a network runs, yet MRML and Qt may only be touched
from the main thread. So the panel hands a plain-Python task (arrays in, arrays out) to this worker
and polls it with a timer; the poll returns progress and, once, the finished job, whose result the
panel then writes into MRML on the main thread. Nothing here imports Qt or Slicer.

A task is `fn(progress, cancel)`: `progress(fraction, message)` reports, `cancel()` returns True once
the user asked to stop (the core's functions take both and raise CancelledError).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

from .errors import AdaptiveSegError, CancelledError

log = logging.getLogger(__name__)

Task = Callable[[Callable[[float, str], None], Callable[[], bool]], Any]


class BusyError(AdaptiveSegError):
    """A task was submitted while another one is still running."""


@dataclass
class Job:
    """A submitted task. `state`: queued, running, done, failed or cancelled."""

    name: str
    fn: Task
    cancellable: bool = True  # False: the task cannot stop early (the GUI hides Cancel)
    state: str = "queued"
    fraction: float = 0.0
    message: str = ""
    result: Any = None
    error: Optional[BaseException] = None
    seconds: float = 0.0  # compute time, measured in the worker
    started: Optional[float] = None  # time.monotonic() when it began running
    delivered: bool = False

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")


class Worker:
    """Runs one task at a time on one long-lived daemon thread.

    submit() refuses a second task while one is queued or running (BusyError): the GUI blocks re-entry
    rather than queueing clicks. poll() is called from the GUI thread and returns a snapshot (a copy
    taken under the lock, so its state, progress and result agree) of the current job; a finished job is
    returned by poll() exactly once, then poll() returns None.
    """

    def __init__(self, name: str = "AdaptiveSegWorker"):
        self._name = name
        self._lock = threading.Lock()
        self._queue: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._cancel = threading.Event()
        self._job: Optional[Job] = None
        self._thread: Optional[threading.Thread] = None

    # -- GUI side ------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        with self._lock:
            return self._job is not None and not self._job.finished

    def ensure_idle(self) -> None:
        """BusyError while a job is queued or running (callers check before preparing a new one)."""
        with self._lock:
            self._check_idle()

    def _check_idle(self) -> None:
        if self._job is not None and not self._job.finished:
            raise BusyError(f"{self._job.name} is still running; wait for it or press Cancel")

    def submit(self, name: str, fn: Task, cancellable: bool = True) -> Job:
        with self._lock:
            self._check_idle()
            job = Job(name, fn, cancellable)
            self._job = job
            self._cancel.clear()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._queue.put(job)
        return job

    def cancel(self) -> bool:
        """Ask the running task to stop; True if there was one."""
        if not self.busy:
            return False
        self._cancel.set()
        return True

    def poll(self) -> Optional[Job]:
        """A snapshot of the current job, or None when idle and the last job was already delivered."""
        with self._lock:
            job = self._job
            if job is None:
                return None
            if job.finished:
                if job.delivered:
                    return None
                job.delivered = True
            return replace(job)

    @property
    def current(self) -> Optional[Job]:
        """The last submitted job (no side effect, unlike poll)."""
        with self._lock:
            return self._job

    def wait(self, timeout: Optional[float] = None) -> Optional[Job]:
        """Block until the current job ends and return it, leaving its delivery to poll() (for scripts
        and tests; the GUI polls instead). TimeoutError if it runs longer than `timeout` seconds."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.busy:
            if end is not None and time.monotonic() > end:
                raise TimeoutError("the worker did not finish in time")
            time.sleep(0.01)
        return self.current

    def shutdown(self, timeout: float = 5.0) -> None:
        """Cancel what runs and stop the thread (module cleanup)."""
        self._cancel.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- worker side ---------------------------------------------------------------------------
    def _progress(self, job: Job) -> Callable[[float, str], None]:
        def report(fraction: float, message: str = "") -> None:
            with self._lock:
                job.fraction = min(max(float(fraction), 0.0), 1.0)
                job.message = str(message)
        return report

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                job.state, job.started = "running", time.monotonic()
            t0 = time.perf_counter()
            state, result, error = "done", None, None
            try:
                # A task that completes despite a late cancel is done: the core has already
                # committed its result (e.g. a new session state), so the GUI must show it.
                result = job.fn(self._progress(job), self._cancel.is_set)
            except CancelledError as exc:
                state, error = "cancelled", exc
            except BaseException as exc:  # noqa: BLE001  (reported to the GUI, never lost in the thread)
                log.debug("task %s failed", job.name, exc_info=True)
                state, error = "failed", exc
            with self._lock:
                job.seconds = time.perf_counter() - t0
                job.result, job.error = result, error
                if state == "done":
                    job.fraction = 1.0
                job.state = state
