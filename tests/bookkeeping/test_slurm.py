"""`launcher=slurm` against a real Slurm: a single-node cluster (munged, slurmctld, slurmd on this
machine) runs a 2x2 sweep whose maps equal the local ones, a job requeued in the middle of its map
that resumes from its checkpoint to the same map, and `cem-report` over the sweep.

Slow, and run in CI by `.ci/run` (which installs Debian's slurm-wlm and munge): `pytest -m slurm`.
Skipped, with the reason, where Slurm is not installed or the daemons cannot be started (not root).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sweeps import GRID, SMALL, _assert_same_results, _cem, _env, _jobs, _summary, _sweep_dir, clean_sweep, workdir

__all__ = ["clean_sweep", "workdir"]  # the local sweep the Slurm one is compared with (module fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

SLURM = [
    "launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", name], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def _munge_works() -> bool:
    return subprocess.run("munge -n | unmunge", shell=True, capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Slurm cluster on localhost; yields the environment that points at it."""
    for exe in ("munged", "munge", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo"):
        if not shutil.which(exe):
            pytest.skip(f"{exe} is not installed (Debian: apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("starting munged, slurmctld and slurmd here needs root")
    root = tmp_path_factory.mktemp("slurm")
    for d in ("state", "spool", "log"):
        (root / d).mkdir()
    started_munge = None
    if not _munge_works():
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", shutil.which("munged")], check=True)
        started_munge = Path("/run/munge/munged.pid")
        for _ in range(50):
            if _munge_works():
                break
            time.sleep(0.1)
    host = socket.gethostname()
    mem_mb = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 2
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=cemlabtest",
                f"SlurmctldHost={host}(127.0.0.1)",
                "SlurmUser=root",
                "AuthType=auth/munge",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU_Memory",
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'slurmd.pid'}",
                f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
                f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "ReturnToService=2",
                "MpiDefault=none",
                "JobRequeue=1",
                "AccountingStorageType=accounting_storage/none",
                "JobAcctGatherType=jobacct_gather/none",
                f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={mem_mb} State=UNKNOWN",
                f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    steps_before = set(_pids("slurmstepd"))
    subprocess.run(["slurmctld", "-c"], env=env, check=True)
    subprocess.run(["slurmd"], env=env, check=True)
    state = ""
    for _ in range(100):
        state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout.strip()
        if state == "idle":
            break
        time.sleep(0.3)
    try:
        if state != "idle":
            logs = "\n".join((root / "log" / f).read_text()[-1500:] for f in ("slurmctld.log", "slurmd.log"))
            pytest.fail(f"the test cluster's node is {state!r}, not idle:\n{logs}")
        yield env
    finally:
        for _ in range(60):  # let the jobs' step daemons finish before the cluster goes
            if not subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True).stdout.strip():
                break
            time.sleep(0.5)
        subprocess.run(["scontrol", "shutdown"], env=env, check=False, capture_output=True)
        time.sleep(1.0)
        for pid in set(_pids("slurmstepd")) - steps_before:  # none of this cluster's processes outlives it
            subprocess.run(["kill", "-9", str(pid)], check=False)
        if started_munge is not None and started_munge.is_file():
            subprocess.run(["kill", started_munge.read_text().strip()], check=False)


def _slurm_env(cluster: dict, **extra: str) -> dict:
    return {"SLURM_CONF": cluster["SLURM_CONF"], **extra}


def test_a_2x2_sweep_through_slurm_gives_the_local_maps_and_a_report(cluster, clean_sweep, workdir):
    folder, _ = clean_sweep
    p = _cem(["-m", *SMALL, *GRID, *SLURM, "sweep_name=slurm"], workdir, **_slurm_env(cluster))
    assert p.returncode == 0, p.stderr[-3000:]
    target = _sweep_dir(workdir, "slurm")
    assert _summary(target)["done"] == 4 and (target / ".submitit").is_dir()
    assert list((target / ".submitit").glob("*/*_log.out")), "no Slurm job logs"
    _assert_same_results(target, folder)
    r = subprocess.run(
        [sys.executable, "-m", "cem_lab.cli.report", str(target), "--out", str(workdir / "slurm_report")],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = (workdir / "slurm_report" / "runs.csv").read_text().strip().splitlines()
    assert len(rows) == 5  # a header and the four runs


def test_a_job_requeued_mid_map_resumes_from_its_checkpoint_to_the_same_map(cluster, clean_sweep, workdir):
    folder, _ = clean_sweep
    args = ["-m", *SMALL, "seed=0", "cem.sampler=uniform", *SLURM, "sweep_name=requeue"]
    env = _env(**_slurm_env(cluster), CEM_LAB_TEST_INTERRUPT="3:hang")
    p = subprocess.Popen(
        [sys.executable, "-m", "cem_lab.cli.cem", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    target = _sweep_dir(workdir, "requeue")
    job_id = None
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            logs = list(target.glob(".submitit/*/*_log.err"))
            if logs and "hanging after" in logs[0].read_text():
                job_id = logs[0].name.split("_")[0]
                break
            time.sleep(0.5)
        assert job_id, "the job never reached its third batch"
        assert list(target.glob("*/state.npz")), "no checkpoint before the requeue"
        subprocess.run(["scontrol", "requeue", job_id], env=cluster, check=True)
        out, _ = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, out[-3000:]
    (job,) = _jobs(target)
    s = json.loads((job / "summary.json").read_text())
    assert s["sessions"] == 2, s["sessions"]  # the requeued process resumed the first one's map
    (twin,) = [j for j in _jobs(folder) if j.name == job.name]
    _assert_same_results_of(job, twin)


def _assert_same_results_of(a: Path, b: Path) -> None:
    import numpy as np

    with np.load(a / "cem.npz") as x, np.load(b / "cem.npz") as y:
        assert set(x.files) == set(y.files)
        for k in x.files:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
