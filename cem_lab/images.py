"""Image I/O and the tensor conventions shared by the whole package.

Conventions (everything in cem_lab follows them):
- an image tensor is float32, shape (N, 3, H, W), values in [0, 1];
- an image that stands for a stored 8-bit picture holds only multiples of 1/255
  (see :func:`quantize`);
- numpy images are uint8, shape (H, W, 3), RGB.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image

ImageLike = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]


class ImageError(ValueError):
    """An image that cem_lab cannot use as given."""


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
            raise ValueError(f"to_uint8 takes one image, got a batch of {x.shape[0]}")
        x = x[0]
    arr = torch.round(x.detach().clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(arr)


def from_uint8(arr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (1, 3, H, W) float tensor in [0, 1]."""
    return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float() / 255.0


def _as_rgb_array(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.min() >= 0 and arr.max() <= 1:
            arr = np.round(arr * 255).astype(np.uint8)
        else:
            raise ImageError(
                f"{name}: expected a uint8 image (or floats in [0, 1]), got dtype {arr.dtype}; "
                "convert it with np.clip(img, 0, 255).astype(np.uint8)"
            )
    if arr.ndim == 2:
        warnings.warn(f"{name}: grey image converted to RGB (channel replicated)", stacklevel=3)
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        warnings.warn(f"{name}: RGBA image converted to RGB (alpha channel dropped)", stacklevel=3)
        arr = arr[..., :3]
    elif arr.ndim == 3 and arr.shape[2] == 1:
        warnings.warn(f"{name}: one-channel image converted to RGB (channel replicated)", stacklevel=3)
        arr = np.repeat(arr, 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(f"{name}: expected an H x W x 3 RGB image, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def load_image(image: ImageLike, name: str | None = None) -> np.ndarray:
    """Load any supported image as an (H, W, 3) uint8 RGB array.

    Grey, one-channel and RGBA images are converted to RGB with a warning that says so.
    A tensor is taken as (3, H, W) or (1, 3, H, W) floats in [0, 1].
    """
    if isinstance(image, (str, Path)):
        path = Path(image)
        name = name or str(path)
        if not path.is_file():
            raise ImageError(f"image file not found: {path}; check the path (relative paths are "
                             "resolved from the directory you launched from)")
        try:
            with Image.open(path) as im:
                im.load()
                mode = im.mode
                if mode in ("RGB",):
                    arr = np.asarray(im)
                elif mode in ("L", "RGBA", "LA", "P", "I;16", "I", "F", "CMYK", "1"):
                    if mode == "RGBA":
                        warnings.warn(f"{name}: RGBA image converted to RGB (alpha channel dropped)",
                                      stacklevel=2)
                    elif mode != "P":
                        warnings.warn(f"{name}: {mode} image converted to RGB", stacklevel=2)
                    arr = np.asarray(im.convert("RGB"))
                else:
                    warnings.warn(f"{name}: {mode} image converted to RGB", stacklevel=2)
                    arr = np.asarray(im.convert("RGB"))
        except ImageError:
            raise
        except Exception as err:  # PIL raises many types for corrupt files
            raise ImageError(f"cannot read image {path}: {err}; is it a valid PNG/JPEG/BMP file?") from err
        return np.ascontiguousarray(arr)
    name = name or "image"
    if isinstance(image, Image.Image):
        if image.mode == "RGBA":
            warnings.warn(f"{name}: RGBA image converted to RGB (alpha channel dropped)", stacklevel=2)
        elif image.mode != "RGB":
            warnings.warn(f"{name}: {image.mode} image converted to RGB", stacklevel=2)
        return np.ascontiguousarray(np.asarray(image.convert("RGB")))
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ImageError(f"{name}: expected one image, got a batch of {t.shape[0]}")
            t = t[0]
        if t.dim() != 3:
            raise ImageError(f"{name}: expected a (3, H, W) tensor, got shape {tuple(image.shape)}")
        if t.is_floating_point():
            if t.numel() and (t.min() < 0 or t.max() > 1):
                raise ImageError(f"{name}: float tensor values must lie in [0, 1] "
                                 f"(got [{t.min():.3g}, {t.max():.3g}]); divide by 255 first")
            arr = np.round(t.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        else:
            arr = t.permute(1, 2, 0).numpy().astype(np.uint8)
        return _as_rgb_array(arr, name)
    if isinstance(image, np.ndarray):
        return _as_rgb_array(image, name)
    raise ImageError(f"{name}: unsupported image type {type(image).__name__}; "
                     "give a path, a PIL image, a uint8 numpy array or a float tensor")


def save_image(arr: np.ndarray, path: Union[str, Path]) -> None:
    """Save an (H, W, 3) uint8 array as PNG, atomically."""
    from cem_lab.io import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
