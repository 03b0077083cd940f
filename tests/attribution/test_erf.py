"""The effective receptive field against networks whose ERF is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import Identity
from scipy.signal import convolve2d
from torch import nn

from cem_lab.attribution import AttributionError
from cem_lab.attribution.erf import area_ratio, bootstrap_interval, effective_receptive_field, mass_radius


class BoxStack(nn.Module):
    """``depth`` box filters of ``k`` x ``k`` ones per channel (zero padding): the gradient of one output pixel
    is the depth-fold convolution of boxes, centred on it."""

    def __init__(self, depth: int, k: int = 3):
        super().__init__()
        self.convs = nn.ModuleList()
        for _ in range(depth):
            conv = nn.Conv2d(3, 3, k, padding=k // 2, groups=3, bias=False)
            nn.init.ones_(conv.weight)
            self.convs.append(conv)

    def forward(self, x):
        for c in self.convs:
            x = c(x)
        return x


class Nearest(nn.Module):
    """SR x``s`` by pixel repetition: output pixel (y, x) is input pixel (y // s, x // s)."""

    def __init__(self, s: int):
        super().__init__()
        self.s = s
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return nn.functional.interpolate(x, scale_factor=self.s, mode="nearest") + 0 * self.dummy


class ScaleByInput(nn.Module):
    """y = x * x: the gradient 2 x depends on the input, so it shows which input the model was given."""

    def forward(self, x):
        return x * x


def _box_power(depth: int, k: int = 3) -> np.ndarray:
    out = np.ones((1, 1))
    for _ in range(depth):
        out = convolve2d(out, np.ones((k, k)))
    return out


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_the_erf_of_stacked_box_filters_is_the_k_fold_box_convolution(depth):
    roi = (12, 10, 9)  # centre pixel (16, 14), more than depth pixels from every border of 32 x 32
    res = effective_receptive_field(BoxStack(depth), _images(3), roi)
    want = np.zeros((32, 32))
    r = depth
    want[16 - r : 16 + r + 1, 14 - r : 14 + r + 1] = 3 * _box_power(depth)  # |grad| summed over 3 channels
    assert res.maps.shape == (3, 32, 32) and res.target == (16, 14, 1) and res.scale == 1
    for m in res.maps:  # linear network: the same map for every image
        np.testing.assert_allclose(m, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.mean_map, want, rtol=0, atol=1e-6)


def test_the_erf_of_the_whole_roi_sums_the_centre_erfs_of_its_pixels():
    roi = (10, 12, 4)
    res = effective_receptive_field(BoxStack(2), _images(1), roi, point="roi")
    want = np.zeros((32, 32))
    for y in range(10, 14):
        for x in range(12, 16):
            want[y - 2 : y + 3, x - 2 : x + 3] += 3 * _box_power(2)
    np.testing.assert_allclose(res.maps[0], want, atol=1e-5)
    assert res.centre == (12.0, 14.0)


def test_a_one_pixel_network_has_area_ratio_1_over_n_at_every_level():
    res = effective_receptive_field(Identity(), _images(4, 16), (3, 5, 6))
    n = 16 * 16
    ratios = res.area_ratios((0.2, 0.3, 0.5, 0.99))
    np.testing.assert_allclose(ratios, 1 / n)
    s = res.area_ratio_summary()
    assert set(s) == {"20", "30", "50", "99"}
    for entry in s.values():
        assert entry["mean"] == pytest.approx(1 / n) and entry["of_mean_map"] == pytest.approx(1 / n)
        assert entry["low"] == pytest.approx(1 / n) and entry["high"] == pytest.approx(1 / n)
        assert entry["images"] == 4
    # the gradient sits on the centre pixel (6, 8), whose centre is the centre: mass radius 0
    assert res.maps[0][6, 8] == pytest.approx(3.0) and res.maps[0].sum() == pytest.approx(3.0)
    np.testing.assert_allclose(res.mass_radii((0.5, 0.99)), 0.0)


def test_a_larger_kernel_has_a_larger_area_and_radius():
    roi = (12, 12, 8)
    small = effective_receptive_field(BoxStack(2, k=3), _images(2), roi)
    large = effective_receptive_field(BoxStack(2, k=5), _images(2), roi)
    for p in (0.2, 0.5, 0.99):
        assert large.area_ratios((p,))[0, 0] > small.area_ratios((p,))[0, 0]
    assert large.mass_radii((0.99,))[0, 0] > small.mass_radii((0.99,))[0, 0]
    # the 99 % area of a 5x5 box stack of two: 3 * (9x9 triangle-shaped weights): at most 81 pixels of 1024
    assert 0 < large.area_ratios((0.99,))[0, 0] <= 81 / 1024


def test_sr_maps_the_roi_in_output_pixels_onto_the_input_pixels():
    res = effective_receptive_field(Nearest(2), _images(1, 16), (20, 8, 5))  # centre output pixel (22, 10)
    assert res.scale == 2 and res.input_shape == (16, 16) and res.output_shape == (32, 32)
    nz = np.argwhere(res.maps[0] > 0)
    assert nz.tolist() == [[11, 5]]  # input pixel (22 // 2, 10 // 2)
    # its centre lies at output (23, 11); the centre pixel's centre at (22.5, 10.5)
    assert res.mass_radii((0.5,))[0, 0] == pytest.approx(np.hypot(0.5, 0.5))


def test_a_task_degrades_the_clean_images_first():
    clean = _images(2, 16)
    res = effective_receptive_field(Nearest(1), clean, (0, 0, 4), task="sr")  # x4 bicubic: 4x4 inputs
    assert res.input_shape == (4, 4) and res.output_shape == (4, 4) and res.meta["task"]["name"] == "sr"
    with pytest.raises(AttributionError, match="lies outside"):
        effective_receptive_field(Nearest(1), clean, (4, 4, 4), task="sr")  # fits the 16x16 clean image only
    # DN: the noise differs between the images (seed + k) and the network sees it
    noisy = effective_receptive_field(ScaleByInput(), clean[:1].expand(2, -1, -1, -1), (0, 0, 4), task="dn")
    assert not np.allclose(noisy.maps[0], noisy.maps[1])


def test_area_ratio_and_mass_radius_on_hand_made_maps():
    even = np.ones((10, 10))
    assert area_ratio(even, 0.5) == pytest.approx(0.5) and area_ratio(even, 0.99) == pytest.approx(0.99)
    m = np.array([[0.0, 1.0], [2.0, 7.0]])  # total 10: 7 holds 70 %, 7 + 2 = 90 %
    assert area_ratio(m, 0.7) == pytest.approx(0.25) and area_ratio(m, 0.71) == pytest.approx(0.5)
    assert area_ratio(m, 0.99) == pytest.approx(0.75) and np.isnan(area_ratio(np.zeros(4), 0.5))
    d = np.array([[3.0, 2.0], [1.0, 0.0]])
    assert mass_radius(m, d, 0.7) == 0.0 and mass_radius(m, d, 0.8) == 1.0 and mass_radius(m, d, 1.0) == 2.0
    with pytest.raises(AttributionError, match="share"):
        area_ratio(m, 1.5)


def test_the_bootstrap_interval_holds_the_mean_and_needs_two_values():
    mean, lo, hi, n = bootstrap_interval([1.0, 2.0, 3.0, 4.0, np.nan])
    assert (mean, n) == (2.5, 4) and 1.0 <= lo < 2.5 < hi <= 4.0
    assert bootstrap_interval([1.0, 2.0, 3.0, 4.0]) == bootstrap_interval([1.0, 2.0, 3.0, 4.0])  # seeded
    m1, l1, h1, n1 = bootstrap_interval([5.0])
    assert (m1, n1) == (5.0, 1) and np.isnan(l1) and np.isnan(h1)


def test_bad_inputs_are_refused():
    with pytest.raises(AttributionError, match="point"):
        effective_receptive_field(Identity(), _images(1), (0, 0, 4), point="edge")
    with pytest.raises(AttributionError, match="several sizes"):
        effective_receptive_field(Identity(), [_images(1, 8)[0], _images(1, 16)[0]], (0, 0, 4))
    with pytest.raises(AttributionError, match="lies outside"):
        effective_receptive_field(Identity(), _images(1, 8), (6, 6, 4))
    with pytest.raises(AttributionError, match="zero on every input pixel"):
        effective_receptive_field(lambda x: x * 0, _images(1, 8).requires_grad_(False), (0, 0, 4))
