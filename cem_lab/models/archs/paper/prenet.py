"""PReNet as the CEM authors built it: D. Ren, W. Zuo, Q. Hu, P. Zhu and D. Meng, "Progressive Image
Deraining Networks: A Better and Simpler Baseline", CVPR 2019.

Reproduces the state-dict layout of ``PReNet`` in the CEM repository's ``CEM_Demo/ModelZoo/NN/prenet.py``
(``MODEL_LIST`` name ``PReNet``, deraining), so that its checkpoint loads unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PReNet"]

#: feature channels (of the recurrent state too)
_WIDTH = 32
#: residual blocks per stage
_RES_BLOCKS = 5


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1)


def _res_branch() -> nn.Sequential:
    # conv3, ReLU, conv3, ReLU: the block adds its input afterwards and applies one more ReLU
    return nn.Sequential(_conv3(_WIDTH, _WIDTH), nn.ReLU(), _conv3(_WIDTH, _WIDTH), nn.ReLU())


class PReNet(nn.Module):
    """PReNet (Ren et al., CVPR 2019) in the layout of the CEM authors' ``prenet.PReNet``.

    A progressive recurrent network: starting from ``x = image`` and a zero convolutional-LSTM state
    ``h = c = 0`` (32 channels), each of the ``recurrent_iter`` stages (weights shared across stages) does

    * ``conv0``: conv3 on ``cat(image, x)`` (6 channels) -> 32, ReLU;
    * LSTM gates on ``cat(features, h)`` (64 channels), each a conv3 64->32: ``conv_i``, ``conv_f``,
      ``conv_o`` with a sigmoid, ``conv_g`` with a tanh; ``c = f * c + i * g``, ``h = o * tanh(c)``;
    * 5 residual blocks on ``h`` (``res_conv1 … res_conv5``: conv3, ReLU, conv3, ReLU; then
      ``x = relu(block(x) + x)``);
    * ``conv``: conv3 32->3, plus ``image``: the stage's derained estimate ``x``.

    Only the last stage's estimate is returned. The recurrent state is created on the input's device and
    with its dtype (the authors' class moves it with ``.cuda()`` when ``use_GPU`` is true).
    168,963 parameters.

    Args:
        recurrent_iter: number of stages (6 in the paper's zoo).
        use_GPU: accepted for the authors' constructor arguments; has no effect (the device follows the input).

    Input: RGB float in [0, 1], ``(N, 3, H, W)``, any H and W.
    Output: ``(N, 3, H, W)``, the derained image, not clamped.
    """

    #: deraining works at the input's size
    scale: int = 1
    #: input sides need no multiple
    size_multiple: int = 1

    def __init__(self, recurrent_iter: int = 6, use_GPU: bool = True):
        super().__init__()
        self.iteration = int(recurrent_iter)
        self.use_GPU = use_GPU
        # registration order = the authors' state-dict order
        self.conv0 = nn.Sequential(_conv3(6, _WIDTH), nn.ReLU())
        for k in range(1, _RES_BLOCKS + 1):
            self.add_module(f"res_conv{k}", _res_branch())
        self.conv_i = nn.Sequential(_conv3(2 * _WIDTH, _WIDTH), nn.Sigmoid())
        self.conv_f = nn.Sequential(_conv3(2 * _WIDTH, _WIDTH), nn.Sigmoid())
        self.conv_g = nn.Sequential(_conv3(2 * _WIDTH, _WIDTH), nn.Tanh())
        self.conv_o = nn.Sequential(_conv3(2 * _WIDTH, _WIDTH), nn.Sigmoid())
        self.conv = nn.Sequential(_conv3(_WIDTH, 3))

    def forward(self, image: Tensor) -> Tensor:
        """Run the ``recurrent_iter`` stages and return the last stage's derained image."""
        n, _, rows, cols = image.shape
        h = image.new_zeros(n, _WIDTH, rows, cols)
        c = image.new_zeros(n, _WIDTH, rows, cols)
        res_blocks = [getattr(self, f"res_conv{k}") for k in range(1, _RES_BLOCKS + 1)]
        x = image
        for _ in range(self.iteration):
            feat = torch.cat((self.conv0(torch.cat((image, x), 1)), h), 1)
            i, f, g, o = self.conv_i(feat), self.conv_f(feat), self.conv_g(feat), self.conv_o(feat)
            c = f * c + i * g
            h = o * torch.tanh(c)
            x = h
            for block in res_blocks:
                x = F.relu(block(x) + x)
            x = self.conv(x) + image
        return x
