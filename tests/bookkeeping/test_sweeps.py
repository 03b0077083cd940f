"""Multiruns (`cem-lab -m`): folders, skipping and resuming, failures, W&B logging, launchers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from PIL import Image

from cem_lab.bookkeeping import sweep_record as sw
from cem_lab.bookkeeping.sweep_record import record_error
from cem_lab.bookkeeping.wandb_logging import TABLE_COLUMNS, _has_api_key, resolve_mode
from cem_lab.cli.cem import execute, run
from cem_lab.compose.devices import gpu_lease


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


needs_wandb = pytest.mark.skipif(not _has("wandb"), reason="wandb is not installed (cem_lab[wandb])")
needs_joblib = pytest.mark.skipif(
    not _has("hydra_plugins.hydra_joblib_launcher"), reason="hydra-joblib-launcher is not installed"
)
needs_submitit = pytest.mark.skipif(
    not _has("hydra_plugins.hydra_submitit_launcher"), reason="hydra-submitit-launcher is not installed"
)

SMALL = [
    "model=custom",
    "model.net._target_=cem_lab.models.DnCNN",
    "+model.net.features=8",
    "+model.net.depth=3",
    "image=img.png",
    "roi=[16,16,16]",
    "cem.fine=2",
    "patches.count=300",
    "progress=false",
    "batch_size=8",
    "figures=false",
]
GRID = ["seed=0,1", "cem.sampler=uniform,stratified"]
FIGURES = {"cem_panel", "cem_overlay", "pie", "colorbar", "restored_roi"}


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WANDB_API_KEY", "WANDB_MODE", sw.SWEEP_ENV, "CEM_LAB_TEST_INTERRUPT")
    }
    env.update(extra)
    return env


def _cem(args, cwd, **env):
    return subprocess.run(
        [sys.executable, "-m", "cem_lab.cli.cem", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(**env),
        check=False,
    )


def _sweep_dir(cwd: Path, name: str) -> Path:
    return cwd / "runs" / "sweeps" / "cem" / name


def _jobs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _summary(folder: Path) -> dict:
    return json.loads((folder / sw.SUMMARY_FILE).read_text())


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _assert_same_results(a: Path, b: Path) -> None:
    """Every job folder of sweep ``a`` has the same cem.npz arrays as the same job in ``b``."""
    names = [p.name for p in _jobs(a)]
    assert names == [p.name for p in _jobs(b)] and names
    for name in names:
        x, y = _arrays(a / name / "cem.npz"), _arrays(b / name / "cem.npz")
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"{name}: {k}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    from skimage import data

    cwd = tmp_path_factory.mktemp("sweeps")
    Image.fromarray(np.ascontiguousarray(data.astronaut()[100:148, 200:248])).save(cwd / "img.png")
    return cwd


@pytest.fixture(scope="module")
def clean_sweep(workdir):
    """A finished 2x2 sweep: (its folder, the process)."""
    p = _cem(["-m", *SMALL, *GRID], workdir)
    assert p.returncode == 0, p.stderr[-3000:]
    return _sweep_dir(workdir, sw.sweep_name(SMALL + GRID)), p


# --- names and counts (no model) -----------------------------------------------------------------
def test_sweep_names_are_stable_and_readable():
    a = sw.sweep_name(["task=dn,dr", "seed=0,1", "image=/data/x.png", "progress=false"])
    b = sw.sweep_name(["image=/data/x.png", "seed=0,1", "task=dn,dr"])
    assert a == b and a.startswith("seed=0,1,task=dn,dr-") and "/" not in a
    assert sw.sweep_name(["seed=0,1", "task=dn,dr"]) == "seed=0,1,task=dn,dr"
    assert sw.sweep_name([]) == sw.sweep_name(["device=cuda", "launcher=joblib"]) == "default"
    assert sw.sweep_name(["seed=0,1", "image=a.png"]) != sw.sweep_name(["seed=0,1", "image=b.png"])
    assert sw.sweep_name(["experiment=receptive_field"]) == "experiment=receptive_field"
    assert sw.sweep_name(["experiment=ablation_block", "seed=1"]) == "experiment=ablation_block,seed=1"
    assert sw.resolve_sweep_name("my sweep") == "my_sweep"


def test_job_count_follows_the_basic_sweeper():
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="cem_lab.conf", version_base="1.3"):
        hydra_cfg = compose(config_name="cem", return_hydra_config=True).hydra
    cfg = OmegaConf.create(
        {
            "hydra": {
                "sweeper": OmegaConf.to_container(hydra_cfg.sweeper),
                "overrides": {"task": ["seed=0,1,2", "task=dn,dr", "roi=[1,2,3]", "cem.fine=range(2,6)"]},
            }
        }
    )
    assert sw.count_jobs(cfg) == 3 * 2 * 4
    cfg.hydra.sweeper.params = {"cem.tol": "0.01,0.1"}
    assert sw.count_jobs(cfg) == 3 * 2 * 4 * 2


def test_wandb_mode_is_offline_without_a_key(monkeypatch):
    import cem_lab.bookkeeping.wandb_logging as wl

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setattr(wl, "_has_api_key", lambda: False)
    assert resolve_mode(None) == "offline"
    assert resolve_mode("disabled") == "disabled"
    monkeypatch.setattr(wl, "_has_api_key", lambda: True)
    assert resolve_mode(None) is None  # online
    monkeypatch.setattr(wl, "_has_api_key", lambda: False)
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_mode(None) is None  # wandb reads WANDB_MODE itself


def test_free_gpu_leases_are_exclusive(tmp_path):
    keys = ["gpu-a", "gpu-b"]
    with gpu_lease(keys, tmp_path) as first, gpu_lease(keys, tmp_path) as second:
        assert {first, second} == {0, 1}
        with pytest.raises(TimeoutError), gpu_lease(keys, tmp_path, poll_s=0.01, timeout_s=0.05):
            pass
    with gpu_lease(keys, tmp_path) as again:  # released
        assert again == 0


def test_error_file_starts_with_the_message(tmp_path):
    try:
        raise ValueError("ROI lies outside\nmore detail")
    except ValueError as err:
        line = record_error(tmp_path, err, user_error=False)
    text = (tmp_path / "error.txt").read_text()
    assert line == "ValueError: ROI lies outside" and text.splitlines()[0] == line
    assert "more detail" in text and "Traceback" in text


# --- reuse of finished folders (in-process) ------------------------------------------------------
def test_finished_runs_are_reused_and_foreign_folders_refused(workdir, tmp_path):
    from cem_lab.causal.errors import RunFolderError

    def cfg(*extra):
        with initialize_config_module(config_module="cem_lab.conf", version_base="1.3"):
            return compose(
                config_name="cem", overrides=SMALL[:4] + [f"image={workdir / 'img.png'}"] + SMALL[5:] + list(extra)
            )

    folder = tmp_path / "run"
    assert execute(cfg(), folder)["status"] == "done"
    again = execute(cfg("batch_size=4", "progress=true"), folder)  # same result: reused at once
    assert again["status"] == "skipped" and again["forward_passes"] == 0
    with pytest.raises(RunFolderError, match="other settings"):
        run(cfg("seed=5"), folder)
    import yaml

    assert yaml.safe_load((folder / "config.yaml").read_text())["seed"] == 0  # still the folder's own


# --- sweeps (subprocesses) -----------------------------------------------------------------------
def test_multirun_writes_one_folder_per_job(clean_sweep, workdir):
    folder, p = clean_sweep
    assert [d.name for d in (workdir / "runs" / "sweeps" / "cem").iterdir()] == [folder.name]
    jobs = _jobs(folder)
    assert len(jobs) == 4 and all((j / "cem.npz").is_file() and (j / "done.json").is_file() for j in jobs)
    assert len({j.name for j in jobs}) == 4
    s = _summary(folder)
    assert (s["jobs"], s["done"], s["skipped"], s["failed"]) == (4, 4, 0, 0)
    assert "job 4/4" in p.stdout + p.stderr and "remaining 0" in p.stdout + p.stderr
    assert "remaining 1, about " in p.stdout + p.stderr and " left at this sweep's pace" in p.stdout + p.stderr
    assert any(np.abs(_arrays(j / "cem.npz")["effect_raw"]).max() > 0 for j in jobs)  # not a trivial map


def test_a_resumed_sweeps_pace_counts_the_time_of_the_jobs_that_worked_not_of_those_it_skipped():
    """A resumed sweep first confirms its finished jobs (seconds each, no map): timed from the sweep's start,
    457 skipped jobs and 3 maps read as 13 hours left where 3 were. Side-by-side jobs share their wall time."""
    from cem_lab.bookkeeping.sweep_record import _pace

    skipped = {i: {"status": "skipped", "started_s": 1.0 * i, "ended_s": 1.0 * i + 0.9} for i in range(400)}
    worked = {  # two workers from t = 1000 s: 10 s maps, overlapping in pairs
        400: {"status": "done", "started_s": 1000.0, "ended_s": 1010.0},
        401: {"status": "done", "started_s": 1005.0, "ended_s": 1015.0},
        402: {"status": "resumed", "started_s": 1015.0, "ended_s": 1025.0},
        403: {"status": "failed", "started_s": 1016.0, "ended_s": 1024.0},
    }
    assert _pace(skipped) is None  # nothing worked yet: no rate to give
    assert _pace({**skipped, **worked}) == pytest.approx(25.0 / 4)  # 1000..1025 covered, 4 jobs
    assert _pace({**worked, 404: {"status": "done"}}) == pytest.approx(25.0 / 4)  # a record without times (older)


def test_rerun_skips_finished_jobs(clean_sweep, workdir):
    folder, _ = clean_sweep
    stamps = {j: ((j / "summary.json").stat().st_mtime_ns, (j / "cem.npz").stat().st_mtime_ns) for j in _jobs(folder)}
    p = _cem(["-m", *GRID[::-1], *SMALL[::-1]], workdir)  # same sweep, other order
    assert p.returncode == 0, p.stderr[-3000:]
    s = _summary(folder)
    assert (s["jobs"], s["done"], s["skipped"], s["failed"]) == (4, 0, 4, 0)
    assert all(job["forward_passes"] == 0 for job in s["job_list"])
    assert stamps == {
        j: ((j / "summary.json").stat().st_mtime_ns, (j / "cem.npz").stat().st_mtime_ns) for j in _jobs(folder)
    }


def test_interrupted_sweep_resumes_to_the_same_results(clean_sweep, workdir):
    folder, _ = clean_sweep
    args = ["-m", *SMALL, *GRID, "sweep_name=interrupted"]
    stopped = _cem(args, workdir, CEM_LAB_TEST_INTERRUPT="2:2")  # Ctrl-C in the 3rd job's 2nd batch
    assert stopped.returncode == 130 and "cem-lab: interrupted" in stopped.stderr and "Traceback" not in stopped.stderr
    target = _sweep_dir(workdir, "interrupted")
    jobs = _jobs(target)
    finished = [j for j in jobs if (j / "cem.npz").is_file()]
    partial = [j for j in jobs if not (j / "cem.npz").is_file()]
    assert len(finished) == 2 and len(partial) == 1
    with np.load(partial[0] / "state.npz") as z:
        assert not bool(z["complete"])
    # resumed in parallel where the joblib launcher is installed: the launcher is not part of the names
    parallel = ["launcher=joblib"] if _has("hydra_plugins.hydra_joblib_launcher") else []
    resumed = _cem(args + parallel, workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    s = _summary(target)
    assert (s["jobs"], s["skipped"], s["resumed"], s["done"], s["failed"]) == (4, 2, 1, 2, 0)
    _assert_same_results(target, folder)


def test_a_sweep_in_batches_gives_the_same_folders_and_one_summary(clean_sweep, workdir):
    """``hydra.sweeper.max_batch_size`` (the study runner's local runs use it, so that the first map starts
    without Hydra composing every job first) launches the jobs batch after batch: the same folders and maps,
    and one summary of all the jobs."""
    folder, _ = clean_sweep
    p = _cem(["-m", *SMALL, *GRID, "hydra.sweeper.max_batch_size=3", "sweep_name=batches"], workdir)
    assert p.returncode == 0, p.stderr[-3000:]
    target = _sweep_dir(workdir, "batches")
    s = _summary(target)
    assert (s["jobs"], s["done"], s["failed"], s["missing"]) == (4, 4, 0, 0), s
    _assert_same_results(target, folder)


def test_a_failing_job_does_not_stop_the_sweep(workdir):
    args = ["-m", *[a for a in SMALL if not a.startswith("roi=")], "roi=[16,16,16],[40,40,16]", "sweep_name=failing"]
    p = _cem(args, workdir)
    assert p.returncode == 1  # some job failed
    assert "FAILED job 2" in p.stdout and "outside" in p.stdout
    folder = _sweep_dir(workdir, "failing")
    s = _summary(folder)
    assert (s["jobs"], s["done"], s["failed"]) == (2, 1, 1)
    failure = s["failures"][0]
    assert "outside" in failure["error"] and "roi=[40,40,16]" in failure["overrides"]
    bad = Path(failure["folder"])
    assert (bad / "error.txt").read_text().splitlines()[0] == failure["error"]
    assert not (bad / "cem.npz").exists()
    good = [j for j in _jobs(folder) if j != bad]
    assert len(good) == 1 and (good[0] / "cem.npz").is_file()


@needs_wandb
@pytest.mark.slow  # 9 s: W&B is an optional extra
def test_wandb_offline_run_holds_figures_and_table(workdir, tmp_path):
    mode = ["logger.mode=offline"] if _has_api_key() else []  # else chosen automatically: no key
    args = ["-m", *[a for a in SMALL if a != "figures=false"], "sweep_name=wb", "logger=wandb", *mode]
    p = _cem(args, workdir, WANDB_CONFIG_DIR=str(tmp_path), WANDB_CACHE_DIR=str(tmp_path), WANDB_DATA_DIR=str(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:]
    (job,) = _jobs(_sweep_dir(workdir, "wb"))
    marker = json.loads((job / "wandb.json").read_text())
    assert marker["offline"] and marker["group"] == "wb"
    (run_dir,) = (job / "wandb").glob("offline-run-*")
    images = {f.name.split("_0_")[0] for f in (run_dir / "files" / "media" / "images" / "figures").glob("*.png")}
    assert images == FIGURES == {f.stem for f in (job / "figures").glob("*.png")}
    (table,) = (run_dir / "files" / "media" / "table").glob("cem_blocks*.table.json")
    t = json.loads(table.read_text())
    assert t["columns"] == TABLE_COLUMNS and len(t["data"]) == 36
    assert sum(row[TABLE_COLUMNS.index("roi")] for row in t["data"]) == 4


@pytest.mark.slow  # the default suite resumes a sweep with joblib (above)
@needs_joblib
def test_joblib_launcher_gives_the_same_folders(clean_sweep, workdir):
    folder, _ = clean_sweep
    p = _cem(["-m", *SMALL, *GRID, "launcher=joblib", "sweep_name=joblib"], workdir)
    assert p.returncode == 0, p.stderr[-3000:]
    target = _sweep_dir(workdir, "joblib")
    assert _summary(target)["done"] == 4
    _assert_same_results(target, folder)


@pytest.mark.slow
@needs_submitit
def test_submitit_local_launcher(workdir):
    p = _cem(["-m", *SMALL, "seed=0,1", "launcher=submitit_local", "sweep_name=submitit"], workdir)
    assert p.returncode == 0, p.stderr[-3000:]
    folder = _sweep_dir(workdir, "submitit")
    jobs = _jobs(folder)
    assert len(jobs) == 2 and all((j / "cem.npz").is_file() for j in jobs)
    assert _summary(folder)["done"] == 2 and (folder / ".submitit").is_dir()
