"""Exact acceleration for local models: the input region the ROI can depend on.

A gradient probe finds the input pixels that influence the ROI output. Blocks outside that
region have a causal effect of exactly 0 and need no forward pass; the others are run on the
smallest crop that holds the region. Before the crop is trusted, :func:`verify_crop` checks
that cropped and full-image ROI outputs agree and that interventions outside the region do not
change the full-image ROI output. Global models (global pooling, image-wide attention) depend
on the whole input and fall back to full-image mode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from cem_lab.causal.memory import PeakMemory, available_bytes

log = logging.getLogger("cem_lab")
#: the share of the free memory a probe may be forecast to take before the whole input is taken instead
MEMORY_SHARE = 0.7


@dataclass
class DependencyRegion:
    """Input pixels the ROI output depends on, and the crop that runs the model.

    ``box`` = (y0, y1, x0, x1): bounding box of the dependent pixels in input coordinates;
    ``crop`` = the box grown by the margin, its ends snapped to the crop grid (``crop_multiple``).
    """

    mask: np.ndarray
    box: tuple[int, int, int, int]
    crop: tuple[int, int, int, int]
    method: str = "gradient_probe"
    probes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def covers_input(self) -> bool:
        """Whether the crop is the whole input (nothing to save by cropping)."""
        h, w = self.mask.shape
        return self.crop == (0, h, 0, w)

    @property
    def crop_shape(self) -> tuple[int, int]:
        """(height, width) of the crop in input pixels."""
        y0, y1, x0, x1 = self.crop
        return y1 - y0, x1 - x0

    def describe(self) -> dict:
        """Method, probes, box, crop, number of dependent pixels and notes, JSON-ready."""
        return {
            "method": self.method,
            "probes": self.probes,
            "box": list(self.box),
            "crop": list(self.crop),
            "dependent_pixels": int(self.mask.sum()),
            "notes": self.notes,
        }


def _expand(lo: int, hi: int, size: int, margin: int, multiple: int) -> tuple[int, int]:
    """[lo, hi) grown by ``margin``; with ``multiple`` > 1 both ends snap outwards to the grid of
    that multiple (capped by the image), so a window-attention or pooling model sees the crop cut
    into the same windows as the full image."""
    lo, hi = max(0, lo - margin), min(size, hi + margin)
    if multiple > 1:
        lo = lo // multiple * multiple
        hi = min(size, -(-hi // multiple) * multiple)
    return lo, hi


class NoGradientError(RuntimeError):
    """The model's output carries no gradient (it runs under no_grad, detaches, or is not torch):
    the gradient probe cannot find its dependency region."""


def _probe(model: nn.Module, x: Tensor, roi_box: tuple[int, int, int, int], probes: int, seed: int) -> Tensor:
    """Input pixels of ``x`` with a non-zero gradient of the ROI output (union over probes).

    Only the input's gradient is taken (``torch.autograd.grad``): the weights' gradients, which a plain
    ``backward()`` would also compute, are half of the backward pass's work and of no use here.
    """
    y0, y1, x0, x1 = roi_box
    gen = torch.Generator().manual_seed(seed)
    inputs = [x.detach()] + [torch.rand(x.shape, generator=gen).to(x) for _ in range(probes)]
    mask = torch.zeros(x.shape[-2:], dtype=torch.bool, device=x.device)
    for probe in inputs:
        p = probe.clone().requires_grad_(True)
        with torch.enable_grad():
            out = model(p)
            if isinstance(out, (list, tuple)):
                out = out[0]
            if not (isinstance(out, Tensor) and out.requires_grad):
                raise NoGradientError(f"{type(model).__name__} returns an output without gradients")
            # random positive weights so that outputs cannot cancel each other out
            w = torch.rand(out[..., y0:y1, x0:x1].shape, generator=gen).to(out) + 0.5
            (grad,) = torch.autograd.grad((out[..., y0:y1, x0:x1] * w).sum(), p, allow_unused=True)
        if grad is not None:
            mask |= grad.detach().abs().sum(dim=(0, 1)) > 0
    return mask


def dependency_region(
    model: nn.Module,
    x: Tensor,
    roi_box_in: tuple[int, int, int, int],
    scale: int,
    probes: int = 2,
    seed: int = 0,
    margin: int = 0,
    multiple: int = 1,
    window: int = 32,
) -> DependencyRegion:
    """Union over probe inputs of the pixels with a non-zero gradient of the ROI output.

    ``x``: (1, 3, h, w) model input; ``roi_box_in``: the ROI's (y0, y1, x0, x1) in *output*
    pixels. Probes: the real input and ``probes`` uniform random images (seeded), so a path
    that is dead (ReLU) for one input rarely hides a dependency.

    To save memory on large images the probe first runs on a window: the ROI grown by
    ``window`` input pixels. If the region found keeps a ring of untouched pixels inside the
    window, it is the region of the full image too (the window then holds every pixel the ROI
    output depends on, so the model computes the same ROI output on it); otherwise the window
    is doubled, up to the whole image.
    """
    y0, y1, x0, x1 = roi_box_in
    h, w = x.shape[-2:]
    ry0, ry1, rx0, rx1 = y0 // scale, -(-y1 // scale), x0 // scale, -(-x1 // scale)
    was_training = model.training
    model.eval()
    grow = max(1, int(window))
    used, pixels = None, 0  # the memory of the last window's probe, and its pixels: the next one's forecast
    try:
        while True:
            wy0, wy1 = max(0, ry0 - grow), min(h, ry1 + grow)
            wx0, wx1 = max(0, rx0 - grow), min(w, rx1 + grow)
            full = (wy0, wy1, wx0, wx1) == (0, h, 0, w)
            need = None if used is None else used * (wy1 - wy0) * (wx1 - wx0) / pixels
            free = available_bytes(x.device) if need is not None else None
            if need is not None and free is not None and need > MEMORY_SHARE * free:
                return _whole_input(
                    h, w, ry0, ry1, rx0, rx1, probes, (pixels, used, need, free, (wy1 - wy0, wx1 - wx0))
                )
            sub = x[..., wy0:wy1, wx0:wx1]
            roi_local = (y0 - wy0 * scale, y1 - wy0 * scale, x0 - wx0 * scale, x1 - wx0 * scale)
            with PeakMemory(x.device) as peak:
                local = _probe(model, sub, roi_local, probes, seed).cpu().numpy()
            used, pixels = peak.used, (wy1 - wy0) * (wx1 - wx0)
            if full:
                break
            # a ring of the window that is not an image border must stay untouched
            edges = []
            if wy0 > 0:
                edges.append(local[0, :])
            if wy1 < h:
                edges.append(local[-1, :])
            if wx0 > 0:
                edges.append(local[:, 0])
            if wx1 < w:
                edges.append(local[:, -1])
            if not any(e.any() for e in edges):
                break
            grow *= 2
    finally:
        model.train(was_training)
    m = np.zeros((h, w), dtype=bool)
    m[wy0:wy1, wx0:wx1] = local
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    if len(rows) == 0:  # the ROI output does not depend on the input at all
        box = (ry0, ry1, rx0, rx1)
    else:
        box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    # the crop must hold the ROI itself on the input grid
    by0, by1, bx0, bx1 = min(box[0], ry0), max(box[1], ry1), min(box[2], rx0), max(box[3], rx1)
    cy0, cy1 = _expand(by0, by1, h, margin, multiple)
    cx0, cx1 = _expand(bx0, bx1, w, margin, multiple)
    return DependencyRegion(
        m, box, (cy0, cy1, cx0, cx1), probes=probes + 1, notes=[f"gradient probe on a {wy1 - wy0}x{wx1 - wx0} window"]
    )


def chain_region(
    reach: int,
    shape: tuple[int, int],
    roi_box_in: tuple[int, int, int, int],
    margin: int = 0,
    multiple: int = 1,
) -> DependencyRegion:
    """The region of a declared stride-1 convolution chain (scale 1): the ROI grown by the chain's reach, the
    summed radii of its kernels. A pixel further away cannot reach the ROI through such a stack, so no gradient
    probe is needed; the crop is checked against the full input all the same."""
    h, w = shape
    y0, y1, x0, x1 = roi_box_in
    box = (max(0, y0 - reach), min(h, y1 + reach), max(0, x0 - reach), min(w, x1 + reach))
    m = np.zeros((h, w), dtype=bool)
    m[box[0] : box[1], box[2] : box[3]] = True
    cy0, cy1 = _expand(box[0], box[1], h, margin, multiple)
    cx0, cx1 = _expand(box[2], box[3], w, margin, multiple)
    note = (
        f"the input region the ROI depends on: the ROI grown by {reach} px, the reach of the model's declared "
        "convolution chain (no gradient probe)"
    )
    return DependencyRegion(m, box, (cy0, cy1, cx0, cx1), method="conv_chain", probes=0, notes=[note])


def _whole_input(h, w, ry0, ry1, rx0, rx1, probes, forecast) -> DependencyRegion:
    """The region when the next window's probe would not fit in memory: the whole input (full-image mode, whose
    map is exact; only the speed-up of a crop is given up), with a note of the forecast."""
    pixels, used, need, free, (nh, nw) = forecast
    gib = 1024**3
    note = (
        f"the gradient probe of a {nh}x{nw} window would need about {need / gib:.1f} GiB (its last window's "
        f"probe, {pixels} pixels, took {used / gib:.2f} GiB) and {free / gib:.1f} GiB are free: the ROI is taken "
        "to depend on the whole input (full-image mode: the same map, without a crop's speed-up)"
    )
    log.warning(note)
    return DependencyRegion(
        np.ones((h, w), dtype=bool),
        (0, h, 0, w),
        (0, h, 0, w),
        method="memory_forecast",
        probes=probes + 1,
        notes=[note],
    )


@dataclass
class CropCheck:
    """The outcome of :func:`verify_crop`: the largest crop-vs-full difference of the ROI output on the
    check's inputs, the change of the full-image ROI output when only the blocks outside the crop are
    intervened (measured when the first check fails, to say why; None otherwise), and why it failed."""

    ok: bool
    max_crop_diff: float
    max_outside_diff: float | None
    reason: str = ""
    #: how many blocks the check intervened on inside the crop, and outside it
    blocks_inside: int = 0
    blocks_outside: int = 0
    #: full-image passes the check ran
    full_passes: int = 0

    def describe(self) -> dict:
        """The check as recorded in summary.json."""
        return {
            "ok": self.ok,
            "max_crop_vs_full_diff": self.max_crop_diff,
            "max_outside_intervention_diff": self.max_outside_diff,
            "reason": self.reason,
            "blocks_inside": self.blocks_inside,
            "blocks_outside": self.blocks_outside,
            "full_passes": self.full_passes,
        }


def verify_crop(
    forward_full,
    forward_crop,
    full_inputs: Tensor,
    crop_inputs: Tensor,
    base_full_roi: Tensor,
    base_crop: Tensor,
    outside_only=None,
    atol: float = 1e-4,
) -> CropCheck:
    """Compare the ROI outputs of the crop and of the full input on the same inputs.

    ``forward_full(x)`` / ``forward_crop(x)`` return ROI outputs (B, 3, r, r). ``full_inputs`` are whole
    intervened inputs, ``crop_inputs`` what the crop holds of them; ``base_crop``, the un-intervened crop, is
    compared with ``base_full_roi`` (the full-image pass the job has already run). When they differ,
    ``outside_only()`` (a full input with only the blocks outside the crop intervened) says whether the
    outside reaches the ROI or the crop computes its inside differently.
    """
    full = torch.cat([base_full_roi, forward_full(full_inputs)]) if len(full_inputs) else base_full_roi
    crop = forward_crop(torch.cat([base_crop, crop_inputs]) if len(crop_inputs) else base_crop)
    d_crop = float((full - crop).abs().max())
    passes = len(full_inputs)
    if d_crop <= atol:
        return CropCheck(True, d_crop, None, full_passes=passes)
    d_out = None
    if outside_only is not None:
        d_out = float((forward_full(outside_only()) - base_full_roi).abs().max())
        passes += 1
    if d_out is not None and not d_out <= atol:
        reason = f"interventions outside the dependency region change the ROI output by {d_out:.3g}"
    else:
        reason = f"cropped and full-image ROI outputs differ by {d_crop:.3g} (> {atol:g})"
    return CropCheck(False, d_crop, d_out, reason, full_passes=passes)


def check_blocks(grid, boxes, crop: tuple[int, int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The blocks a crop is checked on, drawn by ``seed``: up to 8 among the blocks the crop touches, and every
    block outside the crop. The check builds one input with all of them intervened, and its ROI
    output on the crop must equal the full input's: the crop then computes what the full image does for
    changes inside it, and nothing outside it reaches the ROI.

    Intervening jointly costs one full-image pass whatever the image's size and checks every block outside
    the crop, where a check of single blocks could only afford a sample of those next to it (a dependency
    the gradient probe cannot see, through a detached or integer-valued path, can come from anywhere).
    """
    rng = np.random.default_rng([seed, 7919])
    inside = grid.blocks_touching(crop)
    inside = rng.choice(inside, size=min(8, len(inside)), replace=False)
    cy0, cy1, cx0, cx1 = crop
    b = np.asarray(boxes[: len(grid)], dtype=np.int64).reshape(-1, 4)
    outside = (b[:, 1] <= cy0) | (b[:, 0] >= cy1) | (b[:, 3] <= cx0) | (b[:, 2] >= cx1)
    return inside, np.flatnonzero(outside)
