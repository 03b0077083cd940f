"""The causal core: interventions per task, estimators, crop acceleration, determinism, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ConvStack, GlobalAttention, Identity

from cem_lab import compute_cem
from cem_lab.causal import BlockGrid, CoarseToFineEstimator, ExhaustiveEstimator, LVIntervention, Roi, draw_rng
from cem_lab.images import from_uint8, quantize
from cem_lab.metrics import RoiMetric
from cem_lab.tasks import DenoiseTask, DerainTask, Placement, SuperResolutionTask, make_task


def _bound(task, clean, bank, block):
    ti = task.prepare(from_uint8(clean), seed=3)
    h, w = ti.input.shape[-2:]
    grid = BlockGrid(h, w, task.scale, block)
    boxes = [grid.box(i) for i in range(len(grid))]
    iv = LVIntervention(bank, "uniform")
    iv.bind(task, ti, boxes, grid.block_in, torch.device("cpu"))
    return ti, grid, boxes, iv


def _intervene(ti, grid, iv, block_index, sample=0, seed=0):
    y0, y1, x0, x1 = grid.box(block_index)
    draw = iv.draw(draw_rng(seed, block_index, sample), block_index, sample)
    x = ti.input.clone()
    return iv.apply(x, ti.context, [Placement((y0, y1, x0, x1), (0, 0))], [draw]), draw


def test_sr_intervention_changes_exactly_one_lr_block(clean_image, small_bank):
    task = SuperResolutionTask(4)
    ti, grid, boxes, iv = _bound(task, clean_image, small_bank, block=8)
    assert tuple(ti.input.shape[-2:]) == (12, 12) and grid.block_in == 2
    k = 7
    x, (idx, noise) = _intervene(ti, grid, iv, k)
    changed = (x != ti.input).any(dim=1)[0]
    y0, y1, x0, x1 = grid.box(k)
    outside = changed.clone()
    outside[y0:y1, x0:x1] = False
    assert not outside.any(), "an SR intervention must leave every other LR pixel unchanged"
    # the block holds the bicubic-downscaled, quantized bank patch
    patch = small_bank.resized(8)[idx : idx + 1]
    expected = quantize(torch.nn.functional.interpolate(patch, size=(2, 2), mode="bicubic", antialias=True))
    assert torch.equal(x[0, :, y0:y1, x0:x1], expected[0])
    assert noise is None


def test_dr_intervention_keeps_the_rain_over_the_block(clean_image, small_bank):
    task = DerainTask("medium")
    ti, grid, boxes, iv = _bound(task, clean_image, small_bank, block=8)
    rain = ti.context["rain"]
    assert rain.abs().sum() > 0
    for k in range(len(grid)):
        x, (idx, _) = _intervene(ti, grid, iv, k, sample=k)
        y0, y1, x0, x1 = grid.box(k)
        patch = small_bank.resized(8)[idx, :, : y1 - y0, : x1 - x0]
        # the block is the new clean content plus the SAME rain, saturated to uint8
        assert torch.allclose(x[0, :, y0:y1, x0:x1], quantize(patch + rain[0, :, y0:y1, x0:x1]), atol=1e-6)
        rest = torch.ones_like(x[0, 0], dtype=torch.bool)
        rest[y0:y1, x0:x1] = False
        assert torch.equal(x[0][:, rest], ti.input[0][:, rest])


def test_dn_intervention_adds_fresh_noise_of_sigma(clean_image, small_bank):
    task = DenoiseTask(50)
    ti, grid, boxes, iv = _bound(task, clean_image, small_bank, block=8)
    diffs = []
    for s in range(40):
        x, (idx, noise) = _intervene(ti, grid, iv, 4, sample=s)
        assert noise.shape == (3, 8, 8)
        y0, y1, x0, x1 = grid.box(4)
        patch = small_bank.resized(8)[idx]
        diffs.append((x[0, :, y0:y1, x0:x1] - patch).flatten())
        rest = torch.ones_like(x[0, 0], dtype=torch.bool)
        rest[y0:y1, x0:x1] = False
        assert torch.equal(x[0][:, rest], ti.input[0][:, rest])
    d = torch.cat(diffs) * 255
    # clipping shrinks the spread a little; truncation shifts the mean down by ~0.5
    assert 35 < float(d.std()) < 55
    # same (seed, block, sample) -> same draw
    a, _ = _intervene(ti, grid, iv, 4, sample=3)
    b, _ = _intervene(ti, grid, iv, 4, sample=3)
    assert torch.equal(a, b)


def test_estimator_matches_closed_form_on_identity_model(clean_image, small_bank):
    """Identity model, DR task: the expectation over the bank can be enumerated exactly."""
    from cem_lab.patches import PatchBank

    bank = PatchBank(small_bank.patches[:6].copy(), small_bank.sharpness[:6].copy(), "six")
    task = DerainTask("medium")
    roi = Roi(16, 16, 16)
    res = compute_cem(
        Identity(),
        clean_image,
        task,
        roi,
        block=8,
        patch_bank=bank,
        estimator="exhaustive",
        samples=400,
        tol=0.0,
        progress=False,
        mode="full",
        image_seed=3,
    )
    ti = task.prepare(from_uint8(clean_image), seed=3)
    metric = RoiMetric("psnr")
    ref = metric.prepare(ti.target[:, :, 16:32, 16:32])
    m0 = float(metric(ti.input[:, :, 16:32, 16:32], ref)[0])
    assert res.baseline_metric == pytest.approx(m0, abs=1e-12)
    grid = BlockGrid(48, 48, 1, 8)
    patches = bank.resized(8)
    for k in range(len(grid)):
        r, c = divmod(k, grid.cols)
        y0, y1, x0, x1 = grid.box(k)
        if not res.roi_mask[r, c]:
            assert res.effect_raw[r, c] == 0.0, "a block outside the ROI has no effect on an identity model"
            continue
        vals = []
        for j in range(len(bank)):
            x = ti.input.clone()
            x[0, :, y0:y1, x0:x1] = quantize(patches[j] + ti.context["rain"][0, :, y0:y1, x0:x1])
            vals.append(float(metric(x[:, :, 16:32, 16:32], ref)[0]))
        exact = m0 - np.mean(vals)
        est, se = res.effect_raw[r, c], res.stderr[r, c]
        assert abs(est - exact) < 4 * se + 1e-9, (est, exact, se)
        assert res.ci_low[r, c] - 2 * se < exact < res.ci_high[r, c] + 2 * se
        assert res.counts[r, c] == 400


def test_zeros_baseline_equals_captum_feature_ablation(clean_image):
    captum = pytest.importorskip("captum.attr")
    model = ConvStack(depth=3, width=6)
    task = DenoiseTask(50)
    roi = Roi(16, 24, 16)
    res = compute_cem(
        model,
        clean_image,
        task,
        roi,
        block=8,
        intervention="zeros",
        estimator="exhaustive",
        samples=1,
        tol=0.0,
        progress=False,
        mode="full",
    )
    x = task.prepare(from_uint8(clean_image), 0).input
    metric = RoiMetric("psnr")
    ref = metric.prepare(from_uint8(clean_image)[:, :, 16:32, 24:40])

    def forward(inp):
        with torch.no_grad():
            return metric(model(inp)[:, :, 16:32, 24:40], ref)

    grid = BlockGrid(48, 48, 1, 8)
    mask = torch.arange(len(grid)).view(grid.shape).repeat_interleave(8, 0).repeat_interleave(8, 1)
    attr = captum.FeatureAblation(forward).attribute(
        x.double().float(), baselines=0.0, feature_mask=mask[None, None].expand(1, 3, 48, 48)
    )
    expected = attr[0, 0, ::8, ::8].double().numpy()
    np.testing.assert_allclose(res.effect, expected, atol=1e-4)
    assert np.abs(expected).max() > 0.1


def test_crop_mode_equals_full_image_mode_on_a_conv_stack(clean_image, small_bank):
    model = ConvStack(depth=4, width=8)
    kw = dict(block=8, patch_bank=small_bank, coarse=3, fine=6, tol=0.01, progress=False)
    full = compute_cem(model, clean_image, "dn", (24, 24, 8), mode="full", **kw)
    fast = compute_cem(model, clean_image, "dn", (24, 24, 8), mode="auto", **kw)
    assert fast.meta["mode"] == "crop" and full.meta["mode"] == "full"
    # receptive field radius 4: the crop is the ROI grown by 4 pixels
    assert fast.meta["dependency_region"]["box"] == [20, 36, 20, 36]
    assert fast.meta["crop_check"]["ok"]
    np.testing.assert_allclose(fast.effect, full.effect, atol=1e-6)
    np.testing.assert_array_equal(fast.classification, full.classification)
    assert fast.meta["forward_passes"] < full.meta["forward_passes"]
    # blocks outside the receptive field have no effect at all
    assert (full.effect[0, :] == 0).all() and (full.effect[:, 0] == 0).all()


class _FarGate(torch.nn.Module):
    """A 3x3 convolution plus the mean of the image's top-left 8x8 corner, read through a detached path:
    the ROI depends on that far corner, and the gradient probe cannot see it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + x[..., :8, :8].detach().mean()


def test_crop_check_catches_a_dependency_the_gradient_probe_cannot_see(clean_image, small_bank):
    """Every block outside the crop is intervened in the check, so a dependency far from the ROI (the image's
    corner, not the ring next to the crop) sends the run to the whole image, whose map shows it."""
    model = _FarGate().eval()
    kw = dict(block=8, patch_bank=small_bank, estimator="exhaustive", samples=1, progress=False)
    res = compute_cem(model, clean_image, "dn", (32, 32, 8), mode="auto", **kw)
    check = res.meta["crop_check"]
    assert not check["ok"] and check["max_outside_intervention_diff"] > 1e-4, check
    # the joint input, then the outside alone to say why
    assert check["blocks_outside"] > 8 and check["full_passes"] == 2
    assert res.meta["mode"] == "full"
    full = compute_cem(model, clean_image, "dn", (32, 32, 8), mode="full", **kw)
    np.testing.assert_array_equal(res.effect, full.effect)
    assert res.effect[0, 0] != 0  # the corner block's effect, which a crop would have set to 0


@pytest.mark.parametrize(
    ("task", "intervention"),
    [("dn", "lv"), ("sr", "lv"), ("dr", "lv"), ("dn", "blur"), ("dn", "noise"), ("jpeg", "lv")],
)
def test_the_joint_input_written_in_one_call_equals_one_block_after_another(
    clean_image, small_bank, task, intervention
):
    """The crop check's joint input intervenes every block outside the crop: where the intervention writes only its
    own (disjoint) blocks, all are written in one call, into views of the one input; the values are those of
    writing them one after another. JPEG re-encodes whole MCUs and keeps the loop."""
    from cem_lab.causal.run import prepare_cem

    scale = 2 if task == "sr" else 1
    model = ConvStack(depth=2, width=4, scale=scale)
    img = np.ascontiguousarray(np.concatenate([clean_image, clean_image[:, ::-1]], axis=1)[:, :64])
    job = prepare_cem(
        model,
        img,
        make_task(task, scale=scale) if task == "sr" else task,
        (16, 16, 16),
        block=16 if task == "jpeg" else 8,
        patch_bank=small_bank,
        intervention=intervention,
        seed=5,
    )
    blocks = np.arange(len(job.grid))
    full = (0, job.grid.input_h, 0, job.grid.input_w)
    assert job.intervention.writes_only_its_block == (task != "jpeg")
    once = job._build_joint(blocks, full, job.ti.input, job.ti.context)
    with pytest.MonkeyPatch.context() as mp:  # one block after another
        mp.setattr(type(job.intervention), "writes_only_its_block", property(lambda self: False))
        loop = job._build_joint(blocks, full, job.ti.input, job.ti.context)
    assert torch.equal(once, loop) and not torch.equal(once, job.ti.input)


def test_crop_equivalence_for_super_resolution(clean_image, small_bank):
    model = ConvStack(depth=3, width=6, scale=4)
    kw = dict(block=8, patch_bank=small_bank, coarse=2, fine=4, progress=False)
    full = compute_cem(model, clean_image, "sr", (16, 16, 16), mode="full", **kw)
    fast = compute_cem(model, clean_image, "sr", (16, 16, 16), mode="auto", **kw)
    assert fast.meta["mode"] == "crop"
    np.testing.assert_allclose(fast.effect, full.effect, atol=1e-6)


@pytest.mark.parametrize(("task", "scale", "upsampling"), [("dn", 1, "post"), ("sr", 2, "pre")])
def test_window_attention_crops_keep_the_window_grid(clean_image, small_bank, task, scale, upsampling):
    """SwinLite declares its window grid (crop_multiple); the runner snaps the crop to it, so the
    crop is cut into the same windows as the whole image and passes the crop check."""
    from cem_lab.models.archs import SwinLite

    torch.manual_seed(0)
    model = SwinLite(width=8, depth=2, heads=2, window=8, scale=scale, upsampling=upsampling).eval()
    assert model.crop_multiple == (8 if upsampling == "post" else 8 // scale)
    task = make_task(task, **({"scale": scale} if task == "sr" else {}))
    kw = dict(block=8, patch_bank=small_bank, estimator="exhaustive", samples=2, progress=False)
    full = compute_cem(model, clean_image, task, (16, 16, 8), mode="full", **kw)
    fast = compute_cem(model, clean_image, task, (16, 16, 8), mode="auto", **kw)
    assert fast.meta["mode"] == "crop" and fast.meta["crop_check"]["ok"]
    # without the grid, the crop's windows differ and the check sends the run to the whole image
    type(model).crop_multiple, kept = 1, type(model).crop_multiple
    try:
        unaligned = compute_cem(model, clean_image, task, (16, 16, 8), mode="auto", **kw)
    finally:
        type(model).crop_multiple = kept
    assert unaligned.meta["mode"] == "full"
    y0, y1, x0, x1 = fast.meta["dependency_region"]["crop"]
    assert all(v % model.crop_multiple == 0 or v in (48 // scale,) for v in (y0, y1, x0, x1))
    np.testing.assert_allclose(fast.effect, full.effect, atol=1e-5)


def test_global_model_falls_back_to_full_image(clean_image, small_bank):
    res = compute_cem(
        GlobalAttention(),
        clean_image,
        "dn",
        (16, 16, 16),
        block=8,
        patch_bank=small_bank,
        coarse=2,
        fine=3,
        progress=False,
    )
    assert res.meta["mode"] == "full"
    assert any("whole input" in n for n in res.meta["notes"])


def test_same_result_whatever_the_batch_size(clean_image, small_bank):
    model = ConvStack(depth=3, width=6)
    kw = dict(block=8, patch_bank=small_bank, coarse=3, fine=5, progress=False, seed=11)
    results = [compute_cem(model, clean_image, "dn", (16, 16, 16), batch_size=bs, **kw) for bs in (1, 7, 64)]
    for r in results[1:]:
        np.testing.assert_array_equal(r.effect_raw, results[0].effect_raw)
        np.testing.assert_array_equal(r.stderr, results[0].stderr)
        np.testing.assert_array_equal(r.classification, results[0].classification)
    other_seed = compute_cem(model, clean_image, "dn", (16, 16, 16), **{**kw, "seed": 12})
    assert not np.array_equal(other_seed.effect_raw, results[0].effect_raw)


def test_resume_after_interruption_gives_the_uninterrupted_result(tmp_path, clean_image, small_bank):
    model = ConvStack(depth=3, width=6)
    kw = dict(block=8, patch_bank=small_bank, coarse=3, fine=8, progress=False, batch_size=4, mode="full")
    reference = compute_cem(model, clean_image, "dn", (16, 16, 16), **kw)

    class Interrupt(Exception):
        pass

    seen = {"n": 0}

    def stop_in_fine(info):
        seen["n"] += 1
        if info.stage == "fine" and info.done >= 12:
            raise Interrupt

    folder = tmp_path / "run"
    with pytest.raises(Interrupt):
        compute_cem(model, clean_image, "dn", (16, 16, 16), output_dir=folder, on_batch=stop_in_fine, **kw)
    assert (folder / "state.npz").is_file() and not (folder / "cem.npz").exists()
    calls = {"n": 0}

    def count(info):
        calls["n"] += 1

    resumed = compute_cem(model, clean_image, "dn", (16, 16, 16), output_dir=folder, on_batch=count, **kw)
    assert calls["n"] < seen["n"] + 5, "the rerun must not redo finished work"
    np.testing.assert_array_equal(resumed.effect_raw, reference.effect_raw)
    np.testing.assert_array_equal(resumed.stderr, reference.stderr)
    np.testing.assert_array_equal(resumed.classification, reference.classification)
    assert (folder / "cem.npz").is_file() and (folder / "summary.json").is_file()
    # a finished folder: a rerun computes nothing
    calls["n"] = 0
    again = compute_cem(model, clean_image, "dn", (16, 16, 16), output_dir=folder, on_batch=count, **kw)
    assert calls["n"] == 0
    np.testing.assert_array_equal(again.effect, reference.effect)


def test_coarse_to_fine_semantics():
    from cem_lab.causal import BlockStats, classify

    est = CoarseToFineEstimator(coarse=3, fine=4, tol=0.5)
    coarse = BlockStats(3)
    m0 = 30.0
    # block 0: all within tol -> U; block 1: one sample deviates -> S; block 2: S
    coarse.update(
        np.array([0, 0, 0, 1, 1, 1, 2, 2, 2]), np.array([30.1, 29.9, 30.2, 30.0, 29.0, 30.0, 31.0, 31.0, 31.0]), m0
    )
    fine_stage = est.next_stage([est.first_stage(3)], {"coarse": coarse}, m0)
    assert fine_stage.blocks.tolist() == [1, 2] and fine_stage.first_sample == 3
    fine = BlockStats(3)
    fine.update(np.array([1, 1, 1, 1, 2, 2, 2, 2]), np.array([29.0, 29.2, 28.8, 29.0, 30.9, 30.7, 30.8, 30.8]), m0)
    e = est.estimate({"coarse": coarse, "fine": fine}, m0)
    assert e.effect[0] == 0 and e.decided_zero[0]
    assert e.effect[1] == pytest.approx(1.0) and e.n[1] == 4
    assert e.effect[2] == pytest.approx(-0.8)
    effect, cls, lo, hi = classify(e, tol=0.9)
    assert cls.tolist() == [0, 1, 0] and effect[2] == 0
    _, cls_sig, _, _ = classify(e, tol=0.0, rule="significance")
    assert cls_sig.tolist() == [0, 1, -1]


def test_exhaustive_counts_every_block(clean_image, small_bank):
    res = compute_cem(
        Identity(),
        clean_image,
        "dn",
        (16, 16, 16),
        block=16,
        patch_bank=small_bank,
        estimator=ExhaustiveEstimator(5),
        progress=False,
    )
    assert (res.counts == 5).all()
    s = res.summary()
    assert s["blocks_outside_roi"] == 8 and sum(s["counts"].values()) == 8


def test_a_block_subset_gets_the_values_of_the_complete_run(clean_image, small_bank):
    model = ConvStack(depth=3, width=6)
    kw = dict(block=8, patch_bank=small_bank, coarse=3, fine=5, progress=False, mode="full")
    complete = compute_cem(model, clean_image, "dn", (16, 16, 16), **kw)
    subset = [0, 7, 14, 21, 35]
    part = compute_cem(model, clean_image, "dn", (16, 16, 16), blocks=subset, **kw)
    flat = part.effect_raw.ravel()
    np.testing.assert_array_equal(flat[subset], complete.effect_raw.ravel()[subset])
    others = np.setdiff1d(np.arange(36), subset)
    assert np.isnan(flat[others]).all() and (part.counts.ravel()[others] == 0).all()
    assert sum(part.block_counts().values()) == len([b for b in subset if not part.roi_mask.ravel()[b]])


@pytest.mark.parametrize(
    "options",
    [
        {"sampler": "sharpness_matched"},
        {"sampler": "stratified"},
        {"block": 16},  # 8x8 bank patches resized bicubically to the 16-px block
        {"metric": "ssim"},
        {"intervention": "mean"},
        {"intervention": "blur"},
        {"intervention": "noise"},
        {"classification": "significance"},
        {"test_y_channel": True, "crop_border": 2},
    ],
)
def test_options_compose(clean_image, small_bank, options):
    kw = {**dict(block=8, patch_bank=small_bank, coarse=2, fine=4, progress=False), **options}
    res = compute_cem(ConvStack(depth=3), clean_image, "dn", (16, 16, 16), **kw)
    assert np.isfinite(res.effect).all() and res.grid_shape == (48 // kw["block"],) * 2
    settings = res.meta["settings"]
    if "sampler" in options:
        assert settings["intervention"]["sampler"] == options["sampler"]
    if "intervention" in options:
        assert settings["intervention"]["name"] == options["intervention"]
    if "metric" in options:
        assert res.metric == "ssim" and res.unit == ""


def test_baseline_interventions_write_what_they_say(clean_image):
    from cem_lab.causal import BaselineIntervention

    task = DenoiseTask(50)
    ti = task.prepare(from_uint8(clean_image), 0)
    grid = BlockGrid(48, 48, 1, 8)
    boxes = [grid.box(i) for i in range(len(grid))]
    pl = [Placement(boxes[7], (0, 0))]
    y0, y1, x0, x1 = boxes[7]
    for kind in ("zeros", "mean", "blur", "noise"):
        iv = BaselineIntervention(kind)
        iv.bind(task, ti, boxes, 8, torch.device("cpu"))
        draw = iv.draw(draw_rng(0, 7, 0), 7, 0)
        x = iv.apply(ti.input.clone(), ti.context, pl, [draw])
        block = x[0, :, y0:y1, x0:x1]
        if kind == "zeros":
            assert (block == 0).all()
        elif kind == "mean":
            assert torch.allclose(block, ti.input.mean(dim=(2, 3))[0, :, None, None].expand_as(block))
        elif kind == "blur":  # smoother than the noisy block it replaces
            assert block.std() < ti.input[0, :, y0:y1, x0:x1].std()
        else:
            assert 0 <= float(block.min()) and float(block.max()) <= 1 and block.std() > 0.2
        rest = torch.ones(48, 48, dtype=torch.bool)
        rest[y0:y1, x0:x1] = False
        assert torch.equal(x[0][:, rest], ti.input[0][:, rest])


def test_an_items_output_does_not_depend_on_the_chunk_it_runs_in(clean_image, small_bank):
    """The forward shape is fixed (padded to forward_batch): an item's output is bitwise the same
    alone or in a batch. (Unpadded, this DnCNN's batch-1 and batch-5 outputs differ by ~1e-7.)"""
    from cem_lab.causal import CoarseToFineEstimator
    from cem_lab.causal.job import CEMJob
    from cem_lab.causal.settings import CEMSettings
    from cem_lab.models import DnCNN

    torch.manual_seed(0)
    model = DnCNN(features=64, depth=4)
    task = DenoiseTask(50)
    ti = task.prepare(from_uint8(clean_image), 0)
    job = CEMJob(
        model,
        task,
        ti,
        Roi(16, 16, 16),
        CEMSettings(
            block=8,
            intervention=LVIntervention(small_bank),
            estimator=CoarseToFineEstimator(2, 2),
            metric=RoiMetric(),
            mode="full",
            forward_batch=8,
        ),
    )
    x = job._build(np.arange(5), np.zeros(5, dtype=int), job.crop, job.base_crop, job.ctx_crop)
    alone = job._forward(x[:1])
    together = job._forward(x)[:1]
    assert torch.equal(alone, together)
    assert torch.equal(job._forward(x[3:4]), job._forward(x)[3:4])


def test_auto_forward_batch_on_cpu_is_the_default(clean_image, small_bank):
    kw = dict(block=8, patch_bank=small_bank, coarse=2, fine=2, progress=False)
    auto = compute_cem(ConvStack(depth=3), clean_image, "dn", (16, 16, 16), forward_batch="auto", **kw)
    fixed = compute_cem(ConvStack(depth=3), clean_image, "dn", (16, 16, 16), forward_batch=8, **kw)
    assert auto.meta["settings"]["forward_batch"] == 8 and "forward_batch=auto: 8" in auto.meta["notes"]
    np.testing.assert_array_equal(auto.effect_raw, fixed.effect_raw)


def test_task_descriptions_round_trip():
    """What a run folder or a model YAML stores about its task rebuilds the same task."""
    from cem_lab.tasks import TaskError, make_task, task_from_description, task_label

    for name, kwargs, label in (
        ("sr", {"scale": 3}, "sr_x3"),
        ("dn", {"sigma": 25, "rounding": "round"}, "dn_s25"),
        ("dr", {"preset": "large"}, "dr_large"),
    ):
        task = make_task(name, **kwargs)
        again = task_from_description(task.describe())
        assert again.describe() == task.describe() and type(again) is type(task)
        assert task_label(task) == task_label(task.describe()) == label
    with pytest.raises(TaskError, match="scale is 1"):
        task_from_description({"name": "dn", "scale": 2, "sigma": 50})
    with pytest.raises(TaskError, match="bicubic"):
        task_from_description({"name": "sr", "scale": 4, "kernel": "gaussian"})


def test_partial_blocks_are_counted_with_their_sizes_in_output_pixels():
    assert BlockGrid(256, 256, 1, 8).partial_note() is None
    assert BlockGrid(64, 64, 4, 16).partial_note() is None  # 16 output px = 4 input px, divides 64
    note = BlockGrid(256, 256, 1, 7).partial_note()  # 256 = 36 x 7 + 4: a 37 x 37 grid
    assert note.startswith("cem.block=7 does not divide the 256x256 output: 73 of the 1369 blocks are partial")
    assert "the last row 4x7 px, the last column 7x4 px, the corner 4x4 px" in note
    # SR x2, block 6 output px = 3 input px on a 21 x 20 input: 21 = 7 x 3 rows, 20 = 6 x 3 + 2 columns
    note = BlockGrid(21, 20, 2, 6).partial_note()
    assert "42x40 output: 7 of the 49 blocks are partial (the last column 6x4 px," in note
