"""Timing of whole-volume few-shot segmentation and of exemplar adaptation (for the README's numbers).

Separate from evaluation so the measured call is exactly what a user waits for: every slice of a query
volume segmented from one support slice (10 recurrent steps), and one adaptation with the default budget.
"""
from __future__ import annotations

import time
from typing import Dict

import numpy as np

from ..engine.adapt import AdaptConfig, adapt_segmenter
from ..engine.protocol import support_chunk_slices
from ..engine.segment import FewShotSegmenter, make_supports


def time_case(segmenter: FewShotSegmenter, support, query, organ: int, repeats: int = 3,
              adapt: bool = True) -> Dict[str, object]:
    """Median seconds to segment the whole query volume (after one warm-up call), and one adaptation."""
    s_img, s_lab = support
    q_img, _ = query
    supports = make_supports(s_img, s_lab, support_chunk_slices(s_lab, organ)[1], [organ])
    segmenter.segment(supports, q_img)  # warm-up: first-call set-up of the CPU kernels for this shape
    runs = []
    for _ in range(repeats):
        t0 = time.monotonic()
        segmenter.segment(supports, q_img)
        runs.append(time.monotonic() - t0)
    out: Dict[str, object] = {"query_shape": list(q_img.shape), "device": str(segmenter.device),
                              "iterations": segmenter.iterations, "segment_seconds": runs,
                              "segment_median_s": round(float(np.median(runs)), 3)}
    if adapt:
        t0 = time.monotonic()
        adapted = adapt_segmenter(segmenter, supports, q_img, 0, AdaptConfig())
        out["adapt_seconds"] = round(time.monotonic() - t0, 2)
        out["adapt_steps"] = adapted.manifest["adapted"]
    return out
