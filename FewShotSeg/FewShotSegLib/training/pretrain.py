"""Encoder pretraining on external data only (our stand-in for the ImageNet start of the published methods).

Episodes, as in train.py: label-free superpixel episodes (SSL-ALPNet) on every slice used, plus supervised
1-way 1-shot episodes of the external structures: hippocampus (MSD Task04), spinal cord and its grey
matter (SCT), fetal brain tissues (atlas), adult brain parcels (GIF silver labels), TotalSegmentator CT/MR
classes. Each dataset's labels get their own ids (dataset index * 1000 + label), so label 1 of two
datasets is never the same class.

Never used: CHAOS (the benchmark) and tcia-brain-tumor-progression (evaluation only): both are refused by
name. The four CHAOS test organs (liver, kidneys, spleen) are never supervised classes here either: the
spleen CT crop and the TotalSegmentator liver/spleen/kidney labels contribute superpixel (label-free)
episodes only, so a pretrained start does not teach setting 2's held-out organs (a choice made here; the
issue allows external data in both settings, this keeps the test organs unseen as classes).

The result is a full RP-Net (encoder, CRE) of the default architecture; `train --init` starts each per-fold
model from it. Checkpointed and resumable like train.py.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from InteractiveRefineLib.core.errors import DatasetError
from InteractiveRefineLib.core.image_io import read_image, read_label

from ..engine.models import save_rpnet
from ..engine.network import DEFAULT_PARAMS
from ..engine.slices import NETWORK_SIZE
from .episodes import Volume, prepare_volume
from .train import CHECKPOINT_SECONDS, TrainConfig, train_rpnet

FORBIDDEN = ("chaos", "tcia-brain-tumor-progression")
# TotalSegmentator ids of the CHAOS test organs (spleen, kidney_right, kidney_left, liver), both tasks
TOTALSEG_CHAOS_ORGANS = (1, 2, 3, 5)


@dataclass(frozen=True)
class Source:
    """One external dataset: folder under the data root, how to list its (image, label) files, and which
    labels are supervised (None: all), along which array axes slices are cut, every slice_step-th slice."""

    folder: str
    axes: Tuple[int, ...] = (0,)
    slice_step: int = 1
    max_cases: int = 0                   # 0: all
    supervised: Optional[Tuple[int, ...]] = None
    excluded: Tuple[int, ...] = ()       # labels never supervised (CHAOS test organs)


SOURCES: Tuple[Source, ...] = (
    Source("msd-hippocampus", axes=(0, 1, 2), slice_step=2, max_cases=60),
    Source("sct-spinalcord", axes=(0, 1, 2), slice_step=2),
    Source("msd-spleen-crop", axes=(0,), supervised=()),
    Source("fetal-brain-atlas", axes=(0, 1, 2), slice_step=4),
    Source("fpg-brain-gif-silver", axes=(0,)),
    Source("totalseg-small", axes=(0,), excluded=TOTALSEG_CHAOS_ORGANS),
)


def check_allowed(name: str) -> None:
    low = name.lower()
    for bad in FORBIDDEN:
        if bad in low:
            raise DatasetError(f"{name}: pretraining uses external data only; {bad} is never used for it "
                               "(CHAOS is the benchmark, the tumour set is evaluation-only)")


def source_cases(root: Path, src: Source) -> List[Tuple[str, Path, Path]]:
    """(case id, image file, label file) of one source, sorted, at most max_cases (evenly spread)."""
    folder = Path(root) / src.folder
    check_allowed(str(folder.resolve().name))
    if not folder.is_dir():
        raise DatasetError(f"pretraining data folder not found: {folder}")
    if (folder / "dataset.json").is_file():
        from InteractiveRefineLib.core.data import DecathlonDataset
        ds = DecathlonDataset(folder)
        cases = [(c.case_id, Path(c.image), Path(c.label)) for c in ds.select(None)]
    elif src.folder == "fetal-brain-atlas":
        cases = [(d.name, d / "srr.nii.gz", d / "parcellation.nii.gz") for d in sorted(folder.iterdir())
                 if (d / "srr.nii.gz").is_file()]
    elif src.folder == "totalseg-small":
        cases = [("totalseg_ct", folder / "example_ct_sm.nii.gz", folder / "example_seg.nii.gz"),
                 ("totalseg_mr", folder / "example_mr_sm.nii.gz", folder / "example_seg_mr.nii.gz")]
    else:
        raise DatasetError(f"unknown pretraining source layout: {folder}")
    cases = sorted(cases)
    if src.max_cases and len(cases) > src.max_cases:
        pick = np.linspace(0, len(cases) - 1, src.max_cases).round().astype(int)
        cases = [cases[i] for i in sorted(set(pick.tolist()))]
    return cases


def prepare_source(root: Path, index: int, src: Source, max_cases: int = 0, slice_step: int = 0,
                   progress: Optional[Callable[[str], None]] = None) -> Iterator[Volume]:
    """Volumes of one source (one per case and axis), labels mapped to (index + 1) * 1000 + label."""
    step = slice_step or src.slice_step
    cases = source_cases(root, src)
    if max_cases:
        cases = cases[:max_cases]
    for cid, img_path, lab_path in cases:
        image = read_image(img_path, f"{src.folder} image")
        label = np.asarray(read_label(lab_path, image, f"{src.folder} label"), dtype=np.int64)
        supervised = set(np.unique(label).tolist()) - {0} if src.supervised is None else set(src.supervised)
        supervised -= set(src.excluded)
        mapped = np.where(np.isin(label, sorted(supervised)), label + (index + 1) * 1000, 0)
        for axis in src.axes:
            n = image.shape[axis]
            allowed = np.zeros(n, dtype=bool)
            allowed[::step] = True
            yield prepare_volume(f"{src.folder}/{cid}/axis{axis}", image, mapped, allowed, axis=axis)
        if progress:
            progress(f"{src.folder}/{cid}")


def external_volumes(root, sources: Sequence[Source] = SOURCES, max_cases: int = 0, slice_step: int = 0,
                     progress: Optional[Callable[[str], None]] = None) -> Tuple[List[Volume], List[int]]:
    """All pretraining volumes and the supervised (mapped) label ids present in them."""
    vols: List[Volume] = []
    for i, src in enumerate(sources):
        check_allowed(src.folder)
        vols.extend(prepare_source(Path(root), i, src, max_cases, slice_step, progress))
    base = sorted({int(v) for vol in vols for v in torch.unique(vol.labels).tolist() if v != 0})
    return vols, base


def pretrain(root, out_path, config: TrainConfig, device: torch.device = torch.device("cpu"),
             sources: Sequence[Source] = SOURCES, max_cases: int = 0, slice_step: int = 0, checkpoint=None,
             resume=None, checkpoint_seconds: float = CHECKPOINT_SECONDS, stop_after: Optional[int] = None,
             command: str = "", show_progress: bool = True,
             progress: Optional[Callable[[str], None]] = None, init=None) -> Optional[Path]:
    """Pretrain an RP-Net on the external sources; save it as a model (None if stopped before the end).

    init: a model whose weights start this run (a further stage with its own schedule); recorded in the manifest.
    """
    vols, base = external_volumes(root, sources, max_cases, slice_step, progress)
    if not vols:
        raise DatasetError("no pretraining volumes")
    result = train_rpnet(vols, base, config, device, show_progress=show_progress, checkpoint=checkpoint,
                         checkpoint_seconds=checkpoint_seconds, resume=resume, stop_after=stop_after, init=init)
    if result["step"] < config.steps:
        return None
    per_source: Dict[str, int] = {}
    for v in vols:
        key = v.case_id.split("/")[0]
        per_source[key] = per_source.get(key, 0) + int(v.allowed.sum())
    extra = {
        "input": {"size": NETWORK_SIZE, "normalisation": "per-volume percentile clip [0.5, 99.5], z-score",
                  "slice_axis": "any (pretrained on all three)"},
        "pretraining": {"datasets": [s.folder for s in sources], "slices_per_dataset": per_source,
                        "supervised_classes": len(base), "volumes": len(vols),
                        "sources": [dataclasses.asdict(s) for s in sources],
                        "max_cases": max_cases, "slice_step": slice_step,
                        "config": dataclasses.asdict(config), "device": str(device),
                        "seconds": round(float(result["seconds"]), 1),
                        "final_loss": round(float(np.mean(result["history"][-50:])), 4),
                        "init": result["init"],
                        "never": list(FORBIDDEN) + ["CHAOS test organs as supervised classes"]},
        "command": command,
    }
    return save_rpnet(result["net"].cpu(), out_path, dict(DEFAULT_PARAMS), extra)
