"""Models and checkpoints: DnCNN, checkpoint reading/saving, the embedded default model."""

from __future__ import annotations

from typing import Any

from cem_lab.models.archs.dncnn import DnCNN
from cem_lab.models.checkpoint import (
    CheckpointError,
    build_from_config,
    load_model,
    load_weights,
    read_state_dict,
    save_weights,
)

# the embedded-model names load lazily, so `python -m cem_lab.models.embedded` runs cleanly
_EMBEDDED = ("EMBEDDED_WEIGHTS", "embedded_demo_image", "load_embedded_model", "train_embedded")

__all__ = [
    "CheckpointError",
    "DnCNN",
    "build_from_config",
    "load_model",
    "load_weights",
    "read_state_dict",
    "save_weights",
    *_EMBEDDED,
]


def __getattr__(name: str) -> Any:
    if name in _EMBEDDED:
        from cem_lab.models import embedded

        return getattr(embedded, name)
    raise AttributeError(f"module 'cem_lab.models' has no attribute {name!r}")
