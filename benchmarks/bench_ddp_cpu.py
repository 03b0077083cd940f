"""1 process vs 2 CPU processes (``parallel=ddp_cpu``) on the embedded default CEM.

Runs ``cem-lab`` and ``cem-lab parallel=ddp_cpu`` alternately ``--repeat`` times, each in a fresh
run folder under ``--out``, times the whole command (wall clock, start-up included), reads the
CEM's own loop time (``timings.run_s`` of summary.json) and checks that every map equals the first
1-process map (all cem.npz arrays, bit for bit)::

    python benchmarks/bench_ddp_cpu.py --out /tmp/bench_ddp --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

COMMANDS = {"1 process": [], "2 processes (parallel=ddp_cpu)": ["parallel=ddp_cpu"]}


def run(folder: Path, extra: list[str], timeout: float) -> tuple[float, float]:
    shutil.rmtree(folder, ignore_errors=True)
    cmd = [sys.executable, "-m", "cem_lab.cli.cem", *extra, f"hydra.run.dir={folder}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, json.loads((folder / "summary.json").read_text())["timings"]["run_s"]


def same_map(a: Path, b: Path) -> bool:
    with np.load(a / "cem.npz") as x, np.load(b / "cem.npz") as y:
        return set(x.files) == set(y.files) and all(
            np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind == "f") for k in x.files
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_ddp_cpu"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per command (a hang fails)")
    a = ap.parse_args()
    walls: dict[str, list[float]] = {k: [] for k in COMMANDS}
    loops: dict[str, list[float]] = {k: [] for k in COMMANDS}
    ref, identical = None, True
    for i in range(a.repeat):
        for j, (name, extra) in enumerate(COMMANDS.items()):
            folder = a.out / f"run{i}_{j}"
            load = os.getloadavg()[0]
            wall, loop = run(folder, extra, a.timeout)
            ref = ref or folder
            identical &= same_map(ref, folder)
            walls[name].append(wall)
            loops[name].append(loop)
            print(
                f"{name:32s} run {i}: wall {wall:6.1f} s, CEM loop {loop:5.1f} s (load before {load:.2f})", flush=True
            )
    print(f"\nmachine: {os.cpu_count()} cores; maps identical (all cem.npz arrays): {identical}")
    base = statistics.median(walls["1 process"])
    for name in COMMANDS:
        w, lp = statistics.median(walls[name]), statistics.median(loops[name])
        print(f"{name:32s} median wall {w:6.1f} s ({w / base:.2f}x the 1-process time), median CEM loop {lp:5.1f} s")


if __name__ == "__main__":
    main()
