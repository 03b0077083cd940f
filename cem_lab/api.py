"""The user-facing calls: the causal core's maps with their figures.

``cem_lab.compute_cem`` is :func:`compute_cem` here: :func:`cem_lab.causal.run.compute_cem` (numbers,
images, summary, checkpoints) plus the figures of :mod:`cem_lab.viz` in the run folder. The core never
draws; this module is where a result meets its figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cem_lab.causal import run as core
from cem_lab.causal.atlas import AtlasResult, prepare_atlas
from cem_lab.causal.job import CEMJob
from cem_lab.causal.result import CEMResult
from cem_lab.causal.settings import DEFAULT_CHECKPOINT_S
from cem_lab.folder_lock import hold_run_folder
from cem_lab.run_format import FIGURES_DIR


def draw_figures(result: CEMResult, folder: str | Path) -> dict[str, str]:
    """Draw the figures of ``result`` into its run folder ``folder`` (``figures/``)."""
    from cem_lab.viz import draw_run_figures  # lazy: matplotlib (~0.5 s), only once a map is drawn

    return draw_run_figures(result, folder)


def save_result(result: CEMResult, folder: str | Path, figures: bool = True) -> Path:
    """Save ``result`` in the run folder ``folder``: numbers, images, summary and (by default) figures."""
    result.save(folder)
    if figures:
        draw_figures(result, folder)
    return Path(folder)


def compute_cem(
    model,
    image,
    task,
    roi,
    *,
    output_dir: str | Path | None = None,
    figures: bool = True,
    lock_folder: bool = True,
    **kwargs: Any,
) -> CEMResult:
    """:func:`cem_lab.causal.run.compute_cem` (same arguments), with the figures drawn into
    ``output_dir/figures`` when ``figures`` (and an ``output_dir``) is given."""
    return core.compute_cem(
        model,
        image,
        task,
        roi,
        output_dir=output_dir,
        lock_folder=lock_folder,
        on_saved=draw_figures if figures else None,
        **kwargs,
    )


def run_cem(job: CEMJob, output_dir: str | Path | None = None, *, figures: bool = True, **kwargs: Any) -> CEMResult:
    """:func:`cem_lab.causal.run.run_cem` (same arguments), with the figures drawn into
    ``output_dir/figures`` when ``figures``."""
    return core.run_cem(job, output_dir, on_saved=draw_figures if figures else None, **kwargs)


def save_atlas(result: AtlasResult, folder: str | Path, figures: bool = True) -> Path:
    """Save an atlas in ``folder`` (:meth:`AtlasResult.save <cem_lab.causal.atlas.AtlasResult.save>`) with,
    by default, every ROI's figures and the atlas figure (``figures/atlas.png``)."""
    folder = Path(folder)
    drawn = None
    if figures:
        from cem_lab.viz.atlas_figures import save_atlas_figure  # lazy: matplotlib, only once an atlas is drawn

        for k, r in enumerate(result.results):
            draw_figures(r, result.roi_folder(folder, k))
        drawn = {"atlas": str(save_atlas_figure(folder / FIGURES_DIR / "atlas.png", result))}
    return result.save(folder, figures=drawn)


def compute_atlas(
    model,
    image,
    task,
    rois,
    *,
    output_dir: str | Path | None = None,
    figures: bool = True,
    progress: bool = True,
    checkpoint_every: float | None = DEFAULT_CHECKPOINT_S,
    **kwargs: Any,
) -> AtlasResult:
    """The ROI atlas (:mod:`cem_lab.causal.atlas`): every ROI's map from one set of full-image passes.
    With ``output_dir`` the run is locked, checkpointed, resumed when rerun, and saved (with figures
    when ``figures``); the keywords are :func:`~cem_lab.causal.atlas.prepare_atlas`'s."""
    if output_dir is None:
        atlas = prepare_atlas(model, image, task, rois, **kwargs)
        return atlas.run(None, progress=progress, checkpoint_every=checkpoint_every)
    with hold_run_folder(output_dir, what="a cem_lab atlas"):
        atlas = prepare_atlas(model, image, task, rois, **kwargs)
        res = atlas.run(output_dir, progress=progress, checkpoint_every=checkpoint_every)
        save_atlas(res, output_dir, figures=figures)
        return res
