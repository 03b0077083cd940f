"""Study statistics: the interval machinery on synthetic data with a known difference (it must be found)
and with none (false positives at no more than the stated rate), and the study tables on synthetic run
folders (pairing by image and ROI, refusals, missing units)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cem_lab.analysis.runs import collect_runs
from cem_lab.analysis.study_stats import contrast_of_differences, expanded_alpha, nested_bootstrap, paired_difference
from cem_lab.analysis.study_tables import StudyError, distance_profile, study_markdown, study_statistics
from cem_lab.causal.grid import Roi
from cem_lab.causal.result import CEMResult


def _population(rng, n_images, n_rois, delta=0.0, image_sd=1.0, roi_sd=0.5, noise_sd=0.3):
    """Two models' values on the same units: a shared image and ROI effect, model noise, a shift ``delta``."""
    img = np.repeat(np.arange(n_images), n_rois)
    base = rng.normal(0, image_sd, n_images)[img] + rng.normal(0, roi_sd, n_images * n_rois)
    a = base + rng.normal(0, noise_sd, n_images)[img] + rng.normal(0, noise_sd, n_images * n_rois)
    b = base + delta + rng.normal(0, noise_sd, n_images)[img] + rng.normal(0, noise_sd, n_images * n_rois)
    return a, b, img


# ----------------------------------------------------------------------------- the interval machinery
@pytest.mark.parametrize("n_images", [5, 12])
def test_no_difference_gives_false_positives_at_most_at_the_stated_rate(n_images):
    rng = np.random.default_rng(7)
    reps = 300
    hits = 0
    for r in range(reps):
        a, b, img = _population(rng, n_images, 3)
        hits += paired_difference(b, a, img, resamples=1500, seed=r).excludes_zero
    rate = hits / reps
    # nominal 5 %; the nested bootstrap is conservative (it resamples ROIs inside resampled images), so the
    # rate must not exceed 5 % by more than sampling noise (3 sd of a binomial at 300: 3.8 points)
    assert rate <= 0.088, rate
    assert rate >= 0.003, rate  # an interval that never excludes zero would pass the line above


def test_a_known_difference_is_found_and_covered():
    rng = np.random.default_rng(11)
    delta = 0.8  # about 4.6 standard errors of the mean difference over 8 images (sd of an image mean: 0.49)
    reps, found, covered = 150, 0, 0
    for r in range(reps):
        a, b, img = _population(rng, 8, 3, delta=delta)
        iv = paired_difference(b, a, img, resamples=1500, seed=r)
        found += iv.low > 0
        covered += iv.low <= delta <= iv.high
    assert found / reps >= 0.9, found / reps
    assert covered / reps >= 0.9, covered / reps


def test_pairing_cancels_what_the_units_share():
    """The shared image effect is large; an unpaired comparison would not see the shift, the paired one does."""
    rng = np.random.default_rng(3)
    a, b, img = _population(rng, 6, 4, delta=0.4, image_sd=5.0, roi_sd=2.0, noise_sd=0.1)
    paired = paired_difference(b, a, img, seed=0)
    assert paired.low > 0
    sep_a, sep_b = nested_bootstrap(a, img, seed=0), nested_bootstrap(b, img, seed=0)
    assert sep_a.high > sep_b.low  # the separate intervals overlap


def test_expanded_alpha_and_the_one_image_case():
    assert expanded_alpha(0.05, 5) < 0.05 / 2
    assert abs(expanded_alpha(0.05, 2000) - 0.05) < 0.002
    one = nested_bootstrap(np.array([1.0, 2.0, 3.0]), ["x", "x", "x"])
    assert one.mean == pytest.approx(2.0) and np.isnan(one.low) and one.n_images == 1 and one.n_units == 3


def test_images_weigh_the_same_whatever_their_roi_count():
    iv = nested_bootstrap(np.array([0.0, 0.0, 0.0, 0.0, 1.0]), ["a", "a", "a", "a", "b"])
    assert iv.mean == pytest.approx(0.5)


def test_contrast_of_differences_finds_an_interaction():
    rng = np.random.default_rng(5)
    a1, b1, img = _population(rng, 8, 3, delta=0.8)
    a2, b2, _ = _population(rng, 8, 3, delta=0.0)
    iv = contrast_of_differences(b1 - a1, img, b2 - a2, img, seed=1)
    assert iv.low > 0 and iv.mean == pytest.approx(np.mean(b1 - a1) - np.mean(b2 - a2))


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        nested_bootstrap(np.array([1.0, np.nan]), ["a", "b"])
    with pytest.raises(ValueError, match="match unit by unit"):
        paired_difference(np.zeros(3), np.zeros(4), ["a"] * 3)


# ----------------------------------------------------------------------------- study tables on synthetic maps
def _settings(block=8, fine=50, seed=0):
    return {
        "task": {"name": "dn", "scale": 1, "sigma": 50.0, "rounding": "floor"},
        "estimator": {"name": "coarse_to_fine", "coarse": 3, "fine": fine, "tol": 0.01},
        "intervention": {"name": "lv", "sampler": "uniform", "bank": "embedded:skimage"},
        "metric": {"name": "psnr", "crop_border": 0, "test_y_channel": False},
        "block": block,
        "seed": seed,
        "tol": 0.01,
        "classification": "tol",
        "forward_batch": 8,
        "blocks": "all",
    }


def _write_run(folder, model, image, roi, n_negative, psnr, block=8, fine=50, seed=0, far=False, size=64):
    """A ``size`` x ``size`` DN map: ``n_negative`` blocks of -0.2 dB next to the ROI (or in the far corner), the
    rest +0.1."""
    g = size // block
    effect = np.full((g, g), 0.1)
    roi_obj = Roi(*roi)
    mask = np.zeros((g, g), bool)
    mask[roi[0] // block : (roi[0] + roi[2] - 1) // block + 1, roi[1] // block : (roi[1] + roi[2] - 1) // block + 1] = (
        True
    )
    outside = np.argwhere(~mask)
    centre = np.array([roi[0] + roi[2] / 2, roi[1] + roi[2] / 2]) / block
    order = np.argsort(np.hypot(*(outside + 0.5 - centre).T))
    chosen = outside[order[::-1] if far else order][:n_negative]
    effect[tuple(chosen.T)] = -0.2
    effect[mask] = 0.0
    cls = np.sign(effect).astype(np.int8)
    res = CEMResult(
        effect=effect,
        effect_raw=effect,
        stderr=np.zeros_like(effect),
        ci_low=effect,
        ci_high=effect,
        counts=np.full((g, g), 10),
        classification=cls,
        roi_mask=mask,
        roi=roi_obj,
        block=block,
        scale=1,
        input_shape=(size, size),
        output_shape=(size, size),
        baseline_metric=psnr,
        meta={
            "model": model,
            "image": image,
            "settings": _settings(block, fine, seed),
            "fingerprint": f"{model}-{image}-{roi}-{block}-{fine}",
        },
    )
    res.save(folder)
    return folder


ROIS = ([16, 16, 16], [32, 40, 16])


@pytest.fixture
def two_models(tmp_path):
    """Model b has 4 more negative blocks than model a on every unit; model c is a's twin."""
    rng = np.random.default_rng(0)
    for i, image in enumerate(["im0.png", "im1.png", "im2.png", "im3.png"]):
        for j, roi in enumerate(ROIS):
            n = int(rng.integers(2, 10))
            p = 25 + rng.normal()
            _write_run(tmp_path / "a" / f"{i}_{j}", "a", image, roi, n, p)
            _write_run(tmp_path / "b" / f"{i}_{j}", "b", image, roi, n + 4, p - 0.3)
            _write_run(tmp_path / "c" / f"{i}_{j}", "c", image, roi, n, p)
    return tmp_path


def test_study_finds_the_built_in_difference_and_not_a_false_one(two_models):
    runs, skipped = collect_runs([two_models])
    assert not skipped and len(runs) == 24
    res = study_statistics(runs, resamples=2000)
    p = res.paired.set_index(["a", "b", "metric"])
    ab = p.loc[("a", "b", "share_negative")]
    outside = 64 - 4 - 0  # 8x8 grid; the 16 px ROIs aligned to the grid cover 4 blocks (the second cuts 6)
    assert ab["low"] > 0 and ab["excludes_zero"]
    assert ab["n_images"] == 4 and ab["n_units"] == 8
    assert p.loc[("a", "b", "baseline_metric"), "mean"] == pytest.approx(-0.3)
    assert p.loc[("a", "b", "baseline_metric"), "high"] == pytest.approx(-0.3)  # identical per unit: no spread
    ac = p.loc[("a", "c", "share_negative")]
    assert ac["mean"] == 0 and not ac["excludes_zero"]
    assert outside > 0
    s = res.summary.set_index(["condition", "metric"])
    assert s.loc[("a", "share_negative"), "n_units"] == 8
    md = study_markdown(res)
    assert "Paired differences" in md and "| b | a |" in md and "*" in md
    prof = res.profile[(res.profile["condition"] == "a") & (res.profile["quantity"] == "mass_share")]
    assert prof["mean"].sum() == pytest.approx(1.0)


def test_images_of_other_sizes_pool_on_the_longest_profile(tmp_path):
    """Runs whose images reach farther from the ROI (a larger image) have more distance bins: the study
    pools every profile on the longest one (a sweep over photographs of several sizes)."""
    for i, size in enumerate((64, 96, 64, 128)):
        _write_run(tmp_path / "a" / f"{i}", "a", f"im{i}.png", ROIS[0], 3, 25.0, size=size)
        _write_run(tmp_path / "b" / f"{i}", "b", f"im{i}.png", ROIS[0], 5, 24.0, size=size)
    runs, skipped = collect_runs([tmp_path])
    assert not skipped and len(runs) == 8
    res = study_statistics(runs, resamples=500)
    prof = res.profile[(res.profile["condition"] == "a") & (res.profile["quantity"] == "mass_share")]
    assert prof["mean"].sum() == pytest.approx(1.0)
    assert prof["bin_high"].max() > 64  # the 128 px image's far bins are there


def test_distance_profile_moves_with_the_effects(tmp_path):
    near = distance_profile(_write_run(tmp_path / "n", "m", "x.png", [24, 24, 16], 6, 25.0), 8)
    far = distance_profile(_write_run(tmp_path / "f", "m", "x.png", [24, 24, 16], 6, 25.0, far=True), 8)
    assert near["negative"][:2].sum() < far["negative"][:2].sum()  # negatives near the ROI
    assert near["mass_share"].sum() == pytest.approx(1.0)


def test_runs_of_different_settings_are_not_pooled(two_models):
    _write_run(two_models / "a" / "odd", "a", "im9.png", ROIS[0], 3, 25.0, fine=10)
    runs, _ = collect_runs([two_models])
    with pytest.raises(
        StudyError,
        match=r"(?s)differ in estimator\.fine.*model=a, estimator\.fine=50: 8 run.*fine=10: 1 run.*--by model,estimator\.fine",
    ):
        study_statistics(runs)
    # named as a condition, they are compared instead
    res = study_statistics(runs, by=("model", "samples"))
    assert "model=a, samples=10" in set(res.summary["condition"])
    res = study_statistics(runs, by=("model", "estimator.fine"))
    assert "model=a, estimator.fine=10" in set(res.summary["condition"])
    with pytest.raises(StudyError, match="differ in estimator.fine"):  # the estimator's name does not fix T_f
        study_statistics(runs, by=("model", "estimator"))


def test_a_unit_twice_in_one_condition_is_refused(two_models):
    _write_run(two_models / "a" / "again", "a", "im0.png", ROIS[0], 3, 25.0)
    runs, _ = collect_runs([two_models])
    with pytest.raises(StudyError, match="has 2 runs of im0.png roi 16 16 16"):
        study_statistics(runs)


def test_missing_units_are_listed_and_unfinished_maps_never_pooled(two_models):
    import shutil

    shutil.rmtree(two_models / "b" / "3_1")
    (two_models / "b" / "3_1").mkdir()
    (two_models / "b" / "3_1" / "state.npz").write_bytes(b"partial")  # an interrupted map
    runs, skipped = collect_runs([two_models])
    assert any("interrupted" in s.reason for s in skipped)
    res = study_statistics(runs, resamples=500)
    assert any("b lacks im3.png roi 32 40 16" in m for m in res.missing)
    ab = res.paired.set_index(["a", "b", "metric"]).loc[("a", "b", "share_negative")]
    assert ab["n_units"] == 7
    assert "Missing units" in study_markdown(res)


def test_by_a_column_that_does_not_exist(two_models):
    runs, _ = collect_runs([two_models])
    with pytest.raises(StudyError, match="not a column"):
        study_statistics(runs, by=("nonsense",))
    with pytest.raises(StudyError, match="--reference 'zz'"):
        study_statistics(runs, reference="zz")


def test_the_saved_settings_are_what_is_compared(two_models):
    s = json.loads((two_models / "a" / "0_0" / "summary.json").read_text())
    assert s["settings"]["estimator"]["fine"] == 50


# ----------------------------------------------------------------------------- cem-report on a study
def test_cem_report_prints_intervals_and_paired_differences(two_models, capsys):
    from cem_lab.cli.report import main

    assert main([str(two_models), "--out", str(two_models.parent / "rep")]) == 0
    out = capsys.readouterr().out
    assert "Study statistics" in out and "Paired differences (dn_s50" in out and "| b | a | 4 | 8 |" in out
    rep = two_models.parent / "rep"
    for name in (
        "study.md",
        "study_summary.csv",
        "study_paired.csv",
        "study_profile.csv",
        "figures/study_intervals.png",
        "figures/distance_profile.png",
    ):
        assert (rep / name).is_file(), name
    assert main([str(two_models), "--out", str(rep), "--reference", "c"]) == 0
    out = capsys.readouterr().out
    assert "| a | c | 4" in out and "| b | c | 4" in out and "| b | a | 4" not in out


def test_cem_report_refuses_to_pool_different_settings(two_models, capsys):
    from cem_lab.cli.report import main

    _write_run(two_models / "a" / "odd", "a", "im9.png", ROIS[0], 3, 25.0, block=16)
    rep = two_models.parent / "rep"
    assert main([str(two_models), "--out", str(rep)]) == 0  # the run table is still written
    err = capsys.readouterr().err
    assert "not pooled" in err and "block=16: 1 run" in err and "--by model,block" in err
    assert not (rep / "study.md").exists()
    assert main([str(two_models), "--out", str(rep), "--by", "model"]) == 2  # asked for explicitly: an error
    assert "not pooled" in capsys.readouterr().err
    assert main([str(two_models), "--out", str(rep), "--by", "model,block"]) == 0
    assert "model=a, block=16" in capsys.readouterr().out
