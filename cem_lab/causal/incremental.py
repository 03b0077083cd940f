"""Exact incremental recompute of a plain convolution stack (``recompute=incremental``).

An intervention at block p changes the input only inside p's box. Through a chain of stride-1
convolutions (odd square kernels, zero "same" padding) and pointwise layers, the change at the
output of layer l lies within p's box dilated by the layers' summed radii R_l, and nothing else
differs from the un-intervened run. So every layer is recomputed only on that window (plus its
kernel's halo, taken from the cached un-intervened activations), and the ROI keeps its
un-intervened output everywhere the last window does not reach. The result is the same map as
running the whole crop (up to float rounding of convolutions of other shapes; it is checked
against the crop on sampled blocks before it is trusted).

A model opts in by exposing ``conv_chain()`` returning ``(layers, residual)``: ``layers`` an
``nn.Sequential`` (or list of modules) of ``nn.Conv2d`` and pointwise modules, ``residual`` -1 for
``x - body(x)``, +1 for ``x + body(x)``, 0 for ``body(x)``. A bare ``nn.Sequential`` model is read
as ``(model, 0)``. Anything else (an upsampler, attention, pooling, a skip inside the body) is not
a chain: :func:`conv_chain` says why, and the run keeps the ROI crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: modules that act on each pixel alone (or each channel of a pixel): they commute with windows
POINTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ReLU6,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Identity,
    nn.Hardtanh,
    nn.Softplus,
    nn.Mish,
)


class NotAChain(ValueError):
    """The model is not a plain convolution stack that incremental recompute can follow."""


@dataclass
class Unit:
    """One convolution and the pointwise layers after it."""

    conv: nn.Conv2d
    after: list[nn.Module]

    @property
    def radius(self) -> int:
        """Half the kernel size: the input pixels each output pixel reaches per side."""
        return self.conv.kernel_size[0] // 2

    def __call__(self, x: Tensor) -> Tensor:
        """The convolution without padding (``x`` carries the halo), then the pointwise layers."""
        y = F.conv2d(x, self.conv.weight, self.conv.bias, 1, 0, 1, self.conv.groups)  # valid: x carries the halo
        for m in self.after:
            if type(m) is nn.ReLU:  # in place: y is this unit's own fresh tensor
                y.relu_()
            elif type(m) is nn.LeakyReLU:
                F.leaky_relu_(y, m.negative_slope)
            else:
                y = m(y)
        return y


def conv_chain(model: nn.Module) -> tuple[list[Unit], int]:
    """The model's chain of units and its residual sign, or :class:`NotAChain` naming what is not."""
    if hasattr(model, "conv_chain"):
        layers, residual = model.conv_chain()
    elif isinstance(model, nn.Sequential):
        layers, residual = model, 0
    else:
        raise NotAChain(f"{type(model).__name__} does not declare conv_chain() and is not an nn.Sequential")
    if residual not in (-1, 0, 1):
        raise NotAChain(f"conv_chain() residual must be -1, 0 or +1, got {residual!r}")
    units: list[Unit] = []
    for i, m in enumerate(layers):
        if isinstance(m, nn.Conv2d):
            k, s, d = m.kernel_size, m.stride, m.dilation
            if (
                k[0] != k[1]
                or k[0] % 2 == 0
                or s != (1, 1)
                or d != (1, 1)
                or m.padding_mode != "zeros"
                or m.padding != (k[0] // 2, k[1] // 2)
            ):
                raise NotAChain(f"layer {i} ({m}) is not a stride-1, odd square, zero 'same'-padded convolution")
            units.append(Unit(m, []))
        elif isinstance(m, POINTWISE) or (isinstance(m, nn.BatchNorm2d) and not m.training):
            if not units:
                raise NotAChain(f"layer {i} ({type(m).__name__}) comes before the first convolution")
            units[-1].after.append(m)
        else:
            raise NotAChain(f"layer {i} ({type(m).__name__}) is neither a convolution nor a pointwise layer")
    if not units:
        raise NotAChain("the chain has no convolution")
    return units, int(residual)


class IncrementalChain:
    """Un-intervened activations of a conv chain on one input crop, and ROI outputs of intervened
    copies of that crop computed window by window.

    ``base``: the un-intervened crop (1, C, H, W); ``roi``: (y0, y1, x0, x1) in crop pixels.

    The window of unit l is the item's box dilated by G_l, the summed radii of units 1..l. Its input
    is the previous unit's window (exact) inside a ring of un-intervened activations. The
    activations are kept on canvases padded with zeros by the full reach, so a window that leaves
    the crop reads zeros there, as the network's own zero padding does; the part of each output
    window outside the crop is set to zero before the next unit reads it.
    """

    def __init__(self, units: list[Unit], residual: int, base: Tensor, roi: tuple[int, int, int, int]):
        self.units, self.residual, self.roi = units, residual, roi
        self.h, self.w = base.shape[-2:]
        self.reach = sum(u.radius for u in units)
        self.pad = self.reach + max(u.radius for u in units)
        p = self.pad
        canv = []  # every unit's input, on a zero canvas padded by p
        x = base
        with torch.inference_mode():
            for u in units:
                canv.append(F.pad(x, (p, p, p, p))[0])
                r = u.radius
                x = u(F.pad(x, (r, r, r, r)))
            self.inside = F.pad(torch.ones_like(base[0, :1]), (p, p, p, p))  # (1, H + 2p, W + 2p)
        self.canvases = canv
        self.body_out = x  # (1, C_out, H, W)

    def windows(self, box: tuple[int, int, int, int]) -> list[tuple[int, int, int, int]]:
        """The window each unit computes for an intervention inside ``box`` (crop pixels; it may
        leave the crop, where its values are the zeros of the padding)."""
        y0, y1, x0, x1 = box
        out, grow = [], 0
        for u in self.units:
            grow += u.radius
            out.append((y0 - grow, y1 + grow, x0 - grow, x1 + grow))
        return out

    def pixels(self, box) -> float:
        """Input pixels one item pushes through a unit, averaged over the units (comparable with a
        crop's H x W; the part of a window outside the crop counts too: it is computed)."""
        return sum(
            (w[1] - w[0] + 2 * u.radius) * (w[3] - w[2] + 2 * u.radius)  # with the halo
            for w, u in zip(self.windows(box), self.units)
        ) / len(self.units)

    def roi_outputs(
        self, x: Tensor, boxes: Sequence[tuple[int, int, int, int]], chunk: int = 8, pad: bool = True
    ) -> Tensor:
        """ROI outputs of intervened crops ``x`` (N, C, H, W), item i changed only inside ``boxes[i]``.

        Items are grouped by their box's size and run ``chunk`` at a time (the last chunk padded
        with copies of its first item), so every convolution has one shape whatever the batch: an
        item's output does not depend on the batch size or its neighbours. ``pad=False`` runs the
        last chunk as it is (a check, which reads no map value from it)."""
        n = x.shape[0]
        y0, y1, x0, x1 = self.roi
        out = torch.empty(
            (n, self.body_out.shape[1], y1 - y0, x1 - x0), dtype=self.body_out.dtype, device=self.body_out.device
        )
        groups: dict[tuple[int, int], list[int]] = {}
        for i, b in enumerate(boxes):
            groups.setdefault((b[1] - b[0], b[3] - b[2]), []).append(i)
        with torch.inference_mode():
            for idx in groups.values():
                for j in range(0, len(idx), chunk):
                    sub = idx[j : j + chunk]
                    padded = sub + [sub[0]] * (chunk - len(sub)) if pad else sub
                    out[sub] = self._group(x, [boxes[i] for i in padded], padded)[: len(sub)]
        return out

    def _slices(self, canvas: Tensor, boxes, grow: int) -> Tensor:
        """``canvas`` on every box dilated by ``grow`` (N, C, h, w): one canvas (C, H', W') for all
        boxes, or one per box (N, C, H', W')."""
        p = self.pad
        return torch.stack(
            [
                (canvas if canvas.dim() == 3 else canvas[k])[
                    :, b[0] - grow + p : b[1] + grow + p, b[2] - grow + p : b[3] + grow + p
                ]
                for k, b in enumerate(boxes)
            ]
        )

    def _group(self, x: Tensor, boxes, idx) -> Tensor:
        p = self.pad
        xin = F.pad(x[idx], (p, p, p, p))
        prev, g_prev = None, 0
        for li, u in enumerate(self.units):
            r = u.radius
            # output window: the box dilated by g_prev + r; its input: dilated by g_prev + 2r
            if li == 0:  # the intervened input itself
                a = self._slices(xin, boxes, 2 * r)
            else:
                a = self._slices(self.canvases[li], boxes, g_prev + 2 * r)  # stack: a new tensor
                a[:, :, 2 * r : a.shape[2] - 2 * r, 2 * r : a.shape[3] - 2 * r] = prev
            prev = u(a)
            g = g_prev + r
            if any(b[0] - g < 0 or b[2] - g < 0 or b[1] + g > self.h or b[3] + g > self.w for b in boxes):
                prev = prev * self._slices(self.inside, boxes, g)  # zero where the window left the crop
            g_prev = g
        # the ROI: un-intervened body output, with the last window pasted in
        y0, y1, x0, x1 = self.roi
        body = self.body_out[:, :, y0:y1, x0:x1].expand(len(idx), -1, -1, -1).clone()
        g = g_prev
        for k, b in enumerate(boxes):
            wy0, wy1, wx0, wx1 = b[0] - g, b[1] + g, b[2] - g, b[3] + g
            iy0, iy1, ix0, ix1 = max(wy0, y0), min(wy1, y1), max(wx0, x0), min(wx1, x1)
            if iy0 < iy1 and ix0 < ix1:
                body[k, :, iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = prev[
                    k, :, iy0 - wy0 : iy1 - wy0, ix0 - wx0 : ix1 - wx0
                ]
        if self.residual == 0:
            return body
        xr = x[idx][:, :, y0:y1, x0:x1]
        return xr - body if self.residual < 0 else xr + body


def changed_outside(x: Tensor, base: Tensor, boxes: Sequence[tuple[int, int, int, int]]) -> bool:
    """Whether any item of ``x`` differs from ``base`` outside its box (the chain's premise)."""
    diff = (x != base).any(dim=1)  # (N, H, W)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        diff[i, y0:y1, x0:x1] = False
    return bool(diff.any())
