"""cem-report's figure options: --format (every figure in each format, a stale format removed), --range (the map
grid's colour range, and the note of a map too faint for it), --label (run labels from a template; an unknown
field refused in one line before anything is written)."""

from __future__ import annotations

import json

import pytest
from test_study_stats import ROIS, _write_run

from cem_lab.cli.report import main


def _refused(args, capsys, *words) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("cem-report: error: ") and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_figure_options")
    for model, n_neg in (("edsr_baseline_finetuned_div2k_sigma50_last", 2), ("rcan_dn", 6)):
        for image in ("barbara", "kodim23"):
            for k, roi in enumerate(ROIS[:2]):
                _write_run(root / "runs" / f"{model}_{image}_{k}", model, image, roi, n_neg, 30.0 + n_neg)
    return root


def test_formats_range_and_labels_reach_every_report_figure(runs_dir, capsys):
    out = runs_dir / "report"
    args = [str(runs_dir / "runs"), "--out", str(out), "--format", "pdf,svg", "--range", "auto"]
    assert main([*args, "--label", "{model}: {image} b{block}"]) == 0, capsys.readouterr().err
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
    assert main([str(runs_dir / "runs"), "--out", str(out), "--format", "png,svg", "--range", "5"]) == 0
    left = sorted(f.name for f in (out / "figures").iterdir())
    assert left and all(f.endswith((".png", ".svg")) for f in left), left
    grid = (out / "figures" / "cem_grid.svg").read_text()
    assert "a tenth of the range" in grid and "\u00b15 dB" in grid


def test_an_unknown_label_field_or_format_is_refused_before_anything_is_written(runs_dir, capsys):
    out = runs_dir / "refused"
    runs = str(runs_dir / "runs")
    _refused([runs, "--out", str(out), "--label", "{model} {widht}"], capsys, "{widht}", "estimator.fine")
    _refused([runs, "--out", str(out), "--format", "png,jpg"], capsys, "--format jpg", "png, pdf, svg")
    _refused([runs, "--out", str(out), "--range", "-1"], capsys, "--range")
    _refused([runs, "--out", str(out), "--dpi", "5"], capsys, "--dpi", "30 to 2400")
    assert not out.exists()
