"""What a sweep (``cem-lab -m``) needs of this machine, checked before the sweep's folder is touched: a launcher that
can run here (joblib's ``n_jobs`` a real number of workers, Slurm's ``sbatch`` present) and the devices the jobs
ask for. Each failure is one line naming the value and the fix, as for a single run; before, joblib's and
submitit's own errors ended a sweep in a traceback after it had rewritten the sweep folder's records."""

from __future__ import annotations

import shutil
from typing import Any

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cem_lab.bookkeeping.clean_errors import fail
from cem_lab.compose.devices import FREE_GPU, check_device
from cem_lab.errors import InputError


def _launcher(config: DictConfig) -> str:
    return str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")


def check_launcher(config: DictConfig) -> None:
    """Refuse a launcher that cannot start here."""
    target = _launcher(config)
    if "joblib" in target.lower():
        n_jobs = OmegaConf.select(config, "hydra.launcher.n_jobs", default=None)
        if n_jobs is not None and (not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0):
            raise InputError(
                f"hydra.launcher.n_jobs={n_jobs!r}: joblib needs the number of jobs at once, >= 1 (or -1: one per CPU "
                "core); a count of GPUs such as $(nvidia-smi -L | wc -l) is 0 on a machine without them"
            )
    if "slurm" in target.lower() and shutil.which("sbatch") is None:
        raise InputError(
            "launcher=slurm needs Slurm (no sbatch on this machine's PATH): start the sweep on the cluster's login "
            "node, or try it here with launcher=submitit_local (or launcher=joblib)"
        )


def _swept_values(config: DictConfig, key: str) -> list[str]:
    """The values ``key`` takes over the sweep (a comma list on the command line, else the config's one)."""
    for override in OmegaConf.select(config, "hydra.overrides.task", default=None) or []:
        name, _, value = str(override).partition("=")
        if name.lstrip("+~") == key:
            return [v.strip() for v in value.split(",") if v.strip()]
    value = OmegaConf.select(config, key, default=None)
    return [] if value is None else [str(value)]


def check_job_device(value: str) -> None:
    """Refuse a ``device`` value that a job (of a sweep, of a study script) could not run on here: a device this
    machine lacks, or ``free_gpu`` without a CUDA device."""
    if value == FREE_GPU:
        if not torch.cuda.is_available():
            check_device(value)  # raises: no CUDA device here, with the machine's devices and the fix
    elif value not in ("null", "auto", "None"):
        check_device(value)


def check_devices(config: DictConfig) -> None:
    """Refuse a device that this machine lacks, for every value the sweep gives ``device``."""
    for value in _swept_values(config, "device"):
        check_job_device(value)


class CheckSweep(Callback):
    """The checks of :mod:`cem_lab.compose.sweep_checks` at the start of a multirun, before any job or record."""

    def __init__(self, program: str = "cem-lab") -> None:
        self.program = program

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check the launcher and the devices; a refusal ends the process in one line (status 2)."""
        try:
            check_launcher(config)
            check_devices(config)
        except InputError as err:
            fail(self.program, err)
