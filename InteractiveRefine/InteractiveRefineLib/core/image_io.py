"""Images with their geometry, read and written with SimpleITK.

Arrays are in numpy index order (k, j, i) = (z, y, x), as SimpleITK returns them; `spacing`, `origin`
and `direction` are in ITK order (x, y, z) and in the LPS patient frame, as in the file header.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_path
from .errors import ImageError, OutputError
from .nifti_check import check_nifti


@dataclass
class Image:
    """A 3D scalar image: `array` (K, J, I) plus its geometry (ITK order, mm, LPS)."""

    array: np.ndarray
    spacing: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    @property
    def spacing_kji(self) -> np.ndarray:
        """Spacing in array axis order (z, y, x), mm."""
        return np.asarray(self.spacing[::-1], dtype=float)

    @property
    def shape(self) -> Tuple[int, ...]:
        return self.array.shape

    def with_array(self, array: np.ndarray) -> "Image":
        """Same geometry, another array of the same shape."""
        if array.shape != self.array.shape:
            raise ImageError(f"array shape {array.shape} differs from the image shape {self.array.shape}")
        return Image(array, self.spacing, self.origin, np.array(self.direction))


def validate_image(image: Image, name: str = "image") -> Image:
    """Check that `image` is a finite 3D scalar image; raise ImageError naming the problem otherwise."""
    a = image.array
    if a.ndim != 3:
        raise ImageError(f"{name} must be a 3D scalar image (K, J, I); got an array of shape {a.shape} "
                         f"({a.ndim}D{', 4D or multi-channel images are not supported' if a.ndim > 3 else ''})")
    if a.size == 0:
        raise ImageError(f"{name} is empty (shape {a.shape})")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ImageError(f"{name} must hold real numbers; got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise ImageError(f"{name} contains NaN or Inf values ({int((~np.isfinite(a)).sum())} voxels)")
    if any(s <= 0 for s in image.spacing):
        raise ImageError(f"{name} has a non-positive spacing {image.spacing}")
    return image


def from_sitk(img: sitk.Image, name: str = "image") -> Image:
    """Convert a SimpleITK image; 2D images become one-slice volumes, vector images are refused."""
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(f"{name} has {img.GetNumberOfComponentsPerPixel()} channels; a single-channel "
                         "(scalar) image is required")
    dim = img.GetDimension()
    if dim == 2:
        img = sitk.JoinSeries(img)
    elif dim != 3:
        raise ImageError(f"{name} is {dim}D; a 3D (or 2D) scalar image is required (4D series are not supported)")
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    image = Image(sitk.GetArrayFromImage(img), tuple(img.GetSpacing()), tuple(img.GetOrigin()), direction)
    return validate_image(image, name)


def to_sitk(image: Image, array: Optional[np.ndarray] = None) -> sitk.Image:
    """A SimpleITK image of `array` (default: image.array) with the geometry of `image`."""
    out = sitk.GetImageFromArray(image.array if array is None else array)
    out.SetSpacing(tuple(float(s) for s in image.spacing))
    out.SetOrigin(tuple(float(o) for o in image.origin))
    out.SetDirection(tuple(float(d) for d in np.asarray(image.direction).ravel()))
    return out


def read_image(path, name: Optional[str] = None) -> Image:
    """Read a 3D scalar image (NIfTI, NRRD, MHA, ...) keeping spacing, origin and direction."""
    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise ImageError(f"image file not found: {path}")
    check_nifti(path)  # truncation and NaN/Inf as stored: ITK's reader would zero-fill both
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ImageError(f"cannot read image {path}: {str(exc).strip().splitlines()[-1]}") from None
    return from_sitk(img, name)


def read_label(path, reference: Optional[Image] = None, name: Optional[str] = None) -> np.ndarray:
    """Read a label map as an integer array (K, J, I); check it matches `reference` when given."""
    label = read_image(path, name or Path(path).name)
    a = label.array
    if np.issubdtype(a.dtype, np.floating):
        rounded = np.rint(a)
        if not np.allclose(a, rounded, atol=1e-3):
            raise ImageError(f"label map {path} has non-integer values")
        a = rounded
    a = a.astype(np.int16 if a.max() < 2 ** 15 and a.min() >= -2 ** 15 else np.int32)
    if reference is not None:
        check_same_grid(reference, label, f"label map {Path(path).name}")
    return a


def check_same_grid(reference: Image, other: Image, name: str = "label map", tol: float = 1e-3) -> None:
    """Raise ImageError unless `other` has the shape (and, within tol mm, the geometry) of `reference`."""
    if other.shape != reference.shape:
        raise ImageError(f"{name} has shape {other.shape} but the image has shape {reference.shape}")
    if not np.allclose(other.spacing, reference.spacing, atol=tol) or \
            not np.allclose(other.origin, reference.origin, atol=max(tol, 1e-2 * max(reference.spacing))):
        raise ImageError(f"{name} has the image's shape but not its spacing/origin "
                         f"({other.spacing}, {other.origin} vs {reference.spacing}, {reference.origin})")
    if not np.allclose(other.direction, reference.direction, atol=1e-4):
        raise ImageError(f"{name} has the image's shape but another direction (axes flipped or rotated): "
                         f"{np.round(other.direction, 4).tolist()} vs {np.round(reference.direction, 4).tolist()}")


def write_image(image: Image, path, array: Optional[np.ndarray] = None) -> Path:
    """Write atomically: a temporary file in the target folder, then a rename (no half-written files).

    OutputError (naming `path`, never the temporary file) when it cannot be written."""
    from .outputs import check_output_file

    path = check_output_file(path, "output image")
    try:
        with atomic_path(path, suffix="".join(path.suffixes[-2:]) or ".nii.gz") as tmp:
            sitk.WriteImage(to_sitk(image, array), str(tmp), True)
    except (OSError, RuntimeError) as exc:
        # Never name the hidden temporary file: the user knows only `path`.
        reason = getattr(exc, "strerror", None) or "the image writer failed (disk full or unsupported format?)"
        raise OutputError(f"cannot write {path}: {reason}") from None
    return path
