"""How each intervened item's ROI output is recomputed (``recompute=``): three strategies, one interface.

- :class:`RoiCropRecompute` (default): every item runs on the ROI's dependency crop (or the whole
  image in full mode).
- :class:`BlockCropRecompute`: each item runs on the smallest crop its block needs.
- :class:`IncrementalRecompute`: every layer recomputed only where the block reaches: a plain conv
  stack by :mod:`cem_lab.causal.incremental`, any other local network traced to ATen operations by
  :mod:`cem_lab.causal.local_graph`.

A strategy is chosen by :func:`choose_recompute` once the job's crop is known: it may decline (with
the reason as a note), fail its check against the ROI crop, or be decisively slower than the crop on the
check's items, and then the job runs on the ROI crop. Where incremental recompute passes its check, each
stage's chunks run on whichever of it and the ROI crop is the faster on the map's own chunks
(:mod:`cem_lab.causal.path_race`). Strategies read the job (its crop, grid, model calls) and never change
the map beyond float rounding, which the check bounds.
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
from cem_lab.causal.path_race import PathRace
from cem_lab.causal.threads import DEFAULT_CPU_THREADS, SMALL_OP_THREADS, cpu_threads, probe_threads
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
#: incremental recompute slower than the ROI crop by more than this on every kind of the check's items is not
#: used; below it, a map races the two on its own chunks (:mod:`cem_lab.causal.path_race`)
RACE_DECISIVE = 2.0


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

    #: which arm (a path on a number of CPU threads, :func:`arm`) runs each work unit of a stage, from their times
    #: on the map's units before (:mod:`cem_lab.causal.path_race`); None: the strategy's one way
    race: PathRace | None = None

    def _arm(self, job: CEMJob, arm: str, blocks: np.ndarray, samples: np.ndarray) -> Tensor:
        """The ROI outputs of the items on ``arm``."""
        raise NotImplementedError

    def _raced(self, job: CEMJob, blocks: np.ndarray, samples: np.ndarray) -> Tensor:
        """The ROI outputs of a stage's work unit on the arm the race picks, timed; the race's record goes to the
        summary (``path_race``, written with the result)."""
        key = job.stage_draws
        choice = self.race.pick(key)
        t0 = time.perf_counter()
        out = self._arm(job, choice, blocks, samples)
        if job.device.type == "cuda":
            torch.cuda.synchronize(job.device)
        rows = -(-len(blocks) // job.forward_batch) * job.forward_batch  # every arm runs padded chunks
        self.race.record(key, choice, time.perf_counter() - t0, rows, len(blocks))
        return out


def arm(path: str, threads: int | None) -> str:
    """An arm's name: ``roi_crop@1``, ``incremental@2``; the path alone off the CPU."""
    return path if threads is None else f"{path}@{threads}"


def arm_parts(name: str) -> tuple[str, int | None]:
    """(path, threads) of an arm's name."""
    path, _, threads = name.partition("@")
    return path, int(threads) if threads else None


def thread_counts(job: CEMJob) -> tuple[int | None, ...]:
    """The thread counts a CPU map races: one, and all of torch's (None off the CPU or on one thread)."""
    most = torch.get_num_threads()
    return (1, most) if job.device.type == "cpu" and most > 1 else (None,)


#: the most a thread probe's figures make an arm on fewer threads than it chose slower in a race's prior: such an
#: arm is always timed on the map. A lull of a busy process can fool a probe of a few milliseconds into all
#: threads (the DnCNN demo's incremental map then ran 3x slower); one thread costs at most about 2x on a quiet
#: machine, while all threads beside a busy process ran a unit 10 to 100 times slower
FEWER_THREADS_MAX_RATIO = 1.5


def probe_ratio(probe: dict[str, Any] | None, threads: int | None) -> float:
    """A thread probe's (:func:`~cem_lab.causal.threads.probe_threads`) time on ``threads`` over its time on the
    count it chose: the prior of an arm on the count it did not choose (1 where it has no figure; at most
    :data:`FEWER_THREADS_MAX_RATIO` for fewer threads than it chose)."""
    if not probe or probe.get("chosen") is None or threads is None or threads == probe["chosen"]:
        return 1.0
    times = {int(k.split("_")[1]): v for k, v in probe.items() if k.startswith("seconds_")}
    times = {n: float(np.median(v)) for n, v in times.items()}
    if threads not in times or probe["chosen"] not in times or times[probe["chosen"]] <= 0:
        return 1.0
    ratio = times[threads] / times[probe["chosen"]]
    return min(ratio, FEWER_THREADS_MAX_RATIO) if threads < probe["chosen"] else ratio


def crop_outputs(job: CEMJob, blocks: np.ndarray, samples: np.ndarray, threads: int | None) -> Tensor:
    """The items run on the ROI crop (the whole input in full mode), the ROI cut out: the model calls on
    ``threads`` CPU threads, the small operations around them on :data:`SMALL_OP_THREADS`."""
    with cpu_threads(job.device, SMALL_OP_THREADS):
        x = job._build(blocks, samples, job.crop, job.base_crop, job.ctx_crop)
    with cpu_threads(job.device, threads):
        out = job._forward(x)
    with cpu_threads(job.device, SMALL_OP_THREADS):
        return job._roi(out, (job.crop[0], job.crop[2]))


class RoiCropRecompute(Recompute):
    """Every item on the ROI's dependency crop (the whole input in full mode)."""

    name = "roi_crop"

    def roi_outputs(self, job, blocks, samples):
        """Run the items on the ROI crop (the whole input in full mode) and cut out the ROI: on the crop's CPU
        threads (``job.crop_threads``, probed once the crop is known), or within a stage on the thread count
        the race picks where :meth:`start_race` started one."""
        if self.race is not None and job.stage_draws is not None:
            return self._raced(job, blocks, samples)
        return crop_outputs(job, blocks, samples, job.crop_threads)

    def _arm(self, job, arm, blocks, samples):
        return crop_outputs(job, blocks, samples, arm_parts(arm)[1])

    def start_race(self, job: CEMJob) -> None:
        """On a CPU with more than one thread, race the crop's thread counts on the map's units, from the crop
        probe's figures (beside a busy process a probe of a few milliseconds can choose all threads where they
        make the map several times slower)."""
        counts = thread_counts(job)
        if len(counts) < 2 or job.crop_threads is None or not job.item_s_estimate:
            return
        probe = job.checks.get("crop_threads")
        prior = {arm(self.name, n): job.item_s_estimate * probe_ratio(probe, n) for n in counts}
        self.race = PathRace(tuple(prior), lambda key: prior, RACE_DECISIVE)


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
                # the first call sets up buffers and kernels: timed again before it is judged slower, and so is
                # the crop (its reference ran in the crop check's first chunk, cold: a 64 px FSRCNN's row took 4x
                # its time on the map), as a padded chunk's share, as the reference is
                t["incremental"] = min(t["incremental"], _seconds(lambda: self.roi_outputs(job, pick, zeros)))
                warm = _seconds(lambda: crop_outputs(job, pick, zeros, job.crop_threads))
                t["roi_crop"] = round(min(t["roi_crop"], warm * len(pick) / max(len(pick), job.forward_batch)), 6)
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
        if not check["ok"]:
            return check
        t = check["seconds"]
        best = min(t["incremental"], t.get("incremental_one_block", np.inf))
        # raced on the map's work units (the race set here, the base class's attribute) unless the check found it
        # slower than the crop by a decisive factor on every kind of item (beside a busy process one timing
        # scatters by up to two)
        check["race"] = best <= RACE_DECISIVE * t["roi_crop"]
        if check["race"] and self.ONLY_WHEN_FASTER:
            counts, base = thread_counts(job), self._prior(check, job.forward_batch)
            probes = {self.name: threads, "roi_crop": job.checks.get("crop_threads")}

            def prior(draws: int) -> dict[str, float]:
                b = base(draws)
                return {arm(p, n): b[p] * probe_ratio(probes[p], n) for p in (self.name, "roi_crop") for n in counts}

            self.race = PathRace(tuple(prior(1)), prior, RACE_DECISIVE)
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
    def _prior(check: dict[str, Any], chunk: int):
        """The race's seconds per row of each path before the map has timed it, for a stage of ``s`` draws per
        block: the crop's per item on the check; incremental recompute's on items of one block (where measured)
        plus, for the share of about min(1, (chunk - 1) / s) of a stage's chunks that mix blocks (a block's
        draws end inside them), what items on different blocks took more."""
        t = check["seconds"]
        n = max(1, len(check["blocks"]))
        mixed, crop, one = t["incremental"] / n, t["roi_crop"] / n, t.get("incremental_one_block")
        one = mixed if one is None else one / n

        def prior(draws: int) -> dict[str, float]:
            share = min(1.0, (chunk - 1) / max(1, draws))  # a chunk of one item is of one block
            return {"incremental": one + share * max(0.0, mixed - one), "roi_crop": crop}

        return prior

    def roi_outputs(self, job, blocks, samples):
        """The ROI outputs of the items: within a stage, on the arm the race picks (:attr:`race`: incremental
        recompute or the ROI crop, each on one thread or all); outside one (the check's items) or without a race,
        window by window."""
        if self.race is None or job.stage_draws is None:
            return self._incremental(job, blocks, samples)
        return self._raced(job, blocks, samples)

    def _arm(self, job, arm, blocks, samples):
        path, threads = arm_parts(arm)
        if path == self.name:
            return self._incremental(job, blocks, samples, threads)
        return crop_outputs(job, blocks, samples, threads)

    def _incremental(self, job, blocks, samples, threads: int | None = None) -> Tensor:
        """Recompute the ROI outputs window by window, on ``threads`` CPU threads (None: :attr:`threads`, the
        probe's); raises :class:`ModelOutputError` if an intervention leaks outside its block."""
        with cpu_threads(job.device, SMALL_OP_THREADS):
            x = job._build(blocks, samples, job.crop, job.base_crop, job.ctx_crop)
            boxes = [p.dst for p in job._placements(blocks, job.crop)]
            leaked = changed_outside(x, job.base_crop, boxes)
        if leaked:
            raise ModelOutputError(
                f"the {job.intervention.name} intervention changed input pixels outside its block, which "
                "incremental recompute assumes it never does; run with recompute=roi_crop"
            )
        with cpu_threads(job.device, self.threads if threads is None else threads):
            if self.chain is not None:
                out = self.chain.roi_outputs(x, boxes, chunk=job.forward_batch, pad=self.pad)
                job.pixels_pushed += int(round(sum(self.chain.pixels(b) for b in boxes)))
            else:
                out = self._graph_outputs(job, x, blocks)
        job.forward_passes += len(blocks)
        # a small op too: on torch's two threads beside a busy process this check of a 32-item call took 40 ms,
        # four times the items' recompute
        with cpu_threads(job.device, SMALL_OP_THREADS):
            finite = bool(torch.isfinite(out).all())
        if not finite:
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
        with both paths' seconds when the outputs agree but incremental recompute was decisively the slower."""
        if check["ok"]:
            t = check["seconds"]
            one = t.get("incremental_one_block")
            also = f", {one:.3g} s on items of one block" if one is not None else ""
            return self.declined(
                f"it was more than {RACE_DECISIVE:g}x slower than the ROI crop on the check's {len(check['blocks'])} "
                f"items ({t['incremental']:.3g} s{also}, against {t['roi_crop']:.3g} s: on a small network the "
                "per-window work outweighs the convolutions saved)"
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
        if self.race is not None:
            threads += (
                "; each stage's work units run on the fastest of it and the ROI crop, on one CPU thread or all, "
                f"timed on the map as it goes (the others re-timed for {self.race.budget:.0%} of the time, so that "
                "the choice follows the machine's load; the arms per stage: path_race in the summary)"
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
        return _on_the_crop(job)
    with cpu_threads(job.device, job.crop_threads):  # its trace and full-crop passes: the crop's model calls
        why = strategy.prepare(job)
    if why is not None:
        msg = strategy.declined(why)
        job.notes.append(msg)
        log.log(strategy.decline_level, msg)
        return _on_the_crop(job)
    if job.verify:
        check = strategy.verify(job)
        job.checks[strategy.check_key] = check
        if not check["ok"] or (check.get("race") is False and getattr(strategy, "ONLY_WHEN_FASTER", False)):
            msg = strategy.mismatch(check)
            job.notes.append(msg)
            log.warning(msg)
            return _on_the_crop(job)
    msg = strategy.used(job)
    job.notes.append(msg)
    log.info(msg)
    return strategy


def _on_the_crop(job: CEMJob) -> RoiCropRecompute:
    """The ROI crop, its thread counts raced on the map's units (:meth:`RoiCropRecompute.start_race`)."""
    crop = RoiCropRecompute()
    crop.start_race(job)
    return crop
