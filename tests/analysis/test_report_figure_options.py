"""cem-report's figure options: --format (every figure in each format, a stale format removed), --range (the map
grid's colour range, and the note of a map too faint for it), --label (run labels from a template; an unknown
field refused in one line before anything is written)."""

from __future__ import annotations

import json

import pytest
from conftest import assert_clean_refusal, run_console
from test_study_stats import ROIS, _write_run


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_figure_options")
    for model, n_neg in (("edsr_baseline_finetuned_div2k_sigma50_last", 2), ("rcan_dn", 6)):
        for image in ("barbara", "kodim23"):
            for k, roi in enumerate(ROIS[:2]):
                _write_run(root / "runs" / f"{model}_{image}_{k}", model, image, roi, n_neg, 30.0 + n_neg)
    return root


def test_formats_range_and_labels_reach_every_report_figure(runs_dir):
    out = runs_dir / "report"
    args = [str(runs_dir / "runs"), "--out", str(out), "--format", "pdf,svg", "--range", "auto"]
    p = run_console("report", [*args, "--label", "{model}: {image} b{block}"], runs_dir)
    assert p.returncode == 0, p.stderr[-2000:]
    files = json.loads((out / "report.json").read_text())["files"]["figures"]
    assert {"cem_grid", "shares", "study_intervals"} <= set(files)
    for name, path in files.items():
        assert path.endswith(".pdf"), (name, path)  # the first format is the one the report links
        for fmt in ("pdf", "svg"):
            assert (out / "figures" / f"{name}.{fmt}").is_file(), (name, fmt)
        assert not (out / "figures" / f"{name}.png").exists()
    svg = (out / "figures" / "cem_grid.svg").read_text()
    assert "rcan_dn: kodim23 b8" in svg  # the template's label, kept as text
    assert "\u00b10.2 dB" in svg  # auto: the largest |CE| outside the ROIs (-0.2 dB), not DN's 1 dB
    # other formats: the PDFs removed; a range so wide that every map is faint says so
    p = run_console(
        "report", [str(runs_dir / "runs"), "--out", str(out), "--format", "png,svg", "--range", "5"], runs_dir
    )
    assert p.returncode == 0, p.stderr[-2000:]
    left = sorted(f.name for f in (out / "figures").iterdir())
    assert left and all(f.endswith((".png", ".svg")) for f in left), left
    grid = (out / "figures" / "cem_grid.svg").read_text()
    assert "a tenth of the range" in grid and "\u00b15 dB" in grid


def test_an_unknown_label_field_or_format_is_refused_before_anything_is_written(runs_dir):
    out = runs_dir / "refused"
    p = run_console("report", [str(runs_dir / "runs"), "--out", str(out), "--label", "{model} {widht}"], runs_dir)
    assert_clean_refusal(p, "{widht}", "estimator.fine", program="cem-report")
    p = run_console("report", [str(runs_dir / "runs"), "--out", str(out), "--format", "png,jpg"], runs_dir)
    assert_clean_refusal(p, "--format jpg", "png, pdf, svg", program="cem-report")
    p = run_console("report", [str(runs_dir / "runs"), "--out", str(out), "--range", "-1"], runs_dir)
    assert_clean_refusal(p, "--range", program="cem-report")
    assert not out.exists()
