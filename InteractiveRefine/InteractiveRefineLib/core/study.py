"""User-study timing from an interaction log: interactions, user time vs compute time, time to a Dice.

User time is the wall time of the session minus the time the user waited for the computer (the
`compute_seconds` the session logs for each box and refinement). The panel shows these live; the
`analyze-logs` command summarises a folder of logs. Works on the events of InteractionLog.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .atomic import write_text

#: Events that are a user action (one interaction each).
INTERACTIONS = ("box", "adopt", "scribble", "refine", "reset", "undo", "redo", "accept")
SUMMARY_FIELDS = ("participant", "case", "interactions", "scribbles", "refines", "user_seconds",
                  "compute_seconds", "total_seconds", "final_dice", "target_dice", "user_seconds_to_target",
                  "interactions_to_target", "device", "log")


def study_info(events: Sequence[Dict[str, Any]]) -> Dict[str, str]:
    """Participant and case id of a session (from its `study` event; empty when absent)."""
    for e in events:
        if e.get("event") == "study":
            return {"participant": str(e.get("participant", "")), "case": str(e.get("case", ""))}
    return {"participant": "", "case": ""}


def timeline(events: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per interaction, times in seconds since the first event:
    {event, elapsed, compute, user, interactions, dice} (compute and user cumulative)."""
    rows: List[Dict[str, Any]] = []
    if not events:
        return rows
    t0, compute, count, dice = float(events[0]["t"]), 0.0, 0, None
    for e in events:
        compute += float(e.get("compute_seconds") or 0.0)
        if e.get("dice") is not None:
            dice = float(e["dice"])
        if e.get("event") in INTERACTIONS:
            count += 1
            elapsed = float(e["t"]) - t0
            rows.append({"event": e["event"], "elapsed": elapsed, "compute": compute,
                         "user": max(0.0, elapsed - compute), "interactions": count, "dice": dice})
    return rows


def live_times(events: Sequence[Dict[str, Any]], now: float, running_since: Optional[float] = None) -> Dict[str, float]:
    """{user_seconds, compute_seconds, interactions} of a running session at monotonic time `now`;
    `running_since`: start of a step still computing (its time counts as compute, not user, time)."""
    if not events:
        return {"user_seconds": 0.0, "compute_seconds": 0.0, "interactions": 0}
    compute = sum(float(e.get("compute_seconds") or 0.0) for e in events)
    if running_since is not None:
        compute += max(0.0, now - running_since)
    elapsed = max(0.0, now - float(events[0]["t"]))
    return {"user_seconds": max(0.0, elapsed - compute), "compute_seconds": compute,
            "interactions": sum(e.get("event") in INTERACTIONS for e in events)}


def summarize(events: Sequence[Dict[str, Any]], target_dice: Optional[float] = None,
              log: str = "") -> Dict[str, Any]:
    """One session's summary row (SUMMARY_FIELDS). Without a reference segmentation the Dice fields
    are None."""
    rows = timeline(events)
    compute = sum(float(e.get("compute_seconds") or 0.0) for e in events)
    total = float(events[-1]["t"]) - float(events[0]["t"]) if events else 0.0
    reached = None
    if target_dice is not None:
        reached = next((r for r in rows if r["dice"] is not None and r["dice"] >= target_dice), None)
    device = next((e.get("device") for e in reversed(events) if e.get("device")), "")
    return {**study_info(events),
            "interactions": len(rows),
            "scribbles": sum(r["event"] == "scribble" for r in rows),
            "refines": sum(r["event"] == "refine" for r in rows),
            "user_seconds": round(max(0.0, total - compute), 3),
            "compute_seconds": round(compute, 3),
            "total_seconds": round(total, 3),
            "final_dice": rows[-1]["dice"] if rows else None,
            "target_dice": target_dice,
            "user_seconds_to_target": None if reached is None else round(reached["user"], 3),
            "interactions_to_target": None if reached is None else reached["interactions"],
            "device": device, "log": log}


def csv_text(rows: Sequence[Dict[str, Any]], fields: Sequence[str] = SUMMARY_FIELDS) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in fields})
    return buf.getvalue()


def write_summary_csv(rows: Sequence[Dict[str, Any]], path) -> Path:
    """Write summary rows as CSV (atomically: no half-written file)."""
    return write_text(Path(path), csv_text(rows))


def log_file_name(participant: str, case: str, stamp: str) -> str:
    """`<participant>_<case>_<stamp>.jsonl`, with anything but letters, digits, '-' and '.' made '_'."""
    def clean(s: str) -> str:
        return re.sub(r"[^A-Za-z0-9.-]+", "_", s.strip()) or "anonymous"
    return f"{clean(participant)}_{clean(case)}_{clean(stamp)}.jsonl"
