"""A FewShotSeg request and its result as compute-process messages (JSON fields and arrays, nothing
pickled): the panel sends `request_message`, the compute process rebuilds it with `request_from_message`."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import numpy as np

from .request import DEFAULT_ADAPT_SECONDS, FewShotRequest, FewShotResult


def request_message(request: FewShotRequest, model: str = "default") -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """(JSON fields, arrays) of a request for the compute process (nothing pickled)."""
    from InteractiveRefineLib.compute.mailbox import image_message

    s_geo, s_arr = image_message(request.support_image)
    arrays = {"support": s_arr}
    same = request.query_image is request.support_image
    q_geo = s_geo
    if not same:
        q_geo, arrays["query"] = image_message(request.query_image)
    ids = [str(sid) for sid in request.support_masks]
    for i, mask in enumerate(request.support_masks.values()):
        arrays[f"mask{i}"] = np.asarray(mask) > 0
    r = tuple(request.query_range)
    rng = [r[0]] + [list(v) if isinstance(v, (tuple, list, np.ndarray)) else v for v in r[1:]]
    return ({"support": s_geo, "query": q_geo, "same": same, "ids": ids, "slice_index": int(request.slice_index),
             "axis": int(request.axis), "query_range": _plain_range(rng), "adapt": bool(request.adapt),
             "adapt_seconds": float(request.adapt_seconds), "device": str(request.device),
             "names": {str(k): str(v) for k, v in request.names.items()}, "model": model,
             "propagate": bool(request.propagate), "use_box_network": bool(request.use_box_network),
             "follow": bool(request.follow)}, arrays)


def _plain_range(rng):
    return [[int(x) for x in v] if isinstance(v, list) else (int(v) if isinstance(v, (int, np.integer)) else v)
            for v in rng]


def request_from_message(fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> FewShotRequest:
    """The request back from request_message's fields and arrays (in the compute process)."""
    from InteractiveRefineLib.compute.mailbox import image_from_message

    support = image_from_message(fields["support"], arrays["support"])
    query = support if fields.get("same") else image_from_message(fields["query"], arrays["query"])
    masks = {sid: arrays[f"mask{i}"] for i, sid in enumerate(fields["ids"])}
    r = list(fields.get("query_range") or ["auto"])
    rng = tuple([r[0]] + [tuple(v) if isinstance(v, list) else v for v in r[1:]])
    return FewShotRequest(support, masks, int(fields["slice_index"]), query, int(fields.get("axis", 0)), rng,
                          bool(fields.get("adapt")), float(fields.get("adapt_seconds", DEFAULT_ADAPT_SECONDS)),
                          str(fields.get("device", "auto")), dict(fields.get("names") or {}),
                          bool(fields.get("propagate")), bool(fields.get("use_box_network", True)),
                          bool(fields.get("follow")))


def result_from_message(fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray], shape) -> FewShotResult:
    from InteractiveRefineLib.compute.mailbox import unpack_mask

    masks = {sid: unpack_mask(shape, fields["mask_lo"][sid], arrays[f"mask{i}"])
             for i, sid in enumerate(fields["ids"])}
    info = dict(fields.get("info") or {})
    if "slices" in info:
        info["slices"] = tuple(info["slices"])
    return FewShotResult(masks, info)


