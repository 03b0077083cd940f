"""Execute ncnn graphs with torch ops: :class:`NcnnNet`, and the SR application wrapper :class:`NcnnSR`.

:class:`NcnnNet` runs the layers of an :class:`~cem_lab.models.ncnn.format.NcnnGraph` in file
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from cem_lab.errors import InputError
from cem_lab.models.ncnn.format import NcnnFormatError, NcnnGraph, NcnnLayer
from cem_lab.models.ncnn.layers import _WEIGHTED, Shape, _safe_name, _ShapeError
from cem_lab.models.ncnn.ops import _WEIGHTLESS

__all__ = ["Geometry", "NcnnNet", "NcnnSR", "probe_geometry"]

SpecLike = NcnnGraph | Mapping[str, Any]


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
        """``{"_target_": <this class>, "spec": ...}``: the config that rebuilds the net (weights apart)."""
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
        """The output blob for the input blob ``x``, for a one-input one-output graph (RuntimeError else: use run)."""
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
        """Input pixels lost at each border: ``ceil(shrink / (2 * scale))``."""
        return -(-self.shrink // (2 * self.scale))

    def valid(self, n: int) -> bool:
        """Whether the graph accepts an input side of ``n`` pixels."""
        return n >= self.min_size and n % self.modulus == self.residue

    def next_valid(self, n: int) -> int:
        """The smallest valid size ``>= n``."""
        n = max(n, self.min_size)
        return n + (self.residue - n) % self.modulus

    def out_size(self, n: int) -> int:
        """Output side for an input side of ``n`` pixels."""
        return self.scale * n - self.shrink

    def to_dict(self) -> dict:
        """The geometry as a JSON-able dict, ``prepad`` included."""
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
        """The geometry of :meth:`to_dict`."""
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
       :func:`~cem_lab.models.ncnn.convert.family_input_affine`).
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
            raise InputError("input_affine needs a non-zero factor")
        if pad_mode not in ("replicate", "reflect", "constant"):
            raise InputError(f"pad_mode must be replicate, reflect or constant, got {pad_mode!r}")
        self.pad_mode = pad_mode
        self.clamp = bool(clamp)
        if residual not in (None, "nearest", "bicubic"):
            raise InputError(f"residual must be None, 'nearest' or 'bicubic', got {residual!r}")
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
            raise InputError(f"expected a (B, {self.in_channels}, H, W) batch, got {tuple(x.shape)}")
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
                raise InputError("a residual graph's finish() needs the input images")
            if self.residual == "nearest":
                up = F.interpolate(x, scale_factor=self.scale, mode="nearest") if self.scale > 1 else x
            else:
                up = F.interpolate(x, size=(self.scale * h, self.scale * w), mode="bicubic", align_corners=False)
            y = y + up
        return y.clamp(0.0, 1.0) if self.clamp else y

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, C, scale*H, scale*W): :meth:`prepare`, the graph, then :meth:`finish`."""
        padded, size = self.prepare(x)
        return self.finish(self.net(padded), size, x)
