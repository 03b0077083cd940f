"""Bad input gets a clear error that names the problem and the fix, and leaves no result behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ConvStack, Identity
from PIL import Image
from torch import nn

from cem_lab import compute_cem
from cem_lab.causal import GeometryError, ModelOutputError, RunFolderError
from cem_lab.image_decoding import ImageError
from cem_lab.images import load_image
from cem_lab.patches import PatchBank, PatchBankError

KW = dict(block=8, coarse=2, fine=2, progress=False)


@pytest.fixture
def bank(small_bank):
    return small_bank


def _no_result(folder):
    return not (folder / "cem.npz").exists() and not (folder / "summary.json").exists()


@pytest.mark.parametrize(
    "roi, words",
    [
        ((40, 40, 16), "outside"),
        ((-8, 0, 16), "outside"),
        ((0, 0, 64), "does not fit"),
        ((0, 0, 0), "positive"),
    ],
)
def test_roi_outside_the_image(tmp_path, clean_image, bank, roi, words):
    with pytest.raises(GeometryError, match=words):
        compute_cem(Identity(), clean_image, "dn", roi, patch_bank=bank, output_dir=tmp_path, **KW)
    assert _no_result(tmp_path)


def test_roi_not_aligned_to_the_scale(clean_image, bank):
    with pytest.raises(GeometryError, match="not aligned to the scale x4"):
        compute_cem(ConvStack(scale=4), clean_image, "sr", (6, 8, 16), patch_bank=bank, **KW)


def test_block_not_divisible_by_the_scale(clean_image, bank):
    with pytest.raises(GeometryError, match="not divisible by the scale"):
        compute_cem(ConvStack(scale=4), clean_image, "sr", (8, 8, 16), patch_bank=bank, **{**KW, "block": 6})


def test_block_larger_than_the_image(clean_image, bank):
    with pytest.raises(GeometryError, match="larger than the image"):
        compute_cem(Identity(), clean_image, "dn", (8, 8, 16), patch_bank=bank, **{**KW, "block": 64})


def test_image_smaller_than_the_roi(bank):
    tiny = np.zeros((12, 12, 3), dtype=np.uint8)
    with pytest.raises(GeometryError, match="does not fit"):
        compute_cem(Identity(), tiny, "dn", (0, 0, 16), patch_bank=bank, **{**KW, "block": 4})


def test_partial_edge_blocks_are_supported(bank):
    img = (np.random.default_rng(0).random((44, 52, 3)) * 255).astype(np.uint8)
    res = compute_cem(ConvStack(depth=3), img, "dn", (16, 16, 16), patch_bank=bank, **KW)
    assert res.grid_shape == (6, 7)  # ceil(44/8), ceil(52/8)


def test_grey_and_rgba_images_are_converted_with_a_warning(tmp_path, clean_image):
    grey = tmp_path / "grey.png"
    Image.fromarray(clean_image[..., 0]).save(grey)
    with pytest.warns(UserWarning, match="converted to RGB"):
        arr = load_image(grey)
    assert arr.shape == (48, 48, 3) and (arr[..., 0] == arr[..., 2]).all()
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([clean_image, np.full((48, 48), 255, np.uint8)])).save(rgba)
    with pytest.warns(UserWarning, match="RGBA"):
        assert load_image(rgba).shape == (48, 48, 3)
    with pytest.warns(UserWarning, match="grey"):
        assert load_image(clean_image[..., 1]).shape == (48, 48, 3)


def test_missing_and_corrupt_images(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(bad)
    with pytest.raises(ImageError, match="uint8"):
        load_image(np.full((8, 8, 3), 300, dtype=np.int32))


class WrongScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return nn.functional.interpolate(x, scale_factor=2) + self.p


class Nan(Identity):
    def forward(self, x):
        return x * float("nan")


def test_model_output_of_the_wrong_shape_or_scale(tmp_path, clean_image, bank):
    with pytest.raises(ModelOutputError, match=r"\(3, 96, 96\) per image.*expected \(3, 48, 48\).*scale"):
        compute_cem(WrongScale(), clean_image, "dn", (8, 8, 16), patch_bank=bank, output_dir=tmp_path, **KW)
    assert _no_result(tmp_path)


def test_model_that_returns_nan(tmp_path, clean_image, bank):
    with pytest.raises(ModelOutputError, match="NaN or Inf"):
        compute_cem(Nan(), clean_image, "dn", (8, 8, 16), patch_bank=bank, output_dir=tmp_path, **KW)
    assert _no_result(tmp_path)


def test_empty_or_malformed_patch_bank(tmp_path):
    with pytest.raises(PatchBankError):
        PatchBank(np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0), "empty")
    bad = tmp_path / "bank.npz"
    np.savez(bad, something=np.zeros(3))
    with pytest.raises(PatchBankError, match="patches"):
        PatchBank.load(bad)


def test_a_folder_that_holds_another_run(tmp_path, clean_image, bank):
    compute_cem(Identity(), clean_image, "dn", (8, 8, 16), patch_bank=bank, output_dir=tmp_path, **KW)
    with pytest.raises(RunFolderError, match="other settings"):
        compute_cem(Identity(), clean_image, "dn", (16, 16, 16), patch_bank=bank, output_dir=tmp_path, **KW)


def test_ground_truth_free_metric_needed_without_ground_truth(clean_image, bank):
    noisy = clean_image.copy()
    with pytest.raises(ValueError, match="output_change"):
        compute_cem(Identity(), None, "dn", (8, 8, 16), degraded=noisy, patch_bank=bank, **KW)


def test_unknown_names_list_the_choices(clean_image, bank):
    with pytest.raises(ValueError, match="choose one of"):
        compute_cem(Identity(), clean_image, "deblur", (8, 8, 16), patch_bank=bank, **KW)
    with pytest.raises(ValueError, match="choose one of"):
        compute_cem(Identity(), clean_image, "dn", (8, 8, 16), patch_bank=bank, estimator="bayes", **KW)
    with pytest.raises(ValueError, match="zeros"):
        compute_cem(Identity(), clean_image, "dn", (8, 8, 16), intervention="shuffle", **KW)


def test_an_sr_model_with_a_dn_task_is_refused_before_any_compute(clean_image, bank):
    calls = {"n": 0}

    class CountingSR(ConvStack):
        def forward(self, x):
            calls["n"] += 1
            return super().forward(x)

    with pytest.raises(GeometryError, match="x4 model but the task dn is x1"):
        compute_cem(CountingSR(scale=4), clean_image, "dn", (8, 8, 16), patch_bank=bank, **KW)
    assert calls["n"] == 0


class NoGradient(ConvStack):
    def forward(self, x):
        with torch.no_grad():
            return super().forward(x)


def test_a_model_without_gradients_is_mapped_on_the_whole_image(clean_image, bank):
    """The crop needs the gradient probe; a model that gives no gradients still gets its map."""
    res = compute_cem(NoGradient(depth=3), clean_image, "dn", (16, 16, 16), patch_bank=bank, **KW)
    assert res.meta["mode"] == "full"
    assert any("needs gradients" in n for n in res.meta["notes"])
    ref = compute_cem(ConvStack(depth=3), clean_image, "dn", (16, 16, 16), patch_bank=bank, mode="full", **KW)
    np.testing.assert_array_equal(res.effect_raw, ref.effect_raw)
