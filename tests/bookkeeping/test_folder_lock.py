"""One writer per run folder: the lock itself, and two CLI runs started into one folder at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cem_lab.folder_lock import LOCK_FILE, FolderBusyError, folder_holder, hold_run_folder, holds, lend_to_child

# a child process that holds a folder's lock until it is killed
HOLDER = """
import sys, time
from cem_lab.folder_lock import hold_run_folder
with hold_run_folder(sys.argv[1], what="test holder", command="holder"):
    print("held", flush=True)
    time.sleep(600)
"""


def _start_holder(folder: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def _snapshot(folder: Path) -> dict:
    return {
        str(f.relative_to(folder)): (f.read_bytes(), f.stat().st_mtime_ns)
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


def test_a_folder_held_by_another_process_is_refused_untouched(tmp_path):
    folder = tmp_path / "run"
    holder = _start_holder(folder)
    try:
        (folder / "cem.log").write_text("the holder's log\n")
        before = _snapshot(folder)
        with pytest.raises(FolderBusyError, match=rf"in use by test holder \(pid {holder.pid} on .*\): holder"):
            with hold_run_folder(folder):
                pass
        assert _snapshot(folder) == before
        assert folder_holder(folder)["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holders_lock_is_taken_over_and_named(tmp_path, caplog):
    folder = tmp_path / "run"
    holder = _start_holder(folder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert folder_holder(folder) is None  # the operating system dropped the lock
    with caplog.at_level("WARNING", logger="cem_lab"):
        with hold_run_folder(folder) as lock:
            assert lock.previous_holder["pid"] == holder.pid
    assert f"pid {holder.pid}" in caplog.text and "taken over" in caplog.text
    # a clean release names no holder: the next one takes the folder over silently
    with hold_run_folder(folder) as lock:
        assert lock.previous_holder is None


def test_the_lock_is_reentrant_in_one_process_and_released_at_the_end(tmp_path):
    folder = tmp_path / "run"
    with hold_run_folder(folder):
        with hold_run_folder(folder):
            assert holds(folder)
        assert holds(folder)
    assert not holds(folder)
    assert (folder / LOCK_FILE).read_text() == ""


def test_a_refused_run_removes_the_folder_it_made_and_nothing_else(tmp_path):
    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError):
        with hold_run_folder(fresh):
            raise ValueError("bad input")
    assert not fresh.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "cem.npz").write_bytes(b"an earlier run")
    with pytest.raises(ValueError):
        with hold_run_folder(kept):
            raise ValueError("bad input")
    assert (kept / "cem.npz").read_bytes() == b"an earlier run"


def test_a_folder_can_be_lent_to_a_child_process(tmp_path):
    folder = tmp_path / "run"
    child = (
        "import sys\nfrom cem_lab.folder_lock import hold_run_folder\n"
        "with hold_run_folder(sys.argv[1]):\n    print('ok')\n"
    )
    with hold_run_folder(folder):
        refused = subprocess.run([sys.executable, "-c", child, str(folder)], capture_output=True, text=True)
        assert refused.returncode != 0 and "FolderBusyError" in refused.stderr
        lent = subprocess.run(
            [sys.executable, "-c", child, str(folder)], capture_output=True, text=True, env=lend_to_child(folder)
        )
        assert lent.returncode == 0 and lent.stdout.strip() == "ok", lent.stderr


# ----------------------------------------------------------------------------- the CLI
TINY = [
    "model=custom",
    "model.net._target_=cem_lab.models.DnCNN",
    "+model.net.features=8",
    "+model.net.depth=3",
    "roi=[16,16,16]",
    "cem=exhaustive",
    "cem.samples=2",
    "cem.block=16",
    "patches.count=300",
    "patches.patch_size=16",
    "progress=false",
    "figures=false",
]


@pytest.fixture
def image_file(tmp_path, clean_image):
    path = tmp_path / "img.png"
    Image.fromarray(clean_image).save(path)
    return path


def _cem(args, cwd, **env):
    return subprocess.Popen(
        [sys.executable, "-m", "cem_lab.cli.cem", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def _finish(p, timeout=300):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def _folder_seed(folder: Path) -> set:
    """Every record of the seed a run folder holds: they must all agree."""
    import yaml

    seeds = {
        yaml.safe_load((folder / "config.yaml").read_text())["seed"],
        yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())["seed"],
        json.loads((folder / "summary.json").read_text())["settings"]["seed"],
        json.loads((folder / "done.json").read_text())["config"]["seed"],
    }
    overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
    seeds |= {int(o.split("=")[1]) for o in overrides if o.startswith("seed=")}
    with np.load(folder / "state.npz") as z:
        assert str(z["fingerprint"]) == json.loads((folder / "summary.json").read_text())["fingerprint"]
    return seeds


def test_two_runs_started_into_one_folder_at_once(tmp_path, image_file):
    """3 times (30 with -m slow): two runs with different seeds start at the same moment into one folder;
    one runs, the other is refused naming the winner, and the folder is exactly the winner's run."""
    _race_into_one_folder(tmp_path, image_file, 3)


@pytest.mark.slow
def test_thirty_races_into_one_folder(tmp_path, image_file):
    _race_into_one_folder(tmp_path, image_file, 30)


def _race_into_one_folder(tmp_path, image_file, races: int):
    ref = {}
    for seed in (0, 1):  # the maps each seed gives alone
        code, _, err = _finish(
            _cem(TINY + [f"image={image_file}", f"seed={seed}", f"hydra.run.dir={tmp_path / f'ref{seed}'}"], tmp_path)
        )
        assert code == 0, err
        ref[seed] = np.load(tmp_path / f"ref{seed}" / "cem.npz")["effect_raw"]
    assert not np.array_equal(ref[0], ref[1])
    for i in range(races):
        folder, gate = tmp_path / f"race{i}", tmp_path / f"gate{i}"
        procs = {
            seed: _cem(
                TINY + [f"image={image_file}", f"seed={seed}", f"hydra.run.dir={folder}"],
                tmp_path,
                CEM_LAB_TEST_START_GATE=str(gate),
            )
            for seed in (0, 1)
        }
        deadline = time.time() + 120
        while len(list(tmp_path.glob(f"gate{i}.*.ready"))) < 2:  # both wait at the gate: open it
            assert time.time() < deadline and all(p.poll() is None for p in procs.values())
            time.sleep(0.01)
        gate.touch()
        done = {seed: _finish(p) for seed, p in procs.items()}
        winners = [s for s, (code, _, _) in done.items() if code == 0]
        assert len(winners) == 1, {s: (c, e[-500:]) for s, (c, _, e) in done.items()}
        win, lose = winners[0], 1 - winners[0]
        code, out, err = done[lose]
        assert code == 2 and err.startswith("cem-lab: error: the run folder") and "Traceback" not in err
        assert f"in use by cem-lab (pid {procs[win].pid} on" in err and f"seed={win}" in err
        assert _folder_seed(folder) == {win}
        np.testing.assert_array_equal(np.load(folder / "cem.npz")["effect_raw"], ref[win])
        assert (folder / "cem.log").read_text().count("running on a") == 1  # one run's log lines
        assert not (folder / "error.txt").exists()


def test_a_killed_run_is_taken_over_and_resumed_to_the_uninterrupted_map(tmp_path, image_file):
    args = TINY[:6] + ["cem.samples=6"] + TINY[7:] + [f"image={image_file}", "checkpoint.every_items=1", "batch_size=4"]
    code, _, err = _finish(_cem(args + [f"hydra.run.dir={tmp_path / 'whole'}"], tmp_path))
    assert code == 0, err
    folder = tmp_path / "killed"
    victim = _cem(args + [f"hydra.run.dir={folder}"], tmp_path, CEM_LAB_TEST_INTERRUPT="5:hang")
    deadline = time.time() + 120
    while "hanging after" not in (line := victim.stderr.readline()):
        assert line and time.time() < deadline, "the run did not reach its 5th batch"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    with np.load(folder / "state.npz") as z:
        assert not bool(z["complete"]) and int(z["done_items"]) > 0
    code, out, err = _finish(_cem(args + [f"hydra.run.dir={folder}"], tmp_path))
    assert code == 0, err
    assert f"pid {victim.pid}" in out and "taken over" in out
    assert f"pid {victim.pid}" in (folder / "cem.log").read_text()
    summary = json.loads((folder / "summary.json").read_text())
    assert any("resumed from a checkpoint" in n for n in summary["notes"])
    whole, resumed = np.load(tmp_path / "whole" / "cem.npz"), np.load(folder / "cem.npz")
    for key in ("effect_raw", "stderr", "counts", "classification"):
        np.testing.assert_array_equal(resumed[key], whole[key])


def test_a_sweep_folder_and_a_training_folder_are_single_writer_too(tmp_path):
    sweep, train = tmp_path / "sweep", tmp_path / "train"
    holders = [_start_holder(sweep), _start_holder(train)]
    try:
        before = _snapshot(sweep), _snapshot(train)
        p = subprocess.run(
            [sys.executable, "-m", "cem_lab.cli.cem", "-m", "seed=0,1", f"hydra.sweep.dir={sweep}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 2 and p.stderr.startswith("cem-lab: error: the run folder"), p.stderr[-2000:]
        assert f"in use by test holder (pid {holders[0].pid}" in p.stderr
        t = subprocess.run(
            [sys.executable, "-m", "cem_lab.cli.train", "model=srcnn", "train.steps=1", f"hydra.run.dir={train}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert t.returncode == 2 and t.stderr.startswith("cem-train: error: the run folder"), t.stderr[-2000:]
        assert f"in use by test holder (pid {holders[1].pid}" in t.stderr
        assert (_snapshot(sweep), _snapshot(train)) == before  # no .sweep/, multirun.yaml or config.yaml
    finally:
        for h in holders:
            h.kill()
            h.wait()


def test_the_report_lists_a_run_that_is_being_written_as_in_progress(tmp_path, image_file):
    from cem_lab.analysis.runs import read_run

    folder = tmp_path / "run"
    code, _, err = _finish(_cem(TINY + [f"image={image_file}", f"hydra.run.dir={folder}"], tmp_path))
    assert code == 0, err
    assert read_run(folder)[0] is not None
    holder = _start_holder(folder)  # e.g. the same command rerun with other settings, now computing
    try:
        summary, reason = read_run(folder)
        assert summary is None and reason.startswith("in progress") and f"pid {holder.pid}" in reason
    finally:
        holder.kill()
        holder.wait()
    assert read_run(folder)[0] is not None


def test_only_rank_0_of_a_cluster_launch_holds_the_folder(monkeypatch):
    from omegaconf import OmegaConf

    from cem_lab.compose.prepare import launch_rank

    ddp = OmegaConf.create({"parallel": {"devices": 2, "num_nodes": 1}})
    single = OmegaConf.create({"parallel": {"devices": 1, "num_nodes": 1}})
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert launch_rank(ddp) == 3 and launch_rank(single) == 0  # a one-process run in a Slurm job
    monkeypatch.setenv("RANK", "1")
    assert launch_rank(ddp) == 1
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("SLURM_PROCID")
    assert launch_rank(ddp) == 0  # spawned by this process (ddp_spawn): it holds the folder


def test_a_lent_folder_can_be_lent_on_to_a_grandchild(tmp_path):
    folder = tmp_path / "run"
    grandchild = (
        "import sys\nfrom cem_lab.folder_lock import hold_run_folder\n"
        "with hold_run_folder(sys.argv[1]):\n    print('ok')\n"
    )
    child = (
        "import subprocess, sys\nfrom cem_lab.folder_lock import hold_run_folder, lend_to_child\n"
        "with hold_run_folder(sys.argv[1]):\n"
        "    p = subprocess.run([sys.executable, '-c', sys.argv[2], sys.argv[1]], env=lend_to_child(sys.argv[1]),"
        " capture_output=True, text=True)\n    print(p.stdout.strip(), p.returncode)\n"
    )
    with hold_run_folder(folder):
        p = subprocess.run(
            [sys.executable, "-c", child, str(folder), grandchild],
            capture_output=True,
            text=True,
            env=lend_to_child(folder),
        )
    assert p.returncode == 0 and p.stdout.split() == ["ok", "0"], p.stderr


def test_a_readers_brief_look_does_not_refuse_a_run(tmp_path):
    """cem-report asks whether a folder is held (a shared lock for an instant): a run that starts at
    that instant waits for the look to end instead of being refused."""
    import fcntl
    import threading

    folder = tmp_path / "run"
    with hold_run_folder(folder):
        pass
    fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a look that lasts 0.2 s
    timer = threading.Timer(0.2, lambda: (fcntl.flock(fd, fcntl.LOCK_UN), os.close(fd)))
    timer.start()
    try:
        with hold_run_folder(folder) as lock:
            assert lock is not None
    finally:
        timer.join()
