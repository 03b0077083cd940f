"""How a change confined to a window of an operation's input moves through the operation.

Incremental recompute (:mod:`cem_lab.causal.local_graph`) follows an intervention through a traced
network node by node. For every operation it needs, along each spatial axis:

- ``changed(spans)``: the output span that can differ when the inputs differ only on ``spans``
  (a superset is fine: more is recomputed, nothing is wrong);
- ``need(out)``: the input span each input must supply to compute the output span ``out`` exactly,
  and how the part of it outside the tensor is filled (``fill``: a number, as a zero-padded
  convolution reads, or ``None``: the span is kept inside the tensor, as an interpolation clamps);
- ``origin(need)``: the output coordinate of the first element the operation returns when run on
  the needed spans (the window is cropped from there);
- ``run(args)``: the operation on the gathered spans.

Spans are numpy integer arrays (one row per intervention) so that a plan for every block of a
job is computed at once; coordinates are half-open [lo, hi) in the tensor's own pixels. Every rule
is exact for the ATen operation it names, under the conditions :func:`rule_for` checks; anything
else has no rule and ends incremental recompute at that node (unless the change already covers the
node's whole output, when the node simply runs on whole tensors).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from typing_extensions import override

aten = torch.ops.aten

Spans = tuple[np.ndarray, np.ndarray]  # (lo, hi), each (B,)


def _ceil_div(a: np.ndarray, b: int) -> np.ndarray:
    return -((-a) // b)


def union(spans: list[Spans | None]) -> Spans:
    """The smallest span holding every given span (``None`` = unchanged input)."""
    have = [s for s in spans if s is not None]
    lo = have[0][0].copy()
    hi = have[0][1].copy()
    for a, b in have[1:]:
        lo = np.minimum(lo, a)
        hi = np.maximum(hi, b)
    return lo, hi


@dataclass
class Rule:
    """A rule for one node: what it keeps (``kind``), and its per-axis arithmetic."""

    kind: str
    #: positions of the node's arguments that carry spatial tensors (gathered on their spans)
    spatial_args: tuple[int, ...] = (0,)
    #: how the part of a needed span outside the tensor is filled (None: kept inside, clamped)
    fill: float | None = 0.0

    @override
    def changed(self, spans: list[Spans | None], axis: int) -> Spans:
        return union(spans)

    @override
    def need(self, out: Spans, axis: int) -> Spans:
        return out

    @override
    def origin(self, need: Spans, axis: int) -> np.ndarray:
        return need[0]

    @override
    def run(self, fn: Callable, args: list, kwargs: dict) -> Any:
        return fn(*args, **kwargs)


@dataclass
class ConvRule(Rule):
    """``aten.convolution`` (plain or transposed), any kernel, stride, padding, dilation, groups:
    the needed input span is run with padding 0, read from a zero-filled margin outside the tensor."""

    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    transposed: bool = False

    def _axis(self, axis: int) -> tuple[int, int, int, int]:
        return self.kernel[axis], self.stride[axis], self.padding[axis], self.dilation[axis]

    @override
    def changed(self, spans, axis):
        k, s, p, d = self._axis(axis)
        lo, hi = spans[0]
        reach = d * (k - 1)
        if self.transposed:  # output o = i * s - p + j * d
            return lo * s - p, (hi - 1) * s - p + reach + 1
        # output o reads inputs o * s - p .. o * s - p + reach
        return _ceil_div(lo + p - reach, s), (hi - 1 + p) // s + 1

    @override
    def need(self, out, axis):
        k, s, p, d = self._axis(axis)
        a, b = out
        reach = d * (k - 1)
        if self.transposed:
            return _ceil_div(a + p - reach, s), (b - 1 + p) // s + 1
        return a * s - p, (b - 1) * s - p + reach + 1

    @override
    def origin(self, need, axis):
        k, s, p, d = self._axis(axis)
        return need[0] * s - p if self.transposed else (need[0] + p) // s

    @override
    def run(self, fn, args, kwargs):
        x, w, b, stride, _pad, dilation, transposed, _out_pad, groups = args
        zero = [0] * len(stride)
        return fn(x, w, b, stride, zero, dilation, transposed, zero, groups)


@dataclass
class ShuffleRule(Rule):
    """``aten.pixel_shuffle`` (``up``) and ``aten.pixel_unshuffle``: a factor r between the axes."""

    factor: int = 2
    up: bool = True

    @override
    def changed(self, spans, axis):
        lo, hi = spans[0]
        r = self.factor
        return (lo * r, hi * r) if self.up else (lo // r, _ceil_div(hi, r))

    @override
    def need(self, out, axis):
        a, b = out
        r = self.factor
        return (a // r, _ceil_div(b, r)) if self.up else (a * r, b * r)

    @override
    def origin(self, need, axis):
        return need[0] * self.factor if self.up else need[0] // self.factor


@dataclass
class UpsampleRule(Rule):
    """``aten.upsample_{nearest,bilinear,bicubic}2d`` at an integer factor, ``align_corners=False``:
    output o reads the input near (o + 1/2) / f - 1/2 (nearest: floor(o / f)), within ``halo`` taps;
    the needed span stays inside the tensor (the kernels clamp there), so it carries that halo."""

    factor: tuple[int, int] = (2, 2)
    halo: int = 0
    #: the ``.vec`` overload (output size or scale factors, not both)
    vec: bool = False

    @override
    def changed(self, spans, axis):
        lo, hi = spans[0]
        f, h = self.factor[axis], self.halo
        return (lo - h - 1) * f, (hi + h + 1) * f

    @override
    def need(self, out, axis):
        a, b = out
        f, h = self.factor[axis], self.halo
        return a // f - h, _ceil_div(b, f) + h

    @override
    def origin(self, need, axis):
        return need[0] * self.factor[axis]

    @override
    def run(self, fn, args, kwargs):
        x = args[0]
        size = [x.shape[-2] * self.factor[0], x.shape[-1] * self.factor[1]]
        if self.vec:  # (input, output_size, [align_corners,] scale_factors): the size alone
            return fn(x, size, *args[2:-1], None)
        return fn(x, size, *args[2:], **kwargs)


@dataclass
class ShiftRule(Rule):
    """``aten.constant_pad_nd`` and ``aten.slice`` on a spatial axis: output o is input o - shift
    (the part of the needed span outside the input takes the pad's value)."""

    shift: tuple[int, int] = (0, 0)

    @override
    def changed(self, spans, axis):
        lo, hi = spans[0]
        return lo + self.shift[axis], hi + self.shift[axis]

    @override
    def need(self, out, axis):
        return out[0] - self.shift[axis], out[1] - self.shift[axis]

    @override
    def origin(self, need, axis):
        return need[0] + self.shift[axis]

    @override
    def run(self, fn, args, kwargs):
        return args[0]  # the gathered span is the op's output (pad values filled, slice applied)


#: elementwise operations (any broadcast operand must not vary over the spatial axes)
POINTWISE = {
    aten.relu.default,
    aten.leaky_relu.default,
    aten._prelu_kernel.default,
    aten.prelu.default,
    aten.gelu.default,
    aten.silu.default,
    aten.mish.default,
    aten.sigmoid.default,
    aten.tanh.default,
    aten.hardtanh.default,
    aten.hardswish.default,
    aten.hardsigmoid.default,
    aten.elu.default,
    aten.softplus.default,
    aten.clamp.default,
    aten.clamp.Tensor,
    aten.clamp_min.default,
    aten.clamp_max.default,
    aten.add.Tensor,
    aten.add.Scalar,
    aten.sub.Tensor,
    aten.sub.Scalar,
    aten.rsub.Scalar,
    aten.rsub.Tensor,
    aten.mul.Tensor,
    aten.mul.Scalar,
    aten.div.Tensor,
    aten.div.Scalar,
    aten.neg.default,
    aten.abs.default,
    aten.exp.default,
    aten.sqrt.default,
    aten.rsqrt.default,
    aten.pow.Tensor_Scalar,
    aten.maximum.default,
    aten.minimum.default,
    aten.where.self,
    aten.clone.default,
    aten.alias.default,
    aten.detach.default,
    aten._to_copy.default,
    aten.round.default,
}


def _spatial_extent(v: Any) -> tuple[int, int] | None:
    return tuple(v.shape[-2:]) if isinstance(v, Tensor) and v.dim() == 4 else None


def rule_for(node, values: dict, tainted: set) -> Rule | str:
    """The rule of a traced ATen ``node`` whose input carries the change, or why there is none.

    ``values`` holds every node's value on the un-intervened input; ``tainted`` the nodes that
    depend on the intervened input."""
    target = node.target
    out = values[node]
    extent = _spatial_extent(out if not isinstance(out, (tuple, list)) else out[0])
    tensor_args = [i for i, a in enumerate(node.args) if a in values and isinstance(values[a], Tensor)]

    def spatial(i: int) -> bool:
        return _spatial_extent(values[node.args[i]]) == extent

    if target is operator.getitem:
        return Rule("getitem", spatial_args=())
    if target is aten.convolution.default:
        x, w = values[node.args[0]], values[node.args[1]]
        if node.args[1] in tainted or (len(node.args) > 2 and node.args[2] in tainted):
            return "a convolution whose weights depend on the input (dynamic filters)"
        if w.dim() != 4 or x.dim() != 4:
            return f"a {w.dim() - 2}-d convolution"
        _, _, _, stride, pad, dil, transposed, out_pad, _ = node.args
        return ConvRule(
            "conv",
            kernel=(int(w.shape[2]), int(w.shape[3])),
            stride=tuple(stride),
            padding=tuple(pad),
            dilation=tuple(dil),
            transposed=bool(transposed),
        )
    if target in (aten.pixel_shuffle.default, aten.pixel_unshuffle.default):
        return ShuffleRule("shuffle", factor=int(node.args[1]), up=target is aten.pixel_shuffle.default)
    if target in (
        aten.upsample_nearest2d.default,
        aten.upsample_nearest2d.vec,
        aten.upsample_bilinear2d.default,
        aten.upsample_bilinear2d.vec,
        aten.upsample_bicubic2d.default,
        aten.upsample_bicubic2d.vec,
    ):
        name = target.name()
        x = values[node.args[0]]
        fy, ry = divmod(out.shape[-2], x.shape[-2])
        fx, rx = divmod(out.shape[-1], x.shape[-1])
        if ry or rx or fy < 1 or fx < 1:
            return f"an upsampling by a non-integer factor ({tuple(x.shape[-2:])} -> {tuple(out.shape[-2:])})"
        vec = name.endswith(".vec")
        if target.overloadpacket is aten.upsample_nearest2d:
            return UpsampleRule("upsample", fill=None, factor=(fy, fx), halo=0, vec=vec)
        if node.args[2]:
            return f"an upsampling with align_corners=True ({name}): not translation-invariant"
        halo = 2 if target.overloadpacket is aten.upsample_bicubic2d else 1
        return UpsampleRule("upsample", fill=None, factor=(fy, fx), halo=halo, vec=vec)
    if target is aten.constant_pad_nd.default:
        pad = list(node.args[1])
        if len(pad) > 4 and any(pad[4:]):
            return "a padding of a non-spatial axis"
        pad += [0] * (4 - len(pad))
        value = float(node.args[2]) if len(node.args) > 2 else 0.0
        return ShiftRule("shift", fill=value, shift=(pad[2], pad[0]))
    if target is aten.slice.Tensor:
        x = values[node.args[0]]
        dim = node.args[1] if len(node.args) > 1 else 0
        dim = dim % x.dim()
        start = node.args[2] if len(node.args) > 2 else 0
        step = node.args[4] if len(node.args) > 4 else 1
        if dim == 0:
            return "a slice of the batch"
        if dim in (x.dim() - 2, x.dim() - 1) and x.dim() == 4:
            if step != 1:
                return "a strided spatial slice"
            start = 0 if start is None else (start + x.shape[dim] if start < 0 else start)
            start = min(max(start, 0), x.shape[dim])
            shift = (-start, 0) if dim == 2 else (0, -start)
            return ShiftRule("shift", fill=0.0, shift=shift)
        return Rule("pointwise")  # a slice of the channels
    if target in (aten.split.Tensor, aten.split_with_sizes.default):
        dim = (node.args[2] if len(node.args) > 2 else 0) % values[node.args[0]].dim()
        return Rule("pointwise") if dim == 1 else "a split along a spatial or batch axis"
    if target is aten.cat.default:
        dim = node.args[1] if len(node.args) > 1 else 0
        parts = [values[a] for a in node.args[0]]
        if dim % parts[0].dim() != 1:
            return "a concatenation along a spatial or batch axis"
        if any(_spatial_extent(p) != extent for p in parts):
            return "a concatenation of maps of different sizes"
        return Rule("cat", spatial_args=())
    if target is aten._native_batch_norm_legit_no_training.default:
        return Rule("pointwise")
    if target in (aten.native_batch_norm.default, aten._native_batch_norm_legit.default):
        if node.args[5]:  # training
            return "a batch norm in training mode (statistics over the image): call model.eval()"
        return Rule("pointwise")
    if target in (aten.mean.dim, aten.sum.dim_IntList, aten.amax.default, aten.var.correction, aten.std.correction):
        x = values[node.args[0]]
        dims = node.args[1] if len(node.args) > 1 else None
        dims = list(range(x.dim())) if dims is None else [d % x.dim() for d in dims]
        keep = node.kwargs.get(
            "keepdim", node.args[2] if len(node.args) > 2 and isinstance(node.args[2], bool) else False
        )
        if dims == [1] and keep and x.dim() == 4:
            return Rule("pointwise")  # over the channels of each pixel (a channel LayerNorm)
        return f"a reduction over {'the spatial axes' if set(dims) & {2, 3} else 'axes ' + str(dims)} ({target.name()})"
    if target in POINTWISE:
        for i in tensor_args:
            v = values[node.args[i]]
            if spatial(i):
                continue
            if v.dim() >= 2 and (v.shape[-1] != 1 or v.shape[-2] != 1) and node.args[i] in tainted:
                return f"an elementwise {target.name()} with an operand of another size"
            if node.args[i] in tainted:
                return f"an elementwise {target.name()} scaled by a quantity pooled over the image (attention)"
        return Rule("pointwise", spatial_args=tuple(i for i in tensor_args if spatial(i)))
    return f"{target.name() if hasattr(target, 'name') else target} (not a local operation)"
