"""`analyze-logs DIR`: per-session and per-case interaction statistics of a folder of session logs.

Writes `sessions.csv` (one row per log), `cases.md` (per case: sessions, interactions, user vs compute
time, final Dice, time to reach the target Dice) and `timing.png` (user vs compute time per case, and
Dice against user time where a reference was given).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.atomic import write_text
from ..core.errors import AdaptiveSegError
from ..core.log import read_log
from ..core.study import study_info, summarize, timeline, write_summary_csv
from .report import save_figure

log = logging.getLogger(__name__)


def load_sessions(folder) -> List[Tuple[Path, List[Dict[str, Any]]]]:
    """(path, events) of every `*.jsonl` log under `folder`; unreadable or empty logs are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdaptiveSegError(f"log folder {folder} does not exist")
    sessions = []
    for path in sorted(folder.rglob("*.jsonl")):
        try:
            events = [e for e in read_log(path) if isinstance(e, dict) and "event" in e
                      and isinstance(e.get("t"), (int, float)) and not isinstance(e.get("t"), bool)]
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        if events:
            sessions.append((path, events))
        else:
            log.warning("skipping %s: no events", path)
    if not sessions:
        raise AdaptiveSegError(f"no interaction logs (*.jsonl with events) in {folder}")
    return sessions


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _cell(v: Optional[float], fmt: str = "{:.1f}") -> str:
    return "–" if v is None else fmt.format(v)


def case_table(rows: Sequence[Dict[str, Any]], target_dice: Optional[float]) -> str:
    """Markdown table: one line per case (means over its sessions)."""
    by_case: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_case[r["case"] or "(no case id)"].append(r)
    target = "–" if target_dice is None else f"{target_dice:g}"
    lines = [f"| case | sessions | interactions | user s | compute s | final Dice | reached Dice {target} | "
             f"user s to {target} | interactions to {target} |",
             "|---|---|---|---|---|---|---|---|---|"]
    for case, rs in sorted(by_case.items()):
        reached = [r for r in rs if r["user_seconds_to_target"] is not None]
        lines.append(
            f"| {case} | {len(rs)} | {_cell(_mean([r['interactions'] for r in rs]))} | "
            f"{_cell(_mean([r['user_seconds'] for r in rs]))} | {_cell(_mean([r['compute_seconds'] for r in rs]))} | "
            f"{_cell(_mean([r['final_dice'] for r in rs]), '{:.3f}')} | {len(reached)}/{len(rs)} | "
            f"{_cell(_mean([r['user_seconds_to_target'] for r in reached]))} | "
            f"{_cell(_mean([r['interactions_to_target'] for r in reached]))} |")
    return "\n".join(lines) + "\n"


def plot_sessions(rows, sessions, path: Path, target_dice: Optional[float]) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    cases = sorted({r["case"] or "(no case id)" for r in rows})
    user = [_mean([r["user_seconds"] for r in rows if (r["case"] or "(no case id)") == c]) for c in cases]
    comp = [_mean([r["compute_seconds"] for r in rows if (r["case"] or "(no case id)") == c]) for c in cases]
    x = np.arange(len(cases))
    ax0.bar(x, user, label="user")
    ax0.bar(x, comp, bottom=user, label="compute")
    ax0.set_xticks(x, cases, rotation=45, ha="right")
    ax0.set_ylabel("seconds (mean per session)")
    ax0.set_title("User vs compute time per case")
    ax0.legend()
    plotted = False
    for (p, events), r in zip(sessions, rows):
        tl = [t for t in timeline(events) if t["dice"] is not None]
        if tl:
            ax1.plot([t["user"] for t in tl], [t["dice"] for t in tl], marker="o", ms=3,
                     label=f"{r['participant'] or p.stem} {r['case']}".strip())
            plotted = True
    if target_dice is not None and plotted:
        ax1.axhline(target_dice, color="grey", ls="--", lw=1)
    ax1.set_xlabel("user time (s)")
    ax1.set_ylabel("Dice")
    ax1.set_title("Dice against user time" if plotted else "no reference segmentation in these logs")
    if plotted and len(rows) <= 12:
        ax1.legend(fontsize=7)
    return save_figure(fig, path)


def analyze_logs(folder, out=None, target_dice: Optional[float] = 0.9) -> Tuple[List[Dict[str, Any]], str]:
    """Summarise every log in `folder`; write sessions.csv, cases.md and timing.png to `out`
    (default: `folder`). Returns (session rows, the per-case markdown table)."""
    units = [(p, study_info(events), oid, evs) for p, events in load_sessions(folder)
             for oid, evs in per_object(events)]
    out = Path(out) if out is not None else Path(folder)
    rows = []
    for p, info, oid, evs in units:
        row = summarize(evs, target_dice, log=str(p.relative_to(folder)))
        if oid is not None:  # one row per object, named by the case id (if any) and the object
            row.update(info, object=oid, case=f"{info['case']} / {oid}" if info["case"] else oid)
        rows.append(row)
    table = case_table(rows, target_dice)
    write_summary_csv(rows, out / "sessions.csv")
    write_text(out / "cases.md", table)
    plot_sessions(rows, [(p, evs) for p, _, _, evs in units], out / "timing.png", target_dice)
    return rows, table


def per_object(events: List[Dict[str, Any]]) -> List[Tuple[Optional[str], List[Dict[str, Any]]]]:
    """[(object id, its events)] for a session that segmented several objects (the demo's log holds four:
    merged, their times and Dice would mix); [(None, events)] for a session of one object."""
    oids = list(dict.fromkeys(e["object"] for e in events if e.get("object") is not None))
    if len(oids) <= 1:
        return [(None, events)]
    return [(oid, [e for e in events if e.get("object") == oid]) for oid in oids]
