"""Testing aids of `cem-lab`, switched on by the environment (never set in production).

- ``CEM_LAB_TEST_INTERRUPT=[JOB:]BATCHES[:hang]`` raises KeyboardInterrupt (as Ctrl-C would) after
  BATCHES batches of the multirun job number JOB (0-based; without ``JOB:``, of any run), to test that
  an interrupted sweep resumes exactly; with ``:hang`` the run stops there for good instead (after a
  checkpoint), to be killed (``kill -9``) by a test. A Slurm job that was requeued
  (``SLURM_RESTART_COUNT`` > 0) is never stopped again, so that a test can requeue it mid-map.
- ``CEM_LAB_TEST_START_GATE=<path>``: a run writes ``<path>.<pid>.ready`` and waits until ``<path>``
  exists before it takes its run folder's lock, so that a test can release two runs into one folder
  at the same moment.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

INTERRUPT_ENV = "CEM_LAB_TEST_INTERRUPT"
START_GATE_ENV = "CEM_LAB_TEST_START_GATE"


def interrupt_hook(job_num: int | None) -> Callable | None:
    """The ``on_batch`` hook of ``CEM_LAB_TEST_INTERRUPT`` for multirun job ``job_num``; None when unset
    or meant for another job."""
    spec = os.environ.get(INTERRUPT_ENV, "").strip()
    if not spec or os.environ.get("SLURM_RESTART_COUNT", "0").strip() not in ("", "0"):
        return None
    parts = spec.split(":")
    hang = parts[-1] == "hang"
    if hang:
        parts = parts[:-1]
    job, batches = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
    if job and (job_num is None or int(job) != job_num):
        return None
    limit, seen = int(batches), [0]

    def hook(info) -> None:
        seen[0] += 1
        if seen[0] >= limit:
            if hang:
                print(f"{INTERRUPT_ENV}={spec}: hanging after {seen[0]} batches", file=sys.stderr, flush=True)
                while True:
                    time.sleep(60)
            raise KeyboardInterrupt(f"{INTERRUPT_ENV}={spec}: stopped after {seen[0]} batches")

    return hook


def wait_for_start() -> None:
    """Wait at ``CEM_LAB_TEST_START_GATE`` when it is set (see the module docstring)."""
    gate = os.environ.get(START_GATE_ENV, "").strip()
    if gate:
        Path(f"{gate}.{os.getpid()}.ready").touch()
        while not os.path.exists(gate):
            time.sleep(0.0005)
