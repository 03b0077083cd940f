"""Training: the Lightning module and data module behind `cem-train` (lightning is imported lazily).

- :class:`~cem_lab.engine.restoration_module.RestorationModule`: L1 + Adam training of any
  restoration network, EMA, validation PSNR / SSIM (BasicSR conventions) beside the trivial
  baseline, export to ``.safetensors`` + ``.yaml``;
- :class:`~cem_lab.engine.data.RestorationDataModule`: random crops degraded on the fly by the
  task objects, one task or a mix, embedded pictures or a folder.

The bookkeeping of the CLI runs lives here too, below the entry points of cem_lab.cli:
:mod:`~cem_lab.engine.run_folder` (a run folder from refusal to acceptance: config, Hydra's record,
log), :mod:`~cem_lab.engine.run_index` (``done.json``: a finished run recognised without model
work), :mod:`~cem_lab.engine.sweep_record` (sweep folder names, per-job outcomes and error files,
progress, ``sweep_summary.json``) and :mod:`~cem_lab.engine.wandb_logging` (W&B runs).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "RestorationModule": "cem_lab.engine.restoration_module",
    "RestorationDataModule": "cem_lab.engine.data",
    "DataError": "cem_lab.engine.data",
    "resolve_tasks": "cem_lab.engine.data",
    "task_label": "cem_lab.engine.data",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cem_lab.engine' has no attribute {name!r}")
