"""The validation structures' cases (box_sources.py "val") with the first `hip` hippocampus subjects only,
shared by the 3D selection scripts of this folder."""
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
