"""LapSRN as the CEM authors built it: W.-S. Lai, J.-B. Huang, N. Ahuja and M.-H. Yang, "Deep Laplacian
Pyramid Networks for Fast and Accurate Super-Resolution", CVPR 2017.

Reproduces the state-dict layout of ``Net`` in the CEM repository's ``CEM_Demo/ModelZoo/NN/lapsrn.py``
(``MODEL_LIST`` name ``LapSRN``; a x4 network of two x2 pyramid levels), so that its checkpoint loads
unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LapSRN"]

#: 3x3 convolutions per feature-extraction level
_CONVS_PER_LEVEL = 10
#: feature channels
_WIDTH = 64
#: LeakyReLU slope
_SLOPE = 0.2


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False)


def _deconv_x2(channels: int) -> nn.ConvTranspose2d:
    # kernel 4, stride 2, padding 1: (H - 1) * 2 - 2 + 4 = exactly 2H
    return nn.ConvTranspose2d(channels, channels, kernel_size=4, stride=2, padding=1, bias=False)


def bilinear_kernel(size: int) -> Tensor:
    """The ``size`` x ``size`` bilinear-interpolation kernel of a transposed convolution (the FCN recipe)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1.0 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return torch.outer(ramp, ramp).float()


class _FeatureLevel(nn.Module):
    """One pyramid level's feature branch: 10 x (conv3 + LReLU), then a x2 deconvolution + LReLU.

    Kept in one ``cov_block`` Sequential (keys ``cov_block.0 … cov_block.20``, the deconvolution last) as in
    the authors' layout.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(_CONVS_PER_LEVEL):
            layers += [_conv3(_WIDTH, _WIDTH), nn.LeakyReLU(_SLOPE)]
        layers += [_deconv_x2(_WIDTH), nn.LeakyReLU(_SLOPE)]
        self.cov_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.cov_block(x)


class LapSRN(nn.Module):
    """LapSRN (Lai et al., CVPR 2017) in the layout of the CEM authors' ``lapsrn.Net``.

    No convolution has a bias. ``conv_input`` conv3 ``num_channels``->64 + LReLU(0.2); then two x2 levels
    k = 1, 2, each with

    * ``convt_F{k}.0``: feature branch on the previous level's features (10 x (conv3 64->64 + LReLU(0.2)),
      ``ConvTranspose2d(64, 64, 4, stride 2, padding 1)`` + LReLU(0.2));
    * ``convt_R{k}``: conv3 64->``num_channels`` on those features, the residual image;
    * ``convt_I{k}``: ``ConvTranspose2d(num_channels, num_channels, 4, stride 2, padding 1)`` on the image
      (the input at level 1, level 1's output at level 2);

    and level k's output is ``convt_I{k}(image) + convt_R{k}(features)``. Only the x4 image is returned.
    873,824 parameters for 3 channels.

    Args:
        num_channels: image channels.

    Input: RGB float in [0, 1], ``(N, num_channels, H, W)``, any H and W.
    Output: ``(N, num_channels, 4H, 4W)``, not clamped.
    """

    #: upscaling factor (two x2 levels)
    scale: int = 4
    #: input sides need no multiple
    size_multiple: int = 1

    def __init__(self, num_channels: int = 3):
        super().__init__()
        # registration order = the authors' state-dict order
        self.conv_input = _conv3(num_channels, _WIDTH)
        self.convt_I1 = _deconv_x2(num_channels)
        self.convt_R1 = _conv3(_WIDTH, num_channels)
        self.convt_F1 = nn.Sequential(_FeatureLevel())
        self.convt_I2 = _deconv_x2(num_channels)
        self.convt_R2 = _conv3(_WIDTH, num_channels)
        self.convt_F2 = nn.Sequential(_FeatureLevel())
        self._init_weights()

    def _init_weights(self) -> None:
        # as in the authors' class: He-normal (fan-out) convolutions and bilinear deconvolutions (every
        # in/out channel pair gets the same kernel); only a fresh network sees this
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
                nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.ConvTranspose2d):
                with torch.no_grad():
                    module.weight.copy_(bilinear_kernel(module.kernel_size[0]).expand_as(module.weight))

    def forward(self, x: Tensor) -> Tensor:
        """Two Laplacian-pyramid levels: each upsamples the image x2 and adds the predicted residual."""
        feat1 = self.convt_F1(F.leaky_relu(self.conv_input(x), _SLOPE))
        hr2 = self.convt_I1(x) + self.convt_R1(feat1)
        feat2 = self.convt_F2(feat1)
        return self.convt_I2(hr2) + self.convt_R2(feat2)
