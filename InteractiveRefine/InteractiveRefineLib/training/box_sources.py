"""What the class-agnostic box networks learn from, validate on and are evaluated on (issue 11).

Everything comes from `../shared/data` (see each PROVENANCE.md) and is split by patient or subject:

- train: CHAOS training patients (liver, spleen only: kidneys stay unseen), 200 hippocampus subjects,
  spinal cord (T1w, T2w), the spleen CT crop, fetal brain tissues except cortex and corpus callosum
  (all 15 atlases), the adult brain's 158 automatic parcels (training only), the TotalSegmentator CT and
  MR structures except the kidneys; plus label-free pseudo-objects (pseudo_objects.py) of all of these.
- val (model selection): CHAOS validation patients (liver, spleen; and their kidneys, a group of its own:
  an abdominal organ no training patient shows, the test's kind of object on other patients), 30 other
  hippocampus subjects, cord grey and white matter of the T2* and MT contrasts, fetal cortex and corpus
  callosum on the five non-operated atlases (GA 21-25).
- eval (benchmarks only, never selection): CHAOS test patients (kidneys unseen), the last 30 hippocampus
  subjects, fetal cortex and corpus callosum on the ten operated atlases, the brain tumour set
  (evaluation only, never in any training).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.data import DecathlonDataset, load_split
from ..core.errors import DatasetError
from ..core.image_io import Image, read_image, read_label

FETAL_HELD_OUT = (5, 8)            # cortical grey matter (ring-like), corpus callosum (thin, curved)
FETAL_TRAIN = (1, 2, 3, 4, 6, 7)
FETAL_NAMES = {1: "white matter", 2: "ventricles", 3: "cerebellum", 4: "extra-axial CSF",
               5: "cortical grey matter", 6: "deep grey matter", 7: "brainstem", 8: "corpus callosum"}
TOTALSEG_KIDNEYS = (2, 3)          # same ids in the CT ('total') and MR ('total_mr') maps


@dataclass
class Volume:
    """One image with its label map and the label ids that count as structures here."""

    name: str
    group: str
    image: Image
    labels: np.ndarray
    label_ids: Tuple[int, ...]
    label_names: Dict[int, str]


def data_root(root: Optional[str] = None) -> Path:
    path = Path(root) if root else Path(__file__).resolve().parents[4] / "shared" / "data"
    if not path.is_dir():
        raise DatasetError(f"shared data folder not found: {path} (pass --data-root)")
    return path


def _decathlon(root: Path, folder: str, group: str, cases: Sequence[str], label_ids: Sequence[int]) -> List[Volume]:
    ds = DecathlonDataset(root / folder)
    out = []
    for c in cases:
        image, lab = ds.load(c)
        out.append(Volume(c, group, image, lab.astype(np.int16), tuple(label_ids),
                          {l: ds.labels[l] for l in label_ids}))
    return out


def _fetal(root: Path, ages: Sequence[str], label_ids: Sequence[int]) -> List[Volume]:
    out = []
    for age in ages:
        d = root / "fetal-brain-atlas" / f"fetal_SB_atlas_{age}"
        image = read_image(d / "srr.nii.gz", f"{age} image")
        lab = read_label(d / "parcellation.nii.gz", image, f"{age} parcellation")
        out.append(Volume(f"fetal_{age}", "fetal", image, lab.astype(np.int16), tuple(label_ids),
                          {l: FETAL_NAMES[l] for l in label_ids}))
    return out


def _totalseg(root: Path) -> List[Volume]:
    out = []
    for img, seg in (("example_ct_sm", "example_seg"), ("example_mr_sm", "example_seg_mr")):
        d = root / "totalseg-small"
        image = read_image(d / f"{img}.nii.gz", img)
        lab = read_label(d / f"{seg}.nii.gz", image, seg)
        ids = tuple(int(v) for v in np.unique(lab) if v and int(v) not in TOTALSEG_KIDNEYS)
        out.append(Volume(img, "totalseg", image, lab.astype(np.int16), ids, {l: f"ts_{l}" for l in ids}))
    return out


FETAL_VAL_AGES = tuple(f"GA{a}_notoperated" for a in range(21, 26))
FETAL_EVAL_AGES = tuple(f"GA{a}_operated" for a in range(25, 35))


def hippocampus_split() -> Dict[str, List[str]]:
    return load_split("msd_hippocampus")


def recipe(part: str) -> List[Dict]:
    """The entries of one part ("train", "val" or "eval"): dataset folder, group, cases, label ids.

    Written into every shipped box model's manifest; `load_sources` loads exactly these. Label ids
    None: all foreground labels of the dataset (adult brain) or of the volume (TotalSegmentator, less
    the kidneys).
    """
    hip, chaos = hippocampus_split(), load_split("chaos_t2spir")
    cord_train, cord_val = ["sct_errsm30_t1w", "sct_errsm30_t2w"], ["sct_errsm30_t2s", "sct_errsm30_mt1"]
    if part == "train":
        return [dict(dataset="chaos-t2spir", group="chaos", cases=chaos["train"], labels=[1, 4]),
                dict(dataset="msd-hippocampus", group="hippocampus", cases=hip["train"], labels=[1, 2]),
                dict(dataset="sct-spinalcord", group="cord", cases=cord_train, labels=[1]),
                dict(dataset="msd-spleen-crop", group="spleen_ct", cases=["spleen_2_crop"], labels=[1]),
                dict(dataset="fetal-brain-atlas", group="fetal", cases=list(FETAL_VAL_AGES + FETAL_EVAL_AGES),
                     labels=list(FETAL_TRAIN)),
                dict(dataset="fpg-brain-gif-silver", group="adult_brain", cases=["fpg_t2"], labels=None),
                dict(dataset="totalseg-small", group="totalseg", cases=["example_ct_sm", "example_mr_sm"],
                     labels=None, excluded_labels=list(TOTALSEG_KIDNEYS))]
    if part == "val":
        return [dict(dataset="chaos-t2spir", group="chaos", cases=chaos["val"], labels=[1, 4]),
                dict(dataset="chaos-t2spir", group="chaos_kidneys_val", cases=chaos["val"], labels=[2, 3]),
                dict(dataset="msd-hippocampus", group="hippocampus", cases=hip["val"], labels=[1, 2]),
                dict(dataset="sct-spinalcord", group="cord_gm_wm", cases=cord_val, labels=[1, 2]),
                dict(dataset="fetal-brain-atlas", group="fetal", cases=list(FETAL_VAL_AGES),
                     labels=list(FETAL_HELD_OUT))]
    if part == "eval":
        return [dict(dataset="chaos-t2spir", group="chaos_kidneys", cases=chaos["test"], labels=[2, 3]),
                dict(dataset="msd-hippocampus", group="hippocampus", cases=hip["test"], labels=[1, 2]),
                dict(dataset="fetal-brain-atlas", group="fetal", cases=list(FETAL_EVAL_AGES),
                     labels=list(FETAL_HELD_OUT)),
                dict(dataset="tcia-brain-tumor-progression", group="tumour", cases=None, labels=[1])]
    raise ValueError(f"unknown part {part!r}: train, val or eval")


def load_sources(part: str, root: Optional[str] = None, limit: Optional[int] = None) -> List[Volume]:
    """The volumes of one part ("train", "val" or "eval") of `recipe(part)`.

    `limit` caps the hippocampus subjects (validation in training uses a few, benchmarks all).
    """
    r = data_root(root)
    out: List[Volume] = []
    for e in recipe(part):
        name, group, cases, labels = e["dataset"], e["group"], e["cases"], e["labels"]
        if name == "fetal-brain-atlas":
            out += _fetal(r, cases, labels)
        elif name == "totalseg-small":
            out += _totalseg(r)
        else:
            if cases is None:
                cases = DecathlonDataset(r / name).case_ids
            if name == "msd-hippocampus":
                cases = cases[:limit]
            if labels is None:
                labels = DecathlonDataset(r / name).foreground_labels
            out += _decathlon(r, name, group, cases, labels)
    return out
