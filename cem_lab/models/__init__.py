"""Models and checkpoints: the architectures (:mod:`cem_lab.models.archs`), checkpoint reading/saving
(:mod:`cem_lab.models.checkpoint`), the embedded default model, the zoo, the pretrained catalogue
(ncnn graphs: :mod:`cem_lab.models.ncnn`) and official architectures by checkpoint path (spandrel)."""

from __future__ import annotations

from cem_lab.models.archs import EDSR, FSRCNN, RCAN, SRCNN, DnCNN, SRResNet, SwinLite
from cem_lab.models.checkpoint import (
    CheckpointError,
    build_from_config,
    load_model,
    load_weights,
    read_state_dict,
    save_weights,
)
from cem_lab.models.embedded import EMBEDDED_WEIGHTS, embedded_demo_image, load_embedded_model

__all__ = [
    "EDSR",
    "EMBEDDED_WEIGHTS",
    "FSRCNN",
    "RCAN",
    "SRCNN",
    "CheckpointError",
    "DnCNN",
    "SRResNet",
    "SwinLite",
    "build_from_config",
    "embedded_demo_image",
    "load_embedded_model",
    "load_model",
    "load_weights",
    "read_state_dict",
    "save_weights",
]
