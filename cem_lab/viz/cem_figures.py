"""The figure files of one Causal Effect Map run and its summary panel.

:func:`save_cem_figures` writes cem_overlay.png and restored_roi.png (pixel-exact, output size),
colorbar.png, pie.png and cem_panel.png (degraded input | restored with the ROI box | overlay with
its colour bar | pie). The arrays come from :mod:`cem_lab.viz.cem_maps`, the colour bar and the pie
from :mod:`cem_lab.viz.cem_charts`; every file is written atomically with no global matplotlib state.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cem_lab.errors import InputError
from cem_lab.io import PathLike
from cem_lab.viz.canvas import add_axes_in, new_figure, save_figure, save_png
from cem_lab.viz.cem_charts import (
    check_counts,
    draw_effect_colorbar,
    draw_pie,
    format_effect,
    save_colorbar,
    save_pie,
)
from cem_lab.viz.cem_maps import (
    Roi,
    as_rgb_uint8,
    cem_overlay,
    check_bound,
    check_grid,
    check_output_shape,
    check_roi,
    draw_roi_box,
    effect_range,
)
from cem_lab.viz.style import FigureStyle, current_style, faint_note, use_style

FIGURE_FILES: dict[str, str] = {
    "cem_overlay": "cem_overlay.png",
    "colorbar": "colorbar.png",
    "pie": "pie.png",
    "restored_roi": "restored_roi.png",
    "cem_panel": "cem_panel.png",
}


def _counts_from_classification(classification: np.ndarray, roi_mask: np.ndarray) -> dict[str, int]:
    cls = np.asarray(classification)[~roi_mask]
    return {"positive": int((cls > 0).sum()), "negative": int((cls < 0).sum()), "zero": int((cls == 0).sum())}


def save_cem_figures(
    folder: PathLike,
    *,
    effect: np.ndarray,
    roi_mask: np.ndarray,
    classification: np.ndarray,
    roi: Roi,
    block: int,
    output_shape: Sequence[int],
    degraded_input_rgb: np.ndarray,
    restored_rgb: np.ndarray,
    bound: float,
    counts: Mapping[str, int] | None = None,
    title: str = "",
    roi_psnr: float | None = None,
    unit: str = "dB",
    style: FigureStyle | None = None,
) -> dict[str, str]:
    """Write the CEM figures into ``folder`` and return ``{name: path}``.

    Files: cem_overlay.png and restored_roi.png (pixel-exact, output size), colorbar, pie and cem_panel
    (degraded input | restored with ROI box and a zoomed inset of the ROI | overlay with colour bar | pie) in
    the formats of ``style`` (:class:`~cem_lab.viz.style.FigureStyle`; default the current one). ``bound`` is
    the task's fixed colour range; ``style.range`` decides what is drawn (the paper's bound, ``auto`` or a
    number). Names are the file stems (``"cem_overlay"``, ...). ``counts=None`` counts ``classification``
    outside the ROI.
    """
    with use_style(style) as style:
        d = checked_arrays(
            effect, roi_mask, classification, roi, block, output_shape, degraded_input_rgb, restored_rgb, bound
        )
        counts = check_counts(_counts_from_classification(classification, d["roi_mask"]) if counts is None else counts)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {name: folder / fname for name, fname in FIGURE_FILES.items()}
        written: dict[str, str] = {}
        written["cem_overlay"] = save_png(d["overlay"], paths["cem_overlay"])
        written["restored_roi"] = save_png(d["restored_box"], paths["restored_roi"])
        written["colorbar"] = save_colorbar(paths["colorbar"], d["vmin"], d["vmax"], d["bound"], unit=unit)
        written["pie"] = save_pie(paths["pie"], counts)
        written["cem_panel"] = save_figure(panel_figure(d, counts, title, roi_psnr, unit), paths["cem_panel"])
    return {name: written[name] for name in FIGURE_FILES}


def checked_arrays(
    effect, roi_mask, classification, roi, block, output_shape, degraded_input_rgb, restored_rgb, bound
) -> dict[str, Any]:
    """The checked arrays of one map and what its figures draw: the overlay at the style's colour range, the
    restored image with its ROI box, the min / max outside the ROI and the faint-map note."""
    effect, roi_mask = check_grid(effect, roi_mask, classification)
    paper_bound, _ = check_bound(bound, 1.2)
    h, w = check_output_shape(effect.shape, block, output_shape)
    roi_t = check_roi(roi, h, w)
    degraded = as_rgb_uint8(degraded_input_rgb, "degraded_input_rgb")
    restored = as_rgb_uint8(restored_rgb, "restored_rgb")
    if restored.shape[:2] != (h, w):
        raise InputError(f"restored_rgb is {restored.shape[:2]}, but output_shape is {(h, w)}")
    style = current_style()
    shown = style.bound(paper_bound, [effect], [roi_mask])
    vmin, vmax = effect_range(effect, roi_mask)
    return {
        "effect": effect,
        "roi_mask": roi_mask,
        "roi": roi_t,
        "degraded": degraded,
        "restored": restored,
        "restored_box": draw_roi_box(restored, roi_t),
        "overlay": cem_overlay(effect, roi_mask, roi_t, block, (h, w), degraded, shown),
        "bound": shown,
        "range": style.range,
        "vmin": vmin,
        "vmax": vmax,
    }


def range_words(bound: float, unit: str, range_: Any) -> str:
    """The colour range of a map in words: its bound and where it came from (``figures.range``)."""
    how = {"paper": "the task's fixed range", "auto": "auto: largest |CE|"}.get(range_, "a range set by hand")
    return f"colour range \u00b1{bound:.3g} {unit}, {how}"


def _inset_corner(roi: tuple[int, int, int], h: int, w: int) -> tuple[float, float]:
    """The (x, y) axes fraction of the inset's lower-left corner: the image corner farthest from the ROI."""
    top, left, size = roi
    cy, cx = top + size / 2, left + size / 2
    x = 0.02 if cx > w / 2 else 0.6
    y = 0.6 if cy > h / 2 else 0.02  # imshow's y axis runs downwards: axes y 0.56 is the image's top half
    return x, y


def draw_roi_inset(ax: Axes, restored: np.ndarray, roi: tuple[int, int, int]) -> Axes:
    """A zoomed inset of the ROI and its neighbourhood (half an ROI size around it) on ``ax`` (the restored image),
    in the image corner farthest from the ROI, framed, with the ROI outlined."""
    h, w = restored.shape[:2]
    top, left, size = roi
    half = max(size // 2, 4)
    r0, r1 = max(top - half, 0), min(top + size + half, h)
    c0, c1 = max(left - half, 0), min(left + size + half, w)
    # the box about 1/32 of the crop thick, so that it stays a line when the inset is drawn small
    crop = draw_roi_box(restored[r0:r1, c0:c1], (top - r0, left - c0, size), thickness=max(1, (r1 - r0) // 32))
    x, y = _inset_corner(roi, h, w)
    inset = ax.inset_axes((x, y, 0.38, 0.38))
    inset.imshow(crop, interpolation="nearest", aspect="equal")
    inset.set_xticks([])
    inset.set_yticks([])
    for spine in inset.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor("white")
        spine.set_linewidth(1.5)
    return inset


def panel_figure(
    d: Mapping[str, Any], counts: Mapping[str, int], title: str, roi_psnr, unit: str, fix: str = "figures.range=auto"
) -> Figure:
    """Degraded input | restored with ROI box and inset | overlay with colour bar | pie, laid out in inches."""
    degraded, restored_box, overlay, bound = d["degraded"], d["restored_box"], d["overlay"], d["bound"]
    note = faint_note([d["effect"]], [d["roi_mask"]], bound, unit, fix=fix)  # fix: how the caller widens it
    h, w = overlay.shape[:2]
    aspect = w / h
    pw = float(np.clip(3.4 * aspect, 2.2, 5.0))  # image panel width (inches)
    ph = float(np.clip(pw / aspect, 1.2, 4.6))  # image panel height; imshow keeps the aspect inside
    pie_w, pie_d = 3.0, min(2.6, max(ph, 2.0))
    gap, margin = 0.3, 0.2
    title_h = 0.45 if title else 0.0
    head = title_h + 0.55  # suptitle + two-line panel titles
    below = 0.95 + (0.4 if note else 0.0)  # colour bar, its tick labels, the min/max line (and the note)
    body = max(ph + below, pie_d + 0.9)
    fig_w = margin + 3 * pw + 3 * gap + pie_w + margin
    fig_h = head + body + 0.1
    fig = new_figure(fig_w, fig_h, dpi=130)

    top = fig_h - head  # top edge of the panels
    titles = [
        f"degraded input ({degraded.shape[0]}\u00d7{degraded.shape[1]})",
        f"restored ({h}\u00d7{w})" + (f"\nROI PSNR {roi_psnr:.2f} dB" if roi_psnr is not None else ""),
        "causal effect map\n(" + range_words(bound, unit, d["range"]) + ")",
    ]
    axes = []
    for k, (img, ttl) in enumerate(zip((degraded, restored_box, overlay), titles)):
        ax = add_axes_in(fig, margin + k * (pw + gap), top - ph, pw, ph)
        ax.imshow(img, interpolation="antialiased", aspect="equal")
        ax.set_title(ttl, fontsize=9 if k == 2 else 10)
        ax.set_xticks([])
        ax.set_yticks([])
        axes.append(ax)
    draw_roi_inset(axes[1], d["restored"], d["roi"])
    cax = add_axes_in(fig, margin + 2 * (pw + gap) + 0.1 * pw, top - ph - 0.32, 0.8 * pw, 0.16)
    draw_effect_colorbar(fig, cax, bound, 1.2, d["vmin"], d["vmax"], unit)
    cax.set_xlabel(
        f"\u25bc min {format_effect(d['vmin'], unit)}    \u25bc max {format_effect(d['vmax'], unit)}",
        fontsize=8,
        labelpad=3,
    )
    if note:
        fig.text(
            (margin + 2 * (pw + gap) + pw / 2) / fig_w,
            (top - ph - 0.86) / fig_h,
            textwrap.fill(note, 48),
            ha="center",
            va="top",
            fontsize=7.5,
            color="#a00000",
        )

    pie_ax = add_axes_in(fig, margin + 3 * (pw + gap) + (pie_w - pie_d) / 2, top - pie_d, pie_d, pie_d)
    draw_pie(pie_ax, counts)
    pie_ax.set_title(f"blocks by effect sign\n(n = {sum(counts.values())})", fontsize=10)
    if title:
        fig.text(0.5, 1.0 - 0.12 / fig_h, title, ha="center", va="top", fontsize=12)
    return fig
