"""Causal effects of channels: a causal map inside the network.

The input map asks which *blocks of the input* a ROI's quality depends on. This asks the same of the
*channels of one layer*: channel ``c`` of layer ``L`` is replaced, for the whole forward pass, by a natural
value, and the ROI metric is read again. Its causal effect has the input map's sign and units:

    CE(c) = M0 - E[M(do(A_c = value))]      (dB for PSNR; > 0: the channel's own content helps the ROI)

Natural values (``value``):

- ``"donor"`` (default): the channel's activation under another image of the population, aligned (same
  input size, so the same positions). Sample ``s`` of channel ``c`` takes donor ``perm_c[s mod D]``, where
  ``perm_c`` is a permutation of the ``D`` donors seeded by ``(seed, c)``: with ``D`` samples (the
  default estimator) every donor is used once and CE is the exact mean over the population; with fewer
  (a coarse screening stage) the donors are a seeded subset, drawn without replacement.
- ``"mean"``: the channel's population mean, one number per channel (its activation averaged over the
  donors' images and positions), a constant plane: mean ablation. Deterministic, so one sample suffices.
- ``"zeros"``: the channel switched off (zero ablation, as pruning does). Not a natural value: a zeroed
  channel can put the layer where no input ever puts it; reported for comparison.

The estimators, their statistics (per-unit Welford, plan order, so batch size does not matter), the
classification, the checkpointing and resume are the input map's (:mod:`cem_lab.causal.stages` runs a
:class:`ChannelJob` as it runs a :class:`~cem_lab.causal.job.CEMJob`): a channel is a "block" of a plan of
``C`` units. Every forward pass runs on the whole input (a channel's plane spans all of it).

From Python::

    job = ChannelJob(model, task_input, roi, "body.3", donors=[other_input, ...])
    result = job.run()                   # or job.run(folder) to checkpoint and resume
    result.to_frame().sort_values("effect")
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cem_lab.causal.estimators import BlockStats, Estimator, ExhaustiveEstimator, classify
from cem_lab.causal.executors import BatchInfo, UnitExecutor
from cem_lab.causal.grid import Roi
from cem_lab.causal.resume import check_folder, model_digest
from cem_lab.causal.settings import DEFAULT_CHECKPOINT_S, CEMSettings
from cem_lab.errors import CemLabError
from cem_lab.tasks.base import TaskInput

__all__ = ["VALUES", "ChannelError", "ChannelJob", "ChannelResult", "layer_outputs"]

log = logging.getLogger("cem_lab")

#: the values a channel can be set to (module docstring)
VALUES = ("donor", "mean", "zeros")


class ChannelError(CemLabError, ValueError):
    """A channel map that cannot run as asked (a layer that is not there, donors of another size, ...)."""


def layer_outputs(model: nn.Module, x: Tensor) -> list[tuple[str, tuple[int, ...], int]]:
    """The layers whose output a channel map can intervene on: ``(name, output shape, calls per forward)`` of
    every named module that returns one (N, C, H, W) tensor, in the order their outputs are made on ``x`` (an
    enclosing module after the modules inside it)."""
    seen: dict[str, list] = {}
    handles = []

    def watch(name: str):
        def hook(_module, _inputs, output):
            if isinstance(output, Tensor) and output.dim() == 4:
                entry = seen.setdefault(name, [tuple(output.shape), 0])
                entry[1] += 1

        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(watch(name)))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [(name, shape, calls) for name, (shape, calls) in seen.items()]


@dataclass
class ChannelResult:
    """The causal effect of each channel of one layer on one ROI (``CE = M0 - mean``; > 0 helps the ROI)."""

    layer: str
    value: str
    effect: np.ndarray  #: classified effect (0 where |CE| < tol, or outside the interval rule)
    raw_effect: np.ndarray  #: the estimate before classification
    stderr: np.ndarray
    n: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    classification: np.ndarray  #: int8: 1 helps, -1 hurts, 0 no effect
    baseline: float  #: M0, the un-intervened ROI metric
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        """Number of channels of the layer."""
        return len(self.effect)

    def ranking(self) -> np.ndarray:
        """Channel indices from the most helpful (largest CE) to the most harmful (most negative)."""
        return np.argsort(-self.raw_effect, kind="stable")

    def to_frame(self):
        """One row per channel: channel, effect (classified), raw effect, stderr, n, ci_low, ci_high, class,
        rank (1 = most helpful)."""
        import pandas as pd  # lazy: the core imports without pandas

        rank = np.empty(self.channels, dtype=np.int64)
        rank[self.ranking()] = np.arange(1, self.channels + 1)
        return pd.DataFrame(
            {
                "channel": np.arange(self.channels),
                "effect": self.effect,
                "raw_effect": self.raw_effect,
                "stderr": self.stderr,
                "n": self.n,
                "ci_low": self.ci_low,
                "ci_high": self.ci_high,
                "class": self.classification,
                "rank": rank,
            }
        )

    def counts(self) -> dict[str, int]:
        """Channels that help, hurt or do nothing for the ROI."""
        c = self.classification
        return {"positive": int((c > 0).sum()), "negative": int((c < 0).sum()), "zero": int((c == 0).sum())}

    def summary(self) -> dict[str, Any]:
        """The JSON record of the result (every array as a list)."""
        return {
            "layer": self.layer,
            "value": self.value,
            "channels": self.channels,
            "baseline": self.baseline,
            "counts": self.counts(),
            "ranking": self.ranking().tolist(),
            "effect": self.effect.tolist(),
            "raw_effect": self.raw_effect.tolist(),
            "stderr": self.stderr.tolist(),
            "n": self.n.tolist(),
            "ci_low": self.ci_low.tolist(),
            "ci_high": self.ci_high.tolist(),
            "classification": self.classification.tolist(),
            **self.meta,
        }

    def __repr__(self) -> str:
        c = self.counts()
        return (
            f"ChannelResult(layer={self.layer!r}, value={self.value!r}, channels={self.channels}, "
            f"M0={self.baseline:.3f}, positive={c['positive']}, negative={c['negative']}, zero={c['zero']})"
        )


class _Units:
    """What :func:`~cem_lab.causal.stages.run_stages` reads as a job's grid: one unit per channel."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


class ChannelJob:
    """One channel map: the layer's channels of ``model`` set to natural values, one at a time (module
    docstring), on ``task_input``, for the ROI ``roi`` (output pixels, as the input map's).

    ``donors``: the population's other inputs (:class:`~cem_lab.tasks.base.TaskInput`, the main input's size),
    needed for ``value="donor"`` and ``"mean"``. ``settings``: the metric, seed, tol, classification, batch
    sizes, and the knobs of a named estimator. ``estimator``: None (default: exhaustive with one sample per
    donor for ``"donor"``, so that every donor is used once; a single sample for ``"mean"`` and ``"zeros"``),
    an estimator's name (``"coarse_to_fine"``, ``"exhaustive"``, ``"adaptive"``: built from ``settings``) or an
    :class:`~cem_lab.causal.estimators.Estimator`. ``donor_names``: for the record.
    """

    def __init__(
        self,
        model: nn.Module,
        task_input: TaskInput,
        roi: Roi | Sequence[int],
        layer: str,
        *,
        donors: Sequence[TaskInput] = (),
        value: str = "donor",
        settings: CEMSettings | None = None,
        estimator: Estimator | str | None = None,
        device: torch.device | str | None = None,
        image_name: str = "image",
        model_name: str | None = None,
        donor_names: Sequence[str] | None = None,
        task: dict | None = None,
    ):
        if value not in VALUES:
            raise ChannelError(f"value {value!r}: choose one of {', '.join(VALUES)}")
        if value in ("donor", "mean") and not donors:
            raise ChannelError(
                f"value {value!r} needs donors: the population's other images (give at least one), or use value 'zeros'"
            )
        s = settings if settings is not None else CEMSettings()
        self.value, self.layer = value, layer
        self.metric = s.make_metric()
        self.seed, self.rule = int(s.seed), s.classification
        self.batch_size = int(s.batch_size)
        self.forward_batch = 8 if s.forward_batch == "auto" else int(s.forward_batch)
        self.model = model.eval()
        self.model_name = model_name or type(model).__name__
        self.image_name = image_name
        self.task = task
        if device is None:
            p = next(iter(model.parameters()), None)
            device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.roi = roi if isinstance(roi, Roi) else Roi.parse(roi)
        modules = dict(model.named_modules())
        if layer not in modules or not layer:
            names = [n for n in modules if n]
            hint = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
            raise ChannelError(f"layer {layer!r} is not a module of {self.model_name}; its modules: {hint}")
        self.module = modules[layer]
        self.ti = task_input.to(self.device)
        self.notes: list[str] = []
        self.forward_passes = 0
        self.pixels_pushed = 0
        self.checkpoints = 0
        self.cost: dict | None = None
        self.timings: dict[str, float] = {}
        self.item_s_estimate: float | None = None
        self._patch: tuple[Tensor, Tensor] | None = None
        self._capture: list[Tensor] | None = None
        self._calls = 0
        self._fingerprint: str | None = None
        t0 = time.perf_counter()
        with self._hooked():
            self._prepare(list(donors), list(donor_names) if donor_names is not None else None)
        if estimator is None:
            estimator = ExhaustiveEstimator(len(self.donor_names) if value == "donor" else 1)
        elif not isinstance(estimator, Estimator):
            try:
                estimator = s.replace(estimator=str(estimator)).make_estimator()
            except CemLabError as err:
                raise ChannelError(str(err)) from None
        self.estimator = estimator
        self.estimator.bind(np.zeros(self.channels, dtype=bool))
        self.tol = float(s.map_tol(self.estimator))
        if value != "donor" and self.estimator.describe().get("samples", 1) != 1:
            self.notes.append(f"value {value!r} is deterministic: every sample of a channel gives the same metric")
        self.grid = _Units(self.channels)
        self.selected = np.ones(self.channels, dtype=bool)
        self.active = np.ones(self.channels, dtype=bool)
        self.timings["prepare_s"] = time.perf_counter() - t0

    # --- the hook -------------------------------------------------------------------------------------
    @contextmanager
    def _hooked(self) -> Iterator[None]:
        """The layer's hook, on the model for the block only (a job leaves the model as it found it)."""
        handle = self.module.register_forward_hook(self._hook)
        try:
            yield
        finally:
            handle.remove()

    def _hook(self, _module, _inputs, output):
        self._calls += 1
        if self._capture is not None:  # a copy now: a later in-place layer (ReLU(inplace=True)) would change it
            self._capture.append(output.detach().clone() if isinstance(output, Tensor) else output)
        if self._patch is None:
            return None
        chans, planes = self._patch
        out = output.clone()
        out[torch.arange(out.shape[0], device=out.device), chans] = planes.to(out.dtype)
        return out

    def _call(self, x: Tensor) -> Tensor:
        with torch.inference_mode():
            out = self.model(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        self.forward_passes += x.shape[0]
        self.pixels_pushed += x.shape[0] * x.shape[-2] * x.shape[-1]
        return out

    def _activation(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The model's output on ``x`` (one image) and the layer's output, checked."""
        self._capture, self._calls = [], 0
        try:
            out = self._call(x)
        finally:
            captured, self._capture = self._capture, None
        if self._calls != 1:
            raise ChannelError(
                f"layer {self.layer!r} runs {self._calls} times in one forward pass of {self.model_name}; a channel "
                "map needs a module that runs once: give one of its uses by another name (see --list-layers)"
            )
        act = captured[0]
        if not isinstance(act, Tensor) or act.dim() != 4:
            shape = tuple(act.shape) if isinstance(act, Tensor) else type(act).__name__
            raise ChannelError(
                f"layer {self.layer!r} returns {shape}, not one (N, C, H, W) feature map; give a layer with channels "
                "(see --list-layers)"
            )
        return out, act

    # --- preparation ----------------------------------------------------------------------------------
    def _prepare(self, donors: list[TaskInput], donor_names: list[str] | None) -> None:
        x = self.ti.input
        out, act = self._activation(x)
        self.channels = int(act.shape[1])
        self.act_shape = tuple(act.shape[1:])
        _, _, h, w = x.shape
        oh, ow = int(out.shape[-2]), int(out.shape[-1])
        self.scale = oh // h
        try:
            self.roi.validate(oh, ow, max(self.scale, 1))
        except ValueError as err:
            raise ChannelError(str(err)) from None
        if self.ti.target is None and self.metric.name != "output_change":
            raise ChannelError(
                f"metric {self.metric.name!r} needs a ground truth; give one, or use the ground-truth-free "
                "metric 'output_change'"
            )
        if self.ti.target is not None and tuple(self.ti.target.shape[-2:]) != (oh, ow):
            raise ChannelError(f"ground truth is {tuple(self.ti.target.shape[-2:])} but the model output is {(oh, ow)}")
        names = donor_names if donor_names is not None else [f"donor{k}" for k in range(len(donors))]
        if len(names) != len(donors):
            raise ChannelError(f"{len(names)} donor names for {len(donors)} donors")
        acts, kept = [], []
        for name, d in zip(names, donors):
            if tuple(d.input.shape) != tuple(x.shape):
                raise ChannelError(
                    f"donor {name} is {tuple(d.input.shape[-2:])}, the input {tuple(x.shape[-2:])}: a donor's "
                    "activation replaces the channel at the same positions, so crop the population alike"
                )
            dx = d.input.to(self.device)
            if torch.equal(dx, x):
                self.notes.append(f"donor {name} is the input itself: left out")
                continue
            acts.append(self._activation(dx)[1][0])
            kept.append(name)
        if donors and not kept:
            raise ChannelError("every donor is the input itself; give other images of the population")
        self.donor_names = kept
        self.donor_acts = torch.stack(acts) if acts else None  # (D, C, H, W)
        self.channel_means = self.donor_acts.mean(dim=(0, 2, 3)) if acts else None  # (C,)
        self.activation = act[0]
        # the baseline with the interventions' forward shape (forward_batch rows), as the input map's
        t = time.perf_counter()
        base = self._forward(x.expand(self.forward_batch, -1, -1, -1), None)
        self.item_s_estimate = (time.perf_counter() - t) / self.forward_batch
        y0, y1, x0, x1 = self.roi.box
        if self.ti.target is not None and self.metric.name != "output_change":
            ref = self.ti.target[:, :, y0:y1, x0:x1]
        else:
            ref = base[:1, :, y0:y1, x0:x1]
        self.ref = self.metric.prepare(ref)
        roi = base[:1, :, y0:y1, x0:x1]
        if not torch.isfinite(roi).all():
            raise ChannelError(f"{self.model_name} produced NaN or Inf in the ROI on the un-intervened input")
        self.restored = base[:1]
        self.baseline = float(self.metric(roi, self.ref)[0])

    # --- interventions --------------------------------------------------------------------------------
    def donor_index(self, channel: int, sample: int) -> int:
        """The donor of sample ``sample`` of ``channel`` (module docstring)."""
        d = len(self.donor_names)
        perm = np.random.default_rng([self.seed, int(channel), d]).permutation(d)
        return int(perm[int(sample) % d])

    def values(self, channels: np.ndarray, samples: np.ndarray) -> Tensor:
        """(B, H, W) planes that channels ``channels`` take in samples ``samples``."""
        h, w = self.act_shape[1:]
        if self.value == "zeros":
            return torch.zeros((len(channels), h, w), device=self.device, dtype=self.activation.dtype)
        if self.value == "mean":
            m = self.channel_means[torch.as_tensor(np.asarray(channels), device=self.device)]
            return m[:, None, None].expand(-1, h, w)
        idx = [self.donor_index(c, s) for c, s in zip(channels.tolist(), samples.tolist())]
        return self.donor_acts[torch.as_tensor(idx, device=self.device), torch.as_tensor(channels, device=self.device)]

    def _forward(self, x: Tensor, patch: tuple[Tensor, Tensor] | None) -> Tensor:
        """The model on a batch of exactly ``forward_batch`` rows (a fixed shape: the same rounding whatever the
        batch size of the plan), with ``patch`` applied at the layer."""
        self._patch = patch
        try:
            return self._call(x)
        finally:
            self._patch = None

    def _metrics(self, channels: np.ndarray, samples: np.ndarray) -> np.ndarray:
        channels, samples = np.asarray(channels), np.asarray(samples)
        planes = self.values(channels, samples)
        y0, y1, x0, x1 = self.roi.box
        x = self.ti.input
        fb, out = self.forward_batch, []
        for i in range(0, len(channels), fb):
            c = torch.as_tensor(channels[i : i + fb], device=self.device)
            p = planes[i : i + fb]
            real = len(c)
            if real < fb:  # padded with copies of the first row, discarded
                c = torch.cat([c, c[:1].expand(fb - real)])
                p = torch.cat([p, p[:1].expand(fb - real, -1, -1)])
            y = self._forward(x.expand(fb, -1, -1, -1), (c, p))[:real, :, y0:y1, x0:x1]
            if not torch.isfinite(y).all():
                raise ChannelError(
                    f"{self.model_name} produced NaN or Inf in the ROI with a channel of {self.layer!r} set"
                )
            out.append(self.metric(y, self.ref))
        return torch.cat(out).detach().cpu().numpy().astype(np.float64)

    # --- identity and running -------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The settings recorded with the result and hashed into the fingerprint."""
        return {
            "layer": self.layer,
            "value": self.value,
            "channels": self.channels,
            "donors": list(self.donor_names),
            "estimator": self.estimator.describe(),
            "metric": {
                "name": self.metric.name,
                "crop_border": self.metric.crop_border,
                "test_y_channel": self.metric.test_y_channel,
            },
            "roi": self.roi.as_list(),
            "seed": self.seed,
            "tol": self.tol,
            "classification": self.rule,
            "forward_batch": self.forward_batch,
            **({"task": self.task} if self.task is not None else {}),
        }

    def fingerprint_also(self) -> tuple[str, ...]:
        """Earlier identities of this run (a channel map has had one form only)."""
        return ()

    def fingerprint(self) -> str:
        """The run's identity: its settings, the model's weights, the input, ground truth and donor inputs."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(json.dumps(self.settings(), sort_keys=True).encode())
            h.update(model_digest(self.model).encode())
            h.update(self.ti.input.detach().cpu().numpy().tobytes())
            if self.ti.target is not None:
                h.update(self.ti.target.detach().cpu().numpy().tobytes())
            if self.donor_acts is not None:
                h.update(self.donor_acts.detach().cpu().numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def check_folder(self, folder: str | Path) -> str | None:
        """``None`` (nothing to resume), ``"partial"`` or ``"complete"`` (see :func:`cem_lab.causal.resume.check_folder`)."""
        return check_folder(folder, self.fingerprint())

    def run(
        self,
        folder: str | Path | None = None,
        progress: bool = True,
        on_batch: Callable[[BatchInfo], None] | None = None,
        checkpoint_every: float | None = DEFAULT_CHECKPOINT_S,
        checkpoint_every_items: int | None = None,
        executor: UnitExecutor | None = None,
    ) -> ChannelResult:
        """Run every stage; with ``folder``, checkpoint there (``state.npz``) and resume what it holds, as
        :meth:`CEMJob.run <cem_lab.causal.job.CEMJob.run>` does."""
        from cem_lab.causal.stages import run_stages  # the stage loop imports the job types lazily too

        with self._hooked():
            return run_stages(self, folder, progress, on_batch, checkpoint_every, checkpoint_every_items, executor)

    def _result(self, stats: dict[str, BlockStats], fp: str) -> ChannelResult:
        est = self.estimator.estimate(stats, self.baseline)
        effect, cls, lo, hi = classify(est, tol=self.tol, rule=self.rule)
        meta = {
            "fingerprint": fp,
            "model": self.model_name,
            "image": self.image_name,
            "settings": self.settings(),
            "notes": list(self.notes),
            "cost": self.cost,
            "device": str(self.device),
        }
        return ChannelResult(
            layer=self.layer,
            value=self.value,
            effect=effect,
            raw_effect=est.effect.astype(np.float64),
            stderr=est.stderr,
            n=est.n,
            ci_low=lo,
            ci_high=hi,
            classification=cls,
            baseline=self.baseline,
            meta=meta,
        )
