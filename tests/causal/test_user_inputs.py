"""A user's own degraded input with its ground truth, and ground-truth-free maps."""

from __future__ import annotations

import torch
from conftest import ConvStack, Identity

from cem_lab import compute_cem
from cem_lab.images import from_uint8
from cem_lab.tasks import DenoiseTask, DerainTask

KW = dict(block=8, coarse=2, fine=3, progress=False)


def test_own_noisy_input_with_ground_truth(clean_image, small_bank):
    noisy = (DenoiseTask(25).degrade(from_uint8(clean_image), seed=5)[0].permute(1, 2, 0) * 255).round()
    noisy = noisy.to(torch.uint8).numpy()
    res = compute_cem(ConvStack(depth=3), clean_image, "dn", (16, 16, 16), degraded=noisy, patch_bank=small_bank, **KW)
    assert (res.images["input"] == noisy).all(), "the user's input is used as given, not re-degraded"
    assert (res.images["target"] == clean_image).all()
    assert res.effect.shape == (6, 6)
    # the run records that the model was given the user's file (found in the README walk: summary.json said not)
    assert any("the model's input is degraded input, as given" in n for n in res.meta["notes"]), res.meta["notes"]


def test_own_rainy_input_takes_the_rain_layer_from_the_difference(clean_image, small_bank):
    rainy = DerainTask().degrade(from_uint8(clean_image), seed=3)
    ti = DerainTask().prepare(from_uint8(clean_image), degraded=rainy)
    assert torch.allclose(ti.context["rain"], rainy - from_uint8(clean_image))
    res = compute_cem(
        Identity(),
        clean_image,
        "dr",
        (16, 16, 16),
        degraded=(rainy[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy(),
        patch_bank=small_bank,
        **KW,
    )
    assert res.effect[~res.roi_mask].max() == 0  # identity model: nothing outside the ROI matters


def test_ground_truth_free_output_change_map(clean_image, small_bank):
    res = compute_cem(
        ConvStack(depth=3),
        None,
        "dn",
        (16, 16, 16),
        degraded=clean_image,
        metric="output_change",
        patch_bank=small_bank,
        **KW,
    )
    assert res.baseline_metric == 0.0
    assert (res.effect >= 0).all() and res.effect.max() > 0
    assert res.unit == "grey levels"
    assert "target" not in res.images


def test_the_notes_on_the_input_come_before_the_preparation(clean_image, small_bank, caplog):
    """Found in the README walk: "grey image converted to RGB" was logged after minutes of preparation."""
    import logging

    grey = clean_image[..., 0]
    with caplog.at_level(logging.INFO, logger="cem_lab"):
        compute_cem(ConvStack(depth=3), grey, "dn", (16, 16, 16), patch_bank=small_bank, **KW)
    lines = [r.getMessage() for r in caplog.records]
    first_note = next(i for i, m in enumerate(lines) if m.startswith("input:") and "replicated" in m)
    first_prep = next(i for i, m in enumerate(lines) if m.startswith("preparing"))
    assert first_note < first_prep, lines
