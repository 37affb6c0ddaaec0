"""The compute process's message transport: JSON messages and .npy arrays as files in two folders.

Each side writes its messages, numbered 1, 2, 3, ... into its outgoing folder and reads the other side's
in order. A message is `<seq>.json` (UTF-8 JSON object); its arrays are `<seq>-<name>.npy` written before
it. Every file is written under a temporary name and renamed, so a reader never sees half a file, and a
reader only looks for the next number: one `os.path.exists` per poll when nothing arrived, which never
blocks. Arrays are read with `allow_pickle=False`: nothing received is ever unpickled, so a message can
carry numbers, strings, lists and plain numeric/bool arrays, and nothing that runs code when loaded.

Files rather than pipes: the child may be started through a launcher (Slicer's PythonSlicer) that does not
forward stdin, and a non-blocking pipe read is not portable to Windows. Nothing here imports torch.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

TO_CHILD, TO_PARENT = "to_child", "to_parent"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")

Message = Tuple[dict, Dict[str, np.ndarray]]


class ProtocolError(RuntimeError):
    """A message that breaks the protocol (bad name, unreadable file)."""


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Mailbox:
    """One side's view of a mailbox folder: `side` 'parent' sends to_child and reads to_parent."""

    def __init__(self, folder, side: str):
        if side not in ("parent", "child"):
            raise ValueError(f"side must be 'parent' or 'child', got {side!r}")
        self.folder = Path(folder)
        out, inbox = (TO_CHILD, TO_PARENT) if side == "parent" else (TO_PARENT, TO_CHILD)
        self.out, self.inbox = self.folder / out, self.folder / inbox
        if side == "child":  # the parent makes the folder; a child that finds it gone was stopped while starting
            if not (self.out.is_dir() and self.inbox.is_dir()):
                raise ProtocolError(f"mailbox folder {self.folder} is gone: the parent stopped this process")
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            self.inbox.mkdir(parents=True, exist_ok=True)
        self._sent = 0
        self._next = 1

    def post(self, message: Mapping, arrays: Optional[Mapping[str, np.ndarray]] = None) -> int:
        """Write one message (and its arrays, first); returns its sequence number."""
        seq = self._sent + 1
        names = []
        for name, array in (arrays or {}).items():
            if not _NAME.match(name):
                raise ProtocolError(f"bad array name {name!r}")
            array = np.asarray(array)
            if array.dtype.hasobject:
                raise ProtocolError(f"array {name!r} holds Python objects; only numeric and bool arrays are sent")
            _write_atomic(self.out / f"{seq:06d}-{name}.npy", lambda f, a=array: np.save(f, a, allow_pickle=False))
            names.append(name)
        body = dict(message)
        body["arrays"] = names
        data = json.dumps(body).encode("utf-8")
        _write_atomic(self.out / f"{seq:06d}.json", lambda f: f.write(data))
        self._sent = seq
        return seq

    def fetch(self, limit: int = 1000) -> List[Message]:
        """The messages that arrived since the last call, in order (their files are deleted). Never waits."""
        got: List[Message] = []
        while len(got) < limit:
            path = self.inbox / f"{self._next:06d}.json"
            if not path.exists():
                break
            try:
                message = json.loads(path.read_bytes().decode("utf-8"))
                if not isinstance(message, dict):
                    raise ProtocolError("a message must be a JSON object")
                arrays = {}
                for name in message.pop("arrays", []):
                    if not isinstance(name, str) or not _NAME.match(name):
                        raise ProtocolError(f"bad array name {name!r}")
                    apath = self.inbox / f"{self._next:06d}-{name}.npy"
                    arrays[name] = np.load(apath, allow_pickle=False)
                    apath.unlink()
                path.unlink()
            except (OSError, ValueError) as exc:
                raise ProtocolError(f"unreadable message {path.name}: {exc}") from exc
            got.append((message, arrays))
            self._next += 1
        return got


# -- array helpers shared by both sides ------------------------------------------------------------
def pack_mask(mask: np.ndarray) -> Tuple[List[int], np.ndarray]:
    """A boolean mask as (lo, crop): its bounding box only (a full CT mask is ~80 MB, an organ's box much less)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return [0, 0, 0], np.zeros((0, 0, 0), bool)
    lo, hi = [], []
    for axis in range(mask.ndim):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        lo.append(int(idx[0]))
        hi.append(int(idx[-1]) + 1)
    return lo, np.ascontiguousarray(mask[tuple(slice(a, b) for a, b in zip(lo, hi))])


def unpack_mask(shape, lo, crop: np.ndarray) -> np.ndarray:
    """The full-grid boolean mask from pack_mask's (lo, crop)."""
    full = np.zeros(tuple(int(s) for s in shape), bool)
    crop = np.asarray(crop, bool)
    if crop.size:
        full[tuple(slice(int(a), int(a) + n) for a, n in zip(lo, crop.shape))] = crop
    return full


def image_message(image) -> Tuple[dict, np.ndarray]:
    """An Image as (geometry fields, array)."""
    return ({"spacing": [float(v) for v in image.spacing], "origin": [float(v) for v in image.origin],
             "direction": np.asarray(image.direction, float).reshape(3, 3).tolist()}, np.asarray(image.array))


def image_from_message(fields: Mapping, array: np.ndarray):
    from ..core.image_io import Image

    return Image(array, tuple(fields["spacing"]), tuple(fields["origin"]), np.asarray(fields["direction"], float))


def box_message(box) -> Optional[dict]:
    if box is None:
        return None
    return {"lo": [int(v) for v in box.lo], "hi": [int(v) for v in box.hi],
            "axis": None if box.axis is None else int(box.axis)}


def box_from_message(fields: Optional[Mapping]):
    from ..core.prompts import Box

    if fields is None:
        return None
    return Box(tuple(int(v) for v in fields["lo"]), tuple(int(v) for v in fields["hi"]),
               None if fields.get("axis") is None else int(fields["axis"]))
