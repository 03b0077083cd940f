"""RCAN: Y. Zhang, K. Li, K. Li, L. Wang, B. Zhong and Y. Fu, "Image Super-Resolution Using Very Deep
Residual Channel Attention Networks", ECCV 2018; the channel attention can also pool a local window
or a few adaptive regions instead of the whole image.

Conventions shared by all architectures (scale, pre/post upsampling, global residual) are in
:mod:`cem_lab.models.archs.common`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from cem_lab.errors import InputError
from cem_lab.models.archs.common import (
    PixelShuffleUpsampler,
    _bool_arg,
    _choice_arg,
    _conv,
    _int_arg,
    _RestorationNet,
)

__all__ = ["ATTENTIONS", "RCAB", "RCAN", "ChannelAttention", "ResidualGroup"]

ATTENTIONS = ("global", "none", "local", "adaptive")


class ChannelAttention(nn.Module):
    """Channel attention (squeeze-excitation) with a pooled context of selectable extent.

    ``mode``: ``"global"`` pools the whole feature map; ``"local"`` pools ``pool_size`` x
    ``pool_size`` windows (stride ``pool_size``, partial windows at the border) and broadcasts each
    window's attention back over it; ``"adaptive"`` pools to ``pool_size`` x ``pool_size`` regions
    and broadcasts back by nearest interpolation. The squeeze is 1x1 conv down by ``reduction``,
    ReLU, 1x1 conv up, sigmoid; the features are multiplied by the attention.
    """

    def __init__(self, width: int, reduction: int, mode: str = "global", pool_size: int | None = None):
        super().__init__()
        if mode not in ("global", "local", "adaptive"):
            raise InputError(f"ChannelAttention: mode must be 'global', 'local' or 'adaptive', got {mode!r}")
        if mode != "global" and pool_size is None:
            raise InputError(f"ChannelAttention: pool_size is required for mode {mode!r}")
        self.mode = mode
        self.pool_size = pool_size
        hidden = width // reduction
        self.squeeze = nn.Sequential(
            nn.Conv2d(width, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, width, 1), nn.Sigmoid()
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x`` times its sigmoid attention, pooled per ``mode``; (N, C, H, W) in and out."""
        h, w = x.shape[-2:]
        if self.mode == "global":
            att = self.squeeze(x.mean(dim=(2, 3), keepdim=True))
        elif self.mode == "local":
            k = int(self.pool_size)  # type: ignore[arg-type]
            att = self.squeeze(F.avg_pool2d(x, k, stride=k, ceil_mode=True))
            att = att.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)[..., :h, :w]
        else:
            att = self.squeeze(F.adaptive_avg_pool2d(x, int(self.pool_size)))  # type: ignore[arg-type]
            att = F.interpolate(att, size=(h, w), mode="nearest")
        return x * att

    def extra_repr(self) -> str:
        """Mode and pool size, for ``print(model)``."""
        return f"mode={self.mode!r}, pool_size={self.pool_size}"


class RCAB(nn.Module):
    """Residual channel-attention block: x + CA(conv(ReLU(conv(x)))); ``attention=None`` drops CA."""

    def __init__(self, width: int, attention: ChannelAttention | None):
        super().__init__()
        layers: list[nn.Module] = [_conv(width, width), nn.ReLU(inplace=True), _conv(width, width)]
        if attention is not None:
            layers.append(attention)
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """x + body(x)."""
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """``blocks`` RCABs + conv, with the group skip."""

    def __init__(self, width: int, blocks: Sequence[nn.Module]):
        super().__init__()
        self.body = nn.Sequential(*blocks, _conv(width, width))

    def forward(self, x: Tensor) -> Tensor:
        """x + body(x) (the group skip)."""
        return x + self.body(x)


class RCAN(_RestorationNet):
    """RCAN (Zhang et al., 2018): residual groups of residual channel-attention blocks.

    Args:
        width: feature channels.
        groups: residual groups.
        blocks: RCABs per group.
        reduction: channel reduction of the attention squeeze.
        scale: 1, 2, 3 or 4.
        attention: ``"global"``, ``"none"``, ``"local"`` or ``"adaptive"`` (see :class:`ChannelAttention`).
        pool_size: window size k for ``"local"``, region count r per side for ``"adaptive"``; must be
            unset otherwise.
        half: attention only in the first ceil(blocks / 2) RCABs of each group.
        upsampling: ``"post"`` or ``"pre"``.
        global_residual: in ``post`` mode at scale > 1, add the bicubic-upsampled input.
    """

    def __init__(
        self,
        width: int = 64,
        groups: int = 10,
        blocks: int = 20,
        reduction: int = 16,
        scale: int = 4,
        attention: str = "global",
        pool_size: int | None = None,
        half: bool = False,
        upsampling: str = "post",
        global_residual: bool = False,
    ):
        super().__init__()
        name = type(self).__name__
        width = _int_arg(name, "width", width)
        groups = _int_arg(name, "groups", groups)
        blocks = _int_arg(name, "blocks", blocks)
        reduction = _int_arg(name, "reduction", reduction)
        attention = _choice_arg(name, "attention", attention, ATTENTIONS)
        half = _bool_arg(name, "half", half)
        if attention in ("local", "adaptive"):
            if pool_size is None:
                raise InputError(
                    f"{name}: pool_size is required with attention={attention!r} "
                    "(window size for 'local', regions per side for 'adaptive')"
                )
            pool_size = _int_arg(name, "pool_size", pool_size)
        elif pool_size is not None:
            raise InputError(
                f"{name}: pool_size only applies to attention 'local' or 'adaptive', "
                f"got pool_size={pool_size!r} with attention={attention!r}"
            )
        if attention != "none" and width // reduction < 1:
            raise InputError(
                f"{name}: reduction must be <= width (squeeze width = width // "
                f"reduction), got reduction={reduction} with width={width}"
            )
        if half and attention == "none":
            raise InputError(f"{name}: half=True needs an attention, got attention='none'")
        self._setup(
            scale,
            upsampling,
            {
                "width": width,
                "groups": groups,
                "blocks": blocks,
                "reduction": reduction,
                "attention": attention,
                "pool_size": pool_size,
                "half": half,
            },
            global_residual,
        )
        self.attention = attention
        self.pool_size = pool_size
        self.half = half
        with_ca = (blocks + 1) // 2 if half else blocks

        def rcab(i: int) -> RCAB:
            if attention == "none" or i >= with_ca:
                return RCAB(width, None)
            return RCAB(width, ChannelAttention(width, reduction, attention, pool_size))

        self.head = _conv(3, width)
        self.body = nn.Sequential(
            *[ResidualGroup(width, [rcab(i) for i in range(blocks)]) for _ in range(groups)], _conv(width, width)
        )
        self.upsampler = PixelShuffleUpsampler(width, self.body_scale)
        self.tail = _conv(width, 3)

    def uses_global_context(self) -> bool:
        """Whether an output pixel can depend on the whole image (pooled context that scales with
        the image: ``"global"`` and ``"adaptive"``), not only on a bounded neighbourhood."""
        return self.attention in ("global", "adaptive")

    def _run(self, x: Tensor) -> Tensor:
        feat = self.head(x)
        feat = feat + self.body(feat)
        return self.tail(self.upsampler(feat))
