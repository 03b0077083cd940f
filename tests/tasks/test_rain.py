"""Tests for cem_lab.tasks.rain (synthetic rain streaks, OpenCV-free)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cem_lab.tasks import rain as R
from cem_lab.tasks.rain import (
    RAIN_PRESETS,
    RainParams,
    add_rain,
    draw_rain_params,
    synthesize_rain,
)


def _axis_angle(weights: np.ndarray) -> float:
    """Principal-axis direction (degrees in [0, 180), x right, y up) of a weight image."""
    w = np.asarray(weights, dtype=np.float64)
    rows, cols = np.mgrid[0 : w.shape[0], 0 : w.shape[1]].astype(np.float64)
    x = cols - (w * cols).sum() / w.sum()
    y = -(rows - (w * rows).sum() / w.sum())
    cov = np.array([[(w * x * x).sum(), (w * x * y).sum()], [(w * x * y).sum(), (w * y * y).sum()]])
    _, vecs = np.linalg.eigh(cov)
    v = vecs[:, -1]
    return float(np.degrees(np.arctan2(v[1], v[0])) % 180.0)


def _angle_diff(a: float, b: float) -> float:
    """Smallest difference between two line orientations, in degrees."""
    return abs((a - b + 90.0) % 180.0 - 90.0)


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_layer_different_seed_different_layer():
    a, beta_a = synthesize_rain(40, 56, seed=3)
    b, beta_b = synthesize_rain(40, 56, seed=3)
    c, beta_c = synthesize_rain(40, 56, seed=4)
    np.testing.assert_array_equal(a, b)
    assert beta_a == beta_b
    assert not np.array_equal(a, c)
    assert beta_a != beta_c


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("preset", sorted(RAIN_PRESETS))
def test_params_respect_preset_ranges(preset):
    cfg = RAIN_PRESETS[preset]
    seen_widths = set()
    for seed in range(60):
        p = draw_rain_params(seed, preset)
        assert cfg["beta"][0] <= p.beta <= cfg["beta"][1]
        assert cfg["density"][0] <= p.density <= cfg["density"][1]
        assert p.width in cfg["widths"] and p.width % 2 == 1
        assert cfg["length"][0] <= p.length <= cfg["length"][1]
        assert cfg["angle"][0] <= p.angle <= cfg["angle"][1]
        assert isinstance(p.width, int) and isinstance(p.length, int) and isinstance(p.angle, int)
        seen_widths.add(p.width)
    assert seen_widths == set(cfg["widths"])  # every choice is reachable


def test_preset_values_match_the_reference():
    assert RAIN_PRESETS["medium"]["density"] == (0.005, 0.007)
    assert RAIN_PRESETS["medium"]["widths"] == (3, 5, 7)
    assert RAIN_PRESETS["medium"]["width_probs"] == (0.25, 0.5, 0.25)
    assert RAIN_PRESETS["medium"]["length"] == (35, 45)
    assert RAIN_PRESETS["medium"]["angle"] == (-30, 30)
    assert all(cfg["beta"] == (0.6, 1.0) for cfg in RAIN_PRESETS.values())
    for cfg in RAIN_PRESETS.values():
        assert len(cfg["widths"]) == len(cfg["width_probs"])
        assert sum(cfg["width_probs"]) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 1234])
def test_params_equal_fresh_randomstate_draws_in_reference_order(seed):
    p = draw_rain_params(seed, "medium")
    rs = np.random.RandomState(seed)
    beta = rs.uniform(0.6, 1.0)
    density = rs.uniform(0.005, 0.007)
    width = rs.choice([3, 5, 7], p=[0.25, 0.5, 0.25])
    length = rs.randint(35, 46)
    angle = rs.randint(-30, 31)
    assert (p.beta, p.density, p.width, p.length, p.angle) == (beta, density, width, length, angle)


def test_synthesize_uses_the_drawn_beta_and_noise_comes_after_the_params():
    seed, h, w = 11, 24, 32
    p = draw_rain_params(seed)
    layer, beta = synthesize_rain(h, w, seed)
    assert beta == p.beta
    # rebuild by hand from the same generator state: parameters first, then the noise
    rs = np.random.RandomState(seed)
    rs.uniform(0.6, 1.0)
    rs.uniform(0.005, 0.007)
    rs.choice([3, 5, 7], p=[0.25, 0.5, 0.25])
    rs.randint(35, 46)
    rs.randint(-30, 31)
    noise = rs.uniform(0, 256, (h, w))
    seeds = R._seed_field(noise, p.density)
    streaks = ndimage.correlate(seeds, R._streak_kernel(p.length, p.angle, p.width), mode="mirror")
    np.testing.assert_array_equal(layer, R._normalize_to_uint8(streaks).astype(np.float32))


def test_rain_params_validation():
    with pytest.raises(ValueError):
        RainParams(density=0.005, width=4, length=40, angle=0, beta=0.8)
    with pytest.raises(ValueError):
        RainParams(density=0.005, width=3, length=0, angle=0, beta=0.8)


# ----------------------------------------------------------------------------- layer
@pytest.mark.parametrize("seed", [0, 5, 9])
def test_layer_dtype_shape_range(seed):
    layer, beta = synthesize_rain(48, 64, seed)
    assert layer.dtype == np.float32
    assert layer.shape == (48, 64)
    assert np.array_equal(layer, np.round(layer))  # integer values
    assert layer.min() == 0.0
    # min-max normalised then truncated: the maximum is 255, or 254 when OpenCV's
    # x * (255 * (1 / max)) rounds just below 255 (the reference truncates the same way)
    assert layer.max() in (254.0, 255.0)
    assert isinstance(beta, float)


def test_layer_maximum_is_255_for_seed_0():
    layer, _ = synthesize_rain(48, 48, 0)
    assert layer.max() == 255.0


def test_normalize_is_minmax_then_truncation():
    x = np.array([[2.0, 3.0], [4.0, 6.0]])
    # (x - 2) / 4 * 255 = 0, 63.75, 127.5, 255 -> truncated 0, 63, 127, 255
    np.testing.assert_array_equal(R._normalize_to_uint8(x), [[0, 63], [127, 255]])
    assert R._normalize_to_uint8(np.full((2, 2), 7.0)).max() == 0  # flat input -> zeros


def test_streaks_cover_more_than_the_seeds_and_grow_with_the_preset():
    coverage = {}
    for preset in ("small", "medium", "large"):
        shares = []
        for seed in range(4):
            p = draw_rain_params(seed, preset)
            layer, _ = synthesize_rain(64, 64, seed, preset)
            share = float((layer > 0).mean())
            assert share > 10 * p.density  # streaks are much larger than their seeds
            assert share < 1.0 or preset == "large"
            shares.append(share)
        coverage[preset] = np.mean(shares)
    assert coverage["small"] < coverage["medium"] < coverage["large"]


# ----------------------------------------------------------------------------- kernels
def test_rotation_is_counter_clockwise_as_displayed():
    img = np.zeros((9, 9))
    img[4, 7] = 1.0  # right of the centre
    out = R._rotate(img, 90)
    assert np.unravel_index(np.argmax(out), out.shape) == (1, 4)  # now above the centre
    assert out.max() == pytest.approx(1.0)
    out = R._rotate(img, -90)
    assert np.unravel_index(np.argmax(out), out.shape) == (7, 4)  # now below


def test_rotation_by_zero_keeps_the_diagonal():
    np.testing.assert_allclose(R._rotate(np.eye(11), 0), np.eye(11), atol=1e-12)


def test_gaussian_kernels_follow_opencv():
    np.testing.assert_array_equal(R._gaussian_kernel_1d(1), [1.0])
    np.testing.assert_allclose(R._gaussian_kernel_1d(3), [0.25, 0.5, 0.25])
    np.testing.assert_allclose(R._gaussian_kernel_1d(5), [1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16])
    np.testing.assert_allclose(R._gaussian_kernel_1d(7), np.array([2, 7, 14, 18, 14, 7, 2]) / 64)
    g9 = R._gaussian_kernel_1d(9)
    sigma = 0.3 * ((9 - 1) * 0.5 - 1) + 0.8  # 1.7
    ref = np.exp(-0.5 * ((np.arange(9) - 4) / sigma) ** 2)
    np.testing.assert_allclose(g9, ref / ref.sum())
    with pytest.raises(ValueError):
        R._gaussian_kernel_1d(4)


def test_streak_kernel_is_not_normalised_and_vertical_at_angle_zero():
    k = R._streak_kernel(35, 0, 1)
    assert k.shape == (35, 35)
    assert k.sum() > 20  # a line of about 35 unit taps, not summing to 1
    assert k[:, 17].sum() > 0.9 * k.sum()  # all in the centre column


@pytest.mark.parametrize("length", [25, 40, 55])
@pytest.mark.parametrize("width", [1, 5, 9])
@pytest.mark.parametrize("angle", [-60, -30, -10, 0, 15, 30, 60])
def test_streak_kernel_orientation(length, width, angle):
    """Convention: a streak makes ``angle`` with the vertical, counter-clockwise as displayed,
    i.e. its direction is 90 + angle degrees in x-right / y-up axes."""
    k = R._streak_kernel(length, angle, width)
    assert _angle_diff(_axis_angle(k), 90 + angle) < 2.0
    if angle != 0:  # the mirrored orientation (opposite sign) is clearly rejected
        separation = min(2 * abs(angle), 180 - 2 * abs(angle))
        assert _angle_diff(_axis_angle(k), 90 - angle) > separation - 2.0


def test_layer_streaks_follow_the_drawn_angle():
    """The streaks of the full layer (autocorrelation principal axis) follow 90 + angle."""
    angles = {s: draw_rain_params(s).angle for s in range(200)}
    seeds = [s for s, a in angles.items() if a >= 25][:2] + [s for s, a in angles.items() if a <= -25][:2]
    assert len(seeds) == 4
    for seed in seeds:
        angle = draw_rain_params(seed).angle
        layer, _ = synthesize_rain(128, 128, seed)
        z = layer - layer.mean()
        f = np.fft.fft2(z)
        ac = np.fft.fftshift(np.real(np.fft.ifft2(f * np.conj(f))))
        win = np.clip(ac[64 - 12 : 64 + 13, 64 - 12 : 64 + 13], 0, None)
        found = _axis_angle(win)
        assert _angle_diff(found, 90 + angle) < 8.0
        assert _angle_diff(found, 90 - angle) > 30.0


# ----------------------------------------------------------------------------- add_rain
def test_add_rain_saturates_and_rounds():
    clean = np.array([[[250, 10, 10], [0, 0, 0]]], dtype=np.uint8)  # (1, 2, 3)
    layer = np.array([[255.0, 1.0]], dtype=np.float32)
    out = add_rain(clean, layer, 0.6)
    assert out.dtype == np.uint8 and out.shape == (1, 2, 3)
    # 250 + 153 -> 255 (saturated); 10 + 153 = 163; 0 + 0.6 -> 1 (rounded, not truncated)
    np.testing.assert_array_equal(out[0, 0], [255, 163, 163])
    np.testing.assert_array_equal(out[0, 1], [1, 1, 1])
    out = add_rain(clean, layer, 0.4)
    np.testing.assert_array_equal(out[0, 1], [0, 0, 0])  # 0.4 rounds down


def test_rain_brightens_a_black_image():
    layer, beta = synthesize_rain(32, 40, 2)
    black = np.zeros((32, 40, 3), dtype=np.uint8)
    rainy = add_rain(black, layer, beta)
    assert rainy.dtype == np.uint8 and rainy.shape == (32, 40, 3)
    assert rainy.mean() > 10
    np.testing.assert_array_equal(rainy[..., 0], np.rint(beta * layer.astype(np.float64)))
    np.testing.assert_array_equal(rainy[..., 0], rainy[..., 2])  # same layer for every channel


def test_add_rain_rejects_bad_shapes():
    with pytest.raises(ValueError):
        add_rain(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.float32), 0.8)
    with pytest.raises(ValueError):
        add_rain(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.float32), 0.8)


# ----------------------------------------------------------------------------- errors
def test_unknown_preset_lists_the_presets():
    for call in (lambda: draw_rain_params(0, "drizzle"), lambda: synthesize_rain(8, 8, 0, "drizzle")):
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        assert "drizzle" in msg
        for name in ("small", "medium", "large", "random"):
            assert name in msg


@pytest.mark.parametrize("hw", [(0, 8), (8, 0), (-3, 8), (8, -1)])
def test_non_positive_size_is_rejected(hw):
    with pytest.raises(ValueError):
        synthesize_rain(hw[0], hw[1], 0)
