"""The figure files of one Causal Effect Map run and its summary panel.

:func:`save_cem_figures` writes cem_overlay.png and restored_roi.png (pixel-exact, output size),
colorbar.png, pie.png and cem_panel.png (degraded input | restored with the ROI box | overlay with
its colour bar | pie). The arrays come from :mod:`cem_lab.viz.cem_maps`, the colour bar and the pie
from :mod:`cem_lab.viz.cem_charts`; every file is written atomically with no global matplotlib state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
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
) -> dict[str, str]:
    """Write the CEM figures into ``folder`` and return ``{name: path}``.

    Files: cem_overlay.png and restored_roi.png (pixel-exact, output size),
    colorbar.png, pie.png and cem_panel.png (degraded input | restored with ROI box |
    overlay with colour bar | pie). Names are the file stems (``"cem_overlay"``, ...).
    ``counts=None`` counts ``classification`` outside the ROI.
    """
    effect, roi_mask = check_grid(effect, roi_mask, classification)
    bound, _ = check_bound(bound, 1.2)
    h, w = check_output_shape(effect.shape, block, output_shape)
    roi_t = check_roi(roi, h, w)
    degraded = as_rgb_uint8(degraded_input_rgb, "degraded_input_rgb")
    restored = as_rgb_uint8(restored_rgb, "restored_rgb")
    if restored.shape[:2] != (h, w):
        raise InputError(f"restored_rgb is {restored.shape[:2]}, but output_shape is {(h, w)}")
    counts = check_counts(_counts_from_classification(classification, roi_mask) if counts is None else counts)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / fname for name, fname in FIGURE_FILES.items()}
    written: dict[str, str] = {}

    overlay = cem_overlay(effect, roi_mask, roi_t, block, (h, w), degraded, bound)
    restored_box = draw_roi_box(restored, roi_t)
    vmin, vmax = effect_range(effect, roi_mask)
    written["cem_overlay"] = save_png(overlay, paths["cem_overlay"])
    written["restored_roi"] = save_png(restored_box, paths["restored_roi"])
    written["colorbar"] = save_colorbar(paths["colorbar"], vmin, vmax, bound, unit=unit)
    written["pie"] = save_pie(paths["pie"], counts)

    written["cem_panel"] = save_figure(
        _panel_figure(degraded, restored_box, overlay, counts, bound, vmin, vmax, title, roi_psnr, unit),
        paths["cem_panel"],
    )
    return {name: written[name] for name in FIGURE_FILES}


def _panel_figure(
    degraded: np.ndarray,
    restored_box: np.ndarray,
    overlay: np.ndarray,
    counts: Mapping[str, int],
    bound: float,
    vmin: float,
    vmax: float,
    title: str,
    roi_psnr: float | None,
    unit: str,
) -> Figure:
    """Degraded input | restored with ROI box | overlay with colour bar | pie, laid out in inches."""
    h, w = overlay.shape[:2]
    aspect = w / h
    pw = float(np.clip(3.4 * aspect, 2.2, 5.0))  # image panel width (inches)
    ph = float(np.clip(pw / aspect, 1.2, 4.6))  # image panel height; imshow keeps the aspect inside
    pie_w, pie_d = 3.0, min(2.6, max(ph, 2.0))
    gap, margin = 0.3, 0.2
    title_h = 0.45 if title else 0.0
    head = title_h + 0.55  # suptitle + two-line panel titles
    below = 0.95  # colour bar, its tick labels and the min/max line under the overlay
    body = max(ph + below, pie_d + 0.9)
    fig_w = margin + 3 * pw + 3 * gap + pie_w + margin
    fig_h = head + body + 0.1
    fig = new_figure(fig_w, fig_h, dpi=130)

    top = fig_h - head  # top edge of the panels
    titles = [
        f"degraded input ({degraded.shape[0]}\u00d7{degraded.shape[1]})",
        f"restored ({h}\u00d7{w})" + (f"\nROI PSNR {roi_psnr:.2f} dB" if roi_psnr is not None else ""),
        f"causal effect map\n(colour range \u00b1{bound:g} {unit})",
    ]
    for k, (img, ttl) in enumerate(zip((degraded, restored_box, overlay), titles)):
        ax = add_axes_in(fig, margin + k * (pw + gap), top - ph, pw, ph)
        ax.imshow(img, interpolation="antialiased", aspect="equal")
        ax.set_title(ttl, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    cax = add_axes_in(fig, margin + 2 * (pw + gap) + 0.1 * pw, top - ph - 0.32, 0.8 * pw, 0.16)
    draw_effect_colorbar(fig, cax, bound, 1.2, vmin, vmax, unit)
    cax.set_xlabel(
        f"\u25bc min {format_effect(vmin, unit)}    \u25bc max {format_effect(vmax, unit)}", fontsize=8, labelpad=3
    )

    pie_ax = add_axes_in(fig, margin + 3 * (pw + gap) + (pie_w - pie_d) / 2, top - pie_d, pie_d, pie_d)
    draw_pie(pie_ax, counts)
    pie_ax.set_title(f"blocks by effect sign\n(n = {sum(counts.values())})", fontsize=10)
    if title:
        fig.text(0.5, 1.0 - 0.12 / fig_h, title, ha="center", va="top", fontsize=12)
    return fig
