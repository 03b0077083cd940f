"""Map converted ncnn graphs onto spandrel's own architectures, by weight order and shape.

* Real-ESRGAN x4plus / x4plus-anime and RealSR DF2K are ESRGAN's RRDBNet
  (``spandrel.architectures.ESRGAN.ESRGAN``, spandrel's RRDBNet: a first conv, ``num_blocks`` RRDBs of three
  5-conv dense blocks with 0.2 residual scaling, a trunk conv, nearest x2 upsampling + conv
  stages, two HR convs; LeakyReLU 0.2).
* Real-ESRGAN animevideov3 is SRVGGNetCompact (``spandrel.architectures.Compact.Compact``, spandrel's SRVGGNetCompact:
  conv + PReLU pairs, a conv to ``3 * r * r`` channels, PixelShuffle(r), plus the nearest-upsampled
  input). Its UP2X and UP3X graphs are the same x4 network followed by a bicubic downscale
  (Interp 0.5 / 0.75); :func:`to_spandrel` returns those as :class:`Rescaled` around the x4 model.

:func:`to_spandrel` infers the hyperparameters from the graph, copies the weights in graph order
(every shape must match) and, with ``check=True``, compares the spandrel module with the
:class:`~cem_lab.models.ncnn.net.NcnnNet` on a seeded random input.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cem_lab.models.checkpoint import CheckpointError
from cem_lab.models.ncnn.format import NcnnGraph, NcnnLayer
from cem_lab.models.ncnn.net import NcnnNet, NcnnSR

__all__ = ["Rescaled", "SpandrelMappingError", "infer_architecture", "to_spandrel"]


class SpandrelMappingError(CheckpointError):
    """The graph does not map onto a spandrel architecture."""


class Rescaled(nn.Module):
    """``model`` followed by a bicubic resize of its output to ``scale`` times the input size."""

    def __init__(self, model: nn.Module, scale: int):
        super().__init__()
        self.model = model
        self.scale = int(scale)

    def forward(self, x: Tensor) -> Tensor:
        """``model(x)`` resized (bicubic) to ``scale`` x the input size."""
        h, w = x.shape[-2:]
        return F.interpolate(self.model(x), size=(self.scale * h, self.scale * w), mode="bicubic", align_corners=False)


def _layers(net: NcnnNet) -> list[NcnnLayer]:
    return NcnnGraph.from_spec(net.spec()).layers


def infer_architecture(net: NcnnNet) -> tuple[str, dict, int | None]:
    """``(architecture, keyword arguments, final rescale or None)`` for a graph spandrel has."""
    layers = _layers(net)
    types = [layer.type for layer in layers]
    convs = [layer for layer in layers if layer.type == "Convolution"]
    if not convs:
        raise SpandrelMappingError("the graph has no convolutions")

    def cin(layer: NcnnLayer) -> int:
        k = int(layer.get(1)) * int(layer.get(11, layer.get(1)))
        return int(layer.get(6)) // (int(layer.get(0)) * k)

    in_nc, feat, out_last = cin(convs[0]), int(convs[0].get(0)), int(convs[-1].get(0))
    if "PReLU" in types and "PixelShuffle" in types and "Concat" not in types:
        shuffles = [layer for layer in layers if layer.type == "PixelShuffle"]
        r = int(shuffles[0].get(0))
        if out_last % (r * r):
            raise SpandrelMappingError(f"last conv has {out_last} channels, not a multiple of {r}x{r}")
        kwargs = {
            "num_in_ch": in_nc,
            "num_out_ch": out_last // (r * r),
            "num_feat": feat,
            "num_conv": len(convs) - 2,
            "upscale": r,
            "act_type": "prelu",
        }
        interps = [layer for layer in layers if layer.type == "Interp"]
        rescale = None
        if len(interps) == 2 and int(interps[-1].get(0)) == 3:  # the x4 net, then a bicubic downscale
            factor = float(interps[-1].get(2, 1.0)) * r
            if abs(factor - round(factor)) > 1e-6:
                raise SpandrelMappingError(f"final Interp gives a non-integer scale {factor}")
            rescale = int(round(factor))
        return "SRVGGNetCompact", kwargs, rescale
    if "Concat" in types and "Eltwise" in types:
        ups = [layer for layer in layers if layer.type == "Interp" and int(layer.get(0)) == 1]
        scale = 2 ** len(ups)
        body = len(convs) - 4 - len(ups)  # less the first, trunk, upsampling and two HR convs
        if body <= 0 or body % 15:
            raise SpandrelMappingError(f"{len(convs)} convolutions do not make an RRDBNet")
        kwargs = {"in_nc": in_nc, "out_nc": out_last, "num_filters": feat, "num_blocks": body // 15, "scale": scale}
        return "RRDBNet", kwargs, None
    raise SpandrelMappingError("the graph is neither an RRDBNet (ESRGAN) nor an SRVGGNetCompact")


def _build(arch: str, kwargs: dict) -> nn.Module:
    if arch == "RRDBNet":
        # lazy: spandrel imports torchvision (about 1.4 s); spandrel's name for RRDBNet
        from spandrel.architectures.ESRGAN import ESRGAN

        return ESRGAN(**kwargs)
    # lazy: spandrel imports torchvision (about 1.4 s); spandrel's name for SRVGGNetCompact
    from spandrel.architectures.Compact import Compact

    return Compact(**kwargs)


def to_spandrel(model: NcnnNet | NcnnSR, check: bool = True, check_size: int = 16, atol: float = 1e-4) -> nn.Module:
    """The spandrel module (in eval mode) holding the weights of a converted graph.

    ``check``: compare it with the ncnn port on a seeded ``check_size`` px random input; a max
    |diff| above ``atol`` raises :class:`SpandrelMappingError`.
    """
    net = model.net if isinstance(model, NcnnSR) else model
    arch, kwargs, rescale = infer_architecture(net)
    target = _build(arch, kwargs)
    src = list(net.state_dict().values())
    dst = target.state_dict()
    if len(src) != len(dst):
        raise SpandrelMappingError(f"{arch}({kwargs}) has {len(dst)} tensors, the graph {len(src)}")
    mapped: dict[str, Any] = {}
    for (key, want), have in zip(dst.items(), src):
        if tuple(want.shape) != tuple(have.shape):
            raise SpandrelMappingError(
                f"{arch}: {key} has shape {tuple(want.shape)}, the graph's tensor {len(mapped)} has {tuple(have.shape)}"
            )
        mapped[key] = have.detach().clone()
    target.load_state_dict(mapped, strict=True)
    out: nn.Module = Rescaled(target, rescale) if rescale is not None else target
    out.eval()
    if check:
        x = torch.rand(
            1,
            kwargs.get("in_nc", kwargs.get("num_in_ch", 3)),
            check_size,
            check_size,
            generator=torch.Generator().manual_seed(0),
        )
        with torch.no_grad():
            diff = float((out(x) - net(x)).abs().max())
        if not math.isfinite(diff) or diff > atol:
            raise SpandrelMappingError(f"spandrel {arch} differs from the ncnn port by {diff:.3g} (> {atol})")
    return out
