"""SRCNN as the CEM authors built it: C. Dong, C. C. Loy, K. He and X. Tang, "Learning a Deep Convolutional
Network for Image Super-Resolution", ECCV 2014 (journal version: "Image Super-Resolution Using Deep
Convolutional Networks", IEEE TPAMI 2016).

Reproduces the state-dict layout of ``SRCNN`` in the CEM repository's ``CEM_Demo/ModelZoo/NN/srcnn.py``
(``MODEL_LIST`` name ``SRCNN``), so that its checkpoint ``SRCNN_15000.pth`` loads unchanged.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SRCNN"]


class SRCNN(nn.Module):
    """SRCNN (Dong et al., ECCV 2014 / TPAMI 2016) in the layout of the CEM authors' ``srcnn.SRCNN``.

    The network upsamples **inside** its forward: bicubic ``F.interpolate`` by ``factors`` with
    ``align_corners=True`` (not the ``align_corners=False`` of MATLAB-like resizing), then three
    'same'-padded convolutions with bias: 9x9 ``num_channels``->64 + ReLU, 5x5 64->32 + ReLU,
    5x5 32->``num_channels``. No residual, no mean shift, no clamping.

    State-dict keys: ``conv1``, ``conv2``, ``conv3`` (``.weight``, ``.bias``); 69,251 parameters for
    3 channels.

    Args:
        num_channels: image channels (the authors' ``get_model`` passes 3; their class default is 1).
        factors: the upscaling factor of the built-in bicubic interpolation (4 in the paper's zoo).

    Input: RGB float in [0, 1], ``(N, num_channels, H, W)``, any H and W.
    Output: ``(N, num_channels, factors * H, factors * W)``, not clamped.
    """

    #: upscaling factor of the default build (the instance's own is set from ``factors``)
    scale: int = 4
    #: input sides need no multiple
    size_multiple: int = 1

    def __init__(self, num_channels: int = 3, factors: int = 4):
        super().__init__()
        self.scale = int(factors)
        self.factors = int(factors)
        self.conv1 = nn.Conv2d(num_channels, 64, kernel_size=9, padding=4)
        self.conv2 = nn.Conv2d(64, 32, kernel_size=5, padding=2)
        self.conv3 = nn.Conv2d(32, num_channels, kernel_size=5, padding=2)

    def forward(self, x: Tensor) -> Tensor:
        """Bicubic-upsample ``x`` by ``factors`` and refine it with the three convolutions."""
        x = F.interpolate(x, scale_factor=self.factors, mode="bicubic", align_corners=True)
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.conv3(x)
