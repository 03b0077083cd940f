"""The ROI objective that the gradient attributions differentiate.

LAM (Gu & Dong, CVPR 2021) attributes the *gradient magnitude* of the ROI of the output: the
objective is large where the restored ROI has edges and texture, so the map answers "which input
pixels make the model draw structure in the ROI". We follow the paper's definition:

    F(y) = sum over ROI pixels (i, j) and over channels c of
           sqrt( (y[c, i+1, j] - y[c, i, j])^2 + (y[c, i, j+1] - y[c, i, j])^2 + eps )

- forward differences on the *output* grid; at the last row / column of the image the missing
  neighbour is the pixel itself (replicate padding, difference 0), so a ROI touching the bottom or
  right edge is allowed;
- channels: ``"rgb"`` (default, as the LAM reference code: the magnitude of every RGB channel,
  summed) or ``"grey"`` (one magnitude on the BT.601 luma ``0.299 R + 0.587 G + 0.114 B``);
- ``eps`` (default 1e-12) keeps the square root differentiable where the output is flat (its
  gradient there is 0 instead of NaN); it adds ``sqrt(eps)`` per term to the value, nothing to the
  gradient elsewhere;
- the output is used as the model returns it (the [0, 1] scale of cem_lab, not quantized: rounding
  has no gradient).

``"roi_sum"``: the plain sum of the ROI output values (all channels), linear in the output; the
tests use it because LAM and IG then have closed forms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cem_lab.attribution.base import AttributionError
from cem_lab.causal.grid import Roi
from cem_lab.metrics import rgb_to_y

OBJECTIVES = ("gradient", "roi_sum")
CHANNELS = ("rgb", "grey")


class RoiObjective:
    """A scalar per output image: ``objective(output (N, C, H, W)) -> (N,)``.

    ``kind``: ``"gradient"`` (LAM's gradient magnitude, default) or ``"roi_sum"``; ``channels``:
    ``"rgb"`` or ``"grey"`` (see the module docstring).
    """

    def __init__(self, roi, kind: str = "gradient", channels: str = "rgb", eps: float = 1e-12):
        try:
            self.roi = Roi.parse(roi)
        except ValueError as err:
            raise AttributionError(str(err)) from err
        if kind not in OBJECTIVES:
            raise AttributionError(f"unknown objective {kind!r}; choose one of {list(OBJECTIVES)}")
        if channels not in CHANNELS:
            raise AttributionError(f"channels must be one of {list(CHANNELS)}, got {channels!r}")
        if not eps >= 0:
            raise AttributionError(f"eps must be >= 0, got {eps}")
        self.kind, self.channels, self.eps = kind, channels, float(eps)

    @property
    def name(self) -> str:
        """``kind``, suffixed with ``_grey`` for the grey channels."""
        return self.kind if self.channels == "rgb" else f"{self.kind}_{self.channels}"

    def check(self, out_h: int, out_w: int) -> None:
        """Refuse a ROI that does not lie inside an ``out_h`` x ``out_w`` output."""
        r = self.roi
        if r.size <= 0:
            raise AttributionError(f"ROI size must be positive, got {r.size}")
        if r.top < 0 or r.left < 0 or r.top + r.size > out_h or r.left + r.size > out_w:
            hint = (
                f"top must be in [0, {out_h - r.size}] and left in [0, {out_w - r.size}]"
                if r.size <= min(out_h, out_w)
                else f"a ROI of size {r.size} does not fit; use a smaller size"
            )
            raise AttributionError(
                f"ROI (top {r.top}, left {r.left}, size {r.size}) lies outside the "
                f"{out_h}x{out_w} model output (ROI in output pixels); {hint}"
            )

    def _channels(self, y: Tensor) -> Tensor:
        if self.channels == "rgb":
            return y
        if y.shape[1] != 3:
            raise AttributionError(f"channels='grey' needs an RGB output, got {y.shape[1]} channels")
        return rgb_to_y(y, swing="full")

    def __call__(self, output: Tensor) -> Tensor:
        """The objective of each output image: (N, C, H, W) -> (N,)."""
        self.check(output.shape[-2], output.shape[-1])
        y0, y1, x0, x1 = self.roi.box
        if self.kind == "roi_sum":
            return output[:, :, y0:y1, x0:x1].sum(dim=(1, 2, 3))
        y = self._channels(output)
        # the ROI plus one row / column below and right of it (replicated at the image edge)
        part = y[:, :, y0 : min(y1 + 1, y.shape[-2]), x0 : min(x1 + 1, y.shape[-1])]
        part = F.pad(
            part, (0, (x1 + 1) - min(x1 + 1, y.shape[-1]), 0, (y1 + 1) - min(y1 + 1, y.shape[-2])), mode="replicate"
        )
        dy = part[:, :, 1:, :-1] - part[:, :, :-1, :-1]
        dx = part[:, :, :-1, 1:] - part[:, :, :-1, :-1]
        return torch.sqrt(dy * dy + dx * dx + self.eps).sum(dim=(1, 2, 3))

    def describe(self) -> dict:
        """Kind, channels, eps and ROI as a JSON-ready dict."""
        return {"name": self.kind, "channels": self.channels, "eps": self.eps, "roi": self.roi.as_list()}


ObjectiveLike = str | RoiObjective


def make_objective(objective: ObjectiveLike, roi, channels: str = "rgb") -> RoiObjective:
    """An objective from a name (``"gradient"``, ``"roi_sum"``) or a ready :class:`RoiObjective`.

    A ready objective must have the same ROI as the attribution (it is the ROI of the map).
    """
    if isinstance(objective, RoiObjective):
        if objective.roi != Roi.parse(roi):
            raise AttributionError(
                f"the objective's ROI {objective.roi.as_list()} is not the attribution's ROI {Roi.parse(roi).as_list()}"
            )
        return objective
    if isinstance(objective, str):
        return RoiObjective(roi, objective, channels)
    raise AttributionError(f"objective must be one of {list(OBJECTIVES)} or a RoiObjective, got {objective!r}")
