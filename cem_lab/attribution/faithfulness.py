"""Faithfulness of a block map: deletion / insertion curves, rank correlation, sign test.

Model-agnostic: the intervention is the caller's ``metric_after(blocks) -> float``, the ROI
metric (higher is better, e.g. PSNR) after the flat block indices ``blocks`` (a 1-d int array,
possibly empty) are replaced. With cem_lab's own interventions (LV, zeros, mean, blur, noise),
:func:`cem_lab.attribution.replace_blocks_metric` builds one; any other works too.

A *map* is a (rows, cols) or flat block array: an :class:`~cem_lab.attribution.AttributionMap`'s
``block_abs`` / ``block_signed``, or a CE map's ``effect``. A *ranking* is a 1-d array of distinct
flat block indices, most important first (:func:`rank_blocks`).

- Deletion: replace the first k ranked blocks, k = 0..n; a faithful ranking makes the metric drop
  fast (low area under the curve).
- Insertion: replace every ranked block except the first k (the original content is put back in
  ranking order); a faithful ranking makes the metric rise fast (high area).
  Blocks left out of the ranking (the ROI's own blocks, NaN blocks) keep their content in both.
- Area: trapezoid rule over the replaced fraction k / n in [0, 1]; with equally spaced points this
  is the sum of the trapezoids divided by the number of steps, in metric units.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cem_lab.attribution.base import AttributionError, _exclude_mask, _flat

MetricAfter = Callable[[np.ndarray], float]


def _check_ranking(ranking) -> np.ndarray:
    r = np.asarray(ranking)
    if r.ndim != 1 or r.size == 0 or not np.issubdtype(r.dtype, np.integer):
        raise AttributionError(f"a ranking must be a non-empty 1-d array of flat block indices, got {r!r:.80}")
    if np.unique(r).size != r.size or r.min() < 0:
        raise AttributionError("a ranking must list distinct, non-negative block indices")
    return r.astype(np.int64)


@dataclass
class Curve:
    """``values[i]`` = ROI metric with ``counts[i]`` ranked blocks deleted (or inserted)."""

    kind: str
    fractions: np.ndarray
    counts: np.ndarray
    values: np.ndarray
    auc: float


def curve_auc(fractions: np.ndarray, values: np.ndarray) -> float:
    """Area under a curve over the fraction [0, 1], trapezoid rule."""
    f, v = np.asarray(fractions, dtype=np.float64), np.asarray(values, dtype=np.float64)
    return float(np.sum((v[1:] + v[:-1]) * np.diff(f)) / 2.0)


def _counts(n: int, steps: int | None) -> np.ndarray:
    if steps is None:
        return np.arange(n + 1)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AttributionError(f"steps must be a positive integer or None (every block), got {steps!r}")
    return np.unique(np.round(np.linspace(0, n, min(steps, n) + 1)).astype(int))


def _curve(kind: str, ranking, metric_after: MetricAfter, steps: int | None) -> Curve:
    r = _check_ranking(ranking)
    n = r.size
    counts = _counts(n, steps)
    values = np.empty(len(counts))
    for i, k in enumerate(counts):
        blocks = r[:k] if kind == "deletion" else r[k:]
        values[i] = float(metric_after(blocks.copy()))
    fractions = counts / n
    return Curve(kind, fractions, counts, values, curve_auc(fractions, values))


def deletion_curve(ranking, metric_after: MetricAfter, *, steps: int | None = None) -> Curve:
    """Metric after replacing the first k ranked blocks, k from 0 to all (``steps + 1`` points, or
    every k when ``steps`` is None)."""
    return _curve("deletion", ranking, metric_after, steps)


def insertion_curve(ranking, metric_after: MetricAfter, *, steps: int | None = None) -> Curve:
    """Metric with every ranked block replaced except the first k, k from 0 to all."""
    return _curve("insertion", ranking, metric_after, steps)


@dataclass
class RankCorrelation:
    """Spearman's ``rho``, its ``pvalue`` and the number ``n`` of blocks correlated."""

    rho: float
    pvalue: float
    n: int


def rank_correlation(map_a, map_b, *, exclude=None, absolute: bool = False, support: bool = False) -> RankCorrelation:
    """Spearman's rank correlation of two block maps of the same grid (scipy.stats.spearmanr).

    ``absolute``: correlate ``|a|`` and ``|b|`` (e.g. a LAM magnitude against a signed CE map).
    Blocks excluded or NaN in either map are left out. ``support``: only the blocks that at least
    one map marks (non-zero): for a local model most blocks are 0 in every map, and their ties
    would make any two maps look alike. A constant map gives NaN.
    """
    from scipy import stats  # lazy: scipy.stats costs about 0.7 s at start-up

    a, b = _flat(map_a), _flat(map_b)
    if a.size != b.size:
        raise AttributionError(f"the maps have {a.size} and {b.size} blocks; they must share one block grid")
    if absolute:
        a, b = np.abs(a), np.abs(b)
    keep = np.isfinite(a) & np.isfinite(b) & ~_exclude_mask(exclude, a.size)
    if support:
        keep &= (a != 0) | (b != 0)
    if keep.sum() < 2:
        raise AttributionError("fewer than two blocks left to correlate")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.spearmanr(a[keep], b[keep])
    return RankCorrelation(float(res.statistic), float(res.pvalue), int(keep.sum()))


@dataclass
class SignTest:
    """The blocks a map marks negative, replaced one at a time.

    ``deltas[i]`` = metric after replacing ``blocks[i]`` minus ``base``; ``raised`` = deltas > tol;
    ``share`` = raised.mean(); ``pvalue``: one-sided binomial test of ``k`` raised out of ``n``
    against chance (p = 0.5): small when the map's negative sign is confirmed by interventions.
    """

    blocks: np.ndarray
    deltas: np.ndarray
    raised: np.ndarray
    base: float
    n: int
    k: int
    share: float
    pvalue: float


def sign_test(
    block_map, metric_after: MetricAfter, *, exclude=None, base: float | None = None, tol: float = 0.0
) -> SignTest:
    """For every block with a negative value (finite, not excluded), does replacing it raise the ROI
    metric (by more than ``tol``)? ``base``: the metric with nothing replaced (default:
    ``metric_after([])``). With no negative block, ``n = 0`` and ``share`` / ``pvalue`` are NaN."""
    from scipy import stats  # lazy: scipy.stats costs about 0.7 s at start-up

    v = _flat(block_map)
    neg = np.flatnonzero(np.isfinite(v) & (v < 0) & ~_exclude_mask(exclude, v.size))
    if base is None:
        base = float(metric_after(np.zeros(0, dtype=np.int64)))
    deltas = np.array([float(metric_after(np.array([b], dtype=np.int64))) - base for b in neg])
    raised = deltas > tol
    n, k = int(neg.size), int(raised.sum())
    if n == 0:
        return SignTest(neg, deltas, raised, float(base), 0, 0, float("nan"), float("nan"))
    p = float(stats.binomtest(k, n, 0.5, alternative="greater").pvalue)
    return SignTest(neg, deltas, raised, float(base), n, k, k / n, p)
