"""summary.md of evaluation records: per-organ Dice (mean +- std, in %) next to the published CHAOS numbers."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from InteractiveRefineLib.atomic import write_text

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
    seconds: Dict[tuple, List[float]] = defaultdict(list)
    names: Dict[int, str] = {}
    for r in records:
        key = (r["setting"], r["adapted"], r["range"])
        groups[key][int(r["label"])].append(float(r["dice"]))
        seconds[key].append(float(r["seconds"]))
        names[int(r["label"])] = str(r.get("label_name", r["label"]))
    labels = sorted(names)
    lines = [f"# {title}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += ["Dice in %, mean +- std over query volumes (and folds). `n` = number of (query, label) cases.", "",
              "| setting | adapted | range | " + " | ".join(names[lb] for lb in labels)
              + " | mean of organs | n | median s/case |",
              "|---|---|---|" + "---|" * len(labels) + "---|---|---|"]
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        per = groups[key]
        cells = [_stats(per[lb]) if per.get(lb) else "-" for lb in labels]
        organ_means = [100 * np.mean(per[lb]) for lb in labels if per.get(lb)]
        n = sum(len(v) for v in per.values())
        setting, adapted, rng = key
        lines.append(f"| {setting if setting is not None else '-'} | {'yes' if adapted else 'no'} | {rng} | "
                     + " | ".join(cells) + f" | **{np.mean(organ_means):.2f}** | {n} | "
                     f"{np.median(seconds[key]):.2f} |")
    settings = sorted({k[0] for k in groups if k[0] in PUBLISHED})
    if settings:
        lines += ["", "Published (mean of the 4 organs, CHAOS T2-SPIR, 1-way 1-shot):", "",
                  "| setting | " + " | ".join(PUBLISHED[1]) + " |", "|---|" + "---|" * len(PUBLISHED[1])]
        for s in settings:
            lines.append(f"| {s} | " + " | ".join(f"{v:.2f}" for v in PUBLISHED[s].values()) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out_dir: Path, records: List[Dict[str, object]], title: str, command: str = "") -> Path:
    return write_text(Path(out_dir) / "summary.md", summary_markdown(records, title, command))
