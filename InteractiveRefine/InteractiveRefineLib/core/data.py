"""Decathlon-layout datasets (dataset.json with "labels" and "training") and patient splits."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import DatasetError, PromptError
from .image_io import Image, read_image, read_label
from .prompts import whole_indices


@dataclass(frozen=True)
class Case:
    case_id: str
    image: Path
    label: Optional[Path]


def case_id_from_path(path: str) -> str:
    """'./imagesTr/chaos_13.nii.gz' -> 'chaos_13' (a Decathlon '_0000' channel suffix is dropped)."""
    name = Path(path).name
    name = re.sub(r"\.(nii\.gz|nii|nrrd|mha|mhd)$", "", name)
    return re.sub(r"_0000$", "", name)


def _read_json(path: Path, what: str):
    """The JSON content of `path`; DatasetError naming `what` if it does not parse."""
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DatasetError(f"{what} is not valid JSON: {exc}") from None


class DecathlonDataset:
    """A dataset folder with dataset.json: labels {id: name} and the training cases."""

    def __init__(self, root):
        self.root = Path(root)
        meta_path = self.root / "dataset.json"
        if not meta_path.is_file():
            raise DatasetError(f"{self.root} is not a Decathlon-layout dataset: dataset.json not found")
        meta = _read_json(meta_path, str(meta_path))
        if not isinstance(meta.get("labels"), dict) or not isinstance(meta.get("training"), list):
            raise DatasetError(f"{meta_path} needs a 'labels' object and a 'training' list")
        self.name = meta.get("name", self.root.name)
        self.meta = meta
        try:
            self.labels: Dict[int, str] = {int(k): str(v) for k, v in meta["labels"].items()}
        except ValueError:
            raise DatasetError(f"{meta_path}: label ids must be integers (the Decathlon 'labels' keys)") from None
        self.cases: List[Case] = []
        for entry in meta["training"]:
            if not isinstance(entry, dict) or "image" not in entry:
                raise DatasetError(f"{meta_path}: each 'training' entry needs an 'image' path; got {entry!r}")
            label = entry.get("label")
            self.cases.append(Case(case_id_from_path(entry["image"]), self._resolve(entry["image"]),
                                   self._resolve(label) if label else None))

    def _resolve(self, rel: str) -> Path:
        return (self.root / os.path.normpath(rel)).resolve()

    @property
    def foreground_labels(self) -> List[int]:
        return sorted(k for k in self.labels if k != 0)

    @property
    def case_ids(self) -> List[str]:
        return [c.case_id for c in self.cases]

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise DatasetError(f"case {case_id!r} is not in {self.root / 'dataset.json'}; "
                           f"known: {', '.join(self.case_ids[:10])}{'...' if len(self.cases) > 10 else ''}")

    def select(self, case_ids: Optional[Iterable[str]]) -> List[Case]:
        return list(self.cases) if case_ids is None else [self.case(c) for c in case_ids]

    def check_labels(self, label_ids: Optional[Sequence[int]]) -> List[int]:
        """The requested label ids (default: all foreground labels); unknown ids raise DatasetError."""
        if label_ids is None:
            return self.foreground_labels
        try:
            label_ids = whole_indices(list(label_ids), "label id")
        except PromptError as exc:
            raise DatasetError(f"{exc} (label ids are whole numbers; labels are {self.labels})") from None
        unknown = [int(l) for l in label_ids if int(l) not in self.labels or int(l) == 0]
        if unknown:
            raise DatasetError(f"unknown label id(s) {unknown} for dataset {self.name}; "
                               f"labels are {self.labels}")
        return [int(l) for l in label_ids]

    def load(self, case_id: str) -> Tuple[Image, np.ndarray]:
        """(image, integer label array) of a case; the label must be on the image grid."""
        c = self.case(case_id)
        image = read_image(c.image, f"{c.case_id} image")
        if c.label is None:
            raise DatasetError(f"case {case_id} has no label in dataset.json")
        return image, read_label(c.label, image, f"{c.case_id} label")


def splits_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "Resources" / "Splits"


def load_split(name_or_path) -> Dict[str, List[str]]:
    """A recorded patient split: {"train": [...], "val": [...], "test": [...]} of case ids."""
    path = Path(name_or_path)
    if not path.suffix:
        path = splits_dir() / f"{name_or_path}.json"
    if not path.is_file():
        raise DatasetError(f"split file not found: {path}")
    split = _read_json(path, f"split file {path}")
    if not isinstance(split, dict):
        raise DatasetError(f"split file {path} must hold an object with train/val/test lists")
    for key in ("train", "val", "test"):
        if not isinstance(split.get(key), list):
            raise DatasetError(f"split {path} needs a '{key}' list of case ids")
    overlap = (set(split["train"]) | set(split["val"])) & set(split["test"])
    if overlap:
        raise DatasetError(f"split {path}: cases {sorted(overlap)} are both training and test")
    return split


def split_for(dataset: DecathlonDataset) -> Optional[Dict[str, List[str]]]:
    """The recorded split whose case ids are exactly this dataset's cases, if any."""
    for path in sorted(splits_dir().glob("*.json")):
        split = load_split(path)
        ids = set(split["train"]) | set(split["val"]) | set(split["test"])
        if ids == set(dataset.case_ids):
            return split
    return None
