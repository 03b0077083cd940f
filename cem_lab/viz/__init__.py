"""Drawing primitives for Causal Effect Maps: colour mapping and overlays (cem_maps), colour bar and pie
(cem_charts), the figure files of one run and its summary panel (cem_figures), state-free canvases (canvas)."""

from __future__ import annotations

from cem_lab.viz.cem_charts import save_colorbar, save_pie
from cem_lab.viz.cem_figures import FIGURE_FILES, save_cem_figures
from cem_lab.viz.cem_maps import TASK_BOUNDS, cem_overlay, draw_roi_box, effect_to_rgb
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
