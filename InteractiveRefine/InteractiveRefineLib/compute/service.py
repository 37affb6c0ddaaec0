"""The compute process's side: a request loop that owns the sessions and the model cache.

`serve()` reads requests from the mailbox in order and runs them one at a time on its main thread; a
reader thread keeps reading meanwhile, so a `cancel` message reaches the running request (its `cancel()`
callback turns True) and `shutdown` ends the loop. Every request gets a `start` message, throttled
`progress` messages and exactly one end message: `done` (result fields and arrays), `error` (the exception's
class name and message) or `cancelled`. An error never ends the loop, except a CUDA error (the CUDA context
may be broken): the process then exits after reporting it and the client starts a fresh one on the next
request. The loop also ends when the parent process is gone or the mailbox folder was removed.

`ComputeService` holds the state: InteractiveRefine sessions by id (each with its interaction events,
forwarded to the panel's log) and the few-shot segmenters by device. torch is imported by the handlers,
not at import time.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ..core.errors import CancelledError, PromptError
from .mailbox import (
    Mailbox,
    ProtocolError,
    box_from_message,
    box_message,
    image_from_message,
    pack_mask,
    unpack_mask,
)

log = logging.getLogger(__name__)

Result = Tuple[Dict[str, Any], Dict[str, np.ndarray]]
PROGRESS_INTERVAL = 0.1  # seconds between two progress messages


def parent_alive(pid: Optional[int]) -> bool:
    """Whether process `pid` still runs (True for None). Never signals it (os.kill on Windows would end it)."""
    if pid is None:
        return True
    if os.name == "nt":
        import ctypes

        kernel = ctypes.windll.kernel32
        handle = kernel.OpenProcess(0x1000, False, int(pid))  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_fatal(exc: BaseException) -> bool:
    """A CUDA error other than out-of-memory: the process must not serve more requests."""
    text = f"{type(exc).__name__}: {exc}"
    return ("CUDA error" in text or "AcceleratorError" in text or "cuDNN error" in text) \
        and "out of memory" not in text


class _Refine:
    """One InteractiveRefine session in the compute process."""

    def __init__(self, session, reference: Optional[np.ndarray]):
        self.session = session
        self.reference = reference
        self.cursor = 0  # events already forwarded


class ComputeService:
    """The handlers. `session_factory(image, config=..., device=..., log=...)` builds an InteractiveSession
    and `segmenter_factory(device)` a few-shot segmenter (tests pass their own; by default the shipped
    models, loaded once per device and kept)."""

    def __init__(self, session_factory: Optional[Callable] = None, segmenter_factory: Optional[Callable] = None,
                 fewshot_model: str = "default"):
        self._session_factory = session_factory
        self._segmenter_factory = segmenter_factory
        self.fewshot_model = fewshot_model
        self.sessions: Dict[str, _Refine] = {}
        self.failed: Dict[str, str] = {}  # session id -> why it could not be opened
        self.segmenters: Dict[str, Any] = {}
        self.handlers: Dict[str, Callable[..., Result]] = {
            "ping": self.ping, "free": self.free, "memory": self.memory,
            "refine.open": self.refine_open, "refine.box": self.refine_box, "refine.adopt": self.refine_adopt,
            "refine.scribbles": self.refine_scribbles, "refine.refine": self.refine_refine,
            "refine.undo": self.refine_history, "refine.redo": self.refine_history,
            "refine.reset": self.refine_history, "refine.close": self.refine_close,
            "fewshot.run": self.fewshot_run,
            "debug.work": self.debug_work, "debug.exit": self.debug_exit,
            "debug.hog": self.debug_hog, "debug.release": self.debug_release,
        }
        self._hog = None  # GPU memory held on purpose (debug.hog: a real out-of-memory for the GPU check)

    def handle(self, op: str, args: Dict[str, Any], arrays: Dict[str, np.ndarray], progress, cancel) -> Result:
        fn = self.handlers.get(op)
        if fn is None:
            raise PromptError(f"unknown compute request {op!r}")
        return fn(args, arrays, progress, cancel, op=op)

    # -- general -------------------------------------------------------------------------------
    def ping(self, args, arrays, progress, cancel, op=None) -> Result:
        import torch

        return {"pid": os.getpid(), "sessions": sorted(self.sessions), "threads": torch.get_num_threads()}, {}

    def free(self, args, arrays, progress, cancel, op=None) -> Result:
        """Close every session and drop the model cache (frees GPU memory without ending the process)."""
        for rec in self.sessions.values():
            rec.session.close()
        self.sessions.clear()
        self.segmenters.clear()
        _empty_cuda_cache()
        return self.memory(args, arrays, progress, cancel)

    def memory(self, args, arrays, progress, cancel, op=None) -> Result:
        info: Dict[str, Any] = {"cuda": False}
        torch = _torch_if_loaded()
        if torch is not None and torch.cuda.is_available():
            info = {"cuda": True, "allocated": int(torch.cuda.memory_allocated()),
                    "reserved": int(torch.cuda.memory_reserved())}
        return info, {}

    def close(self) -> None:
        self._hog = None
        for rec in self.sessions.values():
            rec.session.close()
        self.sessions.clear()
        self.segmenters.clear()
        _empty_cuda_cache()

    def after_failure(self, op: str, args: Dict[str, Any]) -> Dict[str, Any]:
        """What a failed or cancelled request still reports: the session's new log events (e.g. 'cancelled')."""
        rec = self.sessions.get(str(args.get("session"))) if op.startswith("refine.") else None
        if rec is None or rec.session.log is None:
            return {}
        events = rec.session.log.events[rec.cursor:]
        rec.cursor = len(rec.session.log.events)
        return {"events": events}

    # -- InteractiveRefine ---------------------------------------------------------------------
    def _rec(self, args) -> _Refine:
        sid = str(args.get("session"))
        if sid not in self.sessions:
            why = self.failed.get(sid)
            raise PromptError(why or "this session is not open in the compute process (it was restarted): "
                                     "place the box and press Segment again")
        return self.sessions[sid]

    def refine_open(self, args, arrays, progress, cancel, op=None) -> Result:
        from ..core.log import InteractionLog
        from ..engine.finetune import RefineConfig

        sid = str(args["session"])
        try:
            image = image_from_message(args["image"], arrays["image"])
            config = RefineConfig(**(args.get("config") or {}))
            factory = self._session_factory
            if factory is None:
                from ..engine.session import InteractiveSession as factory
            session = factory(image, config=config, device=args.get("device", "auto"), log=InteractionLog(None))
        except Exception as exc:
            self.failed[sid] = f"{type(exc).__name__}: {exc}"
            raise
        old = self.sessions.pop(sid, None)
        if old is not None:
            old.session.close()
        self.failed.pop(sid, None)
        self.sessions[sid] = _Refine(session, arrays.get("reference"))
        return self._reply(self.sessions[sid], args, None)

    def _reply(self, rec: _Refine, args, mask: Optional[np.ndarray], scribbles: bool = False) -> Result:
        s = rec.session
        oid = str(args.get("object", "object"))
        has = oid in s.objects
        st = s.state(oid) if has else None
        fields: Dict[str, Any] = {
            "state": {"has_object": has, "can_undo": s.can_undo(oid), "can_redo": s.can_redo(oid),
                      "device": str(s.device), "box": box_message(st.box) if has else None,
                      "scribbles": [int(st.scribbles.count[0]), int(st.scribbles.count[1])] if has else [0, 0],
                      "dice": s.dice(oid) if has else None},
            "events": [] if s.log is None else s.log.events[rec.cursor:],
        }
        if s.log is not None:
            rec.cursor = len(s.log.events)
        out: Dict[str, np.ndarray] = {}
        if mask is not None:
            fields["mask_lo"], out["mask"] = pack_mask(mask)
        if scribbles and has:
            out["fg"], out["bg"] = st.scribbles.fg.astype(np.int64), st.scribbles.bg.astype(np.int64)
        return fields, out

    def refine_box(self, args, arrays, progress, cancel, op=None) -> Result:
        rec = self._rec(args)
        self._configure(rec, args)
        mask = rec.session.set_box(box_from_message(args["box"]), str(args.get("object", "object")),
                                   reference=rec.reference)
        return self._reply(rec, args, mask, scribbles=True)

    def refine_adopt(self, args, arrays, progress, cancel, op=None) -> Result:
        rec = self._rec(args)
        self._configure(rec, args)
        current = unpack_mask(rec.session.image.shape, args["current_lo"], arrays["current"])
        mask = rec.session.adopt(current, box_from_message(args.get("box")), str(args.get("object", "object")),
                                 reference=rec.reference)
        return self._reply(rec, args, mask, scribbles=True)

    def refine_scribbles(self, args, arrays, progress, cancel, op=None) -> Result:
        rec = self._rec(args)
        rec.session.set_scribbles(arrays.get("fg", np.zeros((0, 3), np.int64)),
                                  arrays.get("bg", np.zeros((0, 3), np.int64)), str(args.get("object", "object")))
        return self._reply(rec, args, None)

    def refine_refine(self, args, arrays, progress, cancel, op=None) -> Result:
        rec = self._rec(args)
        self._configure(rec, args)
        mask = rec.session.refine(args.get("mode", "supervised"), str(args.get("object", "object")),
                                  progress=progress, cancel=cancel, time_budget=args.get("time_budget"))
        return self._reply(rec, args, mask)

    def refine_history(self, args, arrays, progress, cancel, op=None) -> Result:
        rec = self._rec(args)
        oid = str(args.get("object", "object"))
        action = op.split(".", 1)[1]
        mask = getattr(rec.session, action)(oid)
        return self._reply(rec, args, mask, scribbles=True)

    def refine_close(self, args, arrays, progress, cancel, op=None) -> Result:
        rec = self.sessions.pop(str(args.get("session")), None)
        if rec is not None:
            rec.session.close()
        if not self.sessions and not self.segmenters:
            _empty_cuda_cache()
        return {"closed": rec is not None}, {}

    @staticmethod
    def _configure(rec: _Refine, args) -> None:
        if args.get("config"):
            from ..engine.finetune import RefineConfig

            rec.session.config = RefineConfig(**args["config"])

    # -- FewShotSeg ----------------------------------------------------------------------------
    def segmenter(self, device: str, model: Optional[str] = None):
        """The few-shot segmenter of `model` on `device`, loaded once and kept (the model cache)."""
        model = model or self.fewshot_model
        key = f"{model}|{device}"
        if key not in self.segmenters:
            if self._segmenter_factory is not None:
                self.segmenters[key] = self._segmenter_factory(device)
            else:
                from FewShotSegLib.engine.segment import FewShotSegmenter

                self.segmenters[key] = FewShotSegmenter(model, device=device)
        return self.segmenters[key]

    def box_segmenter(self, device: str):
        """InteractiveRefine's 2D/3D box network on `device` for same-scan propagation (as propagation uses it:
        FewShotSegLib.engine.propagate.box_network), loaded once and kept."""
        key = f"box|{device}"
        if key not in self.segmenters:
            from FewShotSegLib.engine.propagate import box_network

            self.segmenters[key] = box_network(device)
        return self.segmenters[key]

    def fewshot_run(self, args, arrays, progress, cancel, op=None) -> Result:
        from FewShotSegLib.panel.controller import request_from_message, run_request

        request = request_from_message(args, arrays)
        model = args.get("model")
        result = run_request(request, lambda device: self.segmenter(device, model), progress, cancel,
                             box_for=self.box_segmenter)
        out, los = {}, {}
        for i, (sid, mask) in enumerate(result.masks.items()):
            los[sid], out[f"mask{i}"] = pack_mask(mask)
        return {"ids": list(result.masks), "mask_lo": los, "info": _plain(result.info)}, out

    # -- for tests and the timing emulation ----------------------------------------------------
    def debug_work(self, args, arrays, progress, cancel, op=None) -> Result:
        """Pure compute for `seconds` (or `units` fixed units of work): numpy matrix products."""
        rng = np.random.default_rng(0)
        a = rng.standard_normal((int(args.get("n", 160)),) * 2)
        units, seconds = args.get("units"), args.get("seconds")
        t0, done = time.perf_counter(), 0
        ignore_cancel = bool(args.get("ignore_cancel"))  # stands in for a step that cannot stop early
        while True:
            if cancel() and not ignore_cancel:
                raise CancelledError("cancelled")
            a = np.tanh(a @ a / a.shape[0])
            done += 1
            elapsed = time.perf_counter() - t0
            if units is not None and done >= int(units) or seconds is not None and elapsed >= float(seconds):
                break
            if units is None and seconds is None:
                break
            progress(done / int(units) if units else elapsed / float(seconds), "working")
        return {"units": done, "seconds": time.perf_counter() - t0, "pid": os.getpid()}, {"a": a[:2, :2]}

    def debug_exit(self, args, arrays, progress, cancel, op=None) -> Result:
        os._exit(int(args.get("code", 3)))

    def debug_hog(self, args, arrays, progress, cancel, op=None) -> Result:
        """Hold all free GPU memory but `leave_mb` (the GPU check's way to a real out-of-memory error)."""
        import torch

        if not torch.cuda.is_available():
            raise PromptError("debug.hog needs a CUDA GPU")
        self._hog = None
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info()
        held = max(0, int(free) - int(args.get("leave_mb", 64)) * 2 ** 20)
        self._hog = torch.empty(held, dtype=torch.uint8, device="cuda")
        return {"held": held, "free_before": int(free), "total": int(total)}, {}

    def debug_release(self, args, arrays, progress, cancel, op=None) -> Result:
        self._hog = None
        _empty_cuda_cache()
        return self.memory(args, arrays, progress, cancel)


def _torch_if_loaded():
    import sys

    return sys.modules.get("torch")


def _empty_cuda_cache() -> None:
    import gc

    gc.collect()
    torch = _torch_if_loaded()
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _plain(value):
    """JSON-able copy (tuples -> lists, numpy scalars -> Python)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _after_failure(service, op, message) -> Dict[str, Any]:
    try:
        return service.after_failure(str(op), message.get("args") or {})
    except Exception:  # noqa: BLE001  (the failure itself is what gets reported)
        return {}


def serve(folder, service: Optional[ComputeService] = None, parent_pid: Optional[int] = None,
          stop: Optional[threading.Event] = None, poll_interval: float = 0.01) -> int:
    """Run the request loop until `shutdown`, the parent's end or `stop`; returns an exit code (3: a
    CUDA error ended it)."""
    try:  # before the service: a child stopped while it started (torch imported) ends here, not idles
        box = Mailbox(folder, "child")
    except ProtocolError as exc:
        log.info("%s", exc)
        return 0
    service = service or ComputeService()
    stop = stop or threading.Event()
    requests: "queue.Queue[Optional[Tuple[dict, dict]]]" = queue.Queue()
    lock = threading.Lock()
    state = {"current": None, "cancelled": set()}
    cancel_event = threading.Event()
    box.post({"type": "hello", "pid": os.getpid()})

    def reader() -> None:
        last_check = 0.0
        while not stop.is_set():
            try:
                messages = box.fetch()
            except Exception as exc:  # noqa: BLE001  (a broken message ends the loop with a report)
                log.error("compute process: %s", exc)
                requests.put(None)
                return
            for message, arrays in messages:
                op = message.get("op")
                if op == "cancel":
                    with lock:
                        if state["current"] == message.get("target"):
                            cancel_event.set()
                        else:
                            state["cancelled"].add(message.get("target"))
                    continue
                requests.put((message, arrays))
                if op == "shutdown":
                    return
            now = time.monotonic()
            if now - last_check > 1.0:
                last_check = now
                # the parent is gone, or its client removed the mailbox (it stopped without reaching this
                # process: a launcher in between ended first): nobody will send anything again
                if not parent_alive(parent_pid) or not box.folder.is_dir():
                    state["orphaned"] = True
                    requests.put(None)
                    return
            time.sleep(poll_interval)

    thread = threading.Thread(target=reader, name="AdaptiveSegComputeReader", daemon=True)
    thread.start()
    code = 0
    try:
        while not stop.is_set():
            try:
                item = requests.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                break
            message, arrays = item
            rid, op = message.get("id"), message.get("op")
            if op == "shutdown":
                service.close()
                box.post({"type": "done", "id": rid, "result": {}})
                break
            with lock:
                state["current"] = rid
                cancel_event.clear()
                skip = rid in state["cancelled"]
                state["cancelled"].discard(rid)
            if skip:
                box.post({"type": "cancelled", "id": rid, "message": "cancelled before it started"})
                continue
            box.post({"type": "start", "id": rid, "t": time.monotonic()})
            last = [0.0]

            def progress(fraction: float, text: str = "", rid=rid) -> None:
                now = time.monotonic()
                if now - last[0] >= PROGRESS_INTERVAL:
                    last[0] = now
                    box.post({"type": "progress", "id": rid, "fraction": float(fraction), "message": str(text)})

            t0 = time.perf_counter()
            try:
                result, out = service.handle(op, message.get("args") or {}, arrays, progress, cancel_event.is_set)
                box.post({"type": "done", "id": rid, "result": _plain(result),
                          "seconds": time.perf_counter() - t0}, out)
            except CancelledError as exc:
                box.post({"type": "cancelled", "id": rid, "message": str(exc), "seconds": time.perf_counter() - t0,
                          "result": _plain(_after_failure(service, op, message))})
            except BaseException as exc:  # noqa: BLE001  (every failure is reported to the panel)
                log.debug("request %s failed", op, exc_info=True)
                fatal = is_fatal(exc)
                box.post({"type": "error", "id": rid, "error": type(exc).__name__, "message": str(exc),
                          "fatal": fatal, "seconds": time.perf_counter() - t0,
                          "result": _plain(_after_failure(service, op, message))})
                if fatal:
                    code = 3
                    break
            finally:
                with lock:
                    state["current"] = None
    finally:
        # `stop` set by the owner (the client's kill() in the in-thread mode) means it has stopped waiting for
        # this loop: like an orphan, nobody cleans up after it (a request that cannot stop outlived the join).
        stopped_by_owner = stop.is_set()
        stop.set()
        if state.get("orphaned") or stopped_by_owner:  # free the memory and the mailbox folder
            service.close()
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    return code
