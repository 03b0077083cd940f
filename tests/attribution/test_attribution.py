"""Gradient attributions (LAM, saliency, Captum's IG) on the CEM grid, and faithfulness checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ConvStack
from torch import nn

from cem_lab.attribution import (
    LAM,
    AttributionError,
    IntegratedGradients,
    RoiObjective,
    Saliency,
    aggregate_blocks,
    blur_path,
    curve_auc,
    deletion_curve,
    insertion_curve,
    rank_blocks,
    rank_correlation,
    replace_blocks_metric,
    sign_test,
)
from cem_lab.causal import BlockGrid, Roi
from cem_lab.causal.interventions import gaussian_blur
from cem_lab.images import from_uint8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tensors here are tiny: one intra-op thread is fastest, and it does not spin against other
    processes on a shared machine. The previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def small_input(clean_image) -> torch.Tensor:
    """A 24x24 crop of the astronaut: structure for the gradient-magnitude objective."""
    return from_uint8(clean_image)[:, :, 8:32, 12:36].contiguous()


class LinearSR(nn.Module):
    """A fixed x2 linear model: conv without bias + pixel shuffle (linear in the input)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 12, 3, padding=1, bias=False)
        self.up = nn.PixelShuffle(2)
        self.scale = 2

    def forward(self, x):
        return self.up(self.conv(x))


class UnderInferenceMode(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = ConvStack(depth=2, width=4)

    def forward(self, x):
        with torch.inference_mode():
            return self.inner(x)


class Detaching(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x.detach())


class MaskedOutput(nn.Module):
    """Zero output (and zero gradient) in rows/columns 0..11 of the output."""

    def __init__(self):
        super().__init__()
        self.inner = ConvStack(depth=2, width=4)

    def forward(self, x):
        y = self.inner(x)
        mask = torch.ones_like(y)
        mask[:, :, :12, :12] = 0
        return y * mask


def _objective_value(model, x, objective):
    with torch.no_grad():
        return float(objective(model(x))[0])


# --- integrated gradients (Captum) -------------------------------------------------------------
def test_ig_through_captum_is_complete(small_input):
    """Completeness: sum(IG) = F(x) - F(baseline), within 1e-2 of |F(x) - F(baseline)| (64 Gauss-Legendre
    steps on a ReLU conv stack and the gradient-magnitude objective)."""
    pytest.importorskip("captum")
    model = ConvStack(depth=3, width=6)
    roi = Roi(8, 8, 8)
    obj = RoiObjective(roi, "gradient")
    for baseline in ("black", "blur"):
        amap = IntegratedGradients(model).attribute(
            small_input, roi, block=4, baseline=baseline, steps=64, batch_size=16, progress=False
        )
        base = torch.zeros_like(small_input) if baseline == "black" else gaussian_blur(small_input, 1.2)
        gap = _objective_value(model, small_input, obj) - _objective_value(model, base, obj)
        assert abs(gap) > 0.1
        assert abs(amap.attribution.sum() - gap) <= 1e-2 * abs(gap), (baseline, amap.attribution.sum(), gap)
        assert abs(amap.meta["delta"]) <= 1e-2 * abs(gap)
        assert amap.attribution.shape == (3, 24, 24) and amap.block_abs.shape == (6, 6)


def test_ig_says_when_it_misses_completeness_by_more_than_one_percent(small_input, caplog):
    """The embedded DnCNN (trained, so its gradient-magnitude objective is far from linear) with 2 steps
    misses completeness by more than 1 %: the map records the gap and one warning line says it."""
    pytest.importorskip("captum")
    from cem_lab.attribution.gradients import completeness_warning
    from cem_lab.models.embedded import load_embedded_model

    assert completeness_warning(101.0, 100.0, 50) is None  # 1 % exactly: complete enough
    assert completeness_warning(1.0, 0.0, 50) is None  # no change to attribute
    text = completeness_warning(98.0, 100.0, 50)
    assert text.startswith("integrated gradients are 2.00% off completeness (more than 1%)") and "50 steps" in text

    model = load_embedded_model()
    with caplog.at_level("WARNING", logger="cem_lab"):
        amap = IntegratedGradients(model).attribute(small_input, Roi(8, 8, 8), block=4, steps=2, progress=False)
    gap = amap.objective_value - amap.meta["baseline_objective"]
    assert abs(amap.meta["delta"]) > 0.01 * abs(gap)
    assert amap.meta["completeness_warning"] == completeness_warning(float(amap.attribution.sum()), gap, 2)
    assert [r.getMessage() for r in caplog.records] == [amap.meta["completeness_warning"]]


# --- LAM ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("integration", ["riemann_right", "trapezoid"])
def test_lam_on_a_linear_model_equals_its_closed_form(small_input, integration):
    """Linear f and the linear objective roi_sum: the gradient g is the same at every path point and
    the finite-difference path sum telescopes to g * (x - blur_sigma_max(x)), to 1e-5."""
    model = LinearSR()
    roi, sigma = Roi(16, 12, 8), 2.0
    obj = RoiObjective(roi, "roi_sum")
    x = small_input.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(obj(model(x)).sum(), x)
    expected = (g * (small_input - gaussian_blur(small_input, sigma)))[0].double().numpy()
    amap = LAM(model).attribute(
        small_input,
        roi,
        block=4,
        objective="roi_sum",
        sigma_max=sigma,
        steps=20,
        batch_size=6,
        integration=integration,
        progress=False,
    )
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(amap.attribution, expected, atol=1e-5, rtol=0)
    assert amap.scale == 2 and amap.output_shape == (48, 48) and amap.block_abs.shape == (12, 12)
    assert abs(amap.meta["delta"]) < 1e-4


def test_lam_path_runs_from_the_blurred_baseline_to_the_input(small_input):
    sigmas, path = blur_path(small_input, 1.2, 10)
    assert sigmas[0] == 1.2 and sigmas[-1] == 0 and np.allclose(np.diff(sigmas), -0.12)
    assert torch.equal(path[-1:], small_input)
    assert torch.allclose(path[:1], gaussian_blur(small_input, 1.2))
    # the distance to the input shrinks along the path (a blur of sigma < 0.2 is the identity in float32)
    dist = [(p - small_input[0]).abs().sum().item() for p in path]
    assert all(a >= b for a, b in zip(dist[:-1], dist[1:])) and dist[0] > dist[5] > dist[7] > 0


def test_lam_does_not_depend_on_the_batch_size_and_is_nearly_complete(small_input):
    model = ConvStack(depth=3, width=6)
    roi = Roi(8, 8, 8)
    maps = [
        LAM(model).attribute(small_input, roi, block=4, steps=32, batch_size=b, integration="trapezoid", progress=False)
        for b in (1, 5, 33)
    ]
    for m in maps[1:]:
        np.testing.assert_allclose(m.attribution, maps[0].attribution, atol=1e-6)
    m = maps[0]
    gap = m.objective_value - m.meta["baseline_objective"]
    assert abs(m.attribution.sum() - gap) < 2e-2 * abs(gap)
    # far from the ROI (beyond the receptive field of 7 pixels) nothing is attributed
    assert np.abs(m.attribution[:, :, 20:]).max() == 0 and np.abs(m.attribution[:, 8:16, 8:16]).max() > 0


def test_saliency_is_the_absolute_input_gradient(small_input):
    model = ConvStack(depth=3, width=6)
    roi = Roi(4, 4, 8)
    x = small_input.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(RoiObjective(roi)(model(x)).sum(), x)
    amap = Saliency(model).attribute(small_input, roi, block=4)
    np.testing.assert_allclose(amap.attribution, g[0].abs().double().numpy(), atol=1e-7)
    signed = Saliency(model).attribute(small_input, roi, block=4, abs=False)
    np.testing.assert_allclose(signed.attribution, g[0].double().numpy(), atol=1e-7)
    assert (signed.attribution < 0).any()


def test_attributions_work_inside_the_callers_no_grad_or_inference_mode(small_input):
    model = ConvStack(depth=2, width=4)
    ref = Saliency(model).attribute(small_input, (4, 4, 8), block=4).attribution
    with torch.no_grad():
        a = Saliency(model).attribute(small_input, (4, 4, 8), block=4).attribution
    with torch.inference_mode():
        x = small_input.clone()
        b = LAM(model).attribute(x, (4, 4, 8), block=4, steps=4, progress=False)
    np.testing.assert_array_equal(a, ref)
    assert np.abs(b.attribution).sum() > 0


# --- the objective ------------------------------------------------------------------------------------
def test_gradient_magnitude_objective_on_a_ramp():
    ramp = (torch.arange(16.0) * 0.05).view(1, 1, 1, 16).expand(1, 3, 16, 16)
    rgb = RoiObjective((2, 3, 8), "gradient")(ramp)
    grey = RoiObjective((2, 3, 8), "gradient", channels="grey")(ramp)
    assert rgb.item() == pytest.approx(3 * 64 * 0.05, rel=1e-5)
    assert grey.item() == pytest.approx(64 * 0.05, rel=1e-5)
    # at the right edge the missing neighbour is replicated: the last column adds nothing
    edge = RoiObjective((0, 8, 8), "gradient", channels="grey")(ramp)
    assert edge.item() == pytest.approx(8 * 7 * 0.05, rel=1e-5)
    assert RoiObjective((0, 0, 4), "roi_sum")(ramp).item() == pytest.approx(3 * 4 * (0 + 1 + 2 + 3) * 0.05)


# --- block aggregation --------------------------------------------------------------------------------
@pytest.mark.parametrize("h,w,scale,block", [(20, 18, 1, 8), (16, 16, 2, 4), (21, 13, 3, 12)])
def test_block_aggregation_matches_blockgrid_boxes(h, w, scale, block):
    grid = BlockGrid(h, w, scale, block)
    ones = np.ones((3, h, w))
    counts = aggregate_blocks(ones, grid)
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, h, w))
    signed, absolute = aggregate_blocks(values, grid, "signed"), aggregate_blocks(values, grid, "abs")
    assert counts.shape == grid.shape
    for i in range(len(grid)):
        y0, y1, x0, x1 = grid.box(i)
        r, c = divmod(i, grid.cols)
        assert counts[r, c] == 3 * (y1 - y0) * (x1 - x0)
        assert signed[r, c] == pytest.approx(values[:, y0:y1, x0:x1].sum())
        assert absolute[r, c] == pytest.approx(np.abs(values[:, y0:y1, x0:x1]).sum())
    assert counts.sum() == 3 * h * w


def test_attribution_map_lies_on_the_cem_grid(small_input):
    amap = Saliency(ConvStack(depth=2, width=4)).attribute(small_input, (8, 4, 8), block=8)
    grid = BlockGrid(24, 24, 1, 8)
    np.testing.assert_array_equal(amap.roi_mask, grid.roi_mask(Roi(8, 4, 8)))
    np.testing.assert_allclose(amap.block_abs, aggregate_blocks(amap.attribution, grid))
    assert amap.ranking()[0] not in np.flatnonzero(amap.roi_mask)


# --- faithfulness ---------------------------------------------------------------------------------------
def _additive_metric(contrib):
    """Toy ROI metric: the sum of the contributions of the blocks that were not replaced."""

    def metric_after(blocks):
        keep = np.ones(contrib.size, dtype=bool)
        keep[np.asarray(blocks, dtype=int)] = False
        return float(contrib[keep].sum())

    return metric_after


def test_deletion_curve_of_the_true_order_is_monotone_and_beats_random_orders():
    rng = np.random.default_rng(3)
    contrib = rng.uniform(0.1, 2.0, size=(5, 5))  # each block helps the ROI by a known amount
    metric = _additive_metric(contrib.ravel())
    true = rank_blocks(contrib)
    dele = deletion_curve(true, metric)
    ins = insertion_curve(true, metric)
    assert dele.values[0] == pytest.approx(contrib.sum()) and dele.values[-1] == pytest.approx(0)
    assert np.all(np.diff(dele.values) <= 1e-12) and np.all(np.diff(ins.values) >= -1e-12)
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(25)
        assert dele.auc < deletion_curve(order, metric).auc
        assert ins.auc > insertion_curve(order, metric).auc
    # fewer points: the curve keeps both ends
    coarse = deletion_curve(true, metric, steps=5)
    assert list(coarse.counts) == [0, 5, 10, 15, 20, 25]


def test_curve_area_is_normalised_by_the_number_of_steps():
    f = np.linspace(0, 1, 5)
    assert curve_auc(f, np.ones(5)) == pytest.approx(1.0)
    assert curve_auc(f, 1 - f) == pytest.approx(0.5)
    assert curve_auc(f, [4, 0, 0, 0, 0]) == pytest.approx(0.5)  # (4 + 0) / 2 / 4 steps


def test_rank_correlation_of_block_maps():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    assert rank_correlation(a, np.exp(a)).rho == pytest.approx(1.0)
    assert rank_correlation(a, -a).rho == pytest.approx(-1.0)
    b = a.copy()
    b[0, 0] = np.nan
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 1] = True
    res = rank_correlation(a, b, exclude=mask)
    assert res.n == 14 and res.rho == pytest.approx(1.0)
    assert rank_correlation(a, -a, absolute=True).rho == pytest.approx(1.0)


def test_sign_test_confirms_true_negatives_and_rejects_false_ones():
    rng = np.random.default_rng(1)
    contrib = rng.uniform(0.2, 1.0, size=36) * np.where(np.arange(36) % 3 == 0, -1, 1)  # 12 hurt the ROI
    metric = _additive_metric(contrib)
    good = sign_test(contrib.reshape(6, 6), metric)
    assert good.n == 12 and good.k == 12 and good.share == 1.0
    assert good.pvalue == pytest.approx(0.5**12)
    bad = sign_test(-contrib.reshape(6, 6), metric)
    assert bad.n == 24 and bad.k == 0 and bad.pvalue == pytest.approx(1.0)
    none = sign_test(np.abs(contrib), metric)
    assert none.n == 0 and np.isnan(none.pvalue)


def test_replace_blocks_metric_matches_the_cem(clean_image):
    """One replaced block = the CEM's own intervention of it: M0 - metric_after([b]) = effect_raw[b]."""
    from cem_lab import compute_cem
    from cem_lab.tasks import DenoiseTask

    model, task, roi = ConvStack(depth=3, width=6), DenoiseTask(50), (16, 16, 16)
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
    ti = task.prepare(from_uint8(clean_image), 0)
    metric_after = replace_blocks_metric(model, ti, task=task, roi=roi, block=8, intervention="zeros")
    assert metric_after.baseline == pytest.approx(res.baseline_metric, abs=1e-9)
    for b in (0, 8, 14, 35):
        assert metric_after.baseline - metric_after([b]) == pytest.approx(res.effect_raw.ravel()[b], abs=1e-6)
    curve = deletion_curve(rank_blocks(res.effect, exclude=res.roi_mask), metric_after, steps=4)
    assert curve.values[0] == pytest.approx(res.baseline_metric) and curve.values[-1] < curve.values[0]


# --- errors ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [LAM, Saliency, IntegratedGradients])
def test_a_model_run_under_inference_mode_is_refused(small_input, method):
    if method is IntegratedGradients:
        pytest.importorskip("captum")
    with pytest.raises(AttributionError, match="differentiable torch model") as err:
        method(UnderInferenceMode()).attribute(small_input, (4, 4, 8), block=4)
    assert "compute_cem" in str(err.value) and "inference_mode" in str(err.value)


def test_a_model_that_detaches_its_input_is_refused(small_input):
    with pytest.raises(AttributionError, match="does not depend on the input through autograd"):
        LAM(Detaching()).attribute(small_input, (4, 4, 8), block=4, progress=False)


def test_a_non_torch_callable_is_refused(small_input):
    def numpy_model(x):
        return torch.from_numpy(np.asarray(x) * 2.0)

    with pytest.raises(AttributionError, match="differentiable torch model"):
        Saliency(numpy_model).attribute(small_input, (4, 4, 8), block=4)
    with pytest.raises(AttributionError, match="not a torch tensor"):
        Saliency(lambda x: x.detach().numpy()).attribute(small_input, (4, 4, 8), block=4)
    assert issubclass(AttributionError, ValueError)


@pytest.mark.parametrize("objective", ["gradient", "roi_sum"])
def test_a_roi_with_zero_objective_gradient_is_refused(small_input, objective):
    with pytest.raises(AttributionError, match="identically zero.*another ROI"):
        LAM(MaskedOutput()).attribute(small_input, (2, 2, 8), block=4, objective=objective, steps=4, progress=False)
    with pytest.raises(AttributionError, match="identically zero"):
        Saliency(MaskedOutput()).attribute(small_input, (2, 2, 8), block=4, objective=objective)
    # elsewhere the same model is fine
    Saliency(MaskedOutput()).attribute(small_input, (12, 12, 8), block=4, objective=objective)


def test_a_roi_outside_the_output_is_refused(small_input):
    with pytest.raises(AttributionError, match="outside the 48x48 model output"):
        LAM(LinearSR()).attribute(small_input, (44, 0, 8), block=4, progress=False)
    with pytest.raises(AttributionError, match="outside the 24x24 model output"):
        Saliency(ConvStack(depth=2, width=4)).attribute(small_input, (-1, 0, 8), block=4)
    with pytest.raises(AttributionError, match="does not fit"):
        Saliency(ConvStack(depth=2, width=4)).attribute(small_input, (0, 0, 32), block=4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_lam_runs_on_the_models_device(small_input):
    model = ConvStack(depth=3, width=6)
    cpu = LAM(model).attribute(small_input, (8, 8, 8), block=4, steps=8, progress=False)
    gpu = LAM(model.cuda()).attribute(small_input, (8, 8, 8), block=4, steps=8, progress=False)
    assert gpu.meta["device"].startswith("cuda")
    np.testing.assert_allclose(gpu.attribution, cpu.attribution, atol=1e-4)


def test_rank_correlation_on_the_support_ignores_shared_zeros():
    from cem_lab.attribution import rank_correlation

    a = np.zeros((10, 10))
    b = np.zeros((10, 10))
    a[0, :4], b[0, :4] = [1, 2, 3, 4], [4, 3, 2, 1]  # opposite orders where the maps mark anything
    everywhere = rank_correlation(a, b).rho
    marked = rank_correlation(a, b, support=True)
    assert everywhere > 0.5  # the 96 shared zeros dominate
    assert marked.n == 4 and marked.rho == pytest.approx(-1.0)
