"""The parts the three findings share: labels, the study networks (cem_lab's zoo or the authors'), per-model
intervals, the zoo's held-out records, table cells, markdown tables and CSV files
(:mod:`cem_lab.analysis.finding_reports` writes the findings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cem_lab.analysis.runs import SOURCE_AUTHORS, SOURCE_ZOO, STUDY_SOURCES, _zoo_entry
from cem_lab.analysis.study_stats import nested_bootstrap, paired_difference, pictures
from cem_lab.errors import CemLabError
from cem_lab.io import atomic_path
from cem_lab.standard_images import IMAGE_POOLS

LABELS = {
    "share_positive": "positive share",
    "share_negative": "negative share",
    "total_positive_effect": "sum of positive CE (dB)",
    "total_negative_effect": "sum of negative CE (dB)",
    "reach_max_px": "effective distance (px)",
    "ce_mean_distance_px": "CE-weighted mean distance (px)",
    "near_mass_share": "CE mass share within 32 px",
    "baseline_metric": "ROI PSNR (dB)",
}


class FindingError(CemLabError, ValueError):
    """The runs do not hold the study the finding needs (names what is missing)."""


#: the study networks' sources, as the reports name them
SOURCE_NAMES = {SOURCE_ZOO: "cem_lab's zoo", SOURCE_AUTHORS: "the authors' zoo (the paper's own networks)"}
#: what the held-out PSNR of a finding is (the zoo's ``heldout:`` record, cem_lab.training.heldout)
HELDOUT_RECORD = f"the zoo's record on the {len(IMAGE_POOLS['heldout'])} whole held-out pictures no zoo model saw"
#: the one sentence a finding says when its networks are the authors': cem_lab holds no held-out record of them
NO_HELDOUT = (
    f"The authors' networks have no held-out record in cem_lab (that record is {HELDOUT_RECORD}), so their "
    "held-out PSNR cells are NaN."
)


def study_networks(df: pd.DataFrame, finding: str) -> tuple[pd.DataFrame, str]:
    """The rows of ``df`` whose networks carry the study columns (``source`` cem_lab's zoo or the authors'), and
    that source; runs of both zoos at once are refused (their training differs: report each apart)."""
    sub = df[df["source"].isin(STUDY_SOURCES)]
    sources = list(dict.fromkeys(sub["source"]))
    if len(sources) > 1:
        raise FindingError(
            f"{finding}: the runs hold study networks of both {SOURCE_NAMES[SOURCE_ZOO]} and "
            f"{SOURCE_NAMES[SOURCE_AUTHORS]}; they were trained apart: report each one's runs on its own"
        )
    return sub, (sources[0] if sources else SOURCE_ZOO)


# ----------------------------------------------------------------------------- helpers
def _num(v: float, digits: int = 3) -> str:
    """``v`` to ``digits`` significant digits; rounding noise of sums (1e-16) is the 0 it stands for."""
    return f"{0.0 if abs(v) < 1e-12 else v:.{digits}g}"


def interval_text(mean: float, low: float, high: float, digits: int = 3) -> str:
    """``mean [low, high]`` to ``digits`` significant digits (``mean [n/a]`` without an interval)."""
    if not np.isfinite(low):
        return f"{_num(mean, digits)} [n/a]"
    return f"{_num(mean, digits)} [{_num(low, digits)}, {_num(high, digits)}]"


def markdown_table(df: pd.DataFrame) -> str:
    """``df`` as a markdown table (``(none)`` when it has no rows)."""
    if len(df) == 0:
        return "(none)\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def per_model_intervals(df: pd.DataFrame, models: list[str], metrics: list[str], resamples: int = 4000) -> pd.DataFrame:
    """Per model of ``models``: its number of units and, per metric, the mean with its nested-bootstrap
    interval over images (columns ``<metric>_mean``, ``_low``, ``_high``)."""
    rows = []
    for model in models:
        sub = df[df["model"] == model]
        row: dict[str, Any] = {"model": model, "n_units": len(sub)}
        for m in metrics:
            iv = nested_bootstrap(sub[m].to_numpy(float), pictures(sub), resamples=resamples)
            row.update({f"{m}_mean": iv.mean, f"{m}_low": iv.low, f"{m}_high": iv.high})
        rows.append(row)
    return pd.DataFrame(rows)


def _heldout_record(model: str, task: str) -> dict:
    """The zoo's held-out record of ``model`` on ``task`` (sr / dn / dr); {} when it has none."""
    entry = _zoo_entry(model) or {}
    for key, rec in (((entry.get("heldout") or {}).get("tasks")) or {}).items():
        if str(key).split("_")[0] == task:
            return rec
    return {}


def heldout(model: str, task: str) -> dict[str, float]:
    """The held-out psnr, baseline_psnr and gain of ``model`` on ``task`` (NaN without a record)."""
    rec = _heldout_record(model, task)
    return {k: float(rec.get(k, np.nan)) for k in ("psnr", "baseline_psnr", "gain")}


def _heldout_images(model: str, task: str) -> dict[str, float]:
    """The zoo's held-out PSNR of ``model`` on ``task`` per photograph (image -> dB)."""
    return {str(r["image"]): float(r["psnr"]) for r in _heldout_record(model, task).get("per_image") or []}


def heldout_gap(a: str, b: str, task: str):
    """b - a of the held-out PSNR, paired by photograph, with its bootstrap interval (None without records)."""
    pa, pb = _heldout_images(a, task), _heldout_images(b, task)
    shared = [k for k in pa if k in pb]
    if len(shared) < 2:
        return None
    return paired_difference(np.array([pb[k] for k in shared]), np.array([pa[k] for k in shared]), shared)


def write_csv(table: pd.DataFrame, path: Path) -> str:
    """Write ``table`` to ``path`` atomically (no index); return the path."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return str(path)


def units_line(df: pd.DataFrame) -> str:
    """One sentence: how many units (image x ROI) and pictures the table holds, and how its intervals are made."""
    images = sorted(set(df["image"].astype(str)))
    pics = sorted(set(pictures(df)))
    units = df["image"].astype(str) + " " + df["roi"].astype(str)
    if len(pics) == len(images):
        return (
            f"{units.nunique()} units ({len(images)} images x ROIs: {', '.join(images)}); intervals: 95 %, nested "
            "bootstrap over images with ROIs resampled inside each (expanded percentiles for few images)"
        )
    return (
        f"{units.nunique()} units ({len(pics)} pictures: {', '.join(pics)}; {len(images)} crops of them x ROIs); "
        "intervals: 95 %, nested bootstrap over pictures with their crops x ROIs resampled inside each (crops of "
        "one picture are not independent; expanded percentiles for few pictures)"
    )


def pair_cells(t: pd.DataFrame, metric: str) -> pd.Series:
    """The ``mean``, ``low``, ``high``, ``excl`` (interval excludes 0) and ``p`` of ``metric`` in a paired table."""
    row = t[t["metric"] == metric].iloc[0]
    return pd.Series(
        {
            "mean": row["mean"],
            "low": row["low"],
            "high": row["high"],
            "excl": bool(row["excludes_zero"]),
            "p": row.get("p", float("nan")),
        }
    )
