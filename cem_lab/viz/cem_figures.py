"""Figures for Causal Effect Maps (CEM).

A CEM is a (rows, cols) array of causal effects in dB, one value per block of
``block`` x ``block`` output pixels (blocks at the right/bottom edge may be partial).
Positive effects are drawn red, negative blue, zero white (matplotlib's "seismic"
colormap, after a sign-preserving power mapping); the ROI's blocks are pure green.

Every file is written atomically (:func:`cem_lab.io.atomic_path`). Figures are built
with :class:`matplotlib.figure.Figure` and :class:`FigureCanvasAgg` directly, so no
global matplotlib / pyplot state is touched.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colorbar import Colorbar
from matplotlib.colors import FuncNorm
from matplotlib.figure import Figure
from matplotlib.patches import Wedge
from matplotlib.transforms import offset_copy
from PIL import Image

from cem_lab.errors import InputError
from cem_lab.io import PathLike, atomic_path

Roi = Sequence[int]

TASK_BOUNDS: dict[str, float] = {"sr": 2.5, "dn": 1.0, "dr": 2.0}
"""Symmetric colour bounds (dB) per task: super-resolution, denoising, deraining."""

ROI_COLOR: tuple[int, int, int] = (0, 255, 0)
PIE_COLORS: dict[str, str] = {"positive": "#d62728", "negative": "#1f4fd6", "zero": "#d3d3d3"}
COUNT_KEYS: tuple[str, ...] = ("positive", "negative", "zero")
FIGURE_FILES: dict[str, str] = {
    "cem_overlay": "cem_overlay.png",
    "colorbar": "colorbar.png",
    "pie": "pie.png",
    "restored_roi": "restored_roi.png",
    "cem_panel": "cem_panel.png",
}
_CMAP_NAME = "seismic"


# --------------------------------------------------------------------------- validation


def _check_bound(bound: float, gamma: float) -> tuple[float, float]:
    bound, gamma = float(bound), float(gamma)
    if not (math.isfinite(bound) and bound > 0):
        raise InputError(f"bound must be a finite number > 0, got {bound}")
    if not (math.isfinite(gamma) and gamma > 0):
        raise InputError(f"gamma must be a finite number > 0, got {gamma}")
    return bound, gamma


def _check_grid(
    effect: np.ndarray,
    roi_mask: np.ndarray,
    classification: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    effect = np.asarray(effect, dtype=np.float64)
    roi_mask = np.asarray(roi_mask)
    if effect.ndim != 2 or effect.size == 0:
        raise InputError(f"effect must be a non-empty (rows, cols) array, got shape {effect.shape}")
    if roi_mask.shape != effect.shape:
        raise InputError(f"roi_mask shape {roi_mask.shape} does not match effect shape {effect.shape}")
    if roi_mask.dtype != bool:
        if not np.isin(roi_mask, (0, 1)).all():
            raise InputError("roi_mask must be boolean (or hold only 0 and 1)")
        roi_mask = roi_mask.astype(bool)
    if classification is not None:
        classification = np.asarray(classification)
        if classification.shape != effect.shape:
            raise InputError(f"classification shape {classification.shape} does not match effect shape {effect.shape}")
        if not np.isin(classification, (-1, 0, 1)).all():
            raise InputError("classification must hold only -1, 0 and +1")
    return effect, roi_mask


def _check_output_shape(grid_shape: tuple[int, int], block: int, output_shape: Sequence[int]) -> tuple[int, int]:
    if isinstance(block, bool) or int(block) != block or block <= 0:
        raise InputError(f"block must be a positive integer, got {block!r}")
    block = int(block)
    if len(output_shape) < 2:
        raise InputError(f"output_shape must be (H, W), got {tuple(output_shape)}")
    h, w = int(output_shape[0]), int(output_shape[1])
    if h <= 0 or w <= 0:
        raise InputError(f"output_shape must be positive, got {(h, w)}")
    rows, cols = grid_shape
    want = (math.ceil(h / block), math.ceil(w / block))
    if (rows, cols) != want:
        raise InputError(
            f"output_shape {(h, w)} with block {block} gives a {want[0]}x{want[1]} grid, but the map is {rows}x{cols}"
        )
    return h, w


def _check_roi(roi: Roi, h: int, w: int) -> tuple[int, int, int]:
    if len(roi) != 3:
        raise InputError(f"roi must be (top, left, size), got {roi!r}")
    top, left, size = (int(v) for v in roi)
    if size <= 0 or top < 0 or left < 0 or top + size > h or left + size > w:
        raise InputError(f"roi (top={top}, left={left}, size={size}) does not fit in the {h}x{w} output")
    return top, left, size


def _as_rgb_uint8(image: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"{name} must be an (H, W, 3) image, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and np.nanmin(arr) >= 0 and np.nanmax(arr) <= 1:
            arr = np.round(np.nan_to_num(arr) * 255).astype(np.uint8)
        else:
            raise InputError(f"{name} must be uint8 (or floats in [0, 1]), got dtype {arr.dtype}")
    return np.ascontiguousarray(arr)


def _check_counts(counts: Mapping[str, int]) -> dict[str, int]:
    unknown = set(counts) - set(COUNT_KEYS)
    if unknown:
        raise InputError(f"counts has unknown keys {sorted(unknown)}; expected {list(COUNT_KEYS)}")
    out: dict[str, int] = {}
    for key in COUNT_KEYS:
        value = counts.get(key, 0)
        if int(value) != value or value < 0:
            raise InputError(f"counts[{key!r}] must be a non-negative integer, got {value!r}")
        out[key] = int(value)
    return out


# --------------------------------------------------------------------------- colour mapping


def _power_forward(x: np.ndarray, gamma: float) -> np.ndarray:
    return np.sign(x) * np.abs(x) ** (1.0 / gamma)


def _power_inverse(y: np.ndarray, gamma: float) -> np.ndarray:
    return np.sign(y) * np.abs(y) ** gamma


def _effect_norm(bound: float, gamma: float) -> FuncNorm:
    """Norm [-bound, bound] -> [0, 1] with the same power mapping as :func:`effect_to_rgb`."""
    return FuncNorm(
        (
            lambda x: _power_forward(np.asarray(x, dtype=float), gamma),
            lambda y: _power_inverse(np.asarray(y, dtype=float), gamma),
        ),
        vmin=-bound,
        vmax=bound,
        clip=True,
    )


def effect_mappable(bound: float, gamma: float) -> ScalarMappable:
    return ScalarMappable(norm=_effect_norm(bound, gamma), cmap=colormaps[_CMAP_NAME])


def effect_to_rgb(effect: np.ndarray, roi_mask: np.ndarray, bound: float, gamma: float = 1.2) -> np.ndarray:
    """Colour a CEM: (rows, cols) dB -> (rows, cols, 3) uint8.

    Values are clipped to [-bound, bound], scaled to [-1, 1], passed through
    ``sign(v) * |v| ** (1 / gamma)`` and coloured with "seismic" (-1 blue, 0 white,
    +1 red). Non-finite values are drawn as 0 (white); ROI blocks are pure green.
    """
    bound, gamma = _check_bound(bound, gamma)
    effect, roi_mask = _check_grid(effect, roi_mask)
    v = np.clip(np.nan_to_num(effect, nan=0.0, posinf=bound, neginf=-bound), -bound, bound) / bound
    v = _power_forward(v, gamma)
    rgba = colormaps[_CMAP_NAME]((v + 1.0) / 2.0, bytes=True)
    rgb = np.ascontiguousarray(rgba[..., :3])
    rgb[roi_mask] = ROI_COLOR
    return rgb


# --------------------------------------------------------------------------- images


def draw_roi_box(
    image_uint8: np.ndarray,
    roi: Roi,
    color: Sequence[int] = ROI_COLOR,
    thickness: int = 2,
) -> np.ndarray:
    """Return a copy of an (H, W, 3) uint8 image with the ROI outlined.

    The ``thickness``-px rectangle lies on the ROI's own border pixels (inside
    ``[top, top + size) x [left, left + size)``), clipped to the image.
    """
    img = np.asarray(image_uint8)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"image_uint8 must be an (H, W, 3) uint8 array, got {img.shape} {img.dtype}")
    if len(roi) != 3:
        raise InputError(f"roi must be (top, left, size), got {roi!r}")
    if thickness < 1:
        raise InputError(f"thickness must be >= 1, got {thickness}")
    top, left, size = (int(v) for v in roi)
    if size <= 0:
        raise InputError(f"roi size must be > 0, got {size}")
    out = img.copy()
    h, w = out.shape[:2]
    bottom, right = top + size, left + size
    t = min(int(thickness), size)
    col = np.asarray(color, dtype=np.uint8)

    def fill(r0: int, r1: int, c0: int, c1: int) -> None:
        r0, r1 = max(r0, 0), min(r1, h)
        c0, c1 = max(c0, 0), min(c1, w)
        if r0 < r1 and c0 < c1:
            out[r0:r1, c0:c1] = col

    fill(top, top + t, left, right)  # top edge
    fill(bottom - t, bottom, left, right)  # bottom edge
    fill(top, bottom, left, left + t)  # left edge
    fill(top, bottom, right - t, right)  # right edge
    return out


def _upsample_blocks(rgb: np.ndarray, block: int, h: int, w: int) -> np.ndarray:
    """Each grid cell -> a flat ``block`` x ``block`` square, cropped to (h, w)."""
    up = np.repeat(np.repeat(rgb, block, axis=0), block, axis=1)
    return np.ascontiguousarray(up[:h, :w])


def _resize_to(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize (H_in, W_in, 3) uint8 to (h, w): pixel repetition for integer factors, else bicubic."""
    hi, wi = image.shape[:2]
    if (hi, wi) == (h, w):
        return image
    if h % hi == 0 and w % wi == 0:
        return np.repeat(np.repeat(image, h // hi, axis=0), w // wi, axis=1)
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BICUBIC))


def cem_overlay(
    effect: np.ndarray,
    roi_mask: np.ndarray,
    roi: Roi,
    block: int,
    output_shape: Sequence[int],
    degraded_input_rgb: np.ndarray,
    bound: float,
    alpha: float = 0.1,
) -> np.ndarray:
    """The coloured CEM at output size, blended with the degraded input, ROI outlined.

    Returns ``(1 - alpha) * map + alpha * input`` as (H, W, 3) uint8 with a 2 px green
    ROI rectangle; the input is resized to (H, W) (nearest for integer factors).
    """
    effect, roi_mask = _check_grid(effect, roi_mask)
    h, w = _check_output_shape(effect.shape, block, output_shape)
    roi = _check_roi(roi, h, w)
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"alpha must lie in [0, 1], got {alpha}")
    inp = _resize_to(_as_rgb_uint8(degraded_input_rgb, "degraded_input_rgb"), h, w)
    cmap = _upsample_blocks(effect_to_rgb(effect, roi_mask, bound), int(block), h, w)
    blend = (1.0 - alpha) * cmap.astype(np.float64) + alpha * inp.astype(np.float64)
    out = np.clip(np.round(blend), 0, 255).astype(np.uint8)
    return draw_roi_box(out, roi, ROI_COLOR, thickness=2)


# --------------------------------------------------------------------------- matplotlib helpers


def new_figure(width: float, height: float, dpi: int = 120) -> Figure:
    """A figure with its own Agg canvas (no pyplot, no global backend); axes are placed by hand."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _add_axes_in(fig: Figure, left: float, bottom: float, width: float, height: float) -> Axes:
    """Add axes at a position given in inches from the figure's bottom-left corner."""
    fw, fh = fig.get_size_inches()
    return fig.add_axes((left / fw, bottom / fh, width / fw, height / fh))


def save_figure(fig: Figure, path: PathLike) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", facecolor="white")
        _make_readable(tmp)
    return str(path)


def _save_png(image: np.ndarray, path: PathLike) -> str:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
        _make_readable(tmp)
    return str(path)


def _make_readable(tmp: Path) -> None:
    """mkstemp creates 0600 files; give figures the usual 0644."""
    try:
        os.chmod(tmp, 0o644)
    except OSError:  # pragma: no cover - e.g. filesystems without modes
        pass


def _fmt(value: float, unit: str) -> str:
    text = "0" if value == 0 else f"{value:+.2f}".replace("-", "\u2212")
    return f"{text} {unit}".strip()


def _effect_colorbar(
    fig: Figure,
    cax: Axes,
    bound: float,
    gamma: float,
    vmin: float | None,
    vmax: float | None,
    unit: str,
    fontsize: float = 8,
) -> Colorbar:
    """Horizontal colour bar in ``cax``: ticks at -bound, 0, +bound in ``unit``, a line at 0, and
    black triangles above the bar at the actual min / max (clipped to the bar)."""
    cbar = fig.colorbar(effect_mappable(bound, gamma), cax=cax, orientation="horizontal")
    cbar.set_ticks([-bound, 0.0, bound])
    cbar.set_ticklabels([f"\u2212{bound:g} {unit}".strip(), f"0 {unit}".strip(), f"+{bound:g} {unit}".strip()])
    cax.tick_params(labelsize=fontsize, length=3)
    cax.axvline(0.0, color="black", linewidth=0.8)
    above = offset_copy(cax.get_xaxis_transform(), fig=fig, y=4, units="points")
    for value in (vmin, vmax):
        if value is not None and math.isfinite(value):
            cax.plot(
                [float(np.clip(value, -bound, bound))],
                [1.0],
                marker="v",
                markersize=6,
                color="black",
                transform=above,
                clip_on=False,
                linestyle="none",
            )
    return cbar


def save_colorbar(path: PathLike, vmin: float, vmax: float, bound: float, gamma: float = 1.2, unit: str = "dB") -> str:
    """Horizontal seismic colour bar over [-bound, bound] (same power mapping as the map), PNG.

    The actual min and max effect are written at its left / right ends and marked by
    triangles above the bar; 0 is marked by a line and a tick. Returns the path written.
    """
    bound, gamma = _check_bound(bound, gamma)
    fig = new_figure(6.0, 1.25, dpi=120)
    cax = _add_axes_in(fig, 1.05, 0.45, 3.9, 0.3)
    _effect_colorbar(fig, cax, bound, gamma, vmin, vmax, unit)
    cax.set_title(f"causal effect ({unit}), colour range \u00b1{bound:g}", fontsize=9, pad=10)
    cax.text(-0.03, 0.5, f"min\n{_fmt(vmin, unit)}", transform=cax.transAxes, ha="right", va="center", fontsize=8)
    cax.text(1.03, 0.5, f"max\n{_fmt(vmax, unit)}", transform=cax.transAxes, ha="left", va="center", fontsize=8)
    return save_figure(fig, path)


def _draw_pie(ax: Axes, counts: Mapping[str, int], fontsize: float = 9) -> None:
    """Pie of the block classes on ``ax``; an empty ring with a note when all counts are 0."""
    counts = _check_counts(counts)
    total = sum(counts.values())
    ax.set_aspect("equal")
    if total == 0:
        ax.add_patch(Wedge((0, 0), 1.0, 0, 360, width=0.3, facecolor="none", edgecolor="0.6", linewidth=1.5))
        ax.text(0, 0, "no blocks\ncounted", ha="center", va="center", fontsize=fontsize, color="0.35")
        ax.set_xlim(-1.1, 1.1)
        ax.set_ylim(-1.1, 1.1)
        ax.axis("off")
        return
    keys = [k for k in COUNT_KEYS if counts[k] > 0]
    sizes = [counts[k] for k in keys]
    colors = [PIE_COLORS[k] for k in keys]
    text_colors = {"positive": "white", "negative": "white", "zero": "black"}

    def pct(share: float) -> str:
        return f"{share:.1f}%" if share >= 4.0 else ""

    wedges, _, autotexts = ax.pie(
        sizes,
        colors=colors,
        autopct=pct,
        startangle=90,
        counterclock=False,
        pctdistance=0.65,
        wedgeprops={"edgecolor": "white", "linewidth": 1.0},
        textprops={"fontsize": fontsize},
    )
    for key, text in zip(keys, autotexts):
        text.set_color(text_colors[key])
        if len(keys) == 1:  # a full disc: put its 100% in the centre
            text.set_position((0.0, 0.0))
    handles = [w for w in wedges]
    labels = [f"{k}: {counts[k]} ({100.0 * counts[k] / total:.1f}%)" for k in keys]
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False, fontsize=fontsize)


def save_pie(path: PathLike, counts: Mapping[str, int]) -> str:
    """Pie chart of block classes (positive red, negative blue, zero light grey), PNG.

    Shares are printed in %, the legend gives the counts. All-zero counts give an
    empty ring with a note. Returns the path written.
    """
    fig = new_figure(3.6, 4.0)
    ax = _add_axes_in(fig, 0.4, 1.0, 2.8, 2.6)
    _draw_pie(ax, counts)
    ax.set_title(f"blocks by effect sign (n = {sum(_check_counts(counts).values())})", fontsize=10)
    return save_figure(fig, path)


def _effect_range(effect: np.ndarray, roi_mask: np.ndarray) -> tuple[float, float]:
    """Min and max finite effect outside the ROI (whole map if that is empty; (0, 0) if none)."""
    vals = effect[~roi_mask]
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        vals = effect[np.isfinite(effect)]
    if vals.size == 0:
        return 0.0, 0.0
    return float(vals.min()), float(vals.max())


def _counts_from_classification(classification: np.ndarray, roi_mask: np.ndarray) -> dict[str, int]:
    cls = np.asarray(classification)[~roi_mask]
    return {"positive": int((cls > 0).sum()), "negative": int((cls < 0).sum()), "zero": int((cls == 0).sum())}


def save_cem_figures(
    folder: PathLike,
    *,
    effect: np.ndarray,
    roi_mask: np.ndarray,
    classification: np.ndarray,
    roi: Roi,
    block: int,
    output_shape: Sequence[int],
    degraded_input_rgb: np.ndarray,
    restored_rgb: np.ndarray,
    bound: float,
    counts: Mapping[str, int] | None = None,
    title: str = "",
    roi_psnr: float | None = None,
    unit: str = "dB",
) -> dict[str, str]:
    """Write the CEM figures into ``folder`` and return ``{name: path}``.

    Files: cem_overlay.png and restored_roi.png (pixel-exact, output size),
    colorbar.png, pie.png and cem_panel.png (degraded input | restored with ROI box |
    overlay with colour bar | pie). Names are the file stems (``"cem_overlay"``, ...).
    ``counts=None`` counts ``classification`` outside the ROI.
    """
    effect, roi_mask = _check_grid(effect, roi_mask, classification)
    bound, _ = _check_bound(bound, 1.2)
    h, w = _check_output_shape(effect.shape, block, output_shape)
    roi_t = _check_roi(roi, h, w)
    degraded = _as_rgb_uint8(degraded_input_rgb, "degraded_input_rgb")
    restored = _as_rgb_uint8(restored_rgb, "restored_rgb")
    if restored.shape[:2] != (h, w):
        raise InputError(f"restored_rgb is {restored.shape[:2]}, but output_shape is {(h, w)}")
    counts = _check_counts(_counts_from_classification(classification, roi_mask) if counts is None else counts)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / fname for name, fname in FIGURE_FILES.items()}
    written: dict[str, str] = {}

    overlay = cem_overlay(effect, roi_mask, roi_t, block, (h, w), degraded, bound)
    restored_box = draw_roi_box(restored, roi_t)
    vmin, vmax = _effect_range(effect, roi_mask)
    written["cem_overlay"] = _save_png(overlay, paths["cem_overlay"])
    written["restored_roi"] = _save_png(restored_box, paths["restored_roi"])
    written["colorbar"] = save_colorbar(paths["colorbar"], vmin, vmax, bound, unit=unit)
    written["pie"] = save_pie(paths["pie"], counts)

    written["cem_panel"] = save_figure(
        _panel_figure(degraded, restored_box, overlay, counts, bound, vmin, vmax, title, roi_psnr, unit),
        paths["cem_panel"],
    )
    return {name: written[name] for name in FIGURE_FILES}


def _panel_figure(
    degraded: np.ndarray,
    restored_box: np.ndarray,
    overlay: np.ndarray,
    counts: Mapping[str, int],
    bound: float,
    vmin: float,
    vmax: float,
    title: str,
    roi_psnr: float | None,
    unit: str,
) -> Figure:
    """Degraded input | restored with ROI box | overlay with colour bar | pie, laid out in inches."""
    h, w = overlay.shape[:2]
    aspect = w / h
    pw = float(np.clip(3.4 * aspect, 2.2, 5.0))  # image panel width (inches)
    ph = float(np.clip(pw / aspect, 1.2, 4.6))  # image panel height; imshow keeps the aspect inside
    pie_w, pie_d = 3.0, min(2.6, max(ph, 2.0))
    gap, margin = 0.3, 0.2
    title_h = 0.45 if title else 0.0
    head = title_h + 0.55  # suptitle + two-line panel titles
    below = 0.95  # colour bar, its tick labels and the min/max line under the overlay
    body = max(ph + below, pie_d + 0.9)
    fig_w = margin + 3 * pw + 3 * gap + pie_w + margin
    fig_h = head + body + 0.1
    fig = new_figure(fig_w, fig_h, dpi=130)

    top = fig_h - head  # top edge of the panels
    titles = [
        f"degraded input ({degraded.shape[0]}\u00d7{degraded.shape[1]})",
        f"restored ({h}\u00d7{w})" + (f"\nROI PSNR {roi_psnr:.2f} dB" if roi_psnr is not None else ""),
        f"causal effect map\n(colour range \u00b1{bound:g} {unit})",
    ]
    for k, (img, ttl) in enumerate(zip((degraded, restored_box, overlay), titles)):
        ax = _add_axes_in(fig, margin + k * (pw + gap), top - ph, pw, ph)
        ax.imshow(img, interpolation="antialiased", aspect="equal")
        ax.set_title(ttl, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    cax = _add_axes_in(fig, margin + 2 * (pw + gap) + 0.1 * pw, top - ph - 0.32, 0.8 * pw, 0.16)
    _effect_colorbar(fig, cax, bound, 1.2, vmin, vmax, unit)
    cax.set_xlabel(f"\u25bc min {_fmt(vmin, unit)}    \u25bc max {_fmt(vmax, unit)}", fontsize=8, labelpad=3)

    pie_ax = _add_axes_in(fig, margin + 3 * (pw + gap) + (pie_w - pie_d) / 2, top - pie_d, pie_d, pie_d)
    _draw_pie(pie_ax, counts)
    pie_ax.set_title(f"blocks by effect sign\n(n = {sum(counts.values())})", fontsize=10)
    if title:
        fig.text(0.5, 1.0 - 0.12 / fig_h, title, ha="center", va="top", fontsize=12)
    return fig
