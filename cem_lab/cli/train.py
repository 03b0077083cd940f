"""`cem-train`: train a restoration network with Lightning from a Hydra config (conf/train.yaml).

    cem-train model=edsr model.net.depth=8 model.net.width=32 task=sr task.scale=4 train.steps=2000

The run folder ``runs/train/<overrides>`` holds ``config.yaml``, ``checkpoints/last.ckpt``
(Lightning), ``logs/version_*/metrics.csv`` and, at the end, ``model.safetensors`` +
``model.yaml`` (architecture, task, validation PSNR / SSIM and the trivial baseline's, steps, the
command). Rerunning the same command resumes from ``last.ckpt``; a finished run is reported, not
redone. Every setting is checked (model, task, scales, crop, images) before anything is written.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from cem_lab.cli.cem import run_name  # noqa: F401  (registers the cem_run_name resolver)

log = logging.getLogger("cem_lab")

CHECKPOINT = Path("checkpoints") / "last.ckpt"
EXPORT = "model.safetensors"


def _plain(value):
    """A config node as plain Python (mappings and lists), anything else unchanged."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


class TrainingError(ValueError):
    """A training configuration that cannot work (model, task and scale, data)."""


# ----------------------------------------------------------------------------- building
def build_tasks(cfg: DictConfig) -> tuple[list, bool]:
    """The task objects and whether SR inputs are pre-upsampled (several tasks: always)."""
    from cem_lab.training.data import resolve_tasks

    if cfg.get("tasks"):
        specs = OmegaConf.to_container(cfg.tasks, resolve=True)
        if not isinstance(specs, list):
            specs = [specs]
        tasks = resolve_tasks(specs)
    else:
        tasks = resolve_tasks(OmegaConf.to_container(cfg.task, resolve=True))
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
    import torch
    from hydra.errors import InstantiationException

    from cem_lab.cli.cem import build_model

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
        from cem_lab.models.checkpoint import CheckpointError, _import_target

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
    import torch

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
    from cem_lab.training.data import task_label

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
    import lightning as L

    from cem_lab.training.data import RestorationDataModule
    from cem_lab.training.restoration_module import RestorationModule

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


# ----------------------------------------------------------------------------- checkpoints
def _last_checkpoint_callback(path: Path):
    import lightning as L
    from lightning.pytorch.trainer.states import TrainerFn

    class LastCheckpoint(L.Callback):
        """Writes ``last.ckpt`` (atomically) after each validation during fit."""

        def __init__(self) -> None:
            self.saved_step: int | None = None

        def save(self, trainer: L.Trainer) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            trainer.save_checkpoint(tmp, weights_only=False)
            os.replace(tmp, path)
            self.saved_step = trainer.global_step

        def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING:
                self.save(trainer)

    return LastCheckpoint()


#: settings that do not change the trained weights: they may differ when a run is resumed
#: (train.steps too: a resumed run may train longer, following the longer schedule)
_VOLATILE = (
    "train.steps",
    "trainer.progress",
    "trainer.log_every",
    "trainer.accelerator",
    "trainer.devices",
    "data.num_workers",
)


#: settings added after the first runs were written, with the value those runs used: a stored
#: config.yaml without the key is read with this value
_ADDED_LATER = {"train.loss": "l1", "model.net.local_mlp": False}


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
    import yaml

    stored_file = Path(output_dir) / "config.yaml"
    if not stored_file.is_file():
        return
    try:
        stored = yaml.safe_load(stored_file.read_text()) or {}
    except yaml.YAMLError as err:
        raise TrainingError(
            f"{stored_file} is not readable YAML ({err}); delete the run folder {output_dir} to train afresh"
        ) from err
    now = _flat(OmegaConf.to_container(cfg, resolve=True))
    before = _flat(stored)
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


def _finished(output_dir: Path, steps: int) -> dict | None:
    """The exported model's YAML when this run already trained ``steps`` steps and exported."""
    import yaml

    weights, meta = output_dir / EXPORT, (output_dir / EXPORT).with_suffix(".yaml")
    if not (weights.is_file() and meta.is_file()):
        return None
    try:
        data = yaml.safe_load(meta.read_text())
    except yaml.YAMLError:
        return None
    done = (data or {}).get("training", {}).get("steps")
    return data if isinstance(done, int) and done >= steps else None


# ----------------------------------------------------------------------------- run
def run(cfg: DictConfig, output_dir: Path, command: str | None = None) -> dict:
    """Train (or resume) the run that ``cfg`` describes in ``output_dir``; export the model.

    Returns a summary: ``output_dir``, ``model`` (the exported weights), ``steps``,
    ``resumed_from`` (the step the run restarted at, or None), ``already_trained``,
    ``validation`` (as in the exported YAML) and ``module`` (the trained RestorationModule; None
    when the run had already finished).
    """
    import lightning as L
    import torch
    from lightning.pytorch.loggers import CSVLogger

    from cem_lab.io import write_text

    output_dir = Path(output_dir)
    net, dm, module, tasks = build(cfg)  # checks everything; writes nothing
    check_same_settings(output_dir, cfg)
    steps = int(cfg.train.steps)
    done = _finished(output_dir, steps)
    if done is not None:
        return {
            "output_dir": str(output_dir),
            "model": str(output_dir / EXPORT),
            "steps": done["training"]["steps"],
            "resumed_from": None,
            "already_trained": True,
            "validation": done.get("validation"),
            "model_name": cfg.model.get("name"),
            "module": None,
        }

    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    ckpt = output_dir / CHECKPOINT
    last = _last_checkpoint_callback(ckpt)
    tr = cfg.trainer
    trainer = L.Trainer(  # before anything is written: a bad trainer setting fails here
        max_steps=steps,
        max_epochs=-1,
        accelerator=tr.accelerator,
        devices=tr.devices,
        precision=tr.precision,
        logger=CSVLogger(str(output_dir), name="logs"),
        callbacks=[last],
        enable_checkpointing=False,
        enable_progress_bar=bool(tr.progress),
        enable_model_summary=bool(tr.progress),
        log_every_n_steps=int(tr.log_every),
        num_sanity_val_steps=0,
        check_val_every_n_epoch=1,
        gradient_clip_val=cfg.train.grad_clip,
        default_root_dir=str(output_dir),
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    resumed = ckpt.is_file()
    start = time.time()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*GPU available but not used.*")
        # the training sampler restarts an interrupted epoch at the checkpoint's step (data.py)
        warnings.filterwarnings("ignore", ".*your dataloader is not resumable.*")
        # our own checkpoint (optimizer, loops, hyper-parameters): a full, trusted load
        trainer.fit(
            module, datamodule=dm, ckpt_path=str(ckpt) if resumed else None, weights_only=False if resumed else None
        )
        if module.validation is None or module.validation["step"] != trainer.global_step:
            trainer.validate(module, datamodule=dm, verbose=False)
    seconds = time.time() - start
    if last.saved_step != trainer.global_step:
        last.save(trainer)
    config = None
    if not (hasattr(net, "config") and callable(net.config)) and "net" in cfg.model:
        config = OmegaConf.to_container(cfg.model.net, resolve=True)
    module.export(
        output_dir / EXPORT,
        config=config,
        command=command,
        metadata={
            "training": {
                **dm.describe(),
                "seed": int(cfg.seed),
                "seconds_this_session": round(seconds, 1),
                "device": str(module.device),
            },
            "model_name": cfg.model.get("name"),
        },
    )
    return {
        "output_dir": str(output_dir),
        "model": str(output_dir / EXPORT),
        "steps": int(trainer.global_step),
        "resumed_from": module.start_step if resumed else None,
        "already_trained": False,
        "validation": module.validation,
        "model_name": cfg.model.get("name"),
        "module": module,
    }


def report(summary: dict) -> str:
    """A few lines for the console."""
    lines = []
    name = summary.get("model_name") or "model"
    if summary["already_trained"]:
        lines.append(f"already trained: {name}, {summary['steps']} steps (nothing to do)")
    elif summary["resumed_from"] is not None:
        lines.append(f"trained {name} to step {summary['steps']} (resumed at step {summary['resumed_from']})")
    else:
        lines.append(f"trained {name} for {summary['steps']} steps")
    v = summary.get("validation") or {}
    if v:
        tasks = v.get("tasks") or {}
        groups = tasks.items() if len(tasks) > 1 else [("validation", v)]
        for label, m in groups:
            lines.append(
                f"  {label}: PSNR {m['psnr']:.2f} dB vs trivial baseline {m['baseline_psnr']:.2f} dB "
                f"(gain {m['gain']:+.2f} dB), SSIM {m['ssim']:.4f} vs {m['baseline_ssim']:.4f}"
            )
        images = sorted({r["image"] for r in v.get("images", [])})
        lines.append(f"  on {', '.join(images)} (step {v.get('step')})")
    lines.append(f"  weights: {summary['model']} (+ .yaml); checkpoint: {Path(summary['output_dir']) / CHECKPOINT}")
    return "\n".join(lines)


def _command() -> str:
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task)
    return " ".join(["cem-train", *map(shlex.quote, overrides)])


@hydra.main(version_base="1.3", config_path="pkg://cem_lab.conf", config_name="train")
def _main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from cem_lab.errors import USER_ERRORS
    from cem_lab.folder_lock import hold_run_folder, lend_to_child

    folder = Path(HydraConfig.get().runtime.output_dir)
    # Lightning's "lightning" logger has its own console handler: don't print its lines twice
    logging.getLogger("lightning").propagate = False
    try:
        # one writer per run folder; a refused run leaves no folder (nothing is written before the checks)
        with hold_run_folder(folder, what="cem-train", command=_command()):
            # Lightning's multi-GPU launcher runs this command again in each extra process: those
            # processes write the same folder under this one's lock
            os.environ.update(lend_to_child(folder))
            summary = run(cfg, folder, command=_command())
    except (TrainingError, *USER_ERRORS) as err:
        from cem_lab.bookkeeping.clean_errors import fail

        fail("cem-train", err)
    print(report(summary))


def main() -> None:
    from cem_lab.bookkeeping.clean_errors import run_cli

    run_cli(_main, "cem-train")


if __name__ == "__main__":
    main()
