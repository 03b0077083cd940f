"""Tests for cem_lab.viz: colour mapping, overlay, ROI box and the saved figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from cem_lab.viz import (
    TASK_BOUNDS,
    cem_overlay,
    draw_roi_box,
    effect_to_rgb,
    save_cem_figures,
    save_colorbar,
    save_pie,
)

GREEN = (0, 255, 0)


def _grid(h: int, w: int, block: int) -> tuple[int, int]:
    return math.ceil(h / block), math.ceil(w / block)


# --------------------------------------------------------------------------- effect_to_rgb


def test_task_bounds() -> None:
    assert TASK_BOUNDS == {"sr": 2.5, "dn": 1.0, "dr": 2.0}


def test_effect_to_rgb_colours() -> None:
    bound = 2.5
    effect = np.array([[0.0, bound, -bound], [10.0, -10.0, 0.0]])
    roi = np.zeros_like(effect, dtype=bool)
    roi[1, 2] = True
    rgb = effect_to_rgb(effect, roi, bound)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] > 250).all()  # 0 -> white
    r, g, b = rgb[0, 1].astype(int)
    assert r > g + 80 and r > b + 80  # +bound -> red
    r, g, b = rgb[0, 2].astype(int)
    assert b > r + 50 and b > g + 50  # -bound -> blue
    assert (rgb[1, 0] == rgb[0, 1]).all()  # clipped at +bound
    assert (rgb[1, 1] == rgb[0, 2]).all()  # clipped at -bound
    assert tuple(rgb[1, 2]) == GREEN  # ROI block


def test_effect_to_rgb_power_mapping_and_nan() -> None:
    bound, gamma = 2.0, 1.2
    effect = np.array([[1.0, -1.0, np.nan]])
    rgb = effect_to_rgb(effect, np.zeros_like(effect, dtype=bool), bound, gamma=gamma)
    v = 0.5 ** (1 / gamma)
    want_pos = np.array(colormaps["seismic"]((v + 1) / 2, bytes=True)[:3])
    want_neg = np.array(colormaps["seismic"]((1 - v) / 2, bytes=True)[:3])
    assert (rgb[0, 0] == want_pos).all()
    assert (rgb[0, 1] == want_neg).all()
    assert (rgb[0, 2] > 250).all()  # NaN drawn as 0
    # the bound itself is the darkest red, half of it a brighter one
    full = effect_to_rgb(np.array([[bound]]), np.zeros((1, 1), bool), bound)
    assert int(rgb[0, 0, 0]) > int(full[0, 0, 0]) + 50


def test_effect_to_rgb_rejects_bad_input() -> None:
    effect = np.zeros((3, 4))
    with pytest.raises(ValueError, match="roi_mask"):
        effect_to_rgb(effect, np.zeros((4, 3), bool), 1.0)
    with pytest.raises(ValueError, match="bound"):
        effect_to_rgb(effect, np.zeros((3, 4), bool), 0.0)
    with pytest.raises(ValueError, match="gamma"):
        effect_to_rgb(effect, np.zeros((3, 4), bool), 1.0, gamma=-1)


# --------------------------------------------------------------------------- overlay / ROI box


def test_cem_overlay_shape_and_red_block() -> None:
    h, w, block = 64, 48, 16
    rows, cols = _grid(h, w, block)
    effect = np.zeros((rows, cols))
    effect[1, 2] = 2.5
    roi_mask = np.zeros((rows, cols), bool)
    roi_mask[3, 0] = True
    degraded = np.full((16, 12, 3), 128, np.uint8)  # x4 SR input
    out = cem_overlay(effect, roi_mask, (48, 0, 16), block, (h, w), degraded, bound=2.5)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    area = out[16:32, 32:48].astype(int)  # block (1, 2) at output size
    assert (area[..., 0] > area[..., 2] + 100).all()
    assert (area[..., 0] > area[..., 1] + 100).all()
    assert (area == area[0, 0]).all()  # a flat square
    white = out[0:16, 0:16].astype(int)
    assert (white > 200).all()  # zero-effect block stays (almost) white after blending


def test_cem_overlay_partial_edge_blocks() -> None:
    h, w, block = 37, 45, 8  # neither is a multiple of block
    rows, cols = _grid(h, w, block)
    assert (rows, cols) == (5, 6)
    effect = np.zeros((rows, cols))
    effect[-1, -1] = 1.0
    effect[0, -1] = -1.0
    roi_mask = np.zeros((rows, cols), bool)
    degraded = np.full((10, 12, 3), 100, np.uint8)  # non-integer scale factor: resampled
    out = cem_overlay(effect, roi_mask, (0, 0, 8), block, (h, w), degraded, bound=1.0)
    assert out.shape == (h, w, 3)
    corner = out[32:37, 40:45].astype(int)  # the partial bottom-right block
    assert (corner[..., 0] > corner[..., 2] + 100).all()
    top_right = out[2:8, 40:45].astype(int)  # partial top-right block, negative
    assert (top_right[..., 2] > top_right[..., 0] + 50).all()


def test_cem_overlay_roi_box_and_input_blend() -> None:
    h, w, block = 40, 40, 8
    rows, cols = _grid(h, w, block)
    effect = np.zeros((rows, cols))
    roi = (8, 16, 16)
    roi_mask = np.zeros((rows, cols), bool)
    roi_mask[1:3, 2:4] = True
    rng = np.random.default_rng(0)
    degraded = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)  # exact x2: nearest
    out = cem_overlay(effect, roi_mask, roi, block, (h, w), degraded, bound=1.0)
    top, left, size = roi
    box = np.zeros((h, w), bool)
    box[top : top + size, left : left + size] = True
    box[top + 2 : top + size - 2, left + 2 : left + size - 2] = False
    assert (out[box] == GREEN).all()  # 2 px green outline
    inner = out[top + 2, left + 2]
    assert tuple(inner) != GREEN  # the interior is blended, not the pure outline colour
    # alpha = 1 shows the input alone, upsampled by pixel repetition
    only_input = cem_overlay(effect, roi_mask, roi, block, (h, w), degraded, bound=1.0, alpha=1.0)
    nearest = np.repeat(np.repeat(degraded, 2, axis=0), 2, axis=1)
    assert (only_input[~box] == nearest[~box]).all()


def test_draw_roi_box_copies() -> None:
    img = np.zeros((20, 20, 3), np.uint8)
    out = draw_roi_box(img, (5, 5, 10), thickness=2)
    assert img.sum() == 0  # input untouched
    assert tuple(out[5, 10]) == GREEN and tuple(out[6, 10]) == GREEN and tuple(out[7, 10]) == (0, 0, 0)
    assert tuple(out[14, 14]) == GREEN and tuple(out[10, 10]) == (0, 0, 0)
    assert tuple(out[4, 10]) == (0, 0, 0)  # nothing outside the ROI


def test_overlay_validation_errors() -> None:
    effect = np.zeros((4, 4))
    mask = np.zeros((4, 4), bool)
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="grid"):
        cem_overlay(effect, mask, (0, 0, 8), 8, (40, 32), img, 1.0)  # 5 rows expected
    with pytest.raises(ValueError, match="roi"):
        cem_overlay(effect, mask, (30, 0, 8), 8, (32, 32), img, 1.0)
    with pytest.raises(ValueError, match="roi_mask"):
        cem_overlay(effect, np.zeros((4, 5), bool), (0, 0, 8), 8, (32, 32), img, 1.0)
    with pytest.raises(ValueError, match="bound"):
        cem_overlay(effect, mask, (0, 0, 8), 8, (32, 32), img, -1.0)


# --------------------------------------------------------------------------- saved figures


def _example(h: int = 60, w: int = 76, block: int = 8) -> dict:
    rows, cols = _grid(h, w, block)
    yy, xx = np.mgrid[0:rows, 0:cols]
    effect = 2.0 * np.exp(-((yy - 3) ** 2 + (xx - 4) ** 2) / 6.0)
    effect[-1, 1] = -1.5
    roi_mask = np.zeros((rows, cols), bool)
    roi_mask[3, 4] = True
    classification = np.sign(np.where(np.abs(effect) < 0.1, 0, effect)).astype(np.int8)
    rng = np.random.default_rng(1)
    restored = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return dict(
        effect=effect,
        roi_mask=roi_mask,
        classification=classification,
        roi=(24, 32, 8),
        block=block,
        output_shape=(h, w),
        degraded_input_rgb=restored[::2, ::2],
        restored_rgb=restored,
        bound=TASK_BOUNDS["dr"],
        counts={"positive": 20, "negative": 1, "zero": 58},
        title="test panel",
        roi_psnr=28.5,
    )


def test_save_cem_figures_writes_readable_pngs(tmp_path: Path) -> None:
    kw = _example()
    h, w = kw["output_shape"]
    paths = save_cem_figures(tmp_path / "figs", **kw)
    names = {"cem_overlay", "colorbar", "pie", "restored_roi", "cem_panel"}
    assert set(paths) == names
    for name, path in paths.items():
        assert Path(path).name == f"{name}.png" and Path(path).is_file()
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG"
            size = im.size
        if name in ("cem_overlay", "restored_roi"):
            assert size == (w, h)  # pixel-exact at output size
        else:
            assert size[0] >= 200 and size[1] >= 100
    with Image.open(paths["cem_panel"]) as im:
        assert im.size[0] > 3 * im.size[1] / 2  # 4 panels side by side
    overlay = np.asarray(Image.open(paths["cem_overlay"]).convert("RGB"))
    want = cem_overlay(
        kw["effect"], kw["roi_mask"], kw["roi"], kw["block"], (h, w), kw["degraded_input_rgb"], kw["bound"]
    )
    assert (overlay == want).all()
    restored_roi = np.asarray(Image.open(paths["restored_roi"]).convert("RGB"))
    assert (restored_roi == draw_roi_box(kw["restored_rgb"], kw["roi"])).all()


def test_save_cem_figures_twice_leaves_no_temp_files(tmp_path: Path) -> None:
    kw = _example(h=40, w=40, block=8)
    kw["title"], kw["roi_psnr"] = "", None
    save_cem_figures(tmp_path, **kw)
    first = (tmp_path / "cem_panel.png").stat().st_size
    save_cem_figures(tmp_path, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["cem_overlay.png", "colorbar.png", "pie.png", "restored_roi.png", "cem_panel.png"]
    )
    assert (tmp_path / "cem_panel.png").stat().st_size == pytest.approx(first, rel=0.05)


def test_save_cem_figures_shape_mismatch(tmp_path: Path) -> None:
    kw = _example()
    bad = dict(kw, classification=kw["classification"][:-1])
    with pytest.raises(ValueError, match="classification"):
        save_cem_figures(tmp_path, **bad)
    bad = dict(kw, restored_rgb=kw["restored_rgb"][:-1])
    with pytest.raises(ValueError, match="restored_rgb"):
        save_cem_figures(tmp_path, **bad)
    bad = dict(kw, output_shape=(kw["output_shape"][0] + 8, kw["output_shape"][1]))
    with pytest.raises(ValueError, match="grid"):
        save_cem_figures(tmp_path, **bad)
    assert not any(tmp_path.iterdir())  # validation happens before anything is written


def test_save_pie_all_zero_and_bad_counts(tmp_path: Path) -> None:
    path = tmp_path / "pie.png"
    save_pie(path, {"positive": 0, "negative": 0, "zero": 0})
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100
    with pytest.raises(ValueError, match="unknown"):
        save_pie(tmp_path / "x.png", {"positive": 1, "plus": 2})
    with pytest.raises(ValueError, match="non-negative"):
        save_pie(tmp_path / "x.png", {"positive": -1})


def test_save_colorbar_shows_both_signs(tmp_path: Path) -> None:
    path = tmp_path / "cb.png"
    save_colorbar(path, vmin=-0.7, vmax=3.1, bound=2.5)
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    blue = (rgb[..., 2] > 150) & (rgb[..., 0] < 60) & (rgb[..., 1] < 60)
    assert red.sum() > 200 and blue.sum() > 200
    # blue on the left, red on the right
    assert np.nonzero(blue)[1].mean() < np.nonzero(red)[1].mean()
