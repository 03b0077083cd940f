"""experiments/paper.py goes through every path on random-weight stand-ins of the paper's networks: standins,
plan (present and missing checkpoints), a tiny run through cem-lab, and a report marked as stand-ins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "paper.py"


def _paper(args, root: Path):
    env = {**os.environ, "CEM_LAB_STUDY_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=SCRIPT.parent, capture_output=True, text=True, timeout=900, env=env
    )


@pytest.mark.slow
def test_standins_plan_tiny_run_and_a_report_marked_as_stand_ins(tmp_path):
    models = tmp_path / "models"
    names = ["--study", "receptive_field", "--names", "FSRCNN-16-6,EDSR-32-16"]
    p = _paper(["standins", "--models", str(models), *names], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(f.name for f in models.glob("*.pth")) == ["EDSR-32-16_15000.pth", "FSRCNN-16-6_15000.pth"]
    assert (models / "STAND-INS.txt").is_file()

    p = _paper(["plan", "--models", str(models), "--study", "receptive_field"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "(STAND-INS: random weights, paths only)" in p.stdout
    assert "FSRCNN-16-6        present" in p.stdout and "MISSING FSRCNN-32-6_15000.pth" in p.stdout

    p = _paper(["run", "--models", str(models), *names, "--tiny"], tmp_path)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
    maps = sorted((tmp_path / "runs" / "sweeps" / "cem" / "study_paper_rf_tiny").glob("*/cem.npz"))
    assert len(maps) == 2

    p = _paper(["report", "--study", "receptive_field", "--tiny"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    report = (tmp_path / "reports" / "paper_receptive_field_tiny" / "paper.md").read_text()
    assert "**STAND-INS: these maps are of random-weight networks" in report
    assert "FSRCNN-16-6" in report and "EDSR-32-16" in report
    assert list((tmp_path / "reports" / "paper_receptive_field_tiny" / "figures").glob("*.png"))
    assert not (tmp_path / "experiments").exists()  # stand-ins never reach experiments/results/


def test_an_unknown_name_is_refused_with_the_nearest(tmp_path):
    p = _paper(["plan", "--models", str(tmp_path), "--names", "EDSR-64-17"], tmp_path)
    assert p.returncode != 0 and "did you mean" in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]


def test_plan_on_a_device_this_machine_lacks_is_one_line(tmp_path):
    """Found in the README walk: `plan --measure --device cuda` on a machine without one printed "cannot run:
    RuntimeError: Found no NVIDIA driver" for each network and then "at most 0m00s on cuda" in all."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: --device cuda is not a mistake here")
    p = _paper(["plan", "--models", str(tmp_path), "--measure", "--device", "cuda"], tmp_path)
    assert p.returncode == 2 and p.stdout == "", (p.stdout, p.stderr)
    assert p.stderr.startswith("paper.py: --device cuda: this machine has no CUDA device") and p.stderr.count("\n") == 1


def test_run_takes_overrides_after_the_options_and_checks_the_device_first(tmp_path):
    """Found in the README walk: `paper.py run --models FOLDER device=cuda` (the README's line) ended in argparse's
    "unrecognized arguments: device=cuda"; and a device this machine lacks is refused before any sweep starts."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: device=cuda is not a mistake here")
    models = tmp_path / "models"
    assert _paper(["standins", "--models", str(models), "--names", "FSRCNN-48-2"], tmp_path).returncode == 0
    p = _paper(["run", "--models", str(models), "device=cuda", "--names", "FSRCNN-48-2"], tmp_path)
    assert p.returncode == 2 and "unrecognized arguments" not in p.stderr, p.stderr
    assert p.stderr.startswith("paper: error: device=cuda: this machine has no CUDA device"), p.stderr
    assert not (tmp_path / "runs").exists()


def _mprnet_dr_standin(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    p = _paper(["standins", "--models", str(models), "--study", "demo", "--names", "MPRNet_DR"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert [f.name for f in models.glob("*.pth")] == ["MPRNet_deraining.pth"]
    return models


def test_the_demo_plan_lists_mprnet_dr_as_present_with_its_licence(tmp_path):
    pytest.importorskip("spandrel_extra_arches")  # the extra-arches extra builds MPRNet_DR
    models = _mprnet_dr_standin(tmp_path)
    p = _paper(["plan", "--models", str(models), "--study", "demo", "--names", "MPRNet_DR"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    line = next(ln for ln in p.stdout.splitlines() if "MPRNet_DR" in ln)
    assert "present    3,637,249 parameters" in line and "non-commercial" in line  # not "not loadable here"


@pytest.mark.slow
def test_a_tiny_demo_run_maps_mprnet_dr(tmp_path):
    pytest.importorskip("spandrel_extra_arches")
    models = _mprnet_dr_standin(tmp_path)
    p = _paper(["run", "--models", str(models), "--study", "demo", "--names", "MPRNet_DR", "--tiny"], tmp_path)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
    maps = list((tmp_path / "runs" / "sweeps" / "cem" / "study_paper_demo_dr_tiny").glob("*/cem.npz"))
    assert len(maps) == 1


# ----------------------------------------------------------------------------- the three findings on stand-ins
#: a subset of each finding's networks: 3 FSRCNN + 3 EDSR (a depth and a width comparison in each family),
#: every RCAN attention variant, SRResNet single-task on SR and DN with *_mix and *_MIO
RF_NAMES = "FSRCNN-48-2,FSRCNN-48-12,FSRCNN-16-6,EDSR-64-10,EDSR-64-16,EDSR-32-16"
MT_NAMES = "SRResNet,SRResNet_DN,SRResNet_mix,SRResNet_MIO"


@pytest.fixture(scope="module")
def finding_reports(tmp_path_factory) -> Path:
    """Stand-ins, tiny runs of the three studies through cem-lab, and their reports (once for the module)."""
    root = tmp_path_factory.mktemp("paper_findings")
    models = root / "models"
    ca = "RCAN,RCAN_half_ca,RCAN_no_ca,RCAN_pooling4,RCAN_pooling16,RCAN_pooling2x2,RCAN_pooling3x3"
    for args in (
        ["standins", "--models", str(models), "--names", f"{RF_NAMES},{ca},{MT_NAMES}"],
        ["run", "--tiny", "--models", str(models), "--study", "channel_attention"],
        ["run", "--tiny", "--models", str(models), "--study", "receptive_field", "--names", RF_NAMES],
        ["run", "--tiny", "--models", str(models), "--study", "multitask", "--names", MT_NAMES],
        ["report", "--tiny"],
    ):
        p = _paper(args, root)
        assert p.returncode == 0, (args, p.stdout[-2000:], p.stderr[-3000:])
    return root / "reports"


def _finding_page(reports: Path, study: str) -> str:
    text = (reports / f"paper_{study}_tiny" / f"finding_{study}.md").read_text()
    assert text.startswith("> **STAND-INS: these maps are of random-weight networks"), text[:300]
    assert "**Verdict: " in text and "Study networks: the authors' zoo" in text
    paper = (reports / f"paper_{study}_tiny" / "paper.md").read_text()
    assert paper.count("**STAND-INS:") == 1 and text.split("\n", 2)[2][:200] in paper  # the finding leads paper.md
    return text


@pytest.mark.slow
def test_the_receptive_field_finding_on_the_authors_families(finding_reports):
    from cem_lab.analysis.finding_tables import NO_HELDOUT

    text = _finding_page(finding_reports, "receptive_field")
    assert "## Finding 1" in text and NO_HELDOUT in text
    per = pd.read_csv(finding_reports / "paper_receptive_field_tiny" / "finding_receptive_field_models.csv")
    assert set(per["model"]) == set(RF_NAMES.split(",")) and set(per["architecture"]) == {"FSRCNN", "EDSR"}
    assert per["heldout_psnr_db"].isna().all()
    paired = pd.read_csv(finding_reports / "paper_receptive_field_tiny" / "finding_receptive_field_paired.csv")
    assert {(a, b) for a, b in zip(paired["a"], paired["b"])} == {
        ("FSRCNN-48-2", "FSRCNN-48-12"),
        ("EDSR-64-10", "EDSR-64-16"),
        ("EDSR-32-16", "EDSR-64-16"),
    }
    assert (finding_reports / "paper_receptive_field_tiny" / "figures" / "finding_rf_trends.png").is_file()


@pytest.mark.slow
def test_the_channel_attention_finding_says_the_sr_dn_contrast_is_unavailable(finding_reports):
    text = _finding_page(finding_reports, "channel_attention")
    assert "## Finding 2" in text and "**The SR - DN contrast is unavailable:**" in text
    folder = finding_reports / "paper_channel_attention_tiny"
    con = pd.read_csv(folder / "finding_channel_attention_contrast.csv")
    assert set(con["variant"]) == {"global", "half", "local4", "local16", "adaptive2", "adaptive3"}
    assert con["dn_mean"].isna().all() and con["sr_mean"].notna().all()
    per = pd.read_csv(folder / "finding_channel_attention_models.csv")
    assert dict(zip(per["model"], per["variant"])) == {
        "RCAN": "global",
        "RCAN_half_ca": "half",
        "RCAN_no_ca": "none",
        "RCAN_pooling4": "local4",
        "RCAN_pooling16": "local16",
        "RCAN_pooling2x2": "adaptive2",
        "RCAN_pooling3x3": "adaptive3",
    }
    assert set(per["task"]) == {"sr"} and (folder / "figures" / "finding_ca_contrast.png").is_file()


@pytest.mark.slow
def test_the_multitask_finding_pairs_single_task_with_mix_and_mio(finding_reports):
    text = _finding_page(finding_reports, "multitask")
    assert "## Finding 3" in text and "held-out PSNR cells are NaN" in text
    comp = pd.read_csv(finding_reports / "paper_multitask_tiny" / "finding_multitask_comparisons.csv")
    assert list(zip(comp["task"], comp["family"], comp["training"], comp["single"], comp["mixed"])) == [
        ("sr", "SRResNet", "mixed", "SRResNet", "SRResNet_mix"),
        ("sr", "SRResNet", "multi-in-one", "SRResNet", "SRResNet_MIO"),
        ("dn", "SRResNet", "mixed", "SRResNet_DN", "SRResNet_mix"),
        ("dn", "SRResNet", "multi-in-one", "SRResNet_DN", "SRResNet_MIO"),
    ]
    assert comp["held-out PSNR gap (dB)"].isna().all()
