"""The studies' verdict rule holds up to the number of comparisons it makes: on populations where the
claim's effect is absent it says "reproduced" (or "not reproduced") at most 5 % of the time, while the
uncorrected rule (each 95 % interval alone) does so far more often with the receptive-field study's 14
comparisons."""

from __future__ import annotations

import numpy as np
import pytest

from cem_lab.analysis.findings import FAMILY_ALPHA, holm, significant, verdict
from cem_lab.analysis.study_stats import nested_bootstrap, paired_difference


def test_holm_steps_down_from_the_smallest_p():
    p = [0.01, 0.04, 0.03, 0.005]  # sorted: 0.005 <= .05/4, 0.01 <= .05/3, 0.03 > .05/2: stop
    np.testing.assert_array_equal(holm(p), [True, False, False, True])
    np.testing.assert_array_equal(holm([0.001, np.nan]), [True, False])  # NaN counts in m, never rejected
    np.testing.assert_array_equal(holm([0.03, 0.02]), [True, True])  # 0.02 <= .025, then 0.03 <= .05
    assert significant({"a": (-2.0, 0.001), "b": (1.0, 0.5)}) == {"a": -1, "b": 0}
    assert significant({"a": (1.0, 0.04), "b": (1.0, 0.04)}) == {"a": 0, "b": 0}
    assert significant({"a": (1.0, 0.04), "b": (1.0, 0.04)}, correct=False) == {"a": 1, "b": 1}


def test_the_p_value_agrees_with_the_interval():
    rng = np.random.default_rng(0)
    images = np.repeat(np.arange(6), 2)
    agree = 0
    for k in range(200):
        values = rng.normal(0.5 * (k % 5) / 4, 1.0, size=12)
        iv = nested_bootstrap(values, images, resamples=2000, seed=k)
        agree += iv.excludes_zero == (iv.p < 0.05)
    assert agree >= 190  # the two differ only where the bootstrap is skewed near the boundary


def _null_population_verdict(rng, comparisons: int, images: int, rois: int, correct: bool) -> str:
    """One study under the receptive-field rule where the claim is false: each comparison pairs two networks
    on the same units; the gate (more reach) is a real effect, as in the study, and the decision (the PSNR
    gap) is pure noise."""
    labels = np.repeat(np.arange(images), rois)
    tests = {}
    for c in range(comparisons):
        for what in ("reach", "psnr"):
            img = rng.normal(0, 1.0, size=images)  # image-level noise shared by the ROIs of an image
            a = np.repeat(img, rois) + rng.normal(0, 0.5, size=images * rois)
            b = (
                np.repeat(img, rois)
                + rng.normal(0, 0.5, size=images * rois)
                + rng.normal(0, 0.7, size=images).repeat(rois)
            )
            if what == "reach":
                b += 4.0  # deeper networks do reach farther
            iv = paired_difference(b, a, labels, resamples=400, seed=c)
            tests[(c, what)] = (iv.mean, iv.p)
    sig = significant(tests, correct=correct)
    informative = [c for c in range(comparisons) if sig[(c, "reach")] > 0]
    support = sum(sig[(c, "psnr")] < 0 for c in informative)
    contradict = sum(sig[(c, "psnr")] > 0 for c in informative)
    return verdict(support, contradict, len(informative))


@pytest.mark.parametrize("images, rois", [(6, 2), (5, 8)])
def test_without_the_effect_the_corrected_rule_decides_at_most_its_level(images, rois):
    rng = np.random.default_rng([images, rois])
    runs = 120
    corrected = [_null_population_verdict(rng, 14, images, rois, True) for _ in range(runs)]
    decided = sum(v != "inconclusive" for v in corrected) / runs
    # its level, plus two binomial standard errors of this many simulated studies
    assert decided <= FAMILY_ALPHA + 2 * np.sqrt(FAMILY_ALPHA * (1 - FAMILY_ALPHA) / runs)
    uncorrected = [_null_population_verdict(rng, 14, images, rois, False) for _ in range(runs)]
    assert sum(v != "inconclusive" for v in uncorrected) / runs > 2 * FAMILY_ALPHA


def test_the_smallest_detectable_difference_grows_with_the_tests_and_shrinks_with_the_images():
    from scipy import stats

    from cem_lab.analysis.findings import detectable

    assert detectable([1.0, 2.0, 3.0, np.nan], n_images=3, tests=1) == pytest.approx((2.0, 2.0))
    med, holm_hw = detectable([1.0, 2.0, 3.0], n_images=3, tests=28)
    assert holm_hw == pytest.approx(2.0 * stats.t.ppf(1 - 0.05 / 56, 2) / stats.t.ppf(0.975, 2))
    assert holm_hw > 5 * med  # three images, 28 tests: a difference must be over 5 times the 95 % half-width
    assert detectable([2.0], n_images=40, tests=28)[1] < 1.7 * 2.0  # forty images: less than twice
    assert np.isnan(detectable([], n_images=3, tests=2)[0])
