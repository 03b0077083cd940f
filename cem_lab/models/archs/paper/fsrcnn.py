"""FSRCNN as the CEM authors built it: C. Dong, C. C. Loy and X. Tang, "Accelerating the Super-Resolution
Convolutional Neural Network", ECCV 2016.

Reproduces the state-dict layout of ``FSRCNN`` in the CEM repository's ``CEM_Demo/ModelZoo/NN/fsrcnn.py``
(``MODEL_LIST`` names ``FSRCNN`` and ``FSRCNN-W-D``), so that their checkpoints load unchanged.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

__all__ = ["FSRCNN"]


class FSRCNN(nn.Module):
    """FSRCNN (Dong et al., ECCV 2016) in the layout of the CEM authors' ``fsrcnn.FSRCNN``.

    * ``first_part``: 5x5 conv ``num_channels``->``d`` + PReLU(``d``) (one slope per channel);
    * ``mid_part``: shrink 1x1 ``d``->``s`` + PReLU(``s``), ``m`` x (3x3 ``s``->``s`` + PReLU(``s``)),
      expand 1x1 ``s``->``d`` + PReLU(``d``); keys ``mid_part.{2i}`` (conv) / ``mid_part.{2i+1}`` (PReLU);
    * ``last_part``: a 9x9 transposed convolution ``d``->``num_channels`` with stride ``scale_factor``,
      padding 4 and output padding ``scale_factor - 1``, so the output is exactly ``scale_factor`` times
      the input (its weight is stored in x out: ``[d, num_channels, 9, 9]``).

    No residual, no mean shift. In the authors' ``MODEL_LIST``, ``FSRCNN-W-D`` is ``FSRCNN(s=W, m=D)``
    with ``d`` = 56: W is the shrink (mapping) width, not the feature width; plain ``FSRCNN`` is
    ``d=56, s=12, m=4`` (24,683 parameters).

    Args:
        scale_factor: upscaling factor (stride of the transposed convolution; 4 in the paper's zoo).
        num_channels: image channels.
        d: feature width of the first and the expanding layers.
        s: shrink width, the width of the mapping layers.
        m: number of 3x3 mapping layers.

    Input: RGB float in [0, 1], ``(N, num_channels, H, W)``, any H and W.
    Output: ``(N, num_channels, scale_factor * H, scale_factor * W)``, not clamped.
    """

    #: upscaling factor of the default build (the instance's own is set from ``scale_factor``)
    scale: int = 4
    #: input sides need no multiple
    size_multiple: int = 1

    def __init__(self, scale_factor: int = 4, num_channels: int = 3, d: int = 56, s: int = 12, m: int = 4):
        super().__init__()
        self.scale = int(scale_factor)
        self.first_part = nn.Sequential(nn.Conv2d(num_channels, d, kernel_size=5, padding=2), nn.PReLU(d))
        mid: list[nn.Module] = [nn.Conv2d(d, s, kernel_size=1), nn.PReLU(s)]
        for _ in range(m):
            mid += [nn.Conv2d(s, s, kernel_size=3, padding=1), nn.PReLU(s)]
        mid += [nn.Conv2d(s, d, kernel_size=1), nn.PReLU(d)]
        self.mid_part = nn.Sequential(*mid)
        self.last_part = nn.ConvTranspose2d(
            d, num_channels, kernel_size=9, stride=self.scale, padding=4, output_padding=self.scale - 1
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # the paper's initialisation, as in the authors' class: zero-mean Gaussians with std
        # sqrt(2 / (out_channels * k * k)) for the convolutions, std 1e-3 for the deconvolution, zero biases
        # (only a fresh network sees this; a checkpoint overwrites it)
        for layer in [*self.first_part, *self.mid_part]:
            if isinstance(layer, nn.Conv2d):
                fan_out = layer.out_channels * layer.kernel_size[0] * layer.kernel_size[1]
                nn.init.normal_(layer.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
                nn.init.zeros_(layer.bias)
        nn.init.normal_(self.last_part.weight, mean=0.0, std=1e-3)
        nn.init.zeros_(self.last_part.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Extract, shrink, map, expand, and deconvolve to ``scale_factor`` times the input size."""
        return self.last_part(self.mid_part(self.first_part(x)))
