"""What the probes (`cem-erf`, `cem-sanity`, `cem-channels`) read alike: the network (the embedded DnCNN, a zoo
or pretrained-catalogue model by name, or a checkpoint through spandrel), the images (the embedded 256x256 image, cem_lab's standard images by name, or
files) centre-cropped, the task that degrades them into model inputs, and the ROI, checked against the model's
output. :func:`probe_inputs` builds and checks them all; every refusal is one line
(:class:`~cem_lab.attribution.base.AttributionError`), raised before any gradient is computed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from cem_lab.attribution.base import AttributionError
from cem_lab.causal.grid import Roi
from cem_lab.images import load_image
from cem_lab.standard_images import list_standard_images, standard_image
from cem_lab.tasks.base import Task
from cem_lab.tasks.denoise import DenoiseTask
from cem_lab.tasks.derain import DerainTask
from cem_lab.tasks.super_resolution import SuperResolutionTask
from cem_lab.viz.style import FORMATS  # plain settings (no matplotlib)

__all__ = [
    "EMBEDDED",
    "TASKS",
    "ProbeInputs",
    "clear_outputs",
    "load_network",
    "make_task",
    "probe_inputs",
    "read_images",
]

TASKS = ("dn", "sr", "dr", "none")
EMBEDDED = "embedded"


@dataclass
class ProbeInputs:
    """The checked inputs of a probe: the network and its name, the task (None: the crops are the inputs), the
    centre crops (name, (size, size, 3) uint8), the ROI in output pixels and the model's scale."""

    net: nn.Module
    name: str
    task: Task | None
    crops: list[tuple[str, np.ndarray]]
    roi: Roi
    scale: int


def probe_inputs(
    program: str,
    model: str,
    model_path: str | None,
    images: list[str],
    size: int,
    roi: tuple[int, int, int] | None,
    task: str,
    sigma: float,
) -> ProbeInputs:
    """Build and check a probe's inputs (module docstring); ``roi=None``: a 16 px ROI at the output's centre."""
    if size < 8:
        raise AttributionError(f"--size {size}: give at least 8 pixels")
    if task not in TASKS:
        raise AttributionError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
    if task == "dn" and not sigma > 0:
        raise AttributionError(f"--sigma {sigma}: the noise level must be positive (0..255 scale)")
    crops = read_images(images, size)
    net, name = load_network(model, model_path)
    scale = int(getattr(net, "scale", 1) or 1)
    the_task = make_task(task, scale, sigma)
    if the_task is not None and size % the_task.scale:
        raise AttributionError(f"--size {size} is not a multiple of the SR scale {the_task.scale}")
    out_size = size if the_task is not None else size * scale
    if roi is None:
        s = min(16, out_size)
        roi = ((out_size - s) // 2, (out_size - s) // 2, s)
    r = Roi.parse(roi)
    if r.size < 1 or r.top < 0 or r.left < 0 or r.top + r.size > out_size or r.left + r.size > out_size:
        raise AttributionError(
            f"--roi {r.top},{r.left},{r.size} does not lie inside the {out_size}x{out_size} model output (output "
            f"pixels); TOP and LEFT must be in [0, {out_size - max(r.size, 1)}]"
        )
    return ProbeInputs(net, name, the_task, crops, r, scale)


def load_network(model: str, model_path: str | None) -> tuple[nn.Module, str]:
    """The embedded DnCNN (``model="embedded"``), a model of cem_lab's zoo or of the pretrained catalogue by name
    (converted and verified at first use, then cached), or the checkpoint at ``model_path`` (spandrel detects its
    architecture), with its name."""
    if model_path is not None:
        from cem_lab.models.by_path import load_detected  # lazy: spandrel imports torchvision

        net = load_detected(model_path)
        return net, Path(model_path).stem
    if model == EMBEDDED:
        from cem_lab.models.embedded import load_embedded_model

        return load_embedded_model(), "embedded_dncnn"
    from cem_lab.models.zoo import load_zoo_model, zoo_names

    if model in zoo_names():
        return load_zoo_model(model), model
    from cem_lab.models.pretrained import CATALOGUE, load_pretrained

    if model in CATALOGUE:
        return load_pretrained(model), model
    raise AttributionError(
        f"--model {model!r}: give --model embedded (the embedded DnCNN), a zoo model's name (cem-zoo list), a "
        "pretrained catalogue network's (cem-pretrained list) or a checkpoint file with --model-path FILE"
    )


def read_images(specs: list[str], size: int) -> list[tuple[str, np.ndarray]]:
    """Each spec (``embedded``, a standard image's name, or a file) as a centre crop of ``size`` x ``size``."""
    from cem_lab.models.embedded import embedded_demo_image

    out = []
    for spec in specs:
        if spec == EMBEDDED:
            arr, name = embedded_demo_image(), "embedded"
        elif not Path(spec).exists() and spec in list_standard_images():
            arr, name = standard_image(spec), spec
        else:
            if not Path(spec).is_file():
                raise AttributionError(
                    f"--images {spec}: no such file and no standard image of that name; give a file, 'embedded' "
                    f"or one of {', '.join(list_standard_images())}"
                )
            arr, name = load_image(spec), Path(spec).stem
        h, w = arr.shape[:2]
        if h < size or w < size:
            raise AttributionError(
                f"--images {spec} is {h}x{w}, smaller than --size {size}; give a smaller --size or a larger image"
            )
        top, left = (h - size) // 2, (w - size) // 2
        out.append((name, np.ascontiguousarray(arr[top : top + size, left : left + size])))
    return out


def make_task(name: str, model_scale: int, sigma: float) -> Task | None:
    """The task that degrades the clean crops into model inputs (None: the crops are the inputs)."""
    if name not in TASKS:
        raise AttributionError(f"--task {name!r}: choose one of {', '.join(TASKS)}")
    if name == "none":
        return None
    if name == "sr":
        if model_scale == 1:
            raise AttributionError(
                "--task sr: the model does not upscale (scale 1); use --task dn, dr or none for a restoration model"
            )
        return SuperResolutionTask(model_scale)
    if model_scale != 1:
        raise AttributionError(f"--task {name}: the model upscales x{model_scale}; use --task sr")
    return DenoiseTask(sigma) if name == "dn" else DerainTask()


def clear_outputs(out: Path, result_json: str, figures: Sequence[str]) -> None:
    """Before a probe writes into ``out``: remove its finished marker (``result_json``, written last) and its
    figures in every format, so that an interrupted or narrower rerun never leaves an earlier run's files
    passing for its own."""
    (out / result_json).unlink(missing_ok=True)
    for name in figures:
        for fmt in FORMATS:
            (out / "figures" / Path(name).with_suffix(f".{fmt}").name).unlink(missing_ok=True)
