"""The `cem-channels` program's work, apart from its command line (:mod:`cem_lab.cli.channels`): a checked plan,
then one channel map per image of the population (:class:`~cem_lab.causal.channels.ChannelJob`) and their files.

The population is the images given: each in turn is the probed input, and the others are its donors
(leave-one-out), so every natural value comes from an image the channel map does not explain.
:func:`plan_channels` loads the network (the embedded DnCNN, a zoo model by name, or a checkpoint through
spandrel), reads and centre-crops the images, degrades them (seed ``seed + k`` for image k), checks the ROI and
builds every image's job: the layer, the donors' sizes and the estimator are checked there, before any
intervention is computed and before anything is written. :func:`run_channels` runs the jobs, each
checkpointed in ``units/<k>_<image>/state.npz`` (an interrupted run resumes there; a finished image is read
back, not recomputed), and writes in the output folder:

- ``channels.npz``: per image and channel the effect, its standard error, sample count and class, and the
  baselines; ``names``, ``roi``;
- ``channels.csv``: one row per channel: the mean effect over images with its 95 % bootstrap interval, the
  rank (1 = most helpful), the class from the interval, and how many images the channel helps and hurts;
- ``figures/channels.png`` (and the style's other formats): the channels ranked, with their intervals;
- ``channels.json``, written last (its presence marks a finished run): settings, ranking, counts, cost, times.

The folder is held by one process at a time (:func:`cem_lab.folder_lock.hold_run_folder`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from cem_lab.attribution.base import AttributionError
from cem_lab.attribution.erf import bootstrap_interval
from cem_lab.attribution.probe_inputs import clear_outputs, probe_inputs
from cem_lab.causal.channels import VALUES, ChannelError, ChannelJob, ChannelResult, layer_outputs
from cem_lab.causal.grid import Roi
from cem_lab.causal.settings import CEMSettings
from cem_lab.errors import CemLabError
from cem_lab.images import from_uint8
from cem_lab.io import atomic_path, json_safe, write_json, write_npz
from cem_lab.tasks.base import Task, TaskInput
from cem_lab.viz.style import FigureStyle  # plain settings (no matplotlib)

PROGRAM = "cem-channels"
FORMAT_VERSION = 1
RESULT_JSON, RESULT_NPZ, RESULT_CSV, FIGURE = "channels.json", "channels.npz", "channels.csv", "channels.png"
ESTIMATORS = ("default", "exhaustive", "coarse_to_fine", "adaptive")


@dataclass
class ChannelsPlan:
    """A checked `cem-channels` run: the jobs built (one per image), nothing computed or written."""

    model: nn.Module
    model_name: str
    task: Task | None
    names: list[str]
    jobs: list[ChannelJob]
    layer: str
    value: str
    roi: Roi
    out: Path
    style: FigureStyle = field(default_factory=FigureStyle)
    progress: bool = True
    seed: int = 0


def task_inputs(task: Task | None, crops: list[tuple[str, np.ndarray]], seed: int) -> list[TaskInput]:
    """Each centre crop degraded by ``task`` (seed ``seed + k``), with its clean crop as the ground truth; without a
    task the crop is the model input and there is no ground truth."""
    out = []
    for k, (_, arr) in enumerate(crops):
        clean = from_uint8(arr)
        out.append(task.prepare(clean, seed + k) if task is not None else TaskInput(clean, None))
    return out


def list_layers(model: str, model_path: str | None, images: list[str], size: int, task: str, sigma: float) -> list:
    """``(name, output shape, calls per forward)`` of every layer a channel map can take, on the first image."""
    p = probe_inputs(PROGRAM, model, model_path, images[:1], size, None, task, sigma)
    x = task_inputs(p.task, p.crops, 0)[0].input
    return layer_outputs(p.net, x)


def plan_channels(
    *,
    model: str,
    model_path: str | None,
    images: list[str],
    size: int,
    roi: tuple[int, int, int] | None,
    task: str,
    sigma: float,
    layer: str,
    value: str,
    estimator: str,
    coarse: int,
    fine: int,
    tol: float,
    seed: int,
    out: Path,
    style: FigureStyle,
    device: str | None = None,
    progress: bool = True,
    batch_size: int = 32,
    forward_batch: int = 8,
) -> ChannelsPlan:
    """Every input built and checked (module docstring); raises a one-line error otherwise."""
    if value not in VALUES:
        raise AttributionError(f"--value {value!r}: choose one of {', '.join(VALUES)}")
    if estimator not in ESTIMATORS:
        raise AttributionError(f"--estimator {estimator!r}: choose one of {', '.join(ESTIMATORS)}")
    if value != "zeros" and len(images) < 2:
        raise AttributionError(
            f"--value {value} needs a population: give two or more --images (each image's donors are the others), "
            "or --value zeros"
        )
    if len(set(images)) != len(images):
        raise AttributionError("--images: an image is given twice; give each image of the population once")
    p = probe_inputs(PROGRAM, model, model_path, images, size, roi, task, sigma)
    inputs = task_inputs(p.task, p.crops, seed)
    names = [n for n, _ in p.crops]
    try:
        settings = CEMSettings(
            coarse=coarse,
            fine=fine,
            tol=tol,
            seed=seed,
            batch_size=batch_size,
            forward_batch=forward_batch,
            metric="psnr" if p.task is not None else "output_change",
        )
    except CemLabError as err:  # the settings' own one-line refusals
        raise AttributionError(str(err)) from None
    task_record = p.task.describe() if p.task is not None else None
    jobs = []
    for k, (name, ti) in enumerate(zip(names, inputs)):
        others = [(n, t) for j, (n, t) in enumerate(zip(names, inputs)) if j != k]
        jobs.append(
            ChannelJob(
                p.net,
                ti,
                p.roi,
                layer,
                donors=[t for _, t in others] if value != "zeros" else (),
                donor_names=[n for n, _ in others] if value != "zeros" else None,
                value=value,
                settings=settings,
                estimator=None if estimator == "default" else estimator,
                device=device,
                image_name=name,
                model_name=p.name,
                task=task_record,
            )
        )
    return ChannelsPlan(p.net, p.name, p.task, names, jobs, layer, value, p.roi, Path(out), style, progress, seed)


def unit_folder(plan: ChannelsPlan, k: int) -> Path:
    """Where image ``k``'s job checkpoints."""
    return plan.out / "units" / f"{k}_{plan.names[k]}"


def aggregate(results: list[ChannelResult], tol: float) -> dict[str, Any]:
    """Per channel over images: the mean raw effect with its 95 % bootstrap interval, the class from the interval
    (> 0 helps, < 0 hurts; with one image, its own interval) and the rank (1 = the largest mean effect)."""
    effects = np.stack([r.raw_effect for r in results])  # (images, channels)
    n_ch = effects.shape[1]
    mean, low, high = np.full(n_ch, np.nan), np.full(n_ch, np.nan), np.full(n_ch, np.nan)
    for c in range(n_ch):
        if len(results) > 1:
            mean[c], low[c], high[c], _ = bootstrap_interval(effects[:, c], seed=c)
        else:
            mean[c], low[c], high[c] = effects[0, c], results[0].ci_low[c], results[0].ci_high[c]
    with np.errstate(invalid="ignore"):
        cls = np.where((low > 0) & (mean >= tol), 1, np.where((high < 0) & (mean <= -tol), -1, 0)).astype(np.int8)
    order = np.argsort(-mean, kind="stable")
    rank = np.empty(n_ch, dtype=np.int64)
    rank[order] = np.arange(1, n_ch + 1)
    classes = np.stack([r.classification for r in results])
    return {
        "mean": mean,
        "low": low,
        "high": high,
        "class": cls,
        "rank": rank,
        "order": order,
        "helps_images": (classes > 0).sum(axis=0),
        "hurts_images": (classes < 0).sum(axis=0),
    }


def _write_csv(path: Path, agg: dict[str, Any]) -> None:
    import pandas as pd  # lazy

    frame = pd.DataFrame(
        {
            "channel": np.arange(len(agg["mean"])),
            "effect_db": agg["mean"],
            "low": agg["low"],
            "high": agg["high"],
            "class": agg["class"],
            "rank": agg["rank"],
            "helps_images": agg["helps_images"],
            "hurts_images": agg["hurts_images"],
        }
    ).sort_values("rank")
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def _figures(plan: ChannelsPlan, agg: dict[str, Any], per_image: np.ndarray) -> dict[str, str]:
    from cem_lab.viz.channel_figures import save_channel_figure  # lazy: matplotlib
    from cem_lab.viz.style import use_style

    task = plan.task.name if plan.task is not None else "model inputs"
    title = (
        f"{plan.model_name} | {task} | layer {plan.layer} | value {plan.value} | {len(plan.names)} image(s) | "
        f"ROI {plan.roi.as_list()}"
    )
    with use_style(plan.style):
        path = save_channel_figure(
            plan.out / "figures" / FIGURE,
            mean=agg["mean"],
            low=agg["low"],
            high=agg["high"],
            per_image=per_image,
            title=title,
            unit="dB" if plan.task is not None else "output change",
        )
    return {"channels": str(Path(path).relative_to(plan.out))}


def run_channels(plan: ChannelsPlan) -> dict[str, Any]:
    """Run the plan's jobs (resuming what their folders hold) and write the files (module docstring); returns
    channels.json's contents."""
    from cem_lab.folder_lock import hold_run_folder  # a primitive: the one writer of the folder

    with hold_run_folder(plan.out, what=f"a {PROGRAM} run", command=PROGRAM):
        clear_outputs(plan.out, RESULT_JSON, (FIGURE,))
        t0 = time.perf_counter()
        results: list[ChannelResult] = []
        for k, job in enumerate(plan.jobs):
            folder = unit_folder(plan, k)
            folder.mkdir(parents=True, exist_ok=True)
            try:
                results.append(job.run(folder, progress=plan.progress))
            except ChannelError as err:
                raise AttributionError(str(err)) from None
        compute_s = time.perf_counter() - t0
        tol = plan.jobs[0].tol
        agg = aggregate(results, tol)
        per_image = np.stack([r.raw_effect for r in results])
        write_npz(
            plan.out / RESULT_NPZ,
            effect=per_image,
            stderr=np.stack([r.stderr for r in results]),
            n=np.stack([r.n for r in results]),
            classification=np.stack([r.classification for r in results]),
            baseline=np.array([r.baseline for r in results]),
            mean=agg["mean"],
            low=agg["low"],
            high=agg["high"],
            names=np.array(plan.names),
            roi=np.array(plan.roi.as_list()),
            format_version=FORMAT_VERSION,
        )
        _write_csv(plan.out / RESULT_CSV, agg)
        figures = _figures(plan, agg, per_image) if plan.style.draw else {}
        cost = [r.meta.get("cost") or {} for r in results]
        passes = sum(int((c.get("total") or {}).get("forward_passes", 0)) for c in cost)
        top = [int(c) for c in agg["order"]]
        summary = {
            "program": PROGRAM,
            "format_version": FORMAT_VERSION,
            "model": plan.model_name,
            "task": plan.task.describe() if plan.task is not None else None,
            "layer": plan.layer,
            "value": plan.value,
            "channels": int(len(agg["mean"])),
            "images": plan.names,
            "roi": plan.roi.as_list(),
            "settings": plan.jobs[0].settings() | {"donors": "the other images (leave-one-out)"},
            "baseline": {n: r.baseline for n, r in zip(plan.names, results)},
            "counts": {
                "positive": int((agg["class"] > 0).sum()),
                "negative": int((agg["class"] < 0).sum()),
                "zero": int((agg["class"] == 0).sum()),
            },
            "interval": "95 %, percentile bootstrap over images (one image: its own t interval over donors)",
            "ranking": top,
            "classes": agg["class"].tolist(),
            "effect_db": {str(c): [agg["mean"][c], agg["low"][c], agg["high"][c]] for c in top},
            "notes": sorted({n for r in results for n in r.meta.get("notes", [])}),
            "cost": {"forward_passes": passes},
            "timings": {"channels_s": compute_s},
            "figures": figures,
        }
        write_json(plan.out / RESULT_JSON, json_safe(summary))
    return summary
