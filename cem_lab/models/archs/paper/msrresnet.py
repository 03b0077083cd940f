"""MSRResNet ("modified SRResNet") as the CEM authors built it: BasicSR's compact, batch-norm-free version of
SRResNet from C. Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative Adversarial
Network", CVPR 2017 (X. Wang et al., BasicSR toolbox, https://github.com/XPixelGroup/BasicSR).

Reproduces the state-dict layout of ``MSRResNet`` in the CEM repository's
``CEM_Demo/ModelZoo/NN/msrresnet_arch.py`` (BasicSR's layout; ``MODEL_LIST`` names ``SRResNet`` and
``MSRGAN``, both built with the defaults), so that BasicSR's ``MSRResNet`` checkpoints (their ``params`` /
``params_ema`` state dicts) load unchanged.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from cem_lab.errors import InputError

__all__ = ["MSRResNet"]

#: LeakyReLU slope of the head and the upsampler
_SLOPE = 0.1


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1)


def _init_scaled_kaiming(layers: list[nn.Conv2d], scale: float = 0.1) -> None:
    """BasicSR's initialisation: Kaiming-normal weights times ``scale``, zero biases (fresh networks only)."""
    for conv in layers:
        nn.init.kaiming_normal_(conv.weight)
        conv.weight.data.mul_(scale)
        nn.init.zeros_(conv.bias)


class _ResidualBlockNoBN(nn.Module):
    """``conv1`` 3x3, ReLU, ``conv2`` 3x3, plus the identity (BasicSR's ``ResidualBlockNoBN``, res_scale 1)."""

    def __init__(self, num_feat: int):
        super().__init__()
        self.conv1 = _conv3(num_feat, num_feat)
        self.conv2 = _conv3(num_feat, num_feat)
        _init_scaled_kaiming([self.conv1, self.conv2])

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class MSRResNet(nn.Module):
    """MSRResNet (BasicSR's modified SRResNet, after Ledig et al., CVPR 2017) in the CEM authors' layout.

    ``conv_first`` conv3 ``num_in_ch``->``num_feat`` + LReLU(0.1) -> ``body.0 … body.{num_block-1}``
    residual blocks without batch norm (``conv1``, ReLU, ``conv2``, + identity) -> **no conv after the body
    and no feature-level long skip** -> upsampling: x4 = ``upconv1`` conv3 ``num_feat``->4``num_feat``,
    PS(2), LReLU(0.1), ``upconv2`` the same; x2 / x3 = ``upconv1`` to ``num_feat * upscale**2`` channels,
    PS(upscale), LReLU(0.1) -> ``conv_hr`` conv3 + LReLU(0.1) -> ``conv_last`` conv3 ``num_feat``->``num_out_ch``
    -> plus the input upsampled bilinearly (``align_corners=False``): a global image residual. No mean shift.
    1,517,571 parameters with the defaults.

    Args:
        num_in_ch: input channels.
        num_out_ch: output channels (must equal ``num_in_ch`` for the image residual).
        num_feat: feature channels.
        num_block: number of residual blocks.
        upscale: 2, 3 or 4.

    Input: RGB float in [0, 1], ``(N, num_in_ch, H, W)``, any H and W.
    Output: ``(N, num_out_ch, upscale * H, upscale * W)``, not clamped.
    """

    #: upscaling factor of the default build (the instance's own is set from ``upscale``)
    scale: int = 4
    #: input sides need no multiple
    size_multiple: int = 1

    def __init__(
        self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 16, upscale: int = 4
    ):
        super().__init__()
        if upscale not in (2, 3, 4):
            raise InputError(f"MSRResNet: upscale must be 2, 3 or 4, got {upscale!r}")
        self.scale = int(upscale)
        self.upscale = int(upscale)
        self.conv_first = _conv3(num_in_ch, num_feat)
        self.body = nn.Sequential(*[_ResidualBlockNoBN(num_feat) for _ in range(num_block)])
        first_stage = 2 if self.upscale == 4 else self.upscale
        self.upconv1 = _conv3(num_feat, num_feat * first_stage**2)
        if self.upscale == 4:
            self.upconv2 = _conv3(num_feat, num_feat * 4)
        self.pixel_shuffle = nn.PixelShuffle(first_stage)
        self.conv_hr = _conv3(num_feat, num_feat)
        self.conv_last = _conv3(num_feat, num_out_ch)
        _init_scaled_kaiming([self.conv_first, self.upconv1, self.conv_hr, self.conv_last])
        if self.upscale == 4:
            _init_scaled_kaiming([self.upconv2])

    def forward(self, x: Tensor) -> Tensor:
        """Head, residual body, pixel-shuffle upsampling, HR convs, plus the bilinearly upsampled input."""
        out = self.body(F.leaky_relu(self.conv_first(x), _SLOPE))
        out = F.leaky_relu(self.pixel_shuffle(self.upconv1(out)), _SLOPE)
        if self.upscale == 4:
            out = F.leaky_relu(self.pixel_shuffle(self.upconv2(out)), _SLOPE)
        out = self.conv_last(F.leaky_relu(self.conv_hr(out), _SLOPE))
        return out + F.interpolate(x, scale_factor=self.upscale, mode="bilinear", align_corners=False)
