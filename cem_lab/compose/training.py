"""The objects of a `cem-train` run (conf/train.yaml), built and checked with nothing written: the tasks,
the network (its scale against the tasks'), the data module and the Lightning module (:func:`build`), the
trainer (:func:`build_trainer`), and
the check that a reused run folder holds a run of the same settings (:func:`check_same_settings`).
The console script: :mod:`cem_lab.cli.train`."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict

from cem_lab.bookkeeping.clean_errors import one_line
from cem_lab.bookkeeping.neutral_keys import TRAIN_NEUTRAL_KEYS
from cem_lab.compose.build import build_model, build_task
from cem_lab.compose.devices import check_accelerator
from cem_lab.errors import CemLabError
from cem_lab.models.checkpoint import CheckpointError, _import_target
from cem_lab.run_format import CONFIG_FILE
from cem_lab.tasks.base import task_label
from cem_lab.tasks.factory import TASKS


def _plain(value):
    """A config node as plain Python (mappings and lists), anything else unchanged."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


class TrainingError(CemLabError, ValueError):
    """A training configuration that cannot work (model, task and scale, data)."""


# ----------------------------------------------------------------------------- building
def build_tasks(cfg: DictConfig) -> tuple[list, bool]:
    """The task objects and whether SR inputs are pre-upsampled (several tasks: always)."""
    # lazy: cem_lab.training imports Lightning (seconds); a refused command line does not need it
    from cem_lab.training.data import resolve_tasks

    if cfg.get("tasks"):
        specs = OmegaConf.to_container(cfg.tasks, resolve=True)
        if not isinstance(specs, list):
            specs = [specs]
        tasks = resolve_tasks(specs)
    else:
        tasks = [build_task(cfg.task)]
    pre = cfg.data.get("pre_upsample")
    if pre is None:
        pre = len(tasks) > 1
    if len(tasks) > 1 and not pre:
        raise TrainingError(
            "several tasks need data.pre_upsample=true (or null): a multi-task model "
            "is trained on scale-1 pairs, SR inputs bicubic-upsampled to the HR size"
        )
    return tasks, bool(pre)


def _model_name(cfg: DictConfig) -> str:
    name = cfg.model.get("name") if "name" in cfg.model else None
    target = None
    if "net" in cfg.model and OmegaConf.is_dict(cfg.model.net):
        target = cfg.model.net.get("_target_")
    if name and target:
        return f"{name} ({target})"
    return str(name or target or "the model")


def _is_missing(node: DictConfig, key: str) -> bool:
    """Whether ``node.key`` exists with the value ``???`` (``key in node`` is False for those)."""
    try:
        return bool(OmegaConf.is_missing(node, key))
    except Exception:
        return False


def build_net(cfg: DictConfig, tasks: list, pre_upsample: bool):
    """Instantiate the network (and load ``model.checkpoint`` / ``model.path``)."""
    if _is_missing(cfg.model, "checkpoint"):
        raise TrainingError(
            f"model config {cfg.model.get('name')!r} requires model.checkpoint (the weights "
            "to start from); pass model.checkpoint=null to train from scratch"
        )
    net_cfg = cfg.model.get("net") if "net" in cfg.model else None
    if (
        net_cfg is not None
        and OmegaConf.is_dict(net_cfg)
        and "scale" in net_cfg
        and OmegaConf.is_interpolation(net_cfg, "scale")
    ):
        # a model config's scale follows the task; scale-1 pairs (pre-upsampled SR, several tasks,
        # DN, DR) need a scale-1 network
        wanted = 1 if (pre_upsample or len(tasks) > 1) else tasks[0].scale
        with open_dict(net_cfg):
            net_cfg.scale = wanted
    try:
        net = build_model(cfg.model)
    except InstantiationException as err:
        target = net_cfg.get("_target_") if net_cfg is not None else None
        reason = " ".join(str(err).split())
        reason = reason.replace(", set env var HYDRA_FULL_ERROR=1 to see chained exception.", ";")
        try:
            _import_target(str(target))
        except CheckpointError as missing:
            raise TrainingError(
                f"model.net._target_={target!r} is not an importable class: {missing}; use a model "
                "config (model=srcnn|fsrcnn|edsr|srresnet|rcan|swinlite|dncnn) or the dotted path of "
                "an nn.Module class"
            ) from err
        raise TrainingError(f"cannot build the model {target}: {reason}") from err
    if not isinstance(net, torch.nn.Module):
        raise TrainingError(
            f"model.net._target_ built a {type(net).__name__}, not a torch.nn.Module: {_model_name(cfg)}"
        )
    return net


def network_scale(net) -> int:
    """The network's output/input size ratio: its ``scale`` attribute, else a probe forward."""
    scale = getattr(net, "scale", None)
    if isinstance(scale, int) and not isinstance(scale, bool):
        return scale
    was_training = net.training
    net.eval()
    try:
        param = next(net.parameters(), None)
        x = torch.zeros(1, 3, 16, 16, device=param.device if param is not None else "cpu")
        with torch.no_grad():
            out = net(x)
    except Exception as err:
        raise TrainingError(f"cannot probe the model's scale with a 16x16 input: {err}") from err
    finally:
        net.train(was_training)
    ratio = out.shape[-1] / 16
    if ratio != int(ratio) or out.shape[-2] != out.shape[-1]:
        raise TrainingError(f"the model maps a 16x16 input to {tuple(out.shape[-2:])}: not an integer scale")
    return int(ratio)


def check_scale(net, tasks: list, pre_upsample: bool, model: str) -> None:
    """The network's scale must be the one the training pairs have (error names both)."""
    scale = network_scale(net)
    if pre_upsample or len(tasks) > 1:
        if scale != 1:
            raise TrainingError(
                f"tasks {', '.join(task_label(t) for t in tasks)} are trained on scale-1 pairs (SR "
                f"inputs bicubic-upsampled to the HR size), but {model} has scale {scale}; "
                "set model.net.scale=1"
            )
        return
    task = tasks[0]
    if scale != task.scale:
        hint = (
            f"set task.scale={scale} or model.net.scale={task.scale}"
            if task.scale > 1 and scale > 1
            else f"set model.net.scale={task.scale}"
            if task.scale > 1
            else "set model.net.scale=1"
        )
        kind = (
            f"SR x{task.scale} needs"
            if task.scale > 1
            else f"{task.describe()['name'].upper()} ({task_label(task)}) needs"
        )
        raise TrainingError(f"task {kind} a network of scale {task.scale}, but {model} has scale {scale}; {hint}")


def build(cfg: DictConfig):
    """Everything a run needs, checked, with nothing written: (net, datamodule, module, tasks)."""
    # lazy: Lightning (seconds), only once the settings are read
    import lightning as L

    from cem_lab.training.data import (
        RestorationDataModule,  # lazy: Lightning costs seconds at start-up; built only once the config is checked
    )
    from cem_lab.training.restoration_module import (
        RestorationModule,  # lazy: Lightning costs seconds at start-up; built only once the config is checked
    )

    check_accelerator(
        cfg.trainer.accelerator,
        cfg.trainer.devices,
        "trainer",
        "use trainer.accelerator=cpu, or trainer.accelerator=auto (the best this machine has)",
    )
    t = cfg.train
    tasks, pre = build_tasks(cfg)
    if isinstance(t.steps, bool) or not isinstance(t.steps, int) or t.steps < 1:
        raise TrainingError(f"train.steps must be a positive integer, got {t.steps!r}")
    if isinstance(t.val_every, bool) or not isinstance(t.val_every, int) or t.val_every < 1:
        raise TrainingError(f"train.val_every must be a positive integer, got {t.val_every!r}")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    net = build_net(cfg, tasks, pre)
    check_scale(net, tasks, pre, _model_name(cfg))
    d = cfg.data
    dm = RestorationDataModule(
        tasks,
        images=d.images,
        crop=t.crop,
        batch_size=t.batch_size,
        steps_per_epoch=t.val_every,
        seed=int(cfg.seed),
        val_images=d.val_images,
        val_crop=d.val_crop,
        val_seed=d.val_seed,
        pre_upsample=pre,
        augment=d.augment,
        num_workers=d.num_workers,
        pool=d.get("pool"),
    )
    dm.setup("fit")
    module = RestorationModule(
        net,
        tasks,
        lr=float(t.lr),
        betas=list(t.betas),
        weight_decay=float(t.weight_decay),
        schedule=t.schedule,
        max_steps=int(t.steps),
        min_lr=float(t.min_lr),
        milestones=list(t.milestones or []),
        gamma=float(t.gamma),
        warmup_steps=int(t.warmup_steps),
        ema_decay=None if t.ema is None else float(t.ema),
        crop_border=cfg.metric.crop_border,
        test_y_channel=cfg.metric.test_y_channel,
        pre_upsample=pre,
        loss=str(t.get("loss", "l1")),
        task_weights=_plain(t.get("task_weights")),
    )
    return net, dm, module, tasks


def build_trainer(cfg: DictConfig, output_dir: Path, callbacks: list):
    """The Lightning ``Trainer`` of a run (``trainer`` and ``train`` settings), logging to ``output_dir``;
    a setting Lightning refuses (``trainer.precision=64x``) is a user error, raised before anything is written."""
    # lazy: Lightning (seconds), only once the settings are checked
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.loggers import CSVLogger

    tr = cfg.trainer
    try:
        return L.Trainer(
            max_steps=int(cfg.train.steps),
            max_epochs=-1,
            accelerator=tr.accelerator,
            devices=tr.devices,
            precision=tr.precision,
            logger=CSVLogger(str(output_dir), name="logs"),
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=bool(tr.progress),
            enable_model_summary=bool(tr.progress),
            log_every_n_steps=int(tr.log_every),
            num_sanity_val_steps=0,
            check_val_every_n_epoch=1,
            gradient_clip_val=cfg.train.grad_clip,
            default_root_dir=str(output_dir),
        )
    except (MisconfigurationException, ValueError) as err:  # the constructor's checks of its arguments
        raise TrainingError(
            f"trainer: {one_line(str(err))} (check trainer.accelerator, trainer.devices and trainer.precision)"
        ) from None


#: settings that do not change the trained weights (the program's neutral keys): they may differ when a
#: run is resumed (train.steps too: a resumed run may train longer, following the longer schedule)
_VOLATILE = ("train.steps", *TRAIN_NEUTRAL_KEYS)


#: settings added after the first runs were written, with the value those runs used: a stored
#: config.yaml without the key is read with this value
_ADDED_LATER = {"train.loss": "l1", "model.net.local_mlp": False}


def _task_by_target(config: dict) -> dict:
    """A stored config whose task is named (``task: {name: sr, scale: 4}``, written before tasks had a
    ``_target_``) with the task's class instead, as configs are written now."""
    task = config.get("task")
    if isinstance(task, dict) and "_target_" not in task and task.get("name") in TASKS:
        cls = TASKS[task["name"]]
        rest = {k: v for k, v in task.items() if k != "name"}
        config = {**config, "task": {"_target_": f"{cls.__module__}.{cls.__qualname__}", **rest}}
    return config


def _flat(node, prefix: str = "") -> dict:
    out = {}
    for key, value in (node or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def check_same_settings(output_dir: Path, cfg: DictConfig) -> None:
    """Refuse to resume or report a run folder whose ``config.yaml`` holds other settings: a
    fixed folder (``hydra.run.dir=...``, ``cem-zoo``'s ``runs/zoo/<name>``) reused for a changed
    command would otherwise continue, or hand back, a model trained with the old settings.
    A key missing on one side counts as null (``_ADDED_LATER`` gives the exceptions)."""
    stored_file = Path(output_dir) / CONFIG_FILE
    if not stored_file.is_file():
        return
    try:
        stored = yaml.safe_load(stored_file.read_text()) or {}
    except yaml.YAMLError as err:
        raise TrainingError(
            f"{stored_file} is not readable YAML ({err}); delete the run folder {output_dir} to train afresh"
        ) from err
    now = _flat(OmegaConf.to_container(cfg, resolve=True))
    before = _flat(_task_by_target(stored))
    before.update({k: v for k, v in _ADDED_LATER.items() if k in now and k not in before})
    diffs = [
        f"{k}: {before.get(k)!r} there, {now.get(k)!r} now"
        for k in sorted(set(now) | set(before))
        if not k.startswith(_VOLATILE) and before.get(k) != now.get(k)
    ]
    if diffs:
        shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
        raise TrainingError(
            f"the run folder {output_dir} holds a run with other settings ({shown}); "
            "rerun it with its own settings, or give this one another folder "
            "(hydra.run.dir=...), or delete the old folder to train afresh"
        )


def map_task_overrides(cfg: DictConfig) -> list[str]:
    """The cem-lab overrides of the task a single-task model was trained on (none for several tasks)."""
    if cfg.get("tasks"):
        return []
    d = dict(build_task(cfg.task).describe())
    name = d.pop("name")
    if name not in TASKS:
        return []
    d.pop("kernel", None)  # derived, not a setting
    if name in ("dn", "dr"):
        d.pop("scale", None)
    return [f"task={name}", *(f"task.{k}={v}" for k, v in d.items())]
