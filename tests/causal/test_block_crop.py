"""Per-block recompute (recompute=block_crop): each item on the smallest crop its block needs gives the
ROI-crop map, pushes fewer pixels, is checked before it is trusted, and falls back where it cannot hold."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ConvStack, GlobalAttention

from cem_lab import compute_cem
from cem_lab.causal.recompute import BlockCropRecompute

KW = dict(block=8, coarse=2, fine=6, progress=False, figures=False, seed=3)


@pytest.mark.parametrize("name, scale", [("dn", 1), ("sr", 2)])
def test_block_crops_give_the_roi_crop_map(small_bank, name, scale):
    from skimage import data

    from cem_lab.tasks import make_task

    model = ConvStack(depth=6, scale=scale)
    task = make_task(name, scale=scale) if scale > 1 else name
    image = np.ascontiguousarray(data.astronaut()[60:156, 160:256])  # 96x96: an LR input of 48x48 at x2
    kw = dict(KW, batch_size=64)
    ref = compute_cem(model, image, task, (32, 32, 32), patch_bank=small_bank, **kw)
    new = compute_cem(model, image, task, (32, 32, 32), patch_bank=small_bank, recompute="block_crop", **kw)
    assert ref.meta["mode"] == new.meta["mode"] == "crop"
    assert any(n.startswith("per-block recompute: reach") for n in new.meta["notes"]), new.meta["notes"]
    assert new.meta["block_crop_check"]["ok"]
    np.testing.assert_array_equal(new.classification, ref.classification)
    np.testing.assert_allclose(new.effect_raw, ref.effect_raw, atol=1e-3)
    assert new.meta["settings"]["recompute"] == "block_crop" and "recompute" not in ref.meta["settings"]
    if name == "dn":  # reach 6 around a 32x32 ROI: the far blocks' crops are much smaller than the ROI's
        assert new.meta["pixels_pushed"] < 0.9 * ref.meta["pixels_pushed"]


def test_block_crop_maps_do_not_depend_on_the_batch_size(clean_image, small_bank):
    model = ConvStack(depth=4)
    a = compute_cem(
        model, clean_image, "dn", (16, 16, 16), patch_bank=small_bank, recompute="block_crop", batch_size=32, **KW
    )
    b = compute_cem(
        model, clean_image, "dn", (16, 16, 16), patch_bank=small_bank, recompute="block_crop", batch_size=5, **KW
    )
    np.testing.assert_array_equal(a.effect_raw, b.effect_raw)


def test_a_global_model_falls_back_and_says_why(clean_image, small_bank):
    ref = compute_cem(GlobalAttention(), clean_image, "dn", (16, 16, 16), patch_bank=small_bank, **KW)
    res = compute_cem(
        GlobalAttention(), clean_image, "dn", (16, 16, 16), patch_bank=small_bank, recompute="block_crop", **KW
    )
    assert res.meta["mode"] == "full"
    assert any("per-block recompute (recompute=block_crop) not used" in n for n in res.meta["notes"])
    np.testing.assert_array_equal(res.effect_raw, ref.effect_raw)


def test_a_wrong_reach_is_caught_by_the_check_and_falls_back(clean_image, small_bank, monkeypatch):
    monkeypatch.setattr(BlockCropRecompute, "reach", lambda self, job: 0)  # pretend the model sees no neighbours
    ref = compute_cem(ConvStack(depth=4), clean_image, "dn", (16, 16, 16), patch_bank=small_bank, **KW)
    res = compute_cem(
        ConvStack(depth=4), clean_image, "dn", (16, 16, 16), patch_bank=small_bank, recompute="block_crop", **KW
    )
    assert not res.meta["block_crop_check"]["ok"]
    assert any("per-block and ROI-crop outputs differ" in n for n in res.meta["notes"])
    np.testing.assert_array_equal(res.effect_raw, ref.effect_raw)


def test_an_unknown_recompute_is_refused(clean_image, small_bank):
    with pytest.raises(ValueError, match="recompute must be"):
        compute_cem(ConvStack(depth=3), clean_image, "dn", (16, 16, 16), patch_bank=small_bank, recompute="tiles", **KW)
