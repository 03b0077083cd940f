"""SRResNet: C. Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative
Adversarial Network", CVPR 2017; here without batch norm, as MSRResNet in X. Wang et al., "ESRGAN:
Enhanced Super-Resolution Generative Adversarial Networks", ECCV Workshops 2018.

Conventions shared by all architectures (scale, pre/post upsampling, global residual) are in
:mod:`cem_lab.models.archs.common`.
"""

from __future__ import annotations

from torch import Tensor, nn

from cem_lab.models.archs.common import PixelShuffleUpsampler, ResBlock, _conv, _int_arg, _RestorationNet

__all__ = ["SRResNet"]


class SRResNet(_RestorationNet):
    """MSRResNet-style SRResNet (Ledig et al., 2017; no batch norm, as in ESRGAN's MSRResNet).

    conv + LeakyReLU head, ``depth`` residual blocks (conv-ReLU-conv), pixel-shuffle upsampling
    with LeakyReLU after each stage, HR conv + LeakyReLU, output conv, plus the bilinearly
    upsampled input (``bicubic`` in ``pre`` mode).

    Args:
        width: feature channels.
        depth: residual blocks.
        scale: 1, 2, 3 or 4.
        upsampling: ``"post"`` or ``"pre"``.
    """

    _post_residual = True
    _post_residual_mode = "bilinear"

    def __init__(self, width: int = 64, depth: int = 16, scale: int = 4, upsampling: str = "post"):
        super().__init__()
        name = type(self).__name__
        width = _int_arg(name, "width", width)
        depth = _int_arg(name, "depth", depth, minimum=0)
        self._setup(scale, upsampling, {"width": width, "depth": depth})

        def lrelu() -> nn.Module:
            return nn.LeakyReLU(0.1, inplace=True)

        self.head = nn.Sequential(_conv(3, width), lrelu())
        self.body = nn.Sequential(*[ResBlock(width) for _ in range(depth)])
        self.upsampler = PixelShuffleUpsampler(width, self.body_scale, act=lrelu)
        self.hr_conv = nn.Sequential(_conv(width, width), lrelu())
        self.last = _conv(width, 3)

    def _run(self, x: Tensor) -> Tensor:
        feat = self.body(self.head(x))
        return self.last(self.hr_conv(self.upsampler(feat)))
