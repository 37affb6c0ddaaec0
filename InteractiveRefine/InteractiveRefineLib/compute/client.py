"""The GUI side of the compute process: start it, send requests, poll without blocking, cancel, detect a
crash, restart on the next request, stop it.

    client = ComputeClient()                  # nothing starts until the first request
    job = client.submit("refine.box", {...}, {"image": array})
    ... every GUI tick: client.poll(); job.state, job.fraction, job.message
    job.state == "done": job.result is (fields, arrays); "failed": job.error; "cancelled"

A request's job is a worker.Job (state queued -> running -> done/failed/cancelled, fraction, message,
seconds measured in the child, started = monotonic time it began). `poll()` reads only what has arrived
(a few file-existence checks) and checks `Popen.poll()`; it never waits. When the child ends while requests
are pending (killed, out of memory, a crash, a CUDA error), those requests fail with a ComputeError that says
what happened; the caller's data is untouched, and the next `submit()` starts a fresh child. `cancel()` is a
message; a request still running `kill_after` seconds after its cancel ends the child (the last resort).

The child is `python -m InteractiveRefineLib.compute` run by `python` (default sys.executable: inside Slicer
that is PythonSlicer, a launcher that starts the real interpreter as its own child; the child therefore
reports its own pid, and stopping kills that pid as well as the launcher). `launcher(args, env_update)`
returns a Popen-like object (Slicer passes slicer.util.launchConsoleProcess). With `service_factory` the loop
runs in a thread of this process instead (tests with stand-in models; same messages and files).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np

from ..core import errors
from ..core.worker import BusyError, Job
from .mailbox import Mailbox, ProtocolError

log = logging.getLogger(__name__)


class ComputeError(errors.AdaptiveSegError):
    """The compute process failed a request or ended while running it."""


_ERRORS = {name: getattr(errors, name) for name in ("ImageError", "PromptError", "ModelError", "DatasetError",
                                                    "OutputError", "CancelledError", "ResourceError")}
_ERRORS["BusyError"] = BusyError


@dataclass
class Request(Job):
    """A request sent to the compute process (a worker.Job with its id and operation)."""

    id: int = 0
    op: str = ""
    cancel_sent: Optional[float] = None  # monotonic time cancel() was called


def default_launcher(args: List[str], env_update: Mapping[str, str]):
    env = dict(os.environ)
    env.update(env_update)
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if os.name == "nt" else 0
    return subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, creationflags=flags)


def _package_roots() -> List[str]:
    """Folders holding InteractiveRefineLib and FewShotSegLib (the child imports both)."""
    roots = [str(Path(__file__).resolve().parents[2])]
    try:
        spec = importlib.util.find_spec("FewShotSegLib")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        roots.append(str(Path(spec.origin).resolve().parents[1]))
    else:
        sibling = Path(__file__).resolve().parents[3] / "FewShotSeg"
        if (sibling / "FewShotSegLib").is_dir():
            roots.append(str(sibling))
    return list(dict.fromkeys(roots))


def _kill_pid(pid: int) -> None:
    try:
        os.kill(int(pid), signal.SIGTERM if os.name == "nt" else signal.SIGKILL)  # TerminateProcess on Windows
    except (OSError, ProcessLookupError):
        pass


def _exit_text(code: Optional[int]) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        sig = -code
        name = {9: "SIGKILL", 11: "SIGSEGV", 6: "SIGABRT", 15: "SIGTERM"}.get(sig, f"signal {sig}")
        why = " (killed: often the system running out of memory)" if sig == 9 else ""
        return f"it was ended by {name}{why}"
    if code == 3:
        return "it stopped after a CUDA error"
    return f"it exited with code {code}"


class ComputeClient:
    """One compute process (started on the first request, restarted after it ended).

    Args:
        python: the interpreter (default sys.executable).
        launcher: `(args, env_update) -> Popen-like`; default subprocess.Popen with output to the child's log.
        service_factory: run the loop in a thread of this process with `service_factory()` as its service.
        start_timeout: seconds the child may take to say hello before it counts as failed.
        kill_after: seconds after cancel() before a request still running ends the child.
        threads: the child's CPU threads for torch (0: the default of every command, core/threads.py); with
            `service_factory` the loop runs in this process, whose threads stay as they are.
    """

    def __init__(self, python: Optional[str] = None, launcher: Optional[Callable] = None,
                 service_factory: Optional[Callable[[], Any]] = None, start_timeout: float = 120.0,
                 kill_after: float = 15.0, name: str = "AdaptiveSeg", threads: int = 0):
        self.python = python or sys.executable
        self.launcher = launcher or default_launcher
        self.service_factory = service_factory
        self.start_timeout = float(start_timeout)
        self.kill_after = float(kill_after)
        self.name = name
        if int(threads) < 0:
            raise ValueError(f"threads must be >= 0 (0: the default); got {threads}")
        self.threads = int(threads)
        self.generation = 0  # +1 per start: a new child has none of the old one's sessions
        self.child_pid: Optional[int] = None
        self.last_exit: Optional[str] = None  # why the previous child ended, if it crashed
        self._proc = None
        self._thread: Optional[threading.Thread] = None
        self._stop: Optional[threading.Event] = None
        self._folder: Optional[Path] = None
        self._box: Optional[Mailbox] = None
        self._started_at = 0.0
        self._next_id = 0
        self._jobs: Dict[int, Request] = {}
        self.service = None  # the in-thread loop's service (tests reach the sessions through it)

    # -- process -----------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a child is up (never blocks)."""
        if self._thread is not None:
            return self._thread.is_alive()
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Optional[Path]:
        return None if self._folder is None else self._folder / "child.log"

    def start(self) -> None:
        """Start a child if none runs (submit() does it; the child says hello when ready)."""
        if self.running:
            return
        self._cleanup()
        self._folder = Path(tempfile.mkdtemp(prefix=f"{self.name}-compute-"))
        self._box = Mailbox(self._folder, "parent")
        self.generation += 1
        self.child_pid = None
        self._started_at = time.monotonic()
        if self.service_factory is not None:
            from .service import serve

            self._stop = threading.Event()
            service = self.service = self.service_factory()
            self._thread = threading.Thread(target=serve, args=(self._folder, service, None, self._stop),
                                            name=f"{self.name}ComputeLoop", daemon=True)
            self._thread.start()
            return
        args = [self.python, "-m", "InteractiveRefineLib.compute", "--folder", str(self._folder),
                "--parent-pid", str(os.getpid()), "--log", str(self.log_path), "--threads", str(self.threads)]
        path = os.pathsep.join(_package_roots() + [p for p in [os.environ.get("PYTHONPATH")] if p])
        self._proc = self.launcher(args, {"PYTHONPATH": path, "PYTHONUNBUFFERED": "1"})
        log.info("compute process started (%s)", " ".join(args))

    # what the panels wait on a scene close or module cleanup (Slicer's GUI waits too): an idle child ends in
    # milliseconds; a busy one is killed, which frees its memory just as well
    GUI_STOP_WAIT = 0.5

    def stop(self, timeout: float = 3.0) -> None:
        """End the child (pending requests are cancelled): ask it to shut down, wait up to `timeout` seconds,
        then kill it and the launcher. Frees everything it held (GPU memory included)."""
        if self.running and self._box is not None:
            for job in self._pending():
                self._post({"op": "cancel", "target": job.id})
            self._post({"op": "shutdown", "id": 0})
            end = time.monotonic() + timeout
            while self.running and time.monotonic() < end:
                time.sleep(0.02)
        self.kill()
        for job in self._pending():
            self._finish(job, "cancelled", errors.CancelledError("the compute process was stopped"))
        self._cleanup()

    def kill(self) -> None:
        """End the child at once (the real interpreter and the launcher)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(5.0)
            return
        # The real interpreter's pid (a launcher's child) is signalled only while the launcher still runs: once
        # the launcher has ended, that pid may already belong to another process. Popen.kill() guards its own.
        if self.child_pid is not None and self.child_pid != os.getpid() and self._proc is not None \
                and self.child_pid != getattr(self._proc, "pid", None) and self._proc.poll() is None:
            _kill_pid(self.child_pid)
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.kill()
            except OSError:
                pass
        if self._proc is not None:
            try:
                self._proc.wait(5.0)
            except subprocess.TimeoutExpired:
                pass

    def _cleanup(self) -> None:
        if self._folder is not None and not self.running:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
            self._box = None
        if not self.running:
            self._proc = None
            self._thread = None

    # -- requests ----------------------------------------------------------------------------------
    def submit(self, op: str, args: Optional[Dict[str, Any]] = None, arrays: Optional[Mapping[str, Any]] = None,
               name: Optional[str] = None, cancellable: bool = True) -> Request:
        """Send a request (starting the child if needed); returns its job at once."""
        if not self.running:
            self.poll()  # report what the old child left pending before starting another
            self.start()
        self._next_id += 1
        job = Request(name or op, None, cancellable, id=self._next_id, op=op)
        self._post({"op": op, "id": job.id, "args": args or {}}, arrays)
        self._jobs[job.id] = job
        return job

    def cancel(self, job: Optional[Request] = None) -> bool:
        """Ask the running (or given) request to stop; True if there was one. A request submitted as not
        cancellable (a box step, an adopt: short, and the session's state must not be cut mid-way) is left to
        finish: cancelling it would only end the child after `kill_after`, with every session in it."""
        targets = [job] if job is not None else self._pending()
        sent = False
        for j in targets:
            if not j.finished and j.cancel_sent is None and j.cancellable:
                self._post({"op": "cancel", "target": j.id})
                j.cancel_sent = time.monotonic()
                sent = True
                # A request still queued here may already run in the child (its start message not read yet):
                # its end, with its log events or a result committed despite the cancel, comes from the child.
        return sent

    def poll(self) -> None:
        """Take in what the child sent; fail pending requests if it ended. Never blocks."""
        # Whether it runs is asked before reading: a child that ended by then has written all it ever will, so
        # a reply posted just before it ended (a result, or the error that ended it) is read, not lost.
        alive = self.running
        if self._box is not None:
            try:
                messages = self._box.fetch()
            except ProtocolError as exc:
                messages = []
                log.error("compute process: %s", exc)
                self.kill()
                alive = self.running
            for message, arrays in messages:
                self._receive(message, arrays)
        now = time.monotonic()
        pending = self._pending()
        if pending and not alive:
            why = _exit_text(None if self._proc is None else self._proc.poll())
            self.last_exit = why
            tail = self.log_tail()
            for job in pending:
                if job.cancel_sent is not None:
                    self._finish(job, "cancelled", errors.CancelledError("cancelled (the compute process was ended)"))
                else:
                    self._finish(job, "failed", ComputeError(
                        f"the compute process ended while running {job.name}: {why}. Nothing was written; the "
                        f"segmentation is as it was. The next request starts the compute process again"
                        + (f" (its last output: {tail})" if tail else "") + "."))
            self._cleanup()
            return
        if self.child_pid is None and self._proc is not None and now - self._started_at > self.start_timeout:
            for job in pending:
                self._finish(job, "failed", ComputeError(
                    f"the compute process did not start within {self.start_timeout:.0f} s ({self.python})"))
            self.kill()
            self._cleanup()
            return
        for job in pending:  # only a request that runs and ignores its cancel ends the child
            if job.cancel_sent is not None and job.state == "running" and job.started is not None \
                    and now - max(job.cancel_sent, job.started) > self.kill_after:
                log.warning("%s did not stop %.1f s after cancel: ending the compute process", job.name,
                            self.kill_after)
                self.kill()
                self.poll()
                return

    def wait(self, job: Request, timeout: Optional[float] = None, interval: float = 0.01) -> Request:
        """Poll until `job` ends (scripts and tests; the GUI polls from a timer). TimeoutError after `timeout`."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            self.poll()
            if job.finished:
                return job
            if end is not None and time.monotonic() > end:
                raise TimeoutError(f"{job.name} did not finish within {timeout} s")
            time.sleep(interval)

    def call(self, op: str, args=None, arrays=None, timeout: Optional[float] = 600.0):
        """submit + wait; returns (fields, arrays) or raises the request's error (scripts, tests)."""
        job = self.wait(self.submit(op, args, arrays), timeout)
        if job.state != "done":
            raise job.error
        return job.result

    def log_tail(self, chars: int = 600) -> str:
        path = self.log_path
        try:
            text = path.read_text(errors="replace") if path is not None and path.is_file() else ""
        except OSError:
            return ""
        lines = [line for line in text.strip().splitlines() if line.strip()]
        return " | ".join(lines[-4:])[-chars:]

    # -- internals ---------------------------------------------------------------------------------
    def _pending(self) -> List[Request]:
        return [j for j in self._jobs.values() if not j.finished]

    def _post(self, message: Dict[str, Any], arrays=None) -> None:
        self._box.post(message, {k: np.asarray(v) for k, v in (arrays or {}).items()})

    def _finish(self, job: Request, state: str, error: Optional[BaseException] = None, result=None,
                seconds: Optional[float] = None) -> None:
        job.error, job.result = error, result
        if seconds is not None:
            job.seconds = float(seconds)
        if state == "done":
            job.fraction = 1.0
        job.state = state
        self._jobs.pop(job.id, None)

    def _receive(self, message: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
        kind = message.get("type")
        if kind == "hello":
            self.child_pid = int(message["pid"])
            return
        job = self._jobs.get(message.get("id"))
        if job is None:
            return
        if kind == "start":
            job.state, job.started = "running", time.monotonic()
        elif kind == "progress":
            job.fraction = min(max(float(message.get("fraction", 0.0)), 0.0), 1.0)
            job.message = str(message.get("message", ""))
        elif kind == "done":
            self._finish(job, "done", result=(message.get("result") or {}, arrays), seconds=message.get("seconds"))
        elif kind == "cancelled":
            self._finish(job, "cancelled", errors.CancelledError(message.get("message") or "cancelled"),
                         result=(message.get("result") or {}, {}), seconds=message.get("seconds"))
        elif kind == "error":
            cls = _ERRORS.get(message.get("error"))
            text = str(message.get("message", ""))
            if cls is None:
                name = message.get("error", "Error")
                if name in ("MemoryError", "OutOfMemoryError"):
                    text = f"out of memory in the compute process: {text or name}"
                elif message.get("fatal"):
                    text = f"{name}: {text} (the compute process restarts on the next request)"
                else:
                    text = f"{name}: {text}"
                error = ComputeError(text)
            else:
                error = cls(text)
            self._finish(job, "failed", error, result=(message.get("result") or {}, {}), seconds=message.get("seconds"))


_shared: Optional[ComputeClient] = None


def shared_client(**kwargs) -> ComputeClient:
    """The one compute process both panels use in a Slicer session (created on the first call)."""
    global _shared
    if _shared is None:
        _shared = ComputeClient(**kwargs)
    return _shared
