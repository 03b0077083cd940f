"""The `cem-attribution` study, part 1: its settings and its inputs, the methods run on the CEM job.

On plain values and on the CEM job that :func:`cem_lab.compose.prepare.prepare` built (no Hydra):
:class:`Settings` (the checked ``attribution`` section), :func:`load_cem_run` (a finished `cem-lab`
run's CEM, refused unless it matches), :func:`gradient_maps` (LAM, integrated gradients, saliency)
and :func:`replacement_metrics` (the batched block-replacement metric per faithfulness intervention).
The numbers are :mod:`cem_lab.attribution.study`, the files :mod:`cem_lab.attribution.study_output`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cem_lab.attribution.base import AttributionError
from cem_lab.attribution.gradients import IntegratedGradients, Saliency
from cem_lab.attribution.lam import LAM
from cem_lab.attribution.replacement import BlockReplacementMetric
from cem_lab.causal.errors import RunFolderError
from cem_lab.causal.interventions import draw_rng, make_intervention
from cem_lab.causal.result import CEMResult
from cem_lab.errors import MissingFileError
from cem_lab.folder_lock import describe_holder, folder_holder
from cem_lab.images import to_uint8
from cem_lab.run_format import CEM_FILE

log = logging.getLogger("cem_lab")

METHODS = ("lam", "ig", "saliency", "cem")
GRADIENT_METHODS = ("lam", "ig", "saliency")
INTERVENTIONS = ("lv", "zeros", "mean", "blur", "noise")


# --- settings ------------------------------------------------------------------------------------------
@dataclass
@dataclass
class Settings:
    """The checked ``attribution`` section of the config."""

    methods: list[str]
    objective: str
    channels: str
    lam: dict
    ig: dict
    interventions: list[str]
    steps: int | None
    samples: int
    sign_tol: float
    cem_run: str | None

    @property
    def gradient_methods(self) -> list[str]:
        """The requested methods that need gradients, in request order."""
        return [m for m in self.methods if m in GRADIENT_METHODS]

    def describe(self) -> dict:
        """The settings as written in attribution.json."""
        return {
            "methods": self.methods,
            "objective": self.objective,
            "channels": self.channels,
            "lam": self.lam,
            "ig": self.ig,
            "faithfulness": {
                "interventions": self.interventions,
                "steps": self.steps,
                "samples": self.samples,
                "sign_tol": self.sign_tol,
            },
            "cem_run": self.cem_run,
        }


# --- the inputs ----------------------------------------------------------------------------------------------
def load_cem_run(path: str, job) -> Any:
    """The finished CEM of a `cem-lab` run folder, refused unless it is a map of this run's input
    with this run's ROI and block grid."""
    where = f"attribution.cem_run={path}"
    p = Path(path).expanduser()
    if not p.is_dir():
        raise MissingFileError(
            f"{where}: no such folder; give the folder of a finished cem-lab run "
            "(runs/cem/<name>), or drop attribution.cem_run to compute the CEM here"
        )
    holder = folder_holder(p)
    if holder is not None:
        raise RunFolderError(f"{where} is being written by {describe_holder(holder)}; wait until it ends")
    if not (p / CEM_FILE).is_file():
        raise MissingFileError(
            f"{where} holds no finished CEM (cem.npz is missing); run cem-lab to the end "
            "there first, or drop attribution.cem_run to compute the CEM here"
        )
    try:
        res = CEMResult.load(p)
    except (KeyError, OSError, ValueError) as err:
        raise AttributionError(f"{where}: cannot read its CEM ({err})") from err
    ours_in = (job.grid.input_h, job.grid.input_w)
    diffs = []
    if res.roi != job.roi:
        diffs.append(f"ROI {res.roi.as_list()} (this run: roi={job.roi.as_list()})")
    if int(res.block) != int(job.block):
        diffs.append(f"block {res.block} (this run: cem.block={job.block})")
    if tuple(res.input_shape) != ours_in:
        diffs.append(f"a {res.input_shape[0]}x{res.input_shape[1]} input (this run: {ours_in[0]}x{ours_in[1]})")
    if tuple(res.output_shape) != tuple(job.out_shape):
        diffs.append(
            f"a {res.output_shape[0]}x{res.output_shape[1]} output (this run: "
            f"{job.out_shape[0]}x{job.out_shape[1]}, task {job.task.name} x{job.scale})"
        )
    if diffs:
        raise AttributionError(
            f"{where} does not match this run: its CEM has {'; '.join(diffs)}. Give the cem-lab run of the "
            "same roi, cem.block, image and task, or drop attribution.cem_run to compute the CEM here"
        )
    inp = res.images.get("input")
    if inp is not None and not np.array_equal(np.asarray(inp), to_uint8(job.ti.input)):
        raise AttributionError(
            f"{where} does not match this run: its degraded input differs from this run's (another image, "
            "task, degradation or image_seed). Give the cem-lab run of the same input, or drop "
            "attribution.cem_run to compute the CEM here"
        )
    if res.metric != job.metric.name:
        log.warning("%s: its CEM is in %s, this run's faithfulness metric is %s", where, res.metric, job.metric.name)
    model = res.meta.get("model")
    if model and model != job.model_name:
        log.warning("%s: its CEM is of the model %s, this run's model is %s", where, model, job.model_name)
    return res


def gradient_maps(
    job, settings: Settings, progress: bool, cem_command: str = "cem-lab <the same overrides>"
) -> dict[str, Any]:
    """LAM, IG and saliency of the job's ROI on its input and block grid (saliency first: one forward
    and one backward pass check that the model has gradients before the longer paths run).
    ``cem_command``: the `cem-lab` command that a refusal of a model without gradients suggests."""
    x, roi, block, model = job.ti.input, job.roi, job.block, job.model
    common = {"block": block, "objective": settings.objective, "channels": settings.channels}
    maps: dict[str, Any] = {}
    order = sorted(settings.gradient_methods, key=lambda m: {"saliency": 0, "lam": 1, "ig": 2}[m])
    try:
        for m in order:
            t0 = time.perf_counter()
            if m == "saliency":
                maps[m] = Saliency(model).attribute(x, roi, **common)
            elif m == "lam":
                maps[m] = LAM(model).attribute(x, roi, progress=progress, **common, **settings.lam)
            else:
                maps[m] = IntegratedGradients(model).attribute(x, roi, progress=progress, **common, **settings.ig)
            maps[m].meta["time_s"] = time.perf_counter() - t0
    except AttributionError as err:
        if "differentiable torch model" in str(err):
            raise AttributionError(
                f"{err}. From the command line: {cem_command} (or cem-attribution with attribution.methods=[cem])"
            ) from None
        raise
    return {m: maps[m] for m in settings.gradient_methods}


class CropReplacementMetric(BlockReplacementMetric):
    """:class:`~cem_lab.attribution.BlockReplacementMetric` on the job's own model input: the
    verified crop of a local model (``job.mode == "crop"``; blocks outside it do not change the
    ROI output, which is what made the crop), else the whole image; with any intervention, bound
    to the job, its draws seeded from ``(seed, block, sample)`` like the CEM's. Replacing one block
    with the job's own intervention is therefore exactly the CEM's draw of it: ``baseline -
    metric_after([b])`` is the exhaustive CEM's ``effect_raw[b]`` for the same seed and samples.
    :meth:`many` evaluates many block sets at once, ``forward_batch`` inputs per model call.
    """

    def __init__(self, job, intervention=None, samples: int | None = None):
        own = intervention is None or intervention is job.intervention
        intervention = job.intervention if own else intervention
        if samples is None:
            samples = 1 if intervention.deterministic else 8
        super().__init__(job, samples)
        if not own:
            intervention.bind(job.task, job.ti, job.boxes, job.grid.block_in, job.device)
        self.intervention = intervention
        self.crop = tuple(job.crop)
        self.evaluated = 0

    @property
    def baseline(self) -> float:
        """The metric with nothing replaced (the CEM's un-intervened metric)."""
        return float(self.job.baseline)

    def __call__(self, blocks) -> float:
        """The ROI metric after replacing ``blocks`` (one set through :meth:`many`)."""
        return float(self.many([blocks])[0])

    def _inputs(self, blocks: np.ndarray):
        job = self.job
        x = job.base_crop.expand(self.samples, -1, -1, -1).clone()
        placements = job._placements(blocks, self.crop)
        for block, pl in zip(blocks, placements):
            draws = [
                self.intervention.draw(draw_rng(job.seed, int(block), s), int(block), s) for s in range(self.samples)
            ]
            x = self.intervention.apply(
                x, job.ctx_crop, [pl] * self.samples, draws, origin=(self.crop[0], self.crop[2])
            )
        return x

    def many(self, sets, on_done=None) -> np.ndarray:
        """The metric after replacing each block set of ``sets`` (mean over the samples);
        ``on_done(n)`` after every ``n`` sets evaluated."""
        job = self.job
        out = np.full(len(sets), self.baseline)
        pending: list[tuple[int, Any]] = []
        rows = 0

        def flush():
            nonlocal rows
            if not pending:
                return
            x = torch.cat([t for _, t in pending])
            roi = job._roi(job._forward(x), (self.crop[0], self.crop[2]))
            values = job.metric(roi, job.ref).double().cpu().numpy().reshape(len(pending), self.samples)
            for (i, _), v in zip(pending, values):
                out[i] = float(v.mean())
            if on_done is not None:
                on_done(len(pending))
            pending.clear()
            rows = 0

        for i, blocks in enumerate(sets):
            b = np.unique(np.asarray(blocks, dtype=np.int64).ravel())
            self.calls += 1
            if b.size and (b.min() < 0 or b.max() >= len(job.grid)):
                raise AttributionError(f"block indices must lie in [0, {len(job.grid)}), got {b.tolist()[:10]}")
            b = b[job.active[b]]  # the blocks that reach the model input (all of them on the whole image)
            if b.size == 0:
                if on_done is not None:
                    on_done(1)
                continue
            pending.append((i, self._inputs(b)))
            rows += self.samples
            self.evaluated += 1
            if rows >= 4 * job.forward_batch:
                flush()
        flush()
        return out


def replacement_metrics(
    prepared, settings: Settings, *, sampler: Any, make_patch_bank: Callable[[], Any]
) -> dict[str, Any]:
    """``metric_after(blocks)`` per faithfulness intervention, on the CEM job's model input (its
    crop for a local model): the job's own intervention (one replaced block = the CEM's draw of
    it) or another one bound to the job; ``samples`` draws for a random intervention, one for a
    deterministic baseline. ``sampler``: the CEM's ``cem.sampler``; ``make_patch_bank()`` builds
    the LV patch bank (called only when an LV intervention needs one the job does not hold)."""
    job = prepared.job
    out: dict[str, Any] = {}
    for name in settings.interventions:
        if job.intervention.name == name:
            intervention = job.intervention
        else:
            bank = None
            if name == "lv":
                bank = prepared.kwargs.get("patch_bank") or make_patch_bank()
            intervention = make_intervention(name, bank=bank, sampler=sampler)
        out[name] = CropReplacementMetric(job, intervention, 1 if intervention.deterministic else settings.samples)
    return out
