"""The figures of one finished map, drawn from a result object: into its run folder, or as a figure to show.

The result is read by its attributes only (a :class:`~cem_lab.causal.result.CEMResult` or anything
shaped like it), so viz stays below the causal core: the core never draws, its callers do.
:meth:`CEMResult.plot <cem_lab.causal.result.CEMResult.plot>` calls :func:`plot_result`.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cem_lab.errors import InputError
from cem_lab.io import PathLike, write_json
from cem_lab.run_format import FIGURES_DIR
from cem_lab.viz import cem_figures
from cem_lab.viz.canvas import add_axes_in, new_figure
from cem_lab.viz.cem_charts import check_counts, draw_effect_colorbar, draw_pie
from cem_lab.viz.style import STYLE_FILE, FigureStyle, faint_note, use_style

__all__ = ["PLOT_KINDS", "draw_run_figures", "plot_result", "save_result_figures"]

#: what :func:`plot_result` draws
PLOT_KINDS: tuple[str, ...] = ("panel", "overlay", "pie")


def _arrays(result) -> dict[str, Any]:
    return {
        "effect": result.effect,
        "roi_mask": result.roi_mask,
        "classification": result.classification,
        "roi": result.roi.as_list(),
        "block": result.block,
        "output_shape": result.output_shape,
        "degraded_input_rgb": result.images.get("input"),
        "restored_rgb": result.images.get("restored"),
        "bound": float(result.meta.get("display_bound", 1.0)),
    }


def save_result_figures(result, folder: PathLike, style: FigureStyle | None = None) -> dict[str, str]:
    """Draw the figures of a CEM result (a :class:`~cem_lab.causal.result.CEMResult`, read by its
    attributes only) into ``folder`` (a run folder's ``figures/``) in ``style``; ``{name: path}`` as
    :func:`~cem_lab.viz.cem_figures.save_cem_figures`. ``style.json`` beside them records the style, so that a
    rerun asking for another one redraws them (:func:`cem_lab.bookkeeping.run_index.finished_run`)."""
    style = style or FigureStyle()
    written = cem_figures.save_cem_figures(
        folder,
        **_arrays(result),
        counts=result.block_counts(),
        title=result.meta.get("title", ""),
        roi_psnr=result.baseline_metric,
        unit=result.unit,
        style=style,
    )
    write_json(Path(folder) / STYLE_FILE, style.as_setting())
    return written


def draw_run_figures(result, run_folder: PathLike, style: FigureStyle | None = None) -> dict[str, str]:
    """Draw the figures of ``result`` into the run folder ``run_folder`` (its ``figures/``).

    The signature is the core's ``on_saved(result, folder)`` hook (:func:`cem_lab.causal.run.run_cem`)."""
    return save_result_figures(result, Path(run_folder) / FIGURES_DIR, style=style)


def plot_result(
    result, ax: Axes | None = None, kind: str = "panel", style: FigureStyle | None = None, fix: str = 'range="auto"'
) -> Figure:
    """Draw ``result`` and return the figure: ``kind="panel"`` (the run folder's cem_panel: input, restored
    with the ROI and its inset, the map with its colour bar, the pie; a figure of its own, so ``ax`` must be
    None), ``"overlay"`` (the map on the degraded input, ROI in green, range and min / max in the title) or
    ``"pie"`` (the blocks outside the ROI by effect sign), drawn into ``ax`` when given (e.g. one of a
    pyplot grid) or a new figure. ``style`` sets the colour range (``FigureStyle(range="auto")``); ``fix``: how a
    faint map's note tells the caller to widen the range (``--range auto`` for a command)."""
    if kind not in PLOT_KINDS:
        raise InputError(f"kind={kind!r} is not one of {', '.join(PLOT_KINDS)}")
    if kind == "panel" and ax is not None:
        raise InputError('kind="panel" draws a figure of its own (four panels); pass ax=None, or kind="overlay"')
    _show_in_notebooks()
    with use_style(style):
        arrays = _arrays(result)
        counts = check_counts(result.block_counts())
        if kind == "pie":
            fig, ax = _target(ax, 3.2, 3.6, (0.3, 0.9, 2.6, 2.3))
            draw_pie(ax, counts)
            ax.set_title(f"blocks by effect sign (n = {sum(counts.values())})")
            return fig
        d = cem_figures.checked_arrays(**arrays)
        if kind == "panel":
            return cem_figures.panel_figure(
                d, counts, result.meta.get("title", ""), result.baseline_metric, result.unit
            )
        note = faint_note([d["effect"]], [d["roi_mask"]], d["bound"], result.unit, fix=fix)
        own = ax is None
        lift = 0.3 if note and own else 0.0  # room for the note under the colour bar
        fig, ax = _target(ax, 3.6, 4.3 + lift, (0.1, 0.85 + lift, 3.4, 3.0))
        ax.imshow(d["overlay"], interpolation="antialiased")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"causal effect map\n({cem_figures.range_words(d['bound'], result.unit, d['range'])})")
        if own:
            cax = add_axes_in(fig, 0.45, 0.4 + lift, 2.7, 0.14)
            draw_effect_colorbar(fig, cax, d["bound"], 1.2, d["vmin"], d["vmax"], result.unit)
            if note:
                fig.text(
                    0.5,
                    0.04 / fig.get_figheight(),
                    textwrap.fill(note, 60),
                    ha="center",
                    va="bottom",
                    fontsize=6.5,
                    color="#a00000",
                )
        elif note:
            ax.set_xlabel(textwrap.fill(note, 44), fontsize=6.5, color="#a00000")
        return fig


def _show_in_notebooks() -> None:
    """Let IPython / Jupyter show a returned figure as an image: the figures here are built without pyplot (no
    global state), and IPython registers its PNG formatter for figures only once pyplot's inline backend is
    on, so a bare figure would print as ``<Figure size ...>``. Registering the formatter is what
    ``%matplotlib inline`` does for figures; outside IPython nothing happens."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return
    from IPython.core.pylabtools import print_figure

    png = shell.display_formatter.formatters["image/png"]
    if Figure not in png.type_printers:
        png.for_type(Figure, lambda fig: print_figure(fig, "png", bbox_inches="tight"))


def _target(ax: Axes | None, width: float, height: float, box: tuple[float, float, float, float]):
    """``(figure, axes)``: ``ax`` and its figure, or a new figure (``width`` x ``height`` inches) with axes at
    ``box`` (inches)."""
    if ax is not None:
        return ax.figure, ax
    fig = new_figure(width, height, dpi=130)
    return fig, add_axes_in(fig, *box)
