"""Denoising: additive white Gaussian noise, the second task of the CEM paper."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cem_lab.images import quantize
from cem_lab.tasks.base import Task, TaskError, write_blocks


class DenoiseTask(Task):
    """Additive white Gaussian noise of level ``sigma`` (on the 0..255 scale).

    Input = clip(GT + N(0, sigma/255)) stored as uint8. The reference truncates to uint8
    (``np.uint8(x * 255)``); ``rounding="round"`` rounds instead. The base noise of an image is
    drawn with ``numpy.random.RandomState(seed)`` in H x W x C order, as the reference does.
    Intervention: (natural patch + fresh Gaussian noise of the same sigma), clipped, uint8.
    """

    name = "dn"
    needs_noise = True
    writes_only_its_block = True  # the patch plus its own noise, quantized, into its block
    display_bound = 1.0

    def __init__(self, sigma: float = 50.0, rounding: str = "floor"):
        if not sigma > 0:
            raise TaskError(f"dn: sigma must be positive (0..255 scale), got {sigma}")
        if rounding not in ("floor", "round"):
            raise TaskError(f"dn: rounding must be 'floor' (reference) or 'round', got {rounding!r}")
        self.sigma = float(sigma)
        self.rounding = rounding

    def degrade(self, clean: Tensor, seed: int = 0) -> Tensor:
        """Add Gaussian noise of ``sigma`` (drawn from ``RandomState(seed)``) and quantize with ``rounding``."""
        n, c, h, w = clean.shape
        noise = np.random.RandomState(seed).normal(0.0, self.sigma / 255.0, (n, h, w, c))
        noise_t = torch.from_numpy(noise).permute(0, 3, 1, 2).to(clean)
        return quantize(clean + noise_t, self.rounding)

    def intervene(self, inputs, context, content, placements, noise=None):
        """Write each patch plus its own noise draw at ``sigma``, quantized (``noise`` is required)."""
        if noise is None:
            raise TaskError("dn: intervene needs noise draws (needs_noise is True)")
        values = quantize(content + noise.to(content) * (self.sigma / 255.0), self.rounding)
        return write_blocks(inputs, values, placements)

    def describe(self) -> dict:
        """Name, scale, sigma and rounding."""
        return {"name": self.name, "scale": 1, "sigma": self.sigma, "rounding": self.rounding}
