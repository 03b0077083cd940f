"""Drawing primitives for Causal Effect Maps: colour mapping and overlays (cem_maps), colour bar and pie
(cem_charts), the figure files of one run and its summary panel (cem_figures), state-free canvases (canvas),
how figures are written and styled (style: formats, dpi, colour range, theme).

The names below load on first use (PEP 562), so that ``cem_lab.viz.style`` is read without matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "FIGURE_FILES",
    "TASK_BOUNDS",
    "FigureStyle",
    "cem_overlay",
    "draw_roi_box",
    "effect_to_rgb",
    "save_cem_figures",
    "save_colorbar",
    "save_pie",
    "draw_run_figures",
    "plot_result",
    "save_result_figures",
    "use_style",
]

#: public name -> the module that defines it
_HOMES = {
    "FIGURE_FILES": "cem_lab.viz.cem_figures",
    "TASK_BOUNDS": "cem_lab.viz.cem_maps",
    "FigureStyle": "cem_lab.viz.style",
    "cem_overlay": "cem_lab.viz.cem_maps",
    "draw_roi_box": "cem_lab.viz.cem_maps",
    "effect_to_rgb": "cem_lab.viz.cem_maps",
    "save_cem_figures": "cem_lab.viz.cem_figures",
    "save_colorbar": "cem_lab.viz.cem_charts",
    "save_pie": "cem_lab.viz.cem_charts",
    "draw_run_figures": "cem_lab.viz.result_figures",
    "plot_result": "cem_lab.viz.result_figures",
    "save_result_figures": "cem_lab.viz.result_figures",
    "use_style": "cem_lab.viz.style",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'cem_lab.viz' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
