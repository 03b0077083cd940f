"""How each intervened item's ROI output is recomputed (``recompute=``): three strategies, one interface.

- :class:`RoiCropRecompute` (default): every item runs on the ROI's dependency crop (or the whole
  image in full mode).
- :class:`BlockCropRecompute`: each item runs on the smallest crop its block needs.
- :class:`IncrementalRecompute`: every layer recomputed only where the block reaches: a plain conv
  stack by :mod:`cem_lab.causal.incremental`, any other local network traced to ATen operations by
  :mod:`cem_lab.causal.local_graph`.

A strategy is chosen by :func:`choose_recompute` once the job's crop is known: it may decline (with
the reason as a note), fail its check against the ROI crop, or be slower than the crop on the check's
items, and then the job runs on the ROI crop. Strategies read the job (its crop, grid, model calls) and
never change the map beyond float rounding, which the check bounds.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from cem_lab.causal.errors import ModelOutputError
from cem_lab.causal.incremental import IncrementalChain, NotAChain, changed_outside, conv_chain
from cem_lab.causal.local_graph import LocalGraph, NotLocal
from cem_lab.causal.threads import DEFAULT_CPU_THREADS, cpu_threads, probe_threads
from cem_lab.causal.window_rules import ConvRule

if TYPE_CHECKING:
    from cem_lab.causal.job import CEMJob

log = logging.getLogger("cem_lab")

#: per-block recompute: crop sides are multiples of this (fewer shapes, denser batches), and a block
#: whose crop would be at least this share of the ROI crop runs on the ROI crop
BLOCK_CROP_STEP = 8
BLOCK_CROP_MAX_SHARE = 0.7
#: largest |difference| from the ROI crop's outputs a strategy's check accepts
CHECK_ATOL = 1e-4
#: fewest reference items the crop check's spare rows must hold to be incremental recompute's check (else it
#: draws 8 blocks and runs them on the crop itself)
MIN_REFERENCE_ITEMS = 6


def _round_up(lo: int, hi: int, lim_lo: int, lim_hi: int, step: int) -> tuple[int, int]:
    """[lo, hi) grown to a length that is a multiple of ``step`` (or all of [lim_lo, lim_hi))."""
    want = min(lim_hi - lim_lo, -(-(hi - lo) // step) * step)
    hi = min(lim_hi, lo + want)
    lo = max(lim_lo, hi - want)
    return lo, hi


class Recompute:
    """One way of computing the ROI outputs of intervened items.

    ``prepare(job)`` returns None when the strategy can be used on ``job`` (or the reason it cannot);
    ``verify(job)`` compares it with the ROI crop on sampled blocks (a dict recorded as
    ``summary.json``'s :attr:`check_key`); ``roi_outputs(job, blocks, samples)`` is the work.
    """

    #: the ``recompute=`` value
    name: str = ""
    #: summary.json key of the check's record
    check_key: str = ""
    #: log level of the note when the strategy declines
    decline_level: int = logging.WARNING

    def prepare(self, job: CEMJob) -> str | None:
        """None when usable on ``job``, else why not."""
        return None

    def verify(self, job: CEMJob) -> dict[str, Any]:
        """The check against the ROI crop: ``{"ok", "max_diff", "atol", "blocks"}``."""
        return {"ok": True, "max_diff": 0.0, "atol": CHECK_ATOL, "blocks": []}

    def roi_outputs(self, job: CEMJob, blocks: np.ndarray, samples: np.ndarray) -> Tensor:
        """The ROI outputs of items (``blocks[i]``, ``samples[i]``), (items, 3, h, w)."""
        raise NotImplementedError

    def declined(self, why: str) -> str:
        """The note of a strategy not used because of ``why``."""
        raise NotImplementedError

    def mismatch(self, check: dict[str, Any]) -> str:
        """The note of a strategy not used because its check failed."""
        raise NotImplementedError

    def used(self, job: CEMJob) -> str:
        """The note of a strategy in use."""
        raise NotImplementedError


class RoiCropRecompute(Recompute):
    """Every item on the ROI's dependency crop (the whole input in full mode)."""

    name = "roi_crop"

    def roi_outputs(self, job, blocks, samples):
        """Run the items on the ROI crop (the whole input in full mode) and cut out the ROI, on the crop's CPU
        threads (``job.crop_threads``, probed once the crop is known)."""
        x = job._build(blocks, samples, job.crop, job.base_crop, job.ctx_crop)
        with cpu_threads(job.device, job.crop_threads):
            return job._roi(job._forward(x), (job.crop[0], job.crop[2]))


def _seconds(run) -> float:
    """Wall seconds of one call of ``run``."""
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def against_crop(job: CEMJob, pick: np.ndarray, strategy: Recompute, atol: float = CHECK_ATOL) -> dict[str, Any]:
    """Max |difference| between ``strategy``'s and the ROI crop's outputs on sample 0 of blocks ``pick``."""
    if len(pick) == 0:
        return {"ok": True, "max_diff": 0.0, "atol": atol, "blocks": []}
    zeros = np.zeros(len(pick), dtype=int)
    t0 = time.perf_counter()
    got = strategy.roi_outputs(job, pick, zeros)
    t1 = time.perf_counter()
    want = RoiCropRecompute().roi_outputs(job, pick, zeros)
    t2 = time.perf_counter()
    d = float((got - want).abs().max())
    seconds = {strategy.name: round(t1 - t0, 6), "roi_crop": round(t2 - t1, 6)}
    return {"ok": d <= atol, "max_diff": d, "atol": atol, "blocks": pick.tolist(), "seconds": seconds}


def reference_blocks(
    grid, boxes, crop: tuple[int, int, int, int], roi_box, scale: int, seed: int, n: int
) -> np.ndarray:
    """Up to ``n`` blocks a recompute strategy is checked on, drawn by ``seed`` in turn from three kinds among the
    blocks the crop touches: under the ROI, in the crop's outer ring of blocks (where windows leave the crop
    and are cut), and the rest; so that a few items cover each case a window rule handles."""
    rng = np.random.default_rng([seed, 15485863])
    cand = grid.blocks_touching(crop)
    b = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)[cand]
    cy0, cy1, cx0, cx1 = crop
    y0, y1, x0, x1 = roi_box[0] // scale, -(-roi_box[1] // scale), roi_box[2] // scale, -(-roi_box[3] // scale)
    under = (b[:, 0] < y1) & (b[:, 1] > y0) & (b[:, 2] < x1) & (b[:, 3] > x0)
    k = grid.block_in
    cut = ~under & ((b[:, 0] < cy0 + k) | (b[:, 1] > cy1 - k) | (b[:, 2] < cx0 + k) | (b[:, 3] > cx1 - k))
    kinds = [rng.permutation(cand[m]).tolist() for m in (under, cut, ~under & ~cut)]
    out: list[int] = []
    while len(out) < min(n, len(cand)):
        for kind in kinds:
            if kind and len(out) < n:
                out.append(int(kind.pop()))
    return np.array(sorted(out), dtype=np.int64)


class BlockCropRecompute(Recompute):
    """Per-block recompute: an intervention at block p can change only the ROI outputs within the
    model's reach r of p (A_p), and those depend only on the input within r of A_p; so each item
    runs on that crop, and the rest of the ROI keeps its un-intervened output. r is read off the
    dependency region (its margin around the ROI)."""

    name = "block_crop"
    check_key = "block_crop_check"
    decline_level = logging.INFO

    def __init__(self) -> None:
        self.reach_px: int | None = None
        #: block -> (its input crop or None when its reach misses the ROI, A_p in input pixels)
        self.crops: dict[int, tuple] = {}

    def prepare(self, job):
        """Find the model's reach and each active block's crop; declines in full mode, on a crop grid, or without a
        reach."""
        if job.mode != "crop":
            return "the model is run on the whole image (its ROI output depends on all of it, or mode=full)"
        if job.crop_multiple > 1:
            return (
                f"crops must follow a grid of {job.crop_multiple} input pixels (the model's windows, or the "
                "task's JPEG blocks)"
            )
        reach = self.reach(job)
        if reach is None:
            return "the model's reach could not be read off the dependency region (it is clipped by the image on every side)"
        self.reach_px = reach
        self.crops = {int(b): self.block_crop(job, int(b), reach) for b in np.flatnonzero(job.active)}
        return None

    def reach(self, job: CEMJob) -> int | None:
        """Input pixels the model sees beyond a pixel: the dependency box's margin around the ROI on
        the sides the image border does not clip."""
        y0, y1, x0, x1 = job.roi.box
        s = job.scale
        ry0, ry1, rx0, rx1 = y0 // s, -(-y1 // s), x0 // s, -(-x1 // s)
        by0, by1, bx0, bx1 = job.region.box
        h, w = job.grid.input_h, job.grid.input_w
        sides = [
            ry0 - by0 if by0 > 0 else None,
            by1 - ry1 if by1 < h else None,
            rx0 - bx0 if bx0 > 0 else None,
            bx1 - rx1 if bx1 < w else None,
        ]
        known = [m for m in sides if m is not None]
        return max(0, max(known)) + int(job.crop_margin) if known else None

    def block_crop(self, job: CEMJob, b: int, r: int):
        """(crop of the input, A_p in input pixels) for block ``b``; crop None when its reach misses the ROI."""
        y0, y1, x0, x1 = job.roi.box
        s = job.scale
        ry0, ry1, rx0, rx1 = y0 // s, y1 // s, x0 // s, x1 // s
        py0, py1, px0, px1 = job.boxes[b]
        a = (max(py0 - r, ry0), min(py1 + r, ry1), max(px0 - r, rx0), min(px1 + r, rx1))
        if a[0] >= a[1] or a[2] >= a[3]:
            return None, a
        h, w = job.grid.input_h, job.grid.input_w
        crop = (max(0, a[0] - r), min(h, a[1] + r), max(0, a[2] - r), min(w, a[3] + r))
        # the crop never leaves the ROI's dependency crop (it holds every input the ROI sees); its sides
        # are rounded up to a multiple of BLOCK_CROP_STEP inside it, so that few shapes batch densely
        cy0, cy1, cx0, cx1 = job.crop
        y0c, y1c = _round_up(max(crop[0], cy0), min(crop[1], cy1), cy0, cy1, BLOCK_CROP_STEP)
        x0c, x1c = _round_up(max(crop[2], cx0), min(crop[3], cx1), cx0, cx1, BLOCK_CROP_STEP)
        if (y1c - y0c) * (x1c - x0c) >= BLOCK_CROP_MAX_SHARE * (cy1 - cy0) * (cx1 - cx0):
            # hardly smaller than the ROI crop: run it there, with the blocks that need all of it
            return job.crop, (ry0, ry1, rx0, rx1)
        return (y0c, y1c, x0c, x1c), a

    def verify(self, job):
        """Per-block and ROI-crop outputs of sample 0 on up to 8 blocks: inside the ROI, next to it,
        at the edge of the dependency crop (seeded choice)."""
        rng = np.random.default_rng([job.seed, 104729])
        cand = np.flatnonzero(job.active)
        with_crop = [b for b in cand.tolist() if self.crops[b][0] is not None]
        pick = (
            np.array(sorted(rng.choice(with_crop, size=min(8, len(with_crop)), replace=False).tolist()))
            if with_crop
            else np.array([], dtype=int)
        )
        return against_crop(job, pick, self)

    def roi_outputs(self, job, blocks, samples):
        """ROI outputs of items run on their blocks' crops, grouped by crop shape so batches stay dense."""
        blocks, samples = np.asarray(blocks), np.asarray(samples)
        n = len(blocks)
        out = job.base_crop_roi.expand(n, -1, -1, -1).clone()
        groups: dict[tuple[int, int], list[int]] = {}
        for i, b in enumerate(blocks.tolist()):
            crop, _ = self.crops[b]
            if crop is not None:
                groups.setdefault((crop[1] - crop[0], crop[3] - crop[2]), []).append(i)
        s = job.scale
        ry0, rx0 = job.roi.box[0], job.roi.box[2]
        x = job.ti.input
        for idx in groups.values():
            inputs = []
            for i in idx:
                crop, _ = self.crops[int(blocks[i])]
                base = x[:, :, crop[0] : crop[1], crop[2] : crop[3]]
                inputs.append(job._build(blocks[i : i + 1], samples[i : i + 1], crop, base, job.ti.crop_context(crop)))
            res = job._forward(torch.cat(inputs))
            for k, i in enumerate(idx):
                crop, a = self.crops[int(blocks[i])]
                oy, ox = (a[0] - crop[0]) * s, (a[2] - crop[2]) * s
                hh, ww = (a[1] - a[0]) * s, (a[3] - a[2]) * s
                part = res[k, :, oy : oy + hh, ox : ox + ww]
                if not torch.isfinite(part).all():
                    raise ModelOutputError(job._not_finite("in the ROI"))
                out[i, :, a[0] * s - ry0 : a[0] * s - ry0 + hh, a[2] * s - rx0 : a[2] * s - rx0 + ww] = part
        return out

    def declined(self, why):
        """A note naming ``recompute=block_crop`` and ``why``."""
        return f"per-block recompute (recompute=block_crop) not used: {why}; every item runs on the ROI crop"

    def mismatch(self, check):
        """A note with the per-block outputs' largest difference from the ROI crop's."""
        return (
            f"per-block recompute not used: per-block and ROI-crop outputs differ by "
            f"{check['max_diff']:.3g} (> {check['atol']:g}); every item runs on the ROI crop"
        )

    def used(self, job):
        """A note with the reach, the number of blocks and crop shapes, and the ROI crop's size."""
        shapes = {(c[1] - c[0], c[3] - c[2]) for c, _ in self.crops.values() if c is not None}
        return (
            f"per-block recompute: reach {self.reach_px} input px, {len(self.crops)} blocks on "
            f"{len(shapes)} crop shapes (the ROI crop is {job.crop[1] - job.crop[0]}x{job.crop[3] - job.crop[2]})"
        )


class IncrementalRecompute(Recompute):
    """Incremental recompute: each layer is recomputed only on the window an intervention can have
    changed, from the cached un-intervened activations. A plain conv stack (``conv_chain()``, or an
    ``nn.Sequential``) runs on :class:`~cem_lab.causal.incremental.IncrementalChain`; any other
    network is traced (:class:`~cem_lab.causal.local_graph.LocalGraph`), and declined, with the
    operation named, where it is not local."""

    name = "incremental"
    check_key = "incremental_check"
    #: the graph path is declined when a block's recompute would cost more than this share of the crop's
    MAX_WORK_SHARE = 0.8
    #: used only when no slower than the ROI crop on the check's items (tests of exactness on toy networks, where
    #: the crop is the faster, turn it off)
    ONLY_WHEN_FASTER = True

    def __init__(self) -> None:
        self.chain: IncrementalChain | None = None
        self.graph: LocalGraph | None = None
        self.rows: dict[int, int] = {}
        self.share = 1.0
        #: CPU threads of the small operations (chosen by measurement in verify)
        self.threads = DEFAULT_CPU_THREADS
        #: the last chunk padded to ``forward_batch`` (the map's one shape); off for the check's items
        self.pad = True
        #: stages of fewer draws per block than this run on the ROI crop (0: none; set by the check)
        self.min_draws: int | None = 0

    def prepare(self, job):
        """Build the incremental chain (or the traced graph and its plan for every active block) on the ROI crop;
        declines for a model with a global operation on the way to the ROI, or when there is nothing to save."""
        y0, y1, x0, x1 = job.roi.box
        s = job.scale
        crop_roi = (y0 - job.crop[0] * s, y1 - job.crop[0] * s, x0 - job.crop[2] * s, x1 - job.crop[2] * s)
        if s == 1:
            try:
                units, residual = conv_chain(job.model)
            except NotAChain:
                pass
            else:
                self.chain = IncrementalChain(units, residual, job.base_crop, crop_roi)
                return None
        try:
            self.graph = LocalGraph(job.model, job.base_crop, crop_roi)
            blocks = np.flatnonzero(job.active)
            self.rows = {int(b): i for i, b in enumerate(blocks.tolist())}
            self.graph.plan(np.array([p.dst for p in job._placements(blocks, job.crop)], dtype=np.int64).reshape(-1, 4))
        except NotLocal as e:
            self.graph = None
            return f"{job.model_name} is not local all the way to the ROI: {e}"
        share, _ = self.graph.work()
        self.share = share
        if share > self.MAX_WORK_SHARE:
            self.graph = None
            return (
                f"a block's change reaches {share:.0%} of the crop's convolution work ({job.model_name}'s reach "
                "against the crop): nothing to save"
            )
        self.graph.materialize()  # the un-intervened maps, once the plan says there is something to save
        return None

    def verify(self, job):
        """Incremental and ROI-crop outputs of sample 0 on the crop check's reference items (:func:`reference_blocks`,
        run in the spare rows of the crop check's chunk), or on up to 8 blocks drawn here and run on the crop
        when the chunk had no room; and the seconds each path took for those items."""
        threads = self.choose_threads(job)  # first, so that the check's items run as the map's will
        ref = job.crop_reference
        if ref is not None:
            pick, want, crop_s = ref
        else:
            rng = np.random.default_rng([job.seed, 15485863])
            cand = np.flatnonzero(job.active)
            pick = np.array(sorted(rng.choice(cand, size=min(8, len(cand)), replace=False).tolist()))
            want, crop_s = None, None
        zeros = np.zeros(len(pick), dtype=int)
        self.pad = False  # the check's items as they are: their time is the work, not a padded chunk's
        try:
            if want is None:
                check = against_crop(job, pick, self)
            else:
                t0 = time.perf_counter()
                got = self.roi_outputs(job, pick, zeros)
                d = float((got - want).abs().max())
                seconds = {"incremental": round(time.perf_counter() - t0, 6), "roi_crop": round(crop_s, 6)}
                check = {"ok": d <= CHECK_ATOL, "max_diff": d, "atol": CHECK_ATOL, "blocks": pick.tolist()}
                check.update(seconds=seconds, reference="the crop check's chunk")
            t = check.get("seconds", {})
            if check["ok"] and t["incremental"] > t["roi_crop"]:
                # the first call sets up buffers and kernels: timed again before it is judged slower
                t["incremental"] = min(t["incremental"], _seconds(lambda: self.roi_outputs(job, pick, zeros)))
            if check["ok"] and t["incremental"] > t["roi_crop"] / 2:
                # a close call: the crop timed once more too, so that both paths are judged on their best of two
                # (beside a busy process one time scatters by a factor of two)
                rows = -(-len(pick) // job.forward_batch) * job.forward_batch  # the chunks it runs, padded
                again = _seconds(lambda: RoiCropRecompute().roi_outputs(job, pick, zeros)) * len(pick) / rows
                t["roi_crop"] = round(min(t["roi_crop"], again), 6)
            if check["ok"] and t["incremental"] > t["roi_crop"] and len(pick) > 1:
                # the check's items sit on different blocks; a stage that draws many samples per block runs
                # chunks of one block, where every window is one slice: timed too (the best of two)
                one, draws = np.full(len(pick), pick[0]), np.arange(len(pick))
                best = min(_seconds(lambda: self.roi_outputs(job, one, draws)) for _ in range(2))
                t["incremental_one_block"] = round(best, 6)
        except ModelOutputError:  # the user's input or model is at fault: said as it is
            raise
        except (RuntimeError, ValueError, IndexError) as e:  # an op run on whole tensors that assumed batch 1
            first = (str(e).strip().splitlines() or [""])[0][:160]
            return {"ok": False, "max_diff": float("nan"), "atol": CHECK_ATOL, "blocks": pick.tolist(), "error": first}
        finally:
            self.pad = True
        check["threads"] = threads
        self.min_draws = self._min_draws(check, job.forward_batch) if check["ok"] else 0
        check["faster"] = self.min_draws is not None if check["ok"] else None
        if check["ok"] and self.min_draws:
            check["crop_below_draws"] = self.min_draws
        if not self.ONLY_WHEN_FASTER:
            check["faster_required"] = False
        return check

    def choose_threads(self, job) -> dict[str, Any]:
        """Threads of the run's small operations (:func:`~cem_lab.causal.threads.probe_threads`), probed on the
        model's largest convolution over a window of the average size an item recomputes, a batch of
        ``forward_batch``; kept in ``self.threads``."""
        if self.chain is not None:
            pixels = self.chain.pixels((0, job.grid.block_in, 0, job.grid.block_in))
        else:
            pixels = self.graph.work()[1]
        side = int(min(128, max(8, round(float(np.sqrt(max(pixels, 1.0)))))))
        choice = probe_threads(job.model, job.device, job.forward_batch, (side, side))
        if choice["chosen"] is not None:
            self.threads = choice["chosen"]
        return choice

    @staticmethod
    def _min_draws(check: dict[str, Any], chunk: int) -> int | None:
        """The fewest draws per block a stage must have for incremental recompute to be the faster on it: 0 when
        it is on the check's items (each on its own block), None when it is not even on items of one block. A
        stage of ``s`` draws per block runs a share of about min(1, (chunk - 1) / s) of its chunks with items of
        several blocks (a block's change ends inside them); the rest of one block."""
        t = check["seconds"]
        mixed, crop, one = t["incremental"], t["roi_crop"], t.get("incremental_one_block")
        if mixed <= crop:
            return 0
        if one is None or one >= crop or chunk <= 1:
            return None
        return int(np.ceil((chunk - 1) * (mixed - one) / (crop - one)))

    def on_crop(self, job) -> bool:
        """Whether the items of the stage now running go to the ROI crop: a stage of fewer draws per block than
        :attr:`min_draws` (its chunks mix blocks, where the per-window work outweighs what it saves), or any
        items outside a stage when incremental recompute was the slower on the check's."""
        if not self.min_draws or not self.ONLY_WHEN_FASTER:
            return False
        return job.stage_draws is None or job.stage_draws < self.min_draws

    def roi_outputs(self, job, blocks, samples):
        """Recompute the ROI outputs window by window; raises :class:`ModelOutputError` if an intervention leaks
        outside its block. A stage of too few draws per block for the windows to pay runs on the ROI crop
        (:meth:`on_crop`)."""
        if self.on_crop(job):
            return RoiCropRecompute().roi_outputs(job, blocks, samples)
        x = job._build(blocks, samples, job.crop, job.base_crop, job.ctx_crop)
        boxes = [p.dst for p in job._placements(blocks, job.crop)]
        if changed_outside(x, job.base_crop, boxes):
            raise ModelOutputError(
                f"the {job.intervention.name} intervention changed input pixels outside its block, which "
                "incremental recompute assumes it never does; run with recompute=roi_crop"
            )
        with cpu_threads(job.device, self.threads):
            if self.chain is not None:
                out = self.chain.roi_outputs(x, boxes, chunk=job.forward_batch, pad=self.pad)
                job.pixels_pushed += int(round(sum(self.chain.pixels(b) for b in boxes)))
            else:
                out = self._graph_outputs(job, x, blocks)
        job.forward_passes += len(blocks)
        if not torch.isfinite(out).all():
            raise ModelOutputError(job._not_finite("in the ROI"))
        return out

    def _graph_outputs(self, job, x: Tensor, blocks) -> Tensor:
        """Items ``forward_batch`` at a time, the last chunk padded with copies of its first item (one shape
        per node whatever the batch)."""
        rows = [self.rows[int(b)] for b in blocks]
        chunk = job.forward_batch
        parts = []
        for i in range(0, len(rows), chunk):
            r = rows[i : i + chunk]
            xi = x[i : i + chunk]
            real = len(r)
            if real < chunk and self.pad:
                r = r + [r[0]] * (chunk - real)
                xi = torch.cat([xi, xi[:1].expand(chunk - real, -1, -1, -1)])
            parts.append(self.graph.roi_outputs(xi, r)[:real])
        # the crop's pixels, in proportion to the convolution work done (planned once, in prepare)
        job.pixels_pushed += int(
            round(self.share * (job.crop[1] - job.crop[0]) * (job.crop[3] - job.crop[2]) * len(rows))
        )
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def declined(self, why):
        """A note naming ``recompute=incremental`` and ``why``."""
        return f"incremental recompute (recompute=incremental) not used: {why}; every item runs on the ROI crop"

    def mismatch(self, check):
        """A note with the incremental outputs' largest difference from the ROI crop's and the blocks checked, or
        with both paths' seconds when the outputs agree but incremental recompute was the slower."""
        if check["ok"]:
            t = check["seconds"]
            return self.declined(
                f"it was slower than the ROI crop on the check's {len(check['blocks'])} items "
                f"({t['incremental']:.3g} s against {t['roi_crop']:.3g} s: on a small network the per-window "
                "work outweighs the convolutions saved)"
            )
        if check.get("error"):
            return self.declined(f"it failed on blocks {check['blocks']} ({check['error']})")
        return self.declined(
            f"incremental and ROI-crop outputs differ by {check['max_diff']:.3g} (> {check['atol']:g}) "
            f"on blocks {check['blocks']}"
        )

    def used(self, job):
        """A note with the layers followed, the reach and the work recomputed per item."""
        crop = f"{job.crop[1] - job.crop[0]}x{job.crop[3] - job.crop[2]} crop"
        threads = f", on {self.threads} CPU thread{'s' if self.threads > 1 else ''}" if job.device.type == "cpu" else ""
        if self.min_draws and self.ONLY_WHEN_FASTER:
            threads += (
                f"; stages of fewer than {self.min_draws} draws per block run on the ROI crop (their chunks mix "
                "blocks, where the per-window work outweighs the convolutions saved)"
            )
        if self.chain is not None:
            chain = self.chain
            return (
                f"incremental recompute: {len(chain.units)} conv layers, reach {chain.reach} px; an item recomputes "
                f"{chain.pixels((0, job.block, 0, job.block)):.0f} px per layer on average instead of the {crop}"
                f"{threads}"
            )
        share, pixels = self.graph.work()
        convs = sum(isinstance(r, ConvRule) for r in self.graph.rules.values())
        return (
            f"incremental recompute (traced graph): {len(self.graph.order)} operations, {convs} convolutions; an item "
            f"recomputes {share:.0%} of the {crop}'s convolution work ({pixels:.0f} input px per convolution)"
            f"{threads}"
        )


STRATEGIES: dict[str, type[Recompute]] = {
    s.name: s for s in (RoiCropRecompute, BlockCropRecompute, IncrementalRecompute)
}


def choose_recompute(job: CEMJob, name: str) -> Recompute:
    """The strategy ``name`` for ``job`` once its crop is prepared, or the ROI crop when it declines or
    fails its check (with a note on ``job.notes`` either way; a check is recorded in ``job.checks``)."""
    strategy = STRATEGIES[name]()
    if isinstance(strategy, RoiCropRecompute):
        return strategy
    why = strategy.prepare(job)
    if why is not None:
        msg = strategy.declined(why)
        job.notes.append(msg)
        log.log(strategy.decline_level, msg)
        return RoiCropRecompute()
    if job.verify:
        check = strategy.verify(job)
        job.checks[strategy.check_key] = check
        if not check["ok"] or (check.get("faster") is False and getattr(strategy, "ONLY_WHEN_FASTER", False)):
            msg = strategy.mismatch(check)
            job.notes.append(msg)
            log.warning(msg)
            return RoiCropRecompute()
    msg = strategy.used(job)
    job.notes.append(msg)
    log.info(msg)
    return strategy
