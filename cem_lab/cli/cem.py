"""`cem-lab`: compute one causal effect map from a Hydra config (see conf/cem.yaml).

With no arguments it runs the embedded default: cem_lab's own small DnCNN on a crop of
scikit-image's `chelsea`, DN sigma 50, embedded patch bank, reference estimator settings.

Rerunning a command reuses its folder: a finished run is recognised without any model work
(cem_lab/bookkeeping/run_index.py), an interrupted one resumes from its checkpoint.

In a multirun (``-m``, see cem_lab/bookkeeping/sweep_record.py) a job that fails writes ``error.txt`` in
its folder and returns, so that the other jobs go on.

This module runs the program: the config becomes objects in :mod:`cem_lab.compose`, the run folder's
bookkeeping is :mod:`cem_lab.bookkeeping` (its testing aids: :mod:`cem_lab.bookkeeping.test_hooks`).
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cem_lab.bookkeeping import sweep_record
from cem_lab.bookkeeping.clean_errors import USER_ERRORS, job_failed, resumable, run_cli
from cem_lab.bookkeeping.run_folder import accept_run_folder, buffered_log, close_log_file
from cem_lab.bookkeeping.run_index import finished_run, mark_done, state_status
from cem_lab.bookkeeping.test_hooks import interrupt_hook, wait_for_start
from cem_lab.bookkeeping.wandb_logging import already_logged, wandb_run
from cem_lab.causal.result import CEMResult
from cem_lab.compose.atlas import execute_atlas, is_atlas
from cem_lab.compose.devices import device_lease
from cem_lab.compose.overrides import check_command_line
from cem_lab.compose.prepare import compute, launch_rank, prepare
from cem_lab.compose.resolvers import defaults_in_help, register_resolvers
from cem_lab.folder_lock import FolderBusyError, hold_run_folder
from cem_lab.run_format import DONE_FILE
from cem_lab.viz.style import FORMATS  # plain settings (no matplotlib)

PROGRAM = "cem-lab"

register_resolvers()  # before Hydra composes the config (cem_run_name, cem_sweep_name, ...)


def run(
    cfg: DictConfig, output_dir: Path, on_batch: Callable | None = None, *, memory=None, tracker: Callable | None = None
):
    """Compute and save the CEM that ``cfg`` describes into ``output_dir`` (locked for the run), and
    mark it finished (``done.json``).

    Nothing is written before the input is accepted (:func:`prepare`); then ``config.yaml``,
    Hydra's record and ``cem.log`` (with the records ``memory``, a :func:`buffered_log`, kept of
    the checks), then the map. ``tracker``: a context (W&B) that sees the run and its folder.
    """
    output_dir = Path(output_dir)
    with hold_run_folder(output_dir, what=PROGRAM):
        with nullcontext(memory) if memory is not None else buffered_log() as kept:
            prepared = prepare(cfg, output_dir)  # every refusal happens here, before anything is written
            handler = accept_run_folder(cfg, output_dir, kept)
        try:
            with tracker() if tracker is not None else nullcontext(None) as wb:
                result = compute(prepared, output_dir, on_batch)
                mark_done(cfg, output_dir, result.meta["fingerprint"])
                if wb is not None:
                    wb.log_folder(output_dir)
            return result
        finally:
            close_log_file(handler)


def report(result, folder: Path, skipped: bool = False) -> str:
    """The console lines of a finished map. A reused map (``skipped``) says that nothing was computed
    now and when its numbers were computed; the figure path is printed only if the figure exists."""
    s = result.summary()
    c, sh = s["counts"], s["shares"]
    head = f"CEM already finished (skipped) in {folder}" if skipped else f"CEM written to {folder}"
    lines = [
        head,
        f"  ROI {s['metric']} before intervention: {s['baseline_metric']:.3f} {s['unit']}",
        f"  blocks outside the ROI: {s['blocks_outside_roi']}  positive {c['positive']} ({sh['positive']:.1%})  "
        f"negative {c['negative']} ({sh['negative']:.1%})  zero {c['zero']} ({sh['zero']:.1%})",
    ]
    if "effect_max" in s:
        lines.append(
            f"  effect range {s['effect_range']:.3f} {s['unit']}: max {s['effect_max']['value']:.3f} at block "
            f"{tuple(s['effect_max']['block'])}, min {s['effect_min']['value']:.3f} at block "
            f"{tuple(s['effect_min']['block'])}"
        )
    work = f"{s['forward_passes']} forward passes, {s['timings'].get('run_s', 0):.1f} s on {s['device']}"
    if skipped:
        when = _finished_at(folder)
        lines.append(f"  nothing computed now; the map was computed earlier{when}: mode {s['mode']}, {work}")
    else:
        lines.append(f"  mode {s['mode']}, {work}")
    panels = [p for p in (folder / "figures" / f"cem_panel.{f}" for f in FORMATS) if p.is_file()]
    lines.append(f"  figures: {', '.join(map(str, panels))}" if panels else "  figures: none (figures=false)")
    return "\n".join(lines)


def _finished_at(folder: Path) -> str:
    try:
        when = json.loads((folder / DONE_FILE).read_text()).get("finished")
    except (OSError, ValueError):
        when = None
    return f" (finished {when})" if when else ""


def command_line() -> str:
    """The command that started this process, for the run folder's lock (who holds a busy folder)."""
    prog = Path(sys.argv[0]).name if sys.argv else PROGRAM
    if prog in ("cem.py", "__main__.py", "-c"):
        prog = PROGRAM
    return " ".join([prog, *map(shlex.quote, sys.argv[1:])])


def execute(
    cfg: DictConfig, folder: Path, *, job_num: int | None = None, group: str | None = None, record_errors: bool = False
) -> dict[str, Any]:
    """Run (or reuse) the CEM of ``cfg`` in ``folder``, log it, print the report; the job's outcome.

    The folder is locked first (:mod:`cem_lab.folder_lock`): a folder another process holds is
    refused untouched. The outcome's ``status``: ``done`` (computed now), ``resumed`` (finished
    from a checkpoint), ``skipped`` (it was already finished: no CEM work). With ``record_errors``
    (a multirun job), a failure is written to the folder's ``error.txt`` while the lock is held.
    """
    if launch_rank(cfg) != 0:  # another task of a cluster launch: rank 0 holds and writes the folder
        compute(prepare(cfg, folder), folder)
        return {"status": "done", "rank": launch_rank(cfg)}
    wait_for_start()
    # log lines before the run is accepted (a killed holder's lock taken over, the checks) are kept
    # for cem.log, and dropped with a refused run
    with buffered_log() as memory, hold_run_folder(folder, what=PROGRAM, command=command_line()):
        try:
            return _execute_locked(cfg, folder, memory, job_num=job_num, group=group)
        except Exception as err:
            if record_errors and not isinstance(err, FolderBusyError):
                sweep_record.record_error(folder, err, isinstance(err, USER_ERRORS))
            raise


def _execute_locked(cfg: DictConfig, folder: Path, memory, *, job_num: int | None, group: str | None) -> dict:
    check_command_line(cfg)  # a key added with + that nothing reads: refused before anything is read or written
    if is_atlas(cfg):
        return execute_atlas(cfg, folder, memory)
    logger_cfg = cfg.get("logger") or {}
    summary = finished_run(cfg, folder)
    skipped = summary is not None
    use_wandb = logger_cfg.get("name") == "wandb"
    if use_wandb and skipped:
        use_wandb = not already_logged(folder, summary.get("fingerprint"))

    def tracker():
        if not use_wandb:
            return nullcontext(None)
        return wandb_run(cfg, folder, group=group, name=folder.name)

    if skipped:
        result = CEMResult.load(folder)
        status = "skipped"
        with tracker() as wb:
            if wb is not None:
                wb.log_folder(folder)
    else:
        before = state_status(folder)
        with device_lease(cfg.device) as device:
            if device != cfg.device:
                cfg.device = device  # recorded in config.yaml; not part of a run's identity
            result = run(cfg, folder, on_batch=interrupt_hook(job_num), memory=memory, tracker=tracker)
        status = "done" if before is None else "skipped" if before[0] == "complete" else "resumed"
    (folder / sweep_record.ERROR_FILE).unlink(missing_ok=True)  # an earlier attempt's error
    print(report(result, folder, skipped=skipped), flush=True)
    s = result.summary()
    return {
        "status": status,
        "forward_passes": 0 if skipped else s.get("forward_passes"),
        "baseline_metric": s.get("baseline_metric"),
        "counts": s.get("counts"),
    }


@hydra.main(version_base="1.3", config_path="pkg://cem_lab.conf", config_name="cem")
def _main(cfg: DictConfig) -> Any:
    hc = HydraConfig.get()
    folder = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    job_num = int(hc.job.num) if multirun and hc.job.get("num") is not None else None
    group = Path(str(hc.sweep.dir)).name if multirun else None  # the sweep's name
    # Ctrl-C: the run (or sweep) folder keeps the work done so far, and the same command resumes it
    with resumable(Path(str(hc.sweep.dir)) if multirun else folder):
        try:
            return execute(cfg, folder, job_num=job_num, group=group, record_errors=multirun)
        except Exception as err:  # every failure of one job is recorded, the sweep goes on
            return job_failed(PROGRAM, err, folder, multirun)


def main() -> None:
    """The console script ``cem-lab``."""
    run_cli(defaults_in_help(_main), PROGRAM, resumes=True)


if __name__ == "__main__":
    # run the function of the importable module (not of __main__), so that launchers which pickle
    # the task function for worker processes (joblib, submitit) find it and its resolvers there
    from cem_lab.cli import cem as _cem  # noqa: PLW0406

    _cem.main()
