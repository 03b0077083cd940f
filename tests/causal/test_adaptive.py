"""The adaptive sequential estimator: early stops where effects are clear, none at the tolerance
boundary, no more wrong settled classes than its level allows, and maps independent of batch size
and resume."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ConvStack, Identity

from cem_lab import compute_cem
from cem_lab.causal.estimators import AdaptiveEstimator, BlockStats, EstimatorError, pooled


def _drive(est: AdaptiveEstimator, effects: np.ndarray, sd: np.ndarray, baseline: float = 30.0, seed: int = 0):
    """Run the estimator's stages on synthetic draws: block b, sample k gives M0 - effect_b + noise,
    seeded by (seed, b, k) as the runner seeds its interventions."""
    n = len(effects)
    stats, done = {}, []
    stage = est.first_stage(n)
    while stage is not None:
        st = stats.setdefault(stage.name, BlockStats(n))
        for k in range(stage.n_items):
            b, s = stage.item(np.array([k]))
            rng = np.random.default_rng([seed, int(b[0]), int(s[0])])
            st.update(b, [baseline - effects[b[0]] + sd[b[0]] * rng.standard_normal()], baseline)
        done.append(stage)
        stage = est.next_stage(done, stats, baseline)
    return est.estimate(stats, baseline), done


def test_clear_effects_stop_after_one_round_and_boundary_effects_draw_to_the_maximum():
    est = AdaptiveEstimator(
        coarse=3, round_size=10, max_samples=160, half_width=0.0025, settled_half_width=0.0125, tol=0.01
    )
    assert est.totals == [10, 20, 40, 80, 160] and est.looks == 5
    effects = np.array([2.0, -1.5, 0.01, 0.01])  # well separated, well separated, at the boundary x2
    sd = np.array([0.005, 0.005, 0.05, 0.05])
    e, stages = _drive(est, effects, sd)
    assert list(e.n[:2]) == [10, 10]  # settled and precise enough after the first look
    assert list(e.n[2:]) == [160, 160]  # never settled, never precise enough: T_max
    assert [s.name for s in stages] == ["coarse", "fine1", "fine2", "fine3", "fine4", "fine5"]
    assert [s.first_sample for s in stages[1:]] == [3, 13, 23, 43, 83]  # draws continue after the coarse ones


def test_a_settled_class_alone_does_not_stop_a_block_whose_value_is_imprecise():
    # a clear positive effect with a large spread: its class settles at the first look, but its
    # interval is wider than settled_half_width until many draws
    e, _ = _drive(AdaptiveEstimator(settled_half_width=0.0125), np.array([0.2]), np.array([0.04]))
    assert e.n[0] >= 80
    cheap, _ = _drive(AdaptiveEstimator(settled_half_width=float("inf")), np.array([0.2]), np.array([0.04]))
    assert cheap.n[0] == 10  # with .inf the class alone stops it


def test_the_precision_target_stops_a_block_whose_class_stays_open():
    # an effect right at the tolerance with little noise: the class cannot settle (the interval
    # straddles +tol) but the interval gets narrower than the target half-width
    est = AdaptiveEstimator(round_size=10, max_samples=160, half_width=0.0025, tol=0.01)
    e, _ = _drive(est, np.array([0.01]), np.array([0.004]))
    assert 10 < e.n[0] < 160


def test_wrong_settled_classes_stay_within_the_level():
    """2000 blocks whose true effect is 1.5 tol with noise: a stop with the class settled wrongly (the
    corrected interval wholly inside (-tol, tol) or below -tol) must happen for at most 5 % of them
    although each is looked at up to 20 times (equal rounds)."""
    from scipy import stats as sps

    est = AdaptiveEstimator(
        coarse=3, round_size=10, max_samples=200, growth=1, half_width=1e-9, settled_half_width=float("inf"), tol=0.01
    )
    assert est.looks == 20
    n = 2000
    e, _ = _drive(est, np.full(n, 0.015), np.full(n, 0.02), seed=1)
    half = sps.t.ppf(1 - (1 - est.level) / est.looks / 2, e.n - 1) * e.stderr
    stopped = e.n < 200
    right = stopped & (e.effect - half > 0.01)
    wrong = stopped & ~right
    assert right.sum() > 100  # the rule does stop where it can
    assert wrong.mean() <= 0.05, wrong.mean()


def test_values_stopped_by_the_precision_rule_are_within_their_target():
    """500 blocks with effects spread over (-0.1, 0.1) dB and spreads 0.005..0.04: a block stopped
    before T_max by the precision rule is off its true effect by more than its target half-width
    for at most 5 % of blocks (the corrected level's promise)."""
    rng = np.random.default_rng(3)
    n = 500
    effects, sd = rng.uniform(-0.1, 0.1, n), rng.uniform(0.005, 0.04, n)
    est = AdaptiveEstimator()
    e, _ = _drive(est, effects, sd, seed=2)
    early = e.n < est.max_samples
    assert early.sum() > 100
    target = np.where(np.abs(e.effect) > 0, est.settled_half_width, est.half_width)
    assert (np.abs(e.effect - effects)[early] > target[early]).mean() <= 0.05


def test_pooled_statistics_equal_the_statistics_of_all_draws():
    rng = np.random.default_rng(0)
    parts, whole = [], BlockStats(3)
    for _ in range(4):
        st = BlockStats(3)
        blocks = rng.integers(0, 3, 17)
        values = rng.normal(20, 1, 17)
        st.update(blocks, values, 20.0)
        whole.update(blocks, values, 20.0)
        parts.append(st)
    p = pooled(parts)
    np.testing.assert_array_equal(p.n, whole.n)
    np.testing.assert_allclose(p.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(p.m2, whole.m2, rtol=1e-10)
    np.testing.assert_array_equal(p.max_dev, whole.max_dev)


KW = dict(block=8, estimator="adaptive", progress=False, figures=False, seed=4)


def test_on_a_real_map_the_roi_blocks_follow_the_chosen_treatment(clean_image, small_bank):
    """Identity model, DN: only the ROI's own blocks have an effect (large and clear). By default they get
    the reference's 50 fine draws, with the reference's seeds, so their values equal the reference's;
    'settle' stops them after one round of 10; 'coarse' keeps their 3 coarse draws."""
    ref = compute_cem(
        Identity(),
        clean_image,
        "dn",
        (16, 16, 16),
        patch_bank=small_bank,
        block=8,
        fine=50,
        progress=False,
        figures=False,
        seed=4,
    )
    ada = compute_cem(Identity(), clean_image, "dn", (16, 16, 16), patch_bank=small_bank, **KW)
    roi = ada.roi_mask
    assert (ada.counts[roi] == 50).all() and (ref.counts[roi] == 50).all()
    np.testing.assert_array_equal(ada.effect_raw, ref.effect_raw)
    np.testing.assert_array_equal(ada.classification, ref.classification)
    assert ada.meta["settings"]["estimator"]["name"] == "adaptive"
    settle = compute_cem(
        Identity(),
        clean_image,
        "dn",
        (16, 16, 16),
        patch_bank=small_bank,
        estimator_options={"roi_blocks": "settle"},
        **KW,
    )
    assert (settle.counts[roi] == 10).all()
    np.testing.assert_array_equal(settle.classification, ref.classification)
    assert settle.meta["forward_passes"] < ref.meta["forward_passes"]
    cheap = compute_cem(
        Identity(),
        clean_image,
        "dn",
        (16, 16, 16),
        patch_bank=small_bank,
        estimator_options={"roi_blocks": "coarse"},
        **KW,
    )
    assert (cheap.counts[roi] == 3).all() and (cheap.classification[roi] == 1).all()
    assert cheap.meta["settings"]["estimator"]["roi_treatment"] == "their coarse draws only"
    assert cheap.meta["forward_passes"] < settle.meta["forward_passes"]


def test_maps_do_not_depend_on_the_batch_size_or_a_resume(tmp_path, clean_image, small_bank):
    model = ConvStack(depth=3)
    opts = {
        "round_size": 4,
        "max_samples": 24,
        "half_width": 0.001,
        "growth": 1,
        "roi_blocks": "settle",
        "settled_half_width": float("inf"),
    }
    a = compute_cem(
        model, clean_image, "dn", (16, 16, 16), patch_bank=small_bank, batch_size=32, estimator_options=opts, **KW
    )
    b = compute_cem(
        model, clean_image, "dn", (16, 16, 16), patch_bank=small_bank, batch_size=1, estimator_options=opts, **KW
    )
    assert len({int(n) for n in a.counts[a.counts > 3]}) > 1  # blocks stopped at different rounds
    np.testing.assert_array_equal(a.effect_raw, b.effect_raw)
    np.testing.assert_array_equal(a.counts, b.counts)
    calls = {"n": 0, "stage": None}

    def stop(info):  # Ctrl-C in the middle of the second fine round
        calls["n"] += 1
        if info.stage == "fine2" and info.done < info.total:
            calls["stage"] = info.stage
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute_cem(
            model,
            clean_image,
            "dn",
            (16, 16, 16),
            patch_bank=small_bank,
            batch_size=5,
            estimator_options=opts,
            output_dir=tmp_path / "run",
            on_batch=stop,
            **KW,
        )
    assert calls["stage"] == "fine2"
    c = compute_cem(
        model,
        clean_image,
        "dn",
        (16, 16, 16),
        patch_bank=small_bank,
        batch_size=7,
        estimator_options=opts,
        output_dir=tmp_path / "run",
        **KW,
    )
    assert any("resumed" in n for n in c.meta["notes"])
    np.testing.assert_array_equal(c.effect_raw, a.effect_raw)
    np.testing.assert_array_equal(c.stderr, a.stderr)


@pytest.mark.parametrize(
    "opts, words",
    [
        ({"half_width": 0}, "half_width must be > 0"),
        ({"half_width": -0.1}, "half_width must be > 0"),
        ({"max_samples": 5, "round_size": 10}, "at least one round"),
        ({"max_samples": 2, "round_size": 2}, "at least the coarse"),
        ({"settled_half_width": 0.001}, "settled_half_width"),
        ({"growth": 0.5}, "growth"),
        ({"round_size": 1}, "round_size must be >= 2"),
        ({"roi_blocks": "skip"}, "roi_blocks"),
    ],
)
def test_bad_settings_are_refused(clean_image, small_bank, opts, words):
    with pytest.raises(EstimatorError, match=words):
        compute_cem(Identity(), clean_image, "dn", (16, 16, 16), patch_bank=small_bank, estimator_options=opts, **KW)
