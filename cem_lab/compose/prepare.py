"""A `cem-lab` run from its config: every input built and checked (:func:`prepare`), then computed in
one process or spread over several (:func:`compute`).

``parallel`` (conf/parallel/) says how many processes compute one map: with one device and one node
the map runs here, else the Fabric executor (:mod:`cem_lab.parallel.fabric`) spreads its work units.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cem_lab.api import run_cem
from cem_lab.causal.run import prepare_cem
from cem_lab.causal.settings import CEMSettings
from cem_lab.compose.build import (
    build_model,
    build_node,
    build_patch_bank,
    build_task,
    check_model_task,
    checkpoint_cadence,
    crop_input,
    resolve_roi,
)
from cem_lab.compose.devices import check_accelerator, check_device
from cem_lab.models.embedded import embedded_demo_image
from cem_lab.parallel.fabric import compute_cem_distributed
from cem_lab.viz.style import FigureStyle

#: the keys of the `cem` node that are objects' `_target_` nodes (or a built-in's short name)
OBJECT_KEYS = ("estimator", "sampler", "intervention")


@dataclass
class PreparedRun:
    """A run whose every input has been built and checked, with nothing written yet."""

    job: Any  #: the checked CEMJob (on the run's device; for several processes a check only)
    model: Any
    image: Any
    task: Any
    roi: list
    kwargs: dict  #: compute_cem's keywords
    distributed: dict | None  #: parallel settings when the map is spread over processes


def distributed_settings(cfg: DictConfig) -> dict | None:
    """The ``parallel`` settings when they spread one map over several processes (devices != 1 or
    several nodes), else None (one process). Devices this machine does not have (``parallel=ddp_gpu``
    without a GPU) are refused here, before anything is written."""
    dist = cfg.get("parallel") or {}
    if int(dist.get("devices", 1) or 1) == 1 and int(dist.get("num_nodes", 1) or 1) <= 1:
        return None
    settings = OmegaConf.to_container(dist, resolve=True)
    assert isinstance(settings, dict)
    choice = _group_choice("parallel")
    check_accelerator(
        settings.get("accelerator", "auto"),
        settings.get("devices"),
        f"parallel={choice}: parallel" if choice else "parallel",
        "use parallel=ddp_cpu (the map spread over CPU processes) or parallel=single (one process on `device`)",
    )
    return settings


def _group_choice(group: str) -> str | None:
    """The option of config group ``group`` this run was composed with (None outside a Hydra run)."""
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get(group)


def checked_values(cfg: DictConfig) -> dict:
    """The plain values of the map's settings (the ``cem`` group's knobs and the run-level keys that change
    the map, objects' nodes left out), each checked (:meth:`CEMSettings.check_values`): a key the
    settings do not know or a value of the wrong type or range is refused, with the key named."""
    values = {k: v for k, v in OmegaConf.to_container(cfg.cem, resolve=True).items() if k not in OBJECT_KEYS}  # type: ignore[union-attr]
    run_keys = {
        "metric": "metric.name",
        "crop_border": "metric.crop_border",
        "test_y_channel": "metric.test_y_channel",
        **{k: k for k in ("seed", "batch_size", "forward_batch", "mode", "crop_margin", "crop_multiple", "recompute")},
    }
    # a program whose config lacks a run-level key (cem-attribution has no recompute) gets the setting's default
    values.update(
        {key: OmegaConf.select(cfg, path) for key, path in run_keys.items() if OmegaConf.select(cfg, path) is not None}
    )
    CEMSettings.check_values(values)
    return values


def map_settings(cfg: DictConfig, values: dict | None = None) -> CEMSettings:
    """The map's :class:`~cem_lab.causal.settings.CEMSettings` from a `cem-lab` config: the ``cem`` group
    (estimator, block, counts, intervention, sampler) and the run-level keys that change the map. A key
    the settings do not know (``+cem.fien=5``) is refused, never ignored; a value of the wrong type or
    range is refused with the key named.

    ``cem.estimator``, ``cem.sampler`` and ``cem.intervention`` are ``_target_`` nodes (conf/cem/,
    conf/sampler/, conf/intervention/; a user's own class is added the same way) and are built here;
    a built-in's short name (``cem.intervention=zeros``) is still accepted. ``values``: the
    :func:`checked_values` of ``cfg`` when the caller has them already."""
    # the plain values first: a bad `cem.fine` is named as itself
    values = dict(values) if values is not None else checked_values(cfg)
    values.update({key: build_node(cfg.cem[key], f"cem.{key}") for key in OBJECT_KEYS if key in cfg.cem})
    return CEMSettings.from_mapping(values)


def prepare_kwargs(cfg: DictConfig, output_dir: Path):
    """The model, image, task and :func:`~cem_lab.causal.run.prepare_cem` keywords of ``cfg``,
    and the run keywords (output folder, figures, progress, checkpoint cadence)."""
    values = checked_values(cfg)  # a plain value (seed=x, cem.block=-1) is refused before anything is built
    figures = FigureStyle.from_setting(cfg.figures).as_setting()  # figures.format=jpg too; plain for Fabric
    device = check_device(cfg.device)
    task = build_task(cfg.task)
    torch.manual_seed(cfg.seed)  # models without a checkpoint get a reproducible initialisation
    check_model_task(cfg.model, task)
    image, name = cfg.image, None
    if image is None and cfg.degraded is None:
        image, name = embedded_demo_image(), "chelsea_256"
    image, name = crop_input(cfg, image, name)
    roi, placement = resolve_roi(cfg, image, task)
    model = build_model(cfg.model).to(device)
    settings = map_settings(cfg, values)
    # an intervention built from its node holds its own bank; the short name "lv" draws from `patches`
    bank = (
        build_patch_bank(cfg.patches)
        if isinstance(settings.intervention, str) and settings.intervention == "lv"
        else None
    )
    every_s, every_items = checkpoint_cadence(cfg)
    kwargs = dict(
        degraded=cfg.degraded,
        patch_bank=bank,
        image_seed=cfg.image_seed,
        image_name=name,
        model_name=cfg.model.get("name") or getattr(model, "name", None),
        roi_placement=placement,
        device=device,
        # the settings as keywords (the atlas and the Fabric executor take keywords)
        **{key: getattr(settings, key) for key in CEMSettings.keys()},
    )
    run_kwargs = dict(
        output_dir=output_dir,
        figures=figures,
        progress=cfg.progress,
        checkpoint_every=every_s,
        checkpoint_every_items=every_items,
    )
    return model, image, task, kwargs, run_kwargs, roi


def prepare(cfg: DictConfig, output_dir: Path) -> PreparedRun:
    """Build the task, model, patch bank and the CEM job of ``cfg`` and check them and the folder's
    checkpoint (another run's is refused): every refusal happens here, before anything is written."""
    distributed = distributed_settings(cfg)  # devices this machine lacks: refused before the model is built
    model, image, task, kwargs, run_kwargs, roi = prepare_kwargs(cfg, output_dir)
    device = kwargs.pop("device")
    with _quiet("cem_lab") if distributed else nullcontext():
        # for several processes this is a check only: rank 0 prepares the job again and logs it
        job = prepare_cem(model, image, task, list(roi), device=device, **kwargs)
        job.check_folder(output_dir)
    return PreparedRun(job, model, image, task, list(roi), {**kwargs, **run_kwargs}, distributed)


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log_ = logging.getLogger(logger)
    level = log_.level
    log_.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log_.setLevel(level)


def launch_rank(cfg: DictConfig) -> int:
    """This process's rank when a cluster started one process per device (``srun`` with
    ``parallel=ddp_gpu``, or ``torchrun``); 0 otherwise. Only rank 0 locks and writes the run folder."""
    dist = cfg.get("parallel") or {}
    if int(dist.get("devices", 1) or 1) == 1 and int(dist.get("num_nodes", 1) or 1) == 1:
        return 0
    for var in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(var, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def compute(p: PreparedRun, output_dir: Path, on_batch: Callable | None = None):
    """Run a prepared map: its checkpoints, numbers and figures go to ``output_dir``."""
    if p.distributed is None:
        kw = p.kwargs
        return run_cem(
            p.job,
            output_dir,
            figures=kw["figures"],
            progress=kw["progress"],
            on_batch=on_batch,
            checkpoint_every=kw["checkpoint_every"],
            checkpoint_every_items=kw["checkpoint_every_items"],
        )
    d = p.distributed
    p.job = None  # the check is done; each process builds its own job
    return compute_cem_distributed(
        p.model.cpu(),
        p.image,
        p.task,
        p.roi,
        devices=d.get("devices"),
        accelerator=d.get("accelerator", "auto"),
        num_nodes=int(d.get("num_nodes", 1)),
        strategy=d.get("strategy", "ddp_spawn"),
        log_file=str(output_dir / "cem.log"),
        **p.kwargs,
    )
