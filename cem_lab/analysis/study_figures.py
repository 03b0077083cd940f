"""Figures of a study: many finished CEM runs side by side (method doc, section 6).

Each function takes the run table of :func:`cem_lab.analysis.runs.collect_runs` (one row per run)
and a PNG path, draws with matplotlib's Agg canvas (no pyplot state), writes the file atomically
and returns its path:

- :func:`plot_cem_grid`: the CE maps of all runs, one colour range per task (SR 2.5, DN 1, DR 2 dB);
- :func:`plot_shares`: stacked bars of the positive / negative / zero block shares, per task;
- :func:`plot_reach_vs_psnr`: mean reach of the effective blocks against validation PSNR;
- :func:`plot_depth_width`: depth x width heatmaps of one family (the receptive-field study);
- :func:`plot_single_vs_mixed`: single-task vs mixed-task training per task (the multi-task study).

:func:`depth_width_families` and :func:`multitask_pairs` say when the last two apply.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from cem_lab.causal.result import CEMResult
from cem_lab.errors import InputError
from cem_lab.io import PathLike
from cem_lab.viz.canvas import new_figure, save_figure
from cem_lab.viz.cem_charts import PIE_COLORS
from cem_lab.viz.cem_maps import TASK_BOUNDS, effect_mappable, effect_to_rgb

__all__ = [
    "depth_width_families",
    "multitask_pairs",
    "plot_cem_grid",
    "plot_depth_width",
    "plot_reach_vs_psnr",
    "plot_shares",
    "plot_single_vs_mixed",
    "run_labels",
]

_GAMMA = 1.2  # the power mapping of the single-run figures
_SHARES = ("positive", "negative", "zero")
_REGIME_COLORS = {"single-task": "#4c72b0", "mixed": "#dd8452"}


def _check_rows(runs: pd.DataFrame, what: str) -> None:
    if runs is None or len(runs) == 0:
        raise InputError(f"{what}: the run table is empty; collect finished runs first")


#: the run-table columns that tell apart several runs of one model on one task, in the order a label names them
_LABEL_COLUMNS = ("image", "roi", "block", "seed", "estimator", "samples", "intervention")


def _short(text: str, width: int = 26) -> str:
    """``text`` cut in the middle to at most ``width`` characters (a panel title must not overrun its panel)."""
    return text if len(text) <= width else text[: width // 2 - 1] + "\u2026" + text[-(width - width // 2) :]


def _value(column: str, value) -> str:
    if column == "image":  # the picture's name, without the crop that the other runs of a sweep share
        return _short(re.sub(r"_crop\d.*$", "", Path(str(value)).stem), 16)
    if column == "roi":
        return "roi " + (",".join(map(str, value)) if isinstance(value, list | tuple) else str(value))
    return f"{column} {value}"


def run_labels(runs: pd.DataFrame, sep: str = "\n") -> pd.Series:
    """A short label per run: the model name and, where a model has several runs on one task, what tells
    them apart (the image, ROI, block, seed ... that vary among them), else the run name cut to fit a panel."""
    model = runs["model"].fillna(runs["run"]).astype(str)
    keys = pd.Series(list(zip(model, runs["task_label"])), index=runs.index)
    labels = model.copy()
    for _, idx in keys.groupby(keys).groups.items():
        if len(idx) < 2:
            continue
        group = runs.loc[idx]
        varying = [
            c for c in _LABEL_COLUMNS if c in group and group[c].map(lambda v: repr(v)).nunique(dropna=False) > 1
        ]
        for i in idx:
            parts = [_value(c, runs.at[i, c]) for c in varying]
            tail = " \u00b7 ".join(parts) if parts else _short(str(runs.at[i, "run"]))
            labels[i] = f"{_short(model[i])}{sep}{tail}"
    # two runs that still read the same (they differ only in a setting no column names): add the run name
    dup = labels.duplicated(keep=False)
    labels[dup] = labels[dup] + sep + runs.loc[dup, "run"].astype(str).map(_short)
    return labels


def _task_groups(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return [(str(k), g) for k, g in runs.groupby("task_label", sort=True)]


# ----------------------------------------------------------------------------- (a) CE map grid
def _grid_bound(task: str, unit: str, effects: list[np.ndarray]) -> float:
    """The colour range of one group: the reference bound of the task in dB, else the largest |effect|."""
    if unit == "dB" and task in TASK_BOUNDS:
        return TASK_BOUNDS[task]
    peak = max((float(np.nanmax(np.abs(e))) for e in effects if np.isfinite(e).any()), default=0.0)
    return peak if peak > 0 else 1.0


def _roi_box(ax, roi_mask: np.ndarray) -> None:
    rows, cols = np.nonzero(roi_mask)
    if len(rows):
        ax.add_patch(
            Rectangle(
                (cols.min() - 0.5, rows.min() - 0.5),
                cols.max() - cols.min() + 1,
                rows.max() - rows.min() + 1,
                fill=False,
                edgecolor="#00c000",
                linewidth=1.5,
            )
        )


def plot_cem_grid(runs: pd.DataFrame, path: PathLike, ncols: int = 5) -> str:
    """All runs' CE maps re-rendered from their ``cem.npz``, grouped by task and metric; one
    symmetric colour range per group (the task's reference bound for dB), the ROI outlined in green."""
    _check_rows(runs, "plot_cem_grid")
    labels = run_labels(runs)
    groups = []
    for (task, name, unit), g in runs.groupby(["task", "task_label", "unit"], sort=True, dropna=False):
        results = [CEMResult.load(f) for f in g["folder"]]
        bound = _grid_bound(str(task), str(unit), [r.effect for r in results])
        groups.append((str(name), str(unit), bound, list(zip(g.index, results))))
    ncols = max(1, min(ncols, max(len(items) for *_, items in groups)))
    heights = [math.ceil(len(items) / ncols) for *_, items in groups]
    fig = new_figure(2.3 * ncols + 0.4, sum(2.5 * h + 0.9 for h in heights), dpi=110)
    fig.set_layout_engine("constrained")
    subfigs = np.atleast_1d(fig.subfigures(len(groups), 1, height_ratios=[2.5 * h + 0.9 for h in heights]))
    for sub, (name, unit, bound, items), h in zip(subfigs, groups, heights):
        axes = np.atleast_1d(sub.subplots(h, ncols, squeeze=False)).ravel()
        for ax, (idx, res) in zip(axes, items):
            ax.imshow(effect_to_rgb(res.effect, res.roi_mask, bound, _GAMMA), interpolation="nearest")
            _roi_box(ax, res.roi_mask)
            ax.set_title(labels[idx], fontsize=8)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[len(items) :]:
            ax.set_visible(False)
        sub.suptitle(f"{name}: causal effect maps (colour range \u00b1{bound:g} {unit}, ROI green)", fontsize=10)
        cbar = sub.colorbar(
            effect_mappable(bound, _GAMMA),
            ax=axes[: len(items)].tolist(),
            orientation="horizontal",
            shrink=0.6,
            aspect=40,
            pad=0.02,
        )
        cbar.set_ticks([-bound, 0.0, bound])
        cbar.ax.tick_params(labelsize=7)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- (b) shares
def plot_shares(runs: pd.DataFrame, path: PathLike) -> str:
    """Stacked horizontal bars of the positive / negative / zero block shares of each run, one panel per task."""
    _check_rows(runs, "plot_shares")
    groups = _task_groups(runs)
    labels = run_labels(runs, sep=" \u00b7 ")
    longest = max(len(g) for _, g in groups)
    fig = new_figure(4.2 * len(groups) + 1.5, 0.35 * longest + 1.8, dpi=110)
    fig.set_layout_engine("constrained")
    axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False)).ravel()
    for ax, (task, g) in zip(axes, groups):
        y = np.arange(len(g))
        left = np.zeros(len(g))
        for kind in _SHARES:
            values = g[f"share_{kind}"].to_numpy(dtype=float)
            ax.barh(y, values, left=left, color=PIE_COLORS[kind], label=kind, edgecolor="white", linewidth=0.5)
            left += np.nan_to_num(values)
        ax.set_yticks(y, labels[g.index].tolist(), fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of blocks outside the ROI")
        ax.set_title(task)
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.suptitle("blocks by effect sign")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- (c) reach vs PSNR
def plot_reach_vs_psnr(runs: pd.DataFrame, path: PathLike) -> str:
    """Mean reach (px) of the effective blocks against the validation PSNR of the model on the task,
    one marker per run and one panel per task; a panel where some run has no zoo PSNR uses the ROI
    metric before intervention instead (and says so on its axis)."""
    _check_rows(runs, "plot_reach_vs_psnr")
    groups = _task_groups(runs)
    labels = run_labels(runs)
    fig = new_figure(4.3 * len(groups), 3.8, dpi=110)
    fig.set_layout_engine("constrained")
    axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False)).ravel()
    markers = "osD^v<>phX*"
    for ax, (task, g) in zip(axes, groups):
        use_val = g["val_psnr"].notna().all()
        x = g["val_psnr"] if use_val else g["baseline_metric"]
        families = g["architecture"].fillna("not in zoo").astype(str)
        for k, fam in enumerate(sorted(families.unique())):
            sel = families == fam
            ax.scatter(
                x[sel].astype(float),
                g.loc[sel, "reach_mean_px"].astype(float),
                marker=markers[k % len(markers)],
                s=36,
                label=fam,
            )
        for idx in g.index:
            ax.annotate(
                labels[idx],
                (float(x[idx]), float(g.at[idx, "reach_mean_px"])),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        unit = g["unit"].iloc[0]
        ax.set_xlabel("validation PSNR (dB)" if use_val else f"ROI {g['metric'].iloc[0]} before intervention ({unit})")
        ax.set_ylabel("mean reach of effective blocks (px)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="best")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- (d) depth x width
def depth_width_families(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """(architecture, task label) pairs whose runs span >= 2 depths and >= 2 widths."""
    if "architecture" not in runs or len(runs) == 0:
        return []
    known = runs.dropna(subset=["architecture", "depth", "width"])
    out = []
    for (arch, task), g in known.groupby(["architecture", "task_label"], sort=True):
        if g["depth"].nunique() >= 2 and g["width"].nunique() >= 2:
            out.append((str(arch), str(task)))
    return out


_HEATMAPS = (
    ("share_positive", "positive share", "Reds", "{:.1%}"),
    ("share_negative", "negative share", "Blues", "{:.1%}"),
    ("reach_mean_px", "mean reach (px)", "viridis", "{:.1f}"),
    ("val_psnr", "validation PSNR (dB)", "magma", "{:.2f}"),
)


def plot_depth_width(runs: pd.DataFrame, path: PathLike, architecture: str, task: str) -> str:
    """Heatmaps over depth x width of one family on one task: positive share, negative share, mean
    reach and validation PSNR (runs of one cell, e.g. several images, are averaged)."""
    g = runs[(runs["architecture"] == architecture) & (runs["task_label"] == task)]
    if (architecture, task) not in depth_width_families(g):
        raise InputError(
            f"{architecture} on {task}: a depth x width figure needs runs of >= 2 depths and "
            ">= 2 widths; add the missing zoo models' runs"
        )
    fig = new_figure(4.0 * len(_HEATMAPS), 3.6, dpi=110)
    fig.set_layout_engine("constrained")
    axes = np.atleast_1d(fig.subplots(1, len(_HEATMAPS), squeeze=False)).ravel()
    for ax, (col, title, cmap, fmt) in zip(axes, _HEATMAPS):
        table = g.pivot_table(index="depth", columns="width", values=col, aggfunc="mean", dropna=False)
        table = table.reindex(index=sorted(g["depth"].unique()), columns=sorted(g["width"].unique()))
        values = table.to_numpy(dtype=float)
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto", origin="lower")
        for (r, c), v in np.ndenumerate(values):
            ax.text(
                c,
                r,
                "n/a" if np.isnan(v) else fmt.format(v),
                ha="center",
                va="center",
                fontsize=8,
                color="black",
                bbox={"facecolor": "white", "alpha": 0.6, "linewidth": 0, "pad": 1},
            )
        ax.set_xticks(range(len(table.columns)), [f"{w:g}" for w in table.columns])
        ax.set_yticks(range(len(table.index)), [f"{d:g}" for d in table.index])
        ax.set_xlabel("width")
        ax.set_ylabel("depth")
        ax.set_title(title, fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(f"{architecture} on {task}: depth x width")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- (e) single vs mixed
def multitask_pairs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (architecture, task label, training) the mean positive / negative share and mean reach,
    for the (architecture, task) pairs that have both single-task and mixed runs."""
    cols = ["architecture", "task_label", "training"]
    if "training" not in runs or len(runs) == 0:
        return pd.DataFrame(columns=cols)
    known = runs.dropna(subset=cols)
    means = known.groupby(cols, sort=True)[["share_positive", "share_negative", "reach_mean_px"]].mean().reset_index()
    both = means.groupby(["architecture", "task_label"])["training"].transform(
        lambda t: {"single-task", "mixed"} <= set(t)
    )
    return means[both].reset_index(drop=True)


def plot_single_vs_mixed(runs: pd.DataFrame, path: PathLike) -> str:
    """Paired bars, single-task vs mixed-task training, per architecture and task: positive share,
    negative share and mean reach of the effective blocks."""
    pairs = multitask_pairs(runs)
    if len(pairs) == 0:
        raise InputError(
            "single vs mixed: no architecture has both single-task and mixed runs on one task; "
            "run the CEM of e.g. srresnet_sr and srresnet_mixed on task sr"
        )
    groups = pairs[["architecture", "task_label"]].drop_duplicates().reset_index(drop=True)
    x = np.arange(len(groups))
    width = 0.38
    fig = new_figure(max(7.0, 1.3 * len(groups) * 3), 3.8, dpi=110)
    fig.set_layout_engine("constrained")
    axes = np.atleast_1d(fig.subplots(1, 3, squeeze=False)).ravel()
    panels = (
        ("share_positive", "positive share"),
        ("share_negative", "negative share"),
        ("reach_mean_px", "mean reach (px)"),
    )
    for ax, (col, title) in zip(axes, panels):
        for k, regime in enumerate(("single-task", "mixed")):
            sel = pairs[pairs["training"] == regime].set_index(["architecture", "task_label"])[col]
            values = [float(sel.get((a, t), np.nan)) for a, t in groups.itertuples(index=False)]
            ax.bar(x + (k - 0.5) * width, values, width, label=regime, color=_REGIME_COLORS[regime])
        ax.set_xticks(x, [f"{a}\n{t}" for a, t in groups.itertuples(index=False)], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, frameon=False)
    fig.suptitle("single-task vs mixed-task training")
    return save_figure(fig, path)
