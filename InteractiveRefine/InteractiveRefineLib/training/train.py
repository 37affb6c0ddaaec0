"""Class-agnostic box -> object training of P-Net (2D) / PC-Net (3D) on a Decathlon dataset.

Every sample is one labelled structure of a training label: its bounding box (jittered), a random
margin, the crop resampled to the network grid, intensity and flip augmentation; the target is that
structure's mask. Validation runs the real inference path (crop -> predict -> paste back -> Dice on
the image grid) on the validation patients, for the training labels only, so unseen labels never
influence model selection. The best validation model is saved (safetensors + manifest).
"""
from __future__ import annotations

import logging
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..core.data import DecathlonDataset, load_split, split_for
from ..core.device import choose_device
from ..core.errors import DatasetError, PromptError
from ..core.geometry import extract, normalize
from ..core.image_io import Image
from ..core.metrics import dice
from ..core.prompts import Box, box_from_mask, validate_box
from ..engine.inference import DEFAULT_INPUT, plan_for, predict_box
from ..engine.models import load_model, save_model
from ..engine.networks import ARCHITECTURES, build_network
from .augment import augment_geometry, augment_intensity

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    dataset: str
    out: str
    dim: int = 2
    split: Optional[str] = None          # split name/path; default: the recorded split matching the dataset
    labels: Sequence[int] = (1, 4)       # CHAOS liver + spleen: kidneys stay unseen
    batch: int = 8
    lr: float = 1e-3
    max_iters: int = 20000
    max_minutes: float = 55.0
    val_every: int = 100
    patience: int = 8                    # validations without improvement before stopping
    seed: int = 0
    device: str = "auto"
    threads: int = 0                     # torch CPU threads (0 = torch default)
    jitter_voxels: int = 3               # box bounds move by up to this + jitter_frac * extent
    jitter_frac: float = 0.1
    min_area: int = 20                   # 2D: smallest structure slice (voxels) used for training
    input: Dict = field(default_factory=lambda: dict(DEFAULT_INPUT))
    command: str = ""


class ObjectSampler:
    """Draws (network input, target) pairs around the labelled structures of some cases."""

    def __init__(self, images: List[Image], labels: List[np.ndarray], label_ids: Sequence[int], cfg: TrainConfig):
        self.images, self.cfg = images, cfg
        self.masks = {}
        self.items: Dict[int, List[Tuple]] = {l: [] for l in label_ids}
        for ci, lab in enumerate(labels):
            for l in label_ids:
                m = lab == l
                if not m.any():
                    continue
                self.masks[(ci, l)] = m
                if cfg.dim == 3:
                    self.items[l].append((ci, l, None))
                else:
                    areas = m.sum(axis=(1, 2))
                    self.items[l] += [(ci, l, int(k)) for k in np.nonzero(areas >= cfg.min_area)[0]]
        self.items = {l: v for l, v in self.items.items() if v}
        if not self.items:
            raise DatasetError(f"no training structures of labels {list(label_ids)} found")

    def _jitter(self, box: Box, shape, rng: np.random.Generator) -> Box:
        lo, hi = list(box.lo), list(box.hi)
        for a in range(3):
            if a == box.axis:
                continue
            ext = box.hi[a] - box.lo[a]
            j = self.cfg.jitter_voxels + self.cfg.jitter_frac * ext
            if self.cfg.dim == 3 and a == 0:
                j = min(j, 2)  # thick slices: at most two slices of jitter through-plane
            j = int(round(j))
            lo[a] += int(rng.integers(-j, j + 1))
            hi[a] += int(rng.integers(-j, j + 1))
        try:
            return validate_box(Box(tuple(lo), tuple(hi), box.axis), shape)
        except PromptError:  # jitter collapsed the box: use the tight one
            return box

    def sample(self, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        labels = sorted(self.items)
        items = self.items[labels[rng.integers(len(labels))]]
        ci, l, k = items[rng.integers(len(items))]
        image, mask = self.images[ci], self.masks[(ci, l)]
        axis = None if k is None else 0
        box = self._jitter(box_from_mask(mask, axis, k), image.shape, rng)
        spec = plan_for(box, image, self.cfg.input, self.cfg.input["margin_mm"] * rng.uniform(0.5, 1.5))
        x = normalize(augment_intensity(extract(image.array, spec), rng))
        y = (extract(mask, spec) >= 0.5).astype(np.int64)  # extract casts only the crop to float
        return augment_geometry(x, y, rng)


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + soft Dice of the foreground."""
    ce = F.cross_entropy(logits, target)
    p = torch.softmax(logits, 1)[:, 1]
    t = target.float()
    dims = tuple(range(1, p.dim()))
    soft_dice = (2 * (p * t).sum(dims) + 1) / (p.sum(dims) + t.sum(dims) + 1)
    return ce + (1 - soft_dice.mean())


def validate(net, input_cfg, cases: List[Tuple[Image, np.ndarray]], label_ids, dim: int, device,
             min_area: int = 20) -> Dict[str, float]:
    """Mean Dice of tight-box predictions on the validation cases (2D: every labelled slice)."""
    net.eval()
    per_label: Dict[int, List[float]] = {l: [] for l in label_ids}
    for image, lab in cases:
        for l in label_ids:
            m = lab == l
            if not m.any():
                continue
            if dim == 3:
                pred = predict_box(net, input_cfg, image, box_from_mask(m), device)
                per_label[l].append(dice(pred.mask, m))
                continue
            for k in np.nonzero(m.sum(axis=(1, 2)) >= min_area)[0]:
                box = validate_box(box_from_mask(m, 0, int(k)), image.shape)
                pred = predict_box(net, input_cfg, image, box, device)
                per_label[l].append(dice(pred.mask[k], m[k]))
    net.train()
    out = {f"dice_label_{l}": float(np.mean(v)) for l, v in per_label.items() if v}
    out["dice_mean"] = float(np.mean([out[f"dice_label_{l}"] for l in label_ids if per_label[l]]))
    return out


def train(cfg: TrainConfig, progress: Optional[Callable[[int, Dict], None]] = None) -> Path:
    """Train, validate periodically, stop early, and save the best model to `cfg.out` (a .json path)."""
    if cfg.dim not in (2, 3):
        raise ValueError("dim must be 2 or 3")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = choose_device(cfg.device)
    ds = DecathlonDataset(cfg.dataset)
    label_ids = ds.check_labels(cfg.labels)
    split = load_split(cfg.split) if cfg.split else split_for(ds)
    if split is None:
        raise DatasetError(f"no recorded split matches dataset {cfg.dataset}; pass --split")
    load = lambda ids: [ds.load(c) for c in ids]  # noqa: E731
    train_cases, val_cases = load(split["train"]), load(split["val"])
    sampler = ObjectSampler([c[0] for c in train_cases], [c[1] for c in train_cases], label_ids, cfg)

    arch = "pnet2d" if cfg.dim == 2 else "pcnet3d"
    arch_params = dict(ARCHITECTURES[arch])
    net = build_network(arch).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=2)
    out = Path(cfg.out)
    manifest = {
        "input": cfg.input,
        "training": {
            "dataset": ds.name, "dataset_path": str(cfg.dataset), "split": split.get("dataset", cfg.split),
            "train_cases": split["train"], "val_cases": split["val"],
            "labels": {str(l): ds.labels[l] for l in label_ids},
            "seed": cfg.seed, "batch": cfg.batch, "lr": cfg.lr, "device": str(device),
            "torch": torch.__version__, "python": platform.python_version(), "config": asdict(cfg),
        },
        "command": cfg.command,
    }
    best, stale, it, t0 = -1.0, 0, 0, time.monotonic()
    history = []
    bar = tqdm(total=cfg.max_iters, desc=f"train {arch}", unit="it", mininterval=5)
    net.train()
    while it < cfg.max_iters:
        minutes = (time.monotonic() - t0) / 60
        if minutes > cfg.max_minutes:
            log.info("time budget of %.0f min reached", cfg.max_minutes)
            break
        opt.zero_grad(set_to_none=True)
        total = 0.0
        if cfg.dim == 2:
            xs, ys = zip(*[sampler.sample(rng) for _ in range(cfg.batch)])
            x = torch.from_numpy(np.stack(xs)[:, None]).to(device)
            y = torch.from_numpy(np.stack(ys)).to(device)
            loss = loss_fn(net(x), y)
            loss.backward()
            total = float(loss.detach())
        else:  # 3D crops differ in depth: accumulate gradients over single samples
            for _ in range(cfg.batch):
                xs, ys = sampler.sample(rng)
                loss = loss_fn(net(torch.from_numpy(xs)[None, None].to(device)),
                               torch.from_numpy(ys)[None].to(device)) / cfg.batch
                loss.backward()
                total += float(loss.detach())
        opt.step()
        it += 1
        bar.update(1)
        bar.set_postfix(loss=f"{total:.3f}", best=f"{best:.3f}", refresh=False)
        if it % cfg.val_every == 0 or it == cfg.max_iters:
            metrics = validate(net, cfg.input, val_cases, label_ids, cfg.dim, device, cfg.min_area)
            metrics.update(iteration=it, minutes=round((time.monotonic() - t0) / 60, 2), loss=total)
            history.append(metrics)
            log.info("iter %d: %s", it, metrics)
            tqdm.write(f"iter {it}: val dice {metrics['dice_mean']:.4f} (best {max(best, 0):.4f})", file=sys.stderr)
            sched.step(metrics["dice_mean"])
            if progress:
                progress(it, metrics)
            if metrics["dice_mean"] > best:
                best, stale = metrics["dice_mean"], 0
                manifest["validation"] = dict(metrics)
                manifest["training"]["history"] = history
                manifest["training"]["iterations_at_best"] = it
                save_model(net, arch, out, arch_params, manifest)
            else:
                stale += 1
                if stale >= cfg.patience:
                    log.info("early stopping after %d validations without improvement", stale)
                    break
    bar.close()
    if best < 0:  # no validation ran yet (tiny budget): save what we have, validated once
        metrics = validate(net, cfg.input, val_cases, label_ids, cfg.dim, device, cfg.min_area)
        metrics.update(iteration=it)
        history.append(metrics)
        manifest["validation"] = metrics
        manifest["training"]["iterations_at_best"] = it
    manifest["training"]["history"] = history
    manifest["training"]["iterations"] = it
    manifest["training"]["minutes"] = round((time.monotonic() - t0) / 60, 2)
    if best < 0:
        save_model(net, arch, out, arch_params, manifest)
    else:  # keep the best weights, record the full history in the manifest
        best_net, _ = load_model(out)
        save_model(best_net, arch, out, arch_params, manifest)
    return out
