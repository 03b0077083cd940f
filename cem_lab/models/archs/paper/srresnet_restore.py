"""The scale-1 SRResNet of the CEM paper (denoising, deraining, multi-task), in the authors' state-dict layout.

SRResNet: C. Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative Adversarial
Network", CVPR 2017, in BasicSR's "modified" form (MSRResNet: residual blocks without batch norm, as EDSR's).
The scale-1 versions are the CEM paper's: J. Hu, J. Gu, S. Yu, F. Yu, Z. Li, Z. You, C. Lu, C. Dong,
"Interpreting Low-level Vision Models with Causal Effect Maps", IEEE TPAMI 2025 (model zoo of GitHub
J-FHu/CEM, ``CEM_Demo/ModelZoo/NN``).

:class:`SRResNetRestore` matches, key for key and shape for shape, these authors' classes (read from
J-FHu/CEM @5fd1d9b; their code is not copied here), all built with ``upscale=1``:

* ``SRResNet_DN`` (denoising): ``SRResNet_DN_arch.SRResNet_DN(upscale=1)``;
* ``SRResNet_DR`` (deraining), ``SRResNet_mix`` and ``SRResNet_MIO`` (multi-task):
  ``mixsrresnet_arch.SRResNet_mix(upscale=1)``, the same network.

The computation (RGB in [0, 1] in and out, no mean shift, no scaling)::

    f   = LReLU_0.1(conv_first(x))
    b   = block_num_block(... block_1(f))                   # block: h + conv2(ReLU(conv1(h)))
    out = conv_last(LReLU_0.1(conv_hr(b))) + x               # image-level residual

Unlike BasicSR's x4 MSRResNet (cem_lab's ``msrresnet`` paper module), there are no upsampling convs and no
bilinear base: the input itself is added. The authors' ``upscale`` argument is stored but unused (their
``upscale=4`` fails in ``__init__``, 2 or 3 silently build this same scale-1 network); here only 1 is
accepted.
"""

from __future__ import annotations

import numbers

import torch.nn.functional as F
from torch import Tensor, nn

from cem_lab.errors import InputError
from cem_lab.models.archs.common import _conv, _int_arg

__all__ = ["ResidualBlockNoBN", "SRResNetRestore"]


class ResidualBlockNoBN(nn.Module):
    """x + conv2(ReLU(conv1(x))), 3x3 convs with bias, no batch norm (keys ``conv1``, ``conv2``)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = _conv(width, width)
        self.conv2 = _conv(width, width)

    def forward(self, x: Tensor) -> Tensor:
        """x + conv2(ReLU(conv1(x)))."""
        return x + self.conv2(F.relu(self.conv1(x)))


class SRResNetRestore(nn.Module):
    """Scale-1 SRResNet (Ledig et al., CVPR 2017; BasicSR's block without BN) as the CEM paper (Hu et al.,
    TPAMI 2025) uses it for denoising, deraining and multi-task restoration; see the module docstring.

    Args (the authors' names and defaults, except ``upscale``, which must be 1):
        num_in_ch: input channels.
        num_out_ch: output channels (must equal ``num_in_ch``: the input is added to the output).
        num_feat: feature channels.
        num_block: residual blocks.
        upscale: 1 (the authors' argument is unused; see the module docstring).

    Attributes:
        scale: 1; the output has the input's size.
        size_multiple: 1; any input size runs.
    """

    scale: int = 1
    size_multiple: int = 1

    def __init__(
        self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 16, upscale: int = 1
    ):
        super().__init__()
        name = type(self).__name__
        num_in_ch = _int_arg(name, "num_in_ch", num_in_ch)
        num_out_ch = _int_arg(name, "num_out_ch", num_out_ch)
        num_feat = _int_arg(name, "num_feat", num_feat)
        num_block = _int_arg(name, "num_block", num_block)
        if isinstance(upscale, bool) or not isinstance(upscale, numbers.Integral) or upscale != 1:
            raise InputError(f"{name}: upscale must be 1 (a scale-1 restoration network), got {upscale!r}")
        if num_out_ch != num_in_ch:
            raise InputError(
                f"{name}: num_out_ch must equal num_in_ch (the input is added to the output), "
                f"got {num_in_ch} and {num_out_ch}"
            )
        self.num_in_ch = num_in_ch
        self._config = {"num_in_ch": num_in_ch, "num_feat": num_feat, "num_block": num_block}
        self.conv_first = _conv(num_in_ch, num_feat)
        self.body = nn.Sequential(*[ResidualBlockNoBN(num_feat) for _ in range(num_block)])
        self.conv_hr = _conv(num_feat, num_feat)
        self.conv_last = _conv(num_feat, num_out_ch)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) in [0, 1] -> (N, C, H, W), not clamped."""
        if x.dim() != 4 or x.shape[1] != self.num_in_ch:
            raise InputError(
                f"{type(self).__name__} expects a (N, {self.num_in_ch}, H, W) batch, got shape {tuple(x.shape)}"
            )
        feat = F.leaky_relu(self.conv_first(x), 0.1)
        out = self.conv_last(F.leaky_relu(self.conv_hr(self.body(feat)), 0.1))
        return out + x

    def extra_repr(self) -> str:
        """The arguments that define the layout, for ``print(model)``."""
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items())
