"""Tests for cem_lab.metrics (ROI quality metrics on the device)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cem_lab.metrics import METRIC_NAMES, RoiMetric, psnr, quantize_uint8, rgb_to_y, ssim


def _rand_uint8_pair(seed: int, shape: tuple[int, ...], noise: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 NHWC image and a noisy (correlated) copy."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a.astype(np.int64) + rng.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
    return a, b


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float()


def _rand_unit(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g)


# ---------------------------------------------------------------- elementary functions
def test_psnr_matches_skimage() -> None:
    a, b = _rand_uint8_pair(0, (4, 23, 31, 3))
    ours = psnr(_nchw(a), _nchw(b))
    assert ours.dtype == torch.float64 and ours.shape == (4,)
    ref = [peak_signal_noise_ratio(a[i], b[i], data_range=255) for i in range(4)]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-10)
    # independent (non-noisy) pairs too
    c, _ = _rand_uint8_pair(1, (4, 23, 31, 3))
    ref2 = [peak_signal_noise_ratio(a[i], c[i], data_range=255) for i in range(4)]
    np.testing.assert_allclose(psnr(_nchw(a), _nchw(c)).numpy(), ref2, rtol=0, atol=1e-10)


def test_psnr_identical_is_inf() -> None:
    a, b = _rand_uint8_pair(2, (3, 8, 9, 3))
    x = _nchw(a)
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()
    # only the identical image of a batch is inf
    y = x.clone()
    y[1] = _nchw(b)[1]
    out = psnr(x, y)
    assert math.isinf(out[0]) and math.isfinite(out[1]) and math.isinf(out[2])


def test_ssim_matches_skimage() -> None:
    # skimage filters the whole image with a reflect-padded 11-tap Gaussian (truncate=3.5,
    # sigma=1.5 -> radius 5) and then crops (win_size-1)//2 = 5 px from each side before
    # averaging, i.e. it keeps exactly the positions where the window needs no padding:
    # the same as our 'valid' conv2d. With use_sample_covariance=False and per-channel
    # averaging it is the same definition, so it matches to rounding error (~1e-16).
    a, b = _rand_uint8_pair(3, (3, 29, 34, 3))
    ours = ssim(_nchw(a), _nchw(b))
    assert ours.dtype == torch.float64 and ours.shape == (3,)
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)
    ref = [structural_similarity(a[i], b[i], **kw) for i in range(3)]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-10)
    assert 0.5 < ref[0] < 0.99  # a non-trivial case (neither 1 nor ~0)
    # uncorrelated pair (SSIM near 0) and the minimum 11x11 size (a single window)
    c, d = _rand_uint8_pair(4, (2, 11, 11, 3), noise=255)
    ref2 = [structural_similarity(c[i], d[i], **kw) for i in range(2)]
    np.testing.assert_allclose(ssim(_nchw(c), _nchw(d)).numpy(), ref2, rtol=0, atol=1e-10)


def test_ssim_identical_is_one() -> None:
    a, _ = _rand_uint8_pair(5, (2, 16, 16, 3))
    x = _nchw(a)
    np.testing.assert_allclose(ssim(x, x).numpy(), 1.0, rtol=0, atol=1e-12)


def test_ssim_too_small_raises() -> None:
    x = torch.zeros(1, 3, 10, 20)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x, x)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x.transpose(2, 3), x.transpose(2, 3))


def test_rgb_to_y_hand_computed() -> None:
    rgb = torch.tensor(
        [[0.0, 0.0, 0.0], [255.0, 255.0, 255.0], [255.0, 0.0, 0.0], [10.0, 20.0, 30.0], [0.0, 128.0, 64.0]],
        dtype=torch.float64,
    )
    x = rgb.T.reshape(1, 3, 1, 5)  # 5 pixels in a row
    y = rgb_to_y(x)
    assert y.shape == (1, 1, 1, 5)
    expected = [
        16.0,
        16.0 + 219.0,  # the weights sum to 219 -> 235
        16.0 + 65.481,
        16.0 + (65.481 * 10 + 128.553 * 20 + 24.966 * 30) / 255.0,
        16.0 + (128.553 * 128 + 24.966 * 64) / 255.0,
    ]
    np.testing.assert_allclose(y.flatten().numpy(), expected, rtol=0, atol=1e-9)
    assert y[0, 0, 0, 4] != round(float(y[0, 0, 0, 4]))  # not rounded
    with pytest.raises(ValueError, match="N, 3, H, W"):
        rgb_to_y(torch.zeros(1, 1, 2, 2))


def test_quantize_uint8() -> None:
    x = torch.tensor([-0.5, 0.0, 0.1 / 255, 0.6 / 255, 100.4 / 255, 1.0, 1.7])
    np.testing.assert_array_equal(quantize_uint8(x).numpy(), [0, 0, 0, 1, 100, 255, 255])
    assert quantize_uint8(x).dtype == torch.float32
    with pytest.raises(TypeError):
        quantize_uint8(torch.zeros(3, dtype=torch.uint8))


# ---------------------------------------------------------------- RoiMetric
@pytest.mark.parametrize("name", METRIC_NAMES)
def test_off_grid_outputs_equal_rounded(name: str) -> None:
    ref = _rand_unit(10, (1, 3, 16, 16))
    grid = torch.round(_rand_unit(11, (2, 3, 16, 16)) * 255) / 255
    jitter = (_rand_unit(12, grid.shape) - 0.5) * (0.8 / 255)  # |offset| < 0.4 grey levels
    m = RoiMetric(name)
    p = m.prepare(ref)
    a, b = m(grid + jitter, p), m(grid, p)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)


def test_out_of_range_outputs_are_clamped() -> None:
    ref = _rand_unit(13, (1, 3, 12, 12))
    out = _rand_unit(14, (1, 3, 12, 12))
    out[..., :4, :] = 1.0
    out[..., 8:, :] = 0.0
    wild = out.clone()
    wild[..., :4, :] = 1.0 + _rand_unit(15, (1, 3, 4, 12))  # > 1
    wild[..., 8:, :] = -_rand_unit(16, (1, 3, 4, 12)) - 0.01  # < 0
    for name in METRIC_NAMES:
        m = RoiMetric(name)
        p = m.prepare(ref)
        assert torch.equal(m(wild, p), m(out, p)), name
    # the reference is clamped too: an out-of-range reference equals its clamped version
    m = RoiMetric("psnr")
    assert torch.equal(m.prepare(ref * 3 - 1), m.prepare((ref * 3 - 1).clamp(0, 1)))


def test_psnr_metric_matches_skimage_on_quantized() -> None:
    ref = _rand_unit(17, (1, 3, 14, 15))
    out = (ref + 0.05 * torch.randn(3, 3, 14, 15, generator=torch.Generator().manual_seed(18))).clamp(-0.1, 1.1)
    m = RoiMetric("psnr")
    got = m(out, m.prepare(ref))
    r8 = (np.round(np.clip(ref.numpy(), 0, 1) * 255)).astype(np.uint8)[0]
    o8 = (np.round(np.clip(out.numpy(), 0, 1) * 255)).astype(np.uint8)
    expected = [peak_signal_noise_ratio(r8, o8[i], data_range=255) for i in range(3)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10)


def test_y_channel_psnr_and_ssim() -> None:
    ref = _rand_unit(19, (1, 3, 20, 18))
    out = (ref + 0.03 * torch.randn(2, 3, 20, 18, generator=torch.Generator().manual_seed(20))).clamp(0, 1)

    def y_np(x: torch.Tensor) -> np.ndarray:  # (N, H, W) float64 Y of quantized images
        q = np.round(np.clip(x.numpy().astype(np.float64), 0, 1) * 255)
        return 16.0 + (65.481 * q[:, 0] + 128.553 * q[:, 1] + 24.966 * q[:, 2]) / 255.0

    yr, yo = y_np(ref)[0], y_np(out)
    m = RoiMetric("psnr", test_y_channel=True)
    p = m.prepare(ref)
    assert p.shape == (1, 1, 20, 18)
    exp = [10 * np.log10(255.0**2 / np.mean((yo[i] - yr) ** 2)) for i in range(2)]
    # Y is computed in float32 (as BasicSR does), hence the small tolerance
    np.testing.assert_allclose(m(out, p).numpy(), exp, rtol=0, atol=1e-4)
    s = RoiMetric("ssim", test_y_channel=True)
    exp_s = [
        structural_similarity(yo[i], yr, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
        for i in range(2)
    ]
    np.testing.assert_allclose(s(out, s.prepare(ref)).numpy(), exp_s, rtol=0, atol=1e-6)
    # Y differs from measuring RGB
    assert abs(float(m(out, p)[0]) - float(RoiMetric("psnr")(out, RoiMetric("psnr").prepare(ref))[0])) > 1e-3


@pytest.mark.parametrize("name", ["psnr", "ssim"])
def test_crop_border_removes_border(name: str) -> None:
    ref = _rand_unit(21, (1, 3, 17, 19))
    out = ref.clone()
    cb = 3
    out[..., :cb, :] = 1 - out[..., :cb, :]
    out[..., -cb:, :] = 0.0
    out[..., :, :cb] = 1.0
    out[..., :, -cb:] = 1 - out[..., :, -cb:]
    uncropped = RoiMetric(name)
    assert float(uncropped(out, uncropped.prepare(ref))[0]) < (40.0 if name == "psnr" else 0.99)
    m = RoiMetric(name, crop_border=cb)
    p = m.prepare(ref)
    assert p.shape == (1, 3, 17 - 2 * cb, 19 - 2 * cb)
    v = float(m(out, p)[0])
    if name == "psnr":
        assert math.isinf(v) and v > 0
    else:
        assert v == pytest.approx(1.0, abs=1e-12)
    # one pixel inside the crop does count
    out[..., cb, cb] = 1 - out[..., cb, cb]
    assert float(m(out, p)[0]) < v


def test_output_change_identical_is_zero() -> None:
    base = _rand_unit(22, (1, 3, 9, 7))
    m = RoiMetric("output_change")
    v = m(base.repeat(3, 1, 1, 1), m.prepare(base))
    assert v.dtype == torch.float64 and v.shape == (3,)
    assert torch.all(v == 0)


def test_output_change_known_difference() -> None:
    base = torch.full((1, 3, 4, 6), 100 / 255)
    out = base.repeat(2, 1, 1, 1)
    out[0, 0, :2] += 4 / 255  # +4 grey levels on half the pixels of one channel of three
    out[1] = torch.full((3, 4, 6), 97.2 / 255)  # -3 grey levels everywhere after rounding
    m = RoiMetric("output_change")
    v = m(out, m.prepare(base))
    np.testing.assert_allclose(v.numpy(), [-math.sqrt(16 * 0.5 / 3), -3.0], rtol=0, atol=1e-12)
    # hand computation on random images, with crop and clamping
    g = torch.Generator().manual_seed(23)
    ref = torch.rand(1, 3, 12, 10, generator=g)
    outs = ref + 0.1 * torch.randn(4, 3, 12, 10, generator=g)
    m2 = RoiMetric("output_change", crop_border=2)
    q = lambda t: np.round(np.clip(t.numpy().astype(np.float64), 0, 1) * 255)[..., 2:-2, 2:-2]  # noqa: E731
    exp = -np.sqrt(((q(outs) - q(ref)) ** 2).mean(axis=(1, 2, 3)))
    np.testing.assert_allclose(m2(outs, m2.prepare(ref)).numpy(), exp, rtol=0, atol=1e-12)
    assert (exp < 0).all()


@pytest.mark.parametrize("name", METRIC_NAMES)
@pytest.mark.parametrize("y", [False, True])
def test_batch_equals_one_by_one(name: str, y: bool) -> None:
    g = torch.Generator().manual_seed(24)
    ref = torch.rand(1, 3, 15, 16, generator=g)
    outs = ref + 0.05 * torch.randn(5, 3, 15, 16, generator=g)
    m = RoiMetric(name, crop_border=1, test_y_channel=y)
    p = m.prepare(ref)
    batch = m(outs, p)
    assert batch.shape == (5,) and batch.dtype == torch.float64
    single = torch.cat([m(outs[i : i + 1], p) for i in range(5)])
    np.testing.assert_allclose(batch.numpy(), single.numpy(), rtol=1e-12, atol=1e-12)
    assert len(set(batch.tolist())) == 5  # distinct values: no accidental broadcasting of one image


def test_units_and_direction() -> None:
    assert RoiMetric("psnr").unit == "dB"
    assert RoiMetric("ssim").unit == ""
    assert RoiMetric("output_change").unit == "grey levels"
    assert all(RoiMetric(n).higher_is_better for n in METRIC_NAMES)
    # higher is better really holds: a closer output scores higher for every metric
    g = torch.Generator().manual_seed(25)
    ref = torch.rand(1, 3, 16, 16, generator=g)
    noise = torch.randn(1, 3, 16, 16, generator=g)
    outs = torch.cat([ref + 0.02 * noise, ref + 0.2 * noise])
    for n in METRIC_NAMES:
        m = RoiMetric(n)
        v = m(outs, m.prepare(ref))
        assert v[0] > v[1], n


# ---------------------------------------------------------------- errors
def test_invalid_config() -> None:
    with pytest.raises(ValueError, match="psnr, ssim, output_change"):
        RoiMetric("lpips")
    with pytest.raises(ValueError, match="crop_border"):
        RoiMetric("psnr", crop_border=-1)
    with pytest.raises(TypeError, match="crop_border"):
        RoiMetric("psnr", crop_border=1.5)  # type: ignore[arg-type]
    assert RoiMetric("ssim", crop_border=4).crop_border == 4


def test_roi_too_small_for_crop() -> None:
    m = RoiMetric("psnr", crop_border=4)
    with pytest.raises(ValueError, match=r"8x20.*crop_border=4"):
        m.prepare(torch.zeros(1, 3, 8, 20))
    p = m.prepare(torch.zeros(1, 3, 9, 9))
    assert p.shape == (1, 3, 1, 1)
    # a mismatching outputs size is reported with both shapes
    with pytest.raises(ValueError, match=r"\(2, 3, 8, 8\).*\(1, 3, 1, 1\)"):
        m(torch.zeros(2, 3, 8, 8), p)


def test_ssim_roi_too_small_after_crop() -> None:
    m = RoiMetric("ssim", crop_border=2)
    with pytest.raises(ValueError, match=r"at least 11x11.*crop_border.*10x10"):
        m.prepare(torch.zeros(1, 3, 14, 14))
    assert m.prepare(torch.zeros(1, 3, 15, 15)).shape == (1, 3, 11, 11)


def test_shape_mismatch() -> None:
    m = RoiMetric("psnr")
    p = m.prepare(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(4, 3, 8, 9\).*\(1, 3, 8, 8\)"):
        m(torch.zeros(4, 3, 8, 9), p)
    with pytest.raises(ValueError, match=r"\(4, 1, 8, 8\)"):
        m(torch.zeros(4, 1, 8, 8), p)
    with pytest.raises(ValueError, match=r"\(1, 1, 8, 8\)"):  # reference prepared for Y, metric on RGB
        m(torch.zeros(4, 3, 8, 8), RoiMetric("psnr", test_y_channel=True).prepare(torch.zeros(1, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"\(2, 3, 8, 8\)"):
        m.prepare(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="shape mismatch"):
        ssim(torch.zeros(2, 3, 12, 12), torch.zeros(3, 3, 12, 12))
