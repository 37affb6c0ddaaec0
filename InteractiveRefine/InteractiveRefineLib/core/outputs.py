"""Checks of output paths, run before any computing: a command that cannot write its result must say so
at once, not after minutes of work (and never overwrite one of its inputs)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

from .errors import OutputError

# Formats SimpleITK writes that keep the geometry (spacing, origin, direction) of a label map, in one file.
# Not .mhd / .nhdr: their header names a separate data file, which the atomic write (a hidden temporary name,
# then a rename) would leave under its temporary name, with the header pointing at it.
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def _existing_ancestor(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _same_file(a, b) -> bool:
    """Whether two existing paths are one file: a symbolic or hard link, or another spelling on a
    case-insensitive file system, is caught too (the same device and inode)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # either one missing
        return False


def _check_parent(path: Path, what: str) -> None:
    """The nearest existing ancestor of `path` must be a writable folder (missing folders are created)."""
    anc = _existing_ancestor(path.parent)
    if not anc.is_dir():
        raise OutputError(f"{what} {path}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: the folder {anc} is not writable")


def check_output_file(path, what: str = "--out", suffixes: Sequence[str] = IMAGE_SUFFIXES,
                      inputs: Iterable = ()) -> Path:
    """`path` can receive a new file of one of `suffixes` and is none of `inputs`; OutputError otherwise."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name such as {path / ('result' + suffixes[0])}")
    if suffixes and not any(path.name.lower().endswith(s) for s in suffixes):
        raise OutputError(f"{what} {path}: unsupported file type; use one of {', '.join(suffixes)}")
    _check_parent(path, what)
    for src in inputs:
        if src is not None and _same_file(src, path):
            raise OutputError(f"{what} {path} is also an input; it would be overwritten: write elsewhere")
    return path


def check_output_folder(path, what: str = "--out", files: Sequence[str] = (),
                        inputs: Optional[Iterable] = None) -> Path:
    """`path` is (or can become) a writable folder; `files` inside it that must not be folders."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is an existing file; give a folder (it is created if missing)")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{what} {path}: the folder is not writable")
        for name in files:
            if (path / name).is_dir():
                raise OutputError(f"{what} {path}: {path / name} is a folder where a file will be written")
    else:
        _check_parent(path, what)
    for src in inputs or ():
        if src is not None and _same_file(src, path):
            raise OutputError(f"{what} {path} is also an input folder: write elsewhere")
    return path
