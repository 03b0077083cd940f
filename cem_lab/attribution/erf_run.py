"""The `cem-erf` program's work, apart from its command line (:mod:`cem_lab.cli.erf`): a checked plan, then the
ERF and its files.

:func:`plan_erf` loads the network (the embedded DnCNN, or a checkpoint through spandrel), reads and centre-crops
the images (the embedded 256x256 demo image, cem_lab's standard images by name, or files), builds the task that
degrades them, and checks the ROI against the model's output and any `cem-lab` runs given for comparison: every
refusal happens there, before any gradient is computed. :func:`run_erf` computes
(:func:`~cem_lab.attribution.erf.effective_receptive_field`) and writes, in the output folder:

- ``erf.npz``: ``maps`` (N, h, w) per image and draw, ``mean_map`` (h, w), ``area_ratios`` (N, levels),
  ``mass_radii`` (N, levels), ``area_levels``, ``radius_levels``, ``roi``, ``target``, ``centre``, ``scale``;
- ``figures/erf.png`` (and the style's other formats): the mean ERF on a log scale with the area ratios;
  ``figures/reach.png`` when `cem-lab` runs were given: the ERF's mass radii against the CEM's effective
  distance;
- ``erf.json``, written last (its presence marks a finished run): the settings, the area ratios and mass
  radii with their intervals over images, the CEM's effective distance when given, the time taken.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from cem_lab.attribution.base import AttributionError
from cem_lab.attribution.erf import AREA_LEVELS, RADIUS_LEVELS, ERFResult, bootstrap_interval, effective_receptive_field
from cem_lab.attribution.probe_inputs import clear_outputs, probe_inputs
from cem_lab.causal.grid import Roi
from cem_lab.errors import CemLabError
from cem_lab.io import json_safe, write_json, write_npz
from cem_lab.run_format import read_cem_arrays, read_summary
from cem_lab.tasks.base import Task
from cem_lab.viz.style import FigureStyle  # plain settings (no matplotlib)

PROGRAM = "cem-erf"
FORMAT_VERSION = 1
RESULT_JSON, RESULT_NPZ, FIGURE, REACH_FIGURE = "erf.json", "erf.npz", "erf.png", "reach.png"


@dataclass
class ERFPlan:
    """A checked `cem-erf` run: everything built, nothing computed or written."""

    model: nn.Module
    model_name: str
    task: Task | None
    images: list[tuple[str, np.ndarray]]  #: (name, (size, size, 3) uint8), one per image and draw
    roi: Roi
    point: str
    seed: int
    draws: int
    out: Path
    style: FigureStyle = field(default_factory=FigureStyle)
    cem_runs: list[dict] = field(default_factory=list)  #: per `cem-lab` run: folder, reach_px (max, mean)
    device: str | None = None
    progress: bool = True


# --- the plan ----------------------------------------------------------------------------------------------
def read_cem_reach(folders: list[str], roi: Roi, out_size: int) -> list[dict]:
    """The effective distance (``reach_px``) of each finished `cem-lab` run, refused unless it maps the same ROI
    on an output of the same size (``out_size`` square: the ROI's numbers name another place otherwise)."""
    out = []
    for f in folders:
        summary = read_summary(f) if Path(f).is_dir() else None
        if summary is None or "reach_px" not in summary:
            raise AttributionError(f"--cem-run {f}: not a finished cem-lab run folder (no summary.json with reach_px)")
        try:
            shape = tuple(int(v) for v in read_cem_arrays(f)["output_shape"][:2])
        except (CemLabError, KeyError) as err:
            raise AttributionError(f"--cem-run {f}: not a finished cem-lab run folder ({err})") from None
        if shape != (out_size, out_size):
            raise AttributionError(
                f"--cem-run {f} maps a {shape[0]}x{shape[1]} output, this ERF a {out_size}x{out_size} one, so the "
                "same ROI numbers would be another place; give --size (and images) to match the run, or another run"
            )
        if list(summary.get("roi", [])) != roi.as_list():
            raise AttributionError(
                f"--cem-run {f} maps the ROI {summary.get('roi')}, this ERF the ROI {roi.as_list()}; give --roi "
                f"{','.join(map(str, summary.get('roi', [])))} or a run of the same ROI"
            )
        out.append({"folder": str(Path(f).resolve()), **summary["reach_px"]})
    return out


def plan_erf(
    *,
    model: str,
    model_path: str | None,
    images: list[str],
    size: int,
    roi: tuple[int, int, int] | None,
    task: str,
    sigma: float,
    point: str,
    draws: int,
    seed: int,
    out: Path,
    style: FigureStyle,
    cem_runs: list[str],
    device: str | None = None,
    progress: bool = True,
) -> ERFPlan:
    """Every input built and checked (module docstring); raises :class:`AttributionError` (one line) otherwise."""
    if draws < 1:
        raise AttributionError(f"--draws {draws}: give at least 1 (degradation draws per image)")
    if point not in ("centre", "roi"):
        raise AttributionError(f"--point {point!r}: choose centre or roi")
    if roi is None and cem_runs:  # the ROI of the CEM it is compared with
        summary = read_summary(cem_runs[0]) if Path(cem_runs[0]).is_dir() else None
        roi = tuple(summary["roi"]) if summary and summary.get("roi") else None
    p = probe_inputs(PROGRAM, model, model_path, images, size, roi, task, sigma)
    runs = read_cem_reach(cem_runs, p.roi, size if p.task is not None else size * p.scale)
    expanded = [(f"{n}#{k}" if draws > 1 else n, a) for n, a in p.crops for k in range(draws)]
    return ERFPlan(p.net, p.name, p.task, expanded, p.roi, point, seed, draws, Path(out), style, runs, device, progress)


# --- the run -----------------------------------------------------------------------------------------------
def cem_reach_interval(runs: list[dict]) -> tuple[float, float, float, int]:
    """The CEM's effective distance (``reach_px.max``) over the given runs: mean and bootstrap interval."""
    return bootstrap_interval([r["max"] for r in runs])


def _triple(entry: dict | None) -> tuple[float, float, float]:
    entry = entry or {}
    return tuple(float("nan") if entry.get(k) is None else float(entry[k]) for k in ("mean", "low", "high"))


def reach_numbers(summary: dict, label: str | None = None) -> dict:
    """The keywords of :class:`cem_lab.viz.erf_figures.ReachPoint` from an ``erf.json`` summary (or
    :func:`run_erf`'s): label, the 50 % and 99 % mass radii and the CEM's effective distance (NaN without one),
    each ``(mean, low, high)``. For a figure of several networks: one ``erf.json`` each, then
    ``save_reach_figure(path, [ReachPoint(**reach_numbers(json.load(...))) for ...])``."""
    radii = summary["mass_radius_px"]
    return {
        "label": label or summary.get("model", "model"),
        "radius_50": _triple(radii.get("50")),
        "radius_99": _triple(radii.get("99")),
        "cem_reach": _triple(summary.get("cem_effective_distance_px")),
    }


def _figures(plan: ERFPlan, res: ERFResult, summary: dict) -> dict[str, str]:
    from cem_lab.viz.erf_figures import ReachPoint, save_erf_figure, save_reach_figure  # lazy: matplotlib
    from cem_lab.viz.style import use_style

    task = plan.task.name if plan.task is not None else "model inputs"
    title = f"{plan.model_name} | {task} | {len(plan.images)} image(s) | ROI {res.roi.as_list()} ({res.point})"
    figures = {}
    with use_style(plan.style):
        figures["erf"] = save_erf_figure(
            plan.out / "figures" / FIGURE,
            mean_map=res.mean_map,
            roi=res.roi.as_list(),
            target=res.target,
            scale=res.scale,
            area_ratios=summary["area_ratio"],
            title=title,
        )
        if plan.cem_runs:
            point = ReachPoint(**reach_numbers(summary, plan.model_name))
            figures["reach"] = save_reach_figure(plan.out / "figures" / REACH_FIGURE, [point], title=title)
    return {k: str(Path(v).relative_to(plan.out)) for k, v in figures.items()}


def run_erf(plan: ERFPlan) -> dict[str, Any]:
    """Compute the ERF of the plan and write its files (module docstring); returns erf.json's contents."""
    clear_outputs(plan.out, RESULT_JSON, (FIGURE, REACH_FIGURE))
    t0 = time.perf_counter()
    res = effective_receptive_field(
        plan.model,
        [a for _, a in plan.images],
        plan.roi,
        point=plan.point,
        task=plan.task,
        seed=plan.seed,
        names=[n for n, _ in plan.images],
        device=plan.device,
        progress=plan.progress,
    )
    compute_s = time.perf_counter() - t0
    summary = res.summary()
    write_npz(
        plan.out / RESULT_NPZ,
        maps=res.maps.astype(np.float32),
        mean_map=res.mean_map,
        area_ratios=res.area_ratios(AREA_LEVELS),
        mass_radii=res.mass_radii(RADIUS_LEVELS),
        area_levels=np.array(AREA_LEVELS),
        radius_levels=np.array(RADIUS_LEVELS),
        roi=np.array(res.roi.as_list()),
        target=np.array(res.target),
        centre=np.array(res.centre),
        scale=res.scale,
        names=np.array([n for n, _ in plan.images]),
        format_version=FORMAT_VERSION,
    )
    if plan.cem_runs:
        mean, lo, hi, n = cem_reach_interval(plan.cem_runs)
        summary["cem_effective_distance_px"] = {"mean": mean, "low": lo, "high": hi, "runs": plan.cem_runs}
    figures = _figures(plan, res, summary) if plan.style.draw else {}
    summary = {
        "format_version": FORMAT_VERSION,
        "program": PROGRAM,
        "model": plan.model_name,
        "draws_per_image": plan.draws,
        **summary,
        "figures": figures,
        "timings": {"erf_s": compute_s, "total_s": time.perf_counter() - t0},
    }
    summary = json_safe(summary)
    write_json(plan.out / RESULT_JSON, summary)
    return summary
