"""Intervals for a study over a population of images x ROIs: a nested bootstrap, and paired differences.

A study maps every model on the same units: ROI ``j`` of image ``i``. Two ROIs of one image are not
independent (same picture, same noise draw), so the unit of resampling is the image, and the ROIs
are resampled inside each drawn image (a two-stage, nested bootstrap). The estimate is the mean over
images of each image's mean over its ROIs (every image weighs the same, whatever its ROI count).
Crops of one picture (``image_crop`` with ``image_crop_cell``) are not independent either (one scene,
one camera, one kind of content): the studies resample pictures (:func:`pictures`), with every crop x ROI
of a drawn picture resampled inside it, so that 6 photographs cut into 24 crops count as 6, not 24.

Small populations: with n images the plain percentile bootstrap is too narrow (it ignores the
n / (n - 1) of the variance and the t distribution of a mean from n values; with 5 images its 95 %
interval covers about 85 %). The interval is therefore Hesterberg's *expanded* percentile interval
(Hesterberg 2015, "What teachers should know about the bootstrap", section 5): the percentiles are
taken at ``alpha'`` with ``Phi^-1(1 - alpha'/2) = sqrt(n / (n - 1)) * t_{n-1}(1 - alpha/2)``, which
restores the coverage of the t interval for near-normal means and keeps the bootstrap's shape for
skewed ones. ``tests/analysis/test_study_stats.py`` checks the coverage on synthetic maps.

p-values: :attr:`Interval.p` is the two-sided p-value of "the mean is 0" that matches the interval:
the estimate over its bootstrap standard error, with the same small-sample expansion, against a t
distribution with n - 1 degrees of freedom (so that p < 1 - level where a near-normal interval
excludes 0). The studies' verdicts correct these for the number of comparisons they read
(:func:`cem_lab.analysis.findings.holm`).

Paired differences: for two models the difference is taken per unit first (the runs use the same
intervention draws, seeded by (seed, block, sample), so the noise of the draws cancels: common random
numbers) and then bootstrapped the same nested way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cem_lab.errors import InputError

__all__ = [
    "Interval",
    "pictures",
    "bootstrap_p",
    "contrast_of_differences",
    "expanded_alpha",
    "image_means",
    "nested_bootstrap",
    "paired_difference",
]


def pictures(runs) -> list[str]:
    """The resampling cluster of each row of a runs table: its ``picture`` (a crop's source picture,
    :func:`cem_lab.run_format.picture_of`), or its ``image`` where the table has no picture column."""
    column = "picture" if "picture" in runs.columns else "image"
    return [str(v) for v in runs[column]]


@dataclass(frozen=True)
class Interval:
    """A population mean and its interval."""

    mean: float
    low: float
    high: float
    n_images: int
    n_units: int
    level: float
    #: two-sided p-value of "the mean is 0", consistent with the interval (module doc); NaN without one
    p: float = float("nan")

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly above or below 0."""
        return bool(np.isfinite(self.low) and np.isfinite(self.high) and (self.low > 0 or self.high < 0))

    def as_dict(self, prefix: str = "") -> dict:
        """The interval as a flat dict (mean, low, high, counts), its keys prefixed with ``prefix``."""
        return {
            f"{prefix}mean": self.mean,
            f"{prefix}low": self.low,
            f"{prefix}high": self.high,
            f"{prefix}n_images": self.n_images,
            f"{prefix}n_units": self.n_units,
            f"{prefix}p": self.p,
        }

    def __str__(self) -> str:
        if not np.isfinite(self.low):
            return f"{self.mean:.4g} [n/a: {self.n_images} image(s)]"
        return f"{self.mean:.4g} [{self.low:.4g}, {self.high:.4g}]"


def expanded_alpha(alpha: float, n: int) -> float:
    """Hesterberg's expanded tail probability for ``n`` resampled groups (``alpha`` for large n)."""
    from scipy import stats  # lazy: scipy.stats costs about 0.7 s at start-up

    if n < 2:
        return float("nan")
    z = np.sqrt(n / (n - 1)) * stats.t.ppf(1 - alpha / 2, n - 1)
    return float(2 * stats.norm.sf(z))


def bootstrap_p(point: float, boot: np.ndarray, n: int, expanded: bool = True) -> float:
    """Two-sided p-value of "the mean is 0" from a bootstrap of the mean of ``n`` groups: ``point`` over
    the bootstrap standard error (times sqrt(n / (n - 1)) when ``expanded``), against t with n - 1
    degrees of freedom. 1 when the estimate is exactly 0; 0 when every draw equals it and it is not."""
    from scipy import stats  # lazy, as in expanded_alpha

    if n < 2:
        return float("nan")
    se = float(np.std(boot, ddof=1)) * (np.sqrt(n / (n - 1)) if expanded else 1.0)
    if point == 0:
        return 1.0
    if se == 0:
        return 0.0
    return float(2 * stats.t.sf(abs(point) / se, n - 1))


def _groups(values: np.ndarray, images: Sequence) -> list[np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    keys = list(images)
    if len(keys) != len(values):
        raise InputError(f"{len(values)} values but {len(keys)} image labels")
    if not np.all(np.isfinite(values)):
        raise InputError("the values hold NaN or infinity; drop or fix those runs first")
    order: dict = {}
    for k in keys:
        order.setdefault(k, len(order))
    idx = np.array([order[k] for k in keys], dtype=np.int64)
    return [values[idx == g] for g in range(len(order))]


def image_means(values: np.ndarray, images: Sequence) -> np.ndarray:
    """Each image's mean over its ROIs, in the order images first appear."""
    return np.array([g.mean() for g in _groups(values, images)])


def nested_bootstrap(
    values: np.ndarray,
    images: Sequence,
    level: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
    expanded: bool = True,
    rois: bool = True,
) -> Interval:
    """The mean over images of the per-image means of ``values`` (one per unit; ``images`` labels each
    unit's image) and its nested-bootstrap interval at ``level``. With one image there is no interval
    (NaN bounds). ``expanded``: Hesterberg's small-sample expansion (module doc)."""
    groups = _groups(values, images)
    n = len(groups)
    n_units = int(sum(len(g) for g in groups))
    if n == 0:
        raise InputError("no values to summarise")
    point = float(np.mean([g.mean() for g in groups]))
    if n < 2:
        return Interval(point, float("nan"), float("nan"), n, n_units, level)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, n, size=(resamples, n))  # images drawn for each resample
    draws = np.empty((resamples, n))
    for g, vals in enumerate(groups):  # ROIs redrawn inside every drawn copy of image g
        where = np.nonzero(pick == g)
        k = len(where[0])
        if k == 0:
            continue
        m = len(vals)
        if rois and m > 1:
            draws[where] = vals[rng.integers(0, m, size=(k, m))].mean(axis=1)
        else:
            draws[where] = vals.mean()
    boot = draws.mean(axis=1)
    alpha = 1.0 - level
    a = expanded_alpha(alpha, n) if expanded else alpha
    low, high = np.quantile(boot, [a / 2, 1 - a / 2])
    return Interval(point, float(low), float(high), n, n_units, level, bootstrap_p(point, boot, n, expanded))


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    images: Sequence,
    level: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
    expanded: bool = True,
) -> Interval:
    """``a - b`` over the units both share (``a[k]``, ``b[k]`` and ``images[k]`` of one unit), bootstrapped
    nested by image (see :func:`nested_bootstrap`)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"paired values must match unit by unit: {a.shape} vs {b.shape}")
    return nested_bootstrap(a - b, images, level=level, resamples=resamples, seed=seed, expanded=expanded)


def contrast_of_differences(
    d1: np.ndarray,
    images1: Sequence,
    d2: np.ndarray,
    images2: Sequence,
    level: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
    pair_images: bool | None = None,
) -> Interval:
    """The difference of two paired differences (e.g. attention's effect on SR minus on DN), each a
    per-unit array with its image labels. When both are over the same images (``pair_images``, by
    default when the image labels agree as sets) the images are resampled jointly; else independently."""
    g1, g2 = _groups(d1, images1), _groups(d2, images2)
    keys1, keys2 = list(dict.fromkeys(images1)), list(dict.fromkeys(images2))
    joint = (set(keys1) == set(keys2)) if pair_images is None else pair_images
    point = float(np.mean([g.mean() for g in g1]) - np.mean([g.mean() for g in g2]))
    n1, n2 = len(g1), len(g2)
    units = int(sum(map(len, g1)) + sum(map(len, g2)))
    if min(n1, n2) < 2:
        return Interval(point, float("nan"), float("nan"), min(n1, n2), units, level)
    rng = np.random.default_rng(seed)

    def resample(groups, pick):
        out = np.empty(pick.shape)
        for g, vals in enumerate(groups):
            where = np.nonzero(pick == g)
            if len(where[0]):
                m = len(vals)
                out[where] = vals[rng.integers(0, m, size=(len(where[0]), m))].mean(axis=1)
        return out.mean(axis=1)

    pick1 = rng.integers(0, n1, size=(resamples, n1))
    if joint:
        pos2 = {k: i for i, k in enumerate(keys2)}
        pick2 = np.vectorize(lambda i: pos2[keys1[i]])(pick1)
    else:
        pick2 = rng.integers(0, n2, size=(resamples, n2))
    boot = resample(g1, pick1) - resample(g2, pick2)
    a = expanded_alpha(1.0 - level, min(n1, n2))
    low, high = np.quantile(boot, [a / 2, 1 - a / 2])
    return Interval(point, float(low), float(high), min(n1, n2), units, level, bootstrap_p(point, boot, min(n1, n2)))
