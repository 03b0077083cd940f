"""How well a restoration network restores pictures it never saw: PSNR / SSIM on an image pool.

The held-out pool (:data:`cem_lab.standard_images.IMAGE_POOLS` ``["heldout"]``: sporco's monarch, barbara,
kodim23, sail and tulips) is what no zoo model trains or validates on. Each picture is used whole
(cut to a multiple of the scale), degraded by the task's own ``degrade`` with the seed
``seed + k`` (k = its place in the pool), restored, and measured with the conventions of training
validation (BasicSR's): outputs quantized to uint8; SR on the Y channel with ``crop_border`` =
scale; DN, DR and JPEG on RGB with no crop. The trivial baseline is bicubic upsampling for SR and the
degraded input otherwise.

:func:`evaluate_network` measures any network; :func:`evaluate_zoo_model` a zoo model on each task
it was trained for (a scale-1 mixed model restores SR inputs as its ``upsampling='pre'`` twin, as
in the CEM). The zoo stores the outcome in each model's ``.yaml`` (``heldout:``), which
``cem-zoo table`` prints; ``tests/models/test_zoo.py`` recomputes it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cem_lab.errors import InputError
from cem_lab.metrics import psnr, ssim
from cem_lab.models.zoo import ZOO_DIR, load_zoo_model, read_zoo_entry
from cem_lab.standard_images import image_pool, standard_image
from cem_lab.tasks import Task, crop_to_scale, make_task, task_from_description
from cem_lab.tasks.base import task_label
from cem_lab.training.data import to_chw_uint8
from cem_lab.training.restoration_module import RestorationModule, trivial_baseline

__all__ = ["HELDOUT_POOL", "evaluate_network", "evaluate_zoo_model", "pool_images", "summarise"]

HELDOUT_POOL = "heldout"


def pool_images(pool: str = HELDOUT_POOL, names: Sequence[str] | None = None) -> list[tuple[str, torch.Tensor]]:
    """(name, (1, 3, H, W) float in [0, 1]) of every picture of ``pool`` (or the ``names`` given)."""
    out = []
    for name in names if names is not None else image_pool(pool):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a grey picture replicated to RGB
            arr = standard_image(name)
        out.append((name, to_chw_uint8(arr)[None].float() / 255.0))
    return out


@torch.no_grad()
def evaluate_network(
    net: nn.Module,
    task: Task,
    images: Sequence[tuple[str, torch.Tensor]],
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """One record per picture: ``image``, ``psnr``, ``ssim``, ``baseline_psnr``, ``baseline_ssim``, ``gain``."""
    net = net.to(device).eval()
    sr = task.scale > 1
    crop_border, y = (task.scale, True) if sr else (0, False)
    records = []
    for k, (name, clean) in enumerate(images):
        clean = crop_to_scale(clean, task.scale)
        inputs = task.degrade(clean, seed + k)
        out = net(inputs.to(device)).cpu()
        if out.shape[-2:] != clean.shape[-2:]:
            raise InputError(
                f"the network returned {tuple(out.shape[-2:])} for {name}, the task needs "
                f"{tuple(clean.shape[-2:])}: a network of another scale than the task's x{task.scale}"
            )
        base = trivial_baseline(inputs, clean.shape[-2:])  # the validation's own baseline and measure
        t, o, b = (RestorationModule._measure_space(v, crop_border, y) for v in (clean, out, base))
        rec = {
            "image": name,
            "psnr": float(psnr(o, t)[0]),
            "ssim": float(ssim(o, t)[0]),
            "baseline_psnr": float(psnr(b, t)[0]),
            "baseline_ssim": float(ssim(b, t)[0]),
        }
        rec["gain"] = rec["psnr"] - rec["baseline_psnr"]
        records.append({k2: (round(v, 4) if isinstance(v, float) else v) for k2, v in rec.items()})
    return records


def summarise(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Means over the pictures, how many the network wins (gain > 0) and which it loses."""
    keys = ("psnr", "ssim", "baseline_psnr", "baseline_ssim", "gain")
    out: dict[str, Any] = {k: round(float(np.mean([r[k] for r in records])), 4) for k in keys}
    out["images"] = len(records)
    out["wins"] = int(sum(r["gain"] > 0 for r in records))
    out["loses_on"] = [r["image"] for r in records if r["gain"] <= 0]
    out["per_image"] = [dict(r) for r in records]
    return out


def _described_tasks(entry: Mapping[str, Any]) -> list[dict]:
    return [dict(entry["task"])] if "task" in entry else [dict(t) for t in entry["tasks"]]


def evaluate_zoo_model(
    name: str, pool: str = HELDOUT_POOL, seed: int = 0, zoo_dir: Path | None = None, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """The held-out record of zoo model ``name``: ``{"pool", "seed", "images", "tasks": {label: summary}}``."""
    zoo_dir = ZOO_DIR if zoo_dir is None else Path(zoo_dir)
    entry = read_zoo_entry(name, zoo_dir)
    images = pool_images(pool)
    tasks: dict[str, Any] = {}
    for described in _described_tasks(entry):
        task = task_from_description(described) if "name" in described else make_task(**described)
        net = load_zoo_model(name, scale=task.scale, zoo_dir=zoo_dir)
        tasks[task_label(task)] = summarise(evaluate_network(net, task, images, seed=seed, device=device))
    return {
        "pool": pool,
        "seed": seed,
        "images": [n for n, _ in images],
        "conventions": "uint8 outputs; SR: Y channel, crop_border = scale; DN/DR: RGB, no crop; "
        "degradation seed = seed + index in the pool",
        "tasks": tasks,
    }
