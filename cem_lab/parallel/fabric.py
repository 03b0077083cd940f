"""Spread a CEM's work units over devices and nodes with Lightning Fabric.

Each process builds the same job (same seeds, same plan), computes every ``world_size``-th work
unit of a round, and all-gathers the metrics, so that every process updates the same per-block
statistics in plan order: the merged map equals the single-process map, and the coarse and fine
stages stay in step without any other synchronisation. Only rank 0 writes checkpoints, results
and figures, and shows the progress bar; the calling process reads the result back from the
output folder (nothing large goes back through Lightning's pipe).

Launching: by default the processes are spawned from inside the calling process
(``strategy="ddp_spawn"``), so nothing re-runs the command line; this works from a Python
session, from a single ``cem-lab`` run and from inside a Hydra multirun (Lightning's ``ddp``
launcher re-executes the script, which clashes with Hydra's working directories: Lightning
issue 11300, Hydra issue 2070). Under Slurm (``srun`` starts one task per device) Lightning's
cluster environment is detected and the processes are not spawned again.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import sys
import tempfile
import warnings
from typing import Any

import torch

from cem_lab.api import compute_cem
from cem_lab.causal.executors import UnitExecutor
from cem_lab.causal.result import CEMResult
from cem_lab.errors import InputError
from cem_lab.folder_lock import hold_run_folder


class FabricExecutor(UnitExecutor):
    """Round-robin work units over the Fabric processes, all-gathered after each round."""

    def __init__(self, fabric, units_per_process: int = 1):
        self.fabric = fabric
        self.world = fabric.world_size
        self.rank = fabric.global_rank
        self.is_main = self.rank == 0
        self.units_per_round = self.world * max(1, int(units_per_process))

    def map(self, job, units):
        """This process's share of the units (round-robin by rank), all-gathered so every process gets every unit's
        metrics."""
        per_rank = math.ceil(len(units) / self.world)
        width = max(len(b) for b, _ in units)
        values = torch.full((per_rank, width), float("nan"), dtype=torch.float64)
        for j, u in enumerate(range(self.rank, len(units), self.world)):
            v = job._metrics(*units[u])
            values[j, : len(v)] = torch.from_numpy(v)
        gathered = self.fabric.all_gather(values.to(self.fabric.device)).cpu().numpy()
        if gathered.ndim == 2:  # world size 1
            gathered = gathered[None]
        return [gathered[u % self.world, u // self.world, : len(units[u][0])] for u in range(len(units))]

    def summed(self, counts):
        """The counts of every process (each one's preparation and its share of the units), summed."""
        keys = sorted(counts)
        local = torch.tensor([float(counts[k]) for k in keys], dtype=torch.float64, device=self.fabric.device)
        total = self.fabric.all_reduce(local, reduce_op="sum").cpu().tolist()
        return {k: int(round(v)) for k, v in zip(keys, total)}


LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"

# Fabric's all_gather calls torch.distributed.nn.functional.all_gather, deprecated since torch 2.6
# (a FutureWarning printed once by every process of every run); it is Lightning's call, not ours
_ALL_GATHER_DEPRECATION = r"torch\.distributed\.nn\.functional\.all_gather is deprecated"


def _attach_log_handlers(log_file: str | None, to_stderr: bool) -> list[logging.Handler]:
    """Rank 0 of spawned processes: send the ``cem_lab`` records where the parent would."""
    logger = logging.getLogger("cem_lab")
    handlers: list[logging.Handler] = []
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file, mode="a"))
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(logging.Formatter(LOG_FORMAT))
        h.setLevel(logging.INFO)
        logger.addHandler(h)
    if handlers and (logger.level == logging.NOTSET or logger.level > logging.INFO):
        logger.setLevel(logging.INFO)
    return handlers


def _worker(fabric, kwargs: dict, parent_pid: int, log_file: str | None, to_stderr: bool) -> CEMResult | None:
    spawned = os.getpid() != parent_pid
    if fabric.device.type == "cpu":  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // fabric.world_size))
    executor = FabricExecutor(fabric)
    kwargs = dict(
        kwargs,
        model=kwargs["model"].to(fabric.device),
        device=fabric.device,
        progress=kwargs.get("progress", True) and executor.is_main,
        executor=executor,
    )
    if "lock_folder" in inspect.signature(compute_cem).parameters:
        kwargs["lock_folder"] = False  # the parent process holds the run folder
    # a process of its own has no logging set up: rank 0 logs to the run's log file (and stderr)
    handlers = _attach_log_handlers(log_file, to_stderr) if spawned and executor.is_main else []
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_ALL_GATHER_DEPRECATION, category=FutureWarning)
            result = compute_cem(**kwargs)
            fabric.barrier()
    finally:
        for h in handlers:
            logging.getLogger("cem_lab").removeHandler(h)
            h.close()
        # tear the process group down before the process exits: a live gloo group's threads
        # abort the interpreter at shutdown ("terminate called without an active exception")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    # a spawned process returns nothing: Lightning sends the return value through a pipe that it
    # reads only after the processes have exited, so a result larger than the pipe buffer (64 KiB,
    # e.g. the images of a 256x256 run) would hang both sides; rank 0 has saved it on disk
    return result if executor.is_main and not spawned else None


def compute_cem_distributed(
    model,
    image,
    task,
    roi,
    *,
    devices: Any = "auto",
    accelerator: str = "auto",
    num_nodes: int = 1,
    strategy: str = "ddp_spawn",
    log_file: str | None = None,
    **kwargs,
) -> CEMResult | None:
    """:func:`cem_lab.compute_cem` on several processes (devices, nodes); same arguments.

    ``devices``/``accelerator``/``num_nodes`` are Lightning's. The result equals the
    single-process result with the same seed and ``forward_batch``. Rank 0 saves it in
    ``output_dir`` (a temporary folder, without figures, when none is given) and this process
    reads it back from there. ``log_file``: a file to which rank 0 appends its ``cem_lab`` log
    records (the spawned processes have no logging of their own). Processes started by a cluster
    (``srun``) other than rank 0 return None.
    """
    from lightning.fabric import Fabric  # lazy: Lightning (seconds), only when a map is spread

    if strategy not in ("ddp_spawn", "ddp_notebook", "ddp"):
        raise InputError(f"strategy must be ddp_spawn (default), ddp_notebook or ddp, got {strategy!r}")
    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy)
    if fabric.world_size == 1 and strategy == "ddp_spawn":
        fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes)
    lock = kwargs.pop("lock_folder", True)
    output_dir = kwargs.get("output_dir")
    to_stderr = logging.getLogger("cem_lab").hasHandlers()
    with contextlib.ExitStack() as stack:
        if output_dir is None:
            output_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="cem_ddp_"))
            kwargs.update(output_dir=output_dir, figures=False)
        elif lock and fabric.global_rank == 0:  # under srun, every task runs this: rank 0 holds it
            stack.enter_context(hold_run_folder(output_dir, what="a cem_lab map"))
        payload = dict(kwargs, model=model, image=image, task=task, roi=roi)
        out = fabric.launch(_worker, payload, os.getpid(), None if log_file is None else str(log_file), to_stderr)
        if isinstance(out, CEMResult) or fabric.global_rank != 0:
            return out  # ran in this process
        return CEMResult.load(output_dir)
