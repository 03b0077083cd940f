"""Figures of a population study, drawn from its statistics tables (cem_lab.analysis.study_tables):

- :func:`plot_study_intervals`: per metric, each condition's mean with its interval (one row per
  condition, one colour per task);
- :func:`plot_distance_profile`: the share of |CE| by distance from the ROI, a line and its band per
  condition, one panel per task.

Both write a PNG atomically with matplotlib's Agg canvas and return its path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from cem_lab.errors import InputError
from cem_lab.io import PathLike
from cem_lab.viz.canvas import new_figure, save_figure, text_inches
from cem_lab.viz.style import task_colour

__all__ = ["plot_distance_profile", "plot_study_intervals"]

_PANELS = (
    "share_negative",
    "share_positive",
    "total_negative_effect",
    "reach_max_px",
    "ce_mean_distance_px",
    "baseline_metric",
)


def plot_study_intervals(summary: pd.DataFrame, path: PathLike, metrics: Sequence[str] = _PANELS) -> str:
    """Forest plot: each condition's mean and interval, one panel per metric."""
    if summary is None or len(summary) == 0:
        raise InputError("plot_study_intervals: the study summary is empty")
    metrics = [m for m in metrics if m in set(summary["metric"])]
    rows = summary[["task", "condition"]].drop_duplicates().reset_index(drop=True)
    tasks = list(dict.fromkeys(rows["task"]))
    names = [f"{c} [{t}]" if len(tasks) > 1 else str(c) for t, c in zip(rows["task"], rows["condition"])]
    fig = new_figure(1.0, 1.0, dpi=110)
    fig.set_size_inches(2.6 * len(metrics) + text_inches(fig, names, 7) + 0.4, 0.32 * len(rows) + 1.4)
    fig.set_layout_engine("constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics), squeeze=False, sharey=True)).ravel()
    colours = {t: task_colour(t, k) for k, t in enumerate(tasks)}
    y = np.arange(len(rows))
    for ax, metric in zip(axes, metrics):
        sub = summary[summary["metric"] == metric].set_index(["task", "condition"])
        for i, r in rows.iterrows():
            v = sub.loc[(r["task"], r["condition"])]
            c = colours.get(r["task"], "k")
            if np.isfinite(v["low"]):
                ax.plot([v["low"], v["high"]], [i, i], color=c, linewidth=2)
            ax.plot([v["mean"]], [i], "o", color=c, markersize=4)
        label = sub["label"].iloc[0]
        unit = sub["unit"].iloc[0]
        ax.set_title(f"{label}" + (f" ({unit})" if isinstance(unit, str) and unit else ""), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(4))  # long tick numbers (0.0005 ...) must not run into each other
    axes[0].set_yticks(y, names, fontsize=7)
    axes[0].invert_yaxis()
    level = summary.attrs.get("level", 0.95)
    fig.suptitle(f"per-condition means with {level:.0%} nested-bootstrap intervals (images, ROIs nested)", fontsize=10)
    return save_figure(fig, path)


def plot_distance_profile(profile: pd.DataFrame, path: PathLike, quantity: str = "mass_share") -> str:
    """The share of |CE| (or the positive / negative sums) by distance from the ROI centre, with bands;
    one panel per task, its conditions keyed beside it."""
    if profile is None or len(profile) == 0:
        raise InputError("plot_distance_profile: the profile table is empty")
    prof = profile[profile["quantity"] == quantity]
    tasks = list(dict.fromkeys(prof["task"]))
    fig = new_figure(1.0, 1.0, dpi=110)
    legend_w = [text_inches(fig, prof.loc[prof["task"] == t, "condition"].astype(str).unique(), 7) + 0.5 for t in tasks]
    conditions = max(prof.groupby("task")["condition"].nunique())
    fig.set_size_inches(sum(4.0 + w for w in legend_w) + 0.2, max(3.4, 0.16 * conditions + 1.4))
    fig.set_layout_engine("constrained")
    axes = np.atleast_1d(fig.subplots(1, len(tasks), squeeze=False, width_ratios=[4.0 + w for w in legend_w])).ravel()
    for ax, task in zip(axes, tasks):
        sub = prof[prof["task"] == task]
        for cond, g in sub.groupby("condition", sort=False):
            mid = (g["bin_low"].to_numpy() + g["bin_high"].to_numpy()) / 2
            (line,) = ax.plot(mid, g["mean"], label=str(cond), linewidth=1.3, marker="o", markersize=2.5)
            if np.isfinite(g["low"]).all():
                ax.fill_between(mid, g["low"], g["high"], color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel("distance from the ROI centre (output px)")
        ax.set_ylabel(
            {"mass_share": "share of |CE|", "positive": "sum of positive CE", "negative": "sum of negative CE"}.get(
                quantity, quantity
            )
        )
        ax.set_title(task, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.suptitle("CE by distance (bands: nested-bootstrap intervals)", fontsize=10)
    return save_figure(fig, path)
