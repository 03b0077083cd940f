"""Super-resolution with bicubic downscaling (x2, x3, x4), the first task of the CEM paper."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from cem_lab.images import quantize
from cem_lab.tasks.base import Task, TaskError, write_blocks


def bicubic_downscale(x: Tensor, scale: int) -> Tensor:
    """Antialiased bicubic downscale by an integer factor (close to PIL's BICUBIC resize)."""
    if scale == 1:
        return x
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)


class SuperResolutionTask(Task):
    """SR with bicubic downscaling (x2, x3, x4). Input = quantized bicubic LR image.

    Intervention: the natural b x b patch is bicubic-downscaled to (b/s) x (b/s), quantized,
    and written into the LR input at the block.
    """

    name = "sr"
    display_bound = 2.5
    writes_only_its_block = True  # the downscaled patch, into its block

    def __init__(self, scale: int = 4):
        if scale not in (2, 3, 4):
            raise TaskError(f"sr: scale must be 2, 3 or 4, got {scale}")
        self.scale = int(scale)

    def degrade(self, clean: Tensor, seed: int = 0) -> Tensor:
        """Bicubic downscale by ``scale``, quantized; raises :class:`TaskError` for a size that is not a multiple."""
        self.check_size(clean.shape[-2], clean.shape[-1])
        return quantize(bicubic_downscale(clean, self.scale))

    def patch_content(self, patches: Tensor) -> Tensor:
        """The patches bicubic-downscaled by ``scale`` and quantized; the block size must be a multiple of it."""
        if patches.shape[-1] % self.scale:
            raise TaskError(
                f"sr: block size {patches.shape[-1]} is not divisible by the scale "
                f"{self.scale}; choose cem.block as a multiple of {self.scale}"
            )
        return quantize(bicubic_downscale(patches, self.scale))

    def intervene(self, inputs, context, content, placements, noise=None):
        """Write the downscaled patches as they are (no noise, no context)."""
        return write_blocks(inputs, content, placements)

    def describe(self) -> dict:
        """Name, scale and kernel (bicubic)."""
        return {"name": self.name, "scale": self.scale, "kernel": "bicubic"}
