"""summary.md of evaluation records: per-organ Dice (mean +- std, in %) next to the published CHAOS numbers.

Every row also shows the support_copy baseline of the same cases (each chunk's support mask copied onto its
query slices) per organ and as a mean, and, for adapted rows, the adaptation step counts that ran.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from InteractiveRefineLib.core.atomic import write_text

# Mean Dice (%) over liver, kidneys and spleen on CHAOS T2-SPIR, 1-way 1-shot, as published.
PUBLISHED = {
    1: {"SSL-ALPNet": 78.84, "CRAPNet": 79.79, "DenseMP": 79.83},
    2: {"SSL-ALPNet": 73.02, "CRAPNet": 75.52, "DenseMP": 76.86},
}


def _stats(values: Sequence[float]) -> str:
    v = 100 * np.asarray(values, dtype=float)
    return f"{v.mean():.2f} +- {v.std():.2f}"


def summary_markdown(records: List[Dict[str, object]], title: str, command: str = "") -> str:
    groups: Dict[tuple, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
    copies: Dict[tuple, Dict[int, List[float]]] = defaultdict(lambda: defaultdict(list))
    steps: Dict[tuple, set] = defaultdict(set)
    seconds: Dict[tuple, List[float]] = defaultdict(list)
    names: Dict[int, str] = {}
    for r in records:
        key = (r["setting"], r["adapted"], r["range"])
        groups[key][int(r["label"])].append(float(r["dice"]))
        if r.get("support_copy") is not None:
            copies[key][int(r["label"])].append(float(r["support_copy"]))
        a = r.get("adaptation") or {}
        if a:
            steps[key].add(f"{a.get('steps')}+{a.get('pseudo_steps')}" + (" (cut by time cap)"
                                                                          if a.get("cut_by_time_cap") else ""))
        seconds[key].append(float(r["seconds"]))
        names[int(r["label"])] = str(r.get("label_name", r["label"]))
    labels = sorted(names)
    lines = [f"# {title}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += ["Dice in %, mean +- std over query volumes (and folds). `n` = number of (query, label) cases.", "",
              "`support_copy`: the trivial baseline on the same cases (each chunk's support mask copied onto its "
              "query slices, same grid, reference slice range), per organ in the order of the columns, then "
              "its mean. `steps`: adaptation steps that ran (stage 1 + stage 2).", "",
              "| setting | adapted | range | " + " | ".join(names[lb] for lb in labels)
              + " | mean of organs | support_copy per organ | support_copy mean | steps | n | median s/case |",
              "|---|---|---|" + "---|" * len(labels) + "---|---|---|---|---|---|"]
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        per = groups[key]
        cells = [_stats(per[lb]) if per.get(lb) else "-" for lb in labels]
        organ_means = [100 * np.mean(per[lb]) for lb in labels if per.get(lb)]
        n = sum(len(v) for v in per.values())
        setting, adapted, rng = key
        cp = copies.get(key, {})
        copy_cells = " / ".join(f"{100 * np.mean(cp[lb]):.2f}" if cp.get(lb) else "-" for lb in labels)
        copy_means = [100 * np.mean(cp[lb]) for lb in labels if cp.get(lb)]
        copy_mean = f"{np.mean(copy_means):.2f}" if copy_means else "-"
        step_text = ", ".join(sorted(steps[key])) if steps.get(key) else "-"
        lines.append(f"| {setting if setting is not None else '-'} | {'yes' if adapted else 'no'} | {rng} | "
                     + " | ".join(cells) + f" | **{np.mean(organ_means):.2f}** | {copy_cells} | {copy_mean} | "
                     f"{step_text} | {n} | {np.median(seconds[key]):.2f} |")
    settings = sorted({k[0] for k in groups if k[0] in PUBLISHED})
    if settings:
        lines += ["", "Published (mean of the 4 organs, CHAOS T2-SPIR, 1-way 1-shot):", "",
                  "| setting | " + " | ".join(PUBLISHED[1]) + " |", "|---|" + "---|" * len(PUBLISHED[1])]
        for s in settings:
            lines.append(f"| {s} | " + " | ".join(f"{v:.2f}" for v in PUBLISHED[s].values()) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out_dir: Path, records: List[Dict[str, object]], title: str, command: str = "") -> Path:
    return write_text(Path(out_dir) / "summary.md", summary_markdown(records, title, command))
