"""summary.md and a Dice plot from benchmark records."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..core.atomic import atomic_path, write_text


def _group(records: Sequence[dict], keys: Sequence[str]) -> Dict[tuple, List[dict]]:
    groups: Dict[tuple, List[dict]] = defaultdict(list)
    for r in records:
        groups[tuple(r[k] for k in keys)].append(r)
    return dict(sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])))


def _step_seconds(recs: Sequence[dict]) -> List[float]:
    """Every single compute time: per slice in 2D, per volume in 3D."""
    out: List[float] = []
    for r in recs:
        out.extend(r.get("slice_seconds") or [r["seconds"]])
    return out


def _fmt(values: Sequence[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "–"


def summary_tables(records: Sequence[dict], seen_labels: Optional[Sequence[int]] = None) -> str:
    seen = set(seen_labels or [])
    methods = sorted({r["method"] for r in records})
    lines = ["## Overview (mean Dice over cases and labels; median compute seconds per prediction)", "",
             "| dim | round | method | unseen labels | seen labels | all labels | median s | n |",
             "|---|---|---|---|---|---|---|---|"]
    for (dim, rnd, method), recs in _group(records, ("dim", "round", "method")).items():
        unseen_d = [r["dice"] for r in recs if r["label"] not in seen]
        seen_d = [r["dice"] for r in recs if r["label"] in seen]
        lines.append(f"| {dim} | {rnd} | {method} | {_fmt(unseen_d)} | {_fmt(seen_d)} | "
                     f"{_fmt([r['dice'] for r in recs])} | {np.median(_step_seconds(recs)):.3f} | {len(recs)} |")
    lines += ["", "## Per label (mean ± std Dice over cases)", "",
              "| dim | round | label | seen in training | " + " | ".join(methods) + " |",
              "|---|---|---|---|" + "---|" * len(methods)]
    for (dim, rnd, label, name), recs in _group(records, ("dim", "round", "label", "label_name")).items():
        by_m = _group(recs, ("method",))
        cells = [_fmt([r["dice"] for r in by_m.get((m,), [])]) for m in methods]
        lines.append(f"| {dim} | {rnd} | {label} {name} | {'yes' if label in seen else 'no'} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save_figure(fig, path: Path) -> Path:
    """Write a figure atomically (no half-written PNG) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def plot_dice(records: Sequence[dict], path: Path) -> Path:
    """Grouped bars: mean Dice per label and method, one panel per dim (round 0)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs0 = [r for r in records if r["round"] == 0]
    dims = sorted({r["dim"] for r in recs0})
    methods = sorted({r["method"] for r in recs0})
    fig, axes = plt.subplots(1, max(1, len(dims)), figsize=(6 * max(1, len(dims)), 4), squeeze=False)
    for ax, dim in zip(axes[0], dims):
        rd = [r for r in recs0 if r["dim"] == dim]
        labels = sorted({(r["label"], r["label_name"]) for r in rd})
        width = 0.8 / max(1, len(methods))
        for i, m in enumerate(methods):
            vals = [[r["dice"] for r in rd if r["method"] == m and r["label"] == l] for l, _ in labels]
            x = np.arange(len(labels)) + i * width
            ax.bar(x, [np.mean(v) if v else 0 for v in vals], width, yerr=[np.std(v) if v else 0 for v in vals],
                   label=m, capsize=2)
        ax.set_xticks(np.arange(len(labels)) + width * (len(methods) - 1) / 2)
        ax.set_xticklabels([n for _, n in labels], rotation=20)
        ax.set_ylim(0, 1)
        ax.set_ylabel("Dice")
        ax.set_title(f"{dim} boxes")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def _groups(seen: set):
    return (("unseen labels", lambda l: l not in seen), ("seen labels", lambda l: l in seen))


def _mean_by_round(recs: Sequence[dict]) -> Dict[int, float]:
    return {rnd: float(np.mean([r["dice"] for r in rr])) for (rnd,), rr in _group(recs, ("round",)).items()}


def rounds_table(records: Sequence[dict], seen_labels: Optional[Sequence[int]] = None, target: float = 0.90) -> str:
    """Rounds each method needs to reach `target` Dice: by the group's mean curve, and per structure."""
    seen = set(seen_labels or [])
    lines = [f"## Rounds to reach Dice {target:.2f}", "",
             "First round at which the mean Dice of the group reaches the target (– never), and per structure "
             "(case and label; 2D: its mean slice Dice) the median first round and how many reach it at all.", "",
             "| dim | labels | method | mean curve reaches it at round | median round per structure "
             "| structures reaching it |", "|---|---|---|---|---|---|"]
    for (dim, method), recs in _group(records, ("dim", "method")).items():
        for gname, member in _groups(seen):
            rg = [r for r in recs if member(r["label"])]
            if not rg:
                continue
            curve = _mean_by_round(rg)
            first = next((rnd for rnd in sorted(curve) if curve[rnd] >= target), None)
            per = []
            for _, rs in _group(rg, ("case", "label")).items():
                hit = [r["round"] for r in sorted(rs, key=lambda r: r["round"]) if r["dice"] >= target]
                per.append(hit[0] if hit else None)
            reached = [p for p in per if p is not None]
            med = f"{np.median(reached):.0f}" if reached and len(reached) * 2 > len(per) else "–"
            lines.append(f"| {dim} | {gname} | {method} | {'–' if first is None else first} | {med} | "
                         f"{len(reached)}/{len(per)} |")
    return "\n".join(lines) + "\n"


def plot_rounds(records: Sequence[dict], path: Path, seen_labels: Optional[Sequence[int]] = None) -> Path:
    """Mean Dice against the scribble round, one panel per dim and label group, one line per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = set(seen_labels or [])
    panels = [(dim, g, member) for (dim,) in _group(records, ("dim",)) for g, member in _groups(seen)
              if any(r["dim"] == dim and member(r["label"]) for r in records)]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.5 * max(1, len(panels)), 3.8), squeeze=False)
    for ax, (dim, gname, member) in zip(axes[0], panels):
        for (method,), recs in _group([r for r in records if r["dim"] == dim and member(r["label"])],
                                      ("method",)).items():
            curve = _mean_by_round(recs)
            xs = sorted(curve)
            ax.plot(xs, [curve[x] for x in xs], marker="o", markersize=3, label=method)
        ax.axhline(0.9, color="grey", linewidth=0.6, linestyle="--")
        ax.set_xlabel("round (0 = box only)")
        ax.set_ylabel("mean Dice")
        ax.set_title(f"{dim}, {gname}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def write_summary(records: Sequence[dict], out: Path, title: str = "benchmark",
                  seen_labels: Optional[Sequence[int]] = None, elapsed: Optional[float] = None) -> Path:
    out = Path(out)
    plot_dice(records, out / "dice.png")
    multi_round = len({r["round"] for r in records}) > 1
    if multi_round:
        plot_rounds(records, out / "dice_rounds.png", seen_labels)
    text = [f"# Benchmark: {title}", ""]
    if elapsed is not None:
        text += [f"Wall time {elapsed:.0f} s. Seen labels: {sorted(seen_labels or [])} "
                 "(classes the shipped model was trained on).", ""]
    if multi_round:
        text += [rounds_table(records, seen_labels), "![Dice against round](dice_rounds.png)", ""]
    text += [summary_tables(records, seen_labels), "![Dice per label, round 0](dice.png)", ""]
    return write_text(out / "summary.md", "\n".join(text))
