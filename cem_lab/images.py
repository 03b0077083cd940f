"""Image I/O and the tensor conventions shared by the whole package.

Conventions (everything in cem_lab follows them):
- an image tensor is float32, shape (N, 3, H, W), values in [0, 1];
- an image that stands for a stored 8-bit picture holds only multiples of 1/255
  (see :func:`quantize`);
- numpy images are uint8, shape (H, W, 3), RGB.

Images come in through :func:`read_image` / :func:`load_image`, which read every bit depth
exactly and then reduce it to 8-bit RGB, saying what was changed (or refuse, saying why); the
decoders and that reduction are :mod:`cem_lab.image_decoding`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cem_lab.errors import InputError
from cem_lab.image_decoding import READ_FIX, ImageError, from_pil, read_file, to_rgb8
from cem_lab.io import atomic_path

ImageLike = str | Path | Image.Image | np.ndarray | torch.Tensor
#: file types read from an image folder (case-insensitive): training data, patch banks, dataset=folder
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is a file with one of the :data:`IMAGE_EXTENSIONS` (any case)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder`` (not in sub-folders), sorted by name."""
    return sorted((p for p in Path(folder).iterdir() if is_image_file(p)), key=lambda p: p.name)


def quantize(x: torch.Tensor, mode: str = "round") -> torch.Tensor:
    """Clamp to [0, 1] and snap to the uint8 grid, staying in float.

    ``mode="round"`` is round-to-nearest (BasicSR, PIL, cv2.addWeighted);
    ``mode="floor"`` truncates like ``np.uint8(x * 255)`` (the reference's noisy images).
    """
    y = x.clamp(0, 1) * 255.0
    y = torch.floor(y) if mode == "floor" else torch.round(y)
    return y / 255.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) float tensor -> (H, W, 3) uint8 array (rounded)."""
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise InputError(f"to_uint8 takes one image, got a batch of {x.shape[0]}")
        x = x[0]
    arr = torch.round(x.detach().clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(arr)


def from_uint8(arr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (1, 3, H, W) float tensor in [0, 1]."""
    return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float() / 255.0


def read_image(image: ImageLike, name: str | None = None) -> tuple[np.ndarray, list[str]]:
    """Read any supported image as an (H, W, 3) uint8 RGB array, and say what was changed.

    Returns ``(array, notes)``: one full sentence per change made to the input (bit depth
    reduced, grey replicated, alpha dropped, palette expanded, ...), each starting with ``name``
    (default: the path, or "image"). An 8-bit RGB input gives no notes. The image keeps its size.

    Every bit depth is read exactly and then reduced to 8 bits with a note (the pipeline computes
    on 8-bit values), or refused with an :class:`ImageError` that names the problem and the fix:
    16-bit PNGs are read with pypng, TIFFs with tifffile, everything else with Pillow.
    A tensor is taken as (3, H, W) or (1, 3, H, W) floats in [0, 1].
    """
    notes: list[str] = []
    if isinstance(image, (str, Path)):
        path = Path(image)
        name = name or str(path)
        if not path.is_file():
            raise ImageError(
                f"image file not found: {path}; check the path (relative paths are "
                "resolved from the directory you launched from)"
            )
        return read_file(path, name, notes), notes
    name = name or "image"
    if isinstance(image, Image.Image):
        try:
            return from_pil(image, name, notes), notes
        except ImageError:
            raise
        except Exception as err:  # a lazily opened PIL image decodes here, and may be corrupt
            raise ImageError(f"cannot read image {name}: {err}; {READ_FIX}") from err
    if isinstance(image, torch.Tensor):
        return _from_tensor(image, name, notes), notes
    if isinstance(image, np.ndarray):
        return to_rgb8(image, name, notes), notes
    raise ImageError(
        f"{name}: unsupported image type {type(image).__name__}; "
        "give a path, a PIL image, a uint8 numpy array or a float tensor"
    )


def load_image(image: ImageLike, name: str | None = None) -> np.ndarray:
    """Load any supported image as an (H, W, 3) uint8 RGB array, warning about every change.

    :func:`read_image` does the work; each of its notes (grey replicated, alpha dropped, 16 bits
    scaled to 8, ...) becomes a ``UserWarning`` pointing at the caller, so that nothing is
    changed silently. A tensor is taken as (3, H, W) or (1, 3, H, W) floats in [0, 1].
    """
    arr, notes = read_image(image, name)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    return arr


def _from_tensor(image: torch.Tensor, name: str, notes: list[str]) -> np.ndarray:
    t = image.detach().cpu()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ImageError(f"{name}: expected one image, got a batch of {t.shape[0]}")
        t = t[0]
    if t.dim() != 3:
        raise ImageError(f"{name}: expected a (3, H, W) tensor, got shape {tuple(image.shape)}")
    arr = t.permute(1, 2, 0).numpy()
    if t.is_floating_point():
        if t.numel() and (t.min() < 0 or t.max() > 1):
            raise ImageError(
                f"{name}: float tensor values must lie in [0, 1] "
                f"(got [{t.min():.3g}, {t.max():.3g}]); divide by 255 first"
            )
    elif t.dtype != torch.bool and t.dtype != torch.uint8:
        lo, hi = (int(t.min()), int(t.max())) if t.numel() else (0, 0)
        if lo < 0 or hi > 255:
            raise ImageError(
                f"{name}: integer tensor values must lie in [0, 255] (got [{lo}, {hi}]); "
                "clamp them with t.clamp(0, 255)"
            )
        arr = arr.astype(np.uint8)
    return to_rgb8(arr, name, notes)


def save_image(arr: np.ndarray, path: str | Path) -> None:
    """Save an (H, W, 3) uint8 array as PNG, atomically."""

    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
