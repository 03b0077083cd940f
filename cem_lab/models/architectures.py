"""Restoration architectures compared in the CEM studies: SRCNN, FSRCNN, EDSR, SRResNet, RCAN, SwinLite.

All networks are plain ``nn.Module`` s built from keyword arguments (Hydra ``_target_``), take
``(N, 3, h, w)`` images in [0, 1] and return ``(N, 3, h * scale, w * scale)``. Conventions:

* ``scale`` is one of 1, 2, 3, 4. Pixel-shuffle upsamplers use one stage for x2 and x3 and two
  x2 stages for x4; scale 1 (denoising, deraining) has no upsampler.
* ``upsampling="post"`` (default) runs the body at input resolution and upsamples at the end.
  ``upsampling="pre"`` bicubic-upsamples the input to the output size first (``F.interpolate``,
  ``align_corners=False``) and runs a scale-1 network there, plus a global residual to the
  upsampled input (the multi-task setting).
* At scale 1 every network predicts a residual that is added to its input (as DnCNN and SwinIR do
  for denoising), so ``post`` and ``pre`` coincide at scale 1. At scale > 1 in ``post`` mode
  SRResNet adds a (bilinear-)upsampled input, as MSRResNet does; FSRCNN, EDSR, RCAN and SwinLite
  add the bicubic-upsampled input only with ``global_residual=True`` (off in the original
  networks; the embedded zoo uses it so that short CPU schedules start from bicubic).
* Bad arguments raise ``ValueError`` naming the model and the argument.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SCALES = (1, 2, 3, 4)
UPSAMPLING = ("post", "pre")
ATTENTIONS = ("global", "none", "local", "adaptive")
#: DIV2K RGB mean, used by EDSR's optional mean shift
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)

__all__ = ["ARCHITECTURES", "EDSR", "FSRCNN", "RCAN", "SRCNN", "SRResNet", "SwinLite", "build_architecture"]


# ----------------------------------------------------------------------------- argument checks
def _int_arg(model: str, name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{model}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive_float_arg(model: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{model}: {name} must be a positive finite number, got {value!r}")
    return float(value)


def _bool_arg(model: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{model}: {name} must be true or false, got {value!r}")
    return value


def _choice_arg(model: str, name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{model}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value.lower()


def _scale_arg(model: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value not in SCALES:
        raise ValueError(f"{model}: scale must be one of {', '.join(map(str, SCALES))}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- building blocks
def _conv(cin: int, cout: int, kernel: int = 3) -> nn.Conv2d:
    """'Same'-padded convolution with bias (odd kernels)."""
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=True)


def upsample(x: Tensor, scale: int, mode: str = "bicubic") -> Tensor:
    """Upsample by an integer factor (bicubic by default): the input of ``upsampling="pre"`` networks."""
    if scale == 1:
        return x
    return F.interpolate(x, size=(x.shape[-2] * scale, x.shape[-1] * scale), mode=mode, align_corners=False)


class PixelShuffleUpsampler(nn.Sequential):
    """conv(width -> width * r^2) + PixelShuffle(r) stages: x2, x3 one stage, x4 two x2 stages.

    ``act`` (a factory) adds an activation after each stage; scale 1 is an empty (identity) stage list.
    """

    FACTORS: ClassVar[dict[int, tuple[int, ...]]] = {1: (), 2: (2,), 3: (3,), 4: (2, 2)}

    def __init__(self, width: int, scale: int, act: Callable[[], nn.Module] | None = None):
        layers: list[nn.Module] = []
        for factor in self.FACTORS[scale]:
            layers += [_conv(width, width * factor * factor), nn.PixelShuffle(factor)]
            if act is not None:
                layers.append(act())
        super().__init__(*layers)


class _RestorationNet(nn.Module):
    """Shared forward logic: input check, pre/post upsampling and the global image residual.

    Subclasses call ``_setup`` and implement ``_run``, which maps its input to an output
    ``self.body_scale`` times larger (``body_scale`` is 1 in ``pre`` mode).
    """

    scale: int = 1
    upsampling: str = "post"
    body_scale: int = 1
    #: whether post mode at scale > 1 adds the upsampled input, and how it is upsampled
    _post_residual: ClassVar[bool] = False
    _post_residual_mode: ClassVar[str] = "bicubic"

    def _setup(self, scale: Any, upsampling: Any, config: dict[str, Any], global_residual: bool | None = None) -> None:
        """``global_residual`` (networks that take it): in ``post`` mode at scale > 1, also add the
        bicubic-upsampled input, so the network learns only the residual to bicubic (VDSR's
        global residual). Implied at scale 1 and in ``pre`` mode."""
        name = type(self).__name__
        self.scale = _scale_arg(name, scale)
        self.upsampling = _choice_arg(name, "upsampling", upsampling, UPSAMPLING)
        self.body_scale = 1 if self.upsampling == "pre" else self.scale
        self._config = {**config, "scale": self.scale, "upsampling": self.upsampling}
        post_residual = self._post_residual
        if global_residual is not None:
            global_residual = _bool_arg(name, "global_residual", global_residual)
            self._config["global_residual"] = global_residual
            if global_residual and not self._post_residual:
                post_residual = True
                self._post_residual_mode = "bicubic"
        self.residual = self.upsampling == "pre" or self.scale == 1 or post_residual

    def _run(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} expects a (N, 3, h, w) batch, got shape {tuple(x.shape)}")
        if self.upsampling == "pre":
            x = upsample(x, self.scale, "bicubic")
        out = self._run(x)
        if self.residual:
            out = out + upsample(x, self.body_scale, self._post_residual_mode)
        return out

    def config(self) -> dict:
        """``_target_`` and the keyword arguments that rebuild this network."""
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}", **self._config}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items())


# ----------------------------------------------------------------------------- SRCNN / FSRCNN
class SRCNN(_RestorationNet):
    """SRCNN (Dong et al., 2014): three convolutions on the bicubic-upsampled image.

    Knobs: ``channels`` / ``mid_channels`` are the widths of the first two layers,
    ``kernel_sizes`` the three (odd) kernel sizes, 'same' padded. SRCNN always pre-upsamples;
    ``residual=True`` adds the upsampled input to the output (off in the classic SRCNN).
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
            raise ValueError(
                f"{name}: upsampling must be 'pre' (SRCNN works on the bicubic-upsampled image), got {upsampling!r}"
            )
        channels = _int_arg(name, "channels", channels)
        mid_channels = _int_arg(name, "mid_channels", mid_channels)
        if isinstance(kernel_sizes, (str, bytes)) or not isinstance(kernel_sizes, Sequence) or len(kernel_sizes) != 3:
            raise ValueError(f"{name}: kernel_sizes must be three odd integers, got {kernel_sizes!r}")
        ks = [_int_arg(name, "kernel_sizes", k) for k in kernel_sizes]
        if any(k % 2 == 0 for k in ks):
            raise ValueError(f"{name}: kernel_sizes must be odd ('same' padding), got {ks}")
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


class FSRCNN(_RestorationNet):
    """FSRCNN (Dong et al., 2016): extract 5x5 -> shrink 1x1 -> ``depth`` x mapping 3x3 -> expand 1x1.

    Knobs: ``width`` (d, feature width), ``shrink`` (s, mapping width), ``depth`` (m, number of
    3x3 mapping layers; each adds 1 pixel of receptive-field radius). PReLU after every conv but the
    last. The 9x9 stride-``scale`` deconvolution of the paper is replaced by its sub-pixel
    equivalent: a 3x3 conv to ``3 * scale**2`` channels + one PixelShuffle(scale) (a plain 3x3 conv
    at scale 1 or in ``pre`` mode).
    """

    def __init__(
        self,
        width: int = 56,
        shrink: int = 12,
        depth: int = 4,
        scale: int = 4,
        upsampling: str = "post",
        global_residual: bool = False,
    ):
        super().__init__()
        name = type(self).__name__
        width = _int_arg(name, "width", width)
        shrink = _int_arg(name, "shrink", shrink)
        depth = _int_arg(name, "depth", depth, minimum=0)
        self._setup(scale, upsampling, {"width": width, "shrink": shrink, "depth": depth}, global_residual)
        layers: list[nn.Module] = [_conv(3, width, 5), nn.PReLU(width), _conv(width, shrink, 1), nn.PReLU(shrink)]
        for _ in range(depth):
            layers += [_conv(shrink, shrink, 3), nn.PReLU(shrink)]
        layers += [_conv(shrink, width, 1), nn.PReLU(width)]
        self.features = nn.Sequential(*layers)
        s = self.body_scale
        self.last = nn.Sequential(_conv(width, 3 * s * s, 3), nn.PixelShuffle(s))
        # the paper's initialisation: He (MSRA) for the PReLU layers, a small Gaussian for the
        # reconstruction layer. PyTorch's default keeps only about a third of the variance per
        # layer, so a deep mapping stack (depth 16) starts with a vanishing signal and does not train.
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.25, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.last[0].weight, std=1e-3)
        nn.init.zeros_(self.last[0].bias)

    def _run(self, x: Tensor) -> Tensor:
        return self.last(self.features(x))


# ----------------------------------------------------------------------------- EDSR / SRResNet
class ResBlock(nn.Module):
    """conv-ReLU-conv, scaled by ``res_scale``, plus identity (no batch norm)."""

    def __init__(self, width: int, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(_conv(width, width), nn.ReLU(inplace=True), _conv(width, width))
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        res = self.body(x)
        return x + (res if self.res_scale == 1.0 else res * self.res_scale)


class EDSR(_RestorationNet):
    """EDSR (Lim et al., 2017): head conv, ``depth`` residual blocks, body conv + long skip,
    pixel-shuffle upsampler, tail conv.

    Knobs: ``width`` (feature channels), ``depth`` (residual blocks; each adds 2 pixels of
    receptive-field radius), ``res_scale`` (residual scaling, 0.1 in the large EDSR),
    ``mean_shift`` (subtract the DIV2K RGB mean before the network and add it back after).
    """

    def __init__(
        self,
        width: int = 64,
        depth: int = 16,
        res_scale: float = 1.0,
        scale: int = 4,
        upsampling: str = "post",
        mean_shift: bool = False,
        global_residual: bool = False,
    ):
        super().__init__()
        name = type(self).__name__
        width = _int_arg(name, "width", width)
        depth = _int_arg(name, "depth", depth, minimum=0)
        res_scale = _positive_float_arg(name, "res_scale", res_scale)
        mean_shift = _bool_arg(name, "mean_shift", mean_shift)
        self._setup(
            scale,
            upsampling,
            {"width": width, "depth": depth, "res_scale": res_scale, "mean_shift": mean_shift},
            global_residual,
        )
        self.mean_shift = mean_shift
        self.register_buffer("rgb_mean", torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = _conv(3, width)
        self.body = nn.Sequential(*[ResBlock(width, res_scale) for _ in range(depth)], _conv(width, width))
        self.upsampler = PixelShuffleUpsampler(width, self.body_scale)
        self.tail = _conv(width, 3)

    def _run(self, x: Tensor) -> Tensor:
        if self.mean_shift:
            x = x - self.rgb_mean
        feat = self.head(x)
        feat = feat + self.body(feat)
        out = self.tail(self.upsampler(feat))
        # with a global image residual the output is a residual: the mean must not come back
        if self.mean_shift and not self.residual:
            out = out + self.rgb_mean
        return out


class SRResNet(_RestorationNet):
    """MSRResNet-style SRResNet (Ledig et al., 2017; no batch norm, as in ESRGAN's MSRResNet).

    conv + LeakyReLU head, ``depth`` residual blocks (conv-ReLU-conv), pixel-shuffle upsampling
    with LeakyReLU after each stage, HR conv + LeakyReLU, output conv, plus the bilinearly
    upsampled input (``bicubic`` in ``pre`` mode). Knobs: ``width`` (feature channels),
    ``depth`` (residual blocks).
    """

    _post_residual = True
    _post_residual_mode = "bilinear"

    def __init__(self, width: int = 64, depth: int = 16, scale: int = 4, upsampling: str = "post"):
        super().__init__()
        name = type(self).__name__
        width = _int_arg(name, "width", width)
        depth = _int_arg(name, "depth", depth, minimum=0)
        self._setup(scale, upsampling, {"width": width, "depth": depth})

        def lrelu() -> nn.Module:
            return nn.LeakyReLU(0.1, inplace=True)

        self.head = nn.Sequential(_conv(3, width), lrelu())
        self.body = nn.Sequential(*[ResBlock(width) for _ in range(depth)])
        self.upsampler = PixelShuffleUpsampler(width, self.body_scale, act=lrelu)
        self.hr_conv = nn.Sequential(_conv(width, width), lrelu())
        self.last = _conv(width, 3)

    def _run(self, x: Tensor) -> Tensor:
        feat = self.body(self.head(x))
        return self.last(self.hr_conv(self.upsampler(feat)))


# ----------------------------------------------------------------------------- RCAN
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
            raise ValueError(f"ChannelAttention: mode must be 'global', 'local' or 'adaptive', got {mode!r}")
        if mode != "global" and pool_size is None:
            raise ValueError(f"ChannelAttention: pool_size is required for mode {mode!r}")
        self.mode = mode
        self.pool_size = pool_size
        hidden = width // reduction
        self.squeeze = nn.Sequential(
            nn.Conv2d(width, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, width, 1), nn.Sigmoid()
        )

    def forward(self, x: Tensor) -> Tensor:
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
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """``blocks`` RCABs + conv, with the group skip."""

    def __init__(self, width: int, blocks: Sequence[nn.Module]):
        super().__init__()
        self.body = nn.Sequential(*blocks, _conv(width, width))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class RCAN(_RestorationNet):
    """RCAN (Zhang et al., 2018): residual groups of residual channel-attention blocks.

    Knobs: ``width`` (feature channels), ``groups`` (residual groups), ``blocks`` (RCABs per
    group), ``reduction`` (channel reduction of the attention squeeze), ``attention`` (``"global"``,
    ``"none"``, ``"local"``, ``"adaptive"``; see :class:`ChannelAttention`), ``pool_size`` (window
    size k for ``"local"``, region count r per side for ``"adaptive"``; must be unset otherwise),
    ``half`` (attention only in the first ceil(blocks / 2) RCABs of each group).
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
                raise ValueError(
                    f"{name}: pool_size is required with attention={attention!r} "
                    "(window size for 'local', regions per side for 'adaptive')"
                )
            pool_size = _int_arg(name, "pool_size", pool_size)
        elif pool_size is not None:
            raise ValueError(
                f"{name}: pool_size only applies to attention 'local' or 'adaptive', "
                f"got pool_size={pool_size!r} with attention={attention!r}"
            )
        if attention != "none" and width // reduction < 1:
            raise ValueError(
                f"{name}: reduction must be <= width (squeeze width = width // "
                f"reduction), got reduction={reduction} with width={width}"
            )
        if half and attention == "none":
            raise ValueError(f"{name}: half=True needs an attention, got attention='none'")
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


# ----------------------------------------------------------------------------- SwinLite
def _window_partition(x: Tensor, window: int) -> Tensor:
    """(N, H, W, C) -> (N * windows, window * window, C), windows in raster order."""
    n, h, w, c = x.shape
    x = x.view(n, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def _window_merge(windows: Tensor, window: int, n: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`_window_partition`."""
    c = windows.shape[-1]
    x = windows.view(n, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h, w, c)


def shifted_window_mask(
    h: int, w: int, window: int, shift: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Additive attention mask (windows, L, L) for cyclically shifted windows: 0 between tokens
    of the same (pre-shift) region, -inf between tokens that the roll brought together."""
    labels = torch.zeros(1, h, w, 1, device=device)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    region = 0
    for hs in cuts:
        for ws in cuts:
            labels[:, hs, ws, :] = region
            region += 1
    labels = _window_partition(labels, window).squeeze(-1)  # windows, L
    same = labels[:, None, :] == labels[:, :, None]
    mask = torch.zeros(same.shape, device=device, dtype=dtype)
    return mask.masked_fill(~same, float("-inf"))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside window x window token windows, with a learned relative
    position bias ((2 * window - 1)^2 entries per head)."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads = heads
        self.window = window
        self.qk_scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        coords = torch.stack((ys.flatten(), xs.flatten()))  # 2, L
        rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # 2, L, L in [0, 2w-2]
        self.register_buffer("bias_index", rel[0] * (2 * window - 1) + rel[1], persistent=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, length, c = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # b, heads, L, c / heads
        attn = (q * self.qk_scale) @ k.transpose(-2, -1)
        bias = self.bias_table[self.bias_index.reshape(-1)].view(length, length, self.heads)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b // nw, nw, self.heads, length, length) + mask[None, :, None]
            attn = attn.view(b, self.heads, length, length)
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, length, c))


class LocalMLP(nn.Module):
    """The locally-enhanced feed-forward of Uformer (LeFF): linear, GELU, a depthwise 3 x 3
    convolution over the token grid, GELU, linear. Works on (N, H, W, C) tokens."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = F.gelu(self.fc1(x)).permute(0, 3, 1, 2)
        y = F.gelu(self.dw(y)).permute(0, 2, 3, 1)
        return self.fc2(y)


class SwinLayer(nn.Module):
    """Pre-norm Swin transformer layer: x + W-MSA(LN(x)), then x + MLP(LN(x)); ``shift`` > 0
    cyclically rolls the tokens by ``shift`` before the window attention (shifted windows);
    ``local_mlp`` uses :class:`LocalMLP` as the MLP."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float, local_mlp: bool = False):
        super().__init__()
        self.window = window
        self.shift = shift
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = (
            LocalMLP(dim, hidden)
            if local_mlp
            else nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x``: (N, H, W, C) with H, W multiples of the window; ``mask`` for shifted layers."""
        n, h, w, _ = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(_window_partition(y, self.window), mask if self.shift else None)
        y = _window_merge(y, self.window, n, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class SwinLite(_RestorationNet):
    """A small SwinIR-style network: conv head, ``depth`` Swin layers, LayerNorm + conv with the
    long skip, pixel-shuffle upsampler, conv tail.

    Knobs: ``width`` (embedding channels), ``depth`` (transformer layers), ``heads`` (attention
    heads, must divide ``width``), ``window`` (window side in tokens), ``mlp_ratio`` (MLP hidden
    width / ``width``), ``shift`` (every second layer uses windows shifted by ``window // 2``, so
    information crosses window borders). Inputs are reflect-padded (replicate when too small to
    reflect) to a multiple of ``window`` and the output is cropped back.
    """

    def __init__(
        self,
        width: int = 48,
        depth: int = 4,
        heads: int = 4,
        window: int = 8,
        mlp_ratio: float = 2.0,
        scale: int = 4,
        shift: bool = True,
        upsampling: str = "post",
        global_residual: bool = False,
        local_mlp: bool = False,
    ):
        super().__init__()
        name = type(self).__name__
        width = _int_arg(name, "width", width)
        depth = _int_arg(name, "depth", depth, minimum=0)
        heads = _int_arg(name, "heads", heads)
        window = _int_arg(name, "window", window)
        mlp_ratio = _positive_float_arg(name, "mlp_ratio", mlp_ratio)
        shift = _bool_arg(name, "shift", shift)
        local_mlp = _bool_arg(name, "local_mlp", local_mlp)
        if width % heads:
            raise ValueError(f"{name}: heads must divide width, got heads={heads}, width={width}")
        self._setup(
            scale,
            upsampling,
            {
                "width": width,
                "depth": depth,
                "heads": heads,
                "window": window,
                "mlp_ratio": mlp_ratio,
                "shift": shift,
                **({"local_mlp": True} if local_mlp else {}),
            },
            global_residual,
        )
        self.window = window
        self.shift_size = window // 2 if shift else 0
        self.head = _conv(3, width)
        self.layers = nn.ModuleList(
            SwinLayer(width, heads, window, self.shift_size if i % 2 else 0, mlp_ratio, local_mlp) for i in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.after = _conv(width, width)
        self.upsampler = PixelShuffleUpsampler(width, self.body_scale)
        self.tail = _conv(width, 3)

    @property
    def crop_multiple(self) -> int:
        """The input grid of the attention windows: a crop whose sides and origin lie on it is cut
        into the same windows as the whole image (the CEM runner's crop mode reads this)."""
        if self.upsampling == "pre":
            return self.window // math.gcd(self.window, self.scale)
        return self.window

    def _pad(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.window, (-w) % self.window
        if not (ph or pw):
            return x
        mode = "reflect" if ph < h and pw < w else "replicate"
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    def _run(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        feat = self.head(self._pad(x))
        tokens = feat.permute(0, 2, 3, 1)  # N, H, W, C
        mask = None
        if self.shift_size and len(self.layers) > 1:
            mask = shifted_window_mask(
                tokens.shape[1], tokens.shape[2], self.window, self.shift_size, device=x.device, dtype=tokens.dtype
            )
        for layer in self.layers:
            tokens = layer(tokens, mask)
        feat = feat + self.after(self.norm(tokens).permute(0, 3, 1, 2))
        out = self.tail(self.upsampler(feat))
        return out[..., : h * self.body_scale, : w * self.body_scale]


# ----------------------------------------------------------------------------- registry
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "srcnn": SRCNN,
    "fsrcnn": FSRCNN,
    "edsr": EDSR,
    "srresnet": SRResNet,
    "rcan": RCAN,
    "swinlite": SwinLite,
}


def build_architecture(name: str, **kwargs: Any) -> nn.Module:
    """Build the architecture registered as ``name`` (case-insensitive) with ``kwargs``."""
    key = name.lower() if isinstance(name, str) else name
    if key not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[key](**kwargs)
