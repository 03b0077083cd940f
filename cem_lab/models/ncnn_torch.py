"""Execute ncnn graphs with torch ops: :class:`NcnnNet`, and the SR application wrapper :class:`NcnnSR`.

:class:`NcnnNet` runs the layers of an :class:`~cem_lab.models.ncnn_format.NcnnGraph` in file
order on batched float32 tensors of any size; it is differentiable (``d output / d input`` for the
CEM dependency probe) and holds the weights as parameters with stable names, so ``state_dict()``
is an ordinary torch state dict. Rebuild one from its JSON-able spec and a state dict with
``NcnnNet(spec)`` + ``load_state_dict`` (a net built from a spec alone holds uninitialised weights).

Every blob is a 4-D ``(B, C, H, W)`` tensor: an ncnn 3-D blob ``(c, h, w)`` gains the batch axis,
and the 1-D blobs that global pooling and InnerProduct make (``c`` values) are ``(B, c, 1, 1)``,
which gives ncnn's per-channel broadcasting in BinaryOp / Scale for free.

Parameter names: ``layers.<layer name>.<blob>``, the ncnn layer name with characters other than
letters, digits and ``_`` replaced by ``_``. Shapes are torch's: Convolution ``weight``
``(out, in, kh, kw)``; Deconvolution ``weight`` ``(in, out, kh, kw)`` (ncnn stores
``(out, in, kh, kw)``: the port transposes); InnerProduct ``weight`` ``(out, in)``; ``bias``
``(out,)``; PReLU ``slope`` ``(n,)``; Scale ``scale`` / ``bias`` ``(c,)``.

Each op also knows its output shape (:meth:`NcnnNet.output_shape`), so :func:`probe_geometry`
derives how the output size follows the input size, and which sizes the graph takes, from the
graph's own arithmetic in microseconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cem_lab.models.ncnn_format import NcnnFormatError, NcnnGraph, NcnnLayer

__all__ = ["Geometry", "NcnnNet", "NcnnSR", "probe_geometry"]

SpecLike = NcnnGraph | Mapping[str, Any]
Shape = tuple[int, int, int]  # (C, H, W) of one batch item
Blobs = Mapping[str, Tensor] | None


class _ShapeError(ValueError):
    """A blob shape the layer cannot take (the graph does not accept that input size)."""


# --------------------------------------------------------------------------- small helpers
def _unsupported(layer: NcnnLayer, what: str) -> NcnnFormatError:
    return NcnnFormatError(f"{layer.describe()}: {what} is not supported by the torch port")


class _Activation:
    """ncnn's fused activation: ``9=`` type, ``10=`` its parameters (a picklable callable)."""

    NAMES = {0: "none", 1: "relu", 2: "leaky_relu", 3: "clip", 4: "sigmoid", 5: "mish", 6: "hard_swish"}

    def __init__(self, layer: NcnnLayer):
        self.kind = int(layer.get(9, 0))
        if self.kind not in self.NAMES:
            raise _unsupported(layer, f"activation type {self.kind}")
        p = [float(v) for v in layer.get(10, [])]
        if self.kind == 2:  # leaky ReLU, slope p[0]
            self.args = (p[0] if p else 0.0,)
        elif self.kind == 3:  # clip(min, max)
            self.args = (p[0] if len(p) > 0 else -math.inf, p[1] if len(p) > 1 else math.inf)
        elif self.kind == 6:  # x * clip(alpha x + beta, 0, 1)
            self.args = (p[0] if len(p) > 0 else 0.2, p[1] if len(p) > 1 else 0.5)
        else:
            self.args = ()

    def __call__(self, x: Tensor) -> Tensor:
        kind = self.kind
        if kind == 0:
            return x
        if kind == 1 or (kind == 2 and self.args[0] == 0.0):
            return F.relu(x)
        if kind == 2:
            return F.leaky_relu(x, self.args[0])
        if kind == 3:
            return torch.clamp(x, *self.args)
        if kind == 4:
            return torch.sigmoid(x)
        if kind == 5:
            return x * torch.tanh(F.softplus(x))
        alpha, beta = self.args
        return x * torch.clamp(x * alpha + beta, 0.0, 1.0)


def _kernel(layer: NcnnLayer) -> tuple[int, int, int, int, int, int]:
    """(kh, kw, dil_h, dil_w, stride_h, stride_w) from keys 1/11, 2/12, 3/13 (h defaults to w)."""
    kw = int(layer.get(1, 0))
    kh = int(layer.get(11, kw))
    dw = int(layer.get(2, 1))
    dh = int(layer.get(12, dw))
    sw = int(layer.get(3, 1))
    sh = int(layer.get(13, sw))
    if min(kh, kw, dh, dw, sh, sw) < 1:
        raise NcnnFormatError(f"{layer.describe()}: kernel, dilation and stride must be positive")
    return kh, kw, dh, dw, sh, sw


def _pads(layer: NcnnLayer) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) from keys 4 / 15 / 14 / 16 with ncnn's defaults."""
    left = int(layer.get(4, 0))
    right = int(layer.get(15, left))
    top = int(layer.get(14, left))
    bottom = int(layer.get(16, top))
    return left, right, top, bottom


def _same_pad(size: int, extent: int, stride: int, upper: bool) -> tuple[int, int]:
    """ncnn's SAME padding (pad -233 = SAME_UPPER, -234 = SAME_LOWER) of one axis."""
    total = max(0, extent + (size - 1) // stride * stride - size)
    first = total // 2 if upper else total - total // 2
    return first, total - first


def _safe_name(name: str) -> str:
    return re.sub(r"\W", "_", name) or "_"


def _param(blobs: Blobs, name: str, shape: Sequence[int], transpose: bool = False) -> nn.Parameter:
    """A parameter of ``shape`` from a flat ncnn blob (no copy), or uninitialised."""
    if blobs is None:
        return nn.Parameter(torch.empty(*shape))
    flat = blobs[name].to(torch.float32)
    if flat.numel() != math.prod(shape):
        raise NcnnFormatError(f"blob {name!r} holds {flat.numel()} values, the layer needs {math.prod(shape)}")
    if transpose:  # ncnn (out, in, ...) -> torch (in, out, ...)
        t = flat.view(shape[1], shape[0], *shape[2:]).transpose(0, 1).contiguous()
    else:
        t = flat.view(*shape)
    return nn.Parameter(t)


def _broadcast(layer: NcnnLayer, *shapes: Shape) -> Shape:
    out = list(shapes[0])
    for shape in shapes[1:]:
        for i, (a, b) in enumerate(zip(out, shape)):
            if a != b and 1 not in (a, b):
                raise _ShapeError(f"{layer.describe()}: shapes {shapes} do not broadcast")
            out[i] = max(a, b)
    return tuple(out)  # type: ignore[return-value]


def _conv_out(size: int, extent: int, stride: int, layer: NcnnLayer) -> int:
    if size < extent:
        raise _ShapeError(f"{layer.describe()}: input {size} px is smaller than the kernel extent {extent}")
    return (size - extent) // stride + 1


# --------------------------------------------------------------------------- weighted layers
def _read_kernel(module: nn.Module, layer: NcnnLayer, what: str) -> int:
    """Set a (de)convolution's label, kernel geometry and input channels from ``layer``; return
    num_output. Grouped kernels are refused; the weight size must fit the kernel."""
    module.label = layer.describe()
    if int(layer.get(7, 1)) != 1:
        raise _unsupported(layer, f"a grouped {what}")
    module.kh, module.kw, module.dh, module.dw, module.sh, module.sw = _kernel(layer)
    out, size = int(layer.get(0)), int(layer.get(6))
    if size % (out * module.kh * module.kw):
        raise NcnnFormatError(
            f"{layer.describe()}: weight size {size} is not a multiple of "
            f"num_output x kernel = {out} x {module.kh} x {module.kw}"
        )
    module.cin = size // (out * module.kh * module.kw)
    return out


class _Conv(nn.Module):
    def __init__(self, layer: NcnnLayer, blobs: Blobs = None):
        super().__init__()
        out = _read_kernel(self, layer, "convolution")
        self.weight = _param(blobs, "weight", (out, self.cin, self.kh, self.kw))
        self.bias = _param(blobs, "bias", (out,)) if int(layer.get(5, 0)) else None
        self.pads = _pads(layer)
        self.pad_value = float(layer.get(18, 0.0))
        self.act = _Activation(layer)
        self._layer = layer

    def _resolve_pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        left, right, top, bottom = self.pads
        if left in (-233, -234) or top in (-233, -234):
            upper = -233 in (left, top)
            left, right = _same_pad(w, self.dw * (self.kw - 1) + 1, self.sw, upper)
            top, bottom = _same_pad(h, self.dh * (self.kh - 1) + 1, self.sh, upper)
        return left, right, top, bottom

    def shape(self, s: Shape) -> Shape:
        c, h, w = s
        if c != self.cin:
            raise _ShapeError(f"{self.label}: {c} input channels, the weights take {self.cin}")
        left, right, top, bottom = self._resolve_pads(h, w)
        oh = _conv_out(h + top + bottom, self.dh * (self.kh - 1) + 1, self.sh, self._layer)
        ow = _conv_out(w + left + right, self.dw * (self.kw - 1) + 1, self.sw, self._layer)
        return self.weight.shape[0], oh, ow

    def forward(self, x: Tensor) -> Tensor:
        left, right, top, bottom = self._resolve_pads(x.shape[-2], x.shape[-1])
        if left or right or top or bottom:
            x = F.pad(x, (left, right, top, bottom), value=self.pad_value)
        y = F.conv2d(x, self.weight, self.bias, (self.sh, self.sw), 0, (self.dh, self.dw))
        return self.act(y)


class _Deconv(nn.Module):
    """ncnn Deconvolution: the full transposed convolution, plus ``output_pad`` (which gets the
    bias only), then the pads cut off each border (or cut down to ``output_w/h`` for SAME pads)."""

    def __init__(self, layer: NcnnLayer, blobs: Blobs = None):
        super().__init__()
        out = _read_kernel(self, layer, "deconvolution")
        self.weight = _param(blobs, "weight", (self.cin, out, self.kh, self.kw), transpose=True)
        self.bias = _param(blobs, "bias", (out,)) if int(layer.get(5, 0)) else None
        self.pads = _pads(layer)
        self.output_pad = (int(layer.get(18, 0)), int(layer.get(19, 0)))  # right, bottom
        self.output_size = (int(layer.get(21, 0)), int(layer.get(20, 0)))  # h, w
        self.act = _Activation(layer)

    def _full(self, h: int, w: int) -> tuple[int, int]:
        return (
            (h - 1) * self.sh + self.dh * (self.kh - 1) + 1 + self.output_pad[1],
            (w - 1) * self.sw + self.dw * (self.kw - 1) + 1 + self.output_pad[0],
        )

    def _cut(self, full_h: int, full_w: int) -> tuple[int, int, int, int]:
        """The (left, right, top, bottom) border cut off the full output."""
        pads = self.pads
        if any(v > 0 for v in pads):
            return tuple(max(0, v) for v in pads)  # type: ignore[return-value]
        out_h, out_w = self.output_size
        if out_w > 0 and out_h > 0 and (-233 in pads or -234 in pads):
            wcut, hcut = full_w - out_w, full_h - out_h
            if -233 in pads:  # SAME_UPPER
                return wcut // 2, wcut - wcut // 2, hcut // 2, hcut - hcut // 2
            return wcut - wcut // 2, wcut // 2, hcut - hcut // 2, hcut // 2
        return 0, 0, 0, 0

    def shape(self, s: Shape) -> Shape:
        c, h, w = s
        if c != self.cin:
            raise _ShapeError(f"{self.label}: {c} input channels, the weights take {self.cin}")
        fh, fw = self._full(h, w)
        left, right, top, bottom = self._cut(fh, fw)
        oh, ow = fh - top - bottom, fw - left - right
        if oh <= 0 or ow <= 0:
            raise _ShapeError(f"{self.label}: output would be empty")
        return self.weight.shape[1], oh, ow

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv_transpose2d(x, self.weight, None, (self.sh, self.sw), 0, 0, 1, (self.dh, self.dw))
        pad_right, pad_bottom = self.output_pad
        if pad_right or pad_bottom:
            y = F.pad(y, (0, pad_right, 0, pad_bottom))
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        y = self.act(y)
        left, right, top, bottom = self._cut(y.shape[-2], y.shape[-1])
        if left or right or top or bottom:
            y = y[..., top : y.shape[-2] - bottom, left : y.shape[-1] - right]
        return y


class _InnerProduct(nn.Module):
    def __init__(self, layer: NcnnLayer, blobs: Blobs = None):
        super().__init__()
        self.label = layer.describe()
        out, size = int(layer.get(0)), int(layer.get(2))
        if size % out:
            raise NcnnFormatError(f"{layer.describe()}: weight size {size} is not a multiple of num_output {out}")
        self.weight = _param(blobs, "weight", (out, size // out))
        self.bias = _param(blobs, "bias", (out,)) if int(layer.get(1, 0)) else None
        self.act = _Activation(layer)

    def shape(self, s: Shape) -> Shape:
        if math.prod(s) != self.weight.shape[1]:
            raise _ShapeError(f"{self.label}: {math.prod(s)} inputs, the weights take {self.weight.shape[1]}")
        return self.weight.shape[0], 1, 1

    def forward(self, x: Tensor) -> Tensor:
        return self.act(F.linear(x.flatten(1), self.weight, self.bias))[:, :, None, None]


class _PReLU(nn.Module):
    def __init__(self, layer: NcnnLayer, blobs: Blobs = None):
        super().__init__()
        self.label = layer.describe()
        self.slope = _param(blobs, "slope", (int(layer.get(0, 1)),))

    def shape(self, s: Shape) -> Shape:
        if self.slope.numel() not in (1, s[0]):
            raise _ShapeError(f"{self.label}: {s[0]} channels, {self.slope.numel()} slopes")
        return s

    def forward(self, x: Tensor) -> Tensor:
        slope = self.slope.view(1, -1, 1, 1) if self.slope.numel() > 1 else self.slope
        return torch.where(x > 0, x, x * slope)


class _Scale(nn.Module):
    """Per-channel scale (+ bias); ``0=-233``: the scale is the second bottom blob."""

    def __init__(self, layer: NcnnLayer, blobs: Blobs = None):
        super().__init__()
        self.label = layer.describe()
        size = int(layer.get(0, 0))
        self.from_blob = size == -233
        self.scale = None if self.from_blob else _param(blobs, "scale", (size,))
        has_bias = bool(int(layer.get(1, 0))) and not self.from_blob
        self.bias = _param(blobs, "bias", (size,)) if has_bias else None

    def shape(self, s: Shape, scale: Shape | None = None) -> Shape:
        n = math.prod(scale) if scale is not None else (self.scale.numel() if self.scale is not None else 0)
        if n not in (1, s[0]):
            raise _ShapeError(f"{self.label}: {s[0]} channels, {n} scale values")
        return s

    def forward(self, x: Tensor, scale: Tensor | None = None) -> Tensor:
        if self.from_blob:
            if scale is None:
                raise RuntimeError(f"{self.label} takes its scale from a second bottom blob")
            return x * scale.reshape(scale.shape[0], -1, 1, 1)
        y = x * self.scale.view(1, -1, 1, 1)
        return y + self.bias.view(1, -1, 1, 1) if self.bias is not None else y


_WEIGHTED: dict[str, type] = {
    "Convolution": _Conv,
    "Deconvolution": _Deconv,
    "InnerProduct": _InnerProduct,
    "PReLU": _PReLU,
    "Scale": _Scale,
}


# --------------------------------------------------------------------------- weightless layers
class _Op:
    """A weightless layer: ``op(*tensors)`` computes, ``op.shape(*shapes)`` gives the output shape."""

    def __init__(self, layer: NcnnLayer):
        self.layer = layer
        self.label = layer.describe()

    def __call__(self, *xs: Tensor) -> Tensor:
        raise NotImplementedError

    def shape(self, *shapes: Shape) -> Shape:
        raise NotImplementedError


def _dim(layer: NcnnLayer, axis: int) -> int:
    """ncnn axis of a 3-D blob (0 c, 1 h, 2 w; negative from the end) -> index in (C, H, W)."""
    if axis < 0:
        axis += 3
    if not 0 <= axis <= 2:
        raise _unsupported(layer, f"axis {axis}")
    return axis


class _Binary(_Op):
    """ncnn BinaryOp: 0= op (0 add, 1 sub, 2 mul, 3 div, 4 max, 5 min, 6 pow, 7 rsub, 8 rdiv,
    9 rpow, 10 atan2, 11 ratan2); 1= with_scalar, 2= the scalar."""

    REVERSED = {7: 1, 8: 3, 9: 6, 11: 10}

    def __init__(self, layer: NcnnLayer):
        super().__init__(layer)
        self.op = int(layer.get(0, 0))
        if not 0 <= self.op <= 11:
            raise _unsupported(layer, f"BinaryOp op_type {self.op}")
        self.scalar = float(layer.get(2, 0.0)) if int(layer.get(1, 0)) else None

    @staticmethod
    def _apply(op: int, a: Tensor, b: Tensor) -> Tensor:
        if op == 0:
            return a + b
        if op == 1:
            return a - b
        if op == 2:
            return a * b
        if op == 3:
            return a / b
        if op == 4:
            return torch.maximum(a, b)
        if op == 5:
            return torch.minimum(a, b)
        if op == 6:
            return torch.pow(a, b)
        return torch.atan2(a, b)

    def __call__(self, *xs: Tensor) -> Tensor:
        a = xs[0]
        b = torch.full_like(a, self.scalar) if self.scalar is not None else xs[1]
        if self.op in self.REVERSED:
            return self._apply(self.REVERSED[self.op], b, a)
        return self._apply(self.op, a, b)

    def shape(self, *shapes: Shape) -> Shape:
        return shapes[0] if self.scalar is not None else _broadcast(self.layer, *shapes[:2])


class _Eltwise(_Op):
    def __init__(self, layer: NcnnLayer):
        super().__init__(layer)
        self.op = int(layer.get(0, 0))
        if self.op not in (0, 1, 2):
            raise _unsupported(layer, f"Eltwise op_type {self.op}")
        self.coeffs = [float(c) for c in layer.get(1, [])]

    def __call__(self, *xs: Tensor) -> Tensor:
        if self.op == 1 and self.coeffs:
            terms = [x * c for x, c in zip(xs, self.coeffs)]
        else:
            terms = list(xs)
        out = terms[0]
        for t in terms[1:]:
            out = out * t if self.op == 0 else (out + t if self.op == 1 else torch.maximum(out, t))
        return out

    def shape(self, *shapes: Shape) -> Shape:
        return _broadcast(self.layer, *shapes)


class _Concat(_Op):
    def __init__(self, layer: NcnnLayer):
        super().__init__(layer)
        self.dim = _dim(layer, int(layer.get(0, 0)))

    def __call__(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, dim=self.dim + 1)

    def shape(self, *shapes: Shape) -> Shape:
        out = list(shapes[0])
        for s in shapes[1:]:
            if any(a != b for i, (a, b) in enumerate(zip(out, s)) if i != self.dim):
                raise _ShapeError(f"{self.label}: shapes {shapes} do not concatenate")
            out[self.dim] += s[self.dim]
        return tuple(out)  # type: ignore[return-value]


class _Crop(_Op):
    """ncnn Crop of a 3-D blob, both forms: numpy-style ``starts`` / ``ends`` / ``axes`` (arrays
    9, 10, 11; negative = from the end), or offsets (0= w, 1= h, 2= c) with the size of the
    reference blob (second bottom), or sizes ``3= / 4= / 5=`` (w / h / c; at most what is left
    after the offset; ``-233``: the rest less the far offsets ``6= / 7= / 8=``)."""

    def __init__(self, layer: NcnnLayer):
        super().__init__(layer)
        self.starts = [int(v) for v in layer.get(9, [])]
        self.ends = [int(v) for v in layer.get(10, [])]
        self.axes = [_dim(layer, int(a)) for a in layer.get(11, [])] or list(range(len(self.starts)))
        self.numpy_style = bool(self.starts) and bool(self.ends)
        if self.numpy_style and not (len(self.starts) == len(self.ends) == len(self.axes)):
            raise NcnnFormatError(f"{layer.describe()}: starts, ends and axes differ in length")
        self.offsets = (int(layer.get(2, 0)), int(layer.get(1, 0)), int(layer.get(0, 0)))  # c, h, w
        self.sizes = (int(layer.get(5, 0)), int(layer.get(4, 0)), int(layer.get(3, 0)))
        self.far = (int(layer.get(8, 0)), int(layer.get(7, 0)), int(layer.get(6, 0)))
        if -233 in self.offsets:
            raise _unsupported(layer, "a centred crop (offset -233)")
        if not self.numpy_style and len(layer.bottoms) == 1 and 0 in self.sizes:
            raise NcnnFormatError(
                f"{layer.describe()}: an offset crop needs every output size (3= w, "
                "4= h, 5= c; -233 = to the end); ncnn gives an empty blob for size 0"
            )

    def _spans(self, s: Shape, ref: Shape | None) -> list[tuple[int, int]]:
        spans = [(0, n) for n in s]
        if self.numpy_style:
            for axis, start, end in zip(self.axes, self.starts, self.ends):
                n = s[axis]
                lo = 0 if start == -233 else (start if start >= 0 else n + start)
                hi = n if end == -233 else min(n, end if end > 0 else n + end)
                spans[axis] = (lo, hi)
        else:
            for i, n in enumerate(s):
                off = self.offsets[i]
                if ref is not None:
                    length = ref[i]
                elif self.sizes[i] == -233:  # to the end, less the far offset
                    length = n - off - self.far[i]
                else:  # as ncnn: at most what is left; the far offset does not count
                    length = min(self.sizes[i], n - off)
                spans[i] = (off, off + length)
        for (lo, hi), n in zip(spans, s):
            if not 0 <= lo < hi <= n:
                raise _ShapeError(f"{self.label}: crop {spans} does not fit a blob of shape {s}")
        return spans

    def __call__(self, *xs: Tensor) -> Tensor:
        ref = tuple(xs[1].shape[1:]) if len(xs) > 1 else None
        (c0, c1), (h0, h1), (w0, w1) = self._spans(tuple(xs[0].shape[1:]), ref)  # type: ignore[arg-type]
        return xs[0][:, c0:c1, h0:h1, w0:w1]

    def shape(self, *shapes: Shape) -> Shape:
        spans = self._spans(shapes[0], shapes[1] if len(shapes) > 1 else None)
        return tuple(hi - lo for lo, hi in spans)  # type: ignore[return-value]


class _Interp(_Op):
    """ncnn Interp: 0= type (1 nearest, 2 bilinear, 3 bicubic), 1= / 2= h / w scale, 3= / 4= out h / w,
    5= size from the second bottom, 6= align_corner. From scales, the size is
    ``int(float32(n) * scale)`` and source coordinates map with ``1 / scale`` (torch's
    ``scale_factor``); from sizes, with ``in / out`` (torch's ``size``). Bicubic: A = -0.75 with
    clamped taps, as torch's."""

    MODES = {1: "nearest", 2: "bilinear", 3: "bicubic"}

    def __init__(self, layer: NcnnLayer):
        super().__init__(layer)
        kind = int(layer.get(0, 0))
        if kind not in self.MODES:
            raise _unsupported(layer, f"Interp resize_type {kind}")
        self.mode = self.MODES[kind]
        self.scales = (float(layer.get(1, 1.0)), float(layer.get(2, 1.0)))
        self.out = (int(layer.get(3, 0)), int(layer.get(4, 0)))
        self.dynamic = bool(int(layer.get(5, 0)))
        self.align = bool(int(layer.get(6, 0)))

    def _size(self, h: int, w: int, ref: Shape | None) -> tuple[int, int]:
        if ref is not None and self.dynamic:
            return ref[1], ref[2]
        if self.out[0] and self.out[1]:
            return self.out
        return (int(np.float32(h) * np.float32(self.scales[0])), int(np.float32(w) * np.float32(self.scales[1])))

    def __call__(self, *xs: Tensor) -> Tensor:
        x = xs[0]
        ref = tuple(xs[1].shape[1:]) if len(xs) > 1 else None
        size = self._size(x.shape[-2], x.shape[-1], ref)  # type: ignore[arg-type]
        corners = None if self.mode == "nearest" else self.align
        if ref is None and not (self.out[0] and self.out[1]) and not self.align:
            factors = tuple(float(np.float32(v)) for v in self.scales)
            y = F.interpolate(x, scale_factor=factors, mode=self.mode, align_corners=corners)
            if tuple(y.shape[-2:]) == size:
                return y
        return F.interpolate(x, size=size, mode=self.mode, align_corners=corners)

    def shape(self, *shapes: Shape) -> Shape:
        c, h, w = shapes[0]
        oh, ow = self._size(h, w, shapes[1] if len(shapes) > 1 else None)
        if oh <= 0 or ow <= 0:
            raise _ShapeError(f"{self.label}: output would be empty")
        return c, oh, ow


class _PixelShuffle(_Op):
    """0= upscale factor r; 1= mode: 0 channels ordered (c, r, r) as torch's pixel_shuffle, 1 (r, r, c)."""

    def __init__(self, layer: NcnnLayer):
        super().__init__(layer)
        self.r = int(layer.get(0, 1))
        self.mode = int(layer.get(1, 0))
        if self.mode not in (0, 1):
            raise _unsupported(layer, f"PixelShuffle mode {self.mode}")

    def __call__(self, *xs: Tensor) -> Tensor:
        x, r = xs[0], self.r
        if self.mode == 0:
            return F.pixel_shuffle(x, r)
        b, c, h, w = x.shape
        y = x.view(b, r, r, c // (r * r), h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(b, c // (r * r), h * r, w * r)

    def shape(self, *shapes: Shape) -> Shape:
        c, h, w = shapes[0]
        if c % (self.r * self.r):
            raise _ShapeError(f"{self.label}: {c} channels do not split into {self.r}x{self.r} blocks")
        return c // (self.r * self.r), h * self.r, w * self.r


class _Pooling(_Op):
    """Global max / average pooling (``4=1``), and unpadded max / average pooling; ncnn's padded
    and adaptive variants are refused."""

    def __init__(self, layer: NcnnLayer):
        super().__init__(layer)
        self.kind = int(layer.get(0, 0))
        if self.kind not in (0, 1):
            raise _unsupported(layer, f"Pooling type {self.kind}")
        self.global_pool = bool(int(layer.get(4, 0)))
        if self.global_pool:
            return
        if int(layer.get(7, 0)):
            raise _unsupported(layer, "adaptive pooling")
        self.kw = int(layer.get(1, 0))
        self.kh = int(layer.get(11, self.kw))
        self.sw = int(layer.get(2, 1))
        self.sh = int(layer.get(12, self.sw))
        left = int(layer.get(3, 0))
        pads = (left, int(layer.get(14, left)), int(layer.get(13, left)), int(layer.get(15, layer.get(13, left))))
        if any(pads):
            raise _unsupported(layer, "a padded Pooling")
        self.pad_mode = int(layer.get(5, 0))
        if self.pad_mode not in (0, 1):
            raise _unsupported(layer, f"Pooling pad_mode {self.pad_mode}")

    def _out(self, n: int, k: int, s: int) -> int:
        if n < k:
            raise _ShapeError(f"{self.label}: input {n} px is smaller than the window {k}")
        if self.pad_mode == 0 and (n - k) % s:  # ncnn's 'full' mode keeps a partial last window
            if self.kind == 1:
                raise _unsupported(self.layer, "average pooling over a partial last window")
            return (n - k) // s + 2
        return (n - k) // s + 1

    def __call__(self, *xs: Tensor) -> Tensor:
        x = xs[0]
        if self.global_pool:
            return torch.amax(x, dim=(2, 3), keepdim=True) if self.kind == 0 else x.mean(dim=(2, 3), keepdim=True)
        ceil = self.pad_mode == 0
        if self.kind == 0:
            return F.max_pool2d(x, (self.kh, self.kw), (self.sh, self.sw), ceil_mode=ceil)
        self.shape(tuple(x.shape[1:]))  # type: ignore[arg-type]  # refuses partial windows
        return F.avg_pool2d(x, (self.kh, self.kw), (self.sh, self.sw))

    def shape(self, *shapes: Shape) -> Shape:
        c, h, w = shapes[0]
        if self.global_pool:
            return c, 1, 1
        return c, self._out(h, self.kh, self.sh), self._out(w, self.kw, self.sw)


_WEIGHTLESS: dict[str, type] = {
    "BinaryOp": _Binary,
    "Concat": _Concat,
    "Crop": _Crop,
    "Eltwise": _Eltwise,
    "Interp": _Interp,
    "PixelShuffle": _PixelShuffle,
    "Pooling": _Pooling,
}


# --------------------------------------------------------------------------- the network
class NcnnNet(nn.Module):
    """An ncnn graph as a torch module.

    ``NcnnNet(graph)`` with an :class:`NcnnGraph` that holds weights uses them (no copy);
    ``NcnnNet(spec)`` with a spec dict (``graph.spec()`` / :meth:`spec`, JSON-able) builds the
    layers with uninitialised weights, for ``load_state_dict``. ``forward(x)`` maps the graph's
    single input blob ``(B, C, H, W)`` to its single output blob; :meth:`run` serves named blobs.
    """

    def __init__(self, spec: SpecLike):
        super().__init__()
        graph = spec if isinstance(spec, NcnnGraph) else NcnnGraph.from_spec(spec)
        self._spec = graph.spec()
        self.input_names: list[str] = graph.inputs
        self.output_names: list[str] = graph.outputs
        self.layers = nn.ModuleDict()
        self._plan: list[tuple[NcnnLayer, Any]] = []  # (layer, op): op a module key, an _Op, or None
        for layer in graph.layers:
            if layer.type in _WEIGHTED:
                key = _safe_name(layer.name)
                if key in self.layers:
                    key = f"{key}_{layer.index}"
                blobs = graph.weights.get(layer.name) if graph.weights else None
                if graph.weights and blobs is None and layer.type != "Scale":
                    raise NcnnFormatError(f"no weights for {layer.describe()}")
                self.layers[key] = _WEIGHTED[layer.type](layer, blobs)
                self._plan.append((layer, key))
            elif layer.type in _WEIGHTLESS:
                self._plan.append((layer, _WEIGHTLESS[layer.type](layer)))
            elif layer.type in ("Input", "Split"):
                self._plan.append((layer, None))
            else:  # from_spec checked the types; this guards hand-made graphs
                raise NcnnFormatError(f"unknown layer type {layer.type!r} at {layer.describe()}")
        self._last_use: dict[str, int] = {}  # blobs are dropped after their last reader
        for i, (layer, _) in enumerate(self._plan):
            for b in layer.bottoms:
                self._last_use[b] = i

    def spec(self) -> dict:
        """The graph without weights (JSON-able): ``NcnnNet(spec)`` + ``load_state_dict`` rebuild it."""
        return self._spec

    def config(self) -> dict:
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}", "spec": self._spec}

    def _op(self, op: Any) -> Any:
        return self.layers[op] if isinstance(op, str) else op

    def _walk(self, inputs: Mapping[str, Any], keep: set, apply: Callable[[Any, list], Any]) -> dict:
        blobs: dict[str, Any] = {}
        for i, (layer, op) in enumerate(self._plan):
            if layer.type == "Input":
                for top in layer.tops:
                    if top not in inputs:
                        raise KeyError(f"the graph needs input blob {top!r}")
                    blobs[top] = inputs[top]
                continue
            args = [blobs[b] for b in layer.bottoms]
            results = [args[0]] * len(layer.tops) if op is None else [apply(self._op(op), args)]
            for b in set(layer.bottoms):
                if self._last_use.get(b) == i and b not in keep:
                    del blobs[b]
            for top, value in zip(layer.tops, results):
                blobs[top] = value
        return blobs

    def run(self, inputs: Mapping[str, Tensor], outputs: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Run the graph on named input blobs ``(B, C, H, W)``; return the named output blobs."""
        want = list(outputs) if outputs is not None else self.output_names
        blobs = self._walk(inputs, set(want), lambda op, args: op(*args))
        missing = [name for name in want if name not in blobs]
        if missing:
            raise KeyError(f"the graph has no blob(s) {missing}")
        return {name: blobs[name] for name in want}

    def forward(self, x: Tensor) -> Tensor:
        if len(self.input_names) != 1 or len(self.output_names) != 1:
            raise RuntimeError(
                f"forward() serves graphs with one input and one output; this one has "
                f"inputs {self.input_names} and outputs {self.output_names}: use run()"
            )
        return self.run({self.input_names[0]: x})[self.output_names[0]]

    def output_shape(self, shape: Sequence[int]) -> Shape | None:
        """The output ``(C, H, W)`` for an input ``(C, H, W)``, or None where the graph cannot
        take it (a size its strides, crops and skips do not fit). Shapes only; no arithmetic."""
        if len(self.input_names) != 1 or len(self.output_names) != 1:
            raise RuntimeError("output_shape() serves graphs with one input and one output")
        c, h, w = (int(v) for v in shape)
        if min(c, h, w) < 1:
            return None
        try:
            blobs = self._walk(
                {self.input_names[0]: (c, h, w)}, set(self.output_names), lambda op, args: op.shape(*args)
            )
        except _ShapeError:
            return None
        return blobs[self.output_names[0]]


# --------------------------------------------------------------------------- geometry probe
@dataclass(frozen=True)
class Geometry:
    """How a graph's output size follows its input size (the same law on both axes).

    A size ``n`` is valid when ``n >= min_size`` and ``n % modulus == residue``; the output then
    has ``scale * n - shrink`` pixels. A graph that loses ``p`` input pixels at each border (valid
    convolutions) has ``shrink == 2 * scale * p``: ``prepad`` is that ``p``."""

    scale: int
    shrink: int
    modulus: int
    residue: int
    min_size: int

    @property
    def prepad(self) -> int:
        return -(-self.shrink // (2 * self.scale))

    def valid(self, n: int) -> bool:
        return n >= self.min_size and n % self.modulus == self.residue

    def next_valid(self, n: int) -> int:
        """The smallest valid size ``>= n``."""
        n = max(n, self.min_size)
        return n + (self.residue - n) % self.modulus

    def out_size(self, n: int) -> int:
        return self.scale * n - self.shrink

    def to_dict(self) -> dict:
        return {
            "scale": self.scale,
            "shrink": self.shrink,
            "modulus": self.modulus,
            "residue": self.residue,
            "min_size": self.min_size,
            "prepad": self.prepad,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Geometry:
        return cls(*(int(data[k]) for k in ("scale", "shrink", "modulus", "residue", "min_size")))


def probe_geometry(net: NcnnNet, channels: int = 3, limit: int = 256) -> Geometry:
    """Derive a graph's :class:`Geometry` from its own size arithmetic (:meth:`NcnnNet.output_shape`).

    Over square sizes ``1 .. limit``: ``scale`` is the output growth per input pixel (over 8-px
    steps, which span the residue classes of up to three stride-2 stages); ``shrink`` the smallest
    ``scale * n - out(n)``. The sizes that reach it are the valid ones: a size the stride-2 stages
    cannot halve evenly may still run, where a Crop trims the skip branch to fit, but it loses
    output pixels, so it shows a larger shrink. Every valid size from ``min_size`` up must reach it,
    and a non-square size must follow the same law on each axis.
    """

    def out(h: int, w: int) -> tuple[int, int] | None:
        s = net.output_shape((channels, h, w))
        return None if s is None else (s[1], s[2])

    outs = {n: out(n, n) for n in range(1, limit + 1)}
    sq = {n: o[0] for n, o in outs.items() if o is not None and o[0] == o[1]}
    steps = [sq[n + 8] - sq[n] for n in sq if n + 8 in sq]
    if not steps:
        raise NcnnFormatError(f"the graph accepts no square input up to {limit} px")
    step = max(set(steps), key=steps.count)
    if step <= 0 or step % 8:
        raise NcnnFormatError(
            f"the graph's output does not grow by an integer factor of its input (+8 px in -> {step:+d} px out)"
        )
    scale = step // 8
    shrinks = {n: scale * n - o for n, o in sq.items()}
    shrink = min(shrinks.values())
    valid = sorted(n for n, c in shrinks.items() if c == shrink)
    modulus = 0
    for a, b in zip(valid, valid[1:]):
        modulus = math.gcd(modulus, b - a)
    if not modulus:
        raise NcnnFormatError(f"the graph takes a single square size ({valid[0]} px) up to {limit} px")
    residue = valid[0] % modulus
    if shrink < 0 or (2 * scale * (-(-shrink // (2 * scale))) - shrink) % 2:
        raise NcnnFormatError(
            f"the graph loses {shrink} output pixels per axis, which no symmetric "
            "input padding makes up; its output cannot be aligned with its input"
        )
    min_size = valid[0]
    holes = [n for n in range(min_size, limit + 1, modulus) if shrinks.get(n) != shrink]
    if holes:
        raise NcnnFormatError(f"the graph's valid sizes do not form one residue class (size {holes[0]})")
    probe = min_size + 2 * modulus
    got = out(min_size, probe)
    want = (scale * min_size - shrink, scale * probe - shrink)
    if got != want:
        raise NcnnFormatError(
            f"the graph's two axes follow different size laws ({min_size}x{probe} -> {got}, expected {want})"
        )
    return Geometry(scale, shrink, modulus, residue, min_size)


# --------------------------------------------------------------------------- SR wrapper
class NcnnSR(nn.Module):
    """An ncnn SR / restoration graph as a cem_lab model: ``(B, 3, H, W)`` RGB in [0, 1] ->
    ``(B, 3, scale H, scale W)``, pixel-aligned with the input, for any ``H, W >= 1``.

    Around the graph it does what the original ncnn applications do:

    1. ``x * a + b`` with ``input_affine = (a, b)``, the output mapped back by the inverse:
       ``(1, 0)`` for all families but Real-CUGAN "pro", which takes ``0.7 x + 0.15`` (see
       :func:`~cem_lab.models.ncnn_convert.family_input_affine`).
    2. Prepadding: graphs of valid (unpadded) convolutions (waifu2x upconv_7 and CUNet,
       Real-CUGAN) lose ``prepad`` input pixels at each border. waifu2x-ncnn-vulkan and
       realcugan-ncnn-vulkan pad each tile by that much (upconv_7: 7; CUNet: 18 at x2, 28 at x1;
       Real-CUGAN: 18 / 14 / 19 at x2 / x3 / x4), reading the image with clamped coordinates,
       which is edge replication; the crop of the output is then exactly ``scale * (H, W)``.
       Here ``prepad`` is derived from the graph (:func:`probe_geometry`; it equals those
       constants). ``pad_mode`` is ``replicate`` by default (Real-CUGAN's own PyTorch inference
       uses ``reflect``). Graphs of zero-padded convolutions (Real-ESRGAN, RealSR, animevideov3)
       have ``prepad = 0``: their apps' 10-px tile overlap only matters between tiles.
    3. Extra bottom / right replication up to a size the graph takes (the stride-2 stages of
       CUNet and Real-CUGAN need padded sizes in one residue class, e.g. even), cropped off again.
    4. ``residual``: None, or how to upsample the input that is added to the output of a graph
       that returns a residual (Real-CUGAN x4: ``"nearest"``, which its application adds).
    5. ``clamp`` (default on) clips the output to [0, 1], as the apps' conversion to 8 bits does.

    Channel order RGB and range [0, 1], as the apps feed these graphs (a 0..255 range or swapped
    output channels give far lower PSNR against a bicubic upscale).

    Global pooling (the SE blocks of CUNet and Real-CUGAN) makes every output pixel depend on the
    whole (padded) input, so those models are not local.
    """

    def __init__(
        self,
        net: NcnnNet | SpecLike,
        geometry: Geometry | Mapping[str, Any],
        input_affine: Sequence[float] = (1.0, 0.0),
        pad_mode: str = "replicate",
        clamp: bool = True,
        residual: str | None = None,
        in_channels: int = 3,
        out_channels: int = 3,
    ):
        super().__init__()
        self.net = net if isinstance(net, NcnnNet) else NcnnNet(net)
        self.geometry = geometry if isinstance(geometry, Geometry) else Geometry.from_dict(geometry)
        self.scale = int(self.geometry.scale)
        self.prepad = int(self.geometry.prepad)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.input_affine = (float(input_affine[0]), float(input_affine[1]))
        if self.input_affine[0] == 0:
            raise ValueError("input_affine needs a non-zero factor")
        if pad_mode not in ("replicate", "reflect", "constant"):
            raise ValueError(f"pad_mode must be replicate, reflect or constant, got {pad_mode!r}")
        self.pad_mode = pad_mode
        self.clamp = bool(clamp)
        if residual not in (None, "nearest", "bicubic"):
            raise ValueError(f"residual must be None, 'nearest' or 'bicubic', got {residual!r}")
        self.residual = residual

    def config(self) -> dict:
        """The keyword arguments that rebuild this wrapper (with a state dict for the weights)."""
        return {
            "_target_": f"{type(self).__module__}.{type(self).__qualname__}",
            "net": self.net.spec(),
            "geometry": self.geometry.to_dict(),
            "input_affine": list(self.input_affine),
            "pad_mode": self.pad_mode,
            "clamp": self.clamp,
            "residual": self.residual,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
        }

    def graph_size(self, h: int, w: int) -> tuple[int, int]:
        """The size of the graph's input for an ``h x w`` image."""
        p, g = self.prepad, self.geometry
        return g.next_valid(h + 2 * p), g.next_valid(w + 2 * p)

    # prepare / finish are public so the ncnn runtime check uses the identical pre- and post-processing
    def prepare(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """The graph's input for the images ``x`` (affine, padding), and ``(H, W)`` for :meth:`finish`."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected a (B, {self.in_channels}, H, W) batch, got {tuple(x.shape)}")
        h, w = int(x.shape[-2]), int(x.shape[-1])
        a, b = self.input_affine
        if (a, b) != (1.0, 0.0):
            x = x * a + b
        p = self.prepad
        gh, gw = self.graph_size(h, w)
        pads = (p, gw - w - p, p, gh - h - p)
        return (self._pad(x, pads) if any(pads) else x), (h, w)

    def _pad(self, x: Tensor, pads: tuple[int, int, int, int]) -> Tensor:
        if self.pad_mode != "reflect":
            return F.pad(x, pads, mode=self.pad_mode)
        left, right, top, bottom = pads  # reflect takes pads < size: reflect what fits, replicate on
        h, w = x.shape[-2:]
        fit = (min(left, w - 1), min(right, w - 1), min(top, h - 1), min(bottom, h - 1))
        x = F.pad(x, fit, mode="reflect")
        rest = tuple(p - f for p, f in zip(pads, fit))
        return F.pad(x, rest, mode="replicate") if any(rest) else x

    def finish(self, y: Tensor, size: tuple[int, int], x: Tensor | None = None) -> Tensor:
        """The graph's output cropped to ``scale * (H, W)``, the affine undone, plus the upsampled
        input ``x`` for a residual graph, clamped."""
        h, w = size
        g = self.geometry
        off = (2 * g.scale * self.prepad - g.shrink) // 2  # 0 when the shrink is 2 * scale * prepad
        y = y[..., off : off + self.scale * h, off : off + self.scale * w]
        a, b = self.input_affine
        if (a, b) != (1.0, 0.0):
            y = (y - b) / a
        if self.residual is not None:
            if x is None:
                raise ValueError("a residual graph's finish() needs the input images")
            if self.residual == "nearest":
                up = F.interpolate(x, scale_factor=self.scale, mode="nearest") if self.scale > 1 else x
            else:
                up = F.interpolate(x, size=(self.scale * h, self.scale * w), mode="bicubic", align_corners=False)
            y = y + up
        return y.clamp(0.0, 1.0) if self.clamp else y

    def forward(self, x: Tensor) -> Tensor:
        padded, size = self.prepare(x)
        return self.finish(self.net(padded), size, x)
