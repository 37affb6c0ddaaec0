"""Memory guard: estimate a step's peak bytes before computing and refuse what the machine cannot hold.

A whole-image 3D box on a 512 x 512 x 300 CT once grew to 22.7 GB and was killed by the kernel, taking
the session with it. The estimate counts the arrays a box step keeps per voxel of the crop and of the
image, plus the capped CRF graph (capped_crf.crf_bytes); the limit is the memory available now, or
ADAPTIVESEG_MAX_MEMORY_GB when set (lower it to leave room for other programs).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from ..core.errors import ResourceError
from .capped_crf import crf_bytes

# Bytes per crop voxel of a box step: the float32 crop, the probability and the upsampled CRF labels
# on the crop (4 each), seed / box / result masks (1 each, about 8 of them alive at once).
BYTES_PER_REGION_VOXEL = 20
BYTES_PER_IMAGE_VOXEL = 2  # the full-grid result mask and its paste
ENV = "ADAPTIVESEG_MAX_MEMORY_GB"


# cgroup v2, then v1: (limit, usage, stat) of this process's memory cgroup (a container's limit).
CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat"),
                ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
                 "/sys/fs/cgroup/memory/memory.stat"))


def cgroup_available_bytes() -> Optional[int]:
    """What the memory cgroup (a container) still allows: limit - (usage - reclaimable file cache); None
    without a limit. MemAvailable describes the host, and the kernel kills a process at the cgroup's limit."""
    for limit_path, usage_path, stat_path in CGROUP_FILES:
        try:
            with open(limit_path) as f:
                text = f.read().strip()
            if text == "max":
                return None
            limit = int(text)
            with open(usage_path) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit >= 1 << 60:  # cgroup v1 without a limit
            return None
        cache = 0
        try:
            with open(stat_path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key in ("inactive_file", "total_inactive_file"):
                        cache = max(cache, int(value))
        except (OSError, ValueError):
            pass
        return max(0, limit - max(0, usage - cache))
    return None


def available_bytes() -> int:
    """MemAvailable of /proc/meminfo (Linux), else the physical memory, else 8 GB; no more than the memory
    cgroup (container) allows."""
    total = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    total = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if total is None:
        try:
            total = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            total = 8 << 30
    limited = cgroup_available_bytes()
    return total if limited is None else min(total, limited)


def memory_limit() -> int:
    """Bytes a step may use: ADAPTIVESEG_MAX_MEMORY_GB if set, else 90% of the available memory."""
    text = os.environ.get(ENV, "").strip()
    if text:
        try:
            return int(float(text) * (1 << 30))
        except ValueError:
            raise ResourceError(f"{ENV}={text!r} is not a number of gigabytes") from None
    return int(0.9 * available_bytes())


def box_step_bytes(region_shape: Sequence[int], image_shape: Sequence[int], grid_shape: Sequence[int] = (),
                   feature_channels: int = 0, feature_bytes: int = 4) -> int:
    """Estimated peak bytes of segmenting one box whose crop (box + margin) has `region_shape`, plus the
    frozen features kept for fine-tuning (`feature_channels` on the network grid `grid_shape`, `feature_bytes`
    each: 4 in float32, 2 in bfloat16; 160 per view of the slice-wise network and one view's buffer with three:
    1.1 GB in float32 for three views of a 48-slice box)."""
    region = int(np.prod(region_shape, dtype=np.int64))
    image = int(np.prod(image_shape, dtype=np.int64))
    grid = int(np.prod(grid_shape, dtype=np.int64)) if len(grid_shape) else 0
    features = int(feature_bytes) * int(feature_channels) * grid
    return BYTES_PER_REGION_VOXEL * region + BYTES_PER_IMAGE_VOXEL * image + crf_bytes(region_shape) + features


def fewshot_bytes(image_shape: Sequence[int], n_labels: int) -> int:
    """Estimated peak bytes of FewShotSeg on a whole query volume: the normalised volume and its slices on
    the network grid, a probability volume per label and the label map (2.6 GB measured for one label on
    a 300 x 512 x 512 CT, 0.85 GB of it the process before segmenting)."""
    return int(np.prod(image_shape, dtype=np.int64)) * (16 + 8 * max(1, int(n_labels)))


def check_memory(need: int, what: str, limit: Optional[int] = None) -> None:
    """ResourceError naming `what`, the estimate and the limit if `need` exceeds the limit."""
    limit = memory_limit() if limit is None else limit
    if need > limit:
        raise ResourceError(f"{what} would need about {need / 2**30:.1f} GB of memory but {limit / 2**30:.1f} GB "
                            f"are available (limit: {ENV} or the free memory); draw a smaller box, or "
                            "close other programs")
