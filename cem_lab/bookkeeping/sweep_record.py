"""The record of a multirun (`cem-lab -m`): stable sweep folders, per-job outcomes and error files,
progress and a summary.

Layout of a sweep: ``runs/sweeps/cem/<sweep name>/<job name>/``. The job name comes from the
job's overrides (as for a single run); the sweep name is ``sweep_name`` when it is set, else it is
made from the sweep's own command-line overrides: the swept ones, sorted (the order on the command
line does not matter), and a hash of all of them when some are fixed (``seed=0,1,task=dn,dr-1a2b3c4d``):
running the same command again finds the same folders, skips finished jobs and resumes
interrupted ones.

How the sweep name reaches every job: Hydra composes each job's config anew, with that job's
overrides only, so a job cannot see the sweep's overrides. :class:`SweepProgress` (a Hydra
callback, see ``hydra.callbacks`` in conf/cem.yaml) computes the name in ``on_multirun_start``,
before the sweeper and launcher start: it puts it in the environment variable
``CEM_LAB_SWEEP_NAME``, which the ``cem_sweep_name`` resolver of ``hydra.sweep.dir`` reads, and
adds the resolved folder to the sweep's hydra overrides (``hydra.sweep.dir='...'``), which every
launcher applies to every job's config, in whatever process or machine the job runs.

Bookkeeping: the task function returns an outcome (``done``, ``resumed``, ``skipped``: already
finished, or ``failed``); ``on_job_end`` stores it as ``<sweep dir>/.sweep/jobs/<job num>.json``
(one file per job, so jobs in other processes or on other nodes of a shared file system never write
the same file) and prints ``job i/N ... (done d, failed f, remaining r, about T left ...)``, T from the
wall time per job that did work (skipped jobs do not count); ``on_multirun_end``
prints the summary, writes ``<sweep dir>/sweep_summary.json`` and exits with status 1 when a job
failed; a failed job also leaves ``error.txt`` in its own folder (:func:`record_error`). N is
counted from the overrides the way Hydra's basic sweeper expands them (the product of the comma
lists and ranges, with ``hydra.sweeper.params``); other sweepers report ``n_trials`` when they have
it, else N is shown as "?".
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from cem_lab.bookkeeping.clean_errors import fail, first_line
from cem_lab.bookkeeping.folder_names import SWEEP_ENV, resolve_sweep_name, sweep_name
from cem_lab.folder_lock import FolderBusyError, FolderLockError, hold_run_folder
from cem_lab.io import write_json, write_text
from cem_lab.run_format import ERROR_FILE

log = logging.getLogger("cem_lab.sweep")

STATE_DIR = ".sweep"
SUMMARY_FILE = "sweep_summary.json"


def count_jobs(config: DictConfig) -> int | None:
    """How many jobs the sweeper will launch, when that can be known in advance."""
    sweeper = config.hydra.get("sweeper") or {}
    target = str(sweeper.get("_target_", ""))
    if not target.endswith("BasicSweeper"):
        n = sweeper.get("n_trials")
        return int(n) if isinstance(n, int) else None
    try:
        params = sweeper.get("params") or {}
        args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
        parsed = OverridesParser.create().parse_overrides(args)
        return sum(len(batch) for batch in BasicSweeper.split_arguments(parsed, None))
    except Exception:  # glob() sweeps and other forms this does not expand
        return None


def _sweep_dir(config: DictConfig) -> Path:
    return Path(str(config.hydra.sweep.dir)).absolute()


def _state_dir(config: DictConfig) -> Path:
    return _sweep_dir(config) / STATE_DIR


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _records(config: DictConfig) -> dict[int, dict]:
    out = {}
    for p in (_state_dir(config) / "jobs").glob("*.json"):
        rec = _read_json(p)
        if rec is not None and "num" in rec:
            out[int(rec["num"])] = rec
    return out


def _counts(records: dict[int, dict]) -> dict[str, int]:
    c = {"done": 0, "resumed": 0, "skipped": 0, "failed": 0}
    for rec in records.values():
        status = rec.get("status", "failed")
        c[status if status in c else "failed"] += 1
    return c


def _total(config: DictConfig) -> int | None:
    state = _read_json(_state_dir(config) / "sweep.json") or {}
    return state.get("jobs")


def record_error(folder: Path, err: BaseException, user_error: bool) -> str:
    """Write ``error.txt`` atomically: first line ``Type: message``, then the whole message and, for
    unexpected errors (not bad input), the traceback. Returns the first line."""
    text = str(err).strip()
    message = f"{type(err).__name__}: {first_line(text)}" if text else type(err).__name__
    body = message + "\n"
    if "\n" in text:
        body += "\n" + text + "\n"
    if not user_error:
        body += "\n" + "".join(traceback.format_exception(type(err), err, err.__traceback__))
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / ERROR_FILE, body)
    return message


def _progress(config: DictConfig, num: int, what: str) -> str:
    state = _read_json(_state_dir(config) / "sweep.json") or {}
    n = state.get("jobs")
    records = _records(config)
    c = _counts(records)
    finished = c["done"] + c["resumed"] + c["skipped"]
    text = f"job {num + 1}/{n if n is not None else '?'} {what} (done {finished}, failed {c['failed']}"
    if n is not None:
        remaining = max(0, n - finished - c["failed"])
        text += f", remaining {remaining}"
        per_job = _pace(records)
        if remaining and per_job is not None:
            text += f", about {_duration(per_job * remaining)} left at this sweep's pace"
    return text + ")"


def _pace(records: dict[int, dict]) -> float | None:
    """Wall seconds per job: the time during which at least one job that worked (not one skipped as
    finished before) was running, over their number. Skipped jobs are left out of the time as well as the
    count: a resumed sweep spends its first minutes confirming finished jobs, and timing from the sweep's
    start made hundreds of them look like the pace of the few maps run so far (13 h for 3 h of work). Jobs
    running side by side (parallel workers) share their wall time."""
    spans = sorted(
        (float(r["started_s"]), float(r["ended_s"]))
        for r in records.values()
        if r.get("status") != "skipped"
        and isinstance(r.get("started_s"), (int, float))
        and isinstance(r.get("ended_s"), (int, float))
    )
    if not spans:
        return None
    covered, end = 0.0, float("-inf")
    for a, b in spans:
        if b > end:
            covered += b - max(a, end)
            end = b
    return covered / len(spans)


def _duration(seconds: float) -> str:
    """``42s``, ``7m05s``, ``2h03m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _is_multirun(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN


class SweepProgress(Callback):
    """Progress lines for each job of a multirun, and the sweep's summary at its end."""

    def __init__(self, exit_on_failure: bool = True) -> None:
        self.exit_on_failure = exit_on_failure
        self._t0 = time.time()
        self._lock: ExitStack | None = None
        self._job_started: float | None = None  # this worker's job in progress (its record's start)

    # --- in the process that runs `cem-lab -m` ---------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Name the sweep, lock its folder, pin the folder in the jobs' overrides and start a fresh job record."""
        explicit = OmegaConf.select(config, "sweep_name")
        name = (
            resolve_sweep_name(explicit)
            if explicit not in (None, "")
            else sweep_name(list(config.hydra.overrides.task))
        )
        os.environ[SWEEP_ENV] = name
        self._t0 = time.time()
        self._hold_sweep_folder(_sweep_dir(config))
        # every job's config is composed anew from the sweep's hydra overrides plus its own: pin the
        # resolved sweep folder there, so that jobs in other processes or on other machines find it
        # even where the environment is not passed on
        folder = str(config.hydra.sweep.dir).replace("\\", "\\\\").replace("'", "\\'")
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir='{folder}'")
        state = _state_dir(config)
        jobs = state / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        for old in jobs.glob("*.json"):  # records of an earlier run of this sweep
            old.unlink()
        n = count_jobs(config)
        write_json(
            state / "sweep.json",
            {
                "sweep_name": name,
                "jobs": n,
                "overrides": list(config.hydra.overrides.task),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
        print(
            f"cem-lab sweep: {n if n is not None else 'an unknown number of'} jobs in {_sweep_dir(config)}", flush=True
        )

    def __getstate__(self) -> dict:
        # launchers (joblib, submitit) pickle the callbacks for their workers: the lock stays here
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = None

    def _hold_sweep_folder(self, folder: Path) -> None:
        """One process runs a sweep folder (its job records, summary and multirun.yaml) at a time: a
        second run of the same sweep is refused, naming the first, before it touches anything."""
        stack = ExitStack()
        try:
            stack.enter_context(hold_run_folder(folder, what="cem-lab sweep"))
        except (FolderBusyError, FolderLockError) as err:
            fail("cem-lab", err)
        self._lock = stack

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write and print the summary, release the folder; exit 1 if a job failed or never reported."""
        summary = self.summary(config)
        write_json(_sweep_dir(config) / SUMMARY_FILE, summary)
        print(format_summary(summary), flush=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if self.exit_on_failure and (summary["failed"] or summary["missing"]):
            sys.exit(1)

    def summary(self, config: DictConfig) -> dict[str, Any]:
        """The sweep's outcome from the job records: counts, failures, jobs that never reported, wall time."""
        records = _records(config)
        n = _total(config)
        c = _counts(records)
        nums = range(n) if n is not None else sorted(records)
        jobs, failures, missing = [], [], []
        for num in nums:
            rec = records.get(num)
            if rec is None:
                missing.append(num)
                continue
            jobs.append(rec)
            if rec.get("status") not in ("done", "resumed", "skipped"):
                failures.append(
                    {
                        "num": num,
                        "folder": rec.get("folder"),
                        "overrides": rec.get("overrides"),
                        "error": rec.get("error", ""),
                    }
                )
        return {
            "sweep_name": _sweep_dir(config).name,
            "sweep_dir": str(_sweep_dir(config)),
            "jobs": n if n is not None else len(records),
            "done": c["done"] + c["resumed"],
            "resumed": c["resumed"],
            "skipped": c["skipped"],
            "failed": c["failed"],
            "missing": len(missing),
            "missing_jobs": missing,
            "failures": failures,
            "wall_s": round(time.time() - self._t0, 3),
            "job_list": jobs,
        }

    # --- in the process that runs the job (the same one, or a worker) -------------------------
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Log the job's start with the sweep's progress (multiruns only)."""
        if not _is_multirun(config):
            return
        num = int(config.hydra.job.num)
        self._job_started = time.time()
        log.info(_progress(config, num, f"started: {config.hydra.job.override_dirname or 'default'}"))

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        """Record the job's outcome (its returned dict, or the uncaught error) and log the progress (multiruns only)."""
        if not _is_multirun(config):
            return
        num = int(config.hydra.job.num)
        folder = str(config.hydra.runtime.output_dir)
        value = getattr(job_return, "_return_value", None)
        if getattr(job_return, "status", None) == JobStatus.COMPLETED and isinstance(value, dict):
            rec = dict(value)
        else:  # an exception that the task function did not catch (or another task function)
            err = value if isinstance(value, BaseException) else None
            rec = {"status": "failed", "error": f"{type(err).__name__}: {err}" if err else "unknown error"}
        rec.update(num=num, folder=folder, overrides=list(config.hydra.overrides.task))
        rec.update(started_s=self._job_started, ended_s=time.time())
        write_json(_state_dir(config) / "jobs" / f"{num}.json", rec)
        what = rec["status"] + (f": {first_line(rec.get('error', ''))}" if rec["status"] == "failed" else "")
        log.info(_progress(config, num, what))


def format_summary(s: dict[str, Any]) -> str:
    """:meth:`SweepProgress.summary` as the lines printed at the end of a sweep."""
    lines = [
        f"sweep {s['sweep_name']}: {s['jobs']} jobs in {s['sweep_dir']}",
        f"  done {s['done']} (resumed {s['resumed']}), skipped (already finished) {s['skipped']}, "
        f"failed {s['failed']}" + (f", did not report {s['missing']}" if s["missing"] else ""),
    ]
    for f in s["failures"]:
        lines.append(f"  FAILED job {f['num'] + 1}: {f['folder']}")
        lines.append(f"    {first_line(f['error'])}")
    if s["missing"]:
        lines.append(
            f"  jobs with no outcome (killed, or their launcher failed): "
            f"{', '.join(str(n + 1) for n in s['missing_jobs'])}"
        )
    lines.append(f"  summary: {Path(s['sweep_dir']) / SUMMARY_FILE}")
    return "\n".join(lines)
