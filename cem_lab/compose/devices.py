"""The devices of a run: a ``device`` name or Lightning ``accelerator``/``devices`` pair checked against what
this machine has (:func:`check_device`, :func:`check_accelerator`: refused at the start, in one line, with
the fix), and ``device=free_gpu``.

`device=free_gpu`: each job of a sweep takes a GPU that no other cem-lab job on this machine holds.

    cem-lab -m launcher=joblib hydra.launcher.n_jobs=4 device=free_gpu seed=0,1,2,3,4,5,6,7

With as many parallel jobs as GPUs every job finds one free at once; with more, a job waits until one
is released. The lease is an exclusive ``flock`` on a per-GPU lock file in the temporary folder
(``cem_lab-gpus-<uid>``), keyed by the GPU's UUID where torch reports it (so processes with other
CUDA_VISIBLE_DEVICES still agree), and the operating system releases it when the job ends, even
when it is killed. A fixed ``cuda:${hydra:job.num}`` would also work for as many jobs as GPUs, but
not for longer sweeps (job numbers go past the GPU count, and jobs finish at different times).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
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

#: the fix a refused ``device`` names
DEVICE_FIX = "use device=cpu, or device=null (auto: cuda when this machine has it, else cpu)"

#: torch's device types as a message names them
_KIND_NAMES = {"cuda": "CUDA", "mps": "Apple MPS", "xpu": "Intel XPU"}

#: the device names a user gives (``cuda:K`` too)
DEVICE_NAMES = ("cpu", "cuda", "mps", FREE_GPU, "auto", "null")


def machine_devices() -> str:
    """What this machine can compute on, in words: ``cpu only``, ``cpu and 2 CUDA devices (cuda:0, cuda:1)``."""
    extra = []
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n:
        extra.append(f"{n} CUDA device{'s' if n > 1 else ''} ({', '.join(f'cuda:{k}' for k in range(n))})")
    if torch.backends.mps.is_available():
        extra.append("an Apple MPS device (mps)")
    return f"cpu and {' and '.join(extra)}" if extra else "cpu only"


def _device_count(kind: str) -> int:
    """How many devices of torch's device type ``kind`` this machine has (cpu: 1)."""
    if kind == "cpu":
        return 1
    if kind == "cuda":
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "mps":
        return int(torch.backends.mps.is_available())
    backend = getattr(torch, kind, None)  # xpu, ...: torch.<type>.is_available() / device_count()
    try:
        if backend is None or not backend.is_available():
            return 0
        return int(backend.device_count()) if hasattr(backend, "device_count") else 1
    except Exception:  # a backend torch knows by name but cannot query here
        return 0


def check_device(name: Any) -> torch.device:
    """The torch device of a ``device`` setting (null / ``auto``: cuda when this machine has it, else cpu),
    refused with what this machine has and the fix when the name is not a device or the machine lacks it."""
    if name is None or str(name) in ("auto", "null"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = str(name).strip()
    if text == FREE_GPU:
        if _device_count("cuda") == 0:
            raise InputError(f"device=free_gpu: this machine has no CUDA device ({machine_devices()}); {DEVICE_FIX}")
        raise InputError("device=free_gpu is taken by cem-lab's jobs (a lease per job); give one device here: cuda:K")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        number = re.fullmatch(r"(?:gpu|cuda|nvidia)\W*(\d*)", text.lower())
        guess = ("cuda:" + number.group(1) if number.group(1) else "cuda") if number else None
        close = [guess] if guess else difflib.get_close_matches(text.lower(), DEVICE_NAMES, n=1, cutoff=0.5)
        hint = f" (did you mean device={close[0]}?)" if close else ""
        raise InputError(
            f"device={text} is not a device name{hint}; use cpu, cuda, cuda:K, mps, free_gpu (a sweep's jobs, a "
            f"free GPU each) or null (auto); this machine has {machine_devices()}"
        ) from None
    count = _device_count(device.type)
    if count == 0:
        kind = _KIND_NAMES.get(device.type, device.type)
        raise InputError(f"device={text}: this machine has no {kind} device ({machine_devices()}); {DEVICE_FIX}")
    if device.index is not None and device.index >= count:
        raise InputError(
            f"device={text}: this machine has {count} {_KIND_NAMES.get(device.type, device.type)} "
            f"device{'s' if count > 1 else ''} "
            f"({machine_devices()}); use device={device.type}:0"
            + (f"..{device.type}:{count - 1}" if count > 1 else "")
            + ", device=cpu or device=null (auto)"
        )
    return device


#: Lightning's accelerator names and the torch device type each runs on
_ACCELERATORS = {"cpu": "cpu", "gpu": "cuda", "cuda": "cuda", "mps": "mps"}


def check_accelerator(accelerator: Any, devices: Any, key: str, fix: str) -> None:
    """Refuse a Lightning ``accelerator``/``devices`` pair (the ``key`` node's) that this machine cannot run,
    before anything is written: a GPU accelerator without GPUs, more GPUs than it has, an unknown name."""
    acc = str(accelerator if accelerator is not None else "auto").lower()
    if acc == "auto":
        return
    if acc not in _ACCELERATORS and acc != "tpu":
        raise InputError(
            f"{key}.accelerator={acc} is not an accelerator{_accelerator_hint(acc)}; use auto, cpu, gpu or mps"
        )
    kind = _ACCELERATORS.get(acc)
    if kind is None or kind == "cpu":  # tpu: Lightning checks it; cpu: `devices` processes
        return
    have = _device_count(kind)
    if have == 0:
        raise InputError(
            f"{key}.accelerator={acc} needs {'an' if kind == 'mps' else 'a'} {_KIND_NAMES[kind]} device, but this "
            f"machine has {machine_devices()}; {fix}"
        )
    wanted = _wanted(devices)
    if wanted is not None and wanted > have:
        raise InputError(
            f"{key}.devices={devices} asks for {wanted} {_KIND_NAMES[kind]} devices, but this machine has {have} "
            f"({machine_devices()}); use {key}.devices={have} (or -1: all of them), or {fix.removeprefix('use ')}"
        )


def _accelerator_hint(name: str) -> str:
    close = difflib.get_close_matches(name, ["auto", *_ACCELERATORS], n=1, cutoff=0.5)
    return f" (did you mean {close[0]}?)" if close else ""


def _wanted(devices: Any) -> int | None:
    """How many devices a Lightning ``devices`` value needs at least (an index list: its largest + 1)."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return devices if devices > 0 else None  # -1: all of them
    if isinstance(devices, str) and re.fullmatch(r"\d+", devices.strip()):
        return int(devices)
    try:
        indices = [int(v) for v in (devices.split(",") if isinstance(devices, str) else devices)]
    except (TypeError, ValueError):
        return None
    return max(indices) + 1 if indices else None


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
        raise InputError(f"device=free_gpu: this machine has no CUDA device ({machine_devices()}); {DEVICE_FIX}")
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
