"""The `cem-sanity` program's work, apart from its command line (:mod:`cem_lab.cli.sanity`): a checked plan,
then the randomisation check (:func:`~cem_lab.attribution.sanity.randomisation_check`) and its files.

:func:`plan_sanity` loads the network (the embedded DnCNN, or a checkpoint through spandrel), reads and
centre-crops the images, degrades them by the task (seed ``seed + k`` for image k), finds the network's layers
in forward order and checks the ROI, the block and the methods: every refusal happens there, before any map
is computed. :func:`run_sanity` computes and writes, in the output folder:

- ``sanity.npz``: per method ``maps_<method>`` (images, 1 + steps, rows, cols) ``|block|`` maps (index 0 the
  trained network) and ``similarity_<method>`` (images, steps, measures); ``steps``, ``layers``,
  ``measures``, ``names``, ``roi``, ``block``;
- ``figures/sanity.png`` (and the style's other formats): similarity against the randomisation step;
- ``sanity.json``, written last (its presence marks a finished run): the settings, the layers, per method
  and step the mean similarity with its 95 % interval over images, the verdicts and the time taken.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from cem_lab.attribution.base import AttributionError, check_block
from cem_lab.attribution.probe_inputs import clear_outputs, probe_inputs
from cem_lab.attribution.sanity import (
    MEASURES,
    METHODS,
    MODES,
    RANDOMISE,
    THRESHOLD,
    SanityResult,
    forward_layers,
    randomisation_check,
)
from cem_lab.causal.grid import Roi
from cem_lab.images import from_uint8
from cem_lab.io import json_safe, write_json, write_npz
from cem_lab.tasks.base import Task
from cem_lab.viz.style import FigureStyle  # plain settings (no matplotlib)

PROGRAM = "cem-sanity"
FORMAT_VERSION = 1
RESULT_JSON, RESULT_NPZ, FIGURE = "sanity.json", "sanity.npz", "sanity.png"


@dataclass
class SanityPlan:
    """A checked `cem-sanity` run: everything built, nothing computed or written."""

    model: nn.Module
    model_name: str
    task: Task | None
    names: list[str]
    inputs: list[Any]  #: model inputs, (1, 3, h, w) float tensors
    roi: Roi
    methods: list[str]
    mode: str
    block: int
    layers: list[str]
    seed: int
    randomise: str
    steps: int  #: LAM and IG path points
    cem_samples: int
    out: Path
    style: FigureStyle = field(default_factory=FigureStyle)
    device: str | None = None
    progress: bool = True


def plan_sanity(
    *,
    model: str,
    model_path: str | None,
    images: list[str],
    size: int,
    roi: tuple[int, int, int] | None,
    task: str,
    sigma: float,
    methods: list[str],
    mode: str,
    block: int,
    layers: list[str] | None,
    seed: int,
    randomise: str,
    steps: int,
    cem_samples: int,
    out: Path,
    style: FigureStyle,
    device: str | None = None,
    progress: bool = True,
) -> SanityPlan:
    """Every input built and checked (module docstring); raises :class:`AttributionError` (one line) otherwise."""
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise AttributionError(
            f"--methods {','.join(methods)}: choose among {','.join(METHODS)} (e.g. lam,ig,saliency)"
        )
    if mode not in MODES:
        raise AttributionError(f"--mode {mode!r}: choose cascading or independent")
    if randomise not in RANDOMISE:
        raise AttributionError(f"--randomise {randomise!r}: choose reset or gaussian")
    if steps < 1:
        raise AttributionError(f"--steps {steps}: give at least 1 (LAM and IG path points)")
    if cem_samples < 1:
        raise AttributionError(f"--cem-samples {cem_samples}: give at least 1 (draws per block)")
    if "cem" in methods and task == "none":
        raise AttributionError("--methods cem needs a --task (its interventions are the task's): dn, sr or dr")
    p = probe_inputs(PROGRAM, model, model_path, images, size, roi, task, sigma)
    net, name, the_task, crops, r, scale = p.net, p.name, p.task, p.crops, p.roi, p.scale
    inputs = []
    for k, (_, arr) in enumerate(crops):
        clean = from_uint8(arr)
        inputs.append(the_task.prepare(clean, seed + k).input if the_task is not None else clean)
    in_h, in_w = inputs[0].shape[-2:]
    try:
        check_block(in_h, in_w, scale, block)
    except AttributionError as err:
        raise AttributionError(f"--block {block}: {err}") from err
    if (in_h * scale) // block < 3 or (in_w * scale) // block < 3:
        raise AttributionError(
            f"--block {block}: the {in_h * scale}x{in_w * scale} output makes fewer than 3x3 blocks (SSIM needs 3x3); "
            "give a smaller --block or a larger --size"
        )
    found, _ = forward_layers(net.eval(), inputs[0])
    if not found:
        raise AttributionError(f"{name}: the network calls no module that owns parameters; nothing to randomise")
    if layers:
        missing = [n for n in layers if n not in found]
        if missing:
            raise AttributionError(
                f"--layers {','.join(missing)}: not a layer of {name}; its layers in forward order: {','.join(found)}"
            )
    return SanityPlan(
        net,
        name,
        the_task,
        [n for n, _ in crops],
        inputs,
        r,
        list(methods),
        mode,
        int(block),
        list(layers or found),
        int(seed),
        randomise,
        int(steps),
        int(cem_samples),
        Path(out),
        style,
        device,
        progress,
    )


def _figure(plan: SanityPlan, res: SanityResult, summary: dict) -> dict[str, str]:
    from cem_lab.viz.sanity_figures import save_sanity_figure  # lazy: matplotlib
    from cem_lab.viz.style import use_style

    n = len(res.steps)
    picks = sorted({0, 1, max(1, n // 2), n}) if n else [0]
    task = plan.task.name if plan.task is not None else "model inputs"
    title = (
        f"{plan.model_name} | {task} | {len(plan.names)} image(s) | ROI {res.roi.as_list()} | {res.mode} "
        f"randomisation ({res.randomise})"
    )
    with use_style(plan.style):
        path = save_sanity_figure(
            plan.out / "figures" / FIGURE,
            steps=res.steps,
            similarity=summary["similarity"],
            threshold=res.threshold if res.mode == "cascading" else None,
            maps={m: res.maps[m][0] for m in res.methods},
            map_steps=picks,
            title=title,
        )
    return {"sanity": str(Path(path).relative_to(plan.out))}


def run_sanity(plan: SanityPlan) -> dict[str, Any]:
    """Run the check of the plan and write its files (module docstring); returns sanity.json's contents."""
    clear_outputs(plan.out, RESULT_JSON, (FIGURE,))
    t0 = time.perf_counter()
    res = randomisation_check(
        plan.model,
        plan.inputs,
        plan.roi,
        plan.methods,
        plan.block,
        plan.mode,
        layers=plan.layers,
        seed=plan.seed,
        randomise=plan.randomise,
        lam={"steps": plan.steps},
        ig={"steps": plan.steps},
        cem_samples=plan.cem_samples,
        task=plan.task,
        names=plan.names,
        device=plan.device,
        progress=plan.progress,
    )
    compute_s = time.perf_counter() - t0
    summary = res.summary()
    arrays = {f"maps_{m}": res.maps[m].astype(np.float32) for m in res.methods}
    arrays.update({f"similarity_{m}": res.similarity[m] for m in res.methods})
    write_npz(
        plan.out / RESULT_NPZ,
        **arrays,
        steps=np.array(res.steps),
        layers=np.array(res.layers),
        measures=np.array(MEASURES),
        names=np.array(res.names),
        roi=np.array(res.roi.as_list()),
        block=res.block,
        format_version=FORMAT_VERSION,
    )
    figures = _figure(plan, res, summary) if plan.style.draw else {}
    summary = {
        "format_version": FORMAT_VERSION,
        "program": PROGRAM,
        "model": plan.model_name,
        "task": plan.task.describe() if plan.task is not None else None,
        "threshold": THRESHOLD,
        **summary,
        "figures": figures,
        "timings": {"check_s": compute_s, "total_s": time.perf_counter() - t0},
    }
    summary["settings"]["steps"] = plan.steps
    summary = json_safe(summary)
    write_json(plan.out / RESULT_JSON, summary)
    return summary
