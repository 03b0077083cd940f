"""The figure of a channel map (arrays in, files out; the numbers: :mod:`cem_lab.causal.channels`).

:func:`save_channel_figure`: the layer's channels ranked by their mean causal effect on the ROI (most helpful
first), one bar each with its 95 % interval, red where the channel's own content helps the ROI and blue where
it hurts (the CE map's colours), grey where the interval holds 0; each image's effect as a dot on its bar.
With more than ``max_bars`` channels, the most helpful and the most harmful halves are drawn, and the title
says how many are left out. Written with :func:`cem_lab.viz.canvas.save_figure` in the current style's formats.
"""

from __future__ import annotations

import textwrap

import numpy as np

from cem_lab.io import PathLike
from cem_lab.viz.canvas import add_axes_in, new_figure, save_figure

#: the CE map's ends (matplotlib's "seismic": red helps, blue hurts) and a neutral grey
HELPS, HURTS, NEUTRAL = "#c0151b", "#1f3fbf", "#9a9a9a"


def channel_colours(mean: np.ndarray, low: np.ndarray, high: np.ndarray) -> list[str]:
    """Red where the interval lies above 0, blue below, grey where it holds 0 (or is unknown)."""
    out = []
    for m, lo, hi in zip(mean, low, high):
        if np.isfinite(lo) and lo > 0:
            out.append(HELPS)
        elif np.isfinite(hi) and hi < 0:
            out.append(HURTS)
        elif not (np.isfinite(lo) and np.isfinite(hi)) and np.isfinite(m) and m != 0:
            out.append(HELPS if m > 0 else HURTS)  # no interval (one sample): the sign alone
        else:
            out.append(NEUTRAL)
    return out


def shown_channels(mean: np.ndarray, max_bars: int) -> tuple[np.ndarray, int]:
    """The channels drawn, in rank order (largest mean first), and how many are left out in the middle."""
    order = np.argsort(-np.nan_to_num(mean, nan=-np.inf), kind="stable")
    if len(order) <= max_bars:
        return order, 0
    half = max_bars // 2
    return np.concatenate([order[:half], order[-(max_bars - half) :]]), len(order) - max_bars


def save_channel_figure(
    path: PathLike,
    *,
    mean: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    per_image: np.ndarray | None = None,
    title: str = "",
    unit: str = "dB",
    max_bars: int = 48,
    dpi: int = 120,
) -> str:
    """Draw the ranked channels; returns the path written. ``mean``, ``low``, ``high``: per channel;
    ``per_image``: (images, channels) effects drawn as dots."""
    mean, low, high = (np.asarray(a, dtype=np.float64) for a in (mean, low, high))
    shown, left_out = shown_channels(mean, max_bars)
    n = len(shown)
    plot_w = max(4.0, n * 0.19)
    fig_w = plot_w + 1.2
    per_line = int((fig_w - 0.3) * 72 / (0.56 * 8))  # characters of 8 pt text per line, with a margin
    note = f"; {left_out} middle channels not drawn" if left_out else ""
    has_ci = bool((np.isfinite(low[shown]) & np.isfinite(high[shown])).any())
    has_dots = per_image is not None and np.asarray(per_image).shape[0] > 1
    legend = "red: helps the ROI, blue: hurts it" + (", grey: interval holds 0" if has_ci else ", grey: no effect")
    legend += "; whiskers: 95 % intervals" if has_ci else ""
    legend += "; dots: the images" if has_dots else ""
    legend += note
    head = textwrap.wrap(title, per_line) if title else []
    sub = textwrap.wrap(legend, int(per_line * 8 / 7))
    head_h = 0.25 + 0.16 * len(head) + 0.14 * len(sub)
    fig = new_figure(fig_w, 2.85 + head_h, dpi=dpi)
    ax = add_axes_in(fig, 0.85, 0.75, plot_w, 2.0)
    x = np.arange(n)
    colours = channel_colours(mean[shown], low[shown], high[shown])
    ax.bar(x, np.nan_to_num(mean[shown]), width=0.75, color=colours, zorder=2)
    lo, hi = low[shown], high[shown]
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
        m = mean[shown][ok]
        ax.errorbar(
            x[ok], m, yerr=[m - lo[ok], hi[ok] - m], fmt="none", ecolor="black", elinewidth=0.8, capsize=1.5, zorder=3
        )
    if has_dots:
        for row in np.asarray(per_image, dtype=np.float64)[:, shown]:
            ax.scatter(x, row, s=5, color="black", alpha=0.45, linewidths=0, zorder=4)
    ax.axhline(0, color="black", linewidth=0.6, zorder=1)
    if left_out:
        ax.axvline(max_bars // 2 - 0.5, color=NEUTRAL, linewidth=0.8, linestyle=(0, (3, 2)))
    ax.set_xticks(x)
    ax.set_xticklabels([str(int(c)) for c in shown], fontsize=6 if n > 24 else 7, rotation=90)
    ax.set_xlim(-0.7, n - 0.3)
    ax.set_xlabel("channel (ranked: most helpful first)", fontsize=8)
    ax.set_ylabel(f"effect on the ROI ({unit})", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", linewidth=0.4, alpha=0.5, zorder=0)
    fw, fh = fig.get_size_inches()
    y = fh - 0.1
    for line in head:
        fig.text(0.1 / fw, y / fh, line, fontsize=8, va="top", ha="left")
        y -= 0.16
    for line in sub:
        fig.text(0.1 / fw, y / fh, line, fontsize=7, va="top", ha="left", color="#333333")
        y -= 0.14
    return save_figure(fig, path)
