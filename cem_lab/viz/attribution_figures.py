"""Figures of `cem-attribution`: the CEM beside gradient attributions, and the deletion curves.

- :func:`save_attribution_panel`: the degraded input with the ROI box, then one block map per
  method (LAM, integrated gradients, saliency, CEM) over the input, each with its colour bar, the
  share of the image it marks and its rank correlation with the CEM in the title. Colours are those
  of :mod:`cem_lab.viz.cem_maps` (positive red, negative blue, zero white, the ROI's blocks
  green; a sign-preserving power mapping); every map has its own symmetric range.
- :func:`save_deletion_curves`: one panel per intervention (LV, zeros, mean, blur): the ROI metric
  against the share of blocks deleted (solid) or inserted (dashed), per method, with the areas.

Figures are small (dpi 100), written atomically, with no global matplotlib state (:mod:`cem_lab.viz.canvas`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cem_lab.io import PathLike
from cem_lab.viz.canvas import add_axes_in, new_figure, save_figure
from cem_lab.viz.cem_maps import cem_overlay, draw_roi_box, effect_mappable, resize_to

GAMMA = 1.2
METHOD_COLORS: dict[str, str] = {"lam": "#ff7f0e", "ig": "#2ca02c", "saliency": "#9467bd", "cem": "#000000"}
_FALLBACK_COLORS = ("#1f77b4", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


@dataclass
class MapPanel:
    """One block map of the panel: ``values`` (rows, cols) drawn over [-bound, bound]."""

    name: str  #: the method's key (lam, ig, saliency, cem)
    label: str  #: its title
    values: np.ndarray
    bound: float
    unit: str = ""
    lines: Sequence[str] = ()  #: further title lines (share marked, rank correlation)


def symmetric_bound(values: np.ndarray, roi_mask: np.ndarray) -> float:
    """The largest |value| outside the ROI (1.0 when there is none): the colour range of a map."""
    v = np.abs(np.asarray(values, dtype=np.float64)[~np.asarray(roi_mask, dtype=bool)])
    v = v[np.isfinite(v)]
    m = float(v.max()) if v.size else 0.0
    return m if m > 0 else 1.0


def _input_at_output_size(image: np.ndarray, h: int, w: int) -> np.ndarray:
    return resize_to(np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[..., :3]), h, w)


def _tick(value: float) -> str:
    return f"{value:.2g}".replace("-", "\u2212")


def save_attribution_panel(
    path: PathLike,
    *,
    input_rgb: np.ndarray,
    roi: Sequence[int],
    block: int,
    output_shape: Sequence[int],
    roi_mask: np.ndarray,
    panels: Sequence[MapPanel],
    title: str = "",
    dpi: int = 100,
) -> str:
    """Input with the ROI box | one overlay per map (with a colour bar), PNG. Returns the path."""
    h, w = int(output_shape[0]), int(output_shape[1])
    roi_mask = np.asarray(roi_mask, dtype=bool)
    inp = _input_at_output_size(input_rgb, h, w)
    aspect = w / h
    pw = float(np.clip(2.4 * aspect, 1.6, 3.4))
    ph = float(np.clip(pw / aspect, 1.2, 3.4))
    gap, margin = 0.25, 0.15
    n_lines = 1 + max([len(p.lines) for p in panels] + [0])
    head = (0.4 if title else 0.0) + 0.18 * n_lines + 0.1
    below = 0.55
    fig_w = margin * 2 + (len(panels) + 1) * pw + len(panels) * gap
    fig_h = head + ph + below
    fig = new_figure(fig_w, fig_h, dpi=dpi)
    top = fig_h - head

    ax = add_axes_in(fig, margin, top - ph, pw, ph)
    ax.imshow(draw_roi_box(inp, roi), interpolation="antialiased")
    ax.set_title(f"input with the ROI\n{input_rgb.shape[0]}\u00d7{input_rgb.shape[1]}, ROI {list(roi)}", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    for k, p in enumerate(panels, start=1):
        left = margin + k * (pw + gap)
        ax = add_axes_in(fig, left, top - ph, pw, ph)
        values = np.nan_to_num(np.asarray(p.values, dtype=np.float64), nan=0.0)
        bound = float(p.bound) if math.isfinite(p.bound) and p.bound > 0 else 1.0
        ax.imshow(cem_overlay(values, roi_mask, roi, block, (h, w), input_rgb, bound), interpolation="nearest")
        ax.set_title("\n".join([p.label, *p.lines]), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        cax = add_axes_in(fig, left + 0.1 * pw, top - ph - 0.22, 0.8 * pw, 0.1)
        cbar = fig.colorbar(effect_mappable(bound, GAMMA), cax=cax, orientation="horizontal")
        cbar.set_ticks([-bound, 0.0, bound])
        unit = f" {p.unit}" if p.unit else ""
        cbar.set_ticklabels([f"{_tick(-bound)}{unit}", "0", f"+{_tick(bound)}{unit}"])
        cax.tick_params(labelsize=6, length=2)
    if title:
        fig.text(0.5, 1.0 - 0.08 / fig_h, title, ha="center", va="top", fontsize=10)
    return save_figure(fig, path)


def _color(method: str, k: int) -> str:
    return METHOD_COLORS.get(method, _FALLBACK_COLORS[k % len(_FALLBACK_COLORS)])


def save_deletion_curves(
    path: PathLike,
    *,
    curves: Mapping[str, Mapping[str, Mapping[str, Mapping]]],
    baselines: Mapping[str, float],
    labels: Mapping[str, str] | None = None,
    metric: str = "psnr",
    unit: str = "dB",
    dpi: int = 100,
) -> str:
    """``curves[intervention][method][kind]`` = ``{"fractions", "values", "auc"}`` (kind: deletion,
    insertion); ``baselines[intervention]``: the metric with nothing replaced. PNG; returns the path."""
    labels = dict(labels or {})
    names = list(curves)
    n = max(1, len(names))
    n_methods = max([len(curves[k]) for k in names] + [1])
    pw, ph, gap, margin = 3.0, 2.2, 0.7, 0.75
    legend_h = 0.45 + 0.14 * n_methods
    bottom = 0.45 + legend_h
    fig_w = margin + n * pw + (n - 1) * gap + 0.2
    fig_h = bottom + ph + 0.55
    fig = new_figure(fig_w, fig_h, dpi=dpi)
    ylabel = f"ROI {metric}" + (f" ({unit})" if unit else "")
    for i, name in enumerate(names):
        ax = add_axes_in(fig, margin + i * (pw + gap), bottom, pw, ph)
        for k, (method, kinds) in enumerate(curves[name].items()):
            color = _color(method, k)
            parts = []
            for kind, style in (("deletion", "-"), ("insertion", "--")):
                c = kinds.get(kind)
                if c is None:
                    continue
                ax.plot(np.asarray(c["fractions"]), np.asarray(c["values"]), style, color=color, linewidth=1.2)
                parts.append(f"{kind[:3]} {c['auc']:.3f}")
            ax.plot([], [], "-", color=color, label=f"{labels.get(method, method)}: {', '.join(parts)}")
        if name in baselines and baselines[name] is not None and math.isfinite(baselines[name]):
            ax.axhline(baselines[name], color="0.5", linestyle=":", linewidth=0.8)
        ax.set_title(f"{name}: deletion (solid), insertion (dashed)", fontsize=8)
        ax.set_xlabel("share of the blocks outside the ROI replaced", fontsize=7)
        if i == 0:
            ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlim(0, 1)
        ax.legend(
            fontsize=6.5,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.22),
            frameon=False,
            title=f"AUC ({unit})" if unit else "AUC",
            title_fontsize=6.5,
        )
    fig.text(
        0.5,
        1.0 - 0.1 / fig_h,
        "faithfulness of each map's block ranking (lower deletion AUC and higher insertion AUC = more faithful)",
        ha="center",
        va="top",
        fontsize=9,
    )
    return save_figure(fig, path)
