"""A study's statistics from its finished run folders: per-condition intervals and paired differences.

A *unit* is one ROI of one image (``image`` + ``roi`` of the run table); a *condition* is what the
study compares, named by the ``by`` columns (default: the model). Within a task, every run of a
condition must share every other setting (estimator, samples, block, intervention, sampler, patch
bank, metric, seed, ...): otherwise pooling would mix settings, and :func:`study_statistics` refuses
with the groups it found (the fix: report them apart, or name the differing key in ``by``).

Per condition and task it reports, with a nested-bootstrap interval over images (ROIs nested,
:mod:`cem_lab.analysis.study_stats`): the shares of positive / negative / zero blocks, the sums of
positive and of negative CE, the effective distance (farthest significant block from the ROI
centre), the CE-weighted mean distance, and the ROI metric before intervention; and the CE mass as a
function of distance (a profile with its band). For every pair of conditions on the same task it
reports the paired difference over the units both have. Units that a condition lacks are listed
(with the unfinished folders, which are never pooled).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cem_lab.analysis.study_stats import nested_bootstrap, paired_difference, pictures
from cem_lab.causal.grid import Roi, block_distances
from cem_lab.errors import CemLabError
from cem_lab.run_format import read_cem_arrays, read_summary

__all__ = [
    "STUDY_METRICS",
    "StudyError",
    "StudyResult",
    "distance_profile",
    "format_number",
    "run_settings",
    "study_markdown",
    "study_statistics",
]

#: (run-table column, label, unit or "") of the per-condition statistics
STUDY_METRICS: tuple[tuple[str, str, str], ...] = (
    ("share_positive", "positive share", ""),
    ("share_negative", "negative share", ""),
    ("share_zero", "zero share", ""),
    ("total_positive_effect", "sum of positive CE", "unit"),
    ("total_negative_effect", "sum of negative CE", "unit"),
    ("reach_max_px", "effective distance", "px"),
    ("ce_mean_distance_px", "CE-weighted mean distance", "px"),
    ("baseline_metric", "ROI metric", "unit"),
)
#: settings that do not change what a map estimates (how it is computed, not what)
_NOT_SETTINGS = {"roi", "forward_batch"}


class StudyError(CemLabError, ValueError):
    """Runs that cannot be pooled into one study as asked."""


@dataclass
class StudyResult:
    """A study's tables: per-condition intervals, paired differences and CE-by-distance profiles."""

    summary: pd.DataFrame  #: task, condition, metric, mean, low, high, n_images, n_units
    paired: pd.DataFrame  #: task, a, b, metric, mean, low, high, n_images, n_units, excludes_zero
    profile: pd.DataFrame  #: task, condition, quantity, bin_low, bin_high, mean, low, high
    missing: list[str] = field(default_factory=list)  #: units a condition lacks, one line each
    by: tuple[str, ...] = ("model",)
    level: float = 0.95
    units: int = 0


# ----------------------------------------------------------------------------- settings
def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = json.dumps(d, sort_keys=True) if isinstance(d, list) else d
    return out


def run_settings(folder: Path) -> dict[str, Any]:
    """The flattened settings of a finished run (``summary.json``'s ``settings``), without the ROI."""
    summary = read_summary(folder, missing_ok=False)
    settings = {k: v for k, v in (summary.get("settings") or {}).items() if k not in _NOT_SETTINGS}
    flat = _flatten(settings)
    flat.pop("task", None)
    return {f"setting:{k}": v for k, v in flat.items()}


# ----------------------------------------------------------------------------- profiles
def distance_profile(folder: Path, bin_px: float) -> dict[str, np.ndarray]:
    """The CE of one run by distance from the ROI centre (output px, block centres), in bins of ``bin_px``:
    ``mass_share`` (share of the run's total |CE| outside the ROI), ``positive`` and ``negative`` (sums),
    ``blocks`` (how many block centres outside the ROI fall in each bin) and ``mean_distance`` (the
    |CE|-weighted mean distance)."""
    z = read_cem_arrays(folder)
    effect, roi_mask = z["effect"].astype(np.float64), z["roi_mask"].astype(bool)
    counts = z["counts"]
    block, (h, w) = int(z["block"]), (int(v) for v in z["output_shape"])
    dist = block_distances(effect.shape, block, (h, w), Roi(*(int(v) for v in z["roi"])))
    keep = ~roi_mask & (counts > 0)
    e, d = effect[keep], dist[keep]
    edges = np.arange(0.0, float(np.hypot(h, w)) + bin_px, bin_px)
    idx = np.clip(np.digitize(d, edges) - 1, 0, len(edges) - 2)
    mag = np.abs(e)
    total = mag.sum()
    nb = len(edges) - 1
    share = np.bincount(idx, weights=mag, minlength=nb) / total if total > 0 else np.zeros(nb)
    return {
        "edges": edges,
        "mass_share": share,
        "positive": np.bincount(idx, weights=np.where(e > 0, e, 0), minlength=nb),
        "negative": np.bincount(idx, weights=np.where(e < 0, e, 0), minlength=nb),
        "blocks": np.bincount(idx, minlength=nb),
        "mean_distance": float((mag * d).sum() / total) if total > 0 else 0.0,
    }


def profile_bin_px(block: float, roi_size: float, bins_per_roi: int = 12) -> float:
    """The bin width of a distance profile: the block size divided by 1 to 4, so that the ROI's size spans
    about ``bins_per_roi`` bins. Most of the CE lies within a block or two of the ROI, and the block centres
    there sit at a few distinct distances: bins of one block left the profile of a 32 px ROI with 8 px
    blocks three bins with any effect; a third of a block separates those distances (>= 6 bins)."""
    k = int(np.clip(np.ceil(bins_per_roi * block / max(float(roi_size), 1.0)), 1, 4))
    return float(block) / k


def _roi_size(roi: Any) -> float:
    """The size of a run table's ROI (``"top left size"`` or a sequence)."""
    values = roi if isinstance(roi, list | tuple | np.ndarray) else str(roi).replace(",", " ").split()
    return float(values[-1])


# ----------------------------------------------------------------------------- the study
def _condition(row: pd.Series, by: Sequence[str]) -> str:
    return ", ".join(f"{k}={row[k]}" for k in by) if len(by) > 1 else str(row[by[0]])


def _prepare(runs: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    df = runs.copy()
    settings = [run_settings(Path(f)) for f in df["folder"]]
    keys = sorted({k for s in settings for k in s})
    for k in keys:
        df[k] = [s.get(k) for s in settings]
        df[k] = df[k].map(lambda v: json.dumps(v, sort_keys=True))
    for b in by:  # a settings key named directly: --by estimator.fine
        if b not in df.columns and f"setting:{b}" in df.columns:
            df[b] = df[f"setting:{b}"].map(json.loads)
    missing = [k for k in by if k not in df.columns]
    if missing:
        raise StudyError(
            f"cannot compare by {', '.join(missing)}: not a column of the run table nor a setting (columns: "
            f"{', '.join(c for c in runs.columns)}; settings: {', '.join(k[8:] for k in keys)})"
        )
    df["unit_key"] = df["image"].astype(str) + " roi " + df["roi"].astype(str)
    df["condition"] = [_condition(r, by) for _, r in df.iterrows()]
    return df


def _check_pooling(df: pd.DataFrame, by: Sequence[str], per_unit: Sequence[str] = ()) -> None:
    """Refuse to pool runs whose settings differ within one condition (any setting that the ``by`` values do
    not fix), and a unit run twice in one condition."""
    setting_cols = [
        c
        for c in df.columns
        if c.startswith("setting:")
        and c.removeprefix("setting:") not in by
        and c.removeprefix("setting:") not in per_unit
    ]
    problems = []
    for task, group in df.groupby("task_label", sort=False):
        within = group.groupby(list(by), sort=False, dropna=False)
        varying = [c for c in setting_cols if (within[c].nunique(dropna=False) > 1).any()]
        if varying:
            lines = []
            for values, sub in group.groupby([*by, *varying], sort=False, dropna=False):
                values = values if isinstance(values, tuple) else (values,)
                label = ", ".join(
                    f"{c.removeprefix('setting:')}={json.loads(v) if c.startswith('setting:') else v}"
                    for c, v in zip([*by, *varying], values)
                )
                lines.append(f"    {label}: {len(sub)} run(s), e.g. {sub['folder'].iloc[0]}")
            names = ", ".join(c.removeprefix("setting:") for c in varying)
            problems.append(f"  task {task}: runs of one condition differ in {names}:\n" + "\n".join(lines))
            continue
        dup = group[group.duplicated(["condition", "unit_key"], keep=False)]
        if len(dup):
            first = dup.iloc[0]
            problems.append(
                f"  task {task}: {first['condition']} has {int((dup['unit_key'] == first['unit_key']).sum())} runs "
                f"of {first['unit_key']} with the same settings (two models of one name? name them apart with "
                "model.name=...): " + ", ".join(dup["folder"].head(4))
            )
    if problems:
        extra = [
            c.removeprefix("setting:")
            for c in setting_cols
            if (df.groupby(["task_label", *by], dropna=False)[c].nunique(dropna=False) > 1).any()
        ]
        hint = ",".join([*by, *extra[:1]])
        raise StudyError(
            "not pooled: these runs are not one study\n"
            + "\n".join(problems)
            + f"\nreport each setting's runs apart, or compare the settings as conditions with --by {hint}"
        )


def _why_missing(group: pd.DataFrame, condition: str, unit: str) -> str:
    """Why ``condition`` has no run of ``unit``: its run of the same placed ROI (same image, placement index
    and count) sits elsewhere because the placement's inputs differ (e.g. the candidates' grid followed
    ``cem.block``), or it has no finished run of it at all."""
    generic = "no finished run; see the skipped folders"
    if "roi_placement" not in group.columns:
        return generic
    there = group[group["unit_key"] == unit]
    placed = there["roi_placement"].dropna()
    if placed.empty:
        return generic
    theirs = json.loads(placed.iloc[0])
    image = there["image"].iloc[0]
    mine = group[(group["condition"] == condition) & (group["image"] == image)].dropna(subset=["roi_placement"])
    for _, run in mine.iterrows():
        ours = json.loads(run["roi_placement"])
        if (ours["index"], ours["count"]) != (theirs["index"], theirs["count"]):
            continue
        differ = {
            k: (ours.get(k), theirs.get(k)) for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)
        }
        inputs = ", ".join(f"{k} {a} here, {b} there" for k, (a, b) in differ.items())
        return (
            f"its placed ROI {ours['index'] + 1} of {ours['count']} on {image} is at {run['roi']}, not {unit.split(' roi ')[-1]}: "
            f"the placement's inputs differ ({inputs}); give every condition the same roi_place settings "
            "(roi_place.align=N rather than block) to pair them"
        )
    return generic


def study_statistics(
    runs: pd.DataFrame,
    by: Sequence[str] = ("model",),
    level: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
    reference: str | None = None,
    max_pairs: int = 28,
    per_unit: Sequence[str] = (),
) -> StudyResult:
    """The statistics of the study in the run table ``runs`` (:func:`cem_lab.analysis.runs.collect_runs`).

    ``reference``: pair every condition with this one only (default: every pair, when there are at
    most ``max_pairs``; else each with the first condition). ``per_unit``: settings keys that change with
    the unit by design and may differ inside a condition (``intervention.bank`` for patches drawn from
    each image itself)."""
    by = tuple(by)
    if len(runs) == 0:
        raise StudyError("no runs to summarise")
    df = _prepare(runs, by)
    _check_pooling(df, by, per_unit)
    if reference is not None and reference not in set(df["condition"]):
        raise StudyError(
            f"--reference {reference!r} is not a condition of these runs; they are: "
            f"{', '.join(dict.fromkeys(df['condition']))}"
        )
    bin_px = {  # per task: its blocks and ROIs
        task: profile_bin_px(float(g["block"].astype(float).max()), min(_roi_size(r) for r in g["roi"]))
        for task, g in df.groupby("task_label", sort=False)
    }
    profiles = {f: distance_profile(Path(f), bin_px[t]) for f, t in zip(df["folder"], df["task_label"])}
    df["ce_mean_distance_px"] = [profiles[f]["mean_distance"] for f in df["folder"]]
    summary_rows, pair_rows, profile_rows, missing = [], [], [], []
    for task, group in df.groupby("task_label", sort=False):
        unit_image = dict(zip(group["unit_key"], pictures(group)))
        all_units = list(dict.fromkeys(group["unit_key"]))
        conditions = list(dict.fromkeys(group["condition"]))
        per = {c: group[group["condition"] == c].set_index("unit_key") for c in conditions}
        for c in conditions:
            lacking = [u for u in all_units if u not in per[c].index]
            for u in lacking:
                missing.append(f"{task}: {c} lacks {u} ({_why_missing(group, c, u)})")
            sub = per[c]
            for col, label, unit in STUDY_METRICS:
                iv = nested_bootstrap(
                    sub[col].to_numpy(float),
                    pictures(sub),
                    level=level,
                    resamples=resamples,
                    seed=seed,
                )
                summary_rows.append(
                    {
                        "task": task,
                        "condition": c,
                        "metric": col,
                        "label": label,
                        "unit": sub["unit"].iloc[0] if unit == "unit" else unit,
                        **iv.as_dict(),
                        "missing_units": len(lacking),
                    }
                )
            # the distance profile, each bin with its band
            # runs of images of other sizes reach other distances: every profile on the longest run's bins
            edges = max((profiles[f]["edges"] for f in sub["folder"]), key=len)
            stack = {
                q: np.vstack([_pad(profiles[f][q], len(edges) - 1) for f in sub["folder"]])
                for q in ("mass_share", "positive", "negative")
            }
            # bins that hold no block centre outside the ROI (inside the ROI; gaps of the block grid) say nothing
            held = np.any(np.vstack([_pad(profiles[f]["blocks"], len(edges) - 1) for f in sub["folder"]]) > 0, axis=0)
            images = pictures(sub)
            for q, mat in stack.items():
                width = mat.shape[1]
                last = int(np.max(np.nonzero(np.any(mat != 0, axis=0))[0], initial=0)) + 1
                # a map without effect still has its first bin of blocks (a profile of zeros, not no profile)
                last = max(last, int(np.argmax(held)) + 1 if held.any() else 0)
                for b in range(min(width, max(last, 1))):
                    if not held[b]:
                        continue
                    iv = nested_bootstrap(mat[:, b], images, level=level, resamples=min(resamples, 2000), seed=seed)
                    profile_rows.append(
                        {
                            "task": task,
                            "condition": c,
                            "quantity": q,
                            "bin_low": edges[b],
                            "bin_high": edges[b + 1],
                            **iv.as_dict(),
                        }
                    )
        if reference is not None:
            pairs = [(reference, c) for c in conditions if c != reference] if reference in conditions else []
        elif len(conditions) * (len(conditions) - 1) // 2 <= max_pairs:
            pairs = list(combinations(conditions, 2))
        else:
            pairs = [(conditions[0], c) for c in conditions[1:]]
        for a, b in pairs:
            shared = [u for u in all_units if u in per[a].index and u in per[b].index]
            if not shared:
                continue
            images = [unit_image[u] for u in shared]
            for col, label, _ in STUDY_METRICS:
                iv = paired_difference(
                    per[b].loc[shared, col].to_numpy(float),
                    per[a].loc[shared, col].to_numpy(float),
                    images,
                    level=level,
                    resamples=resamples,
                    seed=seed,
                )
                pair_rows.append(
                    {
                        "task": task,
                        "a": a,
                        "b": b,
                        "metric": col,
                        "label": label,
                        **iv.as_dict(),
                        "excludes_zero": iv.excludes_zero,
                    }
                )
    return StudyResult(
        pd.DataFrame(summary_rows),
        pd.DataFrame(pair_rows),
        pd.DataFrame(profile_rows),
        missing,
        by,
        level,
        int(df["unit_key"].nunique()),
    )


def _pad(v: np.ndarray, n: int) -> np.ndarray:
    return v[:n] if len(v) >= n else np.concatenate([v, np.zeros(n - len(v))])


# ----------------------------------------------------------------------------- markdown
def format_number(v: float) -> str:
    """A statistic as the study's tables write it: 3 decimals, 1 from 100 on, ``n/a`` when not finite."""
    if not np.isfinite(v):
        return "n/a"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def _iv(row: pd.Series) -> str:
    if not np.isfinite(row["low"]):
        return f"{format_number(row['mean'])} [n/a]"
    return f"{format_number(row['mean'])} [{format_number(row['low'])}, {format_number(row['high'])}]"


def study_markdown(result: StudyResult) -> str:
    """The study's tables: per condition (mean [interval]) and paired differences (b - a)."""
    pct = f"{result.level:.0%}"
    out = [
        f"Study statistics: mean over images [{pct} nested-bootstrap interval, images resampled and ROIs "
        f"within them; expanded for few images]. Conditions by {', '.join(result.by)}; {result.units} unit(s) "
        "(image x ROI).\n"
    ]
    s = result.summary
    metrics = [m for m in STUDY_METRICS if m[0] in set(s["metric"])]
    for task, group in s.groupby("task", sort=False):
        out.append(f"### {task}\n")
        header = ["condition", "images", "units", *[m[1] for m in metrics]]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for c, sub in group.groupby("condition", sort=False):
            sub = sub.set_index("metric")
            first = sub.iloc[0]
            cells = [str(c), str(int(first["n_images"])), str(int(first["n_units"]))]
            cells += [_iv(sub.loc[m[0]]) for m in metrics]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        p = result.paired[result.paired["task"] == task] if len(result.paired) else result.paired
        if len(p):
            out.append(f"Paired differences ({task}; b minus a over the units both have; * = interval excludes 0):\n")
            header = ["b", "a", "images", "units", *[m[1] for m in metrics]]
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "---|" * len(header))
            for (a, b), sub in p.groupby(["a", "b"], sort=False):
                sub = sub.set_index("metric")
                first = sub.iloc[0]
                cells = [str(b), str(a), str(int(first["n_images"])), str(int(first["n_units"]))]
                cells += [_iv(sub.loc[m[0]]) + ("*" if sub.loc[m[0], "excludes_zero"] else "") for m in metrics]
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
    if result.missing:
        out.append("Missing units (not pooled):\n")
        out += [f"- {m}" for m in result.missing]
        out.append("")
    return "\n".join(out)
