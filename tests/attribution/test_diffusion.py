"""LAM's diffusion index and the Gini coefficient behind it, on maps whose Gini is known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cem_lab.attribution import AttributionError
from cem_lab.attribution.diffusion import diffusion_index, gini


def _pairwise_gini(x: np.ndarray) -> float:
    """The definition: mean absolute difference over ordered pairs / (2 * mean)."""
    x = np.abs(np.asarray(x, dtype=np.float64).ravel())
    return float(np.abs(x[:, None] - x[None, :]).sum() / (2 * x.size**2 * x.mean()))


def test_an_even_map_has_gini_0_and_di_100():
    assert gini(np.full((7, 5), 3.2)) == pytest.approx(0.0, abs=1e-15)
    assert diffusion_index(np.full(16, 0.01)) == pytest.approx(100.0)


@pytest.mark.parametrize("n", [1, 2, 10, 256 * 256])
def test_one_nonzero_value_of_n_has_gini_n_minus_1_over_n(n):
    x = np.zeros(n)
    x[n // 3] = 5.0
    assert gini(x) == pytest.approx((n - 1) / n, abs=1e-12)
    assert diffusion_index(x) == pytest.approx(100.0 / n, abs=1e-9)


def test_a_hand_computed_case():
    # sorted 1, 2, 3, 4: (-3*1 - 1*2 + 1*3 + 3*4) / (4 * 10) = 10 / 40
    assert gini([4.0, 1.0, 3.0, 2.0]) == pytest.approx(0.25, abs=1e-15)
    assert diffusion_index([[4.0, 1.0], [3.0, 2.0]]) == pytest.approx(75.0)
    # [0, 0, 1, 3]: (-3*0 - 0 + 1*1 + 3*3) / (4 * 4) = 10 / 16
    assert gini([0, 3, 0, 1]) == pytest.approx(0.625, abs=1e-15)


def test_it_is_the_pairwise_definition_on_random_maps():
    rng = np.random.default_rng(0)
    for shape in [(5,), (8, 8), (3, 16, 16)]:
        x = rng.gamma(0.5, size=shape)
        assert gini(x) == pytest.approx(_pairwise_gini(x), rel=1e-12)


def test_it_does_not_change_with_scale_or_order_and_signed_maps_count_in_absolute_value():
    rng = np.random.default_rng(1)
    x = rng.exponential(size=(12, 9))
    g = gini(x)
    assert 0 < g < 1
    assert gini(17.5 * x) == pytest.approx(g, rel=1e-12)
    assert gini(rng.permutation(x.ravel())) == pytest.approx(g, rel=1e-12)
    signs = np.where(rng.random(x.shape) < 0.5, -1.0, 1.0)
    assert gini(signs * x) == pytest.approx(g, rel=1e-12)
    # a more concentrated map has a higher Gini and a lower diffusion index
    y = x.copy()
    y.ravel()[np.argmax(y)] *= 50
    assert gini(y) > g and diffusion_index(y) < diffusion_index(x)


def test_non_finite_values_are_left_out_and_a_map_without_mass_has_none():
    assert gini([np.nan, 1.0, 1.0, np.inf]) == pytest.approx(0.0, abs=1e-15)
    assert np.isnan(gini(np.zeros(5))) and np.isnan(diffusion_index([]))
    assert np.isnan(gini([np.nan, np.nan]))
    with pytest.raises(AttributionError, match="numbers"):
        gini(["a", "b"])


def test_every_permutation_of_a_small_case_agrees():
    values = [0.0, 0.5, 2.0, 2.0, 7.0]
    want = _pairwise_gini(np.array(values))
    for p in itertools.permutations(values):
        assert gini(p) == pytest.approx(want, rel=1e-12)
