"""The validation structures' cases (box_sources.py "val") with the first `hip` hippocampus subjects only,
and the per-structure records, shared by the selection scripts of this folder."""
import json
from pathlib import Path

from InteractiveRefineLib.training.box_sources import load_sources
from InteractiveRefineLib.training.train_box import validation_cases


def validation_subset(hip: int) -> list:
    """train_box.validation_cases of the "val" sources, keeping 2 * hip hippocampus cases (head and body)."""
    cases, seen = [], 0
    for case in validation_cases(load_sources("val")):
        if case[0].startswith("hippocampus"):
            seen += 1
            if seen > 2 * hip:
                continue
        cases.append(case)
    return cases


def load_records(path: Path) -> dict:
    """{(case, label): record} from a JSON-lines file of per-structure records; later lines of a structure add
    their keys (each pass of a selection script appends the variants it computed)."""
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            done.setdefault((r["case"], r["label"]), {}).update(r)
    return done
