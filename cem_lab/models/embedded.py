"""The embedded default model: a small colour DnCNN for Gaussian denoising at sigma 50.

cem_lab's no-argument run uses it, so that a fresh install works offline with no download. The
committed weights (``cem_lab/assets/embedded_dncnn.safetensors`` with its ``.yaml``) were trained on
CPU by :mod:`cem_lab.training.embedded_training`::

    python -m cem_lab.training.embedded_training --out cem_lab/assets/embedded_dncnn.safetensors --steps 800

``chelsea`` is held out of the training pictures: a 256x256 crop of the cat's face is the validation
image and the embedded demo image (:func:`embedded_demo_image`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage import data
from torch import nn

from cem_lab.models.checkpoint import CheckpointError, load_model

#: the committed weights (the YAML with the model config sits beside them)
EMBEDDED_WEIGHTS: Path = Path(__file__).resolve().parents[1] / "assets" / "embedded_dncnn.safetensors"
#: architecture of the embedded model
EMBEDDED_ARCH: dict = {"in_channels": 3, "out_channels": 3, "features": 32, "depth": 8, "residual": True}
#: noise level (0..255 scale) the embedded model is trained for
EMBEDDED_SIGMA: float = 50.0
#: training pictures (bundled with scikit-image, no network needed); chelsea is held out
TRAIN_IMAGES: tuple[str, ...] = (
    "astronaut",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "colorwheel",
)
#: the demo / validation crop of skimage.data.chelsea(): (rows, cols)
DEMO_CROP: tuple[slice, slice] = (slice(20, 276), slice(100, 356))


def embedded_demo_image() -> np.ndarray:
    """A 256x256 uint8 RGB crop of ``skimage.data.chelsea()``: the cat's eyes, nose and fur."""
    return np.ascontiguousarray(data.chelsea()[DEMO_CROP])


def load_embedded_model() -> nn.Module:
    """The committed embedded DnCNN, in eval mode."""
    if not EMBEDDED_WEIGHTS.is_file():
        raise CheckpointError(
            f"the embedded model weights are missing: {EMBEDDED_WEIGHTS}; reinstall cem_lab, or "
            "retrain them with `python -m cem_lab.training.embedded_training --out "
            "cem_lab/assets/embedded_dncnn.safetensors`"
        )
    return load_model(EMBEDDED_WEIGHTS)
