"""The figure layouts of the paper (Hu et al. 2025, "Interpreting Low-level Vision Models with Causal Effect Maps"),
drawn from finished maps:

- :func:`overlay_row`: one row of models, each column one map on its degraded input (ROI green) with the model's
  name above and its ROI PSNR below, one colour bar for the row (the receptive-field and channel-attention figures);
- :func:`teaser`: one network over its tasks, a row per task: degraded input | restored with the ROI and a zoomed
  inset | map with its colour bar | pie (the teaser);
- :func:`pie_row`: the pies of several maps side by side with one legend (the pie charts).

Drawing only: result-like objects in (read by attribute: ``effect``, ``roi_mask``, ``roi``, ``block``,
``output_shape``, ``images``, ``baseline_metric``, ``unit``, ``meta``, ``block_counts()``), a Figure out; the caller
saves it (:func:`cem_lab.viz.canvas.save_figure`) inside :func:`~cem_lab.viz.style.use_style`, whose colour range
the maps take. Every size is in inches and the figure grows to fit its labels: long names are wrapped at their
``_`` / ``-`` breaks (cut in the middle past three lines), so no text overlaps another or leaves the canvas.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cem_lab.errors import InputError
from cem_lab.viz.canvas import add_axes_in, new_figure, text_inches
from cem_lab.viz.cem_charts import COUNT_KEYS, PIE_COLORS, check_counts, draw_effect_colorbar, draw_pie, format_effect
from cem_lab.viz.cem_figures import draw_roi_inset, range_words
from cem_lab.viz.cem_maps import (
    as_rgb_uint8,
    cem_overlay,
    check_grid,
    check_output_shape,
    check_roi,
    draw_roi_box,
    effect_range,
    resize_to,
)
from cem_lab.viz.style import current_style, faint_note, task_colour

__all__ = ["fit_label", "overlay_row", "pie_row", "teaser"]

_GAMMA = 1.2  # the power mapping of every CE figure
_TITLE_PT = 8.5  # column titles
_SMALL_PT = 8.0  # PSNR lines, colour bar labels, counts
_NOTE_PT = 7.5
_LINE = 1.3 / 72  # inches per point of a line of text (with its leading)
_MARGIN = 0.12
_RED = "#a00000"  # the faint-map note

# a label may break after ``_ / ,``, a space, or a ``-`` / ``.`` between letters (a model name keeps its words:
# edsr_baseline_ | finetuned_ | ...; ``--range``, ``1.6`` and a no-break space stay whole)
_BREAK_AFTER = re.compile(r"(?<=[_/, ])|(?<=[A-Za-z][-.])(?=[A-Za-z])")


# ----------------------------------------------------------------------------- text
def fit_label(fig: Figure, text: str, width: float, fontsize: float, max_lines: int = 3) -> str:
    """``text`` in lines no wider than ``width`` inches at ``fontsize`` as ``fig`` draws them: broken after ``_``,
    ``/``, ``,`` or a space (``-`` and ``.`` between letters), a word longer than a line cut where it must; past ``max_lines`` lines the
    middle is left out (``\u2026``), the start and the end kept."""
    lines: list[str] = []
    for para in str(text).split("\n"):
        line = ""
        for token in (t for t in _BREAK_AFTER.split(para) if t):
            if line and text_inches(fig, [line + token], fontsize) > width:
                lines.append(line.rstrip())
                line = token.lstrip()
            else:
                line += token
            while len(line) > 1 and text_inches(fig, [line], fontsize) > width:
                cut = max(1, max(k for k in range(1, len(line)) if text_inches(fig, [line[:k]], fontsize) <= width))
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line.rstrip())
    if len(lines) > max_lines:
        tail = lines[-1]
        while len(tail) > 1 and text_inches(fig, ["\u2026" + tail], fontsize) > width:
            tail = tail[1:]
        lines = lines[: max_lines - 1] + ["\u2026" + tail]
    return "\n".join(lines)


def _lines(text: str) -> int:
    return text.count("\n") + 1 if text else 0


def _text_height(text: str, fontsize: float) -> float:
    """Inches that ``text`` takes vertically (its lines with their leading)."""
    return _lines(text) * fontsize * _LINE


# ----------------------------------------------------------------------------- one map
def _roi_of(result) -> tuple[int, int, int]:
    roi = result.roi
    values = roi.as_list() if hasattr(roi, "as_list") else roi
    return tuple(int(v) for v in values)


def _paper_bound(result) -> float:
    return float((getattr(result, "meta", None) or {}).get("display_bound") or 1.0)


def _image(result, name: str, fallback: str | None = None) -> np.ndarray:
    images = getattr(result, "images", None) or {}
    image = images.get(name)
    if image is None and fallback is not None:
        image = images.get(fallback)
    if image is None:
        raise InputError(
            f"the map has no {name} image (images/{name}.png in its run folder); redraw from a complete run folder"
        )
    return as_rgb_uint8(image, name)


def _grid(result) -> dict[str, Any]:
    """The checked geometry of one map: effect, ROI mask, output size, ROI."""
    effect, roi_mask = check_grid(result.effect, result.roi_mask)
    h, w = check_output_shape(effect.shape, result.block, result.output_shape)
    return {"effect": effect, "roi_mask": roi_mask, "h": h, "w": w, "roi": check_roi(_roi_of(result), h, w)}


def _drawn(result, grid: Mapping[str, Any], bound: float) -> dict[str, Any]:
    """What a layout draws of one map at colour ``bound``: the overlay, the degraded input at output size with
    the ROI box, the restored image with its box, the min / max outside the ROI."""
    h, w, roi = grid["h"], grid["w"], grid["roi"]
    degraded = _image(result, "input")
    restored = _image(result, "restored")
    if restored.shape[:2] != (h, w):
        raise InputError(f"the restored image is {restored.shape[:2]}, but the map's output is {(h, w)}")
    vmin, vmax = effect_range(grid["effect"], grid["roi_mask"])
    return {
        **grid,
        "degraded": degraded,
        "degraded_box": draw_roi_box(resize_to(degraded, h, w), roi),
        "restored": restored,
        "restored_box": draw_roi_box(restored, roi),
        "overlay": cem_overlay(grid["effect"], grid["roi_mask"], roi, result.block, (h, w), degraded, bound),
        "vmin": vmin,
        "vmax": vmax,
    }


def _roi_zoom(image: np.ndarray, roi: tuple[int, int, int]) -> np.ndarray:
    """The ROI and one ROI size around it, the ROI outlined."""
    h, w = image.shape[:2]
    top, left, size = roi
    r0, r1 = max(top - size, 0), min(top + 2 * size, h)
    c0, c1 = max(left - size, 0), min(left + 2 * size, w)
    return draw_roi_box(image[r0:r1, c0:c1], (top - r0, left - c0, size), thickness=1)


def _image_axes(fig: Figure, left: float, bottom: float, width: float, height: float, image: np.ndarray):
    ax = add_axes_in(fig, left, bottom, width, height)
    ax.imshow(image, interpolation="nearest", aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def _box(aspect: float, height: float, lo: float, hi: float) -> tuple[float, float]:
    """(width, height) in inches of an image panel of ``aspect`` (w / h): ``height`` tall unless its width would
    leave [lo, hi], then as wide as the limit and as tall as the aspect gives (the image keeps its shape)."""
    width = height * aspect
    if width > hi:
        return hi, hi / aspect
    if width < lo:
        return lo, lo / aspect
    return width, height


def _colorbar_block(
    fig: Figure,
    left: float,
    top: float,
    width: float,
    bound: float,
    vmin: float,
    vmax: float,
    unit: str,
    words: str,
    fontsize: float = _SMALL_PT,
) -> float:
    """A colour bar whose min / max triangles start at ``top`` (inches from the bottom), its tick labels and
    ``words`` beneath; returns the bottom of the block."""
    bar_top = top - 0.12  # room for the triangles above the bar
    cax = add_axes_in(fig, left, bar_top - 0.13, width, 0.13)
    cbar = draw_effect_colorbar(fig, cax, bound, _GAMMA, vmin, vmax, unit, fontsize=fontsize)
    shown = _rounded(bound)  # an auto range is the largest |CE|: 1.62, not 1.61577
    cbar.set_ticklabels([f"\u2212{shown:g} {unit}".strip(), f"0 {unit}".strip(), f"+{shown:g} {unit}".strip()])
    below = bar_top - 0.13 - fontsize * _LINE - 0.06  # under the tick labels
    fig_w, fig_h = fig.get_size_inches()
    fig.text((left + width / 2) / fig_w, below / fig_h, words, ha="center", va="top", fontsize=fontsize)
    return below - _text_height(words, fontsize)


def _rounded(bound: float) -> float:
    """``bound`` to three significant digits, as its labels show it."""
    return float(f"{bound:.3g}")


def _range_lines(fig: Figure, bound: float, unit: str, range_: Any, width: float) -> str:
    """:func:`range_words`, on two lines at its comma when one line is wider than ``width`` inches."""
    words = range_words(_rounded(bound), unit, range_)
    return words if text_inches(fig, [words], _SMALL_PT) <= width else words.replace(", ", ",\n", 1)


def _minmax_words(vmin: float, vmax: float, unit: str) -> str:
    return f"\u25bc min {format_effect(vmin, unit)}   \u25bc max {format_effect(vmax, unit)}"


# ----------------------------------------------------------------------------- one row of models
def overlay_row(
    results: Sequence[Any],
    labels: Sequence[str],
    *,
    context: bool = False,
    title: str = "",
    fix: str = "--range auto",
    panel_height: float = 1.9,
    dpi: int = 130,
) -> Figure:
    """One row of maps, a column each: the map on its degraded input (ROI green), ``labels[k]`` above it, its ROI
    PSNR below, one colour bar for the row at the current style's range (``paper``: the largest task bound of
    the row; ``auto``: the largest |CE| outside the ROIs over every panel) and, when every effect is below a tenth
    of that range, a note naming ``fix``. ``context``: two first columns, the first map's degraded input with its
    ROI and the ground truth around the ROI (the restored image when the map has no target)."""
    results = list(results)
    labels = [str(s) for s in labels]
    if not results:
        raise InputError("overlay_row: no map given; pass one or more results")
    if len(labels) != len(results):
        raise InputError(f"overlay_row: {len(labels)} label(s) for {len(results)} map(s); give one label per map")
    unit = _one_unit(results)
    grids = [_grid(r) for r in results]
    style = current_style()
    bound = style.bound(
        max(_paper_bound(r) for r in results), [g["effect"] for g in grids], [g["roi_mask"] for g in grids]
    )
    maps = [_drawn(r, g, bound) for r, g in zip(results, grids)]

    panels: list[tuple[np.ndarray, str, str]] = []  # image, title, line below
    if context:
        first = maps[0]
        target = _image(results[0], "target", fallback="restored")
        gt_name = (
            "ground truth" if (getattr(results[0], "images", None) or {}).get("target") is not None else "restored"
        )
        if target.shape[:2] != (first["h"], first["w"]):
            target = resize_to(target, first["h"], first["w"])
        panels.append(
            (
                first["degraded_box"],
                f"degraded input ({first['degraded'].shape[0]}\u00d7{first['degraded'].shape[1]})",
                "",
            )
        )
        panels.append((_roi_zoom(target, first["roi"]), f"{gt_name}, around the ROI", ""))
    for m, r, label in zip(maps, results, labels):
        panels.append((m["overlay"], label, f"ROI PSNR {float(r.baseline_metric):.2f} {unit}"))

    fig = new_figure(4.0, 3.0, dpi=dpi)
    boxes = [_box(img.shape[1] / img.shape[0], panel_height, 0.9, 3.2) for img, _, _ in panels]
    cols = [max(bw, 1.3, text_inches(fig, [below], _SMALL_PT) + 0.1) for (bw, _), (_, _, below) in zip(boxes, panels)]
    titles = [fit_label(fig, t, c - 0.08, _TITLE_PT) for c, (_, t, _) in zip(cols, panels)]
    gap = 0.15
    row_w = sum(cols) + gap * (len(cols) - 1)
    vmin = min(m["vmin"] for m in maps)
    vmax = max(m["vmax"] for m in maps)
    words = (
        f"causal effect ({unit}), {range_words(_rounded(bound), unit, style.range)}\n{_minmax_words(vmin, vmax, unit)}"
    )
    note = faint_note([g["effect"] for g in grids], [g["roi_mask"] for g in grids], bound, unit, fix=fix)
    bar_w = min(max(2.6, 0.6 * row_w), 4.2)
    fig_w = 2 * _MARGIN + max(row_w, bar_w, text_inches(fig, words.split("\n"), _SMALL_PT) + 0.1)
    note = fit_label(fig, note, fig_w - 2 * _MARGIN, _NOTE_PT, max_lines=6) if note else ""
    title = fit_label(fig, title, fig_w - 2 * _MARGIN, 10) if title else ""

    head = _text_height(title, 10) + (0.08 if title else 0.0) + _text_height(max(titles, key=_lines), _TITLE_PT) + 0.08
    img_h = max(h for _, h in boxes)
    below_h = _SMALL_PT * _LINE + 0.12
    bar_h = 0.12 + 0.13 + _SMALL_PT * _LINE + 0.06 + _text_height(words, _SMALL_PT)
    note_h = _text_height(note, _NOTE_PT) + 0.08 if note else 0.0
    fig_h = _MARGIN + head + img_h + below_h + 0.1 + bar_h + note_h + _MARGIN
    fig.set_size_inches(fig_w, fig_h)

    top = fig_h - _MARGIN
    if title:
        fig.text(0.5, top / fig_h, title, ha="center", va="top", fontsize=10)
    img_top = fig_h - _MARGIN - head
    x = (fig_w - row_w) / 2
    for (img, _, below), (bw, bh), col, ttl in zip(panels, boxes, cols, titles):
        ax = _image_axes(fig, x + (col - bw) / 2, img_top - (img_h + bh) / 2, bw, bh, img)
        ax.set_title(ttl, fontsize=_TITLE_PT, pad=4)
        if below:
            fig.text(
                (x + col / 2) / fig_w,
                (img_top - img_h - 0.06) / fig_h,
                below,
                ha="center",
                va="top",
                fontsize=_SMALL_PT,
            )
        x += col + gap
    maps_left = (fig_w - row_w) / 2 + sum(cols[: len(panels) - len(maps)]) + gap * (len(panels) - len(maps))
    maps_w = fig_w - (fig_w - row_w) / 2 - maps_left
    bar_w = min(bar_w, fig_w - 2 * _MARGIN)
    bar_left = float(np.clip(maps_left + (maps_w - bar_w) / 2, _MARGIN, fig_w - _MARGIN - bar_w))
    bottom = _colorbar_block(fig, bar_left, img_top - img_h - below_h - 0.1, bar_w, bound, vmin, vmax, unit, words)
    if note:
        fig.text(0.5, (bottom - 0.08) / fig_h, note, ha="center", va="top", fontsize=_NOTE_PT, color=_RED)
    return fig


def _one_unit(results: Sequence[Any]) -> str:
    units = list(dict.fromkeys(str(r.unit) for r in results))
    if len(units) > 1:
        raise InputError(f"the maps are in different units ({', '.join(units)}); draw maps of one metric together")
    return units[0]


# ----------------------------------------------------------------------------- one network over tasks
def teaser(
    results_by_task: Mapping[str, Any],
    *,
    title: str = "",
    fix: str = "--range auto",
    panel_height: float = 1.8,
    dpi: int = 110,
) -> Figure:
    """One network on each of its tasks, a row per task (the mapping's key, e.g. ``sr x4``, as the row's label in
    the task's colour): degraded input | restored with the ROI and a zoomed inset of it (its ROI PSNR above) | the
    map with its colour bar (each row at its own task's range, or the style's) | the pie of the blocks by sign."""
    rows = [(str(task), result) for task, result in results_by_task.items()]
    if not rows:
        raise InputError("teaser: no map given; pass {task: result} for one network's tasks")
    style = current_style()
    fig = new_figure(4.0, 3.0, dpi=dpi)
    drawn = []
    for task, result in rows:
        grid = _grid(result)
        bound = style.bound(_paper_bound(result), [grid["effect"]], [grid["roi_mask"]])
        drawn.append((task, result, _drawn(result, grid, bound), bound))

    boxes = [_box(d["w"] / d["h"], panel_height, 1.2, 2.6) for _, _, d, _ in drawn]
    col = max(1.9, max(bw for bw, _ in boxes))
    label_w = 0.32
    pie_d = 1.45
    legend_w = text_inches(fig, ["positive: 9999 (100.0%)"], _SMALL_PT) + 0.45
    pie_col = max(pie_d, legend_w, 1.7)
    gap = 0.2
    fig_w = 2 * _MARGIN + label_w + 3 * col + pie_col + 3 * gap
    title = fit_label(fig, title, fig_w - 2 * _MARGIN, 10) if title else ""

    layouts = []  # per row: titles, words, note, heights
    for (_task, result, d, bound), (_, bh) in zip(drawn, boxes):
        unit = str(result.unit)
        counts = check_counts(result.block_counts())
        titles = [
            fit_label(fig, f"degraded input ({d['degraded'].shape[0]}\u00d7{d['degraded'].shape[1]})", col, _TITLE_PT),
            fit_label(fig, f"restored, ROI PSNR {float(result.baseline_metric):.2f} {unit}", col, _TITLE_PT),
            fit_label(fig, "causal effect map", col, _TITLE_PT),
            fit_label(fig, f"blocks by effect sign\n(n = {sum(counts.values())})", pie_col, _TITLE_PT),
        ]
        words = (
            fit_label(fig, _range_lines(fig, bound, unit, style.range, col), col, _SMALL_PT)
            + "\n"
            + fit_label(fig, _minmax_words(d["vmin"], d["vmax"], unit), col, _SMALL_PT)
        )
        note = faint_note([d["effect"]], [d["roi_mask"]], bound, unit, fix=fix)
        note = fit_label(fig, note, col, _NOTE_PT, max_lines=6) if note else ""
        head = _text_height(max(titles, key=_lines), _TITLE_PT) + 0.1
        bar_h = 0.12 + 0.13 + _SMALL_PT * _LINE + 0.06 + _text_height(words, _SMALL_PT)
        maps_h = panel_height + 0.08 + bar_h + (_text_height(note, _NOTE_PT) + 0.06 if note else 0.0)
        pie_h = min(pie_d, bh) + 0.1 + 3 * _SMALL_PT * _LINE + 0.15  # the pie, its legend below
        layouts.append((titles, words, note, counts, head, max(maps_h, pie_h)))
    title_h = _text_height(title, 10) + 0.1 if title else 0.0
    fig_h = 2 * _MARGIN + title_h + sum(head + body for *_, head, body in layouts) + gap * (len(rows) - 1)
    fig.set_size_inches(fig_w, fig_h)
    if title:
        fig.text(0.5, (fig_h - _MARGIN) / fig_h, title, ha="center", va="top", fontsize=10)

    top = fig_h - _MARGIN - title_h
    for row, ((task, result, d, bound), (bw, bh), (titles, words, note, counts, head, body)) in enumerate(
        zip(drawn, boxes, layouts)
    ):
        img_top = top - head
        y = img_top - (panel_height + bh) / 2  # the panel centred in the row's image band
        fig.text(
            (_MARGIN + label_w / 2) / fig_w,
            (img_top - panel_height / 2) / fig_h,
            fit_label(fig, task, panel_height, 10, max_lines=2),
            rotation=90,
            ha="center",
            va="center",
            fontsize=10,
            fontweight="bold",
            color=task_colour(task, row),
        )
        x = _MARGIN + label_w
        axes = []
        for k, img in enumerate((d["degraded_box"], d["restored_box"], d["overlay"])):
            ax = _image_axes(fig, x + k * (col + gap) + (col - bw) / 2, y, bw, bh, img)
            ax.set_title(titles[k], fontsize=_TITLE_PT, pad=4)
            axes.append(ax)
        draw_roi_inset(axes[1], d["restored"], d["roi"])
        map_left = x + 2 * (col + gap)
        bar_w = 0.9 * col
        bottom = _colorbar_block(
            fig,
            map_left + (col - bar_w) / 2,
            img_top - panel_height - 0.08,
            bar_w,
            bound,
            d["vmin"],
            d["vmax"],
            str(result.unit),
            words,
        )
        if note:
            fig.text(
                (map_left + col / 2) / fig_w,
                (bottom - 0.06) / fig_h,
                note,
                ha="center",
                va="top",
                fontsize=_NOTE_PT,
                color=_RED,
            )
        side = min(pie_d, bh)
        pie_left = x + 3 * (col + gap) + (pie_col - side) / 2
        pie_ax = add_axes_in(fig, pie_left, img_top - side, side, side)
        draw_pie(pie_ax, counts, fontsize=_SMALL_PT)
        pie_ax.set_title(titles[3], fontsize=_TITLE_PT, pad=4)
        top = img_top - body - gap
    return fig


# ----------------------------------------------------------------------------- pies side by side
def pie_row(results: Sequence[Any], labels: Sequence[str], *, title: str = "", dpi: int = 130) -> Figure:
    """The pies of several maps side by side (the blocks outside the ROI by effect sign), ``labels[k]`` above each,
    its counts below, one legend for the row beneath them."""
    results = list(results)
    labels = [str(s) for s in labels]
    if not results:
        raise InputError("pie_row: no map given; pass one or more results")
    if len(labels) != len(results):
        raise InputError(f"pie_row: {len(labels)} label(s) for {len(results)} map(s); give one label per map")
    counts = [check_counts(r.block_counts()) for r in results]
    fig = new_figure(4.0, 3.0, dpi=dpi)
    pie_d, gap = 1.35, 0.2
    col = 1.6
    below = [
        fit_label(
            fig,
            f"{c['positive']}\u00a0positive, {c['negative']}\u00a0negative, {c['zero']}\u00a0zero",
            col - 0.06,
            _SMALL_PT,
        )
        for c in counts
    ]
    titles = [fit_label(fig, s, col - 0.06, _TITLE_PT) for s in labels]
    names = {"positive": "positive (helps the ROI)", "negative": "negative (hurts the ROI)", "zero": "zero (no effect)"}
    handles = [Patch(facecolor=PIE_COLORS[k], edgecolor="white", label=names[k]) for k in COUNT_KEYS]
    legend_one_row = text_inches(fig, [" ".join(names.values())], _SMALL_PT) + 3 * 0.45
    row_w = len(results) * col + gap * (len(results) - 1)
    ncol = 3 if legend_one_row <= max(row_w, 3.0) else 1
    legend_w = legend_one_row if ncol == 3 else text_inches(fig, names.values(), _SMALL_PT) + 0.45
    fig_w = 2 * _MARGIN + max(row_w, legend_w)
    title = fit_label(fig, title, fig_w - 2 * _MARGIN, 10) if title else ""
    title_h = _text_height(title, 10) + 0.1 if title else 0.0
    head = _text_height(max(titles, key=_lines), _TITLE_PT) + 0.1
    legend_h = (1 if ncol == 3 else 3) * _SMALL_PT * _LINE + 0.15
    below_h = _text_height(max(below, key=_lines), _SMALL_PT)
    fig_h = 2 * _MARGIN + title_h + head + pie_d + 0.08 + below_h + 0.12 + legend_h
    fig.set_size_inches(fig_w, fig_h)
    if title:
        fig.text(0.5, (fig_h - _MARGIN) / fig_h, title, ha="center", va="top", fontsize=10)
    pie_top = fig_h - _MARGIN - title_h - head
    x = (fig_w - row_w) / 2
    for c, ttl, line in zip(counts, titles, below):
        ax = add_axes_in(fig, x + (col - pie_d) / 2, pie_top - pie_d, pie_d, pie_d)
        draw_pie(ax, c, fontsize=_SMALL_PT)
        if ax.get_legend() is not None:
            ax.get_legend().remove()  # one legend for the row
        ax.set_title(ttl, fontsize=_TITLE_PT, pad=4)
        fig.text(
            (x + col / 2) / fig_w, (pie_top - pie_d - 0.08) / fig_h, line, ha="center", va="top", fontsize=_SMALL_PT
        )
        x += col + gap
    fig.legend(
        handles=handles,
        loc="lower center",
        bbox_to_anchor=(0.5, _MARGIN / fig_h),
        ncol=ncol,
        frameon=False,
        fontsize=_SMALL_PT,
        borderaxespad=0.0,
    )
    return fig
