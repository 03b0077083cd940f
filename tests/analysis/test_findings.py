"""The findings' statistics and reports on synthetic run folders with built-in answers.

Each population is made so that the answer is known: a reach that grows with depth, an attention
variant that adds context on SR only (or on DN only), a mixed model whose effect sits closer to the
ROI (or is only smaller). The reports must find what was built in, and say so in their verdicts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cem_lab.analysis.findings import attention_contrast, locality, paired_table, rank_trend, verdict, with_locality
from cem_lab.analysis.runs import collect_runs
from cem_lab.causal.grid import Roi
from cem_lab.causal.result import CEMResult

TASKS = {
    "sr": {"name": "sr", "scale": 4, "kernel": "bicubic"},
    "dn": {"name": "dn", "scale": 1, "sigma": 50.0, "rounding": "floor"},
    "dr": {"name": "dr", "scale": 1, "preset": "medium"},
}
IMAGES = ("im0", "im1", "im2", "im3")
ROIS = ([16, 16, 16], [32, 32, 16])


def _run(folder, model, task, image, roi, near=0, far=0, value=0.1, psnr=25.0):
    """A 64x64 map (block 8): ``near`` blocks of +``value`` dB closest to the ROI, ``far`` farthest."""
    g, block = 8, 8
    effect = np.zeros((g, g))
    mask = np.zeros((g, g), bool)
    mask[roi[0] // block : (roi[0] + roi[2] - 1) // block + 1, roi[1] // block : (roi[1] + roi[2] - 1) // block + 1] = (
        True
    )
    outside = np.argwhere(~mask)
    centre = np.array([roi[0] + roi[2] / 2, roi[1] + roi[2] / 2]) / block
    order = np.argsort(np.hypot(*(outside + 0.5 - centre).T), kind="stable")
    for k in list(order[:near]) + list(order[::-1][:far]):
        effect[tuple(outside[k])] = value
    cls = np.sign(effect).astype(np.int8)
    rng = np.random.default_rng(abs(hash((image, tuple(roi)))) % 2**32)
    img = rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    settings = {
        "task": TASKS[task],
        "estimator": {"name": "coarse_to_fine", "coarse": 3, "fine": 50, "tol": 0.01},
        "intervention": {"name": "lv", "sampler": "uniform", "bank": "embedded:skimage"},
        "metric": {"name": "psnr", "crop_border": 0, "test_y_channel": False},
        "block": block,
        "seed": 0,
        "tol": 0.01,
        "classification": "tol",
        "forward_batch": 8,
        "blocks": "all",
    }
    res = CEMResult(
        effect=effect,
        effect_raw=effect,
        stderr=np.zeros_like(effect),
        ci_low=effect,
        ci_high=effect,
        counts=np.full((g, g), 10),
        classification=cls,
        roi_mask=mask,
        roi=Roi(*roi),
        block=block,
        scale=1,
        input_shape=(64, 64),
        output_shape=(64, 64),
        baseline_metric=psnr,
        meta={"model": model, "image": image, "settings": settings, "fingerprint": f"{model}-{task}-{image}-{roi}"},
        images={"input": img, "restored": img},
    )
    res.save(folder)


def _table(root):
    runs, skipped = collect_runs([root])
    assert not skipped
    return with_locality(runs)


def _rf(root):
    """FSRCNN at depths 2..16 (width 16): the effect reaches further with depth, PSNR does not move with it."""
    rng = np.random.default_rng(1)
    for d in (2, 4, 8, 16):
        for i, im in enumerate(IMAGES):
            for j, roi in enumerate(ROIS):
                _run(
                    root / f"fsrcnn_d{d}" / f"{i}_{j}",
                    f"fsrcnn_d{d}_w16_x4",
                    "sr",
                    im,
                    roi,
                    near={2: 3, 4: 10, 8: 20, 16: 40}[d],
                    psnr=25 + 0.3 * i + rng.normal(0, 0.05),
                )
    return root


@pytest.fixture
def rf_runs(tmp_path):
    return _rf(tmp_path)


def test_a_trend_built_in_is_found_and_a_permuted_one_is_not(rf_runs):
    df = _table(rf_runs)
    depth = {f"fsrcnn_d{d}_w16_x4": d for d in (2, 4, 8, 16)}
    iv = rank_trend(df, "reach_max_px", depth)
    assert iv.mean == pytest.approx(1.0) and iv.excludes_zero and iv.n_images == 4
    # the same metric against a depth order that is not the models' (d2<->d16, d4<->d8): the sign flips
    shuffled = {"fsrcnn_d2_w16_x4": 16, "fsrcnn_d16_w16_x4": 2, "fsrcnn_d4_w16_x4": 8, "fsrcnn_d8_w16_x4": 4}
    assert rank_trend(df, "reach_max_px", shuffled).mean == pytest.approx(-1.0)
    # PSNR does not depend on depth here: its interval must hold 0
    psnr = rank_trend(df, "baseline_metric", depth)
    assert psnr.low <= 0 <= psnr.high
    # a second metric as the x axis: both are resampled on the same units
    both = rank_trend(df, "share_positive", "reach_max_px")
    assert both.mean == pytest.approx(1.0)


def test_locality_measures_do_not_scale_with_the_effect(tmp_path):
    _run(tmp_path / "a", "m", "dn", "im0", ROIS[0], near=4, value=0.1)
    _run(tmp_path / "b", "m", "dn", "im0", ROIS[0], near=4, value=0.5)
    _run(tmp_path / "c", "m", "dn", "im0", ROIS[0], far=4, value=0.1)
    a, b, c = (locality(tmp_path / k) for k in "abc")
    assert a == pytest.approx(b)  # five times the effect, the same place: same locality
    assert c["ce_mean_distance_px"] > a["ce_mean_distance_px"] + 20
    assert a["near_mass_share"] == pytest.approx(1.0) and c["near_mass_share"] == 0.0


def _ca(root, sr_gain, dn_gain):
    rng = np.random.default_rng(2)
    for variant in ("none", "global"):
        for task, gain in (("sr", sr_gain), ("dn", dn_gain)):
            model = f"rcan_{variant}_sr_x4" if task == "sr" else f"rcan_{variant}_dn_s50"
            for i, im in enumerate(IMAGES):
                for j, roi in enumerate(ROIS):
                    n = 2 + (i + j) % 3
                    _run(
                        root / model / f"{i}_{j}",
                        model,
                        task,
                        im,
                        roi,
                        near=n + (gain + int(rng.integers(0, 2)) if variant == "global" and gain else 0),
                        psnr=25 + i,
                    )


def test_attention_contrast_finds_an_sr_only_effect(tmp_path):
    _ca(tmp_path, sr_gain=4, dn_gain=0)
    df = _table(tmp_path)
    variant_of = dict(zip(df["model"], df["attention_variant"].astype(str)))
    con = attention_contrast(df[df["task"] == "sr"], df[df["task"] == "dn"], variant_of, "none", ["share_positive"])
    r = con.iloc[0]
    assert r["variant"] == "global" and r["sr_low"] > 0 and r["dn_mean"] == 0 and r["contrast_low"] > 0


@pytest.mark.parametrize("sr_gain,dn_gain,expected", [(4, 0, "reproduced"), (0, 4, "not reproduced")])
def test_the_channel_attention_report_says_what_was_built_in(tmp_path, sr_gain, dn_gain, expected):
    from cem_lab.analysis.report import write_report

    _ca(tmp_path / "runs", sr_gain, dn_gain)
    written = write_report([tmp_path / "runs"], tmp_path / "rep", finding="channel_attention")
    assert written["finding_verdict"] == expected
    text = (tmp_path / "rep" / "finding_channel_attention.md").read_text()
    assert f"**Verdict: {expected}.**" in text
    assert (tmp_path / "rep" / "finding_channel_attention_contrast.csv").is_file()
    assert (tmp_path / "rep" / "figures" / "finding_ca_contrast.png").stat().st_size > 1000


def _mt(root, mode):
    """srresnet single vs mixed on sr, dn, dr: the mixed model's effect is nearer (``local``) or smaller
    at the same places (``weaker``)."""
    for model in ("single", "mixed"):
        for task in ("sr", "dn", "dr"):
            name = f"srresnet_{task}" if model == "single" else "srresnet_mixed"
            for i, im in enumerate(IMAGES):
                for j, roi in enumerate(ROIS):
                    n = 3 + (i + j) % 2
                    if model == "single":
                        kw = {"near": n, "far": 3, "value": 0.2}
                    elif mode == "local":
                        kw = {"near": n + 3, "far": 0, "value": 0.2}
                    else:
                        kw = {"near": n, "far": 3, "value": 0.1 + 0.01 * i}
                    _run(root / f"{name}_{task}" / f"{i}_{j}", name, task, im, roi, psnr=25 + i, **kw)


@pytest.mark.parametrize(
    "mode,expected,reading",
    [("local", "reproduced", "more local"), ("weaker", "inconclusive", "weaker, not more local")],
)
def test_the_multitask_report_tells_more_local_from_weaker(tmp_path, mode, expected, reading):
    from cem_lab.analysis.report import write_report

    _mt(tmp_path / "runs", mode)
    written = write_report([tmp_path / "runs"], tmp_path / "rep", finding="multitask")
    assert written["finding_verdict"] == expected
    comp = pd.read_csv(tmp_path / "rep" / "finding_multitask_comparisons.csv")
    assert list(comp["reading"]) == [reading] * 3
    assert (tmp_path / "rep" / "figures" / "teaser.png").stat().st_size > 5000  # one network, three tasks


def test_the_receptive_field_report_and_cem_report_print_the_verdict(rf_runs, tmp_path, capsys):
    from cem_lab.cli.report import main

    assert main([str(rf_runs), "--out", str(tmp_path / "rep"), "--finding", "receptive_field"]) == 0
    out = capsys.readouterr().out
    assert "## Finding 1" in out and "**Verdict: " in out
    per = pd.read_csv(tmp_path / "rep" / "finding_receptive_field_models.csv")
    assert list(per["depth"]) == [2, 4, 8, 16]
    paired = pd.read_csv(tmp_path / "rep" / "finding_receptive_field_paired.csv")
    reach = paired[paired["metric"] == "reach_max_px"].iloc[0]
    assert reach["a"] == "fsrcnn_d2_w16_x4" and reach["b"] == "fsrcnn_d16_w16_x4" and reach["low"] > 0


def test_a_finding_without_its_runs_is_refused(rf_runs, tmp_path, capsys):
    from cem_lab.cli.report import main

    assert main([str(rf_runs), "--out", str(tmp_path / "rep"), "--finding", "multitask"]) == 2
    assert "single-task and mixed" in capsys.readouterr().err


def test_paired_table_and_the_verdict_rule(rf_runs):
    df = _table(rf_runs)
    t = paired_table(df, [("fsrcnn_d2_w16_x4", "fsrcnn_d4_w16_x4")], ["reach_max_px", "baseline_metric"])
    assert list(t["metric"]) == ["reach_max_px", "baseline_metric"] and bool(t["excludes_zero"].iloc[0])
    assert verdict(2, 0, 5) == "reproduced" and verdict(0, 1, 5) == "not reproduced"
    assert (
        verdict(1, 1, 5) == "inconclusive" and verdict(0, 0, 5) == "inconclusive" and verdict(0, 0, 0) == "inconclusive"
    )


def test_the_bootstrap_rank_correlation_is_spearmans_rho_row_by_row():
    from scipy.stats import spearmanr

    from cem_lab.analysis.findings import _spearman_paired_rows, _unit_weights

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(50, 6)), rng.normal(size=(50, 6))
    x[4, :3] = x[4, 3]  # ties are ranked as scipy ranks them
    got = _spearman_paired_rows(x, y)
    assert np.allclose(got, [spearmanr(a, b).statistic for a, b in zip(x, y)], atol=1e-12)
    w = _unit_weights(["a", "a", "b", "c", "c"], 200, 1)
    assert np.allclose(w.sum(axis=1), 1.0) and w is _unit_weights(("a", "a", "b", "c", "c"), 200, 1)
    assert not w.flags.writeable  # shared by every model's trend: read-only


# ----------------------------------------------------------------------------- the study notebooks
@pytest.mark.parametrize(
    "study,build,expected",
    [
        # 5 s and 10 s; the receptive-field notebook keeps the path in the default suite
        pytest.param("channel_attention", lambda root: _ca(root, 4, 0), "reproduced", marks=pytest.mark.slow),
        pytest.param("multitask", lambda root: _mt(root, "local"), "reproduced", marks=pytest.mark.slow),
        ("receptive_field", _rf, "inconclusive"),
    ],
)
def test_the_study_notebook_redraws_its_report(tmp_path, monkeypatch, study, build, expected):
    import json
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    build(tmp_path / "runs")
    monkeypatch.setenv("CEM_LAB_STUDY_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("CEM_LAB_NOTEBOOK_OUT", str(tmp_path / "nb"))
    nb = Path(__file__).resolve().parents[2] / "notebooks" / f"{study}.ipynb"
    namespace: dict = {}
    for i, cell in enumerate(c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"):
        exec(compile("".join(cell["source"]), f"{nb.name}[code cell {i}]", "exec"), namespace)  # noqa: S102
    assert namespace["written"]["finding_verdict"] == expected
    assert namespace["shown"] and all(Path(p).stat().st_size > 1000 for p in namespace["shown"])
