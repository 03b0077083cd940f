"""Who computes the work units of a map: here, one after the other (:class:`LocalExecutor`), or a
distributed executor (``cem_lab.parallel.fabric``) that spreads each round over processes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cem_lab.causal.job import CEMJob


@dataclass
class BatchInfo:
    """Progress after a round of work: the stage, items done of its total, forward passes so far."""

    stage: str
    done: int
    total: int
    forward_passes: int


class UnitExecutor:
    """Computes the metrics of a round of work units; see :meth:`CEMJob.run <cem_lab.causal.job.CEMJob.run>`."""

    is_main: bool = True
    units_per_round: int = 1

    def map(self, job: CEMJob, units: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """The metric values of each unit (blocks, samples), in order, on every process."""
        raise NotImplementedError

    def summed(self, counts: dict[str, int]) -> dict[str, int]:
        """``counts`` (forward passes, pixels) summed over the processes that share the work (here: as given);
        called by every process at the end of a run."""
        return counts


class LocalExecutor(UnitExecutor):
    """Every unit in this process, one after the other."""

    def map(self, job, units):
        """Each unit's metrics, computed here."""
        return [job._metrics(blocks, samples) for blocks, samples in units]
