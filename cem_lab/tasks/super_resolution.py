"""The three tasks of the paper: super-resolution, denoising and deraining."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cem_lab.images import quantize
from cem_lab.tasks.base import Task, TaskError, TaskInput, write_blocks


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

    def __init__(self, scale: int = 4):
        if scale not in (2, 3, 4):
            raise TaskError(f"sr: scale must be 2, 3 or 4, got {scale}")
        self.scale = int(scale)

    def degrade(self, clean: Tensor, seed: int = 0) -> Tensor:
        self.check_size(clean.shape[-2], clean.shape[-1])
        return quantize(bicubic_downscale(clean, self.scale))

    def patch_content(self, patches: Tensor) -> Tensor:
        if patches.shape[-1] % self.scale:
            raise TaskError(
                f"sr: block size {patches.shape[-1]} is not divisible by the scale "
                f"{self.scale}; choose cem.block as a multiple of {self.scale}"
            )
        return quantize(bicubic_downscale(patches, self.scale))

    def intervene(self, inputs, context, content, placements, noise=None):
        return write_blocks(inputs, content, placements)

    def describe(self) -> dict:
        return {"name": self.name, "scale": self.scale, "kernel": "bicubic"}


class DenoiseTask(Task):
    """Additive white Gaussian noise of level ``sigma`` (on the 0..255 scale).

    Input = clip(GT + N(0, sigma/255)) stored as uint8. The reference truncates to uint8
    (``np.uint8(x * 255)``); ``rounding="round"`` rounds instead. The base noise of an image is
    drawn with ``numpy.random.RandomState(seed)`` in H x W x C order, as the reference does.
    Intervention: (natural patch + fresh Gaussian noise of the same sigma), clipped, uint8.
    """

    name = "dn"
    needs_noise = True
    display_bound = 1.0

    def __init__(self, sigma: float = 50.0, rounding: str = "floor"):
        if not sigma > 0:
            raise TaskError(f"dn: sigma must be positive (0..255 scale), got {sigma}")
        if rounding not in ("floor", "round"):
            raise TaskError(f"dn: rounding must be 'floor' (reference) or 'round', got {rounding!r}")
        self.sigma = float(sigma)
        self.rounding = rounding

    def degrade(self, clean: Tensor, seed: int = 0) -> Tensor:
        n, c, h, w = clean.shape
        noise = np.random.RandomState(seed).normal(0.0, self.sigma / 255.0, (n, h, w, c))
        noise_t = torch.from_numpy(noise).permute(0, 3, 1, 2).to(clean)
        return quantize(clean + noise_t, self.rounding)

    def intervene(self, inputs, context, content, placements, noise=None):
        if noise is None:
            raise TaskError("dn: intervene needs noise draws (needs_noise is True)")
        values = quantize(content + noise.to(content) * (self.sigma / 255.0), self.rounding)
        return write_blocks(inputs, values, placements)

    def describe(self) -> dict:
        return {"name": self.name, "scale": 1, "sigma": self.sigma, "rounding": self.rounding}


class DerainTask(Task):
    """Synthetic rain: input = saturate_uint8(GT + beta * L), L and beta drawn once per image.

    Intervention: the block of the *clean* image is replaced by the natural patch and the same
    rain is re-applied, so the rain over the block is unchanged. With a user's own rainy input
    and its ground truth, the rain layer is their difference (beta = 1).
    """

    name = "dr"
    display_bound = 2.0

    def __init__(self, preset: str = "medium"):
        from cem_lab.tasks.rain import RAIN_PRESETS

        if preset not in RAIN_PRESETS:
            raise TaskError(f"dr: unknown rain preset {preset!r}; choose one of {sorted(RAIN_PRESETS)}")
        self.preset = preset

    def rain_layer(self, height: int, width: int, seed: int) -> Tensor:
        """beta * L as a (1, 1, H, W) tensor on the [0, 1] scale."""
        from cem_lab.tasks.rain import synthesize_rain

        layer, beta = synthesize_rain(height, width, seed, self.preset)
        return torch.from_numpy(np.asarray(layer, dtype=np.float64) * beta / 255.0)[None, None].float()

    def degrade(self, clean: Tensor, seed: int = 0) -> Tensor:
        n, _, h, w = clean.shape
        rain = torch.cat([self.rain_layer(h, w, seed + i) for i in range(n)]).to(clean)
        return quantize(clean + rain)

    def prepare(self, clean, seed=0, degraded=None) -> TaskInput:
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
        return {"name": self.name, "scale": 1, "preset": self.preset}


def make_task(name: str, **kwargs) -> Task:
    """Build a task by name: "sr" (scale), "dn" (sigma, rounding), "dr" (preset), "jpeg" (quality,
    scale, subsampling, footprint)."""
    from cem_lab.tasks.jpeg import JpegTask

    tasks = {"sr": SuperResolutionTask, "dn": DenoiseTask, "dr": DerainTask, "jpeg": JpegTask}
    if name not in tasks:
        raise TaskError(f"unknown task {name!r}; choose one of {sorted(tasks)}")
    return tasks[name](**kwargs)


def task_from_description(description: dict) -> Task:
    """The task that ``Task.describe()`` described (as stored in run folders and model YAMLs):
    ``task_from_description(t.describe())`` rebuilds ``t``. Keys that ``describe`` derives (the
    scale 1 of DN / DR, the bicubic kernel of SR) are checked and dropped."""
    d = dict(description)
    name = d.pop("name", None)
    if name == "sr":
        kernel = d.pop("kernel", "bicubic")
        if kernel != "bicubic":
            raise TaskError(f"sr: only the bicubic kernel is implemented, got {kernel!r}")
    elif name in ("dn", "dr"):
        scale = d.pop("scale", 1)
        if scale != 1:
            raise TaskError(f"{name}: the scale is 1, got {scale!r}")
    return make_task(name, **d)
