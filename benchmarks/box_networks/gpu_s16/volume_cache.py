"""The box training's volumes (box_sources.py, train and val parts) in one numpy file, for a lent GPU machine.

That machine gets the repository but not ../shared/data, takes at most 64 MiB in all, and has no SimpleITK:
`write` stores each distinct image once (int16 when integer-valued, else float16 of the image over a per-image
scale: 0.05% relative error, far under the training's intensity augmentation) with its geometry; `read` gives
the Volumes back without SimpleITK. No pickle: names, groups and label ids travel as JSON.
    PYTHONPATH=InteractiveRefine python benchmarks/box_networks/gpu_s16/volume_cache.py OUT.npz
"""
from __future__ import annotations

import hashlib
import json
import sys

import numpy as np


def _key(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).view(np.uint8)).hexdigest()[:16]


def write(path: str, val_hippocampus: int = 10) -> None:
    from InteractiveRefineLib.training.box_sources import load_sources
    arrays, meta = {}, {"train": [], "val": []}
    for part, vols in (("train", load_sources("train")), ("val", load_sources("val", limit=val_hippocampus))):
        for v in vols:
            a = v.image.array
            ik, lk = "img_" + _key(a), "lab_" + _key(v.labels)
            scale = 1.0
            if ik not in arrays:
                if np.all(np.mod(a, 1) == 0) and a.min() >= -32768 and a.max() <= 32767:
                    arrays[ik] = a.astype(np.int16)
                else:
                    scale = float(np.abs(a).max()) / 1000.0 or 1.0
                    arrays[ik] = (a / scale).astype(np.float16)
                arrays[ik + "_scale"] = np.float64(scale)
            if lk not in arrays:
                arrays[lk] = v.labels.astype(np.uint8 if 0 <= v.labels.min() and v.labels.max() < 256 else np.int16)
            meta[part].append(dict(name=v.name, group=v.group, image=ik, labels=lk, label_ids=list(v.label_ids),
                                   label_names={str(k): n for k, n in v.label_names.items()},
                                   spacing=list(v.image.spacing), origin=list(v.image.origin),
                                   direction=np.asarray(v.image.direction).tolist()))
    np.savez_compressed(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)


def read(path: str):
    """{"train": [Volume], "val": [Volume]} (SimpleITK not needed: image_io is imported with a stand-in)."""
    from InteractiveRefineLib.core.image_io import Image
    from InteractiveRefineLib.training.box_sources import Volume
    z = np.load(path, allow_pickle=False)
    meta = json.loads(z["meta"].tobytes().decode())
    images = {}
    out = {}
    for part, items in meta.items():
        out[part] = []
        for m in items:
            if m["image"] not in images:
                images[m["image"]] = (z[m["image"]].astype(np.float32) * float(z[m["image"] + "_scale"]))
            img = Image(images[m["image"]], spacing=tuple(m["spacing"]), origin=tuple(m["origin"]),
                        direction=np.asarray(m["direction"]))
            out[part].append(Volume(m["name"], m["group"], img, z[m["labels"]].astype(np.int16),
                                    tuple(m["label_ids"]), {int(k): n for k, n in m["label_names"].items()}))
    return out


if __name__ == "__main__":
    write(sys.argv[1])
