"""Spread a CEM's work units over devices and nodes with Lightning Fabric.

Each process builds the same job (same seeds, same plan), computes every ``world_size``-th work
unit of a round, and all-gathers the metrics, so that every process updates the same per-block
statistics in plan order: the merged map equals the single-process map, and the coarse and fine
stages stay in step without any other synchronisation. Only rank 0 writes checkpoints, results
and figures, and shows the progress bar.

Launching: by default the processes are spawned from inside the calling process
(``strategy="ddp_spawn"``), so nothing re-runs the command line; this works from a Python
session, from a single ``cem-lab`` run and from inside a Hydra multirun (Lightning's ``ddp``
launcher re-executes the script, which clashes with Hydra's working directories: Lightning
issue 11300, Hydra issue 2070). Under Slurm (``srun`` starts one task per device) Lightning's
cluster environment is detected and the processes are not spawned again.
"""
from __future__ import annotations

import math
import os
import pickle
from typing import Any, Optional

import torch

from cem_lab.causal.runner import UnitExecutor, compute_cem
from cem_lab.causal.result import CEMResult


class FabricExecutor(UnitExecutor):
    """Round-robin work units over the Fabric processes, all-gathered after each round."""

    def __init__(self, fabric, units_per_process: int = 1):
        self.fabric = fabric
        self.world = fabric.world_size
        self.rank = fabric.global_rank
        self.is_main = self.rank == 0
        self.units_per_round = self.world * max(1, int(units_per_process))

    def map(self, job, units):
        per_rank = math.ceil(len(units) / self.world)
        width = max(len(b) for b, _ in units)
        values = torch.full((per_rank, width), float("nan"), dtype=torch.float64)
        for j, u in enumerate(range(self.rank, len(units), self.world)):
            v = job._metrics(*units[u])
            values[j, :len(v)] = torch.from_numpy(v)
        gathered = self.fabric.all_gather(values.to(self.fabric.device)).cpu().numpy()
        if gathered.ndim == 2:  # world size 1
            gathered = gathered[None]
        return [gathered[u % self.world, u // self.world, :len(units[u][0])] for u in range(len(units))]


def _worker(fabric, kwargs: dict) -> Optional[bytes]:
    if fabric.device.type == "cpu":  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // fabric.world_size))
    executor = FabricExecutor(fabric)
    kwargs = dict(kwargs, model=kwargs["model"].to(fabric.device), device=fabric.device, progress=kwargs.get("progress", True) and executor.is_main,
                  executor=executor)
    try:
        result = compute_cem(**kwargs)
        fabric.barrier()
    finally:
        # tear the process group down before the process exits: a live gloo group's threads
        # abort the interpreter at shutdown ("terminate called without an active exception")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    # pickled: Lightning's launcher walks returned dataclasses and cannot rebuild frozen ones
    return pickle.dumps(result) if executor.is_main else None


def compute_cem_distributed(model, image, task, roi, *, devices: Any = "auto", accelerator: str = "auto",
                            num_nodes: int = 1, strategy: str = "ddp_spawn", **kwargs) -> CEMResult:
    """:func:`cem_lab.compute_cem` on several processes (devices, nodes); same arguments.

    ``devices``/``accelerator``/``num_nodes`` are Lightning's. The result equals the
    single-process result with the same seed and ``forward_batch``.
    """
    from lightning.fabric import Fabric

    if strategy not in ("ddp_spawn", "ddp_notebook", "ddp"):
        raise ValueError(f"strategy must be ddp_spawn (default), ddp_notebook or ddp, got {strategy!r}")
    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy)
    payload = dict(kwargs, model=model, image=image, task=task, roi=roi)
    if fabric.world_size == 1 and strategy == "ddp_spawn":
        fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes)
    out = fabric.launch(_worker, payload)
    return pickle.loads(out) if isinstance(out, bytes) else out
