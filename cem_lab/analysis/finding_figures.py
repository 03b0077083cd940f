"""Figures of the paper's three findings, drawn from the finding tables and the run folders (no recompute).

- :func:`plot_rf_trends`: effective distance, negative share and ROI PSNR against depth, one line per
  family and width, each point with its interval;
- :func:`plot_rf_reach_vs_params`: effective distance against parameter count, zoo and real networks;
- :func:`plot_attention_contrast`: each attention variant's paired difference from no attention, on SR
  and on DN, side by side;
- :func:`plot_multitask_pairs`: mixed minus single-task, per family and task, for the effect's size
  and its locality, with the ROI PSNR gap;
- :func:`plot_multitask_profiles`: the share of |CE| by distance, single-task vs mixed;
- :func:`plot_unit_grid`: the CE maps of many models on one unit (the paper's map grids);
- :func:`plot_teaser`: one network on SR, DN and DR, side by side: input, output, map, pie, colour bar.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb

from cem_lab.analysis.study_figures import plot_cem_grid
from cem_lab.analysis.study_tables import distance_profile
from cem_lab.causal.result import CEMResult
from cem_lab.errors import InputError
from cem_lab.io import PathLike
from cem_lab.viz.canvas import new_figure, save_figure
from cem_lab.viz.paper_figures import teaser
from cem_lab.viz.style import CATEGORICAL, TRAINING_COLOURS, task_colour

__all__ = [
    "chosen_unit",
    "plot_attention_contrast",
    "plot_multitask_pairs",
    "plot_multitask_profiles",
    "plot_rf_reach_vs_params",
    "plot_rf_trends",
    "plot_teaser",
    "plot_unit_grid",
]

_FAMILY_COLOURS = {"FSRCNN": CATEGORICAL[0], "EDSR": CATEGORICAL[5]}  # the zoo's receptive-field families


def _err(ax, x, mean, low, high, **kw):
    yerr = np.vstack([np.asarray(mean) - np.asarray(low), np.asarray(high) - np.asarray(mean)])
    yerr = np.where(np.isfinite(yerr), np.maximum(yerr, 0), 0)
    ax.errorbar(x, mean, yerr=yerr, capsize=2, marker="o", markersize=3, linewidth=1, **kw)


def plot_rf_trends(per: pd.DataFrame, path: PathLike) -> str:
    """Effective distance, negative share and ROI PSNR against depth (log 2), one line per family and width
    (darker: wider), each point the per-model mean with its 95 % interval; ``per`` is the per-model table."""
    panels = [
        ("reach_max_px", "effective distance (px)"),
        ("share_negative", "negative share"),
        ("baseline_metric", "ROI PSNR (dB)"),
    ]
    fig = new_figure(4.0 * len(panels), 3.3, dpi=110)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (m, label) in zip(axes, panels):
        for (arch, width), g in per.groupby(["architecture", "width"], sort=True):
            g = g.sort_values("depth")
            shade = (
                0.35
                + 0.65
                * (sorted(per[per["architecture"] == arch]["width"].unique()).index(width) + 1)
                / per[per["architecture"] == arch]["width"].nunique()
            )
            base = np.array(to_rgb(_FAMILY_COLOURS.get(arch, CATEGORICAL[7])))
            colour = tuple(1 - shade * (1 - base))
            _err(
                ax,
                g["depth"].to_numpy(float),
                g[f"{m}_mean"],
                g[f"{m}_low"],
                g[f"{m}_high"],
                color=colour,
                label=f"{arch} w{int(width)}",
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("depth")
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle("receptive field: per model, mean over units and 95 % interval", fontsize=10)
    return save_figure(fig, path)


def plot_rf_reach_vs_params(per: pd.DataFrame, real: pd.DataFrame, path: PathLike) -> str:
    """Effective distance against parameter count (log): the zoo families coloured, the catalogue's real
    networks (``real``, may be empty) in black with their names."""
    fig = new_figure(5.5, 3.8, dpi=110)
    fig.set_layout_engine("constrained")
    ax = fig.subplots()
    for arch, g in per.groupby("architecture"):
        _err(
            ax,
            g["parameters"].to_numpy(float),
            g["reach_max_px_mean"],
            g["reach_max_px_low"],
            g["reach_max_px_high"],
            color=_FAMILY_COLOURS.get(arch, CATEGORICAL[7]),
            linestyle="none",
            label=arch,
        )
    if real is not None and len(real):
        _err(
            ax,
            real["parameters"].to_numpy(float),
            real["reach_max_px_mean"],
            real["reach_max_px_low"],
            real["reach_max_px_high"],
            color="black",
            linestyle="none",
            label="catalogue",
        )
        for _, r in real.iterrows():
            ax.annotate(
                str(r["model"]),
                (r["parameters"], r["reach_max_px_mean"]),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xscale("log")
    ax.set_xlim(right=ax.get_xlim()[1] * 4)  # room for the catalogue labels at the right end
    ax.set_xlabel("parameters")
    ax.set_ylabel("effective distance (px)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_attention_contrast(
    con: pd.DataFrame,
    path: PathLike,
    metrics: Sequence[str] = ("share_positive", "total_positive_effect", "reach_max_px", "baseline_metric"),
) -> str:
    """Per metric, each attention variant's paired difference from no attention (variant - none) with its
    95 % interval, SR and DN side by side (a task without a difference, e.g. DN of the authors' zoo, is left
    out); ``con`` is the attention-contrast table."""
    metrics = [m for m in metrics if m in set(con["metric"])]
    fig = new_figure(3.4 * len(metrics), 3.4, dpi=110)
    fig.set_layout_engine("constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for ax, m in zip(axes, metrics):
        t = con[con["metric"] == m].reset_index(drop=True)
        y = np.arange(len(t))
        for off, task, colour in ((-0.15, "sr", task_colour("sr")), (0.15, "dn", task_colour("dn"))):
            mean, lo, hi = t[f"{task}_mean"], t[f"{task}_low"], t[f"{task}_high"]
            if not np.isfinite(mean.to_numpy(float)).any():
                continue
            xerr = np.vstack([mean - lo, hi - mean])
            ax.errorbar(
                mean,
                y + off,
                xerr=np.where(np.isfinite(xerr), np.maximum(xerr, 0), 0),
                fmt="o",
                markersize=3,
                capsize=2,
                color=colour,
                label=task.upper(),
            )
        ax.axvline(0, color="black", linewidth=0.7)
        ax.set_yticks(y)
        ax.set_yticklabels(t["variant"], fontsize=8)
        ax.set_title(f"{m}\n(variant - none)", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle("channel attention: paired differences from the RCAN without attention (95 %)", fontsize=10)
    return save_figure(fig, path)


def plot_multitask_pairs(
    paired: pd.DataFrame,
    path: PathLike,
    metrics: Sequence[str] = ("total_positive_effect", "ce_mean_distance_px", "near_mass_share", "baseline_metric"),
) -> str:
    """Per metric, mixed minus single-task with its 95 % interval, one row per (family, task) (and training, when
    ``paired`` has that column: the authors' mixed and multi-in-one networks); ``paired`` is the paired table of
    the multi-task finding."""
    metrics = [m for m in metrics if m in set(paired["metric"])]
    keys = ["task", "family", *(["training"] if "training" in paired.columns else [])]
    rows = paired[keys].drop_duplicates().reset_index(drop=True)
    fig = new_figure(3.2 * len(metrics), 0.35 * len(rows) + 1.6, dpi=110)
    fig.set_layout_engine("constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics), sharey=True))
    for ax, m in zip(axes, metrics):
        for i, r in rows.iterrows():
            t = paired[(paired[keys] == r[keys]).all(axis=1) & (paired["metric"] == m)]
            if not len(t):
                continue
            mean, lo, hi = float(t["mean"].iloc[0]), float(t["low"].iloc[0]), float(t["high"].iloc[0])
            ax.errorbar(
                [mean],
                [i],
                xerr=[[max(mean - lo, 0) if np.isfinite(lo) else 0], [max(hi - mean, 0) if np.isfinite(hi) else 0]],
                fmt="o",
                markersize=3,
                capsize=2,
                color=task_colour(r["task"]),
            )
        ax.axvline(0, color="black", linewidth=0.7)
        ax.set_title(f"{m}\n(mixed - single)", fontsize=9)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(
            [" ".join(str(r[k]) for k in ["family", "task", *keys[2:]]) for _, r in rows.iterrows()], fontsize=8
        )
    fig.suptitle("multi-task: paired differences, mixed minus single-task (95 %)", fontsize=10)
    return save_figure(fig, path)


def plot_multitask_profiles(df: pd.DataFrame, path: PathLike, bin_px: float = 8.0) -> str:
    """The share of |CE| by distance from the ROI centre (bins of ``bin_px``), single-task vs mixed (vs
    multi-in-one), by the ``training`` column, one panel per family and task: the mean over units with a min-max
    band."""
    tasks = list(dict.fromkeys(df["task"]))
    fams = list(dict.fromkeys(df["architecture"]))
    fig = new_figure(3.3 * len(tasks), 2.6 * len(fams), dpi=110)
    fig.set_layout_engine("constrained")
    axes = np.atleast_2d(fig.subplots(len(fams), len(tasks), squeeze=False))
    for i, fam in enumerate(fams):
        for j, task in enumerate(tasks):
            ax = axes[i, j]
            g = df[(df["architecture"] == fam) & (df["task"] == task)]
            for _model, sub in g.groupby("model", sort=False):
                profs = [distance_profile(Path(f), bin_px) for f in sub["folder"]]
                n = max(len(p["mass_share"]) for p in profs)
                mat = np.vstack([np.pad(p["mass_share"], (0, n - len(p["mass_share"]))) for p in profs])
                centres = (np.arange(n) + 0.5) * bin_px
                last = int(np.max(np.nonzero(mat.any(axis=0))[0], initial=0)) + 2
                training = str(sub["training"].iloc[0])
                colour = TRAINING_COLOURS.get(training, TRAINING_COLOURS["single-task"])
                ax.plot(
                    centres[:last],
                    mat.mean(axis=0)[:last],
                    color=colour,
                    label=training if training in TRAINING_COLOURS else "single-task",
                )
                ax.fill_between(
                    centres[:last],
                    mat.min(axis=0)[:last],
                    mat.max(axis=0)[:last],
                    alpha=0.15,
                    color=colour,
                )
            ax.set_title(f"{fam} on {task}", fontsize=9)
            ax.set_xlabel("distance from the ROI centre (px)", fontsize=8)
            if j == 0:
                ax.set_ylabel("share of |CE|", fontsize=8)
            if len(g):
                ax.legend(fontsize=7)
            else:  # a network not mapped on this task: say so instead of an empty frame
                ax.text(0.5, 0.5, "no runs", transform=ax.transAxes, ha="center", va="center", color="0.4")
    fig.suptitle("where the effect is: share of |CE| by distance (mean over units; band: min-max)", fontsize=10)
    return save_figure(fig, path)


def chosen_unit(df: pd.DataFrame) -> str:
    """The unit shown in the map grids and the teaser: the one with the largest median sum of positive CE
    over the models (a textured ROI where there is something to see); ties by name."""
    key = df["image"].astype(str) + " roi " + df["roi"].astype(str)
    med = df.assign(_u=key).groupby("_u")["total_positive_effect"].median()
    return str(sorted(med.index, key=lambda u: (-med[u], u))[0])


def plot_unit_grid(
    df: pd.DataFrame, path: PathLike, models: Sequence[str], ncols: int = 6, by_task: bool = False
) -> str:
    """The CE maps of ``models`` on :func:`chosen_unit` (one row group per task)."""
    df = df[df["model"].isin(list(models))]  # the unit shown is one these models were mapped on
    if not len(df):
        raise InputError(f"plot_unit_grid: no run of {list(models)[:3]}...")
    unit = chosen_unit(df)
    key = df["image"].astype(str) + " roi " + df["roi"].astype(str)
    sub = df[key == unit]
    if not len(sub):
        raise InputError(f"plot_unit_grid: no run of {list(models)[:3]}... on {unit}")
    return plot_cem_grid(sub, path, ncols=ncols)


def plot_teaser(df: pd.DataFrame, model: str, path: PathLike) -> str:
    """One network on each of its tasks (rows), on one unit: degraded input | restored with the ROI |
    causal effect map with its colour bar | pie of the blocks by effect sign (:func:`~cem_lab.viz.paper_figures.teaser`)."""
    runs = df[df["model"] == model]
    unit = chosen_unit(runs[runs["task"] == runs["task"].iloc[0]])
    key = runs["image"].astype(str) + " roi " + runs["roi"].astype(str)
    if not (key == unit).any():
        unit = chosen_unit(runs)
    chosen = runs[key == unit].drop_duplicates("task")
    order = {"sr": 0, "dn": 1, "dr": 2}
    chosen = chosen.sort_values("task", key=lambda s: s.map(lambda t: order.get(t, 9)))
    results = {str(r["task_label"]): CEMResult.load(Path(r["folder"])) for _, r in chosen.iterrows()}
    title = f"{model}: one network, {len(results)} tasks, one ROI ({unit})"
    fig = teaser(results, title=title, dpi=72)  # photographs inside: kept small for the repository
    return save_figure(fig, path)
