"""A resumed run's records count all of its work: summary.json's forward passes, pixels and seconds are
the run's over every process that worked on it, with this session's share beside them.

Through the real console script, on the embedded default's 256x256 image: a run interrupted (the test
hook raises KeyboardInterrupt after some batches, as Ctrl-C would) and resumed must record the passes of
an uninterrupted run plus the second process's preparation, which is all the work repeated; rereading the
finished run must not change the record.
"""

from __future__ import annotations

import json

from conftest import run_console

from cem_lab.run_format import read_cem_arrays

ARGS = ["cem.fine=10", "progress=false", "figures=false"]


def _cem(args, cwd, **env):
    return run_console("cem", args, cwd, **env)


def _summary(folder):
    return json.loads((folder / "summary.json").read_text())


def test_a_resumed_run_records_the_cost_of_all_its_work(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    p = _cem([*ARGS, f"hydra.run.dir={straight}"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    stopped = _cem([*ARGS, f"hydra.run.dir={resumed}"], tmp_path, CEM_LAB_TEST_INTERRUPT="6")
    assert stopped.returncode != 0 and (resumed / "state.npz").is_file() and not (resumed / "cem.npz").exists()
    p = _cem([*ARGS, f"hydra.run.dir={resumed}"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]

    a, b = read_cem_arrays(straight), read_cem_arrays(resumed)
    assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)
    one, two = _summary(straight), _summary(resumed)
    assert one["sessions"] == 1 and one["this_session"]["forward_passes"] == one["forward_passes"]
    assert two["sessions"] == 2 and two["cost_recorded_since_start"]
    mine = two["this_session"]
    assert mine["forward_passes"] < two["forward_passes"] and mine["timings"]["run_s"] < two["timings"]["run_s"]

    # rereading the finished run (done.json removed: the core reads the checkpoint) repeats only the
    # preparation, and keeps the run's record
    (resumed / "done.json").unlink()
    p = _cem([*ARGS, f"hydra.run.dir={resumed}"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    again = _summary(resumed)
    preparation = again["this_session"]["forward_passes"]
    assert 0 < preparation < one["forward_passes"] / 10
    for key in ("forward_passes", "pixels_pushed", "sessions"):
        assert again[key] == two[key], key
    # everything the interrupted and the resumed process did: the uninterrupted run's passes, and the
    # second preparation
    assert two["forward_passes"] == one["forward_passes"] + preparation
    assert two["timings"]["run_s"] > mine["timings"]["run_s"]
