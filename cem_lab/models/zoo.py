"""The embedded model zoo: small networks trained by this project, shipped in the package.

Each model is ``cem_lab/assets/zoo/<name>.safetensors`` with its ``<name>.yaml`` (architecture,
task, validation PSNR / SSIM beside the trivial baseline, the training command). The recipes and
the command that trains them are in :mod:`cem_lab.cli.zoo` (``cem-zoo``). Load one by name::

    from cem_lab.models.zoo import load_zoo_model, zoo_names
    net = load_zoo_model("edsr_d4_w16_x4")
    net = load_zoo_model("srresnet_mixed", scale=4)   # the multi-task model on SR x4 LR inputs

or from the CLI: ``cem-lab model=zoo model.id=edsr_d4_w16_x4 task=sr task.scale=4``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from cem_lab.errors import CemLabError
from cem_lab.models.checkpoint import CheckpointError, build_from_config, load_weights

ZOO_DIR = Path(__file__).resolve().parent.parent / "assets" / "zoo"

__all__ = ["ZOO_DIR", "ZooError", "load_zoo_model", "read_zoo_entry", "zoo_names"]


class ZooError(CemLabError, ValueError):
    """An unknown zoo name, or a zoo model asked for a task scale it cannot serve."""


def zoo_names(zoo_dir: Path = ZOO_DIR) -> list[str]:
    """The names of the models in ``zoo_dir`` (read when called, not at import)."""
    if not zoo_dir.is_dir():
        return []
    return sorted(p.stem for p in zoo_dir.glob("*.safetensors") if (zoo_dir / f"{p.stem}.yaml").is_file())


def read_zoo_entry(name: str, zoo_dir: Path = ZOO_DIR) -> dict:
    """The ``.yaml`` of zoo model ``name``."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name:
        raise ZooError(f"a zoo model name is a plain name, got {name!r}")
    path = zoo_dir / f"{name}.yaml"
    if not path.is_file() or not (zoo_dir / f"{name}.safetensors").is_file():
        known = zoo_names(zoo_dir)
        raise ZooError(
            f"no zoo model named {name!r}; known: "
            f"{', '.join(known) if known else '(none: train them with cem-zoo train)'}"
        )
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, Mapping) or not isinstance(data.get("model"), Mapping):
        raise ZooError(f"{path} is not a cem_lab model config (no 'model' mapping)")
    return dict(data)


def _scale(config: Mapping[str, Any]) -> int:
    return int(config.get("scale", 1))


def load_zoo_model(name: str, scale: int | None = None, zoo_dir: Path = ZOO_DIR) -> nn.Module:
    """Zoo model ``name`` with its weights, in eval mode.

    ``scale``: the scale of the task it will run on (``None``: the model's own). A scale-1 model
    trained on bicubic-pre-upsampled SR inputs (the multi-task study) is returned as its
    ``upsampling='pre'`` twin when asked for the SR scale it was trained on: same weights, takes the
    LR image. Any other mismatch is an error that names the scales the model serves.
    """
    entry = read_zoo_entry(name, zoo_dir)
    config = dict(entry["model"])
    own = _scale(config)
    pre = (entry.get("pre_upsampled_sr") or {}).get("model")
    served = {own: config}
    if isinstance(pre, Mapping):
        served[_scale(pre)] = dict(pre)
    want = own if scale is None else int(scale)
    if want not in served:
        raise ZooError(
            f"zoo model {name!r} serves scale {' or '.join(map(str, sorted(served)))}, "
            f"not {want}; pick a task of that scale or another model"
        )
    try:
        net = build_from_config(served[want])
        load_weights(net, zoo_dir / f"{name}.safetensors", strict=True)
    except CheckpointError as err:
        raise ZooError(f"zoo model {name!r} cannot be loaded: {err}") from err
    return net.eval()
