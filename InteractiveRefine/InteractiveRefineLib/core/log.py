"""Interaction log: one JSON object per line, flushed and synced after every event.

Researchers timing user interaction read this file; it must survive a crash of the application, so
every event is written through to disk before the call returns.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np


def _jsonable(value: Any) -> Any:
    """json.dumps fallback for numpy scalars/arrays and paths, at any depth."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot log a value of type {type(value).__name__}")


class InteractionLog:
    """Append-only JSON-lines log. Each event gets `event`, `t` (monotonic seconds) and `wall` (epoch).

    `events` keeps the records in memory too (the panel's live timing reads them); with `path` None
    the log is kept in memory only.
    """

    def __init__(self, path=None, session: Optional[Dict[str, Any]] = None):
        self.path = None if path is None else Path(path)
        self.events: List[Dict[str, Any]] = []
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torn = self.path.is_file() and self.path.stat().st_size > 0 and not self._ends_with_newline()
            self._file = open(self.path, "a", encoding="utf-8")
            if torn:  # an earlier crash left half a line: end it so the next event is a line of its own
                self._file.write("\n")
        if session is not None:
            self.write("session_start", **session)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def write(self, event: str, **fields: Any) -> Dict[str, Any]:
        record = {"event": event, "t": time.monotonic(), "wall": time.time()}
        record.update(fields)
        return self._emit(record)

    def _emit(self, record: Dict[str, Any]) -> Dict[str, Any]:
        line = json.dumps(record, default=_jsonable)  # fails (TypeError) before anything is written
        if self._file is not None:
            if self._file.closed:
                raise ValueError(f"the log {self.path} is closed")
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        self.events.append(json.loads(line))
        return record

    def append(self, record: Dict[str, Any]) -> Dict[str, Any]:
        """Write an event recorded elsewhere (the compute process's session), keeping its `t` and `wall`
        (time.monotonic is system-wide, so both processes' times are on one clock)."""
        record = dict(record)
        record.setdefault("event", "event")
        record.setdefault("t", time.monotonic())
        record.setdefault("wall", time.time())
        return self._emit(record)

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()

    def __enter__(self) -> "InteractionLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_log(path) -> list:
    """All events of a log; a torn last line (crash mid-write) is skipped, earlier lines are kept."""
    events = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events
