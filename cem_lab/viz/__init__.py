"""Figures for Causal Effect Maps: colour mapping, overlays, colour bar, pie and the summary panel."""

from __future__ import annotations

from cem_lab.viz.cem_figures import (
    FIGURE_FILES,
    TASK_BOUNDS,
    cem_overlay,
    draw_roi_box,
    effect_to_rgb,
    save_cem_figures,
    save_colorbar,
    save_pie,
)
from cem_lab.viz.result_figures import draw_run_figures, save_result_figures

__all__ = [
    "FIGURE_FILES",
    "TASK_BOUNDS",
    "cem_overlay",
    "draw_roi_box",
    "effect_to_rgb",
    "save_cem_figures",
    "save_colorbar",
    "save_pie",
    "draw_run_figures",
    "save_result_figures",
]
