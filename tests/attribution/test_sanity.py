"""The randomisation sanity check with known answers: a layer the map must depend on, a layer it provably
cannot depend on, the forward order of layers, the original left untouched, and what each step randomises."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cem_lab.attribution.base import AttributionError
from cem_lab.attribution.sanity import (
    forward_layers,
    map_similarity,
    randomisation_check,
    randomised_models,
    spearman_abs,
    ssim_blocks,
    topk_overlap,
)

ROI = (8, 8, 8)  # output pixels of a 24x24 image; block 4 makes a 6x6 grid


def _image(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 24, 24, generator=g)


class TwoConv(nn.Module):
    """y = conv2(relu(conv1(x))): the saliency map depends on both layers."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


class DeadBranch(TwoConv):
    """TwoConv plus a branch multiplied by zero: its layer cannot change the output or any gradient."""

    def __init__(self):
        super().__init__()
        self.branch = nn.Conv2d(3, 3, 5, padding=2)

    def forward(self, x):
        return super().forward(x) + 0.0 * self.branch(x)


class Reordered(nn.Module):
    """Modules registered c, a, b; called a, b, c (and b twice: one layer)."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(4, 3, 3, padding=1)
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 1)
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        return self.c(self.b(torch.relu(self.b(self.a(x)))))


def _check(net, **kw):
    kw.setdefault("methods", ("saliency",))
    kw.setdefault("progress", False)
    return randomisation_check(net, [_image(0), _image(1)], ROI, block=4, **kw)


def test_randomising_the_last_layer_changes_the_saliency_map():
    res = _check(TwoConv(), layers=["conv2"], objective="roi_sum")
    assert res.steps == ["conv2"]
    s = res.similarity["saliency"][:, 0, :]  # images x measures
    assert (s[:, 0] < 0.8).all(), s  # Spearman of |values| well below 1
    assert not np.allclose(res.maps["saliency"][:, 0], res.maps["saliency"][:, 1])


def test_a_layer_the_output_does_not_use_leaves_the_map_identical():
    net = DeadBranch()
    res = _check(net, methods=("saliency", "ig"), layers=["branch"], ig={"steps": 8}, objective="roi_sum")
    for m in ("saliency", "ig"):
        np.testing.assert_array_equal(res.maps[m][:, 0], res.maps[m][:, 1])
        np.testing.assert_allclose(res.similarity[m], 1.0, atol=1e-12)  # Spearman, SSIM and top-k all 1
    # the same layer in the cascade: randomising it first changes nothing, the next one (conv2) does
    casc = _check(net, objective="roi_sum")
    assert casc.layers == ["conv1", "conv2", "branch"] and casc.steps == ["branch", "conv2", "conv1"]
    sp = casc.similarity["saliency"][:, :, 0]
    assert np.allclose(sp[:, 0], 1.0) and (sp[:, 1] < 0.95).all(), sp
    v = casc.verdict("saliency")  # every layer random at the last step: a verdict by the stated rule
    assert v["spearman"]["high"] >= v["spearman"]["mean"] >= v["spearman"]["low"]
    assert v["passes"] == (v["spearman"]["high"] < v["threshold"])
    assert res.verdict("saliency") is None  # one of three layers: the network is mostly trained, no verdict


def test_layers_come_in_forward_order_not_registration_order():
    net = Reordered()
    layers, unreached = forward_layers(net, torch.rand(1, 3, 8, 8))
    assert [n for n, _ in net.named_modules() if n] == ["c", "a", "b", "unused"]
    assert layers == ["a", "b", "c"] and unreached == ["unused"]


def test_the_original_model_is_never_touched():
    net = TwoConv()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    _check(net, objective="roi_sum")
    _check(net, mode="independent", randomise="gaussian", objective="roi_sum")
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert net.training


@pytest.mark.parametrize("how", ["reset", "gaussian"])
def test_cascading_step_k_randomises_exactly_the_last_k_layers(how):
    net = Reordered()
    layers, _ = forward_layers(net, torch.rand(1, 3, 8, 8))
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    for k, (name, copy) in enumerate(randomised_models(net, layers, "cascading", seed=3, how=how), start=1):
        assert name == layers[-k]
        changed = {n for n in layers if not torch.equal(copy.get_submodule(n).weight, trained[f"{n}.weight"])}
        assert changed == set(layers[-k:]), (k, changed)
        assert torch.equal(copy.unused.weight, trained["unused.weight"])  # unreached: never randomised
    for name, copy in randomised_models(net, layers, "independent", seed=3, how=how):
        changed = {n for n in layers if not torch.equal(copy.get_submodule(n).weight, trained[f"{n}.weight"])}
        assert changed == {name}
    # the draw of a layer depends on (seed, layer), not on the mode or order
    casc = dict((n, c.get_submodule(n).weight.clone()) for n, c in randomised_models(net, layers, "cascading"))
    indep = dict((n, c.get_submodule(n).weight.clone()) for n, c in randomised_models(net, layers, "independent"))
    assert all(torch.equal(casc[n], indep[n]) for n in layers)


def test_similarity_measures_known_values():
    a = np.arange(36, dtype=float).reshape(6, 6)
    assert map_similarity(a, a) == {"spearman": 1.0, "ssim": pytest.approx(1.0), "topk": 1.0}
    assert spearman_abs(a, -a) == 1.0  # |values|
    assert spearman_abs(a, a.max() - a + 1) == pytest.approx(-1.0)
    assert topk_overlap(a, a[::-1, ::-1]) == 0.0  # k = 4 of 35 non-zero blocks; the top 4 are reversed
    z = np.zeros_like(a)
    assert map_similarity(a, z) == {"spearman": 0.0, "ssim": 0.0, "topk": 0.0}
    assert map_similarity(z, z) == {"spearman": 1.0, "ssim": 1.0, "topk": 1.0}
    # shared zeros outside the support do not count: the same values in a larger zero map score the same
    big_a, big_b = np.zeros((20, 20)), np.zeros((20, 20))
    b = np.random.default_rng(0).permutation(a.ravel()).reshape(6, 6)
    big_a[5:11, 5:11], big_b[5:11, 5:11] = a, b
    assert spearman_abs(big_a, big_b) == pytest.approx(spearman_abs(a, b))
    assert ssim_blocks(big_a, big_b) == pytest.approx(ssim_blocks(a, b))


def test_bad_input_is_refused_before_any_map():
    with pytest.raises(AttributionError, match="not among the network's layers"):
        _check(TwoConv(), layers=["conv9"])
    with pytest.raises(AttributionError, match="mode must be"):
        _check(TwoConv(), mode="top_down")
    with pytest.raises(AttributionError, match="unknown method"):
        _check(TwoConv(), methods=("gradcam",))


def test_the_cem_is_recomputed_too_and_needs_a_task():
    with pytest.raises(AttributionError, match="needs the task"):
        _check(TwoConv(), methods=("cem",))
    net = DeadBranch()
    res = randomisation_check(
        net, [_image(0)], ROI, methods=("cem",), block=8, task="dn", cem_samples=1, progress=False
    )
    assert res.maps["cem"].shape == (1, 4, 3, 3)
    np.testing.assert_array_equal(res.maps["cem"][0, 0], res.maps["cem"][0, 1])  # the dead branch: same CE map
    assert not np.array_equal(res.maps["cem"][0, 0], res.maps["cem"][0, 2])  # conv2 random: another map
