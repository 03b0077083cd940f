"""Figures of the effective receptive field (arrays in, files out; the numbers: :mod:`cem_lab.attribution.erf`).

- :func:`save_erf_figure`: the population ERF on a log colour scale (viridis, the smallest drawn value a
  millionth of the largest), the ROI box and the differentiated point in input pixels; beside it the
  high-contribution area ratios (20 / 30 / 50 / 99 % of the gradient mass) as the mean over images with its
  interval, and the ratio of the mean map as a cross.
- :func:`save_reach_figure`: "where gradients reach versus where interventions matter": per network, the
  radius holding 50 % and 99 % of the ERF's mass (output pixels from the ROI centre) against the CEM's
  effective distance (the largest distance from the ROI centre to a block with an effect, ``reach_px.max``),
  both with their intervals, and the diagonal where the two agree.

Written with :func:`cem_lab.viz.canvas.save_figure`, in the formats of the current style (``use_style``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from cem_lab.io import PathLike
from cem_lab.viz.canvas import add_axes_in, new_figure, save_figure
from cem_lab.viz.style import categorical

#: the dynamic range of the log colour scale: values below largest / LOG_RANGE are drawn at its bottom
LOG_RANGE = 1e6

Interval = tuple[float, float, float]  # mean, low, high (NaN low / high: no interval)


def _interval(entry: Mapping[str, float | None]) -> Interval:
    """``(mean, low, high)`` of a summary entry, None read as NaN."""
    return tuple(math.nan if entry.get(k) is None else float(entry[k]) for k in ("mean", "low", "high"))


def _errors(values: Sequence[Interval]) -> np.ndarray:
    """(2, n) error-bar lengths below and above each mean (0 where there is no interval)."""
    out = np.zeros((2, len(values)))
    for k, (m, lo, hi) in enumerate(values):
        if math.isfinite(lo) and math.isfinite(hi):
            out[0, k], out[1, k] = max(m - lo, 0.0), max(hi - m, 0.0)
    return out


def save_erf_figure(
    path: PathLike,
    *,
    mean_map: np.ndarray,
    roi: Sequence[int],
    target: Sequence[int],
    scale: int,
    area_ratios: Mapping[str, Mapping[str, float]],
    title: str = "",
    subtitle: str = "",
    dpi: int = 120,
) -> str:
    """The mean ERF (log scale) with the ROI, and the area ratios with their intervals; returns the path.

    ``mean_map``: (h, w) on the input pixels; ``roi`` and ``target`` (top, left, size): output pixels, drawn
    at ``1 / scale``; ``area_ratios[level]``: ``mean``, ``low``, ``high`` and ``of_mean_map`` (shares in [0, 1],
    levels as ``"50"``).
    """
    m = np.abs(np.asarray(mean_map, dtype=np.float64))
    h, w = m.shape
    top = float(m.max()) if m.size and m.max() > 0 else 1.0
    norm = LogNorm(vmin=top / LOG_RANGE, vmax=top)
    pw = 3.2
    ph = float(np.clip(pw * h / w, 1.6, 4.0))
    head = 0.55 if title else 0.25
    fig_w, fig_h = 0.3 + pw + 1.3 + 2.6 + 0.3, head + ph + 0.6
    fig = new_figure(fig_w, fig_h, dpi=dpi)
    ax = add_axes_in(fig, 0.3, 0.45, pw, ph)
    image = ax.imshow(np.maximum(m, top / LOG_RANGE), cmap="viridis", norm=norm, interpolation="nearest")
    s = float(scale)
    t, left, size = (float(v) for v in roi)
    ax.add_patch(
        Rectangle((left / s - 0.5, t / s - 0.5), size / s, size / s, fill=False, edgecolor="white", linewidth=1.0)
    )
    ty, tx, tsize = (float(v) for v in target)
    cy, cx = (ty + tsize / 2) / s - 0.5, (tx + tsize / 2) / s - 0.5
    ax.plot([cx], [cy], marker="+", color="#E69F00", markersize=7, markeredgewidth=1.2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(subtitle or f"mean ERF, {h}\u00d7{w} input pixels (log scale)", fontsize=8)
    cax = add_axes_in(fig, 0.3 + pw + 0.08, 0.45, 0.12, ph)
    cbar = fig.colorbar(image, cax=cax)
    cbar.set_label("mean |\u2202F/\u2202x| (channels summed)", fontsize=7)
    cax.tick_params(labelsize=6)

    levels = list(area_ratios)
    values = [tuple(100 * v for v in _interval(area_ratios[k])) for k in levels]
    bx = add_axes_in(fig, 0.3 + pw + 1.3 + 0.35, 0.45, 2.25, ph)
    x = np.arange(len(levels))
    bx.bar(x, [v[0] for v in values], color=categorical(0), width=0.6, label="mean over images")
    bx.errorbar(x, [v[0] for v in values], yerr=_errors(values), fmt="none", ecolor="black", capsize=3, lw=1)
    of_mean = [area_ratios[k].get("of_mean_map") for k in levels]
    if all(v is not None for v in of_mean):
        bx.plot(x, [100 * float(v) for v in of_mean], "x", color=categorical(1), label="of the mean map")
    bx.set_xticks(x, [f"{k} %" for k in levels])
    bx.set_xlabel("share of the gradient mass", fontsize=7)
    bx.set_ylabel("area ratio (% of input pixels)", fontsize=7)
    bx.set_yscale("log")
    bx.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    bx.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    bx.yaxis.set_minor_formatter(NullFormatter())
    bx.tick_params(labelsize=7)
    bx.legend(fontsize=6.5, frameon=False, loc="upper left")
    bx.set_title("high-contribution area ratios (95 % interval)", fontsize=8)
    if title:
        fig.text(0.5, 1.0 - 0.08 / fig_h, title, ha="center", va="top", fontsize=9)
    return save_figure(fig, path)


@dataclass
class ReachPoint:
    """One network of :func:`save_reach_figure`: its label, its ERF's 50 % and 99 % mass radii and its CEM's
    effective distance, each ``(mean, low, high)`` in output pixels (a NaN CEM distance: the network is
    drawn on the left axis only)."""

    label: str
    radius_50: Interval
    radius_99: Interval
    cem_reach: Interval


def save_reach_figure(path: PathLike, points: Sequence[ReachPoint], title: str = "", dpi: int = 120) -> str:
    """ERF mass radii (y) against the CEM's effective distance (x), per network, with intervals; returns the path."""
    fig = new_figure(5.4, 3.8, dpi=dpi)
    ax = add_axes_in(fig, 0.7, 0.6, 2.6, 2.7)
    top = 1.0
    for k, p in enumerate(points):
        colour = categorical(k)
        x = p.cem_reach
        xs = x[0] if math.isfinite(x[0]) else 0.0
        for r, marker, fill in ((p.radius_50, "o", colour), (p.radius_99, "s", "white")):
            ax.errorbar(
                [xs],
                [r[0]],
                xerr=_errors([x]) if math.isfinite(x[0]) else None,
                yerr=_errors([r]),
                fmt=marker,
                color=colour,
                markerfacecolor=fill,
                markersize=5,
                capsize=2,
                lw=1,
            )
            top = max(top, *(v for v in (r[0], r[2], x[0], x[2]) if math.isfinite(v)))
        ax.plot([], [], "o", color=colour, label=p.label)
    ax.plot([0, 1.05 * top], [0, 1.05 * top], ":", color="0.5", lw=0.8)
    ax.plot([], [], "o", color="0.3", label="50 % of the ERF mass")
    ax.plot([], [], "s", color="0.3", markerfacecolor="white", label="99 % of the ERF mass")
    ax.set_xlim(0, 1.05 * top)
    ax.set_ylim(0, 1.05 * top)
    ax.set_xlabel("CEM effective distance (px from the ROI centre)", fontsize=7)
    ax.set_ylabel("ERF radius (px from the ROI centre)", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or "where gradients reach vs where interventions matter", fontsize=8)
    return save_figure(fig, path)
