"""Running a CEM: the work plan, batched interventions on the device, checkpoints, resume.

The unit of work is a contiguous range of plan items of one stage; an item is a
(block, sample) pair whose draw is seeded from (seed, block, sample). Only ROI metrics leave
the device. Statistics are updated per block in sample order, so the map does not depend on
the batch size, and the state is checkpointed atomically so that an interrupted run resumes
and ends with the same result as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cem_lab.causal.estimators import BlockStats, CoarseToFineEstimator, Estimator, Stage, classify, make_estimator
from cem_lab.causal.grid import BlockGrid, GeometryError, Roi
from cem_lab.causal.interventions import Intervention, draw_rng, make_intervention
from cem_lab.causal.region import DependencyRegion, NoGradientError, dependency_region, verify_crop
from cem_lab.causal.result import FORMAT_VERSION, CEMResult
from cem_lab.images import ImageLike, from_uint8, to_uint8
from cem_lab.io import write_npz
from cem_lab.metrics import RoiMetric
from cem_lab.models.by_path import describe_model
from cem_lab.tasks import Placement, Task, TaskInput, crop_to_scale, make_task

log = logging.getLogger("cem_lab")

STATE_FILE = "state.npz"
#: default checkpoint cadence (seconds): a checkpoint costs a few milliseconds (BENCHMARKS.md), so a
#: kill -9 loses at most this much work for well under 1 % of the run time
DEFAULT_CHECKPOINT_S = 5.0


#: per-block recompute: crop sides are multiples of this (fewer shapes, denser batches), and a block
#: whose crop would be at least this share of the ROI crop runs on the ROI crop
#: how each intervened item is recomputed (``recompute=``)
RECOMPUTE = ("roi_crop", "block_crop", "incremental")
BLOCK_CROP_STEP = 8
BLOCK_CROP_MAX_SHARE = 0.7


def _round_up(lo: int, hi: int, lim_lo: int, lim_hi: int, step: int) -> tuple[int, int]:
    """[lo, hi) grown to a length that is a multiple of ``step`` (or all of [lim_lo, lim_hi))."""
    want = min(lim_hi - lim_lo, -(-(hi - lo) // step) * step)
    hi = min(lim_hi, lo + want)
    lo = max(lim_lo, hi - want)
    return lo, hi


def check_checkpoint_cadence(every_s: float | None, every_items: int | None) -> None:
    """Refuse a checkpoint interval that is not a positive number (or None, off)."""
    if every_s is not None and (isinstance(every_s, bool) or not isinstance(every_s, (int, float)) or not every_s > 0):
        raise ValueError(f"checkpoint every_s must be a positive number of seconds or null, got {every_s!r}")
    if every_items is not None and (
        isinstance(every_items, bool) or not isinstance(every_items, int) or every_items < 1
    ):
        raise ValueError(f"checkpoint every_items must be a positive integer or null, got {every_items!r}")


class ModelOutputError(RuntimeError):
    """The model returned something a restoration model should not."""


class RunFolderError(RuntimeError):
    """A run folder that holds another run."""


@dataclass
class BatchInfo:
    stage: str
    done: int
    total: int
    forward_passes: int


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()


def model_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(
            t.detach().cpu().contiguous().numpy().tobytes()
            if t.dtype != torch.bfloat16
            else t.detach().float().cpu().numpy().tobytes()
        )
    return h.hexdigest()


class CEMJob:
    """One causal effect map: prepared once, then run stage by stage (resumable)."""

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        task_input: TaskInput,
        roi: Roi,
        block: int,
        intervention: Intervention,
        estimator: Estimator,
        metric: RoiMetric,
        *,
        seed: int = 0,
        tol: float = 0.01,
        classification: str = "tol",
        batch_size: int = 32,
        forward_batch: int | str = 8,
        device: torch.device | None = None,
        mode: str = "auto",
        crop_margin: int = 0,
        crop_multiple: int = 1,
        verify: bool = True,
        image_name: str = "image",
        model_name: str | None = None,
        blocks: Sequence[int] | None = None,
        recompute: str = "roi_crop",
        full_output: Tensor | None = None,
    ):
        if mode not in ("auto", "full"):
            raise ValueError(f"mode must be 'auto' (crop when the model is local) or 'full', got {mode!r}")
        if recompute not in RECOMPUTE:
            raise ValueError(
                f"recompute must be 'roi_crop' (every item on the ROI's dependency crop), "
                f"'block_crop' (each item on the smallest crop its block needs) or 'incremental' "
                f"(a plain conv stack recomputed layer by layer only where the block reaches), "
                f"got {recompute!r}"
            )
        self.recompute_requested, self.block_crops, self.incremental = recompute, None, None
        self.auto_forward_batch = forward_batch == "auto"
        if batch_size < 1 or not (self.auto_forward_batch or int(forward_batch) >= 1):
            raise ValueError(
                f"batch_size must be >= 1 and forward_batch >= 1 or 'auto', got {batch_size}, {forward_batch!r}"
            )
        # with "auto", the full-image preparation runs one input at a time; the size is chosen on the crop
        self.forward_batch = 1 if self.auto_forward_batch else int(forward_batch)
        self.model, self.task, self.roi, self.block = model, task, roi, block
        self.intervention, self.estimator, self.metric = intervention, estimator, metric
        self.seed, self.tol, self.rule, self.batch_size = int(seed), float(tol), classification, int(batch_size)
        if isinstance(crop_multiple, bool) or not isinstance(crop_multiple, int) or crop_multiple < 1:
            raise ValueError(f"crop_multiple must be a positive integer, got {crop_multiple!r}")
        # the model's own grid (window attention, pooling) is kept as well: lcm with its crop_multiple
        # and so is the task's (the JPEG task's MCU grid)
        for own in (getattr(model, "crop_multiple", 1), getattr(task, "crop_multiple", 1)):
            crop_multiple = math.lcm(crop_multiple, own if isinstance(own, int) and own >= 1 else 1)
        self.mode_requested, self.crop_margin, self.crop_multiple, self.verify = (
            mode,
            crop_margin,
            crop_multiple,
            verify,
        )
        self.image_name = image_name
        self.model_name = model_name or type(model).__name__
        if device is None:
            p = next(iter(model.parameters()), None)
            device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(device)
        model_scale = getattr(model, "scale", None)
        if isinstance(model_scale, int) and model_scale != task.scale:
            raise GeometryError(
                f"{self.model_name} is a x{model_scale} model but the task {task.name} is x{task.scale}: "
                f"use a model made for the task (an SR model for task=sr with task.scale={model_scale}, "
                "a scale-1 model for dn and dr)"
            )
        self.model.eval()
        self.ti = task_input.to(self.device)
        _, _, h, w = self.ti.input.shape
        self.scale = task.scale
        self.grid = BlockGrid(h, w, self.scale, block)
        self.out_shape = (h * self.scale, w * self.scale)
        roi.validate(*self.out_shape, self.scale)
        if self.ti.target is not None and tuple(self.ti.target.shape[-2:]) != self.out_shape:
            raise GeometryError(
                f"ground truth is {tuple(self.ti.target.shape[-2:])} but the model output should be {self.out_shape}"
            )
        if self.ti.target is None and metric.name != "output_change":
            raise ValueError(
                f"metric {metric.name!r} needs a ground truth; give one, or use the "
                "ground-truth-free metric 'output_change'"
            )
        self.roi_mask = self.grid.roi_mask(roi)
        self.estimator.bind(self.roi_mask.ravel())
        self.boxes = [self.grid.box(i) for i in range(len(self.grid))]
        self.intervention.bind(task, self.ti, self.boxes, self.grid.block_in, self.device)
        self.selected = np.ones(len(self.grid), dtype=bool)
        if blocks is not None:
            sel = np.asarray(blocks, dtype=int).ravel()
            if len(sel) == 0 or sel.min() < 0 or sel.max() >= len(self.grid):
                raise GeometryError(
                    f"blocks must be flat block indices in [0, {len(self.grid)}) "
                    f"(grid {self.grid.rows}x{self.grid.cols}), got {sel.tolist()[:10]}"
                )
            self.selected[:] = False
            self.selected[sel] = True
        self.forward_passes = 0
        self.pixels_pushed = 0
        self.notes: list[str] = []
        self.timings: dict[str, float] = {}
        self._prepare(full_output)

    # --- model calls ---------------------------------------------------------------------------
    def _forward(self, x: Tensor, pad: bool = True) -> Tensor:
        """Run the model in chunks of exactly ``forward_batch`` rows (the last one padded).

        Convolution kernels may pick another algorithm for another batch shape, which changes
        float rounding and, rarely, a uint8-rounded output pixel. With one fixed shape, an item's
        output does not depend on the work-unit size, its position in a batch, or where a run
        was resumed. ``pad=False`` runs the last chunk as it is: for the full-image passes of the
        preparation in crop mode (the restored image, the checks of the crop, with a tolerance),
        which no map value is read from.
        """
        n = x.shape[0]
        outs = []
        for i in range(0, n, self.forward_batch):
            chunk = x[i : i + self.forward_batch]
            real = chunk.shape[0]
            if pad and real < self.forward_batch:
                chunk = torch.cat([chunk, chunk[:1].expand(self.forward_batch - real, -1, -1, -1)])
            outs.append(self._call_model(chunk)[:real])
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def _call_model(self, x: Tensor) -> Tensor:
        with torch.inference_mode():
            out = self.model(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        self.forward_passes += x.shape[0]
        self.pixels_pushed += x.shape[0] * x.shape[-2] * x.shape[-1]
        b, _, h, w = x.shape
        want = (b, 3, h * self.scale, w * self.scale)
        if not isinstance(out, Tensor) or tuple(out.shape) != want:
            got = (
                f"an output of {tuple(out.shape[1:])} per image"
                if isinstance(out, Tensor) and out.dim() == 4
                else f"{tuple(out.shape)}"
                if isinstance(out, Tensor)
                else type(out).__name__
            )
            raise ModelOutputError(
                f"{self.model_name} returned {got} for an input of {tuple(x.shape[1:])}; expected "
                f"{want[1:]} (task {self.task.name} x{self.scale}). Check that the model's scale matches the "
                "task and that it returns one RGB image per input"
            )
        return out

    def _not_finite(self, where: str) -> str:
        cls = type(self.model).__name__
        label = self.model_name if self.model_name == cls else f"{self.model_name} ({cls})"
        return (
            f"the model {label} produced NaN or Inf {where}; check its weights (a corrupt or "
            "mismatched checkpoint, weights trained in another precision), that it expects inputs in "
            "[0, 1] RGB as cem_lab gives them (not [0, 255] or BGR), and that it is in eval mode"
        )

    def _roi(self, out: Tensor, origin: tuple[int, int]) -> Tensor:
        y0, y1, x0, x1 = self.roi.box
        oy, ox = origin[0] * self.scale, origin[1] * self.scale
        roi = out[:, :, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        if not torch.isfinite(roi).all():
            raise ModelOutputError(self._not_finite("in the ROI"))
        return roi

    def _roi_metric_full(self, x: Tensor) -> Tensor:
        return self._roi(self._forward(x, pad=False), (0, 0))

    # --- preparation -----------------------------------------------------------------------------
    def _prepare(self, full_output: Tensor | None = None) -> None:
        """``full_output``: the model's padded output on this un-intervened input, when the caller
        has it (the ROI atlas's jobs share one input); used with ``mode="full"`` only."""
        t0 = time.perf_counter()
        x = self.ti.input
        # in crop mode no map value is read from a full-image pass: it runs unpadded (one image, not
        # forward_batch); in full mode it is taken again below with the interventions' forward shape
        padded_first = self.mode_requested == "full" and not self.auto_forward_batch
        if padded_first and full_output is not None:
            self._full_baseline(full_output)
        else:
            self._full_baseline(self._forward(x, pad=padded_first))
        h, w = self.grid.input_h, self.grid.input_w
        self.crop = (0, h, 0, w)
        self.region: DependencyRegion | None = None
        self.crop_check = None
        self.mode = "full"
        if self.mode_requested == "full":
            self.notes.append("full-image mode forced (mode=full)")
        else:
            self._try_crop()
        y0, y1, x0, x1 = self.crop
        self.base_crop = x[:, :, y0:y1, x0:x1].contiguous()
        self.ctx_crop = self.ti.crop_context(self.crop)
        if self.auto_forward_batch:
            self.forward_batch = self._find_forward_batch(self.base_crop)
            self.notes.append(f"forward_batch=auto: {self.forward_batch}")
        if self.mode == "full" and not padded_first:  # the baseline with the interventions' forward shape
            self._full_baseline(self._forward(x))
        if self.mode == "crop":
            self.base_crop_roi = self._roi(self._forward(self.base_crop), (y0, x0))
            self.baseline = float(self.metric(self.base_crop_roi, self.ref)[0])
        else:
            self.baseline = self.baseline_full
        active = np.zeros(len(self.grid), dtype=bool)
        active[self.grid.blocks_touching(self.crop)] = True
        self.active = active
        if self.recompute_requested == "block_crop":
            self._try_block_crops()
        elif self.recompute_requested == "incremental":
            self._try_incremental()
        self.timings["prepare_s"] = time.perf_counter() - t0

    def _full_baseline(self, full_out: Tensor) -> None:
        """The restored image, the full-image ROI output, the metric's reference and M0 from a
        full-image pass."""
        if not torch.isfinite(full_out).all():
            raise ModelOutputError(self._not_finite("on the un-intervened input"))
        self.restored = full_out
        self.base_full_roi = self._roi(full_out, (0, 0))
        if self.ti.target is not None and self.metric.name != "output_change":
            y0, y1, x0, x1 = self.roi.box
            ref = self.ti.target[:, :, y0:y1, x0:x1]
        else:
            ref = self.base_full_roi
        self.ref = self.metric.prepare(ref)
        self.baseline_full = float(self.metric(self.base_full_roi, self.ref)[0])

    def _find_forward_batch(self, x: Tensor, start: int = 256) -> int:
        """The largest forward batch (a power of two <= ``start``) that fits the device's memory.

        On a CPU there is no memory limit to find: 8, the default.
        """
        if self.device.type != "cuda":
            return 8
        b = start
        while b > 1:
            try:
                with torch.inference_mode():
                    self.model(x.expand(b, -1, -1, -1).contiguous())
                torch.cuda.synchronize(self.device)
                return b
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                b //= 2
        return 1

    def _try_crop(self) -> None:
        try:
            self.region = region = dependency_region(
                self.model,
                self.ti.input,
                self.roi.box,
                self.scale,
                seed=self.seed,
                margin=self.crop_margin,
                multiple=self.crop_multiple,
            )
        except NoGradientError:
            msg = (
                f"the dependency probe needs gradients and {self.model_name} gives none (it runs under "
                "torch.no_grad, detaches its output, or is not torch): full-image mode"
            )
            self.notes.append(msg)
            log.info(msg)
            return
        if region.covers_input:
            msg = (
                "the ROI depends on the whole input (a global operation such as global pooling or "
                "image-wide attention): full-image mode"
            )
            self.notes.append(msg)
            log.info(msg)
            return
        if self.verify:
            check = self._verify(region)
            self.crop_check = check
            if not check.ok:
                msg = f"crop verification failed ({check.reason}): full-image mode"
                self.notes.append(msg)
                log.warning(msg)
                return
        self.mode = "crop"
        self.crop = region.crop
        self.notes.append(
            f"local model: running on a {region.crop_shape[0]}x{region.crop_shape[1]} crop of the "
            f"{self.grid.input_h}x{self.grid.input_w} input"
        )
        log.info(self.notes[-1])

    def _verify(self, region: DependencyRegion):
        rng = np.random.default_rng([self.seed, 7919])
        inside = self.grid.blocks_touching(region.crop)
        inside = rng.choice(inside, size=min(4, len(inside)), replace=False)
        cy0, cy1, cx0, cx1 = region.crop
        ring = set()
        b = self.grid.block_in
        for i in range(len(self.grid)):
            y0, y1, x0, x1 = self.boxes[i]
            outside = y1 <= cy0 or y0 >= cy1 or x1 <= cx0 or x0 >= cx1
            near = y0 < cy1 + b and y1 > cy0 - b and x0 < cx1 + b and x1 > cx0 - b
            if outside and near:
                ring.add(i)
        ring = sorted(ring)
        if len(ring) > 8:
            ring = list(rng.choice(ring, size=8, replace=False))
        full_box = (0, self.grid.input_h, 0, self.grid.input_w)
        full_in = self._build(inside, np.zeros(len(inside), dtype=int), full_box, self.ti.input, self.ti.context)
        crop_in = self._build(
            inside,
            np.zeros(len(inside), dtype=int),
            region.crop,
            self.ti.input[:, :, cy0:cy1, cx0:cx1],
            self.ti.crop_context(region.crop),
        )
        out_in = (
            self._build(np.array(ring), np.zeros(len(ring), dtype=int), full_box, self.ti.input, self.ti.context)
            if ring
            else None
        )
        full_with_base = torch.cat([self.ti.input, full_in])
        crop_with_base = torch.cat([self.ti.input[:, :, cy0:cy1, cx0:cx1], crop_in])
        return verify_crop(
            self._roi_metric_full,
            lambda t: self._roi(self._forward(t), (cy0, cx0)),
            full_with_base,
            crop_with_base,
            out_in,
            self.base_full_roi,
        )

    # --- interventions ---------------------------------------------------------------------------
    def _placements(self, blocks: Sequence[int], crop) -> list[Placement]:
        cy0, cy1, cx0, cx1 = crop
        out = []
        for b in blocks:
            y0, y1, x0, x1 = self.boxes[int(b)]
            iy0, iy1, ix0, ix1 = max(y0, cy0), min(y1, cy1), max(x0, cx0), min(x1, cx1)
            out.append(Placement((iy0 - cy0, iy1 - cy0, ix0 - cx0, ix1 - cx0), (iy0 - y0, ix0 - x0)))
        return out

    def _build(self, blocks, samples, crop, base: Tensor, context) -> Tensor:
        draws = [self.intervention.draw(draw_rng(self.seed, b, s), int(b), int(s)) for b, s in zip(blocks, samples)]
        inputs = base.expand(len(blocks), -1, -1, -1).clone()
        return self.intervention.apply(
            inputs, context, self._placements(blocks, crop), draws, origin=(crop[0], crop[2])
        )

    def _metrics(self, blocks: np.ndarray, samples: np.ndarray) -> np.ndarray:
        if self.incremental is not None:
            roi = self._roi_outputs_incremental(blocks, samples)
        elif self.block_crops is not None:
            roi = self._roi_outputs_block_crops(blocks, samples)
        else:
            roi = self._roi_outputs_crop(blocks, samples)
        return self.metric(roi, self.ref).detach().cpu().numpy().astype(np.float64)

    def _roi_outputs_crop(self, blocks, samples) -> Tensor:
        x = self._build(blocks, samples, self.crop, self.base_crop, self.ctx_crop)
        return self._roi(self._forward(x), (self.crop[0], self.crop[2]))

    # --- incremental recompute of a conv stack --------------------------------------------------------
    def _crop_roi(self) -> tuple[int, int, int, int]:
        y0, y1, x0, x1 = self.roi.box
        return y0 - self.crop[0], y1 - self.crop[0], x0 - self.crop[2], x1 - self.crop[2]

    def _try_incremental(self) -> None:
        """Incremental recompute (:mod:`cem_lab.causal.incremental`): each layer of a plain conv stack
        is recomputed only on the window an intervention can have changed, from the cached
        un-intervened activations; checked against the ROI crop on sampled blocks before it is trusted."""
        from .incremental import IncrementalChain, NotAChain, conv_chain

        why = None
        if self.scale != 1:
            why = f"the model is x{self.scale} (incremental recompute follows same-size conv stacks)"
        else:
            try:
                units, residual = conv_chain(self.model)
            except NotAChain as e:
                why = f"{self.model_name} is not a plain conv stack ({e})"
        if why is None:
            self.incremental = IncrementalChain(units, residual, self.base_crop, self._crop_roi())
            if self.verify:
                check = self._verify_incremental()
                self.incremental_check = check
                if not check["ok"]:
                    self.incremental = None
                    why = (
                        f"incremental and ROI-crop outputs differ by {check['max_diff']:.3g} (> {check['atol']:g}) "
                        f"on blocks {check['blocks']}"
                    )
        if why is not None:
            msg = f"incremental recompute (recompute=incremental) not used: {why}; every item runs on the ROI crop"
            self.notes.append(msg)
            log.warning(msg)
            return
        inc = self.incremental
        msg = (
            f"incremental recompute: {len(inc.units)} conv layers, reach {inc.reach} px; an item recomputes "
            f"{inc.pixels((0, self.block, 0, self.block)):.0f} px per layer on average instead of the "
            f"{self.crop[1] - self.crop[0]}x{self.crop[3] - self.crop[2]} crop"
        )
        self.notes.append(msg)
        log.info(msg)

    def _item_boxes(self, blocks) -> list[tuple[int, int, int, int]]:
        return [p.dst for p in self._placements(blocks, self.crop)]

    def _roi_outputs_incremental(self, blocks, samples) -> Tensor:
        from .incremental import changed_outside

        x = self._build(blocks, samples, self.crop, self.base_crop, self.ctx_crop)
        boxes = self._item_boxes(blocks)
        if changed_outside(x, self.base_crop, boxes):
            raise ModelOutputError(
                f"the {self.intervention.name} intervention changed input pixels outside its block, which "
                "incremental recompute assumes it never does; run with recompute=roi_crop"
            )
        out = self.incremental.roi_outputs(x, boxes, chunk=self.forward_batch)
        self.forward_passes += len(blocks)
        self.pixels_pushed += int(round(sum(self.incremental.pixels(b) for b in boxes)))
        if not torch.isfinite(out).all():
            raise ModelOutputError(self._not_finite("in the ROI"))
        return out

    def _verify_incremental(self, atol: float = 1e-4) -> dict:
        """Incremental and ROI-crop outputs of sample 0 on up to 8 blocks (seeded choice among the
        blocks inside the ROI, next to it and at the crop's edge)."""
        rng = np.random.default_rng([self.seed, 15485863])
        cand = np.flatnonzero(self.active)
        pick = np.array(sorted(rng.choice(cand, size=min(8, len(cand)), replace=False).tolist()))
        return self._against_crop(pick, self._roi_outputs_incremental, atol)

    def _against_crop(self, pick: np.ndarray, outputs: Callable, atol: float) -> dict:
        """Max |difference| between ``outputs`` and the ROI crop's outputs on sample 0 of ``pick``."""
        if len(pick) == 0:
            return {"ok": True, "max_diff": 0.0, "atol": atol, "blocks": []}
        zeros = np.zeros(len(pick), dtype=int)
        d = float((outputs(pick, zeros) - self._roi_outputs_crop(pick, zeros)).abs().max())
        return {"ok": d <= atol, "max_diff": d, "atol": atol, "blocks": pick.tolist()}

    # --- per-block recompute ---------------------------------------------------------------------
    def _try_block_crops(self) -> None:
        """Per-block recompute: an intervention at block p can change only the ROI outputs within the
        model's reach r of p (A_p), and those depend only on the input within r of A_p; so each item
        runs on that crop, and the rest of the ROI keeps its un-intervened output. r is read off the
        dependency region (its margin around the ROI); the crops are checked against the ROI crop on
        sampled blocks before they are trusted."""
        why = None
        if self.mode != "crop":
            why = "the model is run on the whole image (its ROI output depends on all of it, or mode=full)"
        elif self.crop_multiple > 1:
            why = (
                f"crops must follow a grid of {self.crop_multiple} input pixels (the model's windows, or the "
                "task's JPEG blocks)"
            )
        reach = None if why else self._reach()
        if why is None and reach is None:
            why = "the model's reach could not be read off the dependency region (it is clipped by the image on every side)"
        if why is not None:
            msg = f"per-block recompute (recompute=block_crop) not used: {why}; every item runs on the ROI crop"
            self.notes.append(msg)
            log.info(msg)
            return
        self.reach = reach
        self.block_crops = {int(b): self._block_crop(int(b), reach) for b in np.flatnonzero(self.active)}
        if self.verify:
            check = self._verify_block_crops()
            self.block_check = check
            if not check["ok"]:
                self.block_crops = None
                msg = (
                    f"per-block recompute not used: per-block and ROI-crop outputs differ by "
                    f"{check['max_diff']:.3g} (> {check['atol']:g}); every item runs on the ROI crop"
                )
                self.notes.append(msg)
                log.warning(msg)
                return
        shapes = {(c[1] - c[0], c[3] - c[2]) for c, _ in self.block_crops.values() if c is not None}
        msg = (
            f"per-block recompute: reach {reach} input px, {len(self.block_crops)} blocks on "
            f"{len(shapes)} crop shapes (the ROI crop is {self.crop[1] - self.crop[0]}x{self.crop[3] - self.crop[2]})"
        )
        self.notes.append(msg)
        log.info(msg)

    def _reach(self) -> int | None:
        """Input pixels the model sees beyond a pixel: the dependency box's margin around the ROI on
        the sides the image border does not clip."""
        y0, y1, x0, x1 = self.roi.box
        s = self.scale
        ry0, ry1, rx0, rx1 = y0 // s, -(-y1 // s), x0 // s, -(-x1 // s)
        by0, by1, bx0, bx1 = self.region.box
        h, w = self.grid.input_h, self.grid.input_w
        sides = [
            ry0 - by0 if by0 > 0 else None,
            by1 - ry1 if by1 < h else None,
            rx0 - bx0 if bx0 > 0 else None,
            bx1 - rx1 if bx1 < w else None,
        ]
        known = [m for m in sides if m is not None]
        return max(0, max(known)) + int(self.crop_margin) if known else None

    def _block_crop(self, b: int, r: int):
        """(crop of the input, A_p in input pixels) for block ``b``; crop None when its reach misses the ROI."""
        y0, y1, x0, x1 = self.roi.box
        s = self.scale
        ry0, ry1, rx0, rx1 = y0 // s, y1 // s, x0 // s, x1 // s
        py0, py1, px0, px1 = self.boxes[b]
        a = (max(py0 - r, ry0), min(py1 + r, ry1), max(px0 - r, rx0), min(px1 + r, rx1))
        if a[0] >= a[1] or a[2] >= a[3]:
            return None, a
        h, w = self.grid.input_h, self.grid.input_w
        crop = (max(0, a[0] - r), min(h, a[1] + r), max(0, a[2] - r), min(w, a[3] + r))
        # the crop never leaves the ROI's dependency crop (it holds every input the ROI sees); its sides
        # are rounded up to a multiple of BLOCK_CROP_STEP inside it, so that few shapes batch densely
        cy0, cy1, cx0, cx1 = self.crop
        y0c, y1c = _round_up(max(crop[0], cy0), min(crop[1], cy1), cy0, cy1, BLOCK_CROP_STEP)
        x0c, x1c = _round_up(max(crop[2], cx0), min(crop[3], cx1), cx0, cx1, BLOCK_CROP_STEP)
        if (y1c - y0c) * (x1c - x0c) >= BLOCK_CROP_MAX_SHARE * (cy1 - cy0) * (cx1 - cx0):
            # hardly smaller than the ROI crop: run it there, with the blocks that need all of it
            return self.crop, (ry0, ry1, rx0, rx1)
        return (y0c, y1c, x0c, x1c), a

    def _roi_outputs_block_crops(self, blocks, samples) -> Tensor:
        """ROI outputs of items run on their blocks' crops, grouped by crop shape so batches stay dense."""
        blocks, samples = np.asarray(blocks), np.asarray(samples)
        n = len(blocks)
        out = self.base_crop_roi.expand(n, -1, -1, -1).clone()
        groups: dict[tuple[int, int], list[int]] = {}
        for i, b in enumerate(blocks.tolist()):
            crop, _ = self.block_crops[b]
            if crop is not None:
                groups.setdefault((crop[1] - crop[0], crop[3] - crop[2]), []).append(i)
        s = self.scale
        ry0, rx0 = self.roi.box[0], self.roi.box[2]
        x = self.ti.input
        for idx in groups.values():
            inputs = []
            for i in idx:
                crop, _ = self.block_crops[int(blocks[i])]
                base = x[:, :, crop[0] : crop[1], crop[2] : crop[3]]
                inputs.append(
                    self._build(blocks[i : i + 1], samples[i : i + 1], crop, base, self.ti.crop_context(crop))
                )
            res = self._forward(torch.cat(inputs))
            for k, i in enumerate(idx):
                crop, a = self.block_crops[int(blocks[i])]
                oy, ox = (a[0] - crop[0]) * s, (a[2] - crop[2]) * s
                hh, ww = (a[1] - a[0]) * s, (a[3] - a[2]) * s
                part = res[k, :, oy : oy + hh, ox : ox + ww]
                if not torch.isfinite(part).all():
                    raise ModelOutputError(self._not_finite("in the ROI"))
                out[i, :, a[0] * s - ry0 : a[0] * s - ry0 + hh, a[2] * s - rx0 : a[2] * s - rx0 + ww] = part
        return out

    def _verify_block_crops(self, atol: float = 1e-4) -> dict:
        """Per-block and ROI-crop outputs of sample 0 on up to 8 blocks: inside the ROI, next to it,
        at the edge of the dependency crop (seeded choice)."""
        rng = np.random.default_rng([self.seed, 104729])
        cand = np.flatnonzero(self.active)
        with_crop = [b for b in cand.tolist() if self.block_crops[b][0] is not None]
        pick = (
            np.array(sorted(rng.choice(with_crop, size=min(8, len(with_crop)), replace=False).tolist()))
            if with_crop
            else np.array([], dtype=int)
        )
        return self._against_crop(pick, self._roi_outputs_block_crops, atol)

    # --- identity of the run ------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return {
            "task": self.task.describe(),
            "estimator": self.estimator.describe(),
            "intervention": self.intervention.describe(),
            "metric": {
                "name": self.metric.name,
                "crop_border": self.metric.crop_border,
                "test_y_channel": self.metric.test_y_channel,
            },
            "roi": self.roi.as_list(),
            "block": self.block,
            "seed": self.seed,
            "tol": self.tol,
            "classification": self.rule,
            "forward_batch": self.forward_batch,
            "blocks": "all" if self.selected.all() else np.flatnonzero(self.selected).tolist(),
            **({"recompute": "block_crop"} if self.block_crops is not None else {}),
            **({"recompute": "incremental"} if self.incremental is not None else {}),
        }

    def fingerprint(self) -> str:
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def check_folder(self, folder: str | Path) -> str | None:
        """Check, before anything is written, that ``folder`` holds no run or this run's own
        checkpoint: ``None`` (nothing to resume), ``"partial"`` or ``"complete"``. A checkpoint of
        another run (other settings, model, image or patch bank) raises :class:`RunFolderError`."""
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            return None
        return "complete" if bool(self._read_state(path)["complete"]) else "partial"

    def _read_state(self, path: Path) -> dict:
        """The arrays of the checkpoint ``path``, refused unless it is this run's own."""
        try:
            with np.load(path, allow_pickle=False) as z:
                state = {k: z[k] for k in z.files}
        except Exception as err:
            raise RunFolderError(
                f"cannot read the checkpoint {path} ({err}); delete {path} to start this run over"
            ) from err
        if str(state.get("fingerprint")) != self.fingerprint():
            raise RunFolderError(
                f"{path.parent} holds a run with other settings, model, image or patch bank; use another "
                "output folder, or delete that folder to start over"
            )
        return state

    def _compute_fingerprint(self) -> str:
        parts = [
            json.dumps(self.settings(), sort_keys=True),
            model_digest(self.model),
            self.ti.input.detach().cpu().numpy().tobytes(),
        ]
        if self.ti.target is not None:
            parts.append(self.ti.target.detach().cpu().numpy().tobytes())
        parts += [a.tobytes() for a in self.intervention.fingerprint_arrays()]
        return _sha(*parts)

    # --- running ---------------------------------------------------------------------------------
    def run(
        self,
        folder: str | Path | None = None,
        progress: bool = True,
        on_batch: Callable[[BatchInfo], None] | None = None,
        checkpoint_every: float | None = DEFAULT_CHECKPOINT_S,
        checkpoint_every_items: int | None = None,
        executor: UnitExecutor | None = None,
    ) -> CEMResult:
        """Run all stages; with ``folder``, checkpoint there and resume what it holds.

        The state is saved at the end of every stage, and within a stage after a round of work
        when ``checkpoint_every`` seconds or ``checkpoint_every_items`` items (whichever comes
        first; None turns one off) have passed since the last save: a ``kill -9`` loses at most
        that much work. ``executor`` computes rounds of work units (default: one unit at a time,
        here); a distributed executor spreads each round over processes and returns every unit's
        values to every process, so all of them update the same statistics in plan order.
        """
        from tqdm import tqdm

        check_checkpoint_cadence(checkpoint_every, checkpoint_every_items)
        executor = executor or LocalExecutor()
        main = executor.is_main
        t0 = time.perf_counter()
        fp = self.fingerprint()
        n = len(self.grid)
        stats: dict[str, BlockStats] = {}
        done_stages: list[Stage] = []
        stage = self.estimator.first_stage(n)
        done_items = 0
        filled = False
        state_path = Path(folder) / STATE_FILE if folder is not None else None
        if state_path is not None and state_path.is_file():
            stage, done_stages, stats, done_items, filled = self._load_state(state_path)
        last_save, items_since_save = time.perf_counter(), 0
        self.checkpoints, self.timings["checkpoint_s"] = 0, 0.0

        def save():
            if state_path is None or not main:
                return
            t_save = time.perf_counter()
            arrays: dict[str, Any] = {
                "fingerprint": fp,
                "format_version": FORMAT_VERSION,
                "stage_names": np.array([s.name for s in done_stages] + [stage.name if stage else ""]),
                "done_items": done_items,
                "filled": filled,
                "complete": stage is None,
            }
            for name, s in stats.items():
                arrays.update(s.state(f"{name}/"))
            write_npz(state_path, **arrays)
            self.checkpoints += 1
            self.timings["checkpoint_s"] += time.perf_counter() - t_save

        in_update = False
        try:
            while stage is not None:
                if stage.name not in stats:
                    stats[stage.name] = BlockStats(n)
                st = stats[stage.name]
                mine = stage.blocks[self.selected[stage.blocks]]
                act = mine[self.active[mine]]
                if not filled:
                    skipped = mine[~self.active[mine]]
                    # outside the dependency region the ROI output is unchanged: M = M0 exactly
                    in_update = True
                    st.update(
                        np.repeat(skipped, stage.samples),
                        np.full(len(skipped) * stage.samples, self.baseline),
                        self.baseline,
                    )
                    filled = True
                    in_update = False
                    save()
                sub = Stage(stage.name, act, stage.samples, stage.first_sample)
                total = sub.n_items
                bar = tqdm(
                    total=total,
                    initial=done_items,
                    desc=f"CEM {stage.name}",
                    unit="fwd",
                    disable=not (progress and main),
                    dynamic_ncols=True,
                    leave=True,
                )
                try:
                    while done_items < total:
                        units, end = [], done_items
                        while end < total and len(units) < executor.units_per_round:
                            k = np.arange(end, min(end + self.batch_size, total))
                            units.append(sub.item(k))
                            end = int(k[-1]) + 1
                        values = executor.map(self, units)
                        in_update = True
                        for (blocks, _), v in zip(units, values):
                            st.update(blocks, v, self.baseline)
                        bar.update(end - done_items)
                        items_since_save += end - done_items
                        done_items = end
                        in_update = False
                        if (checkpoint_every is not None and time.perf_counter() - last_save >= checkpoint_every) or (
                            checkpoint_every_items is not None and items_since_save >= checkpoint_every_items
                        ):
                            save()
                            last_save, items_since_save = time.perf_counter(), 0
                        if on_batch is not None:
                            on_batch(BatchInfo(stage.name, done_items, total, self.forward_passes))
                finally:
                    bar.close()
                done_stages.append(stage)
                stage = self.estimator.next_stage(done_stages, stats, self.baseline)
                done_items, filled = 0, False
                save()
                last_save, items_since_save = time.perf_counter(), 0
        except BaseException:
            if not in_update:
                save()
            raise
        self.timings["run_s"] = time.perf_counter() - t0
        return self._result(stats, fp)

    def _load_state(self, path: Path):
        state = self._read_state(path)
        names = [str(s) for s in state["stage_names"]]
        stats = {}
        for name in names:
            if name and f"{name}/n" in state:
                stats[name] = BlockStats.from_state(state, f"{name}/")
        n = len(self.grid)
        done: list[Stage] = []
        stage = self.estimator.first_stage(n)
        for _ in names[:-1]:
            done.append(stage)
            stage = self.estimator.next_stage(done, stats, self.baseline)
        if bool(state["complete"]):
            stage = None
        log.info("resuming %s: stage %s, %d items done", path.parent, names[-1] or "-", int(state["done_items"]))
        self.notes.append(
            f"resumed from a checkpoint (stage {names[-1] or 'done'}, {int(state['done_items'])} items done)"
        )
        return stage, done, stats, int(state["done_items"]), bool(state["filled"])

    def _result(self, stats: dict[str, BlockStats], fp: str) -> CEMResult:
        est = self.estimator.estimate(stats, self.baseline)
        effect, cls, lo, hi = classify(est, tol=self.tol, rule=self.rule)
        if not self.selected.all():  # blocks left out of the plan: not computed
            for a in (effect, est.effect, est.stderr, lo, hi):
                a[~self.selected] = np.nan
            cls[~self.selected] = 0
            est.n[~self.selected] = 0
        rows, cols = self.grid.shape
        shape = (rows, cols)
        images = {"input": to_uint8(self.ti.input), "restored": to_uint8(self.restored)}
        if self.ti.target is not None:
            images["target"] = to_uint8(self.ti.target)
        dev = self.device
        meta = {
            "fingerprint": fp,
            "model": self.model_name,
            "model_info": describe_model(self.model),
            "image": self.image_name,
            "settings": self.settings(),
            "mode": self.mode,
            "notes": self.notes,
            "forward_passes": self.forward_passes,
            "timings": self.timings,
            "checkpoints": getattr(self, "checkpoints", 0),
            "pixels_pushed": self.pixels_pushed,
            "device": str(dev) if dev.type != "cuda" else f"{dev} ({torch.cuda.get_device_name(dev)})",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "baseline_metric_full_image": self.baseline_full,
            "display_bound": self.task.display_bound
            if self.metric.name == "psnr"
            else max(1e-6, float(np.nanmax(np.abs(effect))) if np.isfinite(effect).any() else 1.0),
            "title": f"{self.model_name} | {self.task.name} | {self.image_name}",
        }
        if self.region is not None:
            meta["dependency_region"] = self.region.describe()
        if self.crop_check is not None:
            meta["crop_check"] = self.crop_check.describe()
        if getattr(self, "block_check", None) is not None:
            meta["block_crop_check"] = self.block_check
        if getattr(self, "incremental_check", None) is not None:
            meta["incremental_check"] = self.incremental_check
        return CEMResult(
            effect.reshape(shape),
            est.effect.reshape(shape),
            est.stderr.reshape(shape),
            lo.reshape(shape),
            hi.reshape(shape),
            est.n.reshape(shape),
            cls.reshape(shape),
            self.roi_mask,
            self.roi,
            self.block,
            self.scale,
            (self.grid.input_h, self.grid.input_w),
            self.out_shape,
            self.baseline,
            metric=self.metric.name,
            unit=self.metric.unit,
            meta=meta,
            images=images,
        )


class UnitExecutor:
    """Computes the metrics of a round of work units; see :meth:`CEMJob.run`."""

    is_main: bool = True
    units_per_round: int = 1

    def map(self, job: CEMJob, units: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        raise NotImplementedError


class LocalExecutor(UnitExecutor):
    """Every unit in this process, one after the other."""

    def map(self, job, units):
        return [job._metrics(blocks, samples) for blocks, samples in units]


def _read_input(image: ImageLike, name: str, notes: list[str]):
    """An image as a (1, 3, H, W) float tensor; every change made to it is added to ``notes``."""
    from cem_lab.images import read_image

    arr, changes = read_image(image, name=name)
    notes.extend(changes)
    return from_uint8(arr)


def _to_scale(image: Tensor, scale: int, name: str, notes: list[str]) -> Tensor:
    cut = crop_to_scale(image, scale)
    if cut.shape[-2:] != image.shape[-2:]:
        notes.append(
            f"{name}: {image.shape[-2]}x{image.shape[-1]} cut to {cut.shape[-2]}x{cut.shape[-1]} "
            f"(height and width must be multiples of the scale x{scale}; the top-left part is kept)"
        )
    return cut


def prepare_cem(
    model: nn.Module,
    image: ImageLike | None,
    task: Task | str,
    roi,
    *,
    degraded: ImageLike | None = None,
    block: int = 8,
    patch_bank=None,
    sampler: str = "uniform",
    intervention: str | Intervention = "lv",
    estimator: str | Estimator | None = None,
    samples: int | None = None,
    coarse: int = 3,
    fine: int = 50,
    tol: float = 0.01,
    classification: str = "tol",
    estimator_options: dict | None = None,
    metric: str | RoiMetric = "psnr",
    crop_border: int = 0,
    test_y_channel: bool = False,
    seed: int = 0,
    image_seed: int | None = None,
    batch_size: int = 32,
    forward_batch: int | str = 8,
    device: str | torch.device | None = None,
    mode: str = "auto",
    crop_margin: int = 0,
    crop_multiple: int = 1,
    verify: bool = True,
    image_name: str | None = None,
    model_name: str | None = None,
    blocks: Sequence[int] | None = None,
    recompute: str = "roi_crop",
    full_output: Tensor | None = None,
) -> CEMJob:
    """The checked :class:`CEMJob` of :func:`compute_cem` (same arguments), with nothing written.

    Every check of the input happens here (images, ROI, block, model output); the changes made to
    the user's input (a grey image made RGB, a 16-bit image scaled to 8 bits, an SR image cut to
    a multiple of the scale) are logged once and listed in ``job.notes`` (summary.json's notes).
    """
    if isinstance(task, str):
        task = make_task(task)
    roi = Roi.parse(roi)
    name = image_name or (
        Path(image).name
        if isinstance(image, (str, Path))
        else Path(degraded).name
        if isinstance(degraded, (str, Path))
        else "image"
    )
    notes: list[str] = []
    clean = None
    if image is not None:
        clean = _read_input(image, "image" if not isinstance(image, (str, Path)) else str(image), notes)
    if image_seed is None:
        from cem_lab.tasks import seed_from_name

        image_seed = seed_from_name(name) if task.name == "dr" else 0
    if degraded is not None:
        deg = _read_input(degraded, "degraded input" if not isinstance(degraded, (str, Path)) else str(degraded), notes)
        if clean is not None and tuple(clean.shape[-2:]) != (deg.shape[-2] * task.scale, deg.shape[-1] * task.scale):
            clean = _to_scale(clean, task.scale, "image", notes)
        task_input = task.prepare(clean, image_seed, degraded=deg)
    else:
        if clean is None:
            raise ValueError("give an image (the clean ground truth) or a degraded input")
        clean = _to_scale(clean, task.scale, "image", notes)
        task_input = task.prepare(clean, image_seed)
    if isinstance(metric, str):
        metric = RoiMetric(metric, crop_border=crop_border, test_y_channel=test_y_channel)
    if isinstance(estimator, Estimator):
        est = estimator
        tol = getattr(est, "tol", tol)
    elif estimator in (None, "coarse_to_fine"):
        est = CoarseToFineEstimator(coarse, fine, tol)
    elif estimator == "exhaustive":
        est = make_estimator("exhaustive", samples=samples if samples is not None else fine)
    elif estimator == "adaptive":
        est = make_estimator("adaptive", coarse=coarse, tol=tol, **{"fine": fine, **(estimator_options or {})})
    else:
        est = make_estimator(str(estimator), **(estimator_options or {}))
    if isinstance(intervention, str):
        if intervention == "lv" and patch_bank is None:
            from cem_lab.patches import PatchBank

            patch_bank = PatchBank.embedded()
        intervention = make_intervention(intervention, bank=patch_bank, sampler=sampler)
    job = CEMJob(
        model,
        task,
        task_input,
        roi,
        block,
        intervention,
        est,
        metric,
        seed=seed,
        tol=tol,
        classification=classification,
        batch_size=batch_size,
        forward_batch=forward_batch,
        device=device,
        mode=mode,
        crop_margin=crop_margin,
        crop_multiple=crop_multiple,
        verify=verify,
        image_name=name,
        model_name=model_name,
        blocks=blocks,
        recompute=recompute,
        full_output=full_output,
    )
    for note in notes:
        log.info("input: %s", note)
    job.notes[:0] = [f"input: {n}" for n in notes]
    return job


def compute_cem(
    model: nn.Module,
    image: ImageLike | None,
    task: Task | str,
    roi,
    *,
    output_dir: str | Path | None = None,
    figures: bool = True,
    progress: bool = True,
    on_batch: Callable[[BatchInfo], None] | None = None,
    executor: UnitExecutor | None = None,
    lock_folder: bool = True,
    checkpoint_every: float | None = DEFAULT_CHECKPOINT_S,
    checkpoint_every_items: int | None = None,
    **kwargs: Any,
) -> CEMResult:
    """Compute the causal effect map of ``model`` for the ROI of one image.

    ``image``: the clean image (ground truth); the task degrades it into the model input. To use
    your own degraded input (a real noisy photo), pass it as ``degraded`` and its ground truth as
    ``image`` (or ``image=None`` with ``metric="output_change"``). ``roi`` = (top row, left column,
    size) in output pixels; ``block`` in output pixels. ``estimator``: "coarse_to_fine" (default;
    ``coarse``, ``fine``, ``tol``), "exhaustive" (``samples`` per block) or "adaptive" (``coarse``,
    ``tol``, ``fine`` (the ROI blocks' reference draws) and ``estimator_options``: round_size, growth,
    max_samples, half_width, settled_half_width, level, roi_blocks; see
    :class:`~cem_lab.causal.estimators.AdaptiveEstimator`). ``patch_bank``: a
    :class:`~cem_lab.patches.PatchBank` (default: the embedded bank). With ``output_dir`` the run is
    checkpointed there (every ``checkpoint_every`` seconds or ``checkpoint_every_items`` items),
    resumed when rerun, and saved (numbers, images and figures); the folder is locked for the
    run (:mod:`cem_lab.folder_lock`: another process's run in it is refused, and a refused run
    leaves no folder behind; ``lock_folder=False`` when the caller holds it). ``blocks``
    restricts the work to some flat block indices (the others are reported as NaN, count 0).
    ``batch_size`` items are built and recorded together (the unit of work; it does not change the
    result); the model always runs on ``forward_batch`` inputs at a time, which is part of the
    computation (another value can change float rounding, so it is part of the run's identity);
    ``forward_batch="auto"`` takes the largest power of two that fits the GPU (8 on a CPU).
    ``executor`` spreads the work units over processes (see ``cem_lab.parallel.fabric``).
    The other keywords are those of :func:`prepare_cem`.
    """
    from contextlib import nullcontext

    from cem_lab.folder_lock import hold_run_folder

    check_checkpoint_cadence(checkpoint_every, checkpoint_every_items)
    main = executor is None or executor.is_main
    hold = (
        hold_run_folder(output_dir, what="a cem_lab map")
        if output_dir is not None and lock_folder and main
        else nullcontext()
    )
    with hold:
        job = prepare_cem(model, image, task, roi, **kwargs)
        if output_dir is not None:
            job.check_folder(output_dir)
        return run_cem(
            job,
            output_dir,
            figures=figures,
            progress=progress,
            on_batch=on_batch,
            executor=executor,
            checkpoint_every=checkpoint_every,
            checkpoint_every_items=checkpoint_every_items,
        )


def run_cem(
    job: CEMJob,
    output_dir: str | Path | None = None,
    *,
    figures: bool = True,
    progress: bool = True,
    on_batch: Callable[[BatchInfo], None] | None = None,
    executor: UnitExecutor | None = None,
    checkpoint_every: float | None = DEFAULT_CHECKPOINT_S,
    checkpoint_every_items: int | None = None,
) -> CEMResult:
    """Run a prepared job (:func:`prepare_cem`) and save its result in ``output_dir`` (the main
    process only); the caller holds the folder's lock."""
    result = job.run(
        output_dir,
        progress=progress,
        on_batch=on_batch,
        executor=executor,
        checkpoint_every=checkpoint_every,
        checkpoint_every_items=checkpoint_every_items,
    )
    if output_dir is not None and (executor is None or executor.is_main):
        result.save(output_dir, figures=figures)
    return result
