"""`cem-attribution`: the CEM beside LAM, IG and saliency, end to end through the CLI; reusing a
cem-lab run; refusals in the one error form (exit status 2) that leave no folder behind."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_clean_refusal
from PIL import Image

SMALL = [
    "model=custom",
    "model.net._target_=cem_lab.models.DnCNN",
    "+model.net.features=8",
    "+model.net.depth=3",
    "roi=[16,16,16]",
    "cem=exhaustive",
    "cem.samples=2",
    "cem.tol=0",
    "patches.count=300",
    "progress=false",
]
# short paths for the gradient methods and the curves; two LV draws per evaluation, as the CEM
FAST = [
    "attribution.lam.steps=8",
    "attribution.ig.steps=8",
    "attribution.faithfulness.steps=8",
    "attribution.faithfulness.samples=2",
]
METHODS = ["lam", "ig", "saliency", "cem"]
INTERVENTIONS = ["lv", "zeros", "mean", "blur"]


def _cli(args, cwd: Path, program: str = "cem_lab.cli.attribution", env=None):
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", program, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def _assert_clean_refusal(p, *words, program: str = "cem-attribution"):
    assert_clean_refusal(p, *words, program=program)


def _no_run_folder(work: Path) -> None:
    runs = work / "runs" / "attribution"
    assert not runs.exists() or list(runs.iterdir()) == [], list(runs.iterdir())


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    from skimage import data

    path = tmp_path_factory.mktemp("inputs") / "img.png"
    Image.fromarray(np.ascontiguousarray(data.astronaut()[100:148, 200:248])).save(path)
    return path


@pytest.fixture(scope="module")
def computed(tmp_path_factory, image_file):
    """One attribution run that computes its own CEM."""
    base = tmp_path_factory.mktemp("computed")
    folder = base / "run"
    p = _cli(SMALL + FAST + [f"image={image_file}", f"hydra.run.dir={folder}"], base)
    assert p.returncode == 0, p.stderr[-3000:]
    return folder, p


@pytest.fixture(scope="module")
def cem_lab_run(tmp_path_factory, image_file):
    """A finished cem-lab run of the same settings."""
    base = tmp_path_factory.mktemp("cemlab")
    folder = base / "cem_run"
    p = _cli(SMALL + [f"image={image_file}", f"hydra.run.dir={folder}"], base, program="cem_lab.cli.cem")
    assert p.returncode == 0, p.stderr[-3000:]
    return folder


def test_an_attribution_run_writes_its_numbers_and_figures(computed):
    from cem_lab.analysis.attribution import load_attribution

    folder, p = computed
    for f in [
        "attribution.npz",
        "attribution.json",
        "figures/attribution_panel.png",
        "figures/deletion_curves.png",
        "config.yaml",
        "attribution.log",
        "cem/cem.npz",
        "cem/summary.json",
    ]:
        assert (folder / f).is_file(), f
    for f in ["figures/attribution_panel.png", "figures/deletion_curves.png"]:
        with Image.open(folder / f) as im:
            assert im.format == "PNG" and im.size[0] < 2000 and im.size[1] < 800, im.size
        assert (folder / f).stat().st_size < 400_000
    run = load_attribution(folder)
    s = run.summary
    assert s["format_version"] == 1 and s["methods"] == METHODS
    assert s["metric"] == {"name": "psnr", "unit": "dB"} and s["roi"] == [16, 16, 16]
    rows, cols = s["grid_shape"]
    assert (rows, cols) == (6, 6) and s["blocks_ranked"] == 36 - 4
    roi_mask = run.arrays["roi_mask"]
    with np.load(folder / "cem" / "cem.npz") as z:
        effect, effect_raw, m0 = z["effect"], z["effect_raw"], float(z["baseline_metric"])

    # the un-intervened metric is the CEM's; every curve starts (deletion) or ends (insertion) there
    assert s["baseline_metric"] == pytest.approx(m0, abs=1e-9)
    for name in INTERVENTIONS:
        assert s["faithfulness"][name]["baseline_metric"] == pytest.approx(m0, abs=1e-9)
        for m in METHODS:
            d, i = run.curve(name, m, "deletion"), run.curve(name, m, "insertion")
            assert d["values"][0] == pytest.approx(m0, abs=1e-9), (name, m)
            assert i["values"][-1] == pytest.approx(m0, abs=1e-9), (name, m)
            assert d["counts"][0] == 0 and d["counts"][-1] == 32 and d["fractions"][-1] == 1.0
            assert d["values"][-1] == pytest.approx(i["values"][0])  # all ranked blocks replaced
            for kind in ("deletion", "insertion"):
                auc = run.auc(name, m, kind)
                assert math.isfinite(auc) and abs(auc - m0) < 20, (name, m, kind, auc)
    # the CEM ranks the blocks that help the ROI first: its LV deletion curve falls first
    lv_cem = run.curve("lv", "cem", "deletion")["values"]
    assert lv_cem[1] < lv_cem[0]

    # maps: the grid of the CEM, ROI blocks out of every ranking, the CEM's own numbers
    for m in METHODS:
        assert run.block_map(m).shape == (rows, cols) and run.block_map(m, signed=True).shape == (rows, cols)
        assert run.pixel_map(m).shape == (48, 48)
        ranking = run.arrays[f"{m}/ranking"]
        assert sorted(ranking.tolist()) == np.flatnonzero(~roi_mask.ravel()).tolist()
        assert np.all(run.block_map(m) >= 0)
    np.testing.assert_array_equal(run.block_map("cem", signed=True), effect)
    assert run.block_map("lam")[~roi_mask].sum() > 0

    # rank correlations of every pair, Spearman's rho in [-1, 1]
    assert len(s["rank_correlation"]) == 6
    for pair, rc in s["rank_correlation"].items():
        assert rc["rho"] is not None and -1.0 <= rc["rho"] <= 1.0, (pair, rc)
        assert 2 <= rc["n"] <= 32  # the blocks outside the ROI that either map marks
    # shares of the image marked: fractions of the 32 blocks, 50% of the mass in no more blocks than 90%
    for m, sh in s["shares_marked"].items():
        assert 0 < sh["50"] <= sh["90"] <= 1, (m, sh)
        assert round(sh["50"] * 32) == pytest.approx(sh["50"] * 32)
    # LAM's diffusion index of every map: blocks outside the ROI for all, pixels for the gradient methods
    from cem_lab.attribution.diffusion import diffusion_index

    for m in METHODS:
        di = s["diffusion_index"][m]
        assert di["blocks"] == pytest.approx(diffusion_index(run.block_map(m)[~roi_mask]))
        assert 100 / 32 <= di["blocks"] <= 100 and run.diffusion_index(m) == pytest.approx(di["blocks"])
        if m == "cem":
            assert di["pixels"] is None and np.isnan(run.diffusion_index(m, "pixels"))
        else:
            assert di["pixels"] == pytest.approx(diffusion_index(run.pixel_map(m)))

    # sign test: replacing one block with the CEM's own intervention and draws is the CEM's estimate
    negative = np.flatnonzero((effect < 0).ravel() & ~roi_mask.ravel())
    assert len(negative) > 0
    t = s["sign_test"]["lv"]
    assert t["negative_blocks"] == len(negative) and 0 <= t["raised"] <= t["negative_blocks"]
    np.testing.assert_array_equal(run.arrays["sign_test/lv/blocks"], negative)
    np.testing.assert_allclose(run.arrays["sign_test/lv/deltas"], -effect_raw.ravel()[negative], atol=1e-9)
    assert set(s["sign_test"]) == set(INTERVENTIONS)

    # IG is complete (Captum's delta small against the objective change); LAM reports its gap
    assert abs(s["completeness"]["ig"]["relative_delta"]) < 0.05
    assert math.isfinite(s["completeness"]["lam"]["delta"])
    assert s["settings"]["cem"]["source"] == "computed"

    # the report
    out = p.stdout
    assert f"attribution written to {folder}" in out and "AUC" in out and "rank correlation" in out
    assert "sign test" in out and "attribution_panel.png" in out


def test_reusing_a_cem_lab_run_gives_the_same_cem_as_computing_it(tmp_path, computed, cem_lab_run, image_file):
    from cem_lab.analysis.attribution import load_attribution

    folder = tmp_path / "reuse"
    p = _cli(
        SMALL + FAST + [f"image={image_file}", f"attribution.cem_run={cem_lab_run}", f"hydra.run.dir={folder}"],
        tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"read from {cem_lab_run}" in p.stdout
    assert not (folder / "cem").exists()  # nothing computed here
    reused, fresh = load_attribution(folder), load_attribution(computed[0])
    assert reused.summary["settings"]["cem"]["source"] == "cem_run"
    with np.load(cem_lab_run / "cem.npz") as a, np.load(computed[0] / "cem" / "cem.npz") as b:
        np.testing.assert_array_equal(a["effect"], b["effect"])
        np.testing.assert_array_equal(a["effect_raw"], b["effect_raw"])
    for key in ("block_signed", "block_abs", "pixel_map", "ranking"):
        np.testing.assert_array_equal(reused.arrays[f"cem/{key}"], fresh.arrays[f"cem/{key}"])
    for name in INTERVENTIONS:
        for kind in ("deletion", "insertion"):
            np.testing.assert_allclose(
                reused.curve(name, "cem", kind)["values"], fresh.curve(name, "cem", kind)["values"], atol=1e-9
            )
    assert reused.rank_correlation("lam", "cem") == pytest.approx(fresh.rank_correlation("lam", "cem"))


def test_a_cem_run_of_another_roi_is_refused_cleanly(tmp_path, cem_lab_run, image_file):
    work = tmp_path / "work"
    args = [a if not a.startswith("roi=") else "roi=[24,16,16]" for a in SMALL]
    p = _cli(args + FAST + [f"image={image_file}", f"attribution.cem_run={cem_lab_run}"], work)
    _assert_clean_refusal(p, "does not match", "ROI [16, 16, 16]", "roi=[24, 16, 16]")
    _no_run_folder(work)
    assert (cem_lab_run / "cem.npz").is_file()  # the cem-lab run is only read


def test_ig_too_few_steps_for_completeness_is_said_and_recorded(tmp_path, image_file):
    """The embedded DnCNN (the default model) with 2 IG steps misses completeness by more than 1 %."""
    folder = tmp_path / "run"
    args = ["attribution.methods=[ig]", "attribution.faithfulness.interventions=[]", "figures=false"]
    p = _cli(args + ["attribution.ig.steps=2", f"image={image_file}", "roi=[16,16,16]", "progress=false",
                     f"hydra.run.dir={folder}"], tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert out.count("integrated gradients are ") == 1 and "off completeness (more than 1%)" in out
    ig = json.loads((folder / "attribution.json").read_text())["completeness"]["ig"]
    assert abs(ig["relative_delta"]) > 0.01 and ig["warning"].startswith("integrated gradients are ")
    assert "more than 1% off: raise attribution.ig.steps" in p.stdout


def test_a_bad_roi_is_refused_cleanly_and_leaves_no_folder(tmp_path, image_file):
    work = tmp_path / "work"
    args = [a if not a.startswith("roi=") else "roi=[40,40,16]" for a in SMALL]
    p = _cli(args + FAST + [f"image={image_file}"], work)
    _assert_clean_refusal(p, "outside")
    _no_run_folder(work)


def test_a_folder_with_another_attribution_run_is_refused_untouched(tmp_path, computed, image_file):
    folder = computed[0]
    before = (folder / "attribution.json").read_bytes()
    p = _cli(
        SMALL + FAST + [f"image={image_file}", "attribution.objective=roi_sum", f"hydra.run.dir={folder}"], tmp_path
    )
    _assert_clean_refusal(p, "other settings")
    assert (folder / "attribution.json").read_bytes() == before


def test_a_model_without_gradients_is_refused_with_the_cem_command(tmp_path, image_file):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "nograd_net.py").write_text(
        textwrap.dedent("""
        import torch
        from torch import nn

        class NoGrad(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 3, 3, padding=1)

            def forward(self, x):
                with torch.no_grad():
                    return x - 0.1 * self.conv(x)
        """)
    )
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(mods), os.environ.get("PYTHONPATH", "")])}
    work = tmp_path / "work"
    args = [a for a in SMALL if "model.net" not in a] + ["model.net._target_=nograd_net.NoGrad", "mode=full"]
    p = _cli(args + FAST + [f"image={image_file}"], work, env=env)
    _assert_clean_refusal(
        p, "differentiable torch model", "still works", "cem-lab model=custom", "attribution.methods=[cem]"
    )
    _no_run_folder(work)


# --- in process: the settings and the share of the image marked -----------------------------------------------
def _cfg(overrides):
    from hydra import compose, initialize_config_module

    from cem_lab.compose.resolvers import register_resolvers

    register_resolvers()  # as the console script does before Hydra composes

    with initialize_config_module(config_module="cem_lab.conf", version_base="1.3"):
        return compose(config_name="attribution", overrides=overrides)


def test_the_config_reuses_the_cem_lab_groups_and_its_settings_are_checked():
    from cem_lab.attribution import AttributionError
    from cem_lab.compose.attribution import read_settings

    cfg = _cfg(["task=sr", "cem=exhaustive"])
    assert cfg.task._target_.endswith("SuperResolutionTask") and cfg.cem.estimator._target_.endswith(
        "ExhaustiveEstimator"
    )
    assert cfg.patches.patch_size == 8
    s = read_settings(cfg)
    assert s.methods == METHODS and s.interventions == INTERVENTIONS and s.steps == 16 and s.samples == 4
    assert s.lam == {"sigma_max": 1.2, "steps": 50, "batch_size": 8, "integration": "riemann_right"}
    assert s.ig["baseline"] == "black" and s.ig["steps"] == 50
    for bad, words in (
        (["attribution.methods=[lam,foo]"], "foo"),
        (["attribution.faithfulness.interventions=[lv,shuffle]"], "shuffle"),
        (["attribution.lam.steps=0"], "attribution.lam.steps"),
        (["attribution.ig.baseline=grey"], "attribution.ig.baseline"),
        (["attribution.objective=psnr"], "attribution.objective"),
        (["attribution.methods=[lam]", "attribution.cem_run=/x"], "cem is not in"),
    ):
        with pytest.raises(AttributionError, match=words):
            read_settings(_cfg(bad))


def test_share_of_the_image_marked():
    from cem_lab.attribution.study import marked_shares

    roi = np.zeros((2, 5), dtype=bool)
    roi[0, 0] = True  # left out: 9 blocks remain
    m = np.zeros((2, 5))
    m[0, 0] = 100.0
    m[1, :] = [5, 3, 1, 1, 0]
    sh = marked_shares(m, roi)
    assert sh["50"] == pytest.approx(1 / 9) and sh["90"] == pytest.approx(3 / 9)
    assert marked_shares(np.zeros((2, 5)), roi) == {"50": None, "90": None}


def test_cem_report_tabulates_the_faithfulness_of_attribution_runs(tmp_path, computed):
    import pandas as pd

    from cem_lab.analysis.report import write_report

    folder, _ = computed
    w = write_report([folder.parent], tmp_path / "report")
    assert w["attribution_runs"] == 1
    rows = pd.read_csv(w["faithfulness_csv"])
    assert len(rows) == len(METHODS) * len(INTERVENTIONS)
    s = json.loads((folder / "attribution.json").read_text())
    lv_cem = rows[(rows.intervention == "lv") & (rows.method == "cem")].iloc[0]
    f = s["faithfulness"]["lv"]
    assert lv_cem.deletion_drop == pytest.approx(f["baseline_metric"] - f["methods"]["cem"]["deletion_auc"])
    summary = pd.read_csv(w["faithfulness_summary_csv"])
    assert set(summary.method) == set(METHODS) and (summary.runs == 1).all()
    assert "| lv | cem | 1 |" in Path(w["faithfulness_md"]).read_text()
    lam_row = summary[(summary.intervention == "lv") & (summary.method == "lam")].iloc[0]
    assert lam_row.diffusion_index == pytest.approx(s["diffusion_index"]["lam"]["blocks"])
    assert lam_row.diffusion_index_pixels == pytest.approx(s["diffusion_index"]["lam"]["pixels"])
    assert f"| {lam_row.diffusion_index:.1f} |" in Path(w["faithfulness_md"]).read_text()
    assert json.loads((tmp_path / "report" / "report.json").read_text())["files"]["faithfulness_md"]


def test_faithfulness_over_runs_has_intervals_wins_and_the_paired_difference_with_the_cem():
    import pandas as pd

    from cem_lab.analysis.attribution_tables import faithfulness_markdown, faithfulness_summary

    rows = []
    for k, (cem, lam) in enumerate([(0.5, 0.3), (0.7, 0.4), (0.6, 0.8)]):
        for method, drop in (("cem", cem), ("lam", lam)):
            rows.append(
                {
                    "run": f"r{k}",
                    "roi": "[0, 0, 8]",
                    "intervention": "lv",
                    "method": method,
                    "deletion_drop": drop,
                    "insertion_gain": drop / 2,
                    "rank_correlation_with_cem": 1.0 if method == "cem" else 0.5,
                }
            )
    s = faithfulness_summary(pd.DataFrame(rows)).set_index("method")
    assert s.loc["cem", "deletion_drop"] == pytest.approx(0.6)
    assert s.loc["cem", "deletion_drop_lo"] < 0.6 < s.loc["cem", "deletion_drop_hi"]
    assert s.loc["cem", "share_best_deletion"] == pytest.approx(2 / 3)
    assert s.loc["lam", "share_best_deletion"] == pytest.approx(1 / 3)
    assert s.loc["lam", "minus_cem"] == pytest.approx(((0.3 - 0.5) + (0.4 - 0.7) + (0.8 - 0.6)) / 3)
    assert s.loc["lam", "paired_runs"] == 3 and s.loc["lam", "rank_correlation_with_cem"] == 0.5
    # rows of runs written before the diffusion index: no DI, a dash in the table
    assert np.isnan(s.loc["lam", "diffusion_index"])
    assert faithfulness_markdown(s.reset_index()).splitlines()[2].endswith("| - |")
    # with it: mean and t-interval over runs, in the table's last column
    for r, di in zip(rows, [40.0, 42.0, 60.0, 62.0, 50.0, 52.0]):
        r["diffusion_index"] = di
    s = faithfulness_summary(pd.DataFrame(rows)).set_index("method")
    assert s.loc["cem", "diffusion_index"] == pytest.approx(50.0)
    assert s.loc["lam", "diffusion_index"] == pytest.approx(52.0)
    half = 4.302653 * 10.0 / np.sqrt(3)  # t(0.975, 2) * sd / sqrt(n), sd of 40, 60, 50 = 10
    assert s.loc["cem", "diffusion_index_lo"] == pytest.approx(50.0 - half, rel=1e-5)
    assert s.loc["cem", "diffusion_index_hi"] == pytest.approx(50.0 + half, rel=1e-5)
    line = faithfulness_markdown(s.reset_index()).splitlines()[2]
    assert line.endswith(f"| 50.0 [{50 - half:.1f}, {50 + half:.1f}] |"), line


def test_the_attribution_study_preset_sweeps_three_images_and_two_rois():
    from hydra import compose, initialize_config_module

    from cem_lab.compose.resolvers import register_resolvers

    register_resolvers()  # as the console script does before Hydra composes

    with initialize_config_module(config_module="cem_lab.conf", version_base="1.3"):
        cfg = compose("attribution", overrides=["experiment=attribution_dn"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params["demo_image"] == "demo_1,demo_2,demo_3"
    assert cfg.image.endswith("demo_images/demo_2.png")
    assert params["roi"] == "[152,96,32],[64,160,32]"
    assert cfg.model.checkpoint.endswith("dncnn_color_blind.pth") and cfg.roi == [152, 96, 32]
