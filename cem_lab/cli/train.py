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
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cem_lab.bookkeeping.clean_errors import USER_ERRORS, fail, resumable, run_cli
from cem_lab.compose.overrides import check_command_line
from cem_lab.compose.resolvers import register_resolvers
from cem_lab.compose.training import build, build_trainer, check_same_settings, map_task_overrides
from cem_lab.folder_lock import hold_run_folder, lend_to_child
from cem_lab.io import write_text
from cem_lab.run_format import CONFIG_FILE

register_resolvers()  # before Hydra composes the config (the run folder's name)

log = logging.getLogger("cem_lab")

CHECKPOINT = Path("checkpoints") / "last.ckpt"
EXPORT = "model.safetensors"


# ----------------------------------------------------------------------------- checkpoints
def _last_checkpoint_callback(path: Path, every_min: float | None = None):
    # lazy: Lightning (seconds), only once the settings are checked
    import lightning as L
    from lightning.pytorch.trainer.states import (
        TrainerFn,  # lazy: Lightning costs seconds at start-up; not for --help or a refusal
    )

    class LastCheckpoint(L.Callback):
        """Writes ``last.ckpt`` (atomically) after each validation during fit, and after the training step that
        ends ``every_min`` minutes of training since the last write (so that Ctrl-C loses at most that, even
        before the first validation of a long epoch). A checkpoint between steps resumes exactly (data.py)."""

        def __init__(self) -> None:
            self.saved_step: int | None = None
            self._since = time.monotonic()

        def save(self, trainer: L.Trainer) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            trainer.save_checkpoint(tmp, weights_only=False)
            os.replace(tmp, path)
            self.saved_step = trainer.global_step
            self._since = time.monotonic()

        def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
            if every_min is not None and time.monotonic() - self._since >= 60.0 * every_min:
                self.save(trainer)

        def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING:
                self.save(trainer)

    return LastCheckpoint()


def _finished(output_dir: Path, steps: int) -> dict | None:
    """The exported model's YAML when this run already trained ``steps`` steps and exported."""
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
            "map_task": map_task_overrides(cfg),
        }

    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    ckpt = output_dir / CHECKPOINT
    every = cfg.train.get("checkpoint_every_min")
    last = _last_checkpoint_callback(ckpt, None if every is None else float(every))
    trainer = build_trainer(cfg, output_dir, [last])  # before anything is written: a bad trainer setting fails here
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text(output_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    resumed = ckpt.is_file()
    start = time.time()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*GPU available but not used.*")
        # the training sampler restarts an interrupted epoch at the checkpoint's step (data.py)
        warnings.filterwarnings("ignore", ".*your dataloader is not resumable.*")
        # our own checkpoint (optimizer, loops, hyper-parameters): a full, trusted load
        try:
            trainer.fit(
                module, datamodule=dm, ckpt_path=str(ckpt) if resumed else None, weights_only=False if resumed else None
            )
        except SystemExit:
            if trainer.interrupted:  # Lightning ends a Ctrl-C in fit with exit(1): reported as the interrupt it is
                raise KeyboardInterrupt from None
            raise
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
        "map_task": map_task_overrides(cfg),
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
    # the folder's name holds '=' and ',': the path goes to Hydra quoted
    task = " ".join(summary.get("map_task") or [])
    lines.append(f"  map it: cem-lab model=file \"model.path='{summary['model']}'\"" + (f" {task}" if task else ""))
    return "\n".join(lines)


def _command() -> str:
    overrides = list(HydraConfig.get().overrides.task)
    return " ".join(["cem-train", *map(shlex.quote, overrides)])


@hydra.main(version_base="1.3", config_path="pkg://cem_lab.conf", config_name="train")
def _main(cfg: DictConfig) -> None:
    folder = Path(HydraConfig.get().runtime.output_dir)
    # Lightning's "lightning" logger has its own console handler: don't print its lines twice
    logging.getLogger("lightning").propagate = False
    # Ctrl-C is reported in one line by run_cli (where the training is kept, how to resume), not twice
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "Detected KeyboardInterrupt" not in record.getMessage()
    )
    try:
        # one writer per run folder; a refused run leaves no folder (nothing is written before the checks)
        with (
            resumable(folder / CHECKPOINT.parent, saved="the training up to its last validation is saved in"),
            hold_run_folder(folder, what="cem-train", command=_command()),
        ):
            check_command_line(cfg)  # a key added with + that nothing reads: refused before anything is written
            # Lightning's multi-GPU launcher runs this command again in each extra process: those
            # processes write the same folder under this one's lock
            os.environ.update(lend_to_child(folder))
            summary = run(cfg, folder, command=_command())
    except USER_ERRORS as err:
        fail("cem-train", err)
    print(report(summary))


def main() -> None:
    """The console script ``cem-train``."""
    run_cli(_main, "cem-train", resumes=True)


if __name__ == "__main__":
    main()
