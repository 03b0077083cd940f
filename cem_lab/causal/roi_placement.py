"""Where the ROIs of a study go: a seeded rule that covers flat and textured regions alike.

A study that hand-picks one ROI per image measures that ROI. :func:`place_roi` instead places ROI
number ``index`` of ``count`` on an image by a rule that depends only on the clean image (the
output-sized ground truth), the ROI size, the alignment and the seed, never on the model, so that
every model of a study is mapped on the same ROIs (and so paired):

1. candidates: every ROI position on the grid of ``align`` output pixels that fits inside the image,
   at least ``margin`` pixels from its border (``cem-lab`` aligns on the ROI size by default, so that
   the ROIs cover whole blocks of any block size that divides it and do not move when a study compares
   block sizes);
2. texture of a candidate: the mean gradient magnitude of the image's luma (Sobel) inside it;
3. the candidates are ranked by texture and cut into ``count`` strata of equal size (quantiles):
   stratum 0 holds the flattest positions, stratum ``count - 1`` the most textured;
4. ROI ``index`` is drawn uniformly from stratum ``index`` by ``numpy.random.default_rng((seed,
   index, crc32 of the image bytes))``.

So a sweep over ``index = 0 .. count-1`` gives one ROI per texture stratum of every image. The
texture score of each placed ROI is returned with it, to be recorded with the run.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from cem_lab.causal.grid import GeometryError
from cem_lab.metrics import BT601_LUMA

__all__ = ["PlacedRoi", "place_roi", "texture_map"]


@dataclass(frozen=True)
class PlacedRoi:
    """A ROI placed by texture strata (output pixels), with its stratum and texture score."""

    top: int
    left: int
    size: int
    index: int
    count: int
    texture: float  #: mean gradient magnitude inside the ROI (luma, 0..255 scale)
    stratum: tuple[float, float]  #: the texture range of its stratum
    candidates: int

    def as_list(self) -> list[int]:
        """``[top, left, size]``."""
        return [self.top, self.left, self.size]

    def describe(self) -> dict:
        """The placement rule and its numbers, to be recorded with the run."""
        return {
            "rule": "texture_strata",
            "index": self.index,
            "count": self.count,
            "texture": round(self.texture, 4),
            "stratum": [round(v, 4) for v in self.stratum],
            "candidates": self.candidates,
        }


def _luma(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)  # (C, H, W) -> (H, W, C)
    if arr.ndim == 3:
        arr = arr[..., :3] @ np.array(BT601_LUMA) if arr.shape[-1] >= 3 else arr[..., 0]
    if arr.max() <= 1.0 + 1e-9 and np.issubdtype(np.asarray(image).dtype, np.floating):
        arr = arr * 255.0
    return arr


def texture_map(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude (Sobel) of the image's luma, on the 0..255 scale; (H, W)."""
    from scipy import ndimage  # lazy: scipy.ndimage adds to the start-up of every cem-lab run; only roi=placed needs it

    y = _luma(image)
    return np.hypot(ndimage.sobel(y, axis=0, mode="reflect"), ndimage.sobel(y, axis=1, mode="reflect")) / 8.0


def place_roi(
    image: np.ndarray, size: int, index: int, count: int, seed: int = 0, align: int = 1, margin: int = 0
) -> PlacedRoi:
    """ROI ``index`` (0-based) of ``count`` on ``image`` ((H, W, 3) or (3, H, W), uint8 or float in [0, 1],
    output-sized); see the module doc for the rule."""
    for name, value, low in (("size", size, 1), ("count", count, 1), ("align", align, 1), ("margin", margin, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise GeometryError(f"roi placement: {name} must be an integer >= {low}, got {value!r}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < count:
        raise GeometryError(
            f"roi placement: index must be an integer in [0, {count - 1}] (count {count}), got {index!r}; "
            f"sweep it with roi_place.index=range(0,{count})"
        )
    grad = texture_map(image)
    h, w = grad.shape
    if size + 2 * margin > h or size + 2 * margin > w:
        raise GeometryError(
            f"an ROI of {size} px (plus a margin of {margin} px each side) does not fit the {h}x{w} "
            "output image; use a smaller roi_place.size or a larger image"
        )
    start = -(-margin // align) * align
    tops = np.arange(start, h - size - margin + 1, align)
    lefts = np.arange(start, w - size - margin + 1, align)
    if len(tops) == 0 or len(lefts) == 0:
        raise GeometryError(
            f"no ROI of {size} px on the {align}-px grid fits the {h}x{w} image with a margin of "
            f"{margin} px; use a smaller roi size, align or margin"
        )
    # mean gradient inside every candidate, from a summed-area table
    sat = np.zeros((h + 1, w + 1))
    sat[1:, 1:] = grad.cumsum(0).cumsum(1)
    t, left = np.meshgrid(tops, lefts, indexing="ij")
    score = (sat[t + size, left + size] - sat[t, left + size] - sat[t + size, left] + sat[t, left]) / (size * size)
    flat_t, flat_l, flat_s = t.ravel(), left.ravel(), score.ravel()
    n = len(flat_s)
    if n < count:
        raise GeometryError(
            f"only {n} ROI position(s) of {size} px fit this {h}x{w} image on the {align}-px grid, "
            f"fewer than roi_place.count={count}; use fewer ROIs or a smaller size"
        )
    order = np.lexsort((flat_l, flat_t, flat_s))  # by texture; ties by position, so the rule is exact
    lo, hi = (index * n) // count, ((index + 1) * n) // count
    stratum = order[lo:hi]
    digest = zlib.crc32(np.ascontiguousarray(np.asarray(image)).tobytes())
    rng = np.random.default_rng((int(seed), int(index), digest))
    pick = stratum[int(rng.integers(len(stratum)))]
    return PlacedRoi(
        int(flat_t[pick]),
        int(flat_l[pick]),
        int(size),
        int(index),
        int(count),
        float(flat_s[pick]),
        (float(flat_s[stratum].min()), float(flat_s[stratum].max())),
        n,
    )
