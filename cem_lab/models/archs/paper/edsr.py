"""EDSR as the CEM authors built it: B. Lim, S. Son, H. Kim, S. Nah and K. M. Lee, "Enhanced Deep Residual
Networks for Single Image Super-Resolution", CVPR Workshops (NTIRE) 2017.

Reproduces the state-dict layout of ``EDSR`` in the CEM repository's ``CEM_Demo/ModelZoo/NN/edsr.py`` (with
the building blocks of its ``common.py``; ``MODEL_LIST`` names ``EDSR`` and ``EDSR-W-D``), so that their
checkpoints load unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cem_lab.errors import InputError

__all__ = ["DIV2K_MEAN", "EDSR"]

#: DIV2K RGB mean: the initial bias of the mean-shift convolutions (the checkpoint's own values win)
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1)


def _mean_shift(sign: float) -> nn.Conv2d:
    """A 3->3 1x1 convolution that starts as ``x + sign * DIV2K_MEAN``.

    Its weight and bias are ordinary parameters, saved in the state dict: the authors' ``MeanShift`` only sets
    a module attribute ``requires_grad = False``, which freezes nothing, so training may have moved them.
    """
    conv = nn.Conv2d(3, 3, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        conv.bias.copy_(sign * torch.tensor(DIV2K_MEAN))
    return conv


class _ResBlock(nn.Module):
    """conv3, ReLU, conv3 (``body.0``, ``body.2``) plus the identity; residual scale 1."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(_conv3(width, width), nn.ReLU(), _conv3(width, width))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _upsampler(width: int, factor: int) -> nn.Sequential:
    """Pixel-shuffle upsampler without activation: log2(factor) x (conv3 W->4W, PS(2)), or conv3 W->9W, PS(3)."""
    layers: list[nn.Module] = []
    if factor >= 1 and factor & (factor - 1) == 0:
        for _ in range(int(math.log2(factor))):
            layers += [_conv3(width, 4 * width), nn.PixelShuffle(2)]
    elif factor == 3:
        layers += [_conv3(width, 9 * width), nn.PixelShuffle(3)]
    else:
        raise InputError(f"EDSR: factor must be a power of 2 or 3, got {factor!r}")
    return nn.Sequential(*layers)


class EDSR(nn.Module):
    """EDSR (Lim et al., CVPRW 2017) in the layout of the CEM authors' ``edsr.EDSR``.

    ``sub_mean`` (1x1 conv, see below) -> ``head.0`` conv3 ``num_channels``->``width`` -> ``body``: ``depth``
    residual blocks (``body.i.body.0`` conv3, ReLU, ``body.i.body.2`` conv3, + identity) and ``body.{depth}``
    conv3, plus the long skip from the head's output -> ``tail.0``: pixel-shuffle upsampler without
    activation (x4: ``tail.0.0`` conv3 ``width``->4``width``, PS(2), ``tail.0.2`` conv3, PS(2)) -> ``tail.1``
    conv3 ``width``->``num_channels`` -> ``add_mean``.

    The mean shifts ``sub_mean`` / ``add_mean`` are 3->3 1x1 convolutions whose weight and bias are in the
    state dict (``[3, 3, 1, 1]`` and ``[3]``); they start as -/+ the DIV2K mean with an identity weight
    (rgb_range 1), but are loaded like any other layer because the authors' training did not freeze them.
    They are always 3-channel, so the network runs only for ``num_channels=3``.

    Unlike the authors' class, ``load_state_dict`` is PyTorch's own: strict, and a checkpoint of another
    width or depth fails with a size-mismatch or missing-key error instead of being partly ignored.

    ``EDSR-W-D`` in the authors' ``MODEL_LIST`` is ``EDSR(width=W, depth=D)``; plain ``EDSR`` is 64/16
    (1,517,595 parameters).

    Args:
        num_channels: image channels (3).
        factor: upscaling factor, a power of 2 or 3 (4 in the paper's zoo).
        width: feature channels.
        depth: number of residual blocks.

    Input: RGB float in [0, 1], ``(N, 3, H, W)``, any H and W.
    Output: ``(N, 3, factor * H, factor * W)``, not clamped.
    """

    #: upscaling factor of the default build (the instance's own is set from ``factor``)
    scale: int = 4
    #: input sides need no multiple
    size_multiple: int = 1

    def __init__(self, num_channels: int = 3, factor: int = 4, width: int = 64, depth: int = 16):
        super().__init__()
        self.scale = int(factor)
        # built in the authors' order (so a seeded fresh build draws the same weights), registered in their
        # state-dict order: sub_mean, add_mean, head, body, tail
        sub_mean = _mean_shift(-1.0)
        head = nn.Sequential(_conv3(num_channels, width))
        body = nn.Sequential(*[_ResBlock(width) for _ in range(depth)], _conv3(width, width))
        tail = nn.Sequential(_upsampler(width, self.scale), _conv3(width, num_channels))
        self.sub_mean = sub_mean
        self.add_mean = _mean_shift(+1.0)
        self.head, self.body, self.tail = head, body, tail

    def forward(self, x: Tensor) -> Tensor:
        """Mean shift, head, residual body with the long skip, upsampling tail, mean shift back."""
        feat = self.head(self.sub_mean(x))
        feat = self.body(feat) + feat
        return self.add_mean(self.tail(feat))
