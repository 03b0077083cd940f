"""A run's identity and its checkpoint: the fingerprint, the state file, and resuming from it.

The fingerprint hashes the run's settings (:meth:`CEMJob.settings <cem_lab.causal.job.CEMJob.settings>`,
as JSON with sorted keys), the model's weights, the input (and ground truth) and the intervention's
arrays (the patch bank). The state file (``state.npz``, :mod:`cem_lab.run_format`) holds the
fingerprint, the stages done and the statistics of each, and the cost of the work so far (forward
passes, pixels, seconds, over every process that worked on the run: :data:`COST_KEYS`); a run resumes
only from its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cem_lab.causal.errors import RunFolderError
from cem_lab.causal.estimators import BlockStats, Estimator, Stage
from cem_lab.run_format import FORMAT_VERSION, read_state, state_path, write_state

log = logging.getLogger("cem_lab")

#: the cost a checkpoint carries from process to process (``cost/<key>`` in state.npz), summed over them
COST_KEYS = ("forward_passes", "pixels_pushed", "checkpoints", "prepare_s", "run_s", "checkpoint_s")


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()


def model_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (names and values, bfloat16 as float32)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(
            t.detach().cpu().contiguous().numpy().tobytes()
            if t.dtype != torch.bfloat16
            else t.detach().float().cpu().numpy().tobytes()
        )
    return h.hexdigest()


def compute_fingerprint(settings: dict[str, Any], model: nn.Module, task_input, intervention) -> str:
    """The identity of a run: its settings, model, input, ground truth and intervention arrays."""
    parts = [
        json.dumps(settings, sort_keys=True),
        model_digest(model),
        task_input.input.detach().cpu().numpy().tobytes(),
    ]
    if task_input.target is not None:
        parts.append(task_input.target.detach().cpu().numpy().tobytes())
    parts += [a.tobytes() for a in intervention.fingerprint_arrays()]
    return _sha(*parts)


def load_state(path: Path, fingerprint: str, also: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The arrays of the checkpoint ``path``, refused unless it is the run ``fingerprint``'s own (or recorded under
    one of ``also``, the forms earlier versions gave the same run's identity)."""
    try:
        state = read_state(path)
    except Exception as err:
        raise RunFolderError(
            f"cannot read the checkpoint {path} ({err}); delete {path} to start this run over"
        ) from err
    if str(state.get("fingerprint")) not in (fingerprint, *also):
        raise RunFolderError(
            f"{path.parent} holds a run with other settings, model, image or patch bank; give this run another "
            "folder (run_name=NAME, or output_dir= in Python), or delete that folder to start over"
        )
    return state


def check_folder(folder: str | Path, fingerprint: str, also: Sequence[str] = ()) -> str | None:
    """Check, before anything is written, that ``folder`` holds no run or this run's own
    checkpoint: ``None`` (nothing to resume), ``"partial"`` or ``"complete"``. A checkpoint of
    another run (other settings, model, image or patch bank) raises :class:`RunFolderError`."""
    path = state_path(folder)
    if not path.is_file():
        return None
    return "complete" if bool(load_state(path, fingerprint, also)["complete"]) else "partial"


def save_state(
    path: Path,
    fingerprint: str,
    done_stages: list[Stage],
    stage: Stage | None,
    done_items: int,
    filled: bool,
    stats: dict[str, BlockStats],
    cost: dict[str, float] | None = None,
) -> None:
    """Checkpoint: the stages done, the current one (None: complete), its progress, the statistics and
    ``cost`` (the :data:`COST_KEYS` and ``sessions`` so far, over every process)."""
    arrays: dict[str, Any] = {
        "fingerprint": fingerprint,
        "format_version": FORMAT_VERSION,
        "stage_names": np.array([s.name for s in done_stages] + [stage.name if stage else ""]),
        "done_items": done_items,
        "filled": filled,
        "complete": stage is None,
    }
    for name, s in stats.items():
        arrays.update(s.state(f"{name}/"))
    for key, value in (cost or {}).items():
        arrays[f"cost/{key}"] = value
    write_state(path, arrays)


def carried_cost(state: dict[str, np.ndarray]) -> dict[str, float] | None:
    """The cost a checkpoint records (the :data:`COST_KEYS` and ``sessions``), or None for a checkpoint
    written before cem_lab recorded it."""
    if "cost/sessions" not in state:
        return None
    out = {key: float(state[f"cost/{key}"]) for key in COST_KEYS if f"cost/{key}" in state}
    out["sessions"] = float(state["cost/sessions"])
    return out


def restore(
    state: dict[str, np.ndarray], estimator: Estimator, n_blocks: int, baseline: float
) -> tuple[Stage | None, list[Stage], dict[str, BlockStats], int, bool]:
    """The plan position of a checkpoint: (current stage, stages done, statistics, items done of the
    current stage, whether its skipped blocks are filled). The stages are replayed from the saved
    statistics: every decision of an estimator is a function of them."""
    names = [str(s) for s in state["stage_names"]]
    stats = {}
    for name in names:
        if name and f"{name}/n" in state:
            stats[name] = BlockStats.from_state(state, f"{name}/")
    done: list[Stage] = []
    stage = estimator.first_stage(n_blocks)
    for _ in names[:-1]:
        done.append(stage)
        stage = estimator.next_stage(done, stats, baseline)
    if bool(state["complete"]):
        stage = None
    return stage, done, stats, int(state["done_items"]), bool(state["filled"])


def cost_record(this_session: dict[str, Any], cost: dict[str, Any] | None) -> dict[str, Any]:
    """summary.json's cost: ``forward_passes``, ``pixels_pushed``, ``checkpoints`` and ``timings`` of the
    whole run (every process that worked on it, when it was resumed), ``sessions`` (how many of them),
    ``cost_recorded_since_start`` (False when an older checkpoint did not record the work before it) and
    ``this_session`` (the same counts for the launch that wrote the result: this process, or the processes
    of one multi-device launch). ``cost``: the stage loop's record (``total``, ``recorded``); None: this
    session's counts are the run's."""
    if cost is None:
        return this_session
    total = cost["total"]
    timings = {**this_session["timings"], **{k: round(total[k], 6) for k in ("prepare_s", "run_s", "checkpoint_s")}}
    return {
        "forward_passes": int(total["forward_passes"]),
        "pixels_pushed": int(total["pixels_pushed"]),
        "checkpoints": int(total["checkpoints"]),
        "timings": timings,
        "sessions": int(total["sessions"]),
        "cost_recorded_since_start": bool(cost["recorded"]),
        "this_session": this_session,
    }
