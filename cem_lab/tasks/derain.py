"""Deraining: synthetic rain streaks over the clean image, the third task of the CEM paper.

The rain layer itself is drawn by :mod:`cem_lab.tasks.rain` (a numpy reproduction of the reference
OpenCV generator); this module is the task: how a rainy input is made and how an intervention keeps
the rain over a block unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cem_lab.images import quantize
from cem_lab.tasks.base import Task, TaskError, TaskInput, write_blocks
from cem_lab.tasks.rain import RAIN_PRESETS, synthesize_rain


class DerainTask(Task):
    """Synthetic rain: input = saturate_uint8(GT + beta * L), L and beta drawn once per image.

    Intervention: the block of the *clean* image is replaced by the natural patch and the same
    rain is re-applied, so the rain over the block is unchanged. With a user's own rainy input
    and its ground truth, the rain layer is their difference (beta = 1).
    """

    name = "dr"
    display_bound = 2.0
    writes_only_its_block = True  # the patch plus the rain under its block, into its block

    def __init__(self, preset: str = "medium"):
        if preset not in RAIN_PRESETS:
            raise TaskError(f"dr: unknown rain preset {preset!r}; choose one of {sorted(RAIN_PRESETS)}")
        self.preset = preset

    def rain_layer(self, height: int, width: int, seed: int) -> Tensor:
        """beta * L as a (1, 1, H, W) tensor on the [0, 1] scale."""
        layer, beta = synthesize_rain(height, width, seed, self.preset)
        return torch.from_numpy(np.asarray(layer, dtype=np.float64) * beta / 255.0)[None, None].float()

    def degrade(self, clean: Tensor, seed: int = 0) -> Tensor:
        """Add image ``i``'s rain layer (seeded ``seed + i``) and quantize."""
        n, _, h, w = clean.shape
        rain = torch.cat([self.rain_layer(h, w, seed + i) for i in range(n)]).to(clean)
        return quantize(clean + rain)

    def prepare(self, clean, seed=0, degraded=None) -> TaskInput:
        """The rainy input and its rain layer (context ``"rain"``); for a rainy input of one's own
        (``degraded``), the rain layer is ``degraded - clean``."""
        if degraded is None:
            if clean is None:
                raise TaskError("dr: give a clean image to degrade, or a rainy input")
            h, w = clean.shape[-2:]
            rain = self.rain_layer(h, w, seed).to(clean)
            return TaskInput(quantize(clean + rain), clean, {"rain": rain.expand(1, 3, h, w).contiguous()})
        if clean is None:
            raise TaskError(
                "dr: interventions on a rainy input need its ground truth to separate "
                "the rain layer (rain = input - ground truth); give target="
            )
        self.check_pair(degraded, clean)
        return TaskInput(degraded, clean, {"rain": (degraded - clean).contiguous()})

    def intervene(self, inputs, context, content, placements, noise=None):
        """Write each patch with the context's rain over its block re-applied, quantized."""
        rain = context["rain"]
        values = []
        for patch, pl in zip(content, placements):
            y0, y1, x0, x1 = pl.dst
            oy, ox = pl.src
            r = torch.zeros_like(patch)
            r[:, oy : oy + (y1 - y0), ox : ox + (x1 - x0)] = rain[0, :, y0:y1, x0:x1]
            values.append(quantize(patch + r))
        return write_blocks(inputs, values, placements)

    def describe(self) -> dict:
        """Name, scale and rain preset."""
        return {"name": self.name, "scale": 1, "preset": self.preset}
