"""ROI quality metrics computed on the device (torch only, no numpy in the hot path).

Conventions follow BasicSR: model outputs are quantized to 8-bit grey levels before
measuring, ``crop_border`` pixels are cut from every side, and ``test_y_channel``
measures the (unrounded) Y channel of the ITU-R BT.601 YCbCr transform.

Images are ``(N, C, H, W)`` tensors; quality values come back as float64 ``(N,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cem_lab.errors import InputError

__all__ = [
    "BT601_LUMA",
    "METRIC_NAMES",
    "SSIM_WINDOW",
    "RoiMetric",
    "psnr",
    "quantize_uint8",
    "rgb_to_y",
    "ssim",
]

METRIC_NAMES: tuple[str, ...] = ("psnr", "ssim", "output_change")
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_UNITS = {"psnr": "dB", "ssim": "", "output_change": "grey levels"}
#: ITU-R BT.601 luma weights of R, G, B: ``Y' = 0.299 R + 0.587 G + 0.114 B``. The one source of these
#: weights in cem_lab: the studio-swing Y below, the attribution's grey objective, the ROI placement's
#: texture map and the patch bank's OpenCV fixed-point grey all derive from it.
BT601_LUMA: tuple[float, float, float] = (0.299, 0.587, 0.114)
# BT.601 "studio swing" luma weights for 0..255 RGB (BasicSR ``rgb2ycbcr(y_only=True)``): 219 / 255 of
# the range, from 16. 219 * BT601_LUMA == (65.481, 128.553, 24.966) exactly, as floats.
_Y_WEIGHTS = tuple(219 * w for w in BT601_LUMA)


# ----------------------------------------------------------------------------------------
# Elementary functions
# ----------------------------------------------------------------------------------------
def quantize_uint8(x: Tensor) -> Tensor:
    """Map [0, 1] images to 8-bit grey levels: ``round(clamp(x, 0, 1) * 255)``, kept as float.

    Rounding is half-to-even (as ``torch.round`` / ``numpy.round``). NaNs propagate.
    """
    if not x.is_floating_point():
        raise TypeError(f"quantize_uint8 expects a floating-point tensor in [0, 1], got {x.dtype}")
    return torch.round(x.clamp(0.0, 1.0) * 255.0)


def rgb_to_y(x: Tensor, swing: str = "studio") -> Tensor:
    """BT.601 luma of RGB images (N, 3, H, W) -> (N, 1, H, W), not rounded.

    ``swing="studio"`` (default; ``x`` on 0..255): BasicSR's ``test_y_channel`` Y in [16, 235],
    ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``. ``swing="full"`` (any scale, kept):
    ``Y' = 0.299 R + 0.587 G + 0.114 B`` (:data:`BT601_LUMA`), summed over the channel dimension
    in ``x``'s dtype, differentiable (the attribution's grey objective). Two conventions because two
    callers need them: the PSNR-Y of SR papers, and a luma that keeps the scale of a model output.
    Each branch keeps the arithmetic its callers have always used, so results are bit-identical.
    """
    if swing not in ("studio", "full"):
        raise InputError(f"rgb_to_y: swing must be 'studio' or 'full', got {swing!r}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"rgb_to_y expects an (N, 3, H, W) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    if swing == "full":
        w = torch.tensor(BT601_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    wr, wg, wb = _Y_WEIGHTS
    return 16.0 + (wr * r + wg * g + wb * b) / 255.0


def _check_pair(a: Tensor, b: Tensor, what: str) -> None:
    """Both (N, C, H, W); equal shapes, or ``b`` with batch 1 broadcast against ``a``."""
    if a.ndim != 4 or b.ndim != 4:
        raise InputError(f"{what} expects (N, C, H, W) tensors, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1:] != b.shape[1:] or b.shape[0] not in (1, a.shape[0]):
        raise InputError(
            f"{what}: shape mismatch between {tuple(a.shape)} and {tuple(b.shape)} "
            "(shapes must be equal, or the second may have batch size 1)"
        )


def _mse64(a: Tensor, b: Tensor) -> Tensor:
    """Per-image mean squared error over C, H, W in float64 -> (N,)."""
    diff = a.to(torch.float64) - b.to(torch.float64)
    return diff.square().mean(dim=(1, 2, 3))


def psnr(a255: Tensor, b255: Tensor) -> Tensor:
    """Per-image PSNR in dB (float64, shape (N,)) of 0..255 images; identical images give +inf.

    ``10 * log10(255^2 / mse)`` with the MSE taken in float64 over C, H, W. ``b255`` may
    have batch size 1 (a shared reference).
    """
    _check_pair(a255, b255, "psnr")
    mse = _mse64(a255, b255)
    return 10.0 * torch.log10((255.0**2) / mse)  # mse == 0 -> 255^2/0 = inf -> +inf dB


def _gaussian_1d(size: int, sigma: float, device: torch.device) -> Tensor:
    """Normalized 1-D Gaussian of odd length ``size`` in float64."""
    half = (size - 1) / 2.0
    x = torch.arange(size, dtype=torch.float64, device=device) - half
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _check_ssim_size(h: int, w: int) -> None:
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise InputError(
            f"SSIM needs an ROI of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels (after crop_border), got {h}x{w}"
        )


def ssim(a255: Tensor, b255: Tensor) -> Tensor:
    """Per-image SSIM (float64, shape (N,)) of 0..255 images (Wang et al. 2004 / BasicSR).

    11x11 Gaussian window (sigma 1.5), ``C1 = (0.01*255)^2``, ``C2 = (0.03*255)^2``,
    'valid' filtering (no padding), mean over the SSIM map, then over channels.
    The separable window is applied as two depthwise ``conv2d`` passes in float64.
    ``b255`` may have batch size 1 (a shared reference).
    """
    _check_pair(a255, b255, "ssim")
    n, c, h, w = a255.shape
    _check_ssim_size(h, w)
    a = a255.to(torch.float64)
    b = b255.to(torch.float64).expand_as(a)

    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    # Filter the five moment images in one grouped convolution: (N, 5C, H, W).
    stack = torch.cat((a, b, a * a, b * b, a * b), dim=1)
    g = _gaussian_1d(SSIM_WINDOW, SSIM_SIGMA, a.device)
    groups = 5 * c
    k_v = g.view(1, 1, SSIM_WINDOW, 1).expand(groups, 1, SSIM_WINDOW, 1)
    k_h = g.view(1, 1, 1, SSIM_WINDOW).expand(groups, 1, 1, SSIM_WINDOW)
    filt = F.conv2d(F.conv2d(stack, k_v, groups=groups), k_h, groups=groups)
    mu_a, mu_b, e_aa, e_bb, e_ab = filt.split(c, dim=1)

    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = e_aa - mu_aa
    var_b = e_bb - mu_bb
    cov = e_ab - mu_ab
    ssim_map = ((2.0 * mu_ab + c1) * (2.0 * cov + c2)) / ((mu_aa + mu_bb + c1) * (var_a + var_b + c2))
    # Mean over each channel's map, then over channels == mean over (C, H', W').
    return ssim_map.mean(dim=(1, 2, 3))


# ----------------------------------------------------------------------------------------
# ROI metric
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoiMetric:
    """Quality of an ROI of model outputs against a reference, on the device.

    Outputs and reference are quantized to 8-bit grey levels (``quantize_uint8``),
    ``crop_border`` pixels are cut from each side, and with ``test_y_channel`` only the
    Y channel (``rgb_to_y``) is measured. Names:

    * ``"psnr"``: PSNR in dB against the ground-truth ROI.
    * ``"ssim"``: SSIM (unitless) against the ground-truth ROI; the cropped ROI must be
      at least 11x11.
    * ``"output_change"``: ground-truth free. The reference is the *un-intervened* model
      output ROI and the metric is the NEGATIVE root-mean-square difference in grey
      levels (0..255 scale) between the outputs and that reference. Hence
      ``M(un-intervened) = 0`` and the causal effect ``CE = M0 - E[M] = E[RMS change] >= 0``
      is a magnitude of influence without a sign: it says how much an intervention moves
      the output, not whether it makes it better or worse.

    All three are "higher is better" under these sign conventions.
    """

    name: str = "psnr"
    crop_border: int = 0
    test_y_channel: bool = False

    def __post_init__(self) -> None:
        if self.name not in METRIC_NAMES:
            raise InputError(f"unknown metric {self.name!r}; expected one of {', '.join(METRIC_NAMES)}")
        if isinstance(self.crop_border, bool) or not isinstance(self.crop_border, int):
            raise TypeError(f"crop_border must be an int, got {self.crop_border!r}")
        if self.crop_border < 0:
            raise InputError(f"crop_border must be >= 0, got {self.crop_border}")

    @property
    def unit(self) -> str:
        """Unit of the metric values: ``"dB"``, ``""`` or ``"grey levels"``."""
        return _UNITS[self.name]

    @property
    def higher_is_better(self) -> bool:
        """True for all metrics (output_change is a negated RMS)."""
        return True

    @property
    def channels(self) -> int:
        """Channels of the prepared reference (1 with ``test_y_channel``, else 3)."""
        return 1 if self.test_y_channel else 3

    def _to_space(self, x: Tensor, what: str) -> Tensor:
        """Quantize, crop and optionally convert (N, 3, h, w) images to the metric's space."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"{what} must have shape (N, 3, h, w), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        cb = self.crop_border
        if h <= 2 * cb or w <= 2 * cb:
            raise InputError(
                f"{what} of size {h}x{w} is too small for crop_border={cb} (needs more than {2 * cb}x{2 * cb} pixels)"
            )
        q = quantize_uint8(x)
        if cb:
            q = q[..., cb : h - cb, cb : w - cb]
        if self.test_y_channel:
            q = rgb_to_y(q)
        if self.name == "ssim":
            _check_ssim_size(*q.shape[-2:])
        return q

    def prepare(self, reference_roi: Tensor) -> Tensor:
        """Cache the (1, 3, h, w) reference ROI in [0, 1] in the metric's space."""
        if reference_roi.ndim != 4 or reference_roi.shape[0] != 1:
            raise InputError(f"reference_roi must have shape (1, 3, h, w), got {tuple(reference_roi.shape)}")
        return self._to_space(reference_roi, "reference_roi")

    def __call__(self, outputs_roi: Tensor, prepared_reference: Tensor) -> Tensor:
        """Metric of each raw output ROI (B, 3, h, w) against the prepared reference -> (B,) float64."""
        ref = prepared_reference
        if ref.ndim != 4 or ref.shape[0] != 1 or ref.shape[1] != self.channels:
            raise InputError(
                f"prepared_reference has shape {tuple(ref.shape)}; expected (1, {self.channels}, h, w) "
                "from RoiMetric.prepare with the same settings"
            )
        cb = self.crop_border
        expected = (3, ref.shape[2] + 2 * cb, ref.shape[3] + 2 * cb)
        if outputs_roi.ndim != 4 or tuple(outputs_roi.shape[1:]) != expected:
            raise InputError(
                f"outputs_roi shape {tuple(outputs_roi.shape)} does not match the reference: prepared "
                f"reference shape {tuple(ref.shape)} (crop_border={cb}, test_y_channel="
                f"{self.test_y_channel}) needs outputs of shape (B, {', '.join(map(str, expected))})"
            )
        out = self._to_space(outputs_roi, "outputs_roi")
        if self.name == "psnr":
            return psnr(out, ref)
        if self.name == "ssim":
            return ssim(out, ref)
        return -torch.sqrt(_mse64(out, ref))
