"""The colour bar and the pie of a Causal Effect Map, as matplotlib drawings and as PNG files.

- :func:`draw_effect_colorbar` / :func:`save_colorbar`: the seismic bar over [-bound, bound] with the
  power mapping of :func:`cem_lab.viz.cem_maps.effect_to_rgb`, the actual min / max marked;
- :func:`draw_pie` / :func:`save_pie`: the blocks outside the ROI by effect sign.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colorbar import Colorbar
from matplotlib.figure import Figure
from matplotlib.patches import Wedge
from matplotlib.transforms import offset_copy

from cem_lab.errors import InputError
from cem_lab.io import PathLike
from cem_lab.viz.canvas import add_axes_in, new_figure, save_figure
from cem_lab.viz.cem_maps import check_bound, effect_mappable

PIE_COLORS: dict[str, str] = {"positive": "#d62728", "negative": "#1f4fd6", "zero": "#d3d3d3"}
COUNT_KEYS: tuple[str, ...] = ("positive", "negative", "zero")


def check_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """The block counts as ``{positive, negative, zero}`` ints (missing keys 0); a ValueError for unknown keys
    or values that are not non-negative integers."""
    unknown = set(counts) - set(COUNT_KEYS)
    if unknown:
        raise InputError(f"counts has unknown keys {sorted(unknown)}; expected {list(COUNT_KEYS)}")
    out: dict[str, int] = {}
    for key in COUNT_KEYS:
        value = counts.get(key, 0)
        if int(value) != value or value < 0:
            raise InputError(f"counts[{key!r}] must be a non-negative integer, got {value!r}")
        out[key] = int(value)
    return out


def format_effect(value: float, unit: str) -> str:
    """An effect as text with its sign and unit: ``0 dB``, ``+1.25 dB``, ``\u22120.50 dB``."""
    text = "0" if value == 0 else f"{value:+.2f}".replace("-", "\u2212")
    return f"{text}\u00a0{unit}" if unit else text  # a no-break space: a wrapped label keeps "+5.16 dB" whole


def draw_effect_colorbar(
    fig: Figure,
    cax: Axes,
    bound: float,
    gamma: float,
    vmin: float | None,
    vmax: float | None,
    unit: str,
    fontsize: float = 8,
) -> Colorbar:
    """Horizontal colour bar in ``cax``: ticks at -bound, 0, +bound in ``unit``, a line at 0, and
    black triangles above the bar at the actual min / max (clipped to the bar)."""
    cbar = fig.colorbar(effect_mappable(bound, gamma), cax=cax, orientation="horizontal")
    cbar.set_ticks([-bound, 0.0, bound])
    cbar.set_ticklabels([f"\u2212{bound:.3g} {unit}".strip(), f"0 {unit}".strip(), f"+{bound:.3g} {unit}".strip()])
    cax.tick_params(labelsize=fontsize, length=3)
    cax.axvline(0.0, color="black", linewidth=0.8)
    above = offset_copy(cax.get_xaxis_transform(), fig=fig, y=4, units="points")
    for value in (vmin, vmax):
        if value is not None and math.isfinite(value):
            cax.plot(
                [float(np.clip(value, -bound, bound))],
                [1.0],
                marker="v",
                markersize=6,
                color="black",
                transform=above,
                clip_on=False,
                linestyle="none",
            )
    return cbar


def save_colorbar(path: PathLike, vmin: float, vmax: float, bound: float, gamma: float = 1.2, unit: str = "dB") -> str:
    """Horizontal seismic colour bar over [-bound, bound] (same power mapping as the map), PNG.

    The actual min and max effect are written at its left / right ends and marked by
    triangles above the bar; 0 is marked by a line and a tick. Returns the path written.
    """
    bound, gamma = check_bound(bound, gamma)
    fig = new_figure(6.0, 1.25, dpi=120)
    cax = add_axes_in(fig, 1.05, 0.45, 3.9, 0.3)
    draw_effect_colorbar(fig, cax, bound, gamma, vmin, vmax, unit)
    cax.set_title(f"causal effect ({unit}), colour range \u00b1{bound:.3g}", fontsize=9, pad=10)
    cax.text(
        -0.03, 0.5, f"min\n{format_effect(vmin, unit)}", transform=cax.transAxes, ha="right", va="center", fontsize=8
    )
    cax.text(
        1.03, 0.5, f"max\n{format_effect(vmax, unit)}", transform=cax.transAxes, ha="left", va="center", fontsize=8
    )
    return save_figure(fig, path)


def draw_pie(ax: Axes, counts: Mapping[str, int], fontsize: float = 9) -> None:
    """Pie of the block classes on ``ax``; an empty ring with a note when all counts are 0."""
    counts = check_counts(counts)
    total = sum(counts.values())
    ax.set_aspect("equal")
    if total == 0:
        ax.add_patch(Wedge((0, 0), 1.0, 0, 360, width=0.3, facecolor="none", edgecolor="0.6", linewidth=1.5))
        ax.text(0, 0, "no blocks\ncounted", ha="center", va="center", fontsize=fontsize, color="0.35")
        ax.set_xlim(-1.1, 1.1)
        ax.set_ylim(-1.1, 1.1)
        ax.axis("off")
        return
    keys = [k for k in COUNT_KEYS if counts[k] > 0]
    sizes = [counts[k] for k in keys]
    colors = [PIE_COLORS[k] for k in keys]
    text_colors = {"positive": "white", "negative": "white", "zero": "black"}

    def pct(share: float) -> str:
        return f"{share:.1f}%" if share >= 7.0 else ""

    wedges, _, autotexts = ax.pie(
        sizes,
        colors=colors,
        autopct=pct,
        startangle=90,
        counterclock=False,
        pctdistance=0.65,
        wedgeprops={"edgecolor": "white", "linewidth": 1.0},
        textprops={"fontsize": fontsize},
    )
    for key, text in zip(keys, autotexts):
        text.set_color(text_colors[key])
        if len(keys) == 1:  # a full disc: put its 100% in the centre
            text.set_position((0.0, 0.0))
    handles = [w for w in wedges]
    labels = [f"{k}: {counts[k]} ({100.0 * counts[k] / total:.1f}%)" for k in keys]
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False, fontsize=fontsize)


def save_pie(path: PathLike, counts: Mapping[str, int]) -> str:
    """Pie chart of block classes (positive red, negative blue, zero light grey), PNG.

    Shares are printed in %, the legend gives the counts. All-zero counts give an
    empty ring with a note. Returns the path written.
    """
    fig = new_figure(3.6, 4.0)
    ax = add_axes_in(fig, 0.4, 1.0, 2.8, 2.6)
    draw_pie(ax, counts)
    ax.set_title(f"blocks by effect sign (n = {sum(check_counts(counts).values())})", fontsize=10)
    return save_figure(fig, path)
