"""The ROI atlas through ``cem-lab``: ``roi=grid`` (ROIs of ``roi_grid.size`` tiling the output with
``roi_grid.stride``) or ``roi=[[top,left,size],...]`` runs every ROI's map from one set of
full-image passes (:mod:`cem_lab.causal.atlas`) into one run folder: ``atlas.json``, ``atlas.npz``,
``figures/atlas.png`` and a run folder per ROI under ``rois/`` (readable by ``cem-report``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from cem_lab.api import save_atlas
from cem_lab.bookkeeping.run_folder import accept_run_folder, close_log_file
from cem_lab.bookkeeping.run_index import identity_config, input_signatures, mark_done
from cem_lab.causal.atlas import AtlasError, prepare_atlas
from cem_lab.compose.devices import device_lease
from cem_lab.compose.prepare import distributed_settings, prepare_kwargs
from cem_lab.errors import InputError
from cem_lab.run_format import DONE_FILE
from cem_lab.viz.style import FORMATS  # plain settings (no matplotlib)


def is_atlas(cfg: DictConfig) -> bool:
    """Whether ``cfg.roi`` asks for several ROIs ("grid", or a list of ROIs)."""
    roi = cfg.get("roi")
    if isinstance(roi, str):
        return roi == "grid"
    if (
        isinstance(roi, (list, ListConfig))
        and len(roi)
        and isinstance(roi[0], (list, tuple, ListConfig, dict, DictConfig))
    ):
        return True
    return False


def _rois(cfg: DictConfig) -> Any:
    roi = cfg.roi
    if isinstance(roi, str):
        if roi != "grid":
            raise InputError(f"roi must be [top, left, size], 'grid' or a list of ROIs, got {roi!r}")
        return "grid"
    return OmegaConf.to_container(roi, resolve=True)


def finished_atlas(cfg: DictConfig, folder: Path) -> dict | None:
    """atlas.json of the finished atlas in ``folder`` if it is exactly this config's, else None."""
    try:
        done = json.loads((folder / DONE_FILE).read_text())
        summary = json.loads((folder / "atlas.json").read_text())
    except (OSError, ValueError):
        return None
    if done.get("fingerprint") != summary.get("fingerprint"):
        return None
    if done.get("config") != identity_config(cfg) or done.get("inputs") != input_signatures(cfg):
        return None
    return summary


def execute_atlas(cfg: DictConfig, folder: Path, memory) -> dict[str, Any]:
    """Run (or reuse) the atlas of ``cfg`` in ``folder`` (locked by the caller); print its report."""
    summary = finished_atlas(cfg, folder)
    if summary is not None:
        print(atlas_report(summary, folder, skipped=True), flush=True)
        return {"status": "skipped", "forward_passes": 0}
    if distributed_settings(cfg) is not None:
        raise AtlasError("the ROI atlas runs in one process: use parallel=single with roi=grid or a ROI list")
    with device_lease(cfg.device) as device:  # device=free_gpu: a GPU no other job holds
        if device != cfg.device:
            cfg.device = device
        model, image, task, kwargs, run_kwargs, _ = prepare_kwargs(cfg, folder)
        grid = cfg.get("roi_grid") or {}
        atlas = prepare_atlas(
            model, image, task, _rois(cfg), roi_size=int(grid.get("size", 32)), roi_stride=grid.get("stride"), **kwargs
        )
        atlas.check_folder(folder)
        handler = accept_run_folder(cfg, folder, memory)
        try:
            res = atlas.run(folder, progress=run_kwargs["progress"], checkpoint_every=run_kwargs["checkpoint_every"])
            save_atlas(res, folder, figures=run_kwargs["figures"])
            mark_done(cfg, folder, res.meta["fingerprint"])
        finally:
            close_log_file(handler)
    summary = json.loads((folder / "atlas.json").read_text())
    print(atlas_report(summary, folder), flush=True)
    return {"status": "done", "forward_passes": res.meta["forward_passes"]}


def atlas_report(summary: dict, folder: Path, skipped: bool = False) -> str:
    """The console lines of a finished atlas (``skipped``: reused, nothing computed now)."""
    neg, reach = summary["share_negative"], summary["reach_mean_px"]
    head = f"ROI atlas already finished (skipped) in {folder}" if skipped else f"ROI atlas written to {folder}"
    figs = [p for p in (folder / "figures" / f"atlas.{fmt}" for fmt in FORMATS) if p.is_file()]
    return "\n".join(
        [
            head,
            f"  {summary['n_rois']} ROIs, {summary['forward_passes']:,} forward passes "
            f"({summary['saving']:.1f}x fewer than {summary['forward_passes_separately']:,} in separate runs)",
            f"  share of negative blocks over ROIs: median {neg['median']:.1%} (IQR {neg['q25']:.1%} to {neg['q75']:.1%}, "
            f"max {neg['max']:.1%})",
            f"  mean effective distance over ROIs: median {reach['median']:.1f} px (IQR {reach['q25']:.1f} to "
            f"{reach['q75']:.1f}, max {reach['max']:.1f})",
            f"  per-ROI maps: {folder / 'rois'}",
            f"  figures: {', '.join(map(str, figs))}" if figs else "  figures: none (figures=false)",
        ]
    )
