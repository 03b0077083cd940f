"""Causal Effect Maps as arrays: checks, colour mapping and the overlay (arrays in, arrays out).

A CEM is a (rows, cols) array of causal effects in dB, one value per block of
``block`` x ``block`` output pixels (blocks at the right/bottom edge may be partial).
Positive effects are drawn red, negative blue, zero white (matplotlib's "seismic"
colormap, after a sign-preserving power mapping); the ROI's blocks are pure green.
The matplotlib figures built on these are :mod:`cem_lab.viz.cem_charts` (colour bar,
pie) and :mod:`cem_lab.viz.cem_figures` (the files of one run and the summary panel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import FuncNorm
from PIL import Image

from cem_lab.errors import InputError

Roi = Sequence[int]

TASK_BOUNDS: dict[str, float] = {"sr": 2.5, "dn": 1.0, "dr": 2.0}
"""Symmetric colour bounds (dB) per task: super-resolution, denoising, deraining."""

ROI_COLOR: tuple[int, int, int] = (0, 255, 0)
_CMAP_NAME = "seismic"


# --------------------------------------------------------------------------- validation


def check_bound(bound: float, gamma: float) -> tuple[float, float]:
    """``(bound, gamma)`` as floats; a ValueError unless both are finite and > 0."""
    bound, gamma = float(bound), float(gamma)
    if not (math.isfinite(bound) and bound > 0):
        raise InputError(f"bound must be a finite number > 0, got {bound}")
    if not (math.isfinite(gamma) and gamma > 0):
        raise InputError(f"gamma must be a finite number > 0, got {gamma}")
    return bound, gamma


def check_grid(
    effect: np.ndarray,
    roi_mask: np.ndarray,
    classification: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(effect, roi_mask)`` as float64 and bool arrays of one (rows, cols) shape (and ``classification``, if
    given, of that shape with values in {-1, 0, +1}); a ValueError naming what does not fit."""
    effect = np.asarray(effect, dtype=np.float64)
    roi_mask = np.asarray(roi_mask)
    if effect.ndim != 2 or effect.size == 0:
        raise InputError(f"effect must be a non-empty (rows, cols) array, got shape {effect.shape}")
    if roi_mask.shape != effect.shape:
        raise InputError(f"roi_mask shape {roi_mask.shape} does not match effect shape {effect.shape}")
    if roi_mask.dtype != bool:
        if not np.isin(roi_mask, (0, 1)).all():
            raise InputError("roi_mask must be boolean (or hold only 0 and 1)")
        roi_mask = roi_mask.astype(bool)
    if classification is not None:
        classification = np.asarray(classification)
        if classification.shape != effect.shape:
            raise InputError(f"classification shape {classification.shape} does not match effect shape {effect.shape}")
        if not np.isin(classification, (-1, 0, 1)).all():
            raise InputError("classification must hold only -1, 0 and +1")
    return effect, roi_mask


def check_output_shape(grid_shape: tuple[int, int], block: int, output_shape: Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` of ``output_shape``; a ValueError unless ``block`` is a positive integer and the grid of
    ``block`` x ``block`` blocks over (H, W) is ``grid_shape``."""
    if isinstance(block, bool) or int(block) != block or block <= 0:
        raise InputError(f"block must be a positive integer, got {block!r}")
    block = int(block)
    if len(output_shape) < 2:
        raise InputError(f"output_shape must be (H, W), got {tuple(output_shape)}")
    h, w = int(output_shape[0]), int(output_shape[1])
    if h <= 0 or w <= 0:
        raise InputError(f"output_shape must be positive, got {(h, w)}")
    rows, cols = grid_shape
    want = (math.ceil(h / block), math.ceil(w / block))
    if (rows, cols) != want:
        raise InputError(
            f"output_shape {(h, w)} with block {block} gives a {want[0]}x{want[1]} grid, but the map is {rows}x{cols}"
        )
    return h, w


def check_roi(roi: Roi, h: int, w: int) -> tuple[int, int, int]:
    """``(top, left, size)`` as ints; a ValueError unless the square lies inside the ``h`` x ``w`` output."""
    if len(roi) != 3:
        raise InputError(f"roi must be (top, left, size), got {roi!r}")
    top, left, size = (int(v) for v in roi)
    if size <= 0 or top < 0 or left < 0 or top + size > h or left + size > w:
        raise InputError(f"roi (top={top}, left={left}, size={size}) does not fit in the {h}x{w} output")
    return top, left, size


def as_rgb_uint8(image: np.ndarray, name: str) -> np.ndarray:
    """``image`` as a contiguous (H, W, 3) uint8 array (grey repeated, alpha dropped, floats in [0, 1] scaled);
    a ValueError naming ``name`` otherwise."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"{name} must be an (H, W, 3) image, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and np.nanmin(arr) >= 0 and np.nanmax(arr) <= 1:
            arr = np.round(np.nan_to_num(arr) * 255).astype(np.uint8)
        else:
            raise InputError(f"{name} must be uint8 (or floats in [0, 1]), got dtype {arr.dtype}")
    return np.ascontiguousarray(arr)


# --------------------------------------------------------------------------- colour mapping


def _power_forward(x: np.ndarray, gamma: float) -> np.ndarray:
    return np.sign(x) * np.abs(x) ** (1.0 / gamma)


def _power_inverse(y: np.ndarray, gamma: float) -> np.ndarray:
    return np.sign(y) * np.abs(y) ** gamma


def _effect_norm(bound: float, gamma: float) -> FuncNorm:
    """Norm [-bound, bound] -> [0, 1] with the same power mapping as :func:`effect_to_rgb`."""
    return FuncNorm(
        (
            lambda x: _power_forward(np.asarray(x, dtype=float), gamma),
            lambda y: _power_inverse(np.asarray(y, dtype=float), gamma),
        ),
        vmin=-bound,
        vmax=bound,
        clip=True,
    )


def effect_mappable(bound: float, gamma: float) -> ScalarMappable:
    """A seismic ScalarMappable over [-bound, bound] with the power mapping of :func:`effect_to_rgb` (for colour bars)."""
    return ScalarMappable(norm=_effect_norm(bound, gamma), cmap=colormaps[_CMAP_NAME])


def effect_to_rgb(effect: np.ndarray, roi_mask: np.ndarray, bound: float, gamma: float = 1.2) -> np.ndarray:
    """Colour a CEM: (rows, cols) dB -> (rows, cols, 3) uint8.

    Values are clipped to [-bound, bound], scaled to [-1, 1], passed through
    ``sign(v) * |v| ** (1 / gamma)`` and coloured with "seismic" (-1 blue, 0 white,
    +1 red). Non-finite values are drawn as 0 (white); ROI blocks are pure green.
    """
    bound, gamma = check_bound(bound, gamma)
    effect, roi_mask = check_grid(effect, roi_mask)
    v = np.clip(np.nan_to_num(effect, nan=0.0, posinf=bound, neginf=-bound), -bound, bound) / bound
    v = _power_forward(v, gamma)
    rgba = colormaps[_CMAP_NAME]((v + 1.0) / 2.0, bytes=True)
    rgb = np.ascontiguousarray(rgba[..., :3])
    rgb[roi_mask] = ROI_COLOR
    return rgb


# --------------------------------------------------------------------------- images


def draw_roi_box(
    image_uint8: np.ndarray,
    roi: Roi,
    color: Sequence[int] = ROI_COLOR,
    thickness: int = 2,
) -> np.ndarray:
    """Return a copy of an (H, W, 3) uint8 image with the ROI outlined.

    The ``thickness``-px rectangle lies on the ROI's own border pixels (inside
    ``[top, top + size) x [left, left + size)``), clipped to the image.
    """
    img = np.asarray(image_uint8)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"image_uint8 must be an (H, W, 3) uint8 array, got {img.shape} {img.dtype}")
    if len(roi) != 3:
        raise InputError(f"roi must be (top, left, size), got {roi!r}")
    if thickness < 1:
        raise InputError(f"thickness must be >= 1, got {thickness}")
    top, left, size = (int(v) for v in roi)
    if size <= 0:
        raise InputError(f"roi size must be > 0, got {size}")
    out = img.copy()
    h, w = out.shape[:2]
    bottom, right = top + size, left + size
    t = min(int(thickness), size)
    col = np.asarray(color, dtype=np.uint8)

    def fill(r0: int, r1: int, c0: int, c1: int) -> None:
        r0, r1 = max(r0, 0), min(r1, h)
        c0, c1 = max(c0, 0), min(c1, w)
        if r0 < r1 and c0 < c1:
            out[r0:r1, c0:c1] = col

    fill(top, top + t, left, right)  # top edge
    fill(bottom - t, bottom, left, right)  # bottom edge
    fill(top, bottom, left, left + t)  # left edge
    fill(top, bottom, right - t, right)  # right edge
    return out


def _upsample_blocks(rgb: np.ndarray, block: int, h: int, w: int) -> np.ndarray:
    """Each grid cell -> a flat ``block`` x ``block`` square, cropped to (h, w)."""
    up = np.repeat(np.repeat(rgb, block, axis=0), block, axis=1)
    return np.ascontiguousarray(up[:h, :w])


def resize_to(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize (H_in, W_in, 3) uint8 to (h, w): pixel repetition for integer factors, else bicubic."""
    hi, wi = image.shape[:2]
    if (hi, wi) == (h, w):
        return image
    if h % hi == 0 and w % wi == 0:
        return np.repeat(np.repeat(image, h // hi, axis=0), w // wi, axis=1)
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BICUBIC))


def cem_overlay(
    effect: np.ndarray,
    roi_mask: np.ndarray,
    roi: Roi,
    block: int,
    output_shape: Sequence[int],
    degraded_input_rgb: np.ndarray,
    bound: float,
    alpha: float = 0.1,
) -> np.ndarray:
    """The coloured CEM at output size, blended with the degraded input, ROI outlined.

    Returns ``(1 - alpha) * map + alpha * input`` as (H, W, 3) uint8 with a 2 px green
    ROI rectangle; the input is resized to (H, W) (nearest for integer factors).
    """
    effect, roi_mask = check_grid(effect, roi_mask)
    h, w = check_output_shape(effect.shape, block, output_shape)
    roi = check_roi(roi, h, w)
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"alpha must lie in [0, 1], got {alpha}")
    inp = resize_to(as_rgb_uint8(degraded_input_rgb, "degraded_input_rgb"), h, w)
    cmap = _upsample_blocks(effect_to_rgb(effect, roi_mask, bound), int(block), h, w)
    blend = (1.0 - alpha) * cmap.astype(np.float64) + alpha * inp.astype(np.float64)
    out = np.clip(np.round(blend), 0, 255).astype(np.uint8)
    return draw_roi_box(out, roi, ROI_COLOR, thickness=2)


def effect_range(effect: np.ndarray, roi_mask: np.ndarray) -> tuple[float, float]:
    """Min and max finite effect outside the ROI (whole map if that is empty; (0, 0) if none)."""
    vals = effect[~roi_mask]
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        vals = effect[np.isfinite(effect)]
    if vals.size == 0:
        return 0.0, 0.0
    return float(vals.min()), float(vals.max())
