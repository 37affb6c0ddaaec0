"""Writes a Decathlon-layout view (dataset.json with absolute paths) of some fetal brain atlases, so the
benchmark command can evaluate the fetal tissues the box networks never trained on (cortex 5, corpus
callosum 8; see InteractiveRefineLib/training/box_sources.py). Usage: python fetal_view.py OUT_DIR GA27_operated ..."""
import json
import sys
from pathlib import Path

from InteractiveRefineLib.training.box_sources import FETAL_NAMES, data_root


def main(out: str, ages) -> None:
    root = data_root() / "fetal-brain-atlas"
    entries = [{"image": str(root / f"fetal_SB_atlas_{a}" / "srr.nii.gz"),
                "label": str(root / f"fetal_SB_atlas_{a}" / "parcellation.nii.gz")} for a in ages]
    labels = {"0": "background", **{str(k): v for k, v in FETAL_NAMES.items()}}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "dataset.json").write_text(json.dumps({"name": "fetal-brain-atlas (view)", "labels": labels,
                                                        "training": entries}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
