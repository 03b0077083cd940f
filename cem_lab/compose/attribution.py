"""The objects of a `cem-attribution` run (conf/attribution.yaml): the checked ``attribution`` section
(:func:`read_settings`), the run folder's check and identity, and the plan (:func:`prepare_attribution`):
every input built and checked, with nothing written (the console script: :mod:`cem_lab.cli.attribution`)."""

from __future__ import annotations

import json
import math
import shlex
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cem_lab.attribution.base import NOT_DIFFERENTIABLE, AttributionError
from cem_lab.attribution.gradients import IG_METHODS
from cem_lab.attribution.lam import INTEGRATIONS
from cem_lab.attribution.objective import CHANNELS, OBJECTIVES
from cem_lab.attribution.study import AttributionPlan
from cem_lab.attribution.study_methods import (
    INTERVENTIONS,
    METHODS,
    Settings,
    gradient_maps,
    load_cem_run,
    replacement_metrics,
)
from cem_lab.attribution.study_output import CEM_DIR, RESULT_JSON
from cem_lab.bookkeeping.neutral_keys import ATTRIBUTION_NEUTRAL_KEYS
from cem_lab.bookkeeping.run_index import identity_config
from cem_lab.causal.errors import RunFolderError
from cem_lab.compose.build import build_patch_bank
from cem_lab.compose.prepare import prepare
from cem_lab.run_format import CEM_FILE, DONE_FILE, STATE_FILE
from cem_lab.viz.style import FigureStyle


# --- settings ------------------------------------------------------------------------------------------
def _error(text: str):
    return AttributionError(text)


def _positive_int(value: Any, key: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        extra = " or null" if allow_none else ""
        raise _error(f"{key} must be a positive integer{extra}, got {value!r}")
    return int(value)


def _positive_number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not value > 0:
        raise _error(f"{key} must be a positive number, got {value!r}")
    return float(value)


def _names(value: Any, key: str, allowed: tuple[str, ...], empty_ok: bool) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise _error(f"{key} must be a list such as [{','.join(allowed[:4])}], got {value!r}")
    names = [str(v) for v in value]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise _error(f"{key}: unknown {', '.join(map(repr, unknown))}; choose from [{','.join(allowed)}]")
    if len(set(names)) != len(names):
        raise _error(f"{key} lists a name twice: {names}")
    if not names and not empty_ok:
        raise _error(f"{key} is empty; choose from [{','.join(allowed)}]")
    return names


def read_settings(cfg: DictConfig) -> Settings:
    """The ``attribution`` section, checked: every bad value is refused here, before any work."""
    node = cfg.get("attribution")
    if node is None:
        raise _error("the config has no `attribution` section (conf/attribution.yaml)")
    a = OmegaConf.to_container(node, resolve=True)
    assert isinstance(a, dict)
    methods = _names(a.get("methods"), "attribution.methods", METHODS, empty_ok=False)
    objective = str(a.get("objective", "gradient"))
    if objective not in OBJECTIVES:
        raise _error(f"attribution.objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    channels = str(a.get("channels", "rgb"))
    if channels not in CHANNELS:
        raise _error(f"attribution.channels must be one of {list(CHANNELS)}, got {channels!r}")
    lam_in, ig_in, f_in = a.get("lam") or {}, a.get("ig") or {}, a.get("faithfulness") or {}
    for key, section, known in (
        ("lam", lam_in, ("sigma_max", "steps", "batch_size", "integration")),
        ("ig", ig_in, ("baseline", "blur_sigma", "steps", "method", "batch_size")),
        ("faithfulness", f_in, ("interventions", "steps", "samples", "sign_tol")),
    ):
        extra = sorted(set(section) - set(known))
        if extra:
            raise _error(f"attribution.{key}: unknown key(s) {extra}; known: {list(known)}")
    lam = {
        "sigma_max": _positive_number(lam_in.get("sigma_max", 1.2), "attribution.lam.sigma_max"),
        "steps": _positive_int(lam_in.get("steps", 50), "attribution.lam.steps"),
        "batch_size": _positive_int(lam_in.get("batch_size", 8), "attribution.lam.batch_size"),
        "integration": str(lam_in.get("integration", "riemann_right")),
    }
    if lam["integration"] not in INTEGRATIONS:
        raise _error(f"attribution.lam.integration must be one of {list(INTEGRATIONS)}, got {lam['integration']!r}")
    baseline = ig_in.get("baseline", "black")
    if not (
        baseline in ("black", "blur")
        or (isinstance(baseline, (int, float)) and not isinstance(baseline, bool) and math.isfinite(baseline))
    ):
        raise _error(f"attribution.ig.baseline must be black, blur or a number (a constant image), got {baseline!r}")
    ig = {
        "baseline": baseline,
        "blur_sigma": _positive_number(ig_in.get("blur_sigma", 1.2), "attribution.ig.blur_sigma"),
        "steps": _positive_int(ig_in.get("steps", 50), "attribution.ig.steps"),
        "method": str(ig_in.get("method", "gausslegendre")),
        "batch_size": _positive_int(ig_in.get("batch_size", 8), "attribution.ig.batch_size", allow_none=True),
    }
    if ig["method"] not in IG_METHODS:
        raise _error(f"attribution.ig.method must be one of {list(IG_METHODS)}, got {ig['method']!r}")
    interventions = _names(
        f_in.get("interventions", ["lv", "zeros", "mean", "blur"]),
        "attribution.faithfulness.interventions",
        INTERVENTIONS,
        empty_ok=True,
    )
    steps = _positive_int(f_in.get("steps", 16), "attribution.faithfulness.steps", allow_none=True)
    samples = _positive_int(f_in.get("samples", 4), "attribution.faithfulness.samples")
    sign_tol = f_in.get("sign_tol", 0.0)
    if isinstance(sign_tol, bool) or not isinstance(sign_tol, (int, float)) or not sign_tol >= 0:
        raise _error(f"attribution.faithfulness.sign_tol must be a number >= 0, got {sign_tol!r}")
    cem_run = a.get("cem_run")
    cem_run = None if cem_run in (None, "") else str(cem_run)
    if cem_run is not None and "cem" not in methods:
        raise _error(
            f"attribution.cem_run={cem_run} is set but cem is not in attribution.methods={methods}; "
            "add cem to the methods, or drop attribution.cem_run"
        )
    return Settings(methods, objective, channels, lam, ig, interventions, steps, samples, float(sign_tol), cem_run)


# --- the checks before anything is written ---------------------------------------------------------------
def identity(cfg: DictConfig) -> dict:
    """The config less the keys that do not change the numbers (as `cem-lab`'s done.json)."""
    return identity_config(cfg, ATTRIBUTION_NEUTRAL_KEYS)


def check_run_folder(cfg: DictConfig, folder: Path) -> None:
    """Refuse a folder that holds a `cem-lab` run, or a `cem-attribution` run with other settings."""
    if any((folder / name).exists() for name in (CEM_FILE, STATE_FILE, DONE_FILE)):
        raise RunFolderError(
            f"{folder} holds a cem-lab run, not a cem-attribution run; give this run another folder "
            f"(hydra.run.dir=...), or read that CEM with attribution.cem_run={folder}"
        )
    prev = folder / RESULT_JSON
    if prev.is_file():
        try:
            config = json.loads(prev.read_text()).get("config")
        except (OSError, ValueError, AttributeError):
            config = None
        if config != identity(cfg):
            raise RunFolderError(
                f"{folder} holds a cem-attribution run with other settings; use another output "
                "folder (hydra.run.dir=...), or delete that folder to start over"
            )


def _cem_command(extra: tuple = ()) -> str:
    """The `cem-lab` command of this run's overrides (the CEM needs no gradients), plus ``extra``."""
    try:
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None
    except Exception:
        overrides = None
    if overrides is None:
        return " ".join(["cem-lab <the same overrides>", *extra])
    keys = {e.split("=", 1)[0] for e in extra}
    kept = [
        o
        for o in overrides
        if not o.lstrip("+~").startswith("attribution.") and o.lstrip("+~").split("=", 1)[0] not in keys
    ]
    return " ".join(["cem-lab", *map(shlex.quote, kept + list(extra))])


def prepare_attribution(cfg: DictConfig, folder: Path) -> AttributionPlan:
    """Every check and every refusal, with nothing written: the settings, the folder, the CEM job
    (:func:`cem_lab.compose.prepare.prepare`), the CEM run to read, the gradient maps, the interventions."""
    t0 = time.perf_counter()
    settings = read_settings(cfg)
    check_run_folder(cfg, folder)
    try:
        prepared = prepare(cfg, folder)
    except RuntimeError as err:
        # the dependency-region probe of mode=auto differentiates the model too
        if "does not require grad" not in str(err) and "grad_fn" not in str(err):
            raise
        why = f"its output is not connected to its input by autograd ({str(err).splitlines()[0]})"
        raise _error(
            f"{NOT_DIFFERENTIABLE.format(why=why)}, on the whole image: {_cem_command(['mode=full'])}"
        ) from None
    job = prepared.job
    outside = int((~job.roi_mask).sum())
    if outside < 2 and (settings.interventions or len(settings.methods) > 1):
        raise _error(
            f"the ROI {job.roi.as_list()} covers all but {outside} of the {len(job.grid)} blocks: nothing "
            "left to rank; choose a smaller roi or cem.block"
        )
    cem = None
    if "cem" in settings.methods:
        if settings.cem_run is not None:
            cem = load_cem_run(settings.cem_run, job)
        else:
            job.check_folder(folder / CEM_DIR)  # another run's checkpoint there is refused
    t1 = time.perf_counter()
    maps = gradient_maps(job, settings, bool(cfg.progress), cem_command=_cem_command())
    t2 = time.perf_counter()
    metrics = replacement_metrics(
        prepared,
        settings,
        sampler=prepared.job.cem_settings.sampler,  # the map's sampler (built from cem.sampler)
        make_patch_bank=lambda: build_patch_bank(cfg.patches),
    )
    timings = {"prepare_s": t1 - t0, "gradients_s": t2 - t1, "interventions_s": time.perf_counter() - t2}
    return AttributionPlan(
        figures=FigureStyle.from_setting(cfg.figures),
        progress=bool(cfg.progress),
        config=identity(cfg),
        settings=settings,
        prepared=prepared,
        maps=maps,
        metrics=metrics,
        cem=cem,
        timings=timings,
    )
