"""LAM's diffusion index: how spread out an attribution map is, from the Gini coefficient of its values.

Gu & Dong (LAM, CVPR 2021, section 4) summarise a map by the Gini coefficient ``G`` of its absolute values: a
map whose mass sits on a few pixels has ``G`` near 1, a map spread evenly over the image ``G`` = 0. Their
*diffusion index* turns it around and scales it to a percentage:

    DI = (1 - G) * 100        (larger DI: the model draws on a wider area of the input)

With the ``n`` values sorted ascending, ``x_(1) <= ... <= x_(n)`` (all ``>= 0``, not all zero), the Gini
coefficient is written here in its sorted-values form

    G = sum_{i=1..n} (2 i - n - 1) x_(i) / (n * sum_i x_i)

which equals the mean absolute difference over all ordered pairs divided by twice the mean,
``sum_{i,j} |x_i - x_j| / (2 n^2 mean(x))``. Known values: all values equal -> ``G = 0`` (DI = 100); one
non-zero value among ``n`` -> ``G = (n - 1) / n`` (DI = 100 / n); ``[1, 2, 3, 4]`` -> ``G = 10 / 40 = 0.25``.
``G`` does not change when every value is multiplied by the same positive number or when the values are
permuted; it is ``(n - 1) / n`` at most, so the DI of an ``n``-value map is at least ``100 / n`` and
DIs are compared between maps of the same size (the same input resolution, or the same block grid).

Signed maps (LAM, integrated gradients, a CE map) are taken in absolute value first, as LAM does; values that
are not finite (blocks a CE map did not compute) are left out. A map without mass (every value 0) has no
Gini coefficient: NaN.

Where `cem-attribution` reports it (``attribution.json``, ``diffusion_index``): per method, ``blocks``: the DI
of the absolute block map over the blocks outside the ROI (LAM, IG and saliency: the block sums of
``|attribution|``; the CEM: ``|effect|``), comparable across methods since all lie on the same grid; and
``pixels``: the DI of ``|pixel_map|`` (the attribution summed over channels, then its absolute value, over
every input pixel, as LAM computes it) for the gradient methods, None for the CEM (whose map has no pixel
resolution below its blocks).
"""

from __future__ import annotations

import numpy as np

from cem_lab.attribution.base import AttributionError

__all__ = ["diffusion_index", "gini"]


def _values(values) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise AttributionError(f"the Gini coefficient needs numbers, got {type(values).__name__} ({err})") from err
    a = np.abs(a.ravel())
    return a[np.isfinite(a)]


def gini(values) -> float:
    """The Gini coefficient of ``|values|`` (any shape, flattened; non-finite values left out): the module's
    sorted-values formula. NaN when no finite value is non-zero; 0 for a single value."""
    x = np.sort(_values(values))
    n = x.size
    total = float(x.sum())
    if n == 0 or not total > 0:
        return float("nan")
    i = np.arange(1, n + 1, dtype=np.float64)
    g = float(np.dot(2 * i - n - 1, x) / (n * total))
    return min(max(g, 0.0), 1.0)  # exact in exact arithmetic; clip the last-bit rounding


def diffusion_index(values) -> float:
    """LAM's diffusion index ``(1 - gini(|values|)) * 100`` of a map (NaN for a map without mass)."""
    return (1.0 - gini(values)) * 100.0
