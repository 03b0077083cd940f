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
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from cem_lab.analysis.study_tables import run_settings
from cem_lab.causal.result import CEMResult
from cem_lab.errors import InputError
from cem_lab.io import PathLike
from cem_lab.viz.canvas import new_figure, save_figure, text_inches
from cem_lab.viz.cem_charts import PIE_COLORS
from cem_lab.viz.cem_maps import TASK_BOUNDS, effect_mappable, effect_to_rgb
from cem_lab.viz.style import TRAINING_COLOURS, categorical, current_style, faint_note

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
_MARKERS = "osD^v<>phX*P"


_colour = categorical  # a model's colour: the project's colour-blind-safe palette


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


def _label_parts(runs: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per run its model name (cut to fit a panel) and what tells it apart from the model's other runs on the
    task (the image, ROI, block, seed ... that vary among them, else its cut run name; "" for a model's only run)."""
    model = runs["model"].fillna(runs["run"]).astype(str)
    keys = pd.Series(list(zip(model, runs["task_label"])), index=runs.index)
    tails = [[] for _ in range(len(runs))]
    pos = {i: k for k, i in enumerate(runs.index)}
    for _, idx in keys.groupby(keys).groups.items():
        if len(idx) < 2:
            continue
        group = runs.loc[idx]
        varying = [
            c for c in _LABEL_COLUMNS if c in group and group[c].map(lambda v: repr(v)).nunique(dropna=False) > 1
        ]
        for i in idx:
            tails[pos[i]] = [_value(c, runs.at[i, c]) for c in varying] or [_short(str(runs.at[i, "run"]))]
    # two runs of one task that still read the same (they differ only in a setting no column names): add the
    # run name (one network's runs on several tasks are told apart by the task's own panel group)
    heads = model.map(_short)
    joined = pd.Series([" \u00b7 ".join(t) for t in tails], index=runs.index)
    dup = (heads + "|" + joined + "|" + runs["task_label"].astype(str)).duplicated(keep=False)  # per task's panels
    for i in runs.index[dup]:
        tails[pos[i]] = tails[pos[i]] + [_short(str(runs.at[i, "run"]))]
    return heads, pd.Series(tails, index=runs.index)


def _join_parts(parts: list[str], width: int) -> str:
    """``parts`` joined by " \u00b7 ", a new line started where a line would pass ``width`` characters."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " \u00b7 " + part
        else:
            lines.append(part)
    return "\n".join(lines)


_FIELD = re.compile(r"\{([^{}]+)\}")


def template_fields(runs: pd.DataFrame, template: str) -> dict[str, pd.Series]:
    """The value of each ``{field}`` of a label ``template`` per run: a run-table column (``model``, ``block``,
    ``image``, ``roi``, ``seed`` ...) or a setting of the run (``estimator.fine``, ``intervention.name`` ...).
    An unknown field is refused in one line that lists what there is."""
    fields = list(dict.fromkeys(_FIELD.findall(template)))
    if not fields:
        raise InputError(f"--label {template!r} names no field; e.g. --label '{{model}} b{{block}}'")
    out: dict[str, pd.Series] = {}
    settings = None
    for f in fields:
        if f in runs.columns:
            out[f] = runs[f]
            continue
        if settings is None:
            settings = [run_settings(Path(folder)) for folder in runs["folder"]]
        if any(f"setting:{f}" in s for s in settings):
            out[f] = pd.Series([s.get(f"setting:{f}") for s in settings], index=runs.index)
            continue
        known = sorted({k[8:] for s in settings for k in s})
        raise InputError(
            f"--label field {{{f}}} is neither a run-table column nor a setting of these runs; columns: "
            f"{', '.join(map(str, runs.columns))}; settings: {', '.join(known)}"
        )
    return out


def _fill(template: str, values: dict[str, object]) -> str:
    def one(m: re.Match) -> str:
        v = values[m.group(1)]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "?"
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    return _FIELD.sub(one, template)


def run_labels(runs: pd.DataFrame, sep: str = "\n", width: int = 30) -> pd.Series:
    """A short label per run: the model name and, where a model has several runs on one task, what tells
    them apart (the image, ROI, block, seed ... that vary among them), else the run name cut to fit a panel.
    Within ``use_style(FigureStyle(label="{model} b{block}"))`` (``cem-report --label``) the label is that
    template filled per run (:func:`template_fields`).

    With ``sep="\n"`` (a panel title) the distinguishing part is wrapped at ``width`` characters."""
    template = current_style().label
    if template:
        fields = template_fields(runs, template)
        labels = [_fill(template, {f: v[i] for f, v in fields.items()}) for i in runs.index]
        if sep == "\n":
            labels = [textwrap.fill(t, width, break_on_hyphens=False) or t for t in labels]
        return pd.Series(labels, index=runs.index)
    heads, tails = _label_parts(runs)
    out = []
    for i in runs.index:
        parts = tails[i]
        if not parts:
            out.append(heads[i])
        elif sep == "\n":
            out.append(heads[i] + "\n" + _join_parts(parts, width))
        else:
            out.append(sep.join([heads[i], " \u00b7 ".join(parts)]))
    return pd.Series(out, index=runs.index)


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
        effects, masks = [r.effect for r in results], [r.roi_mask for r in results]
        bound = current_style().bound(_grid_bound(str(task), str(unit), effects), effects, masks)
        note = faint_note(effects, masks, bound, str(unit), fix="cem-report --range auto")
        groups.append((str(name), str(unit), bound, list(zip(g.index, results)), note))
    ncols = max(1, min(ncols, max(len(g[3]) for g in groups)))
    heights = [math.ceil(len(g[3]) / ncols) for g in groups]
    fig = new_figure(2.3 * ncols + 0.4, sum(2.5 * h + 0.9 for h in heights), dpi=110)
    fig.set_layout_engine("constrained")
    subfigs = np.atleast_1d(fig.subfigures(len(groups), 1, height_ratios=[2.5 * h + 0.9 for h in heights]))
    for sub, (name, unit, bound, items, note), h in zip(subfigs, groups, heights):
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
        brk = "\n" if ncols < 3 else " "  # a narrow grid: the title on two lines, inside the canvas
        head = f"{name}: causal effect maps{brk}(colour range \u00b1{bound:.3g} {unit}, ROI green)"
        sub.suptitle(head + ("\n" + textwrap.fill(note, 14 * ncols + 10) if note else ""), fontsize=10)
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
    """Stacked horizontal bars of the positive / negative / zero block shares of each run, one panel per task;
    the figure is as wide as its run labels need, the legend above the panels."""
    _check_rows(runs, "plot_shares")
    groups = _task_groups(runs)
    labels = run_labels(runs, sep=" \u00b7 ")
    longest = max(len(g) for _, g in groups)
    fig = new_figure(1.0, 1.0, dpi=110)
    label_w = [text_inches(fig, labels[g.index], 8) for _, g in groups]
    fig.set_size_inches(sum(w + 3.3 for w in label_w) + 0.3, 0.3 * longest + 2.0)
    fig.set_layout_engine("constrained", w_pad=0.06, wspace=0.05)
    axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False, width_ratios=[w + 3.3 for w in label_w])).ravel()
    for ax, (task, g) in zip(axes, groups):
        y = np.arange(len(g))
        left = np.zeros(len(g))
        for kind in _SHARES:
            values = g[f"share_{kind}"].to_numpy(dtype=float)
            ax.barh(y, values, left=left, color=PIE_COLORS[kind], label=kind, edgecolor="white", linewidth=0.5)
            left += np.nan_to_num(values)
        ax.set_yticks(y, labels[g.index].tolist(), fontsize=8)
        ax.set_ylim(len(g) - 0.5, -0.5)
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of blocks outside the ROI")
        ax.set_title(task)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("blocks by effect sign")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- (c) reach vs PSNR
def plot_reach_vs_psnr(runs: pd.DataFrame, path: PathLike) -> str:
    """Mean reach (px) of the effective blocks against the validation PSNR of the model on the task,
    one marker per run and one panel per task; a panel where some run has no zoo PSNR uses the ROI
    metric before intervention instead (and says so on its axis).

    A run is told by its colour (the model) and its marker (what tells a model's runs apart: image, ROI ...),
    both keyed in a legend beside the panel; no text is written among the points, where labels overprinted."""
    _check_rows(runs, "plot_reach_vs_psnr")
    groups = _task_groups(runs)
    heads, tails = _label_parts(runs)
    tails = tails.map(lambda t: " \u00b7 ".join(t))
    fig = new_figure(1.0, 1.0, dpi=110)
    panels = []
    for task, g in groups:
        models = list(dict.fromkeys(heads[g.index]))
        kinds = [t for t in dict.fromkeys(tails[g.index]) if t]
        if len(kinds) > len(_MARKERS):  # too many to key: one marker for all
            kinds = []
        handles = [Line2D([], [], color=_colour(k), marker="o", linestyle="", label=m) for k, m in enumerate(models)]
        handles += [
            Line2D([], [], color="0.4", marker=_MARKERS[k], linestyle="", label=t, markerfacecolor="none")
            for k, t in enumerate(kinds)
        ]
        panels.append((task, g, models, kinds, handles))
    legend_w = [text_inches(fig, [h.get_label() for h in p[-1]], 7) + 0.45 for p in panels]
    fig.set_size_inches(sum(3.9 + w for w in legend_w) + 0.2, max(3.8, 0.17 * max(len(p[-1]) for p in panels) + 1.6))
    fig.set_layout_engine("constrained")
    axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False, width_ratios=[3.9 + w for w in legend_w])).ravel()
    for ax, (task, g, models, kinds, handles) in zip(axes, panels):
        use_val = g["val_psnr"].notna().all()
        x = (g["val_psnr"] if use_val else g["baseline_metric"]).astype(float)
        for idx in g.index:
            k = models.index(heads[idx])
            m = _MARKERS[kinds.index(tails[idx])] if tails[idx] in kinds else "o"
            ax.scatter(
                [x[idx]],
                [float(g.at[idx, "reach_mean_px"])],
                marker=m,
                s=40,
                facecolors="none" if kinds else _colour(k),
                edgecolors=_colour(k),
                linewidths=1.4,
            )
        unit = g["unit"].iloc[0]
        ax.set_xlabel("validation PSNR (dB)" if use_val else f"ROI {g['metric'].iloc[0]} before intervention ({unit})")
        ax.set_ylabel("mean reach of effective blocks (px)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.legend(
            handles=handles,
            fontsize=7,
            frameon=False,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0,
            title="colour: model" + ("\nmarker: run" if kinds else ""),
            title_fontsize=7,
            alignment="left",
        )
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
            ax.bar(x + (k - 0.5) * width, values, width, label=regime, color=TRAINING_COLOURS[regime])
        ax.set_xticks(x, [f"{a}\n{t}" for a, t in groups.itertuples(index=False)], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("single-task vs mixed-task training")
    return save_figure(fig, path)
