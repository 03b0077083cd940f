"""RCAN in BasicSR's layout with the channel-attention variants of the CEM paper, in the authors' state-dict layout.

RCAN: Y. Zhang, K. Li, K. Li, L. Wang, B. Zhong and Y. Fu, "Image Super-Resolution Using Very Deep Residual
Channel Attention Networks", ECCV 2018. The variants of its channel attention (none, in half of the groups,
pooled over 4x4 / 16x16 windows or over a 2x2 / 3x3 grid of regions) and the scale-1 RCANs for denoising,
deraining and the multi-task ("mix") setting are the CEM paper's: J. Hu, J. Gu, S. Yu, F. Yu, Z. Li, Z. You,
C. Lu, C. Dong, "Interpreting Low-level Vision Models with Causal Effect Maps", IEEE TPAMI 2025 (model zoo of
GitHub J-FHu/CEM, ``CEM_Demo/ModelZoo/NN``).

:class:`BasicSRRCAN` matches, key for key and shape for shape, these authors' classes (read from J-FHu/CEM
@5fd1d9b; their code is not copied here):

==================  ======================================================  =================================
MODEL_LIST name     authors' class                                          here
==================  ======================================================  =================================
RCAN_no_ca          ``rcan_no_ca_arch.rcan(3, 3)``                          ``attention="none"``
RCAN_half_ca        ``rcan_half_ca_arch.rcan(3, 3)`` (5 + 5 groups)         ``attention="half"``
RCAN_pooling4       ``rcan_pooling4_arch.rcan(3, 3)``                       ``attention="pool4"``
RCAN_pooling16      ``rcan_pooling16_arch.rcan(3, 3)``                      ``attention="pool16"``
RCAN_pooling2x2     ``rcan_pooling2x2_arch.rcan_pooling2x2(3, 3)``          ``attention="grid2"``
RCAN_pooling3x3     ``rcan_pooling3x3_arch.rcan_pooling3x3(3, 3)``          ``attention="grid3"``
RCAN_DN             ``rcan_denoise_arch.DeRCAN()``                          ``upscale=1``
RCAN_DR             ``rcan_derain_arch.DRRCAN(3, 3)``                       ``upscale=1``
RCAN_mix            ``mixrcan_arch.RCAN_mix()``                             ``upscale=1, num_block=16``
==================  ======================================================  =================================

(all with ``num_in_ch=3, num_out_ch=3`` and the other arguments at their defaults, which are the authors').
DeRCAN, DRRCAN and RCAN_mix have no upsampler and apply ``conv_last`` to the body output; that is exactly
this network at ``upscale=1``, whose upsampler is empty (no keys). Their own ``upscale`` argument is unused
(DeRCAN's default is 4 but it still returns the input size), so pass ``upscale=1`` here.

The computation (input and output are RGB in [0, 1], as the authors' demo feeds ``ToTensor`` images)::

    f   = conv_first((x - mean) * img_range)               # mean: DIV2K RGB mean, img_range 255
    r   = conv_after_body(body(f)) + f                       # body: num_group residual groups
    out = conv_last(upsample(r)) / img_range + mean          # upsample: pixel shuffle, empty at scale 1

A residual group is ``g + conv(RCAB_num_block(... RCAB_1(g)))`` and an RCAB is
``h + res_scale * CA(conv(ReLU(conv(h))))``. No image-level residual (the input reaches the output only
through the mean). The channel attention ``CA`` of an RCAB is ``h * sigmoid(conv1(ReLU(conv1(pool(h)))))``
(1x1 convs ``num_feat -> num_feat // squeeze_factor -> num_feat``), with, per ``attention``:

* ``"channel"``: the standard RCAN attention; ``pool`` averages the whole map (one weight per channel).
* ``"none"``: no attention, ``CA(h) = h`` (the RCABs have no ``rcab.3`` keys).
* ``"half"``: standard attention in the first ``num_ca_group`` groups (module ``body_ca``), none in the
  ``num_no_ca_group`` groups after them (``body_no_ca``); the authors build 5 + 5.
* ``"pool4"`` / ``"pool16"``: ``pool`` averages k x k windows, stride k (k = 4 or 16, no padding: a partial
  window at the bottom/right border is dropped); the attention map (one weight per channel per window) is
  brought back to the feature size by ``F.interpolate(mode="nearest")``, whose source index is
  ``floor(i * pooled / size)``. When H and W are multiples of k, every k x k cell is weighted by its own
  attention; otherwise the nearest stretch no longer lines up with the cells (for H = 30, k = 4 the 7 pooled
  rows are spread over 30 rows). Needs H, W >= k.
* ``"grid2"`` / ``"grid3"``: ``pool`` is adaptive average pooling to a 2 x 2 / 3 x 3 grid (bins
  ``floor(j H / n) .. ceil((j + 1) H / n)``), brought back by the same nearest interpolation.

The pooling variants have exactly the state-dict keys of the standard attention (pooling has no
parameters), so a checkpoint does not say which pooling it was trained with: the ``MODEL_LIST`` name does.
``mean`` is a non-persistent buffer, as it is not in the authors' state dicts.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cem_lab.errors import InputError
from cem_lab.models.archs.common import PixelShuffleUpsampler, _choice_arg, _conv, _int_arg, _positive_float_arg

__all__ = ["ATTENTIONS", "RCAB", "BasicSRRCAN", "ChannelAttention", "ContextPool", "ResidualGroup"]

#: the ``attention`` values of :class:`BasicSRRCAN`
ATTENTIONS = ("channel", "half", "none", "pool4", "pool16", "grid2", "grid3")

#: pooling of one channel attention: (kind, size) per attention with a pooled context
_POOLS: dict[str, tuple[str, int]] = {
    "channel": ("global", 1),
    "half": ("global", 1),
    "pool4": ("window", 4),
    "pool16": ("window", 16),
    "grid2": ("grid", 2),
    "grid3": ("grid", 3),
}
_UPSCALES = (1, 2, 3, 4)


class ContextPool(nn.Module):
    """The context a channel attention sees: average over the whole map (``"global"``), over ``size`` x
    ``size`` windows with stride ``size`` and no padding (``"window"``), or adaptively over a ``size`` x
    ``size`` grid of regions (``"grid"``). No parameters."""

    def __init__(self, kind: str, size: int):
        super().__init__()
        if kind not in ("global", "window", "grid"):
            raise InputError(f"ContextPool: kind must be 'global', 'window' or 'grid', got {kind!r}")
        self.kind = kind
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, h, w) pooled map (1 x 1 for ``"global"``)."""
        if self.kind == "window":
            return F.avg_pool2d(x, self.size, stride=self.size)
        return F.adaptive_avg_pool2d(x, 1 if self.kind == "global" else self.size)

    def extra_repr(self) -> str:
        """Kind and size, for ``print(model)``."""
        return f"kind={self.kind!r}, size={self.size}"


class ChannelAttention(nn.Module):
    """x times sigmoid(conv1(ReLU(conv1(pool(x))))), the attention brought back to x's size by nearest
    interpolation when the pool keeps more than one cell.

    ``attention`` (keys ``attention.1`` / ``attention.3``): the pool, 1x1 conv ``width -> width //
    squeeze``, ReLU, 1x1 conv back to ``width``, sigmoid.
    """

    def __init__(self, width: int, squeeze: int, pool: ContextPool):
        super().__init__()
        hidden = width // squeeze
        self.attention = nn.Sequential(
            pool, nn.Conv2d(width, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, width, 1), nn.Sigmoid()
        )
        self._broadcast = pool.kind == "global"

    def forward(self, x: Tensor) -> Tensor:
        """``x`` weighted per channel (and per pooled cell); (N, C, H, W) in and out."""
        y = self.attention(x)
        if not self._broadcast:
            y = F.interpolate(y, size=x.shape[-2:], mode="nearest")
        return x * y


class RCAB(nn.Module):
    """Residual channel-attention block: x + res_scale * CA(conv(ReLU(conv(x)))); no CA when ``attention``
    is None. Keys ``rcab.0`` and ``rcab.2`` (the convs), ``rcab.3`` (the attention)."""

    def __init__(self, width: int, attention: ChannelAttention | None, res_scale: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = [_conv(width, width), nn.ReLU(inplace=True), _conv(width, width)]
        if attention is not None:
            layers.append(attention)
        self.rcab = nn.Sequential(*layers)
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        """x + res_scale * rcab(x)."""
        res = self.rcab(x)
        return x + (res if self.res_scale == 1 else res * self.res_scale)


class ResidualGroup(nn.Module):
    """RCABs (``residual_group``) then a conv (``conv``), plus the group skip."""

    def __init__(self, width: int, blocks: Sequence[RCAB]):
        super().__init__()
        self.residual_group = nn.Sequential(*blocks)
        self.conv = _conv(width, width)

    def forward(self, x: Tensor) -> Tensor:
        """x + conv(residual_group(x))."""
        return x + self.conv(self.residual_group(x))


class BasicSRRCAN(nn.Module):
    """RCAN (Zhang et al., ECCV 2018) in BasicSR's layout, with the channel-attention variants and the scale-1
    versions of the CEM paper (Hu et al., TPAMI 2025); see the module docstring for the computation and the
    authors' classes each setting matches.

    Args (the authors' names and defaults, plus ``attention``):
        num_in_ch: input channels (must equal ``len(rgb_mean)``).
        num_out_ch: output channels (must equal ``len(rgb_mean)``).
        num_feat: feature channels.
        num_group: residual groups.
        num_block: RCABs per group.
        squeeze_factor: channel reduction of the attention squeeze.
        upscale: 1 (no upsampler: the DN / DR / mix networks), 2, 3 or 4.
        res_scale: factor on each RCAB's residual.
        img_range: the network works on ``(x - rgb_mean) * img_range``.
        rgb_mean: per-channel mean subtracted before and added after (DIV2K's by default).
        attention: ``"channel"``, ``"half"``, ``"none"``, ``"pool4"``, ``"pool16"``, ``"grid2"`` or
            ``"grid3"``.
        num_ca_group, num_no_ca_group: only with ``attention="half"`` (the authors' names): groups with and
            without attention; default ``num_group // 2`` and the rest of ``num_group``. When given, they
            replace ``num_group``.

    Attributes:
        scale: ``upscale``; the output is ``scale`` times the input size.
        size_multiple: 4 / 16 for ``"pool4"`` / ``"pool16"`` (the input side multiple at which every k x k
            cell gets its own attention; the forward itself runs on any side >= k, without padding, as the
            authors' does), else 1.
    """

    scale: int = 4
    size_multiple: int = 1

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_group: int = 10,
        num_block: int = 20,
        squeeze_factor: int = 16,
        upscale: int = 4,
        res_scale: float = 1,
        img_range: float = 255.0,
        rgb_mean: Sequence[float] = (0.4488, 0.4371, 0.4040),
        attention: str = "channel",
        num_ca_group: int | None = None,
        num_no_ca_group: int | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        num_feat = _int_arg(name, "num_feat", num_feat)
        num_group = _int_arg(name, "num_group", num_group)
        num_block = _int_arg(name, "num_block", num_block)
        squeeze_factor = _int_arg(name, "squeeze_factor", squeeze_factor)
        attention = _choice_arg(name, "attention", attention, ATTENTIONS)
        res_scale = _positive_float_arg(name, "res_scale", res_scale)
        img_range = _positive_float_arg(name, "img_range", img_range)
        if isinstance(upscale, bool) or not isinstance(upscale, numbers.Integral) or upscale not in _UPSCALES:
            raise InputError(f"{name}: upscale must be one of {', '.join(map(str, _UPSCALES))}, got {upscale!r}")
        mean = _mean_arg(name, rgb_mean)
        for arg, value in (("num_in_ch", num_in_ch), ("num_out_ch", num_out_ch)):
            if _int_arg(name, arg, value) != len(mean):
                raise InputError(f"{name}: {arg} must equal len(rgb_mean) = {len(mean)}, got {value!r}")
        if attention != "none" and num_feat // squeeze_factor < 1:
            raise InputError(
                f"{name}: squeeze_factor must be <= num_feat (squeeze width = num_feat // squeeze_factor), "
                f"got squeeze_factor={squeeze_factor} with num_feat={num_feat}"
            )
        groups = _group_split(name, attention, num_group, num_ca_group, num_no_ca_group)

        self.scale = int(upscale)
        self.attention = attention
        self.size_multiple = _POOLS[attention][1] if attention in ("pool4", "pool16") else 1
        self.img_range = img_range
        self._config: dict[str, Any] = {
            "num_feat": num_feat,
            "num_group": sum(groups),
            "num_block": num_block,
            "squeeze_factor": squeeze_factor,
            "upscale": self.scale,
            "attention": attention,
        }
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

        def group(with_attention: bool) -> ResidualGroup:
            def ca() -> ChannelAttention | None:
                if not with_attention:
                    return None
                return ChannelAttention(num_feat, squeeze_factor, ContextPool(*_POOLS[attention]))

            return ResidualGroup(num_feat, [RCAB(num_feat, ca(), res_scale) for _ in range(num_block)])

        self.conv_first = _conv(num_in_ch, num_feat)
        if attention == "half":
            self.body_ca = nn.Sequential(*[group(True) for _ in range(groups[0])])
            self.body_no_ca = nn.Sequential(*[group(False) for _ in range(groups[1])])
        else:
            self.body = nn.Sequential(*[group(attention != "none") for _ in range(num_group)])
        self.conv_after_body = _conv(num_feat, num_feat)
        self.upsample = PixelShuffleUpsampler(num_feat, self.scale)
        self.conv_last = _conv(num_feat, num_out_ch)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) RGB in [0, 1] -> (N, C, H * scale, W * scale), not clamped."""
        name = type(self).__name__
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise InputError(f"{name} expects a (N, {self.mean.shape[1]}, H, W) batch, got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.size_multiple:
            raise InputError(
                f"{name} (attention={self.attention!r}) needs H, W >= {self.size_multiple}, got {tuple(x.shape[-2:])}"
            )
        feat = self.conv_first((x - self.mean) * self.img_range)
        if self.attention == "half":
            body = self.body_no_ca(self.body_ca(feat))
        else:
            body = self.body(feat)
        res = self.conv_after_body(body) + feat
        return self.conv_last(self.upsample(res)) / self.img_range + self.mean

    def uses_global_context(self) -> bool:
        """Whether an output pixel can depend on the whole image through a pooled context that grows with
        the image (``"channel"``, ``"half"``, ``"grid2"``, ``"grid3"``), not only on a bounded neighbourhood."""
        return self.attention not in ("none", "pool4", "pool16")

    def extra_repr(self) -> str:
        """The arguments that define the layout, for ``print(model)``."""
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items())


def _mean_arg(model: str, value: Any) -> tuple[float, ...]:
    try:
        mean = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{model}: rgb_mean must be a sequence of numbers, got {value!r}") from None
    if not mean:
        raise InputError(f"{model}: rgb_mean must not be empty")
    return mean


def _group_split(
    model: str, attention: str, num_group: int, num_ca_group: int | None, num_no_ca_group: int | None
) -> tuple[int, int]:
    """(groups with attention, groups without): all in one of them unless ``attention="half"``."""
    if attention != "half":
        if num_ca_group is not None or num_no_ca_group is not None:
            raise InputError(
                f"{model}: num_ca_group / num_no_ca_group only apply to attention='half', got attention={attention!r}"
            )
        return (0, num_group) if attention == "none" else (num_group, 0)
    ca = num_group // 2 if num_ca_group is None else _int_arg(model, "num_ca_group", num_ca_group, minimum=0)
    if num_no_ca_group is None:
        if ca > num_group:
            raise InputError(f"{model}: num_ca_group must be <= num_group = {num_group}, got {ca}")
        no_ca = num_group - ca
    else:
        no_ca = _int_arg(model, "num_no_ca_group", num_no_ca_group, minimum=0)
    if ca + no_ca < 1:
        raise InputError(f"{model}: attention='half' needs at least one group, got {ca} + {no_ca}")
    return ca, no_ca
