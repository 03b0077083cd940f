"""EDSR: B. Lim, S. Son, H. Kim, S. Nah and K. M. Lee, "Enhanced Deep Residual Networks for Single
Image Super-Resolution", CVPR Workshops (NTIRE) 2017.

Conventions shared by all architectures (scale, pre/post upsampling, global residual) are in
:mod:`cem_lab.models.archs.common`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cem_lab.models.archs.common import (
    PixelShuffleUpsampler,
    ResBlock,
    _bool_arg,
    _conv,
    _int_arg,
    _positive_float_arg,
    _RestorationNet,
)

__all__ = ["DIV2K_MEAN", "EDSR"]

#: DIV2K RGB mean, used by EDSR's optional mean shift
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class EDSR(_RestorationNet):
    """EDSR (Lim et al., 2017): head conv, ``depth`` residual blocks, body conv + long skip,
    pixel-shuffle upsampler, tail conv.

    Args:
        width: feature channels.
        depth: residual blocks (each adds 2 pixels of receptive-field radius).
        res_scale: residual scaling (0.1 in the large EDSR).
        scale: 1, 2, 3 or 4.
        upsampling: ``"post"`` or ``"pre"``.
        mean_shift: subtract the DIV2K RGB mean before the network and add it back after.
        global_residual: in ``post`` mode at scale > 1, add the bicubic-upsampled input.
    """

    def __init__(
        self,
        width: int = 64,
        depth: int = 16,
        res_scale: float = 1.0,
        scale: int = 4,
        upsampling: str = "post",
        mean_shift: bool = False,
        global_residual: bool = False,
    ):
        super().__init__()
        name = type(self).__name__
        width = _int_arg(name, "width", width)
        depth = _int_arg(name, "depth", depth, minimum=0)
        res_scale = _positive_float_arg(name, "res_scale", res_scale)
        mean_shift = _bool_arg(name, "mean_shift", mean_shift)
        self._setup(
            scale,
            upsampling,
            {"width": width, "depth": depth, "res_scale": res_scale, "mean_shift": mean_shift},
            global_residual,
        )
        self.mean_shift = mean_shift
        self.register_buffer("rgb_mean", torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = _conv(3, width)
        self.body = nn.Sequential(*[ResBlock(width, res_scale) for _ in range(depth)], _conv(width, width))
        self.upsampler = PixelShuffleUpsampler(width, self.body_scale)
        self.tail = _conv(width, 3)

    def _run(self, x: Tensor) -> Tensor:
        if self.mean_shift:
            x = x - self.rgb_mean
        feat = self.head(x)
        feat = feat + self.body(feat)
        out = self.tail(self.upsampler(feat))
        # with a global image residual the output is a residual: the mean must not come back
        if self.mean_shift and not self.residual:
            out = out + self.rgb_mean
        return out
