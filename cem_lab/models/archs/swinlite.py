"""SwinLite, a small SwinIR-style network: J. Liang, J. Cao, G. Sun, K. Zhang, L. Van Gool and
R. Timofte, "SwinIR: Image Restoration Using Swin Transformer", ICCV Workshops 2021, built from the
shifted-window attention of Z. Liu et al., "Swin Transformer: Hierarchical Vision Transformer using
Shifted Windows", ICCV 2021, with the optional locally-enhanced feed-forward (LeFF) of Z. Wang et al.,
"Uformer: A General U-Shaped Transformer for Image Restoration", CVPR 2022.

Conventions shared by all architectures (scale, pre/post upsampling, global residual) are in
:mod:`cem_lab.models.archs.common`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cem_lab.errors import InputError
from cem_lab.models.archs.common import (
    PixelShuffleUpsampler,
    _bool_arg,
    _conv,
    _int_arg,
    _positive_float_arg,
    _RestorationNet,
)

__all__ = ["LocalMLP", "SwinLayer", "SwinLite", "WindowAttention", "shifted_window_mask"]


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
        """Self-attention within each window of (windows x N, L, C) tokens; ``mask``: :func:`shifted_window_mask` for
        shifted windows."""
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
        """(N, H, W, C) tokens in and out."""
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

    Inputs are reflect-padded (replicate when too small to reflect) to a multiple of ``window`` and
    the output is cropped back.

    Args:
        width: embedding channels.
        depth: transformer layers.
        heads: attention heads (must divide ``width``).
        window: window side in tokens.
        mlp_ratio: MLP hidden width / ``width``.
        scale: 1, 2, 3 or 4.
        shift: every second layer uses windows shifted by ``window // 2``, so information crosses
            window borders.
        upsampling: ``"post"`` or ``"pre"``.
        global_residual: in ``post`` mode at scale > 1, add the bicubic-upsampled input.
        local_mlp: use the locally-enhanced feed-forward (:class:`LocalMLP`) as the MLP.
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
            raise InputError(f"{name}: heads must divide width, got heads={heads}, width={width}")
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
