"""`python -m InteractiveRefineLib segment`: segment your own image from a box, with scribbles and rounds of
refinement, headless, exactly as the Slicer panel does.

    python -m InteractiveRefineLib segment IMAGE --box K0 J0 I0 K1 J1 I1 --out result.nii.gz
    python -m InteractiveRefineLib segment IMAGE --box X0 Y0 Z0 X1 Y1 Z1 --box-space ras --out result.nii.gz \\
        --scribbles round1.nii.gz --scribbles round2.txt --log-folder logs --participant p01 --case liver

The box: voxel indices (K, J, I as numpy holds the array; lo inclusive, hi exclusive; --slice-axis A makes it a
2D box on slice lo[A]) or two opposite corners in millimetres, in RAS (Slicer's frame) or LPS (ITK's, as
SimpleITK reports origins). A corner box thinner than a voxel along one axis is a 2D box, as a flat ROI in the
panel is. Each --scribbles file is one round: its scribbles are added to the earlier ones, then the session
refines. A scribble file is a label map on the image grid (1 foreground, 2 background) or a voxel list: text
rows `k j i fg|bg` (or 1|2), or JSON {"fg": [[k, j, i], ...], "bg": [...]}. --rounds N refines N times in all
(rounds beyond the scribble files refine again with all scribbles; with --mode unsupervised none are needed).

The same code as the panel runs it: the RefineController, through the compute protocol (its request loop in a
thread of this process), with the panel's checks (a box clipped to the image and at least 2 voxels a side;
scribbles outside the box or marked both fg and bg ignored, with a message), device choice (auto, cuda, cpu;
a GPU out of memory falls back to the CPU and says so) and interaction log (--log-folder: one JSON-lines file
per session, read by `analyze-logs`). Writes the result as a 0/1 label map (uint8) on the image's grid.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .core.errors import ImageError, PromptError
from .core.prompts import whole_indices

BOX_SPACES = ("voxel", "ras", "lps")
MODES = ("supervised", "unsupervised", "crf")


def add_segment(sub) -> None:
    """Register the `segment` subcommand (cli.py)."""
    from .core.argtypes import positive_float
    from .core.threads import THREADS_HELP, threads_arg

    p = sub.add_parser("segment", help="segment your own image from a box (+ scribbles, + rounds of refinement) "
                                       "as the Slicer panel does; writes a label map")
    p.add_argument("image", help="the image (NIfTI, NRRD, MHA, ...)")
    p.add_argument("--box", nargs=6, type=float, required=True, metavar="V",
                   help="voxel box K0 J0 I0 K1 J1 I1 (hi exclusive), or with --box-space ras/lps two opposite "
                        "corners X0 Y0 Z0 X1 Y1 Z1 in mm")
    p.add_argument("--box-space", choices=BOX_SPACES, default="voxel", help="voxel (default), ras or lps")
    p.add_argument("--slice-axis", type=int, choices=(0, 1, 2),
                   help="voxel box: a 2D box on slice K0 (0), J0 (1) or I0 (2) of that array axis")
    p.add_argument("--scribbles", action="append", default=[], metavar="FILE",
                   help="one round's scribbles: label map (1 fg, 2 bg) or voxel list (.txt/.csv/.json); repeat "
                        "for more rounds")
    p.add_argument("--rounds", type=int, default=None,
                   help="refinements in all (default: one per --scribbles file)")
    p.add_argument("--mode", choices=MODES, default="supervised", help="refinement mode (default supervised)")
    p.add_argument("--out", required=True, help="output label map (e.g. result.nii.gz)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cuda or cpu")
    p.add_argument("--views3d", type=int, choices=(1, 3), default=None,
                   help="3D boxes: the network's views, 3 (multi-view fusion, the shipped default; boxes under 10 "
                        "voxels thin or with a network grid deeper than 40 slices keep one) or 1 (about 3x faster)")
    p.add_argument("--time-budget", type=positive_float, default=None,
                   help="seconds per refinement, > 0 (default: none)")
    p.add_argument("--log-folder", help="write the interaction log there (as the panel's user-study log)")
    p.add_argument("--participant", default="", help="participant id in the log")
    p.add_argument("--case", default="", help="case id in the log")
    p.add_argument("--reference", help="reference label map on the image grid: Dice in the log and the output")
    p.add_argument("--reference-label", type=int, default=1, help="value of the object in --reference (default 1)")
    p.add_argument("--threads", type=threads_arg, default=0, help=THREADS_HELP)


# -- inputs -----------------------------------------------------------------------------------------------
def box_from_args(values: Sequence[float], space: str, image, slice_axis: Optional[int] = None):
    """The Box the command segments: voxel bounds, or two corners in mm (RAS or LPS) -> voxel box."""
    from .core.prompts import make_box

    values = [float(v) for v in values]
    if len(values) != 6 or not np.all(np.isfinite(values)):
        raise PromptError(f"--box needs six finite numbers; got {values}")
    if space == "voxel":
        lo, hi = values[:3], values[3:]
        if slice_axis is not None:
            hi = list(hi)
            hi[slice_axis] = lo[slice_axis] + 1
        return make_box(lo, hi, slice_axis)
    if space not in ("ras", "lps"):
        raise PromptError(f"unknown --box-space {space!r}; use one of {', '.join(BOX_SPACES)}")
    if slice_axis is not None:
        raise PromptError("--slice-axis is for voxel boxes; a box in mm is 2D when it is flat along one axis")
    from .core.geometry import ijk_to_ras_matrix
    from .panel.ras_geometry import roi_to_box

    a, b = np.asarray(values[:3]), np.asarray(values[3:])
    if space == "lps":
        a, b = a * [-1, -1, 1], b * [-1, -1, 1]
    object_to_ras = np.eye(4)
    object_to_ras[:3, 3] = (a + b) / 2
    ijk_to_ras = ijk_to_ras_matrix(image.spacing, image.origin, np.asarray(image.direction).reshape(3, 3))
    return roi_to_box(object_to_ras, np.abs(b - a), ijk_to_ras, image.shape)


def read_scribbles(path, image) -> Tuple[np.ndarray, np.ndarray]:
    """(fg, bg) full-grid masks from a label map (1 fg, 2 bg) or a voxel list file."""
    from .core.image_io import read_label

    path = Path(path)
    suffix = "".join(path.suffixes[-2:]).lower()
    fg, bg = np.zeros(image.shape, bool), np.zeros(image.shape, bool)
    if suffix.endswith((".txt", ".csv", ".json")):
        if not path.is_file():
            raise PromptError(f"scribble file not found: {path}")
        rows = _voxel_rows(path)
        for (k, j, i), label in rows:
            if not all(0 <= v < s for v, s in zip((k, j, i), image.shape)):
                raise PromptError(f"{path.name}: voxel {(k, j, i)} is outside the image of shape {image.shape}")
            (fg if label == "fg" else bg)[k, j, i] = True
        return fg, bg
    label = read_label(path, image, f"scribble label map {path.name}")
    unknown = sorted(set(np.unique(label).tolist()) - {0, 1, 2})
    if unknown:
        raise ImageError(f"scribble label map {path.name} holds values {unknown}; use 1 (foreground) and 2 "
                         "(background)")
    return label == 1, label == 2


def _voxel_rows(path: Path) -> List[Tuple[Tuple[int, int, int], str]]:
    labels = {"fg": "fg", "1": "fg", "bg": "bg", "2": "bg"}
    rows = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise PromptError(f"{path.name} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not set(data) <= {"fg", "bg"}:
            raise PromptError(f'{path.name}: expected {{"fg": [[k, j, i], ...], "bg": [...]}}')
        for label, voxels in data.items():
            if not isinstance(voxels, list):
                raise PromptError(f'{path.name}: "{label}" must be a list of [k, j, i] voxels; got {voxels!r}')
            for v in voxels:
                rows.append((_whole(v, path), label))
        return rows
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.replace(",", " ").split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 4 or parts[3].lower() not in labels:
            raise PromptError(f"{path.name} line {n}: expected 'k j i fg|bg'; got {line.strip()!r}")
        rows.append((_whole(parts[:3], path), labels[parts[3].lower()]))
    return rows


def _whole(values, path) -> Tuple[int, int, int]:
    try:
        v = [float(x) for x in values]  # the text file's fields are strings
    except (TypeError, ValueError):
        raise PromptError(f"{path.name}: voxel indices must be numbers; got {values!r}") from None
    if len(v) != 3:
        raise PromptError(f"{path.name}: a voxel is three whole indices k j i; got {values!r}")
    return whole_indices(v, f"{path.name}: voxel indices k j i")  # NaN, Inf and fractions refused


# -- running --------------------------------------------------------------------------------------------------
def run_segment(args) -> int:
    from .compute.client import ComputeClient
    from .compute.service import ComputeService
    from .core.image_io import read_image, read_label, validate_image, write_image
    from .core.input_checks import check_box_image
    from .core.outputs import check_output_file
    from .panel.refine_controller import RefineController

    out = check_output_file(args.out, "--out", inputs=[args.image, args.reference] + list(args.scribbles))
    image = validate_image(read_image(args.image))
    from .core.prompts import validate_box

    box = validate_box(box_from_args(args.box, args.box_space, image, args.slice_axis), image.shape)
    check_box_image(image, box)  # constant or too anisotropic: said here, before the compute process starts
    rounds_files = [read_scribbles(p, image) for p in args.scribbles]  # all inputs checked before computing
    rounds = len(rounds_files) if args.rounds is None else int(args.rounds)
    if rounds < 0:
        raise PromptError(f"--rounds must be >= 0; got {rounds}")
    if rounds < len(rounds_files):  # never leave a given file silently unused
        raise PromptError(f"--rounds {rounds} is fewer than the {len(rounds_files)} --scribbles files (each file is "
                          "one round); leave --rounds out or raise it")
    if rounds and args.mode != "unsupervised" and not rounds_files:
        raise PromptError(f"{args.mode} refinement needs scribbles: give --scribbles FILE (or --mode unsupervised)")
    if rounds and args.mode != "unsupervised":  # the first round's scribbles must count (the controller's rule)
        from .engine.scribbles import kept_in_box

        if not any(m.any() for m in kept_in_box(*rounds_files[0], box)):
            where = "the box" if box.axis is None else f"slice {box.slice_index} of the 2D box"
            raise PromptError(f"--scribbles {Path(args.scribbles[0]).name}: no scribbled voxel lies inside {where} "
                              "(or each is marked both fg and bg); round 1 would have nothing to refine with")
    if args.mode == "unsupervised" and rounds_files:  # never leave a given file silently unused
        raise PromptError("--mode unsupervised refines without scribbles; leave --scribbles out (with --rounds N), "
                          "or choose --mode supervised")
    reference = None
    if args.reference:
        reference = read_label(args.reference, image, "--reference") == args.reference_label
        if not reference.any():
            raise ImageError(f"--reference has no voxel of label {args.reference_label}")
    if args.log_folder:
        from .core.outputs import check_output_folder

        check_output_folder(args.log_folder, "--log-folder")

    client = ComputeClient(service_factory=ComputeService, name="segment")
    config = {"views3d": args.views3d} if args.views3d else None  # else RefineConfig's defaults
    controller = RefineController(image, config=config, device=args.device, log_folder=args.log_folder,
                                  participant=args.participant, case=args.case, reference=reference, client=client)
    try:
        what = "2D box on slice {} of axis {}".format(box.slice_index, "KJI"[box.axis]) if box.axis is not None \
            else "3D box"
        update = _step(controller, lambda: controller.start_box(box), f"segment ({what} {box.lo}-{box.hi})")
        fg, bg = np.zeros(image.shape, bool), np.zeros(image.shape, bool)
        for r in range(rounds):
            if r < len(rounds_files):
                fg |= rounds_files[r][0]
                bg |= rounds_files[r][1]
                ignored, message = controller.set_scribbles(fg, bg)
                if message:
                    print(f"round {r + 1}: {message}")
            update = _step(controller, lambda: controller.start_refine(args.mode, args.time_budget),
                           f"round {r + 1}: refine ({args.mode})")
        device = controller.device_text
        controller.accept()
    finally:
        controller.close()
        client.stop()
    write_image(image, out, update.mask.astype(np.uint8))
    print(f"device: {device}")
    if controller.log.path is not None:
        print(f"log: {controller.log.path}")
    print(f"wrote {out} ({int(update.mask.sum())} voxels)")
    return 0


def _step(controller, start, name):
    t0 = time.perf_counter()
    start()
    status = controller.wait()
    job = status.job
    if job.state != "done":
        raise job.error
    dice = status.update.dice
    print(f"{name}: {job.seconds:.1f} s compute, {time.perf_counter() - t0:.1f} s in all, "
          f"{int(status.update.mask.sum())} voxels" + ("" if dice is None else f", Dice {dice:.3f}"))
    return status.update
