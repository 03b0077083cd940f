"""The config keys that do not change a result: one list per program, the only one.

A key named here is left out of a run's folder name (Hydra's ``override_dirname``: conf/*.yaml read
the list through the ``cem_neutral_keys`` resolver), out of a sweep's folder name
(:func:`cem_lab.bookkeeping.folder_names.sweep_name`) and out of the identity that recognises a
finished run (:func:`cem_lab.bookkeeping.run_index.identity_config`), so that a rerun differing only in
these keys finds its folder and is skipped. Keys are dotted, as overrides name them; a key of a
config group (``parallel.devices``) leaves only that key out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cem_lab.errors import InputError

#: `cem-lab` (conf/cem.yaml)
CEM_NEUTRAL_KEYS: tuple[str, ...] = (
    "progress",
    "batch_size",
    "device",
    "figures",
    "figures.draw",
    "figures.format",
    "figures.dpi",
    "figures.range",
    "hydra.verbose",
    "launcher",
    "logger",
    "sweep_name",
    "run_name",
    "parallel.devices",
    "parallel.accelerator",
    "parallel.num_nodes",
    "parallel.strategy",
    "checkpoint.every_s",
    "checkpoint.every_items",
    "model.allow_other_task",
)

#: `cem-attribution` (conf/attribution.yaml)
ATTRIBUTION_NEUTRAL_KEYS: tuple[str, ...] = (
    "progress",
    "batch_size",
    "device",
    "figures",
    "figures.draw",
    "figures.format",
    "figures.dpi",
    "figures.range",
    "hydra.verbose",
    "sweep_name",
    "checkpoint.every_s",
    "checkpoint.every_items",
    "model.allow_other_task",
)

#: `cem-train` (conf/train.yaml): how the training is shown and where it runs, not what it learns
TRAIN_NEUTRAL_KEYS: tuple[str, ...] = (
    "trainer.progress",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.log_every",
    "data.num_workers",
    "train.checkpoint_every_min",
    "hydra.verbose",
)

NEUTRAL_KEYS: dict[str, tuple[str, ...]] = {
    "cem-lab": CEM_NEUTRAL_KEYS,
    "cem-attribution": ATTRIBUTION_NEUTRAL_KEYS,
    "cem-train": TRAIN_NEUTRAL_KEYS,
}


def neutral_keys(program: str) -> list[str]:
    """The resolver ``cem_neutral_keys``: the neutral keys of ``program`` (cem-lab, cem-attribution,
    cem-train), for ``hydra.job.config.override_dirname.exclude_keys``."""
    try:
        return list(NEUTRAL_KEYS[str(program)])
    except KeyError:
        raise InputError(f"cem_neutral_keys: unknown program {program!r}; one of {', '.join(NEUTRAL_KEYS)}") from None


def drop_keys(data: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``data`` (a plain nested dict) without the dotted ``keys``; a mapping left empty by that goes too."""
    for key in keys:
        *parents, last = key.split(".")
        node, path = data, []
        for part in parents:
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                node = None
                break
            path.append((node, part))
            node = child
        if not isinstance(node, dict) or last not in node:
            continue
        del node[last]
        for parent, part in reversed(path):
            if parent[part]:
                break
            del parent[part]
    return data
