"""Tests for the study aggregator: run table (cem_lab.analysis.runs), study figures, report, cem-report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ConvStack, Identity
from omegaconf import OmegaConf
from PIL import Image

from cem_lab import compute_cem
from cem_lab.analysis import study_figures as sf
from cem_lab.analysis.report import write_report
from cem_lab.analysis.runs import REPORT_MARKER, collect_runs, task_label, zoo_info
from cem_lab.bookkeeping.run_index import mark_done
from cem_lab.cli.report import main
from cem_lab.models.zoo import read_zoo_entry

# four zoo names spanning 2 depths x 2 widths (their metadata is read; the CEMs use toy networks)
ZOO_RUNS = {"fsrcnn_d2_w16_x4": 2, "fsrcnn_d2_w32_x4": 2, "fsrcnn_d4_w16_x4": 4, "fsrcnn_d4_w32_x4": 4}


@pytest.fixture(scope="module")
def study(tmp_path_factory, small_bank) -> Path:
    """A study folder: four SR runs named after zoo models (sweep-like layout) and one DN run."""
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[100:148, 200:248])
    root = tmp_path_factory.mktemp("study")
    kw = dict(block=8, patch_bank=small_bank, estimator="exhaustive", samples=2, progress=False, figures=False)
    for name, depth in ZOO_RUNS.items():
        compute_cem(
            ConvStack(depth=depth + 1, width=6, scale=4),
            image,
            "sr",
            (16, 16, 16),
            output_dir=root / "sweeps" / "sr" / name,
            model_name=name,
            **kw,
        )
    compute_cem(
        Identity(),
        image,
        "dn",
        (16, 16, 16),
        output_dir=root / "single" / "toy_dn",
        model_name="toy_dn",
        **{**kw, "samples": 1},
    )
    return root


def _summaries(root: Path) -> dict[str, dict]:
    return {str(p.parent.resolve()): json.loads(p.read_text()) for p in root.rglob("summary.json")}


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- the run table
def test_table_values_equal_each_summary(study):
    runs, skipped = collect_runs([study])
    summaries = _summaries(study)
    assert skipped == [] and len(runs) == len(summaries) == 5
    assert runs["run"].is_unique and "sweeps/sr/fsrcnn_d2_w16_x4" in set(runs["run"])
    for _, row in runs.iterrows():
        s = summaries[row["folder"]]
        assert row["model"] == s["model"] and row["image"] == s["image"]
        assert row["block"] == s["block"] and row["scale"] == s["scale"] and row["metric"] == s["metric"]
        assert row["baseline_metric"] == s["baseline_metric"]
        for kind in ("positive", "negative", "zero"):
            assert row[f"n_{kind}"] == s["counts"][kind]
            assert row[f"share_{kind}"] == s["shares"][kind]
        assert row["total_positive_effect"] == s["total_positive_effect"]
        assert row["total_negative_effect"] == s["total_negative_effect"]
        assert row["effect_max"] == s["effect_max"]["value"] and row["effect_min"] == s["effect_min"]["value"]
        assert row["reach_max_px"] == s["reach_px"]["max"] and row["reach_mean_px"] == s["reach_px"]["mean"]
        assert row["forward_passes"] == s["forward_passes"]
        assert row["estimator"] == "exhaustive" and row["samples"] == s["settings"]["estimator"]["samples"]
    labels = runs.set_index("model")["task_label"]
    assert labels["toy_dn"] == "dn_s50" and labels["fsrcnn_d4_w32_x4"] == "sr_x4"


def test_zoo_columns_for_zoo_named_runs_only(study):
    runs = collect_runs([study])[0].set_index("model")
    for name, depth in ZOO_RUNS.items():
        entry = read_zoo_entry(name)
        row = runs.loc[name]
        assert row["zoo"] and row["study"] == "receptive_field" and row["architecture"] == "FSRCNN"
        assert row["depth"] == depth and row["width"] == entry["model"]["width"]
        assert row["training"] == "single-task" and row["parameters"] == entry["parameters"]
        assert row["val_psnr"] == entry["validation"]["tasks"]["sr_x4"]["psnr"]
        assert row["val_gain"] == entry["validation"]["tasks"]["sr_x4"]["gain"]
    toy = runs.loc["toy_dn"]
    assert not toy["zoo"] and pd.isna(toy["study"]) and pd.isna(toy["val_psnr"]) and pd.isna(toy["depth"])


def test_task_labels_and_rcan_attention_variants():
    assert task_label({"name": "sr", "scale": 4}) == "sr_x4"
    assert task_label({"name": "dn", "sigma": 50.0}) == "dn_s50"
    assert task_label({"name": "dr", "preset": "medium"}) == "dr_medium"
    # a zoo model not validated on the run's task: zoo columns, but no validation PSNR
    other = zoo_info("fsrcnn_d2_w16_x4", "dn_s50")
    assert other["zoo"] and np.isnan(other["val_psnr"])
    expected = {
        "rcan_global_sr_x4": "global",
        "rcan_none_sr_x4": "none",
        "rcan_half_sr_x4": "half",
        "rcan_local4_sr_x4": "local4",
        "rcan_adaptive3_sr_x4": "adaptive3",
    }
    for name, variant in expected.items():
        info = zoo_info(name, "sr_x4")
        assert info["architecture"] == "RCAN" and info["attention_variant"] == variant
        assert info["study"] == "channel_attention" and info["depth"] == 4  # 2 groups x 2 blocks


def test_unfinished_folders_are_listed_with_reasons(study, tmp_path):
    good = study / "sweeps" / "sr" / "fsrcnn_d2_w16_x4"
    root = tmp_path / "mixed_bag"
    _copy_run(good, root / "ok")
    failed = _copy_run(good, root / "failed")
    (failed / "error.txt").write_text("ValueError: the ROI does not fit\n\ntraceback ...\n")
    interrupted = root / "interrupted"
    interrupted.mkdir(parents=True)
    shutil.copy(good / "state.npz", interrupted / "state.npz")
    (_copy_run(good, root / "corrupt") / "summary.json").write_text('{"format_version": 1, "metr')
    newer = _copy_run(good, root / "newer")
    summary = json.loads((newer / "summary.json").read_text())
    (newer / "summary.json").write_text(json.dumps({**summary, "format_version": 99}))
    (_copy_run(good, root / "no_npz") / "cem.npz").unlink()
    cli_run = _copy_run(good, root / "cli_unmarked")
    (cli_run / "config.yaml").write_text("seed: 0\n")

    runs, skipped = collect_runs([root])
    assert list(runs["run"]) == ["ok"]
    reasons = {s.folder.name: s.reason for s in skipped}
    assert set(reasons) == {"failed", "interrupted", "corrupt", "newer", "no_npz", "cli_unmarked"}
    assert reasons["failed"] == "failed: ValueError: the ROI does not fit"
    assert "interrupted" in reasons["interrupted"] and "resume" in reasons["interrupted"]
    assert "corrupt summary.json" in reasons["corrupt"]
    assert "format_version 99" in reasons["newer"] and "upgrade" in reasons["newer"]
    assert "no cem.npz" in reasons["no_npz"]
    assert "done.json" in reasons["cli_unmarked"]
    assert all("\n" not in r for r in reasons.values())
    # once cem-lab marks it done (same fingerprint), the CLI run counts
    mark_done(OmegaConf.create({"seed": 0}), cli_run, summary["fingerprint"])
    runs, _ = collect_runs([root])
    assert sorted(runs["run"]) == ["cli_unmarked", "ok"]


def test_a_run_whose_input_file_changed_is_stale(study, tmp_path):
    """A map computed before its weights file changed (e.g. a retrained zoo model) is not
    reported next to the new model's metadata; a file that is gone (folders read on another
    machine) does not make a run stale."""
    good = study / "sweeps" / "sr" / "fsrcnn_d2_w16_x4"
    fingerprint = json.loads((good / "summary.json").read_text())["fingerprint"]
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"old weights")
    runs_root = tmp_path / "runs"
    for name in ("changed", "moved"):
        run = _copy_run(good, runs_root / name)
        (run / "config.yaml").write_text("seed: 0\n")
        mark_done(OmegaConf.create({"model": {"weights": str(weights)}}), run, fingerprint)
        assert json.loads((run / "done.json").read_text())["inputs"]
    done = runs_root / "moved" / "done.json"
    record = json.loads(done.read_text())
    record["inputs"]["model.weights"][0] = str(tmp_path / "elsewhere" / "model.safetensors")
    done.write_text(json.dumps(record))
    runs, skipped = collect_runs([runs_root])
    assert sorted(runs["run"]) == ["changed", "moved"] and not skipped
    weights.write_bytes(b"retrained weights")
    runs, skipped = collect_runs([runs_root])
    assert list(runs["run"]) == ["moved"]
    assert [s.folder.name for s in skipped] == ["changed"]
    assert skipped[0].reason.startswith("stale: model.weights") and "rerun" in skipped[0].reason


def test_no_finished_run_is_an_error_that_names_the_paths(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match="no finished CEM run under .*empty.*summary.json"):
        collect_runs([empty])
    (empty / "sub" / "error.txt").write_text("RuntimeError: out of memory\n")
    with pytest.raises(ValueError, match="1 unfinished folder.*out of memory"):
        collect_runs([empty])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        collect_runs([tmp_path / "nowhere"])


# ----------------------------------------------------------------------------- figures and report
def _assert_png(path: str) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_write_report_writes_tables_and_figures_and_reruns_cleanly(study, tmp_path):
    root = tmp_path / "study"
    shutil.copytree(study, root)
    (root / "broken").mkdir()
    (root / "broken" / "error.txt").write_text("KeyError: 'x'\n")
    out = root / "report"
    written = write_report([root], out)
    assert set(written["figures"]) == {"cem_grid", "shares", "reach_vs_psnr", "depth_width_fsrcnn_sr_x4"}
    for path in written["figures"].values():
        assert Path(path).parent == out / "figures"
        w, h = _assert_png(path)
        assert w > 200 and h > 100
    table = pd.read_csv(written["runs_csv"])
    assert len(table) == 5 and set(table["model"]) == set(ZOO_RUNS) | {"toy_dn"}
    pd.testing.assert_series_equal(table["share_positive"], written["runs"]["share_positive"], check_dtype=False)
    md = Path(written["runs_md"]).read_text().splitlines()
    assert md[0].startswith("| run | model | task |") and len(md) == 2 + 5
    assert any("fsrcnn_d4_w32_x4" in line and "sr_x4" in line for line in md)
    assert Path(written["skipped_txt"]).read_text().strip().endswith("broken: failed: KeyError: 'x'")
    assert json.loads((out / REPORT_MARKER).read_text())["runs"] == 5
    assert not list(out.rglob("*.tmp"))

    # rerun: the report folder is not read as a run, stale files go
    shutil.rmtree(root / "broken")
    (out / "figures" / "old_figure.png").write_bytes(b"stale")
    again = write_report([root], out)
    assert len(again["runs"]) == 5 and not any("report" in r for r in again["runs"]["run"])
    assert again["skipped"] == [] and again["skipped_txt"] is None and not (out / "skipped.txt").exists()
    assert not (out / "figures" / "old_figure.png").exists()
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        Path(p).name for p in again["figures"].values()
    )
    # a report folder given as a path holds no runs; a run folder is refused as the report folder
    with pytest.raises(ValueError, match="no finished CEM run"):
        collect_runs([out])
    with pytest.raises(ValueError, match="is a CEM run folder"):
        write_report([root], root / "single" / "toy_dn")


def test_depth_width_needs_two_depths_and_two_widths(study):
    runs = collect_runs([study])[0]
    assert sf.depth_width_families(runs) == [("FSRCNN", "sr_x4")]
    one_depth = runs[runs["depth"] != 4]
    assert sf.depth_width_families(one_depth) == []
    with pytest.raises(ValueError, match=">= 2 depths"):
        sf.plot_depth_width(one_depth, "/nonexistent/x.png", "FSRCNN", "sr_x4")


def test_single_vs_mixed_comparison(study, tmp_path):
    runs = collect_runs([study])[0]
    assert len(sf.multitask_pairs(runs)) == 0  # all single-task: no comparison
    with pytest.raises(ValueError, match="single-task and mixed"):
        sf.plot_single_vs_mixed(runs, tmp_path / "x.png")
    sr = runs[runs["task_label"] == "sr_x4"].head(2).copy()
    sr["architecture"] = "SRResNet"
    sr["training"] = ["single-task", "mixed"]
    pairs = sf.multitask_pairs(pd.concat([runs, sr], ignore_index=True))
    assert list(pairs["training"]) == ["mixed", "single-task"]
    assert pairs.set_index("training").at["mixed", "share_positive"] == sr["share_positive"].iloc[1]
    path = sf.plot_single_vs_mixed(pd.concat([runs, sr], ignore_index=True), tmp_path / "svm.png")
    _assert_png(path)


# ----------------------------------------------------------------------------- cem-report
def test_cli_default_out_prints_table_and_exit_codes(study, tmp_path, capsys):
    root = tmp_path / "study"
    shutil.copytree(study / "sweeps", root)
    assert main([str(root)]) == 0
    text = capsys.readouterr().out
    assert "read 4 finished run(s)" in text and "skipped 0 folder(s)" in text
    assert f"report: {root / 'report'}" in text and "| run | model | task |" in text
    assert (root / "report" / "runs.csv").is_file() and (root / "report" / "figures" / "cem_grid.png").is_file()
    assert main([str(root)]) == 0  # rerun: the report folder is not a run
    assert "read 4 finished run(s)" in capsys.readouterr().out

    # several paths need --out
    assert main([str(root), str(study / "single")]) == 2
    assert "cem-report: error: --out" in capsys.readouterr().err
    assert main([str(root), str(study / "single"), "--out", str(tmp_path / "both")]) == 0
    assert "read 5 finished run(s)" in capsys.readouterr().out
    # no finished runs, missing path: a one-line error, status 2
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cem-report: error: no finished CEM run") and "Traceback" not in err
    assert not (tmp_path / "empty" / "report").exists()


def test_cli_module_exits_2_on_a_missing_path(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cem_lab.cli.report", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("cem-report: error:") and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_labels_name_what_tells_a_models_runs_apart():
    """Several runs of one model on one task (a sweep over images and ROIs) are labelled by the image and ROI that
    vary, never by their long run-folder names (which overprinted each other in cem_grid.png)."""
    long = "dataset=standard,image_crop=256,model.id=edsr_d2_w16_x4,model=zoo,roi=placed,roi_place.index={i}"
    runs = pd.DataFrame(
        {
            "model": ["edsr_d2_w16_x4"] * 3 + ["edsr_d8_w16_x4", "solo"],
            "task_label": ["sr_x4"] * 5,
            "image": ["barbara_crop159_223_256x256", "barbara_crop159_223_256x256", "kodim23_crop1_2_256x256"] * 1
            + ["monarch", "monarch"],
            "roi": ["160 192 32", "160 0 32", "160 192 32", "0 0 32", "0 0 32"],
            "block": [8] * 5,
            "run": [long.format(i=i) for i in range(5)],
        }
    )
    labels = sf.run_labels(runs)
    assert labels.tolist()[:3] == [
        "edsr_d2_w16_x4\nbarbara \u00b7 roi 160 192 32",
        "edsr_d2_w16_x4\nbarbara \u00b7 roi 160 0 32",
        "edsr_d2_w16_x4\nkodim23 \u00b7 roi 160 192 32",
    ]
    assert labels[3] == "edsr_d8_w16_x4" and labels[4] == "solo"  # one run of a model: its name alone
    assert all(len(line) <= 40 for label in labels for line in label.split("\n"))
    # runs that differ only in a setting no column names keep apart by their (shortened) run names
    twins = runs.iloc[[0, 0]].reset_index(drop=True)
    twins["run"] = ["a" * 40 + "1", "a" * 40 + "2"]
    twin_labels = sf.run_labels(twins, sep=" | ")
    assert twin_labels.nunique() == 2 and all(len(t) < 80 for t in twin_labels)
    # one network on several tasks (a mixed-task model in each task's panel group): its name alone in each
    mixed = runs.iloc[[3, 3, 3]].reset_index(drop=True).assign(task_label=["sr_x4", "dn_s50", "dr_medium"])
    assert sf.run_labels(mixed).tolist() == ["edsr_d8_w16_x4"] * 3
