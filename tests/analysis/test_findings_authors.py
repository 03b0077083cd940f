"""The findings on the paper's own networks (``model=authors``), on synthetic run folders with built-in answers.

A run of an authors' network records ``model_info`` with the authors' class and name; the run table takes its
study columns (family, width, depth, attention variant, training) from cem_lab's catalogue and marks it
``source=authors``. Each finding must take those networks by the columns, name them as the paper does, say
what the authors' zoo lacks (DN attention variants, a held-out record) and still reach its verdict where it can.
The real path (stand-ins through cem-lab and experiments/paper.py) is tests/project/test_paper_script.py (slow).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_findings import IMAGES, ROIS, _run

from cem_lab.analysis.finding_reports import finding_report
from cem_lab.analysis.finding_tables import NO_HELDOUT, FindingError
from cem_lab.analysis.runs import collect_runs
from cem_lab.models.authors import entry


def _authors_run(folder, name, task, image, roi, **kw):
    """A synthetic run folder of the authors' network ``name``: its summary records the authors' model_info."""
    _run(folder, name, task, image, roi, **kw)
    path = folder / "summary.json"
    summary = json.loads(path.read_text())
    summary["model_info"] = {
        "name": name,
        "loader": "cem_lab.models.authors",
        "authors_class": entry(name).authors_class,
    }
    path.write_text(json.dumps(summary))


def _finding(name, root, out):
    """The finding ``name`` of the runs under ``root`` (what cem-report --finding writes, without the study's
    own tables and figures)."""
    runs, skipped = collect_runs([root])
    assert not skipped
    return finding_report(name, runs, out)["verdict"]


def _each_unit(root, name, task, kw_of):
    for i, im in enumerate(IMAGES):
        for j, roi in enumerate(ROIS):
            _authors_run(root / f"{name}_{task}" / f"{i}_{j}", name, task, im, roi, **kw_of(i, j))


def test_the_run_table_takes_the_authors_study_columns_from_the_catalogue(tmp_path):
    _authors_run(tmp_path / "a", "EDSR-64-16", "sr", "im0", ROIS[0], near=2)
    _authors_run(tmp_path / "b", "RCAN_pooling2x2", "sr", "im0", ROIS[0], near=2)
    _authors_run(tmp_path / "c", "SwinIR_MIO", "dn", "im0", ROIS[0], near=2)
    _run(tmp_path / "d", "fsrcnn_d2_w16_x4", "sr", "im0", ROIS[0], near=2)
    _run(tmp_path / "e", "toy", "sr", "im0", ROIS[0], near=2)
    runs, _ = collect_runs([tmp_path])
    r = runs.set_index("model")
    assert dict(r["source"]) == {
        "EDSR-64-16": "authors",
        "RCAN_pooling2x2": "authors",
        "SwinIR_MIO": "authors",
        "fsrcnn_d2_w16_x4": "zoo",
        "toy": "other",
    }
    assert (r.loc["EDSR-64-16", "architecture"], r.loc["EDSR-64-16", "width"], r.loc["EDSR-64-16", "depth"]) == (
        "EDSR",
        64,
        16,
    )
    assert r.loc["RCAN_pooling2x2", "attention_variant"] == "adaptive2"
    assert r.loc["SwinIR_MIO", "training"] == "multi-in-one" and not r.loc["SwinIR_MIO", "zoo"]


def test_receptive_field_on_the_authors_families_reads_the_roi_psnr_in_place_of_the_held_out(tmp_path):
    rng = np.random.default_rng(4)
    for d in (2, 8, 16):  # reach grows with depth; the ROI PSNR falls with it
        _each_unit(
            tmp_path / "runs",
            f"FSRCNN-48-{d}",
            "sr",
            lambda i, j, d=d: {"near": {2: 3, 8: 15, 16: 40}[d], "psnr": 25 + 0.3 * i - 0.05 * d + rng.normal(0, 0.01)},
        )
    assert _finding("receptive_field", tmp_path / "runs", tmp_path / "rep") == "reproduced"
    text = (tmp_path / "rep" / "finding_receptive_field.md").read_text()
    assert "**Verdict: reproduced.**" in text and NO_HELDOUT in text and "the authors' zoo" in text
    assert "ROI PSNR (of the mapped units, paired by unit: it stands in for the held-out PSNR" in text
    per = pd.read_csv(tmp_path / "rep" / "finding_receptive_field_models.csv")
    assert list(per["model"]) == ["FSRCNN-48-2", "FSRCNN-48-8", "FSRCNN-48-16"] and list(per["depth"]) == [2, 8, 16]
    assert per["heldout_psnr_db"].isna().all()  # no record of these networks: NaN, never made up


def test_channel_attention_on_the_authors_variants_says_the_contrast_is_unavailable(tmp_path):
    for name, extra in (("RCAN_no_ca", 0), ("RCAN", 4), ("RCAN_pooling4", 0)):
        _each_unit(tmp_path / "runs", name, "sr", lambda i, j, extra=extra: {"near": 2 + (i + j) % 3 + extra + j})
    assert _finding("channel_attention", tmp_path / "runs", tmp_path / "rep") == "inconclusive"
    text = (tmp_path / "rep" / "finding_channel_attention.md").read_text()
    assert "**The SR - DN contrast is unavailable:**" in text and "Comparisons: 0;" in text
    con = pd.read_csv(tmp_path / "rep" / "finding_channel_attention_contrast.csv")
    assert set(con["variant"]) == {"global", "local4"} and set(con["reference"]) == {"none"}
    share = con[(con["variant"] == "global") & (con["metric"] == "share_positive")].iloc[0]
    assert share["sr_low"] > 0 and np.isnan(share["dn_mean"]) and np.isnan(share["contrast_low"])
    assert "| global | positive share |" in text and "| n/a | n/a |" in text


def test_multitask_pairs_the_authors_single_task_with_mix_and_mio_by_the_training_column(tmp_path):
    for task, single in (("sr", "SRResNet"), ("dn", "SRResNet_DN")):
        _each_unit(tmp_path / "runs", single, task, lambda i, j: {"near": 3 + (i + j) % 2, "far": 3, "value": 0.2})
        # the mixed network moves its effect to the ROI; the multi-in-one one only weakens it
        _each_unit(tmp_path / "runs", "SRResNet_mix", task, lambda i, j: {"near": 6 + (i + j) % 2, "value": 0.2})
        _each_unit(
            tmp_path / "runs",
            "SRResNet_MIO",
            task,
            lambda i, j: {"near": 3 + (i + j) % 2, "far": 3, "value": 0.1 + 0.01 * i},
        )
    assert _finding("multitask", tmp_path / "runs", tmp_path / "rep") == "reproduced"
    comp = pd.read_csv(tmp_path / "rep" / "finding_multitask_comparisons.csv")
    assert list(zip(comp["task"], comp["training"], comp["single"], comp["mixed"], comp["reading"])) == [
        ("sr", "mixed", "SRResNet", "SRResNet_mix", "more local"),
        ("sr", "multi-in-one", "SRResNet", "SRResNet_MIO", "weaker, not more local"),
        ("dn", "mixed", "SRResNet_DN", "SRResNet_mix", "more local"),
        ("dn", "multi-in-one", "SRResNet_DN", "SRResNet_MIO", "weaker, not more local"),
    ]
    assert comp["held-out PSNR gap (dB)"].isna().all()
    text = (tmp_path / "rep" / "finding_multitask.md").read_text()
    assert NO_HELDOUT in text and "SRResNet_mix" in text and "the authors' mixed network" in text


def test_runs_of_both_zoos_are_reported_apart(tmp_path):
    from cem_lab.analysis.finding_multitask import multitask_finding
    from cem_lab.analysis.findings import with_locality

    _authors_run(tmp_path / "a", "SRResNet", "sr", "im0", ROIS[0], near=2)
    _run(tmp_path / "b", "srresnet_mixed", "sr", "im0", ROIS[0], near=2)
    runs, _ = collect_runs([tmp_path])
    with pytest.raises(FindingError, match="both cem_lab's zoo and the authors' zoo"):
        multitask_finding(with_locality(runs), tmp_path / "o", tmp_path / "o" / "figures")
