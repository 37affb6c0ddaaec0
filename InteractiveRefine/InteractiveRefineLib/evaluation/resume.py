"""Resumable results.jsonl: records are appended case by case, so an interrupted run keeps its progress.

Next to results.jsonl, progress.json holds the run's configuration and the cases whose records are
complete (written atomically after the case's records are flushed). A rerun with the same configuration
keeps the records of completed cases, drops the rest (a case cut mid-write, a torn last line) and
computes only the missing cases; a rerun with another configuration into the same folder is refused.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List

from ..core.atomic import atomic_path, write_text
from ..core.errors import OutputError


class ResumableResults:
    """results.jsonl + progress.json in `out` for one configuration (a JSON-able dict)."""

    def __init__(self, out, config: Dict):
        self.out = Path(out)
        self.results = self.out / "results.jsonl"
        self.progress = self.out / "progress.json"
        self.config = json.loads(json.dumps(config))  # the form it takes on disk
        self.done: List[str] = []
        self.records: List[dict] = []

    def check(self) -> List[str]:
        """Read earlier progress (before any computing); OutputError if it belongs to another run.
        Returns the completed case ids."""
        if self.progress.is_file():
            try:
                saved = json.loads(self.progress.read_text())
            except (ValueError, OSError):
                saved = None
            if not isinstance(saved, dict) or not isinstance(saved.get("config", {}), dict) \
                    or not isinstance(saved.get("done", []), list):
                raise OutputError(f"{self.progress} is unreadable; delete it (and results.jsonl) to start over")
            if saved.get("config") != self.config:
                diff = sorted(k for k in set(saved.get("config", {})) | set(self.config)
                              if saved.get("config", {}).get(k) != self.config.get(k))
                raise OutputError(f"{self.out} holds a benchmark run with other settings ({', '.join(diff)}); "
                                  "use another --out folder, or delete it to start over")
            self.done = list(saved.get("done", []))
        elif self.results.exists():
            raise OutputError(f"{self.results} exists from an earlier run that cannot be resumed (no "
                              "progress.json); use another --out folder, or delete it")
        return self.done

    def start(self) -> None:
        """Keep only the records of completed cases (atomic rewrite), then append from there."""
        self.out.mkdir(parents=True, exist_ok=True)
        kept = []
        if self.results.is_file():
            for line in self.results.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:  # a line torn by the interruption
                    continue
                if isinstance(rec, dict) and rec.get("case") in self.done:
                    kept.append(rec)
        self.records = kept
        with atomic_path(self.results, suffix=".jsonl") as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._write_progress()

    def add_case(self, case_id: str, records: List[dict]) -> None:
        """Append a case's records (flushed to disk), then mark the case done."""
        with open(self.results, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())
        self.records.extend(records)
        self.done.append(case_id)
        self._write_progress()

    def _write_progress(self) -> None:
        write_text(self.progress, json.dumps({"config": self.config, "done": self.done}, indent=1) + "\n")
