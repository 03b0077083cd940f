"""Ctrl-C during a map: one line that names the run folder and says the same command resumes, exit status 130,
the work saved; the rerun finishes the map exactly as an uninterrupted run computes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cem_lab.bookkeeping.test_hooks import INTERRUPT_ENV

#: the embedded default, smaller (a few seconds of work), checkpointed every 16 items
ARGS = ["progress=false", "figures=false", "cem.block=16", "cem.coarse=4", "cem.fine=12", "checkpoint.every_items=16"]
FOLDER = Path("runs") / "cem" / "cem.block=16,cem.coarse=4,cem.fine=12"  # checkpoint.* does not name the folder


def _command() -> list[str]:
    return [sys.executable, "-m", "cem_lab.cli.cem", *ARGS]


def _ctrl_c_on() -> None:
    """In the child: Ctrl-C as a terminal gives it, even when this test runs with SIGINT ignored (a job started
    in the background by a shell without job control ignores it, and its children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _first_checkpoint(state: Path, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    """Wait until the map has saved work once (it is then inside its stages)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if state.is_file():
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint in {state} (exit status {proc.poll()})")


def test_ctrl_c_during_a_map_is_one_line_and_the_rerun_resumes_to_the_same_map(tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    ref = subprocess.run(_command(), cwd=reference, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]

    work = tmp_path / "work"
    work.mkdir()
    # the map stops for good after its third batch (a checkpoint before it), so that the Ctrl-C below lands in
    # the middle of the map however slowly or quickly this machine runs it (a loaded machine once let the map
    # finish between its last checkpoint and the signal)
    env = {**os.environ, INTERRUPT_ENV: "3:hang"}
    proc = subprocess.Popen(
        _command(), cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_ctrl_c_on
    )
    try:
        _first_checkpoint(work / FOLDER / "state.npz", proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    err = "".join(line for line in err.splitlines(keepends=True) if not line.startswith(INTERRUPT_ENV))
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("cem-lab: interrupted; the work done so far is saved in "), err
    assert str(work / FOLDER) in err and "run the same command again to resume" in err, err
    assert (work / FOLDER / "state.npz").is_file() and not (work / FOLDER / "cem.npz").exists()

    again = subprocess.run(_command(), cwd=work, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    notes = json.loads((work / FOLDER / "summary.json").read_text())["notes"]
    assert any(n.startswith("resumed from a checkpoint") for n in notes), notes
    done, want = np.load(work / FOLDER / "cem.npz"), np.load(reference / FOLDER / "cem.npz")
    assert sorted(done.files) == sorted(want.files)
    for key in want.files:
        assert np.array_equal(done[key], want[key]), key


def _console_script(program: str) -> Path:
    return Path(sys.executable).parent / program


def test_every_console_script_points_at_the_guarded_launcher():
    import tomllib

    from cem_lab.cli.launch import PROGRAMS

    scripts = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == set(PROGRAMS)
    for program, target in scripts.items():
        assert target == f"cem_lab.cli.launch:{program.replace('-', '_')}", (program, target)


def test_ctrl_c_while_a_console_script_imports_is_one_line(tmp_path):
    """Ctrl-C in a program's first second (torch, Hydra and Lightning still importing): one line, status 130,
    nothing written; every console script."""
    from cem_lab.cli.launch import PROGRAMS

    missing = [p for p in PROGRAMS if not _console_script(p).is_file()]
    if missing:
        import pytest

        pytest.skip(f"console scripts not installed beside {sys.executable}: {missing} (pip install -e .)")
    from cem_lab.cli.launch import READY_ENV

    # one program at a time: started, given its Ctrl-C as soon as its guard is in place (its imports, torch and
    # Hydra, a second or more, have just begun), then read. Started all at once on two busy cores, this test's
    # own process could wait longer for a core than cem-report's imports took (seen in CI: it had run to its
    # argument error before the signal)
    procs, ready = {}, {}
    for program in PROGRAMS:
        cwd = tmp_path / program
        cwd.mkdir()
        ready[program] = tmp_path / f"{program}.ready"
        args = {"cem-report": ["runs"], "cem-zoo": ["list"], "cem-pretrained": ["list"]}.get(program, [])
        proc = procs[program] = subprocess.Popen(
            [str(_console_script(program)), *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, READY_ENV: str(ready[program])},
            preexec_fn=_ctrl_c_on,
        )
        deadline = time.monotonic() + 120
        while not ready[program].exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    try:
        for program, proc in procs.items():
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 130, (program, proc.returncode, err[-3000:])
            assert err.count("\n") == 1 and "Traceback" not in err, (program, err[-3000:])
            assert err.startswith(f"{program}: interrupted"), (program, err)
            assert not any((tmp_path / program).iterdir()), (program, list((tmp_path / program).iterdir()))
    finally:  # a program that missed its Ctrl-C must not go on computing beside the rest of the suite
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_program_started_by_another_keeps_its_one_line(monkeypatch, capsys):
    """Found in the README walk: cem-zoo train's child cem-train inherited the HYDRA_FULL_ERROR that cem-zoo's own
    run_cli had set, took it for the user's and printed a 30-line traceback on Ctrl-C."""
    import pytest

    from cem_lab.bookkeeping.clean_errors import OWN_FULL_ERROR, run_cli

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setenv(OWN_FULL_ERROR, "1")  # as a cem_lab parent leaves them

    def body():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as ended:
        run_cli(body, "cem-train", resumes=True)
    assert ended.value.code == 130
    assert capsys.readouterr().err == "cem-train: interrupted; run the same command again to resume\n"
    monkeypatch.delenv(OWN_FULL_ERROR)  # the user's own HYDRA_FULL_ERROR still shows the traceback
    with pytest.raises(KeyboardInterrupt):
        run_cli(body, "cem-train", resumes=True)
