"""The JPEG task: Pillow round trips, interventions on the whole image's MCU grid, crops, a small CEM."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ConvStack
from PIL import Image

from cem_lab import compute_cem
from cem_lab.causal import BlockGrid, LVIntervention, draw_rng
from cem_lab.images import from_uint8, to_uint8
from cem_lab.tasks import (
    JpegTask,
    Placement,
    SuperResolutionTask,
    TaskError,
    crop_origin,
    read_jpeg_settings,
    task_from_description,
    task_label,
)

CONF_TASK = Path(__file__).resolve().parents[2] / "conf" / "task" / "jpeg.yaml"


@pytest.fixture(scope="module")
def odd_image() -> np.ndarray:
    """A 53x61 crop of astronaut: neither side a multiple of 8 or 16 (partial MCUs and blocks)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[141:194, 203:264])


def pillow_round_trip(arr: np.ndarray, **save) -> np.ndarray:
    """The reference: Pillow's own save and open, with the options given (none: Pillow's defaults)."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", **save)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def intervened(task, ti, content, block, crop=None):
    """The input (or its crop (y0, y1, x0, x1)) with ``content`` (1, 3, k, k) written at the whole-image
    block box ``block``, placed as the runner places it (cut by the crop, in crop coordinates)."""
    h, w = ti.input.shape[-2:]
    cy0, cy1, cx0, cx1 = crop or (0, h, 0, w)
    y0, y1, x0, x1 = block
    iy0, iy1, ix0, ix1 = max(y0, cy0), min(y1, cy1), max(x0, cx0), min(x1, cx1)
    placement = Placement((iy0 - cy0, iy1 - cy0, ix0 - cx0, ix1 - cx0), (iy0 - y0, ix0 - x0))
    context = ti.crop_context((cy0, cy1, cx0, cx1)) if crop else ti.context
    x = ti.input[:, :, cy0:cy1, cx0:cx1].clone()
    return task.intervene(x, context, content, [placement])


def with_patch(clean: np.ndarray, patch: np.ndarray, block) -> np.ndarray:
    y0, y1, x0, x1 = block
    out = clean.copy()
    out[y0:y1, x0:x1] = patch[: y1 - y0, : x1 - x0]
    return out


# --- degradation --------------------------------------------------------------------------------------
@pytest.mark.parametrize("subsampling", ["4:2:0", "4:2:2", "4:4:4"])
@pytest.mark.parametrize("quality", [10, 75, 95])
def test_degrade_is_a_pillow_round_trip(odd_image, quality, subsampling):
    task = JpegTask(quality, subsampling=subsampling)
    got = to_uint8(task.degrade(from_uint8(odd_image)))
    np.testing.assert_array_equal(got, pillow_round_trip(odd_image, quality=quality, subsampling=subsampling))
    assert task.describe()["subsampling"] == subsampling


def test_defaults_are_pillows_and_4_2_0():
    """quality 75 and 4:2:0 are what Pillow writes with no options, at high qualities too."""
    from skimage import data

    img = np.ascontiguousarray(data.chelsea()[:64, :80])
    task = JpegTask()
    assert (task.quality, task.subsampling, task.mcu) == (75, "4:2:0", (16, 16))
    np.testing.assert_array_equal(to_uint8(task.degrade(from_uint8(img))), pillow_round_trip(img))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    assert read_jpeg_settings(buf) == {"quality": 95, "subsampling": "4:2:0"}


def test_scale_2_downscales_like_sr_then_compresses(odd_image):
    img = odd_image[:52, :60]
    task = JpegTask(60, scale=2)
    lr = SuperResolutionTask(2).degrade(from_uint8(img))
    got = task.degrade(from_uint8(img))
    assert got.shape[-2:] == (26, 30)
    np.testing.assert_array_equal(to_uint8(got), pillow_round_trip(to_uint8(lr), quality=60))
    with pytest.raises(TaskError, match="multiple of the scale"):
        task.degrade(from_uint8(odd_image))  # 53 x 61


def test_user_jpeg_with_its_ground_truth(odd_image, caplog, tmp_path):
    clean = from_uint8(odd_image)
    task = JpegTask(75)
    own = task.degrade(clean)
    with caplog.at_level(logging.WARNING, logger="cem_lab"):
        ti = task.prepare(clean, degraded=own)
    assert not caplog.records  # the file is this task's encode: nothing to say
    assert torch.equal(ti.context["clean"], clean) and ti.whole_keys == {"clean"}
    other = JpegTask(30).degrade(clean)
    with caplog.at_level(logging.WARNING, logger="cem_lab"):
        task.prepare(clean, degraded=other)
    assert "read_jpeg_settings" in caplog.text and "quality 75" in caplog.text
    path = tmp_path / "photo.jpg"
    Image.fromarray(odd_image).save(path, quality=30, subsampling="4:4:4")
    assert read_jpeg_settings(path) == {"quality": 30, "subsampling": "4:4:4"}


def test_user_jpeg_without_ground_truth_refuses_the_lv_intervention(odd_image, small_bank):
    task = JpegTask()
    ti = task.prepare(None, degraded=task.degrade(from_uint8(odd_image)))
    with pytest.raises(TaskError, match="ground truth") as err:
        task.check_lv_input(ti)
    assert "cem.intervention=zeros" in str(err.value)
    with pytest.raises(TaskError, match="ground truth"):
        intervened(task, ti, task.patch_content(small_bank.resized(16)[:1]), (0, 16, 0, 16))


# --- interventions --------------------------------------------------------------------------------------
@pytest.mark.parametrize("subsampling", ["4:2:0", "4:2:2", "4:4:4"])
@pytest.mark.parametrize("block", [8, 16])
def test_intervention_rewrites_exactly_the_touched_mcus(odd_image, small_bank, subsampling, block):
    """Outside the MCUs the block touches the input is unchanged bit for bit; inside they are the
    decode of the clean image with the patch written in (a whole-image encode), exactly. Every block
    of the grid, partial edge blocks included."""
    task = JpegTask(50, subsampling=subsampling)
    ti = task.prepare(from_uint8(odd_image))
    h, w = ti.input.shape[-2:]
    grid = BlockGrid(h, w, 1, block)
    content = task.patch_content(small_bank.resized(block))
    base = to_uint8(ti.input)
    for i in range(len(grid)):
        box = grid.box(i)
        patch = to_uint8(content[i % len(content)][None])
        x = to_uint8(intervened(task, ti, content[i % len(content)][None], box))
        fy0, fy1, fx0, fx1 = task.footprint(box, (h, w))
        outside = np.ones((h, w), dtype=bool)
        outside[fy0:fy1, fx0:fx1] = False
        np.testing.assert_array_equal(x[outside], base[outside])
        whole = pillow_round_trip(with_patch(odd_image, patch, box), quality=50, subsampling=subsampling)
        np.testing.assert_array_equal(x[fy0:fy1, fx0:fx1], whole[fy0:fy1, fx0:fx1])
        assert (x[box[0] : box[1], box[2] : box[3]] != base[box[0] : box[1], box[2] : box[3]]).any()


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:2:2", "4:4:4"])
def test_whole_image_encode_differs_only_in_a_one_pixel_ring_which_exact_writes(odd_image, small_bank, subsampling):
    """What ``footprint="mcu"`` leaves out: a whole-image re-encode also changes the 1-pixel ring the
    decoder's chroma upsampling reaches past the MCUs (none at 4:4:4). ``"exact"`` writes it: the
    intervened input is then the whole-image re-encode everywhere."""
    mcu_task, exact_task = (JpegTask(75, subsampling=subsampling, footprint=f) for f in ("mcu", "exact"))
    ti = mcu_task.prepare(from_uint8(odd_image))
    h, w = ti.input.shape[-2:]
    content = mcu_task.patch_content(small_bank.resized(16))
    base = to_uint8(ti.input).astype(int)
    ry, rx = mcu_task.upsampling_reach
    assert (ry, rx) == {"4:2:0": (1, 1), "4:2:2": (0, 1), "4:4:4": (0, 0)}[subsampling]
    ring_seen = 0
    for j, box in enumerate([(16, 32, 16, 32), (0, 16, 32, 48), (32, 48, 48, 61), (48, 53, 0, 16)]):
        patch = to_uint8(content[j][None])
        whole = pillow_round_trip(with_patch(odd_image, patch, box), quality=75, subsampling=subsampling)
        fy0, fy1, fx0, fx1 = mcu_task.footprint(box, (h, w))
        changed = np.abs(whole.astype(int) - base).max(axis=2) > 0
        changed[fy0:fy1, fx0:fx1] = False
        grown = np.zeros_like(changed)
        grown[max(0, fy0 - ry) : fy1 + ry, max(0, fx0 - rx) : fx1 + rx] = True
        assert not (changed & ~grown).any()  # nothing beyond the ring
        ring_seen += int(changed.sum())
        exact = to_uint8(intervened(exact_task, ti, content[j][None], box))
        np.testing.assert_array_equal(exact, whole)
    assert (ring_seen > 0) == (subsampling != "4:4:4")


@pytest.mark.parametrize("footprint", ["mcu", "exact"])
@pytest.mark.parametrize("origin", [(5, 11), (16, 3), (9, 16)])
def test_a_crop_gives_the_pixels_of_the_whole_image(odd_image, small_bank, origin, footprint):
    """The MCU grid is the whole image's: a block of a crop whose origin is not a multiple of 16 gets
    the same pixels as in the uncropped input, also where the crop cuts the block or its MCUs."""
    task = JpegTask(40, footprint=footprint)
    ti = task.prepare(from_uint8(odd_image))
    oy, ox = origin
    crop = (oy, oy + 40, ox, ox + 44)
    assert crop_origin(ti.crop_context(crop)) == origin and crop_origin(ti.context) == (0, 0)
    content = task.patch_content(small_bank.resized(8))
    for j, box in enumerate([(16, 24, 16, 24), (0, 8, 8, 16), (40, 48, 48, 56), (8, 16, 48, 56)]):
        full = intervened(task, ti, content[j][None], box)
        cropped = intervened(task, ti, content[j][None], box, crop)
        assert torch.equal(cropped, full[:, :, crop[0] : crop[1], crop[2] : crop[3]])


def test_batched_rows_through_the_lv_intervention(odd_image, small_bank):
    """LVIntervention.apply: one row per draw, each row the single-row result."""
    task = JpegTask(60)
    ti = task.prepare(from_uint8(odd_image))
    h, w = ti.input.shape[-2:]
    grid = BlockGrid(h, w, 1, 16)
    boxes = [grid.box(i) for i in range(len(grid))]
    iv = LVIntervention(small_bank, "uniform")
    iv.bind(task, ti, boxes, grid.block_in, torch.device("cpu"))
    blocks = list(range(len(grid)))
    draws = [iv.draw(draw_rng(0, b, 0), b, 0) for b in blocks]
    placements = [Placement(boxes[b], (0, 0)) for b in blocks]
    batch = iv.apply(ti.input.expand(len(blocks), -1, -1, -1).clone(), ti.context, placements, draws)
    for r, _b in enumerate(blocks):
        one = iv.apply(ti.input.clone(), ti.context, [placements[r]], [draws[r]])
        assert torch.equal(batch[r : r + 1], one)


def test_patch_content_at_scale_2_is_the_bicubic_lr_patch(small_bank):
    task = JpegTask(scale=2)
    patches = small_bank.resized(16)[:4]
    np.testing.assert_array_equal(
        task.patch_content(patches).numpy(), SuperResolutionTask(2).patch_content(patches).numpy()
    )
    with pytest.raises(TaskError, match="multiple of the scale"):
        task.patch_content(small_bank.resized(7)[:2])


# --- parameters, registry, config ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"quality": 0}, "from 1"),
        ({"quality": 101}, "from 1"),
        ({"quality": 75.5}, "integer"),
        ({"quality": True}, "integer"),
        ({"scale": 3}, "scale must be 1"),
        ({"scale": 4}, "or 2"),
        ({"subsampling": "4:1:1"}, "4:2:0"),
        ({"subsampling": 14520}, "quote it"),
        ({"footprint": "ring"}, "exact"),
    ],
)
def test_bad_parameters_are_refused_with_the_fix(kwargs, words):
    with pytest.raises(TaskError, match=words):
        JpegTask(**kwargs)


def test_registry_description_label_and_config():
    from omegaconf import OmegaConf

    assert JpegTask(subsampling=0).subsampling == "4:4:4" and JpegTask(subsampling=2).mcu == (16, 16)
    from hydra.utils import instantiate

    task = instantiate(OmegaConf.load(CONF_TASK))  # conf/task/jpeg.yaml names its class
    assert isinstance(task, JpegTask) and task.describe() == {
        "name": "jpeg",
        "scale": 1,
        "quality": 75,
        "subsampling": "4:2:0",
        "footprint": "mcu",
    }
    other = JpegTask(40, 2, "4:4:4", "exact")
    assert task_from_description(other.describe()).describe() == other.describe()
    assert task_label(task) == "jpeg_q75" and task_label(other) == "jpeg_q40_444_exact_x2"
    assert task.display_bound == 1.0 and other.display_bound == 2.5


# --- a small CEM ------------------------------------------------------------------------------------------
def _cem(clean, bank, **kw):
    args = dict(block=16, patch_bank=bank, coarse=2, fine=3, tol=0.01, progress=False, figures=False)
    args.update(kw)
    return compute_cem(args.pop("model"), clean, args.pop("task"), args.pop("roi"), **args)


def test_end_to_end_cem_is_finite_deterministic_and_crop_exact(small_bank):
    from skimage import data

    clean = np.ascontiguousarray(data.astronaut()[80:144, 180:244])
    kw = dict(model=ConvStack(depth=3, width=6), task="jpeg", roi=(24, 24, 16))
    first = _cem(clean, small_bank, **kw)
    assert np.isfinite(first.effect).all() and first.effect.shape == (4, 4)
    assert first.meta["settings"]["task"]["name"] == "jpeg" and first.meta["mode"] == "crop"
    assert np.abs(first.effect_raw).max() > 0
    again = _cem(clean, small_bank, **kw)
    np.testing.assert_array_equal(first.effect_raw, again.effect_raw)
    assert not np.array_equal(_cem(clean, small_bank, seed=5, **kw).effect_raw, first.effect_raw)
    # block 16 = the MCU: each intervention changes exactly its block, and the ROI crop is exact
    full = _cem(clean, small_bank, mode="full", **kw)
    np.testing.assert_allclose(first.effect_raw, full.effect_raw, atol=1e-6)
    # block 8 (the paper's) rewrites whole 16x16 MCUs: exact with the crop on the MCU grid
    small = _cem(clean, small_bank, block=8, crop_multiple=16, **kw)
    small_full = _cem(clean, small_bank, block=8, mode="full", **kw)
    assert small.meta["mode"] == "crop" and small.meta["crop_check"]["ok"]
    np.testing.assert_allclose(small.effect_raw, small_full.effect_raw, atol=1e-6)


def test_end_to_end_cem_at_scale_2(small_bank):
    from skimage import data

    clean = np.ascontiguousarray(data.astronaut()[96:160, 160:224])
    model = ConvStack(depth=3, width=6, scale=2)
    res = _cem(clean, small_bank, model=model, task=JpegTask(50, scale=2), roi=(32, 32, 16), block=32)
    assert res.effect.shape == (2, 2) and np.isfinite(res.effect).all()


def test_blocks_of_whole_mcus_allow_incremental_recompute(small_bank, incremental_even_when_slower):
    """With block 16 (= the 4:2:0 MCU) an intervention changes exactly its block, which incremental
    recompute checks on every batch; block 8 rewrites its whole MCU and is refused with the fix."""
    from skimage import data
    from torch import nn

    from cem_lab.causal.errors import ModelOutputError

    clean = np.ascontiguousarray(data.astronaut()[80:144, 180:244])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 3, padding=1))
    kw = dict(model=model, task="jpeg", roi=(24, 24, 16))
    fast = _cem(clean, small_bank, recompute="incremental", **kw)
    assert fast.meta["settings"].get("recompute") == "incremental"
    np.testing.assert_allclose(fast.effect_raw, _cem(clean, small_bank, mode="full", **kw).effect_raw, atol=1e-5)
    with pytest.raises(ModelOutputError, match="recompute=roi_crop"):
        _cem(clean, small_bank, recompute="incremental", block=8, **kw)
