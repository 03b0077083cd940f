"""What the study scripts share (the three findings and the ablations): the population, the plan with
its estimated time, the sweeps, and the ``plan | run | report | all`` command line.

A study is a list of sweeps; a sweep is one ``cem-lab -m`` command, by default over a list of models x
the population (images x placed ROIs). ``plan`` prints every sweep, its job count and the time it is
expected to take here (from per-model costs measured on this machine); ``run`` launches them one
after the other, skipping finished jobs (the sweep's own resume), and prints progress across the
study with the elapsed time and an ETA. Extra ``key=value`` arguments go to every job, so the same
study runs on GPUs (``device=cuda``) or Slurm (``launcher=slurm``); the paper-scale command is in
each script's docstring.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: where the runs, reports and results go: the checkout, or $CEM_LAB_STUDY_ROOT (the tests' own folder)
ROOT = Path(os.environ.get("CEM_LAB_STUDY_ROOT") or Path(__file__).resolve().parents[1])
SWEEPS = ROOT / "runs" / "sweeps" / "cem"
RESULTS = ROOT / "experiments" / "results"

#: the held-out pool (no zoo model trained or validated on them, see experiments/results/zoo.md): sporco's five
#: photographs and PyWavelets' ascent
IMAGES = ("monarch", "barbara", "kodim23", "sail", "tulips", "ascent")
#: the first population's photographs (2026-12-01: their 128 px centre crops x 2 ROIs, 6 units); the real
#: networks of the receptive-field study, whose maps take 2 to 15 minutes here, keep it
FIRST_IMAGES = ("monarch", "barbara", "kodim23")
#: the embedded-scale population: 128 x 128 crops centred in each quarter of the picture (image_crop_cell
#: 0-3 of a 2 x 2 grid) x two placed ROIs of 32 px (one flat stratum, one textured): 6 x 4 x 2 = 48 units;
#: the paper's estimator (block 8, T_c 3, T_f 50: conf/cem/coarse_to_fine.yaml), incremental recompute
#: where it is exact and faster (BENCHMARKS.md)
CROP = 128
CELLS = 4
UNITS = len(IMAGES) * CELLS * 2


def population(images: Sequence[str] = IMAGES, crop: int = CROP, rois: int = 2, cells: int | None = CELLS) -> list[str]:
    """The overrides of a study's units: ``images`` x (``cells`` crops of a 2 x 2 grid, or the centre crop when
    None) x ``rois`` placed ROIs."""
    where = [f"image_crop_cell={','.join(map(str, range(cells)))}", "image_crop_grid=[2,2]"] if cells else []
    return [
        "dataset=standard",
        f"standard.name={','.join(images)}",
        f"image_crop={crop}",
        *where,
        "roi=placed",
        f"roi_place.count={rois}",
        f"roi_place.index={','.join(map(str, range(rois)))}",
        "roi_place.size=32",
        "roi_place.align=16",
        "cem=coarse_to_fine",
        *(["recompute=incremental"] if cells else []),
        "progress=false",
        "figures=true",
    ]


#: the first population (3 photographs' centre crops x 2 ROIs, crop path)
FIRST_POPULATION = population(FIRST_IMAGES, cells=None)
FIRST_UNITS = len(FIRST_IMAGES) * 2


@dataclass
class Sweep:
    """One ``cem-lab -m`` command of a study: its folder, its overrides, its job count and cost."""

    name: str  #: the sweep folder under runs/sweeps/cem/
    models: Sequence[str]  #: model ids (zoo or pretrained) swept with model.id; () when ``args`` name the model
    args: Sequence[str]  #: model group, task and its settings
    #: seconds per map measured here (2 CPU cores, one thread per job), by model id; "*" for the rest
    cost_s: Mapping[str, float] = field(default_factory=dict)
    units: int = UNITS  #: maps per model (images x crops x ROIs x whatever else the args sweep)
    #: the overrides of the images and ROIs; None: :func:`population`, the findings' held-out population
    population: Sequence[str] | None = None
    #: the key that names a model (model.id for the zoo and the catalogue, model.name for the paper's networks)
    model_key: str = "model.id"

    def overrides(self, extra: Sequence[str] = ()) -> list[str]:
        models = [f"{self.model_key}={','.join(self.models)}"] if self.models else []
        pop = population() if self.population is None else list(self.population)
        return [*self.args, *models, *pop, f"sweep_name={self.name}", *extra]

    @property
    def jobs(self) -> int:
        return max(1, len(self.models)) * self.units

    def finished(self) -> int:
        folder = SWEEPS / self.name
        return sum(1 for _ in folder.glob("*/done.json")) if folder.is_dir() else 0

    def estimate_s(self) -> float:
        default = self.cost_s.get("*", 30.0)
        return sum(self.cost_s.get(m, default) for m in self.models or ["*"]) * self.units

    def left_s(self) -> float:
        """The estimate of the maps not finished yet (at the sweep's mean cost per map)."""
        return self.estimate_s() * (1 - min(self.finished(), self.jobs) / self.jobs)


#: jobs per batch of a local sweep: Hydra composes and checks every job of a batch before its first starts, which
#: for the receptive-field study's 1152 was five silent minutes before any map; a batch waits for its last job
#: before the next starts, so a batch is one model's units (a cluster's launcher gets every job at once)
BATCH = UNITS


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


#: what the findings' plans say of their population and settings
FINDINGS_POPULATION = f"{len(IMAGES)} held-out images x {CELLS} crops of {CROP} px x 2 placed ROIs = {UNITS} units, block 8, T_c 3, T_f 50"


def plan(study: str, sweeps: Sequence[Sweep], parallel: int = 2, describe: str = FINDINGS_POPULATION) -> float:
    """Print every sweep with its maps, the finished ones and its command, and the time it takes here."""
    total = sum(s.estimate_s() for s in sweeps)
    left = sum(s.left_s() for s in sweeps)
    print(f"{study}: {sum(s.jobs for s in sweeps)} maps in {len(sweeps)} sweeps ({describe})")
    for s in sweeps:
        print(
            f"  {s.name:28s} {s.jobs:4d} maps ({s.finished()} finished)  ~{_hms(s.estimate_s() / parallel)}  "
            f"cem-lab -m {' '.join(s.overrides())}"
        )
    print(
        f"estimated here (2 CPU cores, {parallel} jobs at once): {_hms(total / parallel)} in all, "
        f"{_hms(left / parallel)} left",
        flush=True,
    )
    return left


def _device_refused(extra: Sequence[str]) -> str | None:
    """Why a ``device=`` of the overrides cannot run on this machine (cem-lab's own words), or None."""
    from cem_lab.compose.sweep_checks import check_job_device
    from cem_lab.errors import InputError

    for e in extra:
        key, _, values = e.partition("=")
        if key.lstrip("+~") != "device":
            continue
        try:
            for value in values.split(","):  # a sweep over devices: each of them
                check_job_device(value.strip())
        except InputError as err:
            return str(err)
    return None


def run(
    study: str,
    sweeps: Sequence[Sweep],
    extra: Sequence[str] = (),
    parallel: int = 2,
    describe: str = FINDINGS_POPULATION,
) -> int:
    """Every sweep in turn (finished jobs skipped), with progress and an ETA across the study."""
    refused = _device_refused(extra)
    if refused:  # before the plan and any sweep folder: one line, as cem-lab itself says it
        print(f"{study}: error: {refused}", file=sys.stderr)
        return 2
    plan(study, sweeps, parallel, describe)
    launcher = (
        []
        if any(e.startswith(("launcher=", "hydra/launcher=")) for e in extra)
        else ["launcher=joblib", f"hydra.launcher.n_jobs={parallel}", f"hydra.sweeper.max_batch_size={BATCH}"]
    )
    start = time.perf_counter()
    failed = 0
    done_est = 0.0  # the estimate of the maps this run has made (a resumed run skips the finished ones at no cost)
    for i, s in enumerate(sweeps, 1):
        elapsed = time.perf_counter() - start
        rate = elapsed / done_est if done_est > 0 else 1.0 / parallel
        remaining = sum(t.left_s() for t in sweeps[i - 1 :])
        left_before = s.left_s()
        print(
            f"[{study} {i}/{len(sweeps)}] {s.name}: {s.jobs} maps, {s.finished()} finished; "
            f"{_hms(elapsed)} elapsed, ETA {_hms(remaining * rate)}",
            flush=True,
        )
        cmd = [sys.executable, "-m", "cem_lab.cli.cem", "-m", *s.overrides(), *launcher, *extra]
        try:
            proc = subprocess.run(cmd, cwd=ROOT)
        except KeyboardInterrupt:  # cem-lab has saved its sweep and said so; the study says where it stopped
            print(
                f"{study}: interrupted in sweep {i}/{len(sweeps)} ({s.name}); finished maps are kept: run the same "
                "command again to resume",
                file=sys.stderr,
                flush=True,
            )
            return 130
        failed += proc.returncode != 0
        done_est += max(0.0, left_before - s.left_s())
    print(f"{study}: done in {_hms(time.perf_counter() - start)}; {failed} sweep(s) with failures", flush=True)
    return 1 if failed else 0


def main(
    study: str,
    sweeps: Sequence[Sweep],
    report,
    argv: Sequence[str] | None = None,
    doc: str = "",
    describe: str = FINDINGS_POPULATION,
    before_run=None,
) -> int:
    """The ``plan | run | report | all`` command line of a study; ``before_run()`` (returning an exit
    status, 0 to go on) checks or makes what the sweeps need before any of them starts."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else study)
    ap.add_argument("cmd", choices=("plan", "run", "report", "all"))
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every job (e.g. device=cuda)")
    ap.add_argument("--parallel", type=int, default=2, help="jobs at once (joblib launcher); default 2")
    args = ap.parse_intermixed_args(argv)  # key=value overrides before or after the options
    if args.cmd == "plan":
        plan(study, sweeps, args.parallel, describe)
        return 0
    rc = 0
    if args.cmd in ("run", "all"):
        rc = before_run() if before_run is not None else 0
        if rc:
            return rc
        rc = run(study, sweeps, args.overrides, args.parallel, describe)
    if args.cmd in ("report", "all"):
        rc = report() or rc
    return rc
