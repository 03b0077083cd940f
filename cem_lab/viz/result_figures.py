"""The figures of one finished map, drawn from a result object into its run folder.

The result is read by its attributes only (a :class:`~cem_lab.causal.result.CEMResult` or anything
shaped like it), so viz stays below the causal core: the core never draws, its callers do.
"""

from __future__ import annotations

from pathlib import Path

from cem_lab.io import PathLike
from cem_lab.run_format import FIGURES_DIR
from cem_lab.viz.cem_figures import save_cem_figures


def save_result_figures(result, folder: PathLike) -> dict[str, str]:
    """Draw the figures of a CEM result (a :class:`~cem_lab.causal.result.CEMResult`, read by its
    attributes only) into ``folder`` (a run folder's ``figures/``); ``{name: path}`` as
    :func:`save_cem_figures`."""
    return save_cem_figures(
        folder,
        effect=result.effect,
        roi_mask=result.roi_mask,
        classification=result.classification,
        roi=result.roi.as_list(),
        block=result.block,
        output_shape=result.output_shape,
        degraded_input_rgb=result.images.get("input"),
        restored_rgb=result.images.get("restored"),
        bound=float(result.meta.get("display_bound", 1.0)),
        counts=result.block_counts(),
        title=result.meta.get("title", ""),
        roi_psnr=result.baseline_metric,
        unit=result.unit,
    )


def draw_run_figures(result, run_folder: PathLike) -> dict[str, str]:
    """Draw the figures of ``result`` into the run folder ``run_folder`` (its ``figures/``).

    The signature is the core's ``on_saved(result, folder)`` hook (:func:`cem_lab.causal.run.run_cem`)."""
    return save_result_figures(result, Path(run_folder) / FIGURES_DIR)
