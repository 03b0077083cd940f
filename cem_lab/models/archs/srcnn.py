"""SRCNN: C. Dong, C. C. Loy, K. He and X. Tang, "Learning a Deep Convolutional Network for Image
Super-Resolution", ECCV 2014 (journal version: "Image Super-Resolution Using Deep Convolutional
Networks", IEEE TPAMI 2016).

Conventions shared by all architectures (scale, pre/post upsampling, global residual) are in
:mod:`cem_lab.models.archs.common`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from cem_lab.errors import InputError
from cem_lab.models.archs.common import _bool_arg, _conv, _int_arg, _RestorationNet

__all__ = ["SRCNN"]


class SRCNN(_RestorationNet):
    """SRCNN (Dong et al., 2014): three convolutions on the bicubic-upsampled image.

    Args:
        channels: width of the first layer (patch extraction).
        mid_channels: width of the second layer (non-linear mapping).
        kernel_sizes: the three odd kernel sizes, 'same' padded.
        scale: 1, 2, 3 or 4.
        upsampling: must be ``"pre"``: SRCNN always works on the bicubic-upsampled image.
        residual: add the upsampled input to the output (off in the classic SRCNN).
    """

    def __init__(
        self,
        channels: int = 64,
        mid_channels: int = 32,
        kernel_sizes: Sequence[int] = (9, 5, 5),
        scale: int = 4,
        upsampling: str = "pre",
        residual: bool = False,
    ):
        super().__init__()
        name = type(self).__name__
        if upsampling != "pre":
            raise InputError(
                f"{name}: upsampling must be 'pre' (SRCNN works on the bicubic-upsampled image), got {upsampling!r}"
            )
        channels = _int_arg(name, "channels", channels)
        mid_channels = _int_arg(name, "mid_channels", mid_channels)
        if isinstance(kernel_sizes, (str, bytes)) or not isinstance(kernel_sizes, Sequence) or len(kernel_sizes) != 3:
            raise InputError(f"{name}: kernel_sizes must be three odd integers, got {kernel_sizes!r}")
        ks = [_int_arg(name, "kernel_sizes", k) for k in kernel_sizes]
        if any(k % 2 == 0 for k in ks):
            raise InputError(f"{name}: kernel_sizes must be odd ('same' padding), got {ks}")
        residual = _bool_arg(name, "residual", residual)
        self._setup(scale, upsampling, {"channels": channels, "mid_channels": mid_channels, "kernel_sizes": ks})
        self.residual = residual
        self._config["residual"] = residual
        self.body = nn.Sequential(
            _conv(3, channels, ks[0]),
            nn.ReLU(inplace=True),
            _conv(channels, mid_channels, ks[1]),
            nn.ReLU(inplace=True),
            _conv(mid_channels, 3, ks[2]),
        )

    def _run(self, x: Tensor) -> Tensor:
        return self.body(x)
