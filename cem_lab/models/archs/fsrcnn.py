"""FSRCNN: C. Dong, C. C. Loy and X. Tang, "Accelerating the Super-Resolution Convolutional Neural
Network", ECCV 2016.

Conventions shared by all architectures (scale, pre/post upsampling, global residual) are in
:mod:`cem_lab.models.archs.common`.
"""

from __future__ import annotations

from torch import Tensor, nn

from cem_lab.models.archs.common import _conv, _int_arg, _RestorationNet

__all__ = ["FSRCNN"]


class FSRCNN(_RestorationNet):
    """FSRCNN (Dong et al., 2016): extract 5x5 -> shrink 1x1 -> ``depth`` x mapping 3x3 -> expand 1x1.

    PReLU after every conv but the last. The 9x9 stride-``scale`` deconvolution of the paper is
    replaced by its sub-pixel equivalent: a 3x3 conv to ``3 * scale**2`` channels + one
    PixelShuffle(scale) (a plain 3x3 conv at scale 1 or in ``pre`` mode).

    Args:
        width: d, the feature width.
        shrink: s, the mapping width.
        depth: m, the number of 3x3 mapping layers (each adds 1 pixel of receptive-field radius).
        scale: 1, 2, 3 or 4.
        upsampling: ``"post"`` or ``"pre"``.
        global_residual: in ``post`` mode at scale > 1, add the bicubic-upsampled input.
    """

    def __init__(
        self,
        width: int = 56,
        shrink: int = 12,
        depth: int = 4,
        scale: int = 4,
        upsampling: str = "post",
        global_residual: bool = False,
    ):
        super().__init__()
        name = type(self).__name__
        width = _int_arg(name, "width", width)
        shrink = _int_arg(name, "shrink", shrink)
        depth = _int_arg(name, "depth", depth, minimum=0)
        self._setup(scale, upsampling, {"width": width, "shrink": shrink, "depth": depth}, global_residual)
        layers: list[nn.Module] = [_conv(3, width, 5), nn.PReLU(width), _conv(width, shrink, 1), nn.PReLU(shrink)]
        for _ in range(depth):
            layers += [_conv(shrink, shrink, 3), nn.PReLU(shrink)]
        layers += [_conv(shrink, width, 1), nn.PReLU(width)]
        self.features = nn.Sequential(*layers)
        s = self.body_scale
        self.last = nn.Sequential(_conv(width, 3 * s * s, 3), nn.PixelShuffle(s))
        # the paper's initialisation: He (MSRA) for the PReLU layers, a small Gaussian for the
        # reconstruction layer. PyTorch's default keeps only about a third of the variance per
        # layer, so a deep mapping stack (depth 16) starts with a vanishing signal and does not train.
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.25, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.last[0].weight, std=1e-3)
        nn.init.zeros_(self.last[0].bias)

    def _run(self, x: Tensor) -> Tensor:
        return self.last(self.features(x))
