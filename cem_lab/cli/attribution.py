"""`cem-attribution`: the CEM beside gradient attributions of the same model, input, ROI and blocks.

    cem-attribution model=dncnn model.checkpoint=PATH task=dn image=PATH roi=[152,96,32] cem.block=8
    cem-attribution attribution.methods=[lam,cem] attribution.cem_run=runs/cem/<a cem-lab run>

Every `cem-lab` override works (conf/attribution.yaml reuses its config groups), plus the
``attribution.*`` keys. The run:

1. builds the model, task and degraded input exactly as `cem-lab` does
   (:func:`cem_lab.cli.cem.prepare`), and computes the CEM into ``<run folder>/cem/`` (the CEM's
   own run folder format, checkpointed: a rerun resumes it) or reads a finished `cem-lab` run
   (``attribution.cem_run=PATH``, refused unless its ROI, block, image size and input match);
2. runs LAM, integrated gradients (Captum) and saliency on the job's input, model, ROI and block
   grid (:mod:`cem_lab.attribution`); a model without gradients is refused, the CEM still works;
3. checks every map's block ranking (ROI blocks left out): deletion and insertion curves of the
   run's ROI metric with the blocks replaced by LV interventions (in distribution) and by each
   ablation baseline (:class:`~cem_lab.attribution.BlockReplacementMetric`), their areas; the
   Spearman rank correlation of every pair of maps (absolute values; the CEM's thresholded effect);
   the sign test of the CEM's negative blocks; the share of the image each map marks (the fewest
   blocks outside the ROI that hold 50 % / 90 % of its mass);
4. writes ``attribution.npz``, ``attribution.json`` (read them with
   :func:`cem_lab.analysis.attribution.load_attribution`), ``figures/attribution_panel.png`` and
   ``figures/deletion_curves.png``, and prints a short report.

This module reads and checks the config and dispatches; the computing and the writing live in
:mod:`cem_lab.attribution.study` (and its parts study_methods, study_output).

Nothing is written before every input is accepted (the gradient maps are computed before that,
so that a refusal of theirs leaves nothing either); the run folder is locked for the whole run.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from cem_lab.attribution.study import AttributionOutcome, AttributionPlan, compute_attribution
from cem_lab.attribution.study_methods import (
    INTERVENTIONS,
    METHODS,
    Settings,
    gradient_maps,
    load_cem_run,
    replacement_metrics,
)
from cem_lab.attribution.study_output import CEM_DIR, LOG_FILE, PROGRAM, RESULT_JSON, SHORT, format_share
from cem_lab.cli import cem as _cem  # registers the resolvers of the run folder's name  # noqa: F401

#: config keys that do not change a run's numbers (besides cem-lab's own)
NOT_IDENTITY = ("figures",)


# --- settings ------------------------------------------------------------------------------------------
def _error(text: str):
    from cem_lab.attribution import AttributionError

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
    from cem_lab.attribution.gradients import IG_METHODS
    from cem_lab.attribution.lam import INTEGRATIONS
    from cem_lab.attribution.objective import CHANNELS, OBJECTIVES

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
    from cem_lab.bookkeeping.run_index import identity_config

    data = identity_config(cfg)
    for key in NOT_IDENTITY:
        data.pop(key, None)
    return data


def check_run_folder(cfg: DictConfig, folder: Path) -> None:
    """Refuse a folder that holds a `cem-lab` run, or a `cem-attribution` run with other settings."""
    from cem_lab.bookkeeping.run_index import DONE_FILE
    from cem_lab.causal.runner import STATE_FILE, RunFolderError

    if any((folder / name).exists() for name in ("cem.npz", STATE_FILE, DONE_FILE)):
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
    import shlex

    try:
        from hydra.core.hydra_config import HydraConfig

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
    (:func:`cem_lab.cli.cem.prepare`), the CEM run to read, the gradient maps, the interventions."""
    t0 = time.perf_counter()
    settings = read_settings(cfg)
    check_run_folder(cfg, folder)
    try:
        prepared = _cem.prepare(cfg, folder)
    except RuntimeError as err:
        # the dependency-region probe of mode=auto differentiates the model too
        if "does not require grad" not in str(err) and "grad_fn" not in str(err):
            raise
        from cem_lab.attribution.base import NOT_DIFFERENTIABLE

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
        sampler=cfg.cem.get("sampler", "uniform"),
        make_patch_bank=lambda: _cem.build_patch_bank(cfg.patches),
    )
    timings = {"prepare_s": t1 - t0, "gradients_s": t2 - t1, "interventions_s": time.perf_counter() - t2}
    return AttributionPlan(
        figures=bool(cfg.figures),
        progress=bool(cfg.progress),
        config=identity(cfg),
        settings=settings,
        prepared=prepared,
        maps=maps,
        metrics=metrics,
        cem=cem,
        timings=timings,
    )


# --- the run ----------------------------------------------------------------------------------------------
def run(cfg: DictConfig, output_dir: Path, *, memory=None) -> AttributionOutcome:
    """Check everything, then (folder locked) write the config, compute and write the results."""
    from cem_lab.bookkeeping.run_folder import accept_run_folder, buffered_log, close_log_file
    from cem_lab.folder_lock import hold_run_folder

    output_dir = Path(output_dir)
    with hold_run_folder(output_dir, what=PROGRAM):
        with nullcontext(memory) if memory is not None else buffered_log() as kept:
            plan = prepare_attribution(cfg, output_dir)  # every refusal happens here, before anything is written
            handler = accept_run_folder(cfg, output_dir, kept, log_name=LOG_FILE)
        try:
            return compute_attribution(plan, output_dir)
        finally:
            close_log_file(handler)


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, fmt)


def report(outcome: AttributionOutcome) -> str:
    """The console lines of a finished run."""
    s, folder = outcome.summary, outcome.folder
    unit = s["metric"]["unit"]
    methods = s["methods"]
    lines = [
        f"attribution written to {folder}",
        f"  ROI {s['metric']['name']} before intervention: {_num(s['baseline_metric'], '.3f')} {unit}; "
        f"{s['blocks_ranked']} blocks outside the ROI ranked by {', '.join(SHORT[m] for m in methods)}",
    ]
    cem = s["settings"].get("cem") or {}
    if cem:
        lines.append(f"  CEM: {'computed in' if cem['source'] == 'computed' else 'read from'} {cem['folder']}")
    if s["faithfulness"]:
        lines.append(
            f"  AUC of the ROI {s['metric']['name']} ({unit}), deletion (lower = more faithful) / "
            "insertion (higher = more faithful):"
        )
        width = max(len(n) for n in s["faithfulness"])
        for name, entry in s["faithfulness"].items():
            parts = [
                f"{SHORT[m]} {_num(v['deletion_auc'], '.3f')}/{_num(v['insertion_auc'], '.3f')}"
                for m, v in entry["methods"].items()
            ]
            lines.append(f"    {name:<{width}}  " + "   ".join(parts))
    if s["rank_correlation"]:
        parts = [
            f"{'~'.join(SHORT[m] for m in pair.split('~'))} {_num(v['rho'], '+.2f')}"
            for pair, v in s["rank_correlation"].items()
        ]
        lines.append("  rank correlation (Spearman, |map|, outside the ROI): " + ", ".join(parts))
    marks = [f"{SHORT[m]} {format_share(v['50'])}/{format_share(v['90'])}" for m, v in s["shares_marked"].items()]
    lines.append("  share of the image marked (blocks holding 50%/90% of the mass): " + ", ".join(marks))
    if s["sign_test"]:
        parts = []
        for name, t in s["sign_test"].items():
            if not t["negative_blocks"]:
                parts.append(f"{name}: no negative block")
            else:
                parts.append(f"{name}: {t['raised']}/{t['negative_blocks']} raised it (p {_num(t['pvalue'], '.3g')})")
        lines.append("  sign test (the CEM's negative blocks replaced one at a time): " + "; ".join(parts))
    for key in ("lam", "ig"):
        c = s["completeness"].get(key)
        if c:
            lines.append(
                f"  {SHORT[key]} completeness: sum {_num(c['attribution_sum'], '.4g')} vs objective change "
                f"{_num(c['objective_change'], '.4g')} (delta {_num(c['delta'], '.2e')})"
            )
    figs = s.get("figures") or {}
    shown = ", ".join(str(folder / p) for p in figs.values())
    lines.append(f"  figures: {shown}" if figs else "  figures: none (figures=false)")
    return "\n".join(lines)


def command_line() -> str:
    import shlex

    prog = Path(sys.argv[0]).name if sys.argv else PROGRAM
    if prog in ("attribution.py", "__main__.py", "-c", ""):
        prog = PROGRAM
    return " ".join([prog, *map(shlex.quote, sys.argv[1:])])


def execute(cfg: DictConfig, folder: Path) -> AttributionOutcome:
    """Lock ``folder``, run, print the report."""
    from cem_lab.bookkeeping.run_folder import buffered_log
    from cem_lab.cli.devices import device_lease
    from cem_lab.folder_lock import hold_run_folder

    folder = Path(folder)
    with buffered_log() as memory, hold_run_folder(folder, what=PROGRAM, command=command_line()):
        with device_lease(cfg.device) as device:
            if device != cfg.device:
                cfg.device = device
            outcome = run(cfg, folder, memory=memory)
    print(report(outcome), flush=True)
    return outcome


@hydra.main(version_base="1.3", config_path="pkg://cem_lab.conf", config_name="attribution")
def _main(cfg: DictConfig) -> Any:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    folder = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        execute(cfg, folder)
        return {"status": "done", "folder": str(folder)}
    except Exception as err:  # one job's failure is reported, the others go on
        from cem_lab.bookkeeping.clean_errors import job_failed

        return job_failed(PROGRAM, err, folder, multirun)


def main() -> None:
    from cem_lab.bookkeeping.clean_errors import run_cli

    run_cli(_main, PROGRAM)


if __name__ == "__main__":
    main()
