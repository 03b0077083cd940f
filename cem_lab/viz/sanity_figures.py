"""The figure of a randomisation sanity check (arrays in, files out; the numbers:
:mod:`cem_lab.attribution.sanity`).

:func:`save_sanity_figure`: one panel per similarity measure (Spearman, SSIM, top-k overlap), the similarity
of each method's map to the trained one against the randomisation step (the trained network first, then the
layer randomised at each step, names shortened), one line per method with its 95 % band over images, and the
verdict's threshold on the Spearman panel; below, optionally, one image's maps at a few steps (each scaled
to its own largest value). Written with :func:`cem_lab.viz.canvas.save_figure` in the current style's formats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from cem_lab.io import PathLike
from cem_lab.viz.canvas import add_axes_in, new_figure, save_figure
from cem_lab.viz.style import categorical

MEASURE_LABELS = {"spearman": "Spearman of |values|", "ssim": "SSIM of block maps", "topk": "top-k overlap"}


def short_layer(name: str, width: int = 12) -> str:
    """A layer name short enough for a tick label: its last two dotted parts, cut to ``width`` characters."""
    parts = str(name).split(".")
    text = ".".join(parts[-2:]) if len(parts) > 1 else str(name)
    return text if len(text) <= width else "\u2026" + text[-(width - 1) :]


def _nan(v) -> float:
    return math.nan if v is None else float(v)


def save_sanity_figure(
    path: PathLike,
    *,
    steps: Sequence[str],
    similarity: Mapping[str, Mapping[str, Sequence[Mapping[str, float | None]]]],
    threshold: float | None = None,
    maps: Mapping[str, np.ndarray] | None = None,
    map_steps: Sequence[int] = (),
    title: str = "",
    dpi: int = 120,
) -> str:
    """Draw the check; returns the path written.

    ``steps``: the layer randomised at each step; ``similarity[method][measure]``: per step a dict with
    ``mean``, ``low``, ``high`` (None: no interval); ``threshold``: drawn on the Spearman panel;
    ``maps[method]``: (1 + steps, rows, cols) block maps of one image (index 0 the trained network), drawn at
    the step indices ``map_steps`` (0 = trained).
    """
    methods = list(similarity)
    measures = list(next(iter(similarity.values()))) if methods else []
    n = len(steps)
    x = np.arange(n + 1)
    labels = ["trained"] + [short_layer(s) for s in steps]
    pw, ph, gap = 3.0, 2.2, 0.65
    show_maps = bool(maps) and len(map_steps) > 0
    mrows = len(maps) if show_maps else 0
    cell = 1.05
    head = 0.5 if title else 0.2
    top_h = 0.95 + ph + head
    fig_w = 0.6 + len(measures) * (pw + gap)
    fig_w = max(fig_w, 1.4 + cell * len(map_steps)) if show_maps else fig_w
    fig_h = top_h + (mrows * cell + 0.35 if show_maps else 0.0)
    fig = new_figure(fig_w, fig_h, dpi=dpi)
    base = fig_h - head - ph
    for j, measure in enumerate(measures):
        ax = add_axes_in(fig, 0.6 + j * (pw + gap), base, pw, ph)
        for k, method in enumerate(methods):
            rows = similarity[method][measure]
            mean = np.array([1.0] + [_nan(r.get("mean")) for r in rows])
            low = np.array([1.0] + [_nan(r.get("low")) for r in rows])
            high = np.array([1.0] + [_nan(r.get("high")) for r in rows])
            colour = categorical(k)
            ax.plot(x, mean, "-o", color=colour, markersize=3, lw=1.2, label=method)
            ok = np.isfinite(low) & np.isfinite(high)
            if ok[1:].any():
                ax.fill_between(x, np.where(ok, low, mean), np.where(ok, high, mean), color=colour, alpha=0.2, lw=0)
        if measure == "spearman" and threshold is not None:
            ax.axhline(threshold, color="black", lw=0.8, ls="--", label=f"pass below {threshold:g}")
        ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.05)
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=6.5)
        ax.set_xlim(-0.3, n + 0.3)
        ax.set_title(MEASURE_LABELS.get(measure, measure), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        if j == 0:
            ax.set_ylabel("similarity to the trained map", fontsize=7)
            ax.legend(fontsize=6.5, frameon=False, loc="lower left")
    if show_maps:
        for r, method in enumerate(maps):
            stack = np.abs(np.asarray(maps[method], dtype=np.float64))
            for c, step in enumerate(map_steps):
                ax = add_axes_in(fig, 1.2 + c * cell, (mrows - 1 - r) * cell + 0.1, cell * 0.92, cell * 0.92)
                m = stack[step]
                top = float(m.max()) if m.max() > 0 else 1.0
                ax.imshow(m / top, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(labels[step], fontsize=6.5)
                if c == 0:
                    fig.text(
                        1.12 / fig_w,
                        ((mrows - 1 - r) * cell + 0.1 + cell * 0.46) / fig_h,
                        method,
                        ha="right",
                        va="center",
                        fontsize=7,
                    )
    if title:
        fig.text(0.5, 1.0 - 0.08 / fig_h, title, ha="center", va="top", fontsize=9)
    return save_figure(fig, path)
