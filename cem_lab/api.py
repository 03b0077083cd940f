"""The user-facing calls: the causal core's maps with their figures.

``cem_lab.compute_cem`` is :func:`compute_cem` here: :func:`cem_lab.causal.run.compute_cem` (numbers,
images, summary, checkpoints) plus the figures of :mod:`cem_lab.viz` in the run folder. The core never
draws; this module is where a result meets its figures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from cem_lab.causal import run as core
from cem_lab.causal.atlas import AtlasResult, prepare_atlas
from cem_lab.causal.job import CEMJob
from cem_lab.causal.result import CEMResult
from cem_lab.causal.settings import DEFAULT_CHECKPOINT_S
from cem_lab.folder_lock import hold_run_folder
from cem_lab.run_format import FIGURES_DIR
from cem_lab.viz.style import FigureStyle  # plain settings (no matplotlib)

#: what the ``figures`` keyword takes: True / False, a FigureStyle, or a mapping like the ``figures`` setting
#: (``{"format": ["png", "pdf"], "dpi": 300, "range": "auto"}``)
Figures = bool | FigureStyle | Mapping[str, Any]


def draw_figures(result: CEMResult, folder: str | Path, style: FigureStyle | None = None) -> dict[str, str]:
    """Draw the figures of ``result`` into its run folder ``folder`` (``figures/``) in ``style``."""
    from cem_lab.viz.result_figures import draw_run_figures  # lazy: matplotlib (~0.5 s), once a map is drawn

    return draw_run_figures(result, folder, style=style)


def figure_drawer(figures: Figures) -> Callable[[CEMResult, Path], Any] | None:
    """The core's ``on_saved`` hook for a ``figures`` keyword: None when no figures are asked for. A bad
    setting is refused here, before any compute (:meth:`FigureStyle.from_setting`)."""
    style = FigureStyle.from_setting(figures)
    return partial(draw_figures, style=style) if style.draw else None


def save_result(result: CEMResult, folder: str | Path, figures: Figures = True) -> Path:
    """Save ``result`` in the run folder ``folder``: numbers, images, summary and (by default) figures."""
    drawer = figure_drawer(figures)
    result.save(folder)
    if drawer is not None:
        drawer(result, Path(folder))
    return Path(folder)


def compute_cem(
    model,
    image,
    task,
    roi,
    *,
    output_dir: str | Path | None = None,
    figures: Figures = True,
    lock_folder: bool = True,
    **kwargs: Any,
) -> CEMResult:
    """:func:`cem_lab.causal.run.compute_cem` (same arguments), with the figures drawn into
    ``output_dir/figures`` when ``figures`` (and an ``output_dir``) is given: True, False, a
    :class:`~cem_lab.viz.style.FigureStyle` or a mapping (``{"format": ["png", "pdf"], "range": "auto"}``)."""
    drawer = figure_drawer(figures)
    return core.compute_cem(
        model,
        image,
        task,
        roi,
        output_dir=output_dir,
        lock_folder=lock_folder,
        on_saved=drawer,
        **kwargs,
    )


def run_cem(job: CEMJob, output_dir: str | Path | None = None, *, figures: Figures = True, **kwargs: Any) -> CEMResult:
    """:func:`cem_lab.causal.run.run_cem` (same arguments), with the figures drawn into
    ``output_dir/figures`` when ``figures`` (as :func:`compute_cem`)."""
    return core.run_cem(job, output_dir, on_saved=figure_drawer(figures), **kwargs)


def save_atlas(result: AtlasResult, folder: str | Path, figures: Figures = True) -> Path:
    """Save an atlas in ``folder`` (:meth:`AtlasResult.save <cem_lab.causal.atlas.AtlasResult.save>`) with,
    by default, every ROI's figures and the atlas figure (``figures/atlas.png``)."""
    folder = Path(folder)
    drawn = None
    style = FigureStyle.from_setting(figures)
    if style.draw:
        from cem_lab.viz.atlas_figures import save_atlas_figure  # lazy: matplotlib, only once an atlas is drawn
        from cem_lab.viz.style import use_style

        for k, r in enumerate(result.results):
            draw_figures(r, result.roi_folder(folder, k), style=style)
        with use_style(style):
            drawn = {"atlas": str(save_atlas_figure(folder / FIGURES_DIR / "atlas.png", result))}
    return result.save(folder, figures=drawn)


def compute_atlas(
    model,
    image,
    task,
    rois,
    *,
    output_dir: str | Path | None = None,
    figures: Figures = True,
    progress: bool = True,
    checkpoint_every: float | None = DEFAULT_CHECKPOINT_S,
    **kwargs: Any,
) -> AtlasResult:
    """The ROI atlas (:mod:`cem_lab.causal.atlas`): every ROI's map from one set of full-image passes.
    With ``output_dir`` the run is locked, checkpointed, resumed when rerun, and saved (with figures
    when ``figures``); the keywords are :func:`~cem_lab.causal.atlas.prepare_atlas`'s."""
    FigureStyle.from_setting(figures)  # a bad setting is refused before any compute
    if output_dir is None:
        atlas = prepare_atlas(model, image, task, rois, **kwargs)
        return atlas.run(None, progress=progress, checkpoint_every=checkpoint_every)
    with hold_run_folder(output_dir, what="a cem_lab atlas"):
        atlas = prepare_atlas(model, image, task, rois, **kwargs)
        res = atlas.run(output_dir, progress=progress, checkpoint_every=checkpoint_every)
        save_atlas(res, output_dir, figures=figures)
        return res
