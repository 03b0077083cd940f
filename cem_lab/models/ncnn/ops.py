"""The weightless ncnn layers (BinaryOp, Eltwise, Concat, Crop, Interp, PixelShuffle, Pooling, ...) as
callables that also know their output shape.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cem_lab.models.ncnn.format import NcnnFormatError, NcnnLayer
from cem_lab.models.ncnn.layers import Shape, _broadcast, _ShapeError, _unsupported


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
