"""What the restoration architectures share: argument checks, the upsampler, the forward base class.

The architectures compared in the CEM studies (SRCNN, FSRCNN, EDSR, SRResNet, RCAN, SwinLite; one
module each in :mod:`cem_lab.models.archs`) derive from :class:`_RestorationNet`.

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

import torch.nn.functional as F
from torch import Tensor, nn

from cem_lab.errors import InputError

SCALES = (1, 2, 3, 4)
UPSAMPLING = ("post", "pre")

__all__ = ["SCALES", "UPSAMPLING", "PixelShuffleUpsampler", "ResBlock", "upsample"]


# ----------------------------------------------------------------------------- argument checks
def _int_arg(model: str, name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{model}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive_float_arg(model: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{model}: {name} must be a positive finite number, got {value!r}")
    return float(value)


def _bool_arg(model: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{model}: {name} must be true or false, got {value!r}")
    return value


def _choice_arg(model: str, name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise InputError(f"{model}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value.lower()


def _scale_arg(model: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value not in SCALES:
        raise InputError(f"{model}: scale must be one of {', '.join(map(str, SCALES))}, got {value!r}")
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
            raise InputError(f"{type(self).__name__} expects a (N, 3, h, w) batch, got shape {tuple(x.shape)}")
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


class ResBlock(nn.Module):
    """conv-ReLU-conv, scaled by ``res_scale``, plus identity (no batch norm): the block of EDSR and
    MSRResNet.

    Args:
        width: channels in and out.
        res_scale: factor on the residual branch.
    """

    def __init__(self, width: int, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(_conv(width, width), nn.ReLU(inplace=True), _conv(width, width))
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        """x + res_scale * body(x)."""
        res = self.body(x)
        return x + (res if self.res_scale == 1.0 else res * self.res_scale)
