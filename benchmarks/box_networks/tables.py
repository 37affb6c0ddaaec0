"""Markdown tables of mean Dice per validation group, shared by the selection scripts here."""
import numpy as np


def group_means_table(res, names, count=None) -> str:
    """res: {group: {name: [dice, ...]}}; one row per group, one column per name, then the mean of the
    groups. `count`: the name whose list length is shown as an "n" column (None: no column)."""
    n_head, n_rule = ("n | ", "---|") if count else ("", "")
    lines = ["| group | " + n_head + " | ".join(names) + " |", "|---|" + n_rule + "---|" * len(names)]
    for g, r in sorted(res.items()):
        n_cell = f"{len(r[count])} | " if count else ""
        lines.append(f"| {g} | {n_cell}" + " | ".join(f"{np.mean(r[n]):.3f}" for n in names) + " |")
    lines.append("| **mean of groups** | " + ("| " if count else "") + " | ".join(
        f"**{np.mean([np.mean(r[n]) for r in res.values()]):.3f}**" for n in names) + " |")
    return "\n".join(lines)
