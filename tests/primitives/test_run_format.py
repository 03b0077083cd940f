"""The run-folder format (cem_lab.run_format): a folder written by cem_lab before the causal core was
split (tests/fixtures/run_v1: cem.npz, summary.json and state.npz of the default `cem-lab` run) still
loads, saves back to the same arrays, and its checkpoint is still recognised as a finished run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cem_lab.causal import CEMResult, RunFolderError
from cem_lab.causal.resume import check_folder
from cem_lab.run_format import (
    CEM_FILE,
    FORMAT_VERSION,
    STATE_FILE,
    SUMMARY_FILE,
    read_cem_arrays,
    read_state,
    read_summary,
    write_cem_arrays,
)

OLD = Path(__file__).resolve().parents[1] / "fixtures" / "run_v1"


def test_a_folder_written_before_the_split_loads():
    res = CEMResult.load(OLD)
    assert res.grid_shape == (32, 32) and res.block == 8 and res.scale == 1
    assert res.roi.as_list() == res.meta["roi"] and res.meta["format_version"] == FORMAT_VERSION
    assert res.block_counts() == res.meta["counts"]
    assert res.images == {}  # the fixture keeps no images


def test_saving_a_loaded_result_writes_the_same_arrays(tmp_path):
    res = CEMResult.load(OLD)
    res.save(tmp_path / "again")
    old, new = read_cem_arrays(OLD), read_cem_arrays(tmp_path / "again")
    assert sorted(old) == sorted(new)
    for k in old:
        assert old[k].dtype == new[k].dtype and old[k].tobytes() == new[k].tobytes(), k
    assert not (tmp_path / "again" / "figures").exists()  # the core draws no figures
    summary = read_summary(tmp_path / "again")
    for k in ("settings", "forward_passes", "fingerprint", "counts", "shares"):
        assert summary[k] == read_summary(OLD)[k], k


def test_the_old_checkpoint_is_read_by_its_fingerprint(tmp_path):
    state = read_state(OLD / STATE_FILE)
    fp = str(state["fingerprint"])
    assert fp == read_summary(OLD)["fingerprint"] and int(state["format_version"]) == FORMAT_VERSION
    folder = tmp_path / "run"
    shutil.copytree(OLD, folder)
    assert check_folder(folder, fp) == "complete"
    with pytest.raises(RunFolderError, match="other settings"):
        check_folder(folder, "0" * 64)
    assert check_folder(tmp_path / "empty", fp) is None


def test_a_newer_format_is_refused(tmp_path):
    arrays = read_cem_arrays(OLD)
    arrays.pop("format_version")
    write_cem_arrays(tmp_path, arrays)
    with np.load(tmp_path / CEM_FILE) as z:
        assert int(z["format_version"]) == FORMAT_VERSION
    np.savez(tmp_path / CEM_FILE, **arrays, format_version=FORMAT_VERSION + 1)
    with pytest.raises(ValueError, match="upgrade cem_lab"):
        CEMResult.load(tmp_path)
    (tmp_path / SUMMARY_FILE).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="no finished CEM"):
        CEMResult.load(tmp_path / "nowhere")
