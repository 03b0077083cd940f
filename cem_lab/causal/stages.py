"""Running a prepared job's plan, stage by stage, checkpointed and resumable.

The unit of work is a contiguous range of plan items of one stage; an item is a (block, sample)
pair whose draw is seeded from (seed, block, sample). Only ROI metrics leave the device.
Statistics are updated per block in sample order, so the map does not depend on the batch size,
and the state is checkpointed atomically so that an interrupted run resumes and ends with the
same result as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from cem_lab.causal.estimators import BlockStats, Stage
from cem_lab.causal.executors import BatchInfo, LocalExecutor, UnitExecutor
from cem_lab.causal.resume import COST_KEYS, carried_cost, load_state, restore, save_state
from cem_lab.causal.settings import DEFAULT_CHECKPOINT_S, check_checkpoint_cadence
from cem_lab.run_format import state_path

if TYPE_CHECKING:
    from cem_lab.causal.job import CEMJob
    from cem_lab.causal.result import CEMResult

log = logging.getLogger("cem_lab")


def run_stages(
    job: CEMJob,
    folder: str | Path | None = None,
    progress: bool = True,
    on_batch: Callable[[BatchInfo], None] | None = None,
    checkpoint_every: float | None = DEFAULT_CHECKPOINT_S,
    checkpoint_every_items: int | None = None,
    executor: UnitExecutor | None = None,
) -> CEMResult:
    """Run all stages of ``job``; with ``folder``, checkpoint there and resume what it holds
    (see :meth:`CEMJob.run <cem_lab.causal.job.CEMJob.run>`)."""
    check_checkpoint_cadence(checkpoint_every, checkpoint_every_items)
    executor = executor or LocalExecutor()
    main = executor.is_main
    t0 = time.perf_counter()
    fp = job.fingerprint()
    n = len(job.grid)
    stats: dict[str, BlockStats] = {}
    done_stages: list[Stage] = []
    stage = job.estimator.first_stage(n)
    done_items = 0
    filled = False
    path = state_path(folder) if folder is not None else None
    # the cost of the work before this process (from the checkpoint), and whether this process adds to it
    carried: dict[str, float] = {**dict.fromkeys(COST_KEYS, 0.0), "sessions": 0.0}
    counted, recorded = True, True
    if path is not None and path.is_file():
        state = load_state(path, fp, job.fingerprint_also())
        stage, done_stages, stats, done_items, filled = restore(state, job.estimator, n, job.baseline)
        last = str(state["stage_names"][-1])
        record = carried_cost(state)
        if record is None:
            recorded = False
            job.notes.append(
                "the checkpoint was written before cem_lab recorded the cost of a run: the forward passes and "
                "times count the work since then only"
            )
        else:
            carried.update(record)
        if stage is None:  # finished: the map is read back, nothing of it recomputed
            counted = False
            log.info("%s holds the finished map: reading it back (no intervention recomputed)", path.parent)
            job.notes.append("read back from its finished checkpoint (no intervention recomputed)")
        else:
            log.info("resuming %s: stage %s, %d items done", path.parent, last or "-", done_items)
            job.notes.append(f"resumed from a checkpoint (stage {last or 'done'}, {done_items} items done)")
    last_save, items_since_save = time.perf_counter(), 0
    job.checkpoints, job.timings["checkpoint_s"] = 0, 0.0
    rate: float | None = None  # forward passes per second of the last stage, for the next one's estimate

    def this_session() -> dict[str, float]:
        return {
            "forward_passes": job.forward_passes,
            "pixels_pushed": job.pixels_pushed,
            "checkpoints": job.checkpoints,
            "prepare_s": job.timings.get("prepare_s", 0.0),
            "run_s": time.perf_counter() - t0,
            "checkpoint_s": job.timings["checkpoint_s"],
        }

    def run_cost() -> dict[str, float]:
        """The run's cost over every process that worked on it (this one included when it computed)."""
        if not counted:
            return dict(carried)
        mine = this_session()
        return {**{k: carried[k] + mine[k] for k in COST_KEYS}, "sessions": carried["sessions"] + 1}

    def save():
        if path is None or not main:
            return
        t_save = time.perf_counter()
        job.checkpoints += 1
        # with several processes the saved passes are rank 0's (a collective here would stall the others);
        # the summary at the end sums every process's
        save_state(path, fp, done_stages, stage, done_items, filled, stats, cost=run_cost())
        job.timings["checkpoint_s"] += time.perf_counter() - t_save

    computed = np.flatnonzero(job.selected & job.active)  # the blocks that cost work: the run's overall ETA
    in_update = False
    try:
        while stage is not None:
            if stage.name not in stats:
                stats[stage.name] = BlockStats(n)
            st = stats[stage.name]
            mine = stage.blocks[job.selected[stage.blocks]]
            act = mine[job.active[mine]]
            if not filled:
                skipped = mine[~job.active[mine]]
                # outside the dependency region the ROI output is unchanged: M = M0 exactly
                in_update = True
                st.update(
                    np.repeat(skipped, stage.samples), np.full(len(skipped) * stage.samples, job.baseline), job.baseline
                )
                filled = True
                in_update = False
                save()
            sub = Stage(stage.name, act, stage.samples, stage.first_sample)
            total = sub.n_items
            later = job.estimator.most_items_after(stage, computed, n)
            if main and total > done_items:
                guess = getattr(job, "item_s_estimate", None)
                first = rate is None and bool(guess)  # no stage ran yet: the preparation's passes give the rate
                _log_stage_plan(stage.name, total - done_items, rate or (1 / guess if guess else None), later, first)
            t_stage, passes_before, items_before = time.perf_counter(), job.forward_passes, done_items
            bar = tqdm(
                total=total,
                initial=done_items,
                desc=f"CEM {stage.name}",
                unit="fwd",
                disable=not (progress and main),
                dynamic_ncols=True,
                leave=True,
            )
            try:
                while done_items < total:
                    units, end = [], done_items
                    while end < total and len(units) < executor.units_per_round:
                        k = np.arange(end, min(end + job.batch_size, total))
                        units.append(sub.item(k))
                        end = int(k[-1]) + 1
                    job.stage_draws = stage.samples  # a recompute strategy may take its path by it
                    try:
                        values = executor.map(job, units)
                    finally:
                        job.stage_draws = None
                    in_update = True
                    for (blocks, _), v in zip(units, values):
                        st.update(blocks, v, job.baseline)
                    if later:  # the bar's own ETA is the stage's; the run's is this stage's rest and later ones
                        bar.set_postfix_str(
                            _run_eta(total - end + later, (end - items_before) / (time.perf_counter() - t_stage)),
                            refresh=False,
                        )
                    bar.update(end - done_items)
                    items_since_save += end - done_items
                    done_items = end
                    in_update = False
                    if (checkpoint_every is not None and time.perf_counter() - last_save >= checkpoint_every) or (
                        checkpoint_every_items is not None and items_since_save >= checkpoint_every_items
                    ):
                        save()
                        last_save, items_since_save = time.perf_counter(), 0
                    if on_batch is not None:
                        on_batch(BatchInfo(stage.name, done_items, total, job.forward_passes))
            finally:
                bar.close()
            if job.forward_passes > passes_before:  # this stage's pass rate: the next stage's estimate
                rate = (job.forward_passes - passes_before) / max(time.perf_counter() - t_stage, 1e-9)
            done_stages.append(stage)
            stage = job.estimator.next_stage(done_stages, stats, job.baseline)
            done_items, filled = 0, False
            save()
            last_save, items_since_save = time.perf_counter(), 0
    except BaseException:
        if not in_update:
            save()
        raise
    # with several processes, this session's passes are all of theirs (each prepared, each did a share)
    counts = executor.summed({"forward_passes": job.forward_passes, "pixels_pushed": job.pixels_pushed})
    job.forward_passes, job.pixels_pushed = counts["forward_passes"], counts["pixels_pushed"]
    job.timings["run_s"] = time.perf_counter() - t0
    job.cost = {"total": run_cost(), "this_session": this_session(), "recorded": recorded}
    return job._result(stats, fp)


def _seconds(s: float) -> str:
    """``42 s``, ``7.5 min``, ``20.3 h``: a duration a reader takes in at once."""
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _run_eta(items_left: int, rate: float) -> str:
    """The bar's note of the whole run's time left, at most (later stages at their largest), at ``rate`` items/s."""
    return f"run <= {tqdm.format_interval(items_left / rate)} left" if rate > 0 else ""


def _log_stage_plan(name: str, items: int, rate: float | None, later: int | None, first: bool = False) -> None:
    """One line as a stage starts: its passes; from the last stage's rate (``first``: the preparation's passes),
    how long it should take; and what the stages after it can add at most (the bar then shows the whole run's
    time left at most)."""
    source = " (the preparation's rate)" if first else ""
    timing = f", about {_seconds(items / rate)} at {rate:.3g} passes/s{source}" if rate else ""
    if later is None:
        after = ""
    elif later == 0:
        after = " (the last stage)"
    else:
        after = f", then at most {later} in later stages (the bar shows the run's time left at most)"
    log.info("stage %s: %d passes%s%s", name, items, timing, after)
