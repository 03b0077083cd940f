"""experiments/paper.py goes through every path on random-weight stand-ins of the paper's networks: standins,
plan (present and missing checkpoints), a tiny run through cem-lab, and a report marked as stand-ins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
