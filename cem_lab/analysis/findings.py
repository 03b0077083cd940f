"""The statistics behind the paper's three findings, over a population of units (image x ROI).

Everything here reads a run table (:func:`cem_lab.analysis.runs.collect_runs`) and the run folders; it
never recomputes a map. The intervals are the nested bootstrap of :mod:`cem_lab.analysis.study_stats`
(images resampled, ROIs inside each drawn image), with the same draws for every model of a study, so
that statistics *across* models (a rank correlation, a contrast) keep the pairing of the units.

- :func:`unit_matrix`: one metric as a models x units matrix, over the units every model has.
- :func:`rank_trend`: Spearman's rank correlation between a model attribute (depth, width, parameters)
  or a second metric and a metric's per-model mean, with its interval.
- :func:`paired_table`: paired differences (b - a) per (a, b) pair of models, per metric.
- :func:`attention_contrast`: per attention variant, its paired difference from the reference variant
  on SR, on DN, and the contrast of the two (SR minus DN).
- :func:`locality`: per run, the measures of *where* the effect is that do not scale with its size:
  the CE-weighted mean distance and the share of the |CE| mass within a radius of the ROI centre.
- :func:`holm` / :func:`significant`: which of the tests a verdict reads reject "no difference" at a
  family-wise error rate of 5 % (Holm's step-down over all of them), and in which direction.
- :func:`verdict`: reproduced / not reproduced / inconclusive from those, with the rule written out.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cem_lab.analysis.study_stats import Interval, contrast_of_differences, expanded_alpha, paired_difference, pictures
from cem_lab.analysis.study_tables import distance_profile
from cem_lab.errors import InputError

__all__ = [
    "LOCALITY_RADIUS_PX",
    "UnitMatrix",
    "attention_contrast",
    "FAMILY_ALPHA",
    "detectable",
    "detectable_text",
    "holm",
    "locality",
    "paired_table",
    "rank_trend",
    "significant",
    "unit_matrix",
    "verdict",
    "with_locality",
]

#: the radius (output px from the ROI centre) of the "near" CE mass: the ROI's half side (16) plus two blocks
LOCALITY_RADIUS_PX = 32.0


def locality(folder: Path, radius_px: float = LOCALITY_RADIUS_PX, bin_px: float = 8.0) -> dict[str, float]:
    """Where the effect of one run is, independent of its size: ``ce_mean_distance_px`` (|CE|-weighted mean
    distance of the blocks outside the ROI from its centre) and ``near_mass_share`` (the share of the |CE|
    mass within ``radius_px``; NaN when the map has no effect at all)."""
    prof = distance_profile(Path(folder), bin_px)
    near = prof["edges"][1:] <= radius_px + 1e-9
    total = float(prof["mass_share"].sum())
    return {
        "ce_mean_distance_px": prof["mean_distance"],
        "near_mass_share": float(prof["mass_share"][near].sum()) if total > 0 else float("nan"),
    }


def with_locality(runs: pd.DataFrame, radius_px: float = LOCALITY_RADIUS_PX) -> pd.DataFrame:
    """``runs`` with the :func:`locality` columns and ``unit_key`` (image + ROI)."""
    df = runs.copy()
    loc = [locality(Path(f), radius_px) for f in df["folder"]]
    for k in ("ce_mean_distance_px", "near_mass_share"):
        df[k] = [d[k] for d in loc]
    df["unit_key"] = df["image"].astype(str) + " roi " + df["roi"].astype(str)
    return df


@dataclass
class UnitMatrix:
    """One measure of every model on the units all of them share (models x units), and the units left out."""

    values: np.ndarray  #: models x units
    models: list[str]
    units: list[str]
    images: list[str]  #: the picture each unit comes from: its resampling cluster (:func:`pictures`)
    dropped: list[str]  #: units left out: some model lacks them


def unit_matrix(
    df: pd.DataFrame, metric: str, models: Sequence[str] | None = None, condition: str = "model"
) -> UnitMatrix:
    """``metric`` of each model (rows) on each unit (columns), over the units every model has."""
    if "unit_key" not in df.columns:
        df = df.assign(unit_key=df["image"].astype(str) + " roi " + df["roi"].astype(str))
    models = list(dict.fromkeys(df[condition])) if models is None else list(models)
    sub = df[df[condition].isin(models)]
    dup = sub[sub.duplicated([condition, "unit_key"], keep=False)]
    if len(dup):
        raise InputError(
            f"{dup[condition].iloc[0]} has {len(dup)} runs of one unit ({dup['unit_key'].iloc[0]}): "
            "one run per model and unit"
        )
    table = sub.pivot(index=condition, columns="unit_key", values=metric)
    missing = [m for m in models if m not in table.index]
    if missing:
        raise InputError(f"no finished run of {', '.join(missing)} for {metric}")
    table = table.loc[models]
    complete = table.notna().all(axis=0)
    units = [u for u in table.columns if complete[u]]
    dropped = [u for u in table.columns if not complete[u]]
    image_of = dict(zip(sub["unit_key"], pictures(sub)))
    return UnitMatrix(table[units].to_numpy(float), models, units, [image_of[u] for u in units], dropped)


def _unit_weights(images: Sequence[str], resamples: int, seed: int) -> np.ndarray:
    """Nested-bootstrap weights (resamples x units): images drawn with replacement, ROIs within each drawn
    image; every weight row sums to 1 over the images (each drawn image weighs the same). The same
    images, resamples and seed give the same (read-only) weights, drawn once."""
    return _unit_weights_cached(tuple(str(i) for i in images), int(resamples), int(seed))


@functools.lru_cache(maxsize=32)
def _unit_weights_cached(images: tuple[str, ...], resamples: int, seed: int) -> np.ndarray:
    keys = list(dict.fromkeys(images))
    groups = [np.nonzero(np.asarray(images) == k)[0] for k in keys]
    rng = np.random.default_rng(seed)
    n = len(keys)
    w = np.zeros((resamples, len(images)))
    picks = rng.integers(0, n, size=(resamples, n))
    for r in range(resamples):
        for g in picks[r]:
            idx = groups[g]
            draw = idx[rng.integers(0, len(idx), size=len(idx))] if len(idx) > 1 else idx
            np.add.at(w[r], draw, 1.0 / (n * len(idx)))
    w.flags.writeable = False
    return w


def _image_weighted_mean(values: np.ndarray, images: Sequence[str]) -> np.ndarray:
    """Per row: the mean over images of the per-image mean over ROIs."""
    keys = list(dict.fromkeys(images))
    img = np.asarray(images)
    return np.mean([values[:, img == k].mean(axis=1) for k in keys], axis=0)


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho between the vector ``x`` (models) and each row of ``y`` (resamples x models)."""
    y = np.atleast_2d(y)
    return _spearman_paired_rows(np.broadcast_to(x, y.shape), y)


def _spearman_paired_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho between row ``r`` of ``x`` and row ``r`` of ``y`` (both resamples x models); an
    all-tied row of ``x`` gives 0, an all-tied row of ``y`` NaN (dropped from the bootstrap)."""
    from scipy.stats import rankdata  # lazy: scipy.stats costs about 0.7 s at start-up

    def centred(a):
        c = rankdata(a, axis=1)
        c = c - c.mean(axis=1, keepdims=True)
        return c, np.linalg.norm(c, axis=1)

    cx, nx = centred(x)
    cy, ny = centred(y)
    nx[nx == 0] = 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("ij,ij->i", cx, cy) / (nx * ny)


def rank_trend(
    df: pd.DataFrame,
    metric: str,
    attribute: Mapping[str, float] | str,
    models: Sequence[str] | None = None,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Spearman's rho, across models, between ``attribute`` (a model -> value mapping, or a second metric
    whose per-model mean is taken on the same draws) and the per-model mean of ``metric``.

    The interval resamples the units (images, ROIs nested) jointly for all models; with a fixed attribute
    (depth, width) only the metric moves, with a second metric both do. ``n`` is the number of images."""
    m = unit_matrix(df, metric, models)
    w = _unit_weights(m.images, resamples, seed)
    boot_y = w @ m.values.T  # resamples x models
    point_y = _image_weighted_mean(m.values, m.images)
    if isinstance(attribute, str):
        a = unit_matrix(df, attribute, m.models)
        if a.units != m.units:
            keep = [m.units.index(u) for u in a.units if u in m.units]
            raise InputError(f"{metric} and {attribute} are not over the same units ({len(keep)} shared)")
        boot_x = w @ a.values.T
        point_x = _image_weighted_mean(a.values, a.images)
        rho = _spearman_rows(point_x, point_y[None, :])[0]
        boots = _spearman_paired_rows(boot_x, boot_y)
    else:
        x = np.array([float(attribute[k]) for k in m.models])
        rho = _spearman_rows(x, point_y[None, :])[0]
        boots = _spearman_rows(x, boot_y)
    n = len(set(m.images))
    boots = boots[np.isfinite(boots)]
    if n < 2 or len(boots) == 0:
        return Interval(float(rho), float("nan"), float("nan"), n, len(m.units), level)
    a_ = expanded_alpha(1 - level, n)
    lo, hi = np.quantile(boots, [a_ / 2, 1 - a_ / 2])
    return Interval(float(rho), float(lo), float(hi), n, len(m.units), level)


def paired_table(
    df: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    metrics: Sequence[str],
    level: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
    condition: str = "model",
    labels: Mapping[tuple[str, str], Mapping[str, str]] | None = None,
) -> pd.DataFrame:
    """Per (a, b) pair and metric: the paired difference b - a over the units both have, with its interval
    (columns a, b, metric, mean, low, high, n_images, n_units, excludes_zero, and ``labels``' columns)."""
    rows = []
    for a, b in pairs:
        for metric in metrics:
            m = unit_matrix(df, metric, [a, b], condition)
            iv = paired_difference(m.values[1], m.values[0], m.images, level=level, resamples=resamples, seed=seed)
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "metric": metric,
                    **iv.as_dict(),
                    "excludes_zero": iv.excludes_zero,
                    **((labels or {}).get((a, b), {})),
                }
            )
    return pd.DataFrame(rows)


def attention_contrast(
    sr: pd.DataFrame,
    dn: pd.DataFrame,
    variant_of: Mapping[str, str],
    reference: str,
    metrics: Sequence[str],
    level: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per attention variant (``variant_of``: model -> variant) and metric: the paired difference variant -
    ``reference`` on SR and on DN (each over its units), and their contrast SR minus DN with its interval
    (images resampled jointly when both tasks ran on the same images)."""

    def by_variant(df):
        return df.assign(variant=df["model"].map(variant_of))

    sr, dn = by_variant(sr), by_variant(dn)
    rows = []
    variants = [v for v in dict.fromkeys(sr["variant"]) if v != reference and v in set(dn["variant"])]
    for v in variants:
        for metric in metrics:
            ms = unit_matrix(sr, metric, [reference, v], "variant")
            md = unit_matrix(dn, metric, [reference, v], "variant")
            ds, dd = ms.values[1] - ms.values[0], md.values[1] - md.values[0]
            iv_s = paired_difference(ms.values[1], ms.values[0], ms.images, level=level, resamples=resamples, seed=seed)
            iv_d = paired_difference(md.values[1], md.values[0], md.images, level=level, resamples=resamples, seed=seed)
            iv_c = contrast_of_differences(ds, ms.images, dd, md.images, level=level, resamples=resamples, seed=seed)
            rows.append(
                {
                    "variant": v,
                    "reference": reference,
                    "metric": metric,
                    "sr_mean": iv_s.mean,
                    "sr_low": iv_s.low,
                    "sr_high": iv_s.high,
                    "dn_mean": iv_d.mean,
                    "dn_low": iv_d.low,
                    "dn_high": iv_d.high,
                    "contrast_mean": iv_c.mean,
                    "contrast_low": iv_c.low,
                    "contrast_high": iv_c.high,
                    "contrast_excludes_zero": iv_c.excludes_zero,
                    "sr_p": iv_s.p,
                    "dn_p": iv_d.p,
                    "contrast_p": iv_c.p,
                    "n_images": min(iv_s.n_images, iv_d.n_images),
                    "n_units": iv_s.n_units + iv_d.n_units,
                }
            )
    return pd.DataFrame(rows)


#: the family-wise error rate of a study's verdict: the chance that any test it reads rejects a true "no
#: difference" (so the chance of "reproduced" or "not reproduced" where nothing differs) is at most this
FAMILY_ALPHA = 0.05


def holm(p: Sequence[float], alpha: float = FAMILY_ALPHA) -> np.ndarray:
    """Holm's step-down procedure: which of the tests with p-values ``p`` are rejected at family-wise error
    rate ``alpha`` (the smallest p against alpha / m, the next against alpha / (m - 1), ... until one is not
    rejected). A NaN p (no interval: one image) is never rejected and counts in m."""
    p = np.asarray(p, dtype=np.float64)
    m = len(p)
    out = np.zeros(m, dtype=bool)
    order = np.argsort(np.where(np.isnan(p), np.inf, p), kind="stable")
    for rank, i in enumerate(order):
        if not np.isfinite(p[i]) or p[i] > alpha / (m - rank):
            break
        out[i] = True
    return out


def significant(tests: Mapping, alpha: float = FAMILY_ALPHA, correct: bool = True) -> dict:
    """``tests``: key -> (estimate, p). Returns key -> +1 / -1 (rejected, with the estimate's sign) or 0,
    Holm-corrected over all of ``tests`` (``correct=False``: each test alone at ``alpha``)."""
    keys = list(tests)
    p = [float(tests[k][1]) for k in keys]
    rejected = holm(p, alpha) if correct else np.array([np.isfinite(x) and x <= alpha for x in p], dtype=bool)
    return {k: int(np.sign(tests[k][0])) if r else 0 for k, r in zip(keys, rejected)}


def detectable(
    halfwidths: Sequence[float], n_images: int, tests: int, alpha: float = FAMILY_ALPHA
) -> tuple[float, float]:
    """How small a difference a study's population can call: the median half-width of its 95 % intervals
    (``halfwidths``, one per test of a measure), and that half-width at the level of Holm's strictest step
    (alpha / ``tests``), scaled by the ratio of the t quantiles with ``n_images`` - 1 degrees of freedom
    (the intervals' small-sample form). NaN when there is no interval."""
    from scipy import stats  # lazy, as in study_stats

    hw = np.asarray([h for h in halfwidths if np.isfinite(h)], dtype=np.float64)
    if not len(hw) or n_images < 2:
        return float("nan"), float("nan")
    med = float(np.median(hw))
    df = n_images - 1
    ratio = stats.t.ppf(1 - alpha / (2 * max(tests, 1)), df) / stats.t.ppf(1 - alpha / 2, df)
    return med, float(med * ratio)


def detectable_text(
    parts: Sequence[tuple[str, Sequence[float], str]], n_images: int, tests: int, what: str = "this population"
) -> str:
    """One sentence from :func:`detectable` for each (measure, half-widths, unit) of ``parts``."""
    said = []
    for name, hws, unit in parts:
        med, holm_hw = detectable(hws, n_images, tests)
        if np.isfinite(med):
            said.append(f"{name} +/-{med:.3g}{unit} (+/-{holm_hw:.3g}{unit} at Holm's strictest step)")
    if not said:
        return ""
    return (
        f"Smallest difference {what} ({n_images} pictures) can call, as the median half-width of the "
        f"95 % intervals: {'; '.join(said)}."
    )


def verdict(supporting: int, contradicting: int, total: int) -> str:
    """The rule of every study's verdict: *reproduced* when the tests support the claim in at least one
    comparison it predicts and contradict it in none; *not reproduced* when they contradict it in some and
    support it in none; else (no test rejects, or both ways) *inconclusive*. The studies count a test as
    rejecting by :func:`significant` (Holm over every test the verdict reads), so that with no difference
    anywhere either verdict other than *inconclusive* comes at most :data:`FAMILY_ALPHA` of the time
    (``tests/analysis/test_verdict_multiplicity.py`` checks it on populations with no effect)."""
    if total == 0:
        return "inconclusive"
    if supporting and not contradicting:
        return "reproduced"
    if contradicting and not supporting:
        return "not reproduced"
    return "inconclusive"
