"""One causal effect map, prepared: the checked model calls, the dependency crop, the interventions.

A :class:`CEMJob` is made once (every check of the model, input and settings happens then), and
run by :func:`~cem_lab.causal.stages.run_stages` (resumable). How each item's ROI output is
computed is the job's :mod:`recompute strategy <cem_lab.causal.recompute>`; its identity and
checkpoint are :mod:`cem_lab.causal.resume`'s.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cem_lab.causal.errors import ModelOutputError
from cem_lab.causal.estimators import BlockStats, classify
from cem_lab.causal.executors import BatchInfo, UnitExecutor
from cem_lab.causal.grid import BlockGrid, GeometryError, Roi
from cem_lab.causal.incremental import NotAChain, conv_chain
from cem_lab.causal.interventions import draw_rng
from cem_lab.causal.memory import largest_forward_batch
from cem_lab.causal.recompute import MIN_REFERENCE_ITEMS, choose_recompute, reference_blocks
from cem_lab.causal.region import (
    DependencyRegion,
    NoGradientError,
    chain_region,
    check_blocks,
    dependency_region,
    verify_crop,
)
from cem_lab.causal.result import CEMResult
from cem_lab.causal.resume import check_folder, compute_fingerprint, cost_record
from cem_lab.causal.settings import DEFAULT_CHECKPOINT_S, CEMSettings
from cem_lab.causal.stages import run_stages
from cem_lab.causal.threads import SMALL_OP_THREADS, cpu_threads, probe_threads
from cem_lab.errors import InputError
from cem_lab.images import to_uint8
from cem_lab.models.by_path import describe_model
from cem_lab.tasks import Placement, Task, TaskInput

log = logging.getLogger("cem_lab")


class CEMJob:
    """One causal effect map: prepared once, then run stage by stage (resumable).

    ``settings``: the map's :class:`~cem_lab.causal.settings.CEMSettings` (default: the defaults);
    ``patch_bank``: the LV intervention's bank (default: the embedded one); ``device``: where the
    model runs (default: its parameters' device); ``blocks``: flat block indices to compute (the
    others are reported as NaN); ``full_output``: the model's padded output on this un-intervened
    input, when the caller has it (the ROI atlas's jobs share one input; ``mode="full"`` only).
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        task_input: TaskInput,
        roi: Roi,
        settings: CEMSettings | None = None,
        *,
        patch_bank=None,
        device: torch.device | str | None = None,
        image_name: str = "image",
        model_name: str | None = None,
        blocks: Sequence[int] | None = None,
        full_output: Tensor | None = None,
    ):
        s = self.cem_settings = settings if settings is not None else CEMSettings()
        self.intervention = s.make_intervention(patch_bank)
        self.estimator = s.make_estimator()
        self.metric = s.make_metric()
        self.auto_forward_batch = s.forward_batch == "auto"
        # with "auto", the full-image preparation runs one input at a time; the size is chosen on the crop
        self.forward_batch = 1 if self.auto_forward_batch else int(s.forward_batch)
        self.model, self.task, self.roi, self.block = model, task, roi, s.block
        self.seed, self.tol, self.rule = int(s.seed), float(s.map_tol(self.estimator)), s.classification
        self.batch_size = int(s.batch_size)
        # the model's own grid (window attention, pooling) is kept as well: lcm with its crop_multiple
        # and so is the task's (the JPEG task's MCU grid)
        crop_multiple = s.crop_multiple
        for own in (getattr(model, "crop_multiple", 1), getattr(task, "crop_multiple", 1)):
            crop_multiple = math.lcm(crop_multiple, own if isinstance(own, int) and own >= 1 else 1)
        self.mode_requested, self.crop_margin, self.crop_multiple, self.verify = (
            s.mode,
            s.crop_margin,
            crop_multiple,
            s.verify,
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
        self.grid = BlockGrid(h, w, self.scale, self.block)
        self.out_shape = (h * self.scale, w * self.scale)
        roi.validate(*self.out_shape, self.scale)
        if self.ti.target is not None and tuple(self.ti.target.shape[-2:]) != self.out_shape:
            raise GeometryError(
                f"ground truth is {tuple(self.ti.target.shape[-2:])} but the model output should be {self.out_shape}"
            )
        if self.ti.target is None and self.metric.name != "output_change":
            raise InputError(
                f"metric {self.metric.name!r} needs a ground truth; give one, or use the "
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
        #: draws per block of the stage being mapped (None outside a stage): a recompute strategy may choose by it
        self.stage_draws: int | None = None
        self.pixels_pushed = 0
        self.checkpoints = 0
        #: the run's cost over every process that worked on it (set by the stage loop; None: this process only)
        self.cost: dict | None = None
        self.notes: list[str] = []
        self._full_pass_s: float | None = None  # seconds of one full-image pass (for the log's estimates)
        #: seconds per intervention, from the last preparation pass of the interventions' shape (the first
        #: stage's estimate, before any stage has a rate of its own)
        self.item_s_estimate: float | None = None
        #: how the ROI was chosen when a rule chose it (summary.json's ``roi_placement``)
        self.roi_placement: dict | None = None
        partial = self.grid.partial_note()
        if partial:
            self.notes.append(partial)
            if full_output is None:  # the ROI atlas's other ROIs share the first one's input: said once
                log.warning(partial)
        self.timings: dict[str, float] = {}
        #: the recompute strategies' checks against the ROI crop (summary.json keys)
        self.checks: dict[str, dict] = {}
        self._fingerprint: str | None = None
        self._fingerprint_also: tuple[str, ...] | None = None
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
        with cpu_threads(self.device, SMALL_OP_THREADS):
            finite = bool(torch.isfinite(roi).all())
        if not finite:
            raise ModelOutputError(self._not_finite("in the ROI"))
        return roi

    def _roi_metric_full(self, x: Tensor) -> Tensor:
        """The ROI outputs of full-image inputs (the crop check's), on the preparation's probed thread count."""
        with cpu_threads(self.device, self.prepare_threads):
            return self._roi(self._forward(x, pad=False), (0, 0))

    # --- preparation -----------------------------------------------------------------------------
    def _prepare(self, full_output: Tensor | None = None) -> None:
        t0 = time.perf_counter()
        #: seconds of this process's preparation by part: the full-image pass, the gradient probe, the crop's
        #: check, the recompute strategy's preparation and check
        self.prep_parts: dict[str, float] = {}
        #: the un-intervened crop's ROI output and the seconds of the crop check's one chunk (reused as M0 and rate)
        self._check_chunk: tuple[Tensor, float] | None = None
        #: (blocks, their sample-0 ROI outputs on the crop, seconds of those rows): single-block items run in the
        #: spare rows of the crop check's chunk, the reference of incremental recompute's check
        self.crop_reference: tuple[np.ndarray, Tensor, float] | None = None
        x = self.ti.input
        # in crop mode no map value is read from a full-image pass: it runs unpadded (one image, not
        # forward_batch); in full mode it is taken again below with the interventions' forward shape
        padded_first = self.mode_requested == "full" and not self.auto_forward_batch
        #: CPU threads of the preparation's full-image passes (the un-intervened output, the gradient probe), probed
        #: on the input's shape (beside a busy process a 64 px FSRCNN's gradient probe took 1.8 s on both threads,
        #: 0.05 s on one)
        self.checks["prepare_threads"] = probe_threads(self.model, self.device, 1, tuple(x.shape[-2:]))
        self.prepare_threads = self.checks["prepare_threads"]["chosen"]
        if padded_first and full_output is not None:
            self._full_baseline(full_output)
        else:
            log.info("preparing: the un-intervened output of the full %dx%d input (1 pass)", x.shape[-2], x.shape[-1])
            t_full = time.perf_counter()
            with cpu_threads(self.device, self.prepare_threads):
                self._full_baseline(self._forward(x, pad=padded_first))
            self._full_pass_s = time.perf_counter() - t_full
            self.prep_parts["full_pass_s"] = self._full_pass_s
        h, w = self.grid.input_h, self.grid.input_w
        self.crop = (0, h, 0, w)
        #: CPU threads of the crop's model calls (None: torch's, as in full mode), probed once the crop is known
        self.crop_threads: int | None = None
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
            self.forward_batch = largest_forward_batch(self.model, self.base_crop, self.device)
            self.notes.append(f"forward_batch=auto: {self.forward_batch}")
        t_item = time.perf_counter()
        if self.mode == "full" and not padded_first:  # the baseline with the interventions' forward shape
            self._full_baseline(self._forward(x))
            self.item_s_estimate = (time.perf_counter() - t_item) / max(1, self.forward_batch)
        if self.mode == "crop" and self._check_chunk is not None and not self.auto_forward_batch:
            # the crop check's chunk ran the un-intervened crop first, in the interventions' forward shape
            self.base_crop_roi, chunk_s = self._check_chunk
            self.item_s_estimate = chunk_s / max(1, self.forward_batch)
            self.baseline = float(self.metric(self.base_crop_roi, self.ref)[0])
        elif self.mode == "crop":
            with cpu_threads(self.device, self.crop_threads):
                self.base_crop_roi = self._roi(self._forward(self.base_crop), (y0, x0))
            self.item_s_estimate = (time.perf_counter() - t_item) / max(1, self.forward_batch)
            self.baseline = float(self.metric(self.base_crop_roi, self.ref)[0])
        else:
            self.baseline = self.baseline_full
        if self.item_s_estimate is None and self._full_pass_s is not None:
            self.item_s_estimate = self._full_pass_s
        active = np.zeros(len(self.grid), dtype=bool)
        active[self.grid.blocks_touching(self.crop)] = True
        self.active = active
        t_rc = time.perf_counter()
        self.recompute = choose_recompute(self, self.cem_settings.recompute)
        if self.cem_settings.recompute != "roi_crop":
            self.prep_parts["recompute_check_s"] = time.perf_counter() - t_rc
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

    def _try_crop(self) -> None:
        t_probe = time.perf_counter()
        try:
            units, _ = conv_chain(self.model) if self.scale == 1 else (None, 0)
        except NotAChain:
            units = None
        if units is not None:  # a declared stride-1 conv stack: its reach is its kernels' summed radii
            self.region = region = chain_region(
                sum(u.radius for u in units),
                (self.grid.input_h, self.grid.input_w),
                self.roi.box,
                self.crop_margin,
                self.crop_multiple,
            )
            log.info("preparing: %s", region.notes[0])
        else:
            log.info("preparing: the input region the ROI depends on (a gradient probe)")
            try:
                with cpu_threads(self.device, self.prepare_threads):
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
        self.prep_parts["probe_s"] = time.perf_counter() - t_probe
        if region.method != "memory_forecast":
            # the crop's threads before its check, so that the check's chunk (the map's M0) runs as the map will;
            # a crop that covers the input is the full-image map's shape, probed too (beside a busy process all
            # threads made a 64 px EDSR map 12x slower than incremental recompute on the one its probe chose)
            self.checks["crop_threads"] = probe_threads(self.model, self.device, self.forward_batch, region.crop_shape)
            self.crop_threads = self.checks["crop_threads"]["chosen"]
        if region.method == "memory_forecast":  # the probe itself would not fit in memory: full-image mode
            self.notes.extend(region.notes)
            return
        if region.covers_input:
            msg = (
                "the ROI depends on the whole input (a receptive field wider than the input, or a global "
                "operation such as global pooling or image-wide attention): full-image mode"
            )
            self.notes.append(msg)
            log.info(msg)
            return
        if self.verify:
            t_check = time.perf_counter()
            check = self._verify(region)
            self.prep_parts["crop_check_s"] = time.perf_counter() - t_check
            self.crop_check = check
            if not check.ok:
                self.crop_reference = None  # outputs on a crop the job will not run on
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
        inside, outside = check_blocks(self.grid, self.boxes, region.crop, self.seed)
        cy0, cy1, cx0, cx1 = region.crop
        full_box = (0, self.grid.input_h, 0, self.grid.input_w)
        crop_base = self.ti.input[:, :, cy0:cy1, cx0:cx1]
        # the check's inputs are the small operations of many blocks (one thread, as the map's); its full-image
        # pass runs on the preparation's probed count (beside a busy process a 64 px FSRCNN's check took 0.55 s
        # with both on torch's two threads)
        with cpu_threads(self.device, SMALL_OP_THREADS):
            # one input: the blocks drawn inside the crop and every block outside it, all intervened
            full_in = self._build_joint(
                outside, full_box, self._build_joint(inside, full_box, self.ti.input, self.ti.context), self.ti.context
            )
            # what the crop holds of it, built on the crop as the map builds its inputs (so the check covers it too)
            crop_in = self._build_joint(inside, region.crop, crop_base, self.ti.crop_context(region.crop))
        about = f", about {self._full_pass_s:.0f} s" if self._full_pass_s is not None else ""
        log.info(
            "preparing: checking the %dx%d crop against the full input (1 full-image pass%s: %d blocks inside it "
            "and all %d outside it intervened)",
            cy1 - cy0,
            cx1 - cx0,
            about,
            len(inside),
            len(outside),
        )

        # the chunk's spare rows (it holds the base and the joint input) carry the reference items of incremental
        # recompute's check, which would otherwise run a chunk of their own
        spare = self.forward_batch - 1 - len(crop_in)
        ref_blocks = np.zeros(0, dtype=np.int64)
        if self.cem_settings.recompute == "incremental" and spare >= MIN_REFERENCE_ITEMS:
            ref_blocks = reference_blocks(
                self.grid, self.boxes, region.crop, self.roi.box, self.scale, self.seed, min(8, spare)
            )
        with cpu_threads(self.device, SMALL_OP_THREADS):
            ref_in = (
                self._build(
                    ref_blocks,
                    np.zeros(len(ref_blocks), dtype=int),
                    region.crop,
                    crop_base,
                    self.ti.crop_context(region.crop),
                )
                if len(ref_blocks)
                else crop_base[:0]
            )

        def outside_only() -> Tensor:
            with cpu_threads(self.device, SMALL_OP_THREADS):
                return self._build_joint(outside, full_box, self.ti.input, self.ti.context)

        def crop_rois(t: Tensor) -> Tensor:
            t0 = time.perf_counter()
            one_chunk = len(t) + len(ref_blocks) <= self.forward_batch
            with cpu_threads(self.device, self.crop_threads):
                out = self._roi(self._forward(torch.cat([t, ref_in]) if one_chunk else t), (cy0, cx0))
            if one_chunk:  # one chunk, the base first: the map's M0 and the rate of its chunks
                chunk_s = time.perf_counter() - t0
                self._check_chunk = (out[:1], chunk_s)
                if len(ref_blocks):
                    self.crop_reference = (ref_blocks, out[len(t) :], chunk_s * len(ref_blocks) / self.forward_batch)
                out = out[: len(t)]
            return out

        check = verify_crop(
            self._roi_metric_full, crop_rois, full_in, crop_in, self.base_full_roi, crop_base, outside_only
        )
        check.blocks_inside, check.blocks_outside = len(inside), len(outside)
        return check

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

    def _build_joint(self, blocks, crop, base: Tensor, context) -> Tensor:
        """``base`` with every block of ``blocks`` intervened (draw 0 of each), applied one after another in the
        order given: (1, C, h, w). Where the intervention writes only its blocks (they are disjoint), all are
        written in one call, each row of the call a view of the one input: the same values, without a call per
        block (the crop check intervenes every block outside the crop)."""
        x = base.clone()
        if self.intervention.writes_only_its_block and len(blocks):
            draws = [self.intervention.draw(draw_rng(self.seed, int(b), 0), int(b), 0) for b in blocks]
            rows = x.expand(len(blocks), -1, -1, -1)  # every row is x itself
            self.intervention.apply(rows, context, self._placements(blocks, crop), draws, origin=(crop[0], crop[2]))
            return x
        for b in blocks:
            draw = self.intervention.draw(draw_rng(self.seed, int(b), 0), int(b), 0)
            x = self.intervention.apply(x, context, self._placements([b], crop), [draw], origin=(crop[0], crop[2]))
        return x

    def _metrics(self, blocks: np.ndarray, samples: np.ndarray) -> np.ndarray:
        roi = self.recompute.roi_outputs(self, blocks, samples)
        with cpu_threads(self.device, SMALL_OP_THREADS):
            return self.metric(roi, self.ref).detach().cpu().numpy().astype(np.float64)

    # --- identity of the run ------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The settings recorded in summary.json and hashed into the fingerprint."""
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
            # the strategy asked for, not the path its check and race took: that follows the machine's load, and a
            # run's identity must not (a finished map was refused where a busier check had declined the strategy)
            **({"recompute": self.cem_settings.recompute} if self.cem_settings.recompute != "roi_crop" else {}),
        }

    def fingerprint_also(self) -> tuple[str, ...]:
        """The identities earlier versions recorded for this same run: until 2026-12-08 a run whose check declined
        the strategy asked for recorded none (its checkpoints are read as this run's)."""
        if self.cem_settings.recompute == "roi_crop":
            return ()
        if self._fingerprint_also is None:  # computed once, as the fingerprint
            settings = {k: v for k, v in self.settings().items() if k != "recompute"}
            self._fingerprint_also = (compute_fingerprint(settings, self.model, self.ti, self.intervention),)
        return self._fingerprint_also

    def fingerprint(self) -> str:
        """The run's identity (:func:`~cem_lab.causal.resume.compute_fingerprint`), computed once."""
        if self._fingerprint is None:
            self._fingerprint = compute_fingerprint(self.settings(), self.model, self.ti, self.intervention)
        return self._fingerprint

    def check_folder(self, folder: str | Path) -> str | None:
        """``None`` (nothing to resume), ``"partial"`` or ``"complete"``; a folder of another run raises
        :class:`~cem_lab.causal.errors.RunFolderError` (see :func:`cem_lab.causal.resume.check_folder`)."""
        return check_folder(folder, self.fingerprint(), self.fingerprint_also())

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
        return run_stages(self, folder, progress, on_batch, checkpoint_every, checkpoint_every_items, executor)

    def _result(self, stats: dict[str, BlockStats], fp: str) -> CEMResult:
        est = self.estimator.estimate(stats, self.baseline)
        effect, cls, lo, hi = classify(est, tol=self.tol, rule=self.rule)
        if not self.selected.all():  # blocks left out of the plan: not computed
            for a in (effect, est.effect, est.stderr, lo, hi):
                a[~self.selected] = np.nan
            cls[~self.selected] = 0
            est.n[~self.selected] = 0
        shape = self.grid.shape
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
            **cost_record(
                {
                    "forward_passes": self.forward_passes,
                    "pixels_pushed": self.pixels_pushed,
                    "checkpoints": self.checkpoints,
                    "timings": dict(self.timings),
                },
                self.cost,
            ),
            "device": str(dev) if dev.type != "cuda" else f"{dev} ({torch.cuda.get_device_name(dev)})",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "baseline_metric_full_image": self.baseline_full,
            "display_bound": self.task.display_bound
            if self.metric.name == "psnr"
            else max(1e-6, float(np.nanmax(np.abs(effect))) if np.isfinite(effect).any() else 1.0),
            "title": f"{self.model_name} | {self.task.name} | {self.image_name}",
        }
        if self.roi_placement is not None:
            meta["roi_placement"] = self.roi_placement
        if self.region is not None:
            meta["dependency_region"] = self.region.describe()
        if self.crop_check is not None:
            meta["crop_check"] = self.crop_check.describe()
        # this process's preparation, by part (prepare_s above is the run's, summed over its sessions)
        meta["preparation_parts_s"] = {k: round(v, 6) for k, v in self.prep_parts.items()}
        meta.update(self.checks)  # block_crop_check / incremental_check
        race = getattr(self.recompute, "race", None)
        if race is not None and race.lanes:  # the arms each stage ran (cem_lab.causal.path_race)
            meta["path_race"] = race.summary()
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
