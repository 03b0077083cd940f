"""The three study scripts say what they will run, and how long it takes here, before running anything."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "study,maps,sweeps", [("receptive_field", 1170, 3), ("channel_attention", 672, 2), ("multitask", 864, 3)]
)
def test_plan_lists_the_jobs_and_the_time(study, maps, sweeps):
    out = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / f"{study}.py"), "plan"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith(f"{study}: {maps} maps in {sweeps} sweeps")
    assert len(re.findall(r"^  study_\w+ +\d+ maps .*cem-lab -m ", out, flags=re.M)) == sweeps
    assert re.search(r"estimated here \(2 CPU cores, 2 jobs at once\): \S+ in all, \S+ left", out)
    # every sweep runs the paper's estimator over the held-out population: the six pictures x four crops x two
    # ROIs (48 units), or for the receptive-field study's real networks the first population (6 units)
    assert f"{maps} maps in {sweeps} sweeps (6 held-out images x 4 crops of 128 px x 2 placed ROIs = 48 units" in out
    for line in out.splitlines()[1 : 1 + sweeps]:
        assert "cem=coarse_to_fine" in line and "roi=placed" in line
        if "_48u " in line:
            assert (
                "standard.name=monarch,barbara,kodim23,sail,tulips,ascent image_crop=128 image_crop_cell=0,1,2,3"
                in line
            )
            assert "recompute=incremental" in line
        else:
            assert "study_rf_real" in line and "standard.name=monarch,barbara,kodim23 image_crop=128 roi=placed" in line


def test_the_rrdb_networks_are_planned_only_when_asked():
    out = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "receptive_field.py"), "plan", "--with-rrdb"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "study_rf_real_rrdb" in out and out.startswith("receptive_field: 1182 maps in 4 sweeps")


def test_a_local_run_starts_its_first_map_without_composing_every_job_first(monkeypatch):
    """Hydra composes and checks every job of a batch before the batch's first job starts: the receptive-field
    study's 1152 jobs in one batch were five minutes without a map. A local run gives Hydra batches of one
    model's units; a run handed to another launcher (a cluster's) is left whole."""
    from types import SimpleNamespace

    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    import study_runner

    calls = []
    monkeypatch.setattr(
        study_runner.subprocess, "run", lambda cmd, cwd: calls.append(cmd) or SimpleNamespace(returncode=0)
    )
    sweeps = [study_runner.Sweep("study_test_batches", ["edsr_d2_w8_x4"], ["model=zoo"], {"*": 1.0})]
    assert study_runner.run("test", sweeps) == 0
    assert f"hydra.sweeper.max_batch_size={study_runner.UNITS}" in calls[0] and "launcher=joblib" in calls[0]
    assert study_runner.run("test", sweeps, ["launcher=slurm"]) == 0
    assert not any(a.startswith("hydra.sweeper.max_batch_size") for a in calls[1])


def test_an_interrupted_run_says_where_it_stopped_in_one_line(monkeypatch, capsys):
    """Ctrl-C reaches the study runner too, while cem-lab saves its sweep: one line and the status of an interrupt,
    not a traceback."""
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    import study_runner

    def interrupted(cmd, cwd):
        raise KeyboardInterrupt

    monkeypatch.setattr(study_runner.subprocess, "run", interrupted)
    sweeps = [study_runner.Sweep("study_test_interrupt", ["edsr_d2_w8_x4"], ["model=zoo"], {"*": 1.0})]
    assert study_runner.run("test", sweeps) == 130
    err = capsys.readouterr().err
    assert err.strip() == (
        "test: interrupted in sweep 1/1 (study_test_interrupt); finished maps are kept: run the same command again to "
        "resume"
    )


def test_a_resumed_studys_eta_counts_the_maps_left_at_the_pace_of_the_maps_it_made(monkeypatch, capsys, tmp_path):
    """A resumed study skips its finished maps in seconds: its ETA counts only the maps left, and its pace is
    the time of the maps this run made against their estimate (a finished sweep is not work done)."""
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    import study_runner

    monkeypatch.setattr(study_runner, "SWEEPS", tmp_path)
    done = study_runner.Sweep("study_test_done", ["m"], ["model=zoo"], {"*": 100.0}, units=4)
    half = study_runner.Sweep("study_test_half", ["m"], ["model=zoo"], {"*": 100.0}, units=4)
    fresh = study_runner.Sweep("study_test_fresh", ["m"], ["model=zoo"], {"*": 100.0}, units=4)
    for s, n in ((done, 4), (half, 2)):
        for k in range(n):
            (tmp_path / s.name / f"job{k}").mkdir(parents=True)
            (tmp_path / s.name / f"job{k}" / "done.json").write_text("{}")
    clock = iter([0.0, 0.0, 0.0, 100.0, 200.0])  # the start, before each sweep, the end

    def make(cmd, cwd):  # the half-done sweep finishes its 2 maps (100 s of wall time here)
        name = next(a.split("=", 1)[1] for a in cmd if a.startswith("sweep_name="))
        for k in range(4):
            (tmp_path / name / f"job{k}").mkdir(parents=True, exist_ok=True)
            (tmp_path / name / f"job{k}" / "done.json").write_text("{}")
        from types import SimpleNamespace

        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(study_runner.subprocess, "run", make)
    monkeypatch.setattr(study_runner.time, "perf_counter", lambda: next(clock))
    assert study_runner.run("test", [done, half, fresh], parallel=2) == 0
    out = capsys.readouterr().out
    assert "estimated here (2 CPU cores, 2 jobs at once): 10m00s in all, 5m00s left" in out
    lines = [line for line in out.splitlines() if line.startswith("[test ")]
    # before anything ran: the 6 maps left (600 s of estimate) at the stated 2 jobs at once
    assert lines[0].endswith("ETA 5m00s")
    # the finished sweep made no map: still no pace of its own
    assert lines[1].endswith("ETA 5m00s")
    # 2 maps (200 s of estimate) took 100 s: 4 maps left at that pace
    assert lines[2].endswith("ETA 3m20s")
