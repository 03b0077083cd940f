"""The knobs of one causal effect map, their defaults and their checks, in one place.

:class:`CEMSettings` is what :func:`~cem_lab.causal.run.prepare_cem` and
:func:`~cem_lab.causal.run.compute_cem` are configured with (their keywords build one), and the one
translation from settings to the objects a job runs with: the estimator
(:meth:`CEMSettings.make_estimator`), the intervention and the ROI metric. The defaults of the
estimators' counts (T_c, T_f, tol) and of the adaptive options are the estimators' own
(:mod:`cem_lab.causal.estimators`); conf/cem/*.yaml spell out the same values for the CLI.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from cem_lab.causal.estimators import ADAPTIVE_DEFAULTS, COARSE, FINE, TOL, Estimator, EstimatorError, make_estimator
from cem_lab.causal.interventions import BaselineIntervention, Intervention, make_intervention
from cem_lab.errors import InputError
from cem_lab.metrics import RoiMetric
from cem_lab.patches import SAMPLERS, PatchBank, PatchSampler

#: default checkpoint cadence (seconds): a checkpoint costs a few milliseconds (BENCHMARKS.md), so a
#: kill -9 loses at most this much work for well under 1 % of the run time
DEFAULT_CHECKPOINT_S = 5.0
#: the adaptive estimator's options (fields of :class:`CEMSettings`, keys of conf/cem/adaptive.yaml)
ADAPTIVE_OPTIONS: tuple[str, ...] = tuple(ADAPTIVE_DEFAULTS)
#: how each intervened item is recomputed (``recompute=``; :mod:`cem_lab.causal.recompute`)
RECOMPUTE = ("roi_crop", "block_crop", "incremental")
ESTIMATORS = ("coarse_to_fine", "exhaustive", "adaptive")
CLASSIFICATIONS = ("tol", "significance")
MODES = ("auto", "full")


def check_checkpoint_cadence(every_s: float | None, every_items: int | None) -> None:
    """Refuse a checkpoint interval that is not a positive number (or None, off)."""
    if every_s is not None and (isinstance(every_s, bool) or not isinstance(every_s, (int, float)) or not every_s > 0):
        raise InputError(f"checkpoint every_s must be a positive number of seconds or null, got {every_s!r}")
    if every_items is not None and (
        isinstance(every_items, bool) or not isinstance(every_items, int) or every_items < 1
    ):
        raise InputError(f"checkpoint every_items must be a positive integer or null, got {every_items!r}")


def _int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


#: each setting's check and the fix a refusal names: ``{key: (ok(value), "what it must be")}``
_CHECKS: dict[str, tuple[Any, str]] = {
    "block": (lambda v: _int(v) and v >= 1, "a positive number of output pixels"),
    "coarse": (lambda v: _int(v) and v >= 1, "a positive integer (T_c)"),
    "fine": (lambda v: _int(v) and v >= 1, "a positive integer (T_f)"),
    "samples": (lambda v: v is None or (_int(v) and v >= 1), "a positive integer"),
    "tol": (lambda v: _real(v) and v >= 0, "a number >= 0 (in the metric's unit)"),
    "classification": (lambda v: v in CLASSIFICATIONS, f"one of {list(CLASSIFICATIONS)}"),
    "intervention": (
        lambda v: isinstance(v, Intervention) or v in ("lv", *BaselineIntervention.KINDS),
        f"one of {['lv', *BaselineIntervention.KINDS]} or an Intervention",
    ),
    "sampler": (
        # a name as make_sampler reads it (any case, '-' for '_'), or a sampler object
        lambda v: (
            isinstance(v, PatchSampler) or (isinstance(v, str) and v.strip().lower().replace("-", "_") in SAMPLERS)
        ),
        f"one of {list(SAMPLERS)} or a PatchSampler",
    ),
    "crop_border": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "test_y_channel": (lambda v: isinstance(v, bool), "true or false"),
    "seed": (lambda v: _int(v), "an integer"),
    "batch_size": (lambda v: _int(v) and v >= 1, "a positive integer"),
    "forward_batch": (lambda v: v == "auto" or (_int(v) and v >= 1), "a positive integer or 'auto'"),
    "mode": (lambda v: v in MODES, "'auto' (crop when the model is local) or 'full'"),
    "crop_margin": (lambda v: _int(v) and v >= 0, "an integer >= 0 (input pixels)"),
    "crop_multiple": (lambda v: _int(v) and v >= 1, "a positive integer"),
    "verify": (lambda v: isinstance(v, bool), "true or false"),
    "recompute": (
        lambda v: v in RECOMPUTE,
        "'roi_crop' (every item on the ROI's dependency crop), 'block_crop' (each item on the smallest "
        "crop its block needs) or 'incremental' (a plain conv stack recomputed layer by layer only where "
        "the block reaches)",
    ),
}


@dataclass(frozen=True)
class CEMSettings:
    """The settings of one map (what :func:`~cem_lab.causal.run.prepare_cem` takes besides its inputs).

    ``block``: block side in output pixels. ``estimator``: "coarse_to_fine" (``coarse``, ``fine``,
    ``tol``), "exhaustive" (``samples`` per block, default ``fine``), "adaptive" (``coarse``, ``tol``,
    ``fine`` for the ROI's blocks and the :data:`ADAPTIVE_OPTIONS`), or an
    :class:`~cem_lab.causal.estimators.Estimator` (its own ``tol``, if it has one, is the map's).
    ``classification``: "tol" or "significance". ``intervention``: "lv" (with ``sampler``), "zeros",
    "mean", "blur", "noise" or an :class:`~cem_lab.causal.interventions.Intervention`. ``metric``
    (with ``crop_border``, ``test_y_channel``): a name or a :class:`~cem_lab.metrics.RoiMetric`.
    ``seed``: the draws' seed. ``batch_size``: items per work unit; ``forward_batch``: inputs per
    model call (an int or "auto"). ``mode``: "auto" (crop when the model is local) or "full";
    ``crop_margin``, ``crop_multiple``, ``verify``: of the dependency crop. ``recompute``: one of
    :data:`RECOMPUTE`. Every value is checked when the settings are made.
    """

    block: int = 8
    estimator: str | Estimator = "coarse_to_fine"
    coarse: int = COARSE
    fine: int = FINE
    samples: int | None = None
    tol: float = TOL
    classification: str = "tol"
    round_size: int = ADAPTIVE_DEFAULTS["round_size"]
    growth: float = ADAPTIVE_DEFAULTS["growth"]
    max_samples: int = ADAPTIVE_DEFAULTS["max_samples"]
    half_width: float = ADAPTIVE_DEFAULTS["half_width"]
    settled_half_width: float = ADAPTIVE_DEFAULTS["settled_half_width"]
    level: float = ADAPTIVE_DEFAULTS["level"]
    roi_blocks: str = ADAPTIVE_DEFAULTS["roi_blocks"]
    intervention: str | Intervention = "lv"
    sampler: Any = "uniform"
    metric: str | RoiMetric = "psnr"
    crop_border: int = 0
    test_y_channel: bool = False
    seed: int = 0
    batch_size: int = 32
    forward_batch: int | str = 8
    mode: str = "auto"
    crop_margin: int = 0
    crop_multiple: int = 1
    verify: bool = True
    recompute: str = "roi_crop"

    def __post_init__(self) -> None:
        if self.estimator is None:  # today's keyword default: the reference estimator
            object.__setattr__(self, "estimator", "coarse_to_fine")
        for key in _CHECKS:
            self._check_value(key, getattr(self, key))
        if not isinstance(self.estimator, Estimator) and self.estimator not in ESTIMATORS:
            raise EstimatorError(f"unknown estimator {self.estimator!r}; choose one of {list(ESTIMATORS)}")
        self._check_unused()
        self.make_estimator()  # the estimator's own checks (EstimatorError names the key)
        if isinstance(self.metric, str):
            self.make_metric()

    @staticmethod
    def _check_value(key: str, value: Any) -> None:
        ok, fix = _CHECKS[key]
        if not ok(value):
            raise InputError(f"{key} must be {fix}, got {value!r}")

    @classmethod
    def check_values(cls, values: Mapping[str, Any]) -> None:
        """Refuse an unknown key (with the closest known one) or a value of the wrong type or range, key by
        key, before any object is built from them (the checks :class:`CEMSettings` itself makes)."""
        cls._check_known(values)
        for key, value in values.items():
            if key in _CHECKS:
                cls._check_value(key, value)

    def _check_unused(self) -> None:
        """An option the chosen estimator does not read, set to another value than its default, is refused."""
        name = self.estimator_name
        if name != "adaptive":
            for key in ADAPTIVE_OPTIONS:
                if getattr(self, key) != ADAPTIVE_DEFAULTS[key]:
                    raise InputError(
                        f"{key} is an option of estimator='adaptive' only (the estimator is {self.estimator_name!r}): "
                        "choose estimator='adaptive' or drop it"
                    )
        if name != "exhaustive" and self.samples is not None:
            raise InputError(
                f"samples is an option of estimator='exhaustive' only (the estimator is {self.estimator_name!r}): "
                "choose estimator='exhaustive' or use coarse and fine"
            )

    @property
    def estimator_name(self) -> str:
        """The estimator's name (also when it is given as an object)."""
        return self.estimator if isinstance(self.estimator, str) else self.estimator.name

    def adaptive_options(self) -> dict[str, Any]:
        """The adaptive estimator's options: ``{name: value}`` over :data:`ADAPTIVE_OPTIONS`."""
        return {k: getattr(self, k) for k in ADAPTIVE_OPTIONS}

    def make_estimator(self) -> Estimator:
        """The estimator these settings describe (a copy of the object when one was given: a job binds its
        estimator to its own ROI, and the ROIs of an atlas must not share one)."""
        if isinstance(self.estimator, Estimator):
            return copy.deepcopy(self.estimator)
        if self.estimator == "coarse_to_fine":
            return make_estimator("coarse_to_fine", coarse=self.coarse, fine=self.fine, tol=self.tol)
        if self.estimator == "exhaustive":
            return make_estimator("exhaustive", samples=self.samples if self.samples is not None else self.fine)
        return make_estimator("adaptive", coarse=self.coarse, tol=self.tol, fine=self.fine, **self.adaptive_options())

    def map_tol(self, estimator: Estimator) -> float:
        """The tolerance the map is classified with: the estimator's own when it has one."""
        return getattr(estimator, "tol", self.tol)

    def make_intervention(self, patch_bank=None) -> Intervention:
        """The intervention (a shallow copy of the object when one was given: a job binds it to its own
        input and blocks, while the patch bank and the sampler stay shared); "lv" draws from ``patch_bank``
        (default: the embedded bank)."""
        if isinstance(self.intervention, Intervention):
            return copy.copy(self.intervention)
        if self.intervention == "lv" and patch_bank is None:
            patch_bank = PatchBank.embedded()
        return make_intervention(self.intervention, bank=patch_bank, sampler=self.sampler)

    def make_metric(self) -> RoiMetric:
        """The ROI metric (the object itself when one was given)."""
        if isinstance(self.metric, RoiMetric):
            return self.metric
        return RoiMetric(self.metric, crop_border=self.crop_border, test_y_channel=self.test_y_channel)

    def replace(self, **changes: Any) -> CEMSettings:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def default(cls, name: str) -> Any:
        """The default value of the setting ``name`` (the configs read theirs from here)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if name not in fields:
            raise InputError(f"unknown CEM setting {name!r}: the settings are {sorted(fields)}")
        return fields[name].default

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The names of the settings."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> CEMSettings:
        """Settings from a mapping of setting names (a config's ``cem`` node and the run-level keys);
        an unknown key is an error, never ignored."""
        cls._check_known(values)
        return cls(**dict(values))

    @classmethod
    def _check_known(cls, values: Mapping[str, Any]) -> None:
        known = set(cls.keys())
        unknown = sorted(k for k in values if k not in known)
        if unknown:
            hints = [
                f"{key!r} (did you mean {close[0]!r}?)"
                if (close := difflib.get_close_matches(key, known, n=1))
                else repr(key)
                for key in unknown
            ]
            raise InputError(f"unknown CEM setting {', '.join(hints)}: the settings are {sorted(known)}")

    @classmethod
    def from_keywords(cls, estimator_options: Mapping[str, Any] | None = None, **values: Any) -> CEMSettings:
        """Settings from :func:`~cem_lab.causal.run.prepare_cem`'s keywords: ``estimator_options``
        (the adaptive options, and ``fine``) is merged into the others."""
        opts = dict(estimator_options or {})
        bad = sorted(k for k in opts if k not in (*ADAPTIVE_OPTIONS, "fine"))
        if bad:
            raise InputError(
                f"estimator_options {bad} are not adaptive options: the options are {list(ADAPTIVE_OPTIONS)}"
            )
        merged = {**values, **opts}
        return cls.from_mapping(merged)
