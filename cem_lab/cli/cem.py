"""`cem-lab`: compute one causal effect map from a Hydra config (see conf/cem.yaml).

With no arguments it runs the embedded default: cem_lab's own small DnCNN on a crop of
scikit-image's `chelsea`, DN sigma 50, embedded patch bank, reference estimator settings.

Rerunning a command reuses its folder: a finished run is recognised without any model work
(cem_lab/cli/finished_runs.py), an interrupted one resumes from its checkpoint.

In a multirun (``-m``, see cem_lab/cli/sweep.py) a job that fails writes ``error.txt`` in its folder
and returns, so that the other jobs go on.

Testing aid: the environment variable ``CEM_LAB_TEST_INTERRUPT=[JOB:]BATCHES`` raises
KeyboardInterrupt (as Ctrl-C would) after BATCHES batches of the multirun job number JOB (0-based;
without ``JOB:``, of any run), to test that an interrupted sweep resumes exactly.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional

import hydra
from omegaconf import DictConfig, OmegaConf

from cem_lab.cli.finished_runs import (DONE_FILE, NOT_IDENTITY, finished_run, identity_config,  # noqa: F401
                                      mark_done, state_status)

log = logging.getLogger("cem_lab")


def run_name(override_dirname: str) -> str:
    """A folder name from the command-line overrides: stable, readable, filesystem-safe.

    Path values are shortened to their file name; whenever anything is shortened, a hash of
    the full overrides is appended so that two different runs never share a folder.
    """
    if not override_dirname:
        return "default"
    parts = []
    for item in override_dirname.split(","):
        key, sep, value = item.partition("=")
        if "/" in value or "\\" in value:
            value = re.split(r"[\\/]", value.rstrip("/\\"))[-1] or value
        parts.append(f"{key}{sep}{value}")
    name = re.sub(r"[^A-Za-z0-9=,._+\-\[\]]+", "_", ",".join(parts))
    if name != override_dirname or len(name) > 200:
        digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:8]
        name = f"{name[:200]}-{digest}"
    return name


def zoo_file(name: str) -> str:
    """The resolver ``cem_zoo_file``: the weights file of zoo model ``name``. ``model=zoo`` records
    it, so a finished run is recognised only while those weights are unchanged (done.json keeps
    the size and modification time of every file its config names)."""
    from cem_lab.models.zoo import ZOO_DIR

    return str(ZOO_DIR / f"{name}.safetensors")


if not OmegaConf.has_resolver("cem_run_name"):
    OmegaConf.register_new_resolver("cem_run_name", run_name)
if not OmegaConf.has_resolver("cem_zoo_file"):
    OmegaConf.register_new_resolver("cem_zoo_file", zoo_file)

from cem_lab.cli import sweep as _sweep  # registers the cem_sweep_name resolver

INTERRUPT_ENV = "CEM_LAB_TEST_INTERRUPT"


def build_model(cfg: DictConfig):
    """The model from a `model` config: a saved cem_lab model (`path`), or `net` + `checkpoint`."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from cem_lab.models.checkpoint import load_model, load_weights

    if cfg.get("path"):
        return load_model(cfg.path)
    try:
        net = instantiate(cfg.net)
    except InstantiationException as err:
        # a user error raised by the model's constructor or loader (unknown zoo name, bad knob):
        # report it as itself, not wrapped in Hydra's instantiation error
        from cem_lab.errors import USER_ERRORS

        if isinstance(err.__cause__, USER_ERRORS):
            raise err.__cause__ from None
        raise
    ckpt = cfg.get("checkpoint")
    if ckpt:
        report = load_weights(net, ckpt)
        log.info("loaded %s", report)
    return net


def build_patch_bank(cfg: DictConfig):
    from hydra.utils import instantiate

    return instantiate(cfg)


def resolve_device(name: Any):
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run(cfg: DictConfig, output_dir: Path, on_batch: Optional[Callable] = None):
    """Compute and save the CEM that ``cfg`` describes into ``output_dir``.

    ``config.yaml`` is written at the start of a fresh run; a folder that already holds a run keeps
    its own until the core has accepted this config (same fingerprint) and the run has finished.
    """
    from cem_lab import compute_cem
    from cem_lab.causal.runner import STATE_FILE
    from cem_lab.io import write_text
    from cem_lab.tasks import make_task

    config_text = OmegaConf.to_yaml(cfg, resolve=True)
    task = make_task(**OmegaConf.to_container(cfg.task, resolve=True))
    device = resolve_device(cfg.device)
    import torch

    torch.manual_seed(cfg.seed)  # models without a checkpoint get a reproducible initialisation
    model = build_model(cfg.model).to(device)
    image, name = cfg.image, None
    if image is None and cfg.degraded is None:
        from cem_lab.models.embedded import embedded_demo_image

        image, name = embedded_demo_image(), "chelsea_256"
    c = cfg.cem
    bank = build_patch_bank(cfg.patches) if c.intervention == "lv" else None
    # the task, model and patch bank are built: bad input has been refused before anything is written
    output_dir.mkdir(parents=True, exist_ok=True)
    fresh = not (output_dir / STATE_FILE).exists()
    if fresh or not (output_dir / "config.yaml").exists():
        write_text(output_dir / "config.yaml", config_text)
    kwargs = dict(
        degraded=cfg.degraded, block=c.block, patch_bank=bank, sampler=c.get("sampler", "uniform"),
        intervention=c.intervention, estimator=c.estimator, samples=c.get("samples"), coarse=c.get("coarse", 3),
        fine=c.get("fine", 50), tol=c.tol, classification=c.classification, metric=cfg.metric.name,
        crop_border=cfg.metric.crop_border, test_y_channel=cfg.metric.test_y_channel, seed=cfg.seed,
        image_seed=cfg.image_seed, batch_size=cfg.batch_size, forward_batch=cfg.forward_batch, mode=cfg.mode,
        crop_margin=cfg.crop_margin, crop_multiple=cfg.crop_multiple, output_dir=output_dir, figures=cfg.figures,
        progress=cfg.progress, on_batch=on_batch, image_name=name, model_name=cfg.model.get("name"))
    dist = cfg.get("trainer") or {}
    if int(dist.get("devices", 1) or 1) != 1 or int(dist.get("num_nodes", 1) or 1) > 1:
        from cem_lab.engine.distributed import compute_cem_distributed

        kwargs.pop("on_batch")  # a callback does not travel to spawned processes
        result = compute_cem_distributed(
            model.cpu(), image, task, list(cfg.roi), devices=dist.get("devices"),
            accelerator=dist.get("accelerator", "auto"), num_nodes=int(dist.get("num_nodes", 1)),
            strategy=dist.get("strategy", "ddp_spawn"), **kwargs)
    else:
        result = compute_cem(model, image, task, list(cfg.roi), device=device, **kwargs)
    if not fresh:
        write_text(output_dir / "config.yaml", config_text)
    return result


def report(result, folder: Path) -> str:
    s = result.summary()
    c, sh = s["counts"], s["shares"]
    lines = [
        f"CEM written to {folder}",
        f"  ROI {s['metric']} before intervention: {s['baseline_metric']:.3f} {s['unit']}",
        f"  blocks outside the ROI: {s['blocks_outside_roi']}  positive {c['positive']} ({sh['positive']:.1%})  "
        f"negative {c['negative']} ({sh['negative']:.1%})  zero {c['zero']} ({sh['zero']:.1%})",
    ]
    if "effect_max" in s:
        lines.append(f"  effect range {s['effect_range']:.3f} {s['unit']}: max {s['effect_max']['value']:.3f} at block "
                     f"{tuple(s['effect_max']['block'])}, min {s['effect_min']['value']:.3f} at block "
                     f"{tuple(s['effect_min']['block'])}")
    lines.append(f"  mode {s['mode']}, {s['forward_passes']} forward passes, "
                 f"{s['timings'].get('run_s', 0):.1f} s on {s['device']}")
    lines.append(f"  figures: {folder / 'figures' / 'cem_panel.png'}")
    return "\n".join(lines)


def _interrupt_hook(job_num: Optional[int]) -> Optional[Callable]:
    """The testing aid of CEM_LAB_TEST_INTERRUPT (see the module docstring)."""
    spec = os.environ.get(INTERRUPT_ENV, "").strip()
    if not spec:
        return None
    job, _, batches = spec.rpartition(":")
    if job and (job_num is None or int(job) != job_num):
        return None
    limit, seen = int(batches), [0]

    def hook(info) -> None:
        seen[0] += 1
        if seen[0] >= limit:
            raise KeyboardInterrupt(f"{INTERRUPT_ENV}={spec}: stopped after {seen[0]} batches")

    return hook


def execute(cfg: DictConfig, folder: Path, *, job_num: Optional[int] = None,
            group: Optional[str] = None) -> dict[str, Any]:
    """Run (or reuse) the CEM of ``cfg`` in ``folder``, log it, print the report; the job's outcome.

    The outcome's ``status``: ``done`` (computed now), ``resumed`` (finished from a checkpoint),
    ``skipped`` (it was already finished: no CEM work).
    """
    from cem_lab.causal.result import CEMResult

    logger_cfg = cfg.get("logger") or {}
    summary = finished_run(cfg, folder)
    skipped = summary is not None
    use_wandb = logger_cfg.get("name") == "wandb"
    if use_wandb and skipped:
        from cem_lab.cli.wandb_logging import already_logged

        use_wandb = not already_logged(folder, summary.get("fingerprint"))
    if use_wandb:
        from cem_lab.cli.wandb_logging import wandb_run

        tracker = wandb_run(cfg, folder, group=group, name=folder.name)
    else:
        tracker = nullcontext(None)
    with tracker as wb:
        if skipped:
            result = CEMResult.load(folder)
            status = "skipped"
        else:
            from cem_lab.cli.devices import device_lease

            before = state_status(folder)
            with device_lease(cfg.device) as device:
                if device != cfg.device:
                    cfg.device = device  # recorded in config.yaml; not part of a run's identity
                result = run(cfg, folder, on_batch=_interrupt_hook(job_num))
            status = "done" if before is None else "skipped" if before[0] == "complete" else "resumed"
            mark_done(cfg, folder, result.meta["fingerprint"])
        if wb is not None:
            wb.log_folder(folder)
    (folder / _sweep.ERROR_FILE).unlink(missing_ok=True)  # an earlier attempt's error
    text = report(result, folder)
    if skipped:
        text = text.replace("CEM written to", "CEM already finished (skipped) in", 1)
    print(text, flush=True)
    s = result.summary()
    return {"status": status, "forward_passes": 0 if skipped else s.get("forward_passes"),
            "baseline_metric": s.get("baseline_metric"), "counts": s.get("counts")}


def record_error(folder: Path, err: BaseException, user_error: bool) -> str:
    """Write ``error.txt`` atomically: first line ``Type: message``, then the whole message and, for
    unexpected errors (not bad input), the traceback. Returns the first line."""
    from cem_lab.io import write_text

    text = str(err).strip()
    message = f"{type(err).__name__}: {_sweep.first_line(text)}" if text else type(err).__name__
    body = message + "\n"
    if "\n" in text:
        body += "\n" + text + "\n"
    if not user_error:
        body += "\n" + "".join(traceback.format_exception(type(err), err, err.__traceback__))
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / _sweep.ERROR_FILE, body)
    return message


@hydra.main(version_base="1.3", config_path="pkg://cem_lab.conf", config_name="cem")
def _main(cfg: DictConfig) -> Any:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from cem_lab.errors import USER_ERRORS

    hc = HydraConfig.get()
    folder = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    job_num = int(hc.job.num) if multirun and hc.job.get("num") is not None else None
    group = Path(str(hc.sweep.dir)).name if multirun else None  # the sweep's name
    try:
        return execute(cfg, folder, job_num=job_num, group=group)
    except Exception as err:  # every failure of one job is recorded, the sweep goes on
        user_error = isinstance(err, USER_ERRORS)
        if multirun:
            message = record_error(folder, err, user_error)
            print(f"cem-lab: job failed ({folder}): {message}", file=sys.stderr, flush=True)
            return {"status": "failed", "error": message}
        if user_error:
            print(f"cem-lab: error: {err}", file=sys.stderr)
            sys.exit(2)
        raise


def main() -> None:
    _main()


if __name__ == "__main__":
    # run the function of the importable module (not of __main__), so that launchers which pickle
    # the task function for worker processes (joblib, submitit) find it and its resolvers there
    from cem_lab.cli import cem as _cem  # noqa: PLW0406

    _cem.main()
