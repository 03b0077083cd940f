"""``metric_after(blocks)`` with cem_lab's own interventions, for the faithfulness curves.

Built on a :class:`~cem_lab.causal.job.CEMJob` (full-image mode): the job knows the task, the
bound intervention, the block boxes, the ROI metric and its reference. Sample ``s`` of block ``b``
is the draw the CEM itself uses (seeded from ``(seed, b, s)``), so replacing a single block gives
exactly the CEM's intervened metrics of that block: ``metric_after([b]) = M0 - effect_raw[b]`` for
an exhaustive CEM with the same seed, intervention and number of samples. Several blocks are
replaced in the same image, each with its own draw; the value is the mean over ``samples`` images.

Note: this uses CEMJob internals (``_placements``, ``_forward``, ``_roi``, ``ref``); a change
there must keep ``test_replace_blocks_metric_matches_the_cem`` passing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cem_lab.attribution.base import AttributionError
from cem_lab.causal.grid import Roi
from cem_lab.causal.interventions import draw_rng
from cem_lab.causal.job import CEMJob
from cem_lab.causal.settings import CEMSettings
from cem_lab.tasks import make_task


class BlockReplacementMetric:
    """``metric_after(blocks) -> float``: the ROI metric after replacing ``blocks`` (flat indices)."""

    def __init__(self, job, samples: int | None = None):
        if samples is None:
            samples = 1 if job.intervention.deterministic else 8
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise AttributionError(f"samples must be a positive integer, got {samples!r}")
        self.job, self.samples = job, samples
        self.calls = 0

    @property
    def baseline(self) -> float:
        """The metric with nothing replaced."""
        return float(self.job.baseline_full)

    @property
    def n_blocks(self) -> int:
        """Number of blocks in the job's grid."""
        return len(self.job.grid)

    def __call__(self, blocks: Sequence[int]) -> float:
        """The ROI metric after replacing ``blocks``, averaged over ``samples`` draws; the baseline for no blocks."""
        job = self.job
        b = np.unique(np.asarray(blocks, dtype=np.int64).ravel())
        self.calls += 1
        if b.size == 0:
            return self.baseline
        if b.min() < 0 or b.max() >= len(job.grid):
            raise AttributionError(f"block indices must lie in [0, {len(job.grid)}), got {b.tolist()[:10]}")
        full = (0, job.grid.input_h, 0, job.grid.input_w)
        placements = job._placements(b, full)
        x = job.ti.input.expand(self.samples, -1, -1, -1).clone()
        for block, pl in zip(b, placements):
            draws = [
                job.intervention.draw(draw_rng(job.seed, int(block), s), int(block), s) for s in range(self.samples)
            ]
            x = job.intervention.apply(x, job.ti.context, [pl] * self.samples, draws, origin=(0, 0))
        roi = job._roi(job._forward(x), (0, 0))
        return float(job.metric(roi, job.ref).double().mean())


def replace_blocks_metric(
    model: nn.Module,
    task_input,
    *,
    task,
    roi,
    block: int = 8,
    intervention="lv",
    patch_bank=None,
    sampler: Any = "uniform",
    metric="psnr",
    samples: int | None = None,
    seed: int = 0,
    forward_batch: int = 8,
    device: str | torch.device | None = None,
) -> BlockReplacementMetric:
    """A :class:`BlockReplacementMetric` for ``model`` on a prepared ``task_input``
    (``task.prepare(clean, seed)``), with the CEM's ROI, block, intervention (``"lv"`` with
    ``patch_bank``, default the embedded bank; or ``"zeros"``, ``"mean"``, ``"blur"``, ``"noise"``;
    or an :class:`~cem_lab.causal.Intervention`) and metric. ``samples``: draws averaged per call
    (default 1 for a deterministic intervention, else 8). To reuse a prepared CEM job, use
    ``BlockReplacementMetric(job, samples)``.
    """
    if isinstance(task, str):
        task = make_task(task)
    settings = CEMSettings(
        block=block,
        intervention=intervention,
        sampler=sampler,
        estimator="exhaustive",
        samples=1,
        metric=metric,
        seed=seed,
        forward_batch=forward_batch,
        mode="full",
        verify=False,
    )
    job = CEMJob(model, task, task_input, Roi.parse(roi), settings, patch_bank=patch_bank, device=device)
    return BlockReplacementMetric(job, samples)
