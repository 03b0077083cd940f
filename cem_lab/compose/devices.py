"""`device=free_gpu`: each job of a sweep takes a GPU that no other cem-lab job on this machine holds.

    cem-lab -m launcher=joblib hydra.launcher.n_jobs=4 device=free_gpu seed=0,1,2,3,4,5,6,7

With as many parallel jobs as GPUs every job finds one free at once; with more, a job waits until one
is released. The lease is an exclusive ``flock`` on a per-GPU lock file in the temporary folder
(``cem_lab-gpus-<uid>``), keyed by the GPU's UUID where torch reports it (so processes with other
CUDA_VISIBLE_DEVICES still agree), and the operating system releases it when the job ends, even
when it is killed. A fixed ``cuda:${hydra:job.num}`` would also work for as many jobs as GPUs, but
not for longer sweeps (job numbers go past the GPU count, and jobs finish at different times).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from cem_lab.errors import InputError

log = logging.getLogger("cem_lab")

FREE_GPU = "free_gpu"


def _gpu_keys() -> list[str]:
    keys = []
    for k in range(torch.cuda.device_count()):
        uuid = getattr(torch.cuda.get_device_properties(k), "uuid", None)
        keys.append(str(uuid) if uuid is not None else f"index{k}")
    return keys


def lock_dir() -> Path:
    """The folder of the per-GPU lock files (in the temporary folder, one per user)."""
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"cem_lab-gpus-{uid}"


@contextmanager
def gpu_lease(
    keys: list[str] | None = None, folder: Path | None = None, poll_s: float = 1.0, timeout_s: float | None = None
) -> Iterator[int]:
    """Hold the first free GPU (its index) until the block ends; wait while all are taken."""
    import fcntl  # lazy: POSIX only (the module imports on every platform)

    keys = _gpu_keys() if keys is None else keys
    if not keys:
        raise InputError("device=free_gpu: no CUDA device is visible")
    folder = lock_dir() if folder is None else folder
    folder.mkdir(parents=True, exist_ok=True)
    t0, warned = time.monotonic(), False
    while True:
        for index, key in enumerate(keys):
            fh = open(folder / f"{key}.lock", "a")  # noqa: SIM115 - held while the GPU is in use
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            try:
                yield index
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()
            return
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"device=free_gpu: all {len(keys)} GPUs stayed busy for {timeout_s:.0f} s")
        if not warned:
            log.info("device=free_gpu: all %d GPUs are taken by other cem-lab jobs; waiting", len(keys))
            warned = True
        time.sleep(poll_s)


@contextmanager
def device_lease(name: Any) -> Iterator[Any]:
    """``name`` itself, or for ``free_gpu`` a ``cuda:K`` held for the duration of the block."""
    if str(name) != FREE_GPU:
        yield name
        return
    with gpu_lease() as index:
        log.info("device=free_gpu: running on cuda:%d", index)
        yield f"cuda:{index}"
