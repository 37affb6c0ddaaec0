"""summary.md and a Dice plot from benchmark records."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .atomic import atomic_path, write_text


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
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def write_summary(records: Sequence[dict], out: Path, title: str = "benchmark",
                  seen_labels: Optional[Sequence[int]] = None, elapsed: Optional[float] = None) -> Path:
    out = Path(out)
    plot_dice(records, out / "dice.png")
    text = [f"# Benchmark: {title}", ""]
    if elapsed is not None:
        text += [f"Wall time {elapsed:.0f} s. Seen labels: {sorted(seen_labels or [])} "
                 "(classes the shipped model was trained on).", ""]
    text += [summary_tables(records, seen_labels), "![Dice per label](dice.png)", ""]
    return write_text(out / "summary.md", "\n".join(text))
