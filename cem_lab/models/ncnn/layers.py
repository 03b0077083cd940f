"""The weighted ncnn layers as torch modules (Convolution, Deconvolution, InnerProduct, PReLU, Scale), and
the helpers every layer shares (fused activations, kernel / padding parameters, output sizes).

Parameter shapes are torch's (see :mod:`cem_lab.models.ncnn.net`); the weightless layers are in
:mod:`cem_lab.models.ncnn.ops`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cem_lab.models.ncnn.format import NcnnFormatError, NcnnLayer

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
