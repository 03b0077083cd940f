"""A LightningModule that trains any restoration ``nn.Module`` (SR, denoising, deraining, mixed).

* loss: L1 (default) or L2 (``loss="l2"``, mean squared error, FSRCNN's original loss) between
  the output and the clean target; with several tasks, ``task_weights`` can weight each task's
  samples (e.g. ``{"sr": 4}``: an SR sample counts four times a DN or DR sample; the loss is then
  the weighted mean of the per-sample losses). A mixed model's SR residuals are small next to the
  DN / DR ones, so with equal weights a small network learns the other tasks at SR's expense;
* optimizer: Adam (``lr``, ``betas``, ``weight_decay``); schedule per optimizer step:
  ``"cosine"`` (from ``lr`` down to ``min_lr`` at ``max_steps``), ``"step"`` (times ``gamma`` at
  each of ``milestones``) or ``"none"``; an optional linear warm-up of ``warmup_steps``. The
  schedule is a function of the step and of the *current* ``max_steps``, so a run resumed with more
  steps follows the longer schedule. Alternatively ``scheduler``, a callable ``optimizer -> torch
  LR scheduler``, builds the scheduler (stepped once per optimizer step) in place of ``schedule``:
  e.g. ``functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=800, eta_min=4e-5)``,
  whose recursive lr values differ from the closed-form ``"cosine"`` in the last bits (the embedded
  model is trained with it, :mod:`cem_lab.training.embedded_training`);
* optional EMA of the weights (``ema_decay``): with it, validation and the exported weights use
  the averaged network. The decay warms up as ``min(ema_decay, (1 + n) / (10 + n))`` after n
  updates, so short runs are not dominated by the initial weights;
* validation (BasicSR conventions): outputs and targets quantized to uint8, ``crop_border`` pixels
  cut from each side and, with ``test_y_channel``, the Y channel measured. Per task the defaults
  are SR: ``crop_border = scale``, Y channel; DN / DR: no crop, RGB. PSNR and SSIM are computed
  per image and averaged; the trivial baseline (the input bicubic-upsampled to the target size for
  SR, the degraded input itself for DN / DR and for pre-upsampled SR) is measured the same way and
  logged beside them (``val/baseline_psnr``, ``val/gain`` = PSNR - baseline PSNR);
* :meth:`export` writes the (EMA) weights with ``save_weights``: ``.safetensors`` + ``.yaml`` with
  the architecture and the training metadata.
"""

from __future__ import annotations

import bisect
import copy
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cem_lab.errors import InputError
from cem_lab.metrics import psnr, quantize_uint8, rgb_to_y, ssim
from cem_lab.models.checkpoint import model_config, save_weights
from cem_lab.tasks import Task
from cem_lab.training.data import TaskSpec, pre_upsample_config, resolve_tasks, task_label

__all__ = [
    "SCHEDULES",
    "RestorationModule",
    "describe_scheduler",
    "resolve_task_weights",
    "schedule_factor",
    "trivial_baseline",
]

SCHEDULES = ("cosine", "step", "none")
LOSSES = ("l1", "l2")


def schedule_factor(
    step: int,
    schedule: str,
    max_steps: int,
    lr: float,
    min_lr: float = 0.0,
    milestones: Sequence[int] = (),
    gamma: float = 0.5,
    warmup_steps: int = 0,
) -> float:
    """The learning rate at ``step`` (0-based, before that step's update) divided by ``lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        warm = (step + 1) / warmup_steps
    else:
        warm = 1.0
    if schedule == "cosine":
        span = max(1, max_steps - warmup_steps)
        t = min(max(step - warmup_steps, 0), span) / span
        floor = min_lr / lr if lr > 0 else 0.0
        factor = floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    elif schedule == "step":
        factor = gamma ** bisect.bisect_right(sorted(milestones), step)
    else:
        factor = 1.0
    return warm * factor


def describe_scheduler(scheduler: Callable[..., Any]) -> str:
    """A stable description of a scheduler factory for the metadata: ``module.Name(arguments)`` for a
    ``functools.partial``, else ``module.Name`` (no memory addresses, unlike ``repr`` of a function)."""
    if isinstance(scheduler, functools.partial):
        args = [repr(a) for a in scheduler.args] + [f"{k}={v!r}" for k, v in scheduler.keywords.items()]
        return f"{describe_scheduler(scheduler.func)}({', '.join(args)})"
    named = scheduler if hasattr(scheduler, "__qualname__") else type(scheduler)
    return f"{getattr(named, '__module__', '?')}.{named.__qualname__}"


def resolve_task_weights(weights: Mapping[str, Any] | None, tasks: Sequence[Task]) -> list[float] | None:
    """One loss weight per task, in the tasks' order, from a mapping keyed by task name (``sr``)
    or label (``sr_x4``); missing tasks weigh 1. ``None`` or an empty mapping: ``None``."""
    if weights is None or len(weights) == 0:
        return None
    if not hasattr(weights, "items"):
        raise InputError(f"task_weights must map task names to weights, e.g. {{sr: 4}}, got {weights!r}")
    labels = [task_label(t) for t in tasks]
    names = [t.describe()["name"] for t in tasks]
    out = [1.0] * len(tasks)
    for key, value in weights.items():
        hits = [i for i in range(len(tasks)) if key == labels[i] or key == names[i]]
        if not hits:
            raise InputError(
                f"task_weights names {key!r}, which is not a trained task; the tasks are "
                f"{', '.join(labels)} (give a name or a label)"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise InputError(f"task_weights[{key!r}] must be a positive number, got {value!r}")
        for i in hits:
            out[i] = float(value)
    return out


def trivial_baseline(inputs: Tensor, target_hw: tuple[int, int]) -> Tensor:
    """The no-model restoration: bicubic upsampling to the target size (SR), else the input."""
    if tuple(inputs.shape[-2:]) == tuple(target_hw):
        return inputs
    return F.interpolate(inputs, size=tuple(target_hw), mode="bicubic", align_corners=False)


class RestorationModule(L.LightningModule):
    """Train ``net`` on (degraded input, clean target) pairs with L1 loss; validate with PSNR/SSIM.

    Args:
        net: the restoration network ((N, 3, h, w) -> (N, 3, h * s, w * s)).
        tasks: the task(s) the batches come from (same order as the data module's: batch
            ``"task"`` holds the index); they set the per-task metric conventions and the metadata.
        lr, betas, weight_decay: Adam.
        schedule: ``"cosine"`` | ``"step"`` | ``"none"``; ``max_steps`` (cosine length),
            ``min_lr`` (cosine floor), ``milestones`` / ``gamma`` (step), ``warmup_steps``.
        scheduler: ``None`` (use ``schedule``) or a callable ``optimizer -> torch LR scheduler``
            that replaces ``schedule`` (and its ``min_lr``, ``milestones``, ``gamma``,
            ``warmup_steps``); stepped once per optimizer step. It is not a hyper-parameter: it is
            kept out of :attr:`hparams` (a run resumed from a checkpoint must pass it again) and
            exported as ``training.scheduler`` (:func:`describe_scheduler`).
        ema_decay: ``None`` (off) or the EMA decay, e.g. 0.999.
        crop_border, test_y_channel: ``None`` = per-task BasicSR defaults (see module doc), or one
            value for every task.
        pre_upsample: whether SR inputs are bicubic-upsampled to the HR size (mixed models);
            recorded in the metadata.
        loss: ``"l1"`` or ``"l2"``.
        task_weights: ``None`` (every sample counts the same) or a mapping from task name
            (``"sr"``) or label (``"sr_x4"``) to a positive weight; tasks left out weigh 1.
    """

    def __init__(
        self,
        net: nn.Module,
        tasks: TaskSpec | Sequence[TaskSpec] = "sr",
        lr: float = 5e-4,
        betas: Sequence[float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        schedule: str = "cosine",
        max_steps: int = 1000,
        min_lr: float = 1e-6,
        milestones: Sequence[int] = (),
        gamma: float = 0.5,
        warmup_steps: int = 0,
        ema_decay: float | None = None,
        crop_border: int | None = None,
        test_y_channel: bool | None = None,
        pre_upsample: bool = False,
        loss: str = "l1",
        task_weights: Mapping[str, float] | None = None,
        scheduler: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler] | None = None,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise InputError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if not lr > 0:
            raise InputError(f"lr must be positive, got {lr}")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise InputError(f"max_steps must be a positive integer, got {max_steps!r}")
        if len(tuple(betas)) != 2 or not all(0 <= b < 1 for b in betas):
            raise InputError(f"betas must be two numbers in [0, 1), got {list(betas)}")
        if ema_decay is not None and not 0 < ema_decay < 1:
            raise InputError(f"ema_decay must lie in (0, 1) or be None, got {ema_decay}")
        if crop_border is not None and (
            isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0
        ):
            raise InputError(f"crop_border must be a non-negative integer or None, got {crop_border!r}")
        if warmup_steps < 0:
            raise InputError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if scheduler is not None and not callable(scheduler):
            raise InputError(f"scheduler must be None or a callable optimizer -> LR scheduler, got {scheduler!r}")
        self.net = net
        self.loss = loss
        self.tasks: list[Task] = resolve_tasks(tasks)
        self.labels = [task_label(t) for t in self.tasks]
        self.task_weights = resolve_task_weights(task_weights, self.tasks)
        self.register_buffer(
            "_sample_weights",
            torch.tensor(self.task_weights or [1.0] * len(self.tasks), dtype=torch.float32),
            persistent=False,
        )
        self.lr = float(lr)
        self.betas = tuple(float(b) for b in betas)
        self.weight_decay = float(weight_decay)
        self.schedule = schedule
        self.max_steps = int(max_steps)
        self.min_lr = float(min_lr)
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)
        self.warmup_steps = int(warmup_steps)
        self.scheduler = scheduler
        self.ema_decay = None if ema_decay is None else float(ema_decay)
        self.crop_border = crop_border
        self.test_y_channel = test_y_channel
        self.pre_upsample = bool(pre_upsample)
        self.ema_net: nn.Module | None = None
        if self.ema_decay is not None:
            self.ema_net = copy.deepcopy(net)
            self.ema_net.requires_grad_(False)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        #: the latest validation: step, means, per task and per image (also kept in checkpoints)
        self.validation: dict[str, Any] | None = None
        self._records: list[dict[str, Any]] = []
        #: the global step this fit started at (> 0 when resumed from a checkpoint)
        self.start_step = 0
        self.save_hyperparameters(ignore=["net", "tasks", "scheduler"])
        self.hparams["tasks"] = [t.describe() for t in self.tasks]  # type: ignore[index]
        if hasattr(net, "config") and callable(net.config):
            self.hparams["net"] = dict(net.config())  # type: ignore[index]

    # -- model -----------------------------------------------------------------------------
    @property
    def inference_net(self) -> nn.Module:
        """The network validation and export use: the EMA one when enabled."""
        return self.ema_net if self.ema_net is not None else self.net

    def forward(self, x: Tensor) -> Tensor:
        """Run :attr:`inference_net` (the EMA network when enabled)."""
        return self.inference_net(x)

    def metric_settings(self, task_index: int) -> tuple[int, bool]:
        """(crop_border, test_y_channel) for a task: the overrides, else BasicSR's per task."""
        task = self.tasks[task_index]
        is_sr = task.describe()["name"] == "sr"
        cb = self.crop_border if self.crop_border is not None else (task.scale if is_sr else 0)
        y = self.test_y_channel if self.test_y_channel is not None else is_sr
        return int(cb), bool(y)

    # -- training --------------------------------------------------------------------------
    def on_train_start(self) -> None:
        """Remember the step this fit starts at."""
        self.start_step = int(self.global_step)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """L1 or MSE loss of the batch, weighted per task when ``task_weights`` is set; logged as ``train/loss``."""
        out = self.net(batch["input"])
        target = batch["target"]
        if out.shape != target.shape:
            raise InputError(
                f"the network returned {tuple(out.shape)} for inputs "
                f"{tuple(batch['input'].shape)}, but the targets are {tuple(target.shape)}; "
                "does the network's scale match the task?"
            )
        if self.task_weights is None:
            loss = F.l1_loss(out, target) if self.loss == "l1" else F.mse_loss(out, target)
        else:
            err = (out - target).abs() if self.loss == "l1" else (out - target).square()
            per_sample = err.flatten(1).mean(dim=1)
            w = self._sample_weights.to(per_sample.dtype)[batch["task"].long()]
            loss = (w * per_sample).sum() / w.sum()
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=target.shape[0])
        return loss

    def configure_optimizers(self) -> Any:
        """Adam with a per-step LambdaLR of the configured schedule, or the ``scheduler``'s when given."""
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        if self.scheduler is None:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, self._lr_factor)
        else:
            sched = self.scheduler(opt)
            if not isinstance(sched, torch.optim.lr_scheduler.LRScheduler):
                raise InputError(
                    f"scheduler must return a torch LR scheduler for the optimizer, got {type(sched).__name__}"
                )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def _lr_factor(self, step: int) -> float:
        return schedule_factor(
            step, self.schedule, self.max_steps, self.lr, self.min_lr, self.milestones, self.gamma, self.warmup_steps
        )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Update the EMA weights (decay warmed up as (1 + n) / (10 + n)) and copy the buffers."""
        if self.ema_net is None:
            return
        n = int(self.ema_updates)
        decay = min(self.ema_decay, (1.0 + n) / (10.0 + n))  # type: ignore[type-var]
        with torch.no_grad():
            ema_p = list(self.ema_net.parameters())
            net_p = list(self.net.parameters())
            torch._foreach_lerp_(ema_p, net_p, 1.0 - decay)
            for eb, nb in zip(self.ema_net.buffers(), self.net.buffers()):
                eb.copy_(nb)
        self.ema_updates += 1

    # -- validation ------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        """Start a fresh list of per-image records."""
        self._records = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Record PSNR (dB) and SSIM of each output and of the trivial baseline, on the uint8 grid with the
        task's :meth:`metric_settings`."""
        inputs, target = batch["input"], batch["target"]
        out = self.inference_net(inputs)
        base = trivial_baseline(inputs, target.shape[-2:])
        names = batch.get("name") or [f"image_{batch_idx}"] * inputs.shape[0]
        for i in range(inputs.shape[0]):
            k = int(batch["task"][i])
            cb, y = self.metric_settings(k)
            t, o, b = (self._measure_space(v[i : i + 1], cb, y) for v in (target, out, base))
            self._records.append(
                {
                    "image": names[i],
                    "task": self.labels[k],
                    "psnr": float(psnr(o, t)[0]),
                    "ssim": float(ssim(o, t)[0]),
                    "baseline_psnr": float(psnr(b, t)[0]),
                    "baseline_ssim": float(ssim(b, t)[0]),
                }
            )

    @staticmethod
    def _measure_space(x: Tensor, crop_border: int, test_y_channel: bool) -> Tensor:
        q = quantize_uint8(x.float())
        if crop_border:
            q = q[..., crop_border:-crop_border, crop_border:-crop_border]
        return rgb_to_y(q) if test_y_channel else q

    @staticmethod
    def _means(records: list[dict[str, Any]]) -> dict[str, float]:
        keys = ("psnr", "ssim", "baseline_psnr", "baseline_ssim")
        m = {k: sum(r[k] for r in records) / len(records) for k in keys}
        m["gain"] = m["psnr"] - m["baseline_psnr"]
        return m

    def on_validation_epoch_end(self) -> None:
        """Log the means (overall and per task) as ``val/...`` and keep the full record in :attr:`validation`."""
        if not self._records or self.trainer.sanity_checking:
            return
        means = self._means(self._records)
        per_task = {}
        for label in self.labels:
            recs = [r for r in self._records if r["task"] == label]
            if recs:
                per_task[label] = self._means(recs)
        for k, v in means.items():
            self.log(f"val/{k}", v, prog_bar=k in ("psnr", "gain"))
        if len(per_task) > 1:
            for label, m in per_task.items():
                for k, v in m.items():
                    self.log(f"val/{label}/{k}", v)
        settings = {
            self.labels[k]: dict(zip(("crop_border", "test_y_channel"), self.metric_settings(k)))
            for k in range(len(self.tasks))
        }
        self.validation = {
            "step": int(self.global_step),
            **{k: round(v, 4) for k, v in means.items()},
            "tasks": {label: {k: round(v, 4) for k, v in m.items()} for label, m in per_task.items()},
            "images": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in self._records],
            "metric": {"quantized": "uint8", "settings": settings, "ema": self.ema_net is not None},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store :attr:`validation` in the checkpoint."""
        checkpoint["cem_lab_validation"] = self.validation

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore :attr:`validation` from the checkpoint (None if it has none)."""
        self.validation = checkpoint.get("cem_lab_validation")

    # -- export ----------------------------------------------------------------------------
    def export(
        self, path: str | Path, config: dict | None = None, command: str | None = None, metadata: dict | None = None
    ) -> tuple[Path, Path]:
        """Write the (EMA) weights to ``path`` (.safetensors) and the ``.yaml`` beside it.

        ``config`` (``_target_`` + keyword arguments) defaults to ``net.config()``. The YAML
        carries ``task`` (or ``tasks``), ``validation`` (PSNR, SSIM, baseline PSNR, gain, per
        image), ``training`` (steps and hyper-parameters), ``trained_with`` (``command``) and
        ``metadata``'s keys.
        """
        net = self.inference_net
        config = dict(config) if config is not None else model_config(self.net)
        meta: dict[str, Any] = {}
        described = [t.describe() for t in self.tasks]
        if len(described) == 1:
            meta["task"] = described[0]
        else:
            meta["tasks"] = described
        if self.pre_upsample:
            sr = [t.scale for t in self.tasks if t.scale > 1]
            meta["pre_upsampled_sr"] = {
                "note": "SR inputs were bicubic-upsampled to the HR size before this scale-1 network; "
                "the same weights load into the upsampling='pre' network below, which takes "
                "the LR image",
                **({"model": pre_upsample_config(config, sr[0])} if sr and "scale" in config else {}),
            }
        if self.validation is not None:
            meta["validation"] = self.validation
        meta["training"] = {
            "steps": int(self.global_step),
            "loss": self.loss,
            "optimizer": "adam",
            "lr": self.lr,
            "betas": list(self.betas),
            "weight_decay": self.weight_decay,
            "schedule": self.schedule if self.scheduler is None else "scheduler",
            **({"scheduler": describe_scheduler(self.scheduler)} if self.scheduler is not None else {}),
            "max_steps": self.max_steps,
            "min_lr": self.min_lr,
            "milestones": self.milestones,
            "gamma": self.gamma,
            "warmup_steps": self.warmup_steps,
            "ema_decay": self.ema_decay,
            **({"task_weights": dict(zip(self.labels, self.task_weights))} if self.task_weights is not None else {}),
            "torch": str(torch.__version__),
            "lightning": str(L.__version__),
        }
        if command:
            meta["trained_with"] = command
        for k, v in (metadata or {}).items():
            if k == "training" and isinstance(v, dict):
                meta["training"].update(v)
            else:
                meta[k] = v
        return save_weights(net, Path(path), config=config, metadata=meta)
