"""Many ROIs from one set of forward passes: the ROI atlas (``roi=grid`` or a list of ROIs).

Every ROI is its own :class:`~cem_lab.causal.job.CEMJob` (its baseline, its estimator, its
statistics), all on the same input and run on the whole image. They advance in lockstep: at each
step the union of the items (block, sample) their current stages ask for is computed once, and
every ROI's metric is read off the same output. A draw is seeded by (seed, block, sample) alone, so
the items two ROIs share are the same intervention, and each ROI's statistics get exactly the
values, in exactly the order, of its own single-ROI run: its map equals that run's.

The saving: the coarse stage (every block x T_c) is shared by all ROIs, and a fine-stage item is
computed once for every ROI that screened its block. The cost: full-image passes (a crop would
have to cover every ROI's dependency region, which for a grid is the image).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cem_lab.causal.estimators import BlockStats, Stage
from cem_lab.causal.grid import GeometryError, Roi
from cem_lab.causal.result import CEMResult
from cem_lab.causal.run import prepare_cem
from cem_lab.causal.settings import DEFAULT_CHECKPOINT_S
from cem_lab.errors import CemLabError
from cem_lab.io import write_json, write_npz
from cem_lab.run_format import CEM_FILE, STATE_FILE
from cem_lab.tasks import make_task

log = logging.getLogger("cem_lab")

ATLAS_STATE = "atlas_state.npz"
ATLAS_FORMAT = 1


class AtlasError(CemLabError, ValueError):
    """ROIs the atlas cannot use."""


def roi_grid(out_h: int, out_w: int, size: int, stride: int | None = None) -> list[Roi]:
    """Square ROIs of ``size`` output pixels tiling the image with ``stride`` (default: ``size``),
    centred: the margin left over is split between both sides."""
    stride = int(stride or size)
    if size < 1 or stride < 1:
        raise AtlasError(f"roi grid: size and stride must be >= 1, got {size}, {stride}")
    if size > out_h or size > out_w:
        raise AtlasError(f"roi grid: ROIs of {size} px do not fit the {out_h}x{out_w} output")
    ny, nx = (out_h - size) // stride + 1, (out_w - size) // stride + 1
    oy = (out_h - (size + (ny - 1) * stride)) // 2
    ox = (out_w - (size + (nx - 1) * stride)) // 2
    return [Roi(oy + i * stride, ox + j * stride, size) for i in range(ny) for j in range(nx)]


def check_rois(rois: Sequence[Any], out_h: int, out_w: int, scale: int) -> tuple[list[Roi], list[str]]:
    """Parse and check a ROI list before any compute: at least two, each inside the output,
    no two the same. Overlapping ROIs are kept (each has its own map) with a note: their
    statistics over ROIs are not independent."""
    notes: list[str] = []
    parsed = []
    for i, r in enumerate(rois):
        try:
            roi = Roi.parse(r)
            roi.validate(out_h, out_w, scale)
        except GeometryError as e:
            raise AtlasError(f"ROI {i} of the atlas ({r!r}): {e}") from None
        parsed.append(roi)
    if len(parsed) < 2:
        raise AtlasError(f"an atlas needs at least two ROIs, got {len(parsed)}; for one ROI use roi=[top,left,size]")
    seen: dict[tuple, int] = {}
    for i, r in enumerate(parsed):
        key = tuple(r.as_list())
        if key in seen:
            raise AtlasError(f"ROIs {seen[key]} and {i} of the atlas are the same ({list(key)}); give each ROI once")
        seen[key] = i
    overlaps = 0
    for i in range(len(parsed)):
        a = parsed[i].box
        for j in range(i + 1, len(parsed)):
            b = parsed[j].box
            if a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]:
                overlaps += 1
    if overlaps:
        notes.append(
            f"{overlaps} pairs of ROIs overlap: their maps are each exact, but statistics over "
            "ROIs count shared pixels more than once"
        )
    return parsed, notes


@dataclass
class AtlasResult:
    """The CE maps of several ROIs of one image on one block grid, with the atlas's settings and notes."""

    results: list[CEMResult]
    meta: dict[str, Any]

    @property
    def rois(self) -> list[Roi]:
        """The ROIs, in result order."""
        return [r.roi for r in self.results]

    def effect_tensor(self) -> np.ndarray:
        """(ROIs, rows, cols) thresholded CE."""
        return np.stack([r.effect for r in self.results])

    def table(self) -> list[dict[str, Any]]:
        """One row per ROI: baseline, block counts and shares per class, reach of the effects (output pixels)."""
        rows = []
        for k, r in enumerate(self.results):
            c = r.block_counts()
            s = r.summary()
            total = max(1, c["positive"] + c["negative"] + c["zero"])
            rows.append(
                {
                    "roi_index": k,
                    "roi": r.roi.as_list(),
                    "baseline": r.baseline_metric,
                    "positive": c["positive"],
                    "negative": c["negative"],
                    "zero": c["zero"],
                    "share_negative": c["negative"] / total,
                    "share_positive": c["positive"] / total,
                    "reach_max_px": s["reach_px"]["max"],
                    "reach_mean_px": s["reach_px"]["mean"],
                }
            )
        return rows

    def summary(self) -> dict[str, Any]:
        """The per-ROI rows and the distribution over ROIs of the negative share and the reach, plus ``meta``."""
        rows = self.table()

        def dist(key):
            v = np.array([r[key] for r in rows], dtype=float)
            return {
                "mean": float(v.mean()),
                "median": float(np.median(v)),
                "min": float(v.min()),
                "max": float(v.max()),
                "q25": float(np.quantile(v, 0.25)),
                "q75": float(np.quantile(v, 0.75)),
            }

        return {
            "format_version": ATLAS_FORMAT,
            "rois": rows,
            "n_rois": len(rows),
            "share_negative": dist("share_negative"),
            "reach_mean_px": dist("reach_mean_px"),
            "reach_max_px": dist("reach_max_px"),
            **self.meta,
        }

    @staticmethod
    def roi_folder(folder: str | Path, k: int) -> Path:
        """The run folder of ROI ``k`` inside the atlas folder ``folder``."""
        return Path(folder) / "rois" / f"roi_{k:03d}"

    def save(self, folder: str | Path, figures: dict[str, str] | None = None) -> Path:
        """``rois/roi_NNN/`` (a run folder per ROI, readable by cem-report), ``atlas.npz`` (the block x
        ROI tensors) and ``atlas.json`` (per-ROI rows and their distribution; ``figures``: the paths of
        the figures drawn, see :func:`cem_lab.api.save_atlas`)."""
        folder = Path(folder)
        for k, r in enumerate(self.results):
            r.save(self.roi_folder(folder, k))
        write_npz(
            folder / "atlas.npz",
            effect=self.effect_tensor(),
            effect_raw=np.stack([r.effect_raw for r in self.results]),
            stderr=np.stack([r.stderr for r in self.results]),
            classification=np.stack([r.classification for r in self.results]),
            counts=np.stack([r.counts for r in self.results]),
            roi_mask=np.stack([r.roi_mask for r in self.results]),
            rois=np.array([r.roi.as_list() for r in self.results]),
            format_version=ATLAS_FORMAT,
        )
        summary = self.summary()
        if figures is not None:
            summary["figures"] = dict(figures)
        write_json(folder / "atlas.json", summary)
        return folder


class AtlasJob:
    """K prepared single-ROI jobs on one input, run in lockstep on shared forward passes."""

    def __init__(self, jobs: list, notes: Sequence[str] = ()):
        if len(jobs) < 2:
            raise AtlasError("an atlas needs at least two ROIs")
        first = jobs[0]
        for j in jobs:
            if j.mode != "full":
                raise AtlasError("the atlas runs every ROI on the whole image (mode=full)")
            if j.block != first.block or j.grid.input_h != first.grid.input_h or j.grid.input_w != first.grid.input_w:
                raise AtlasError("the atlas's ROIs must share the image and the block grid")
        self.jobs = jobs
        self.notes = list(notes)
        self.forward_passes = 0

    def fingerprint(self) -> str:
        """SHA-256 hex over the ROI jobs' fingerprints, in order."""
        h = hashlib.sha256()
        for j in self.jobs:
            h.update(j.fingerprint().encode())
        return h.hexdigest()

    def check_folder(self, folder: str | Path) -> None:
        """Refuse a folder that holds another run: a single-ROI map, or an atlas of other settings."""
        folder = Path(folder)
        if (folder / STATE_FILE).is_file() or (folder / CEM_FILE).is_file():
            raise AtlasError(f"{folder} holds a single-ROI map; write the atlas to a new folder")
        path = folder / ATLAS_STATE
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    fp = str(z["fingerprint"])
            except (OSError, ValueError, KeyError) as e:
                raise AtlasError(f"{path} cannot be read ({e}); delete it or use a new output folder") from None
            if fp != self.fingerprint():
                raise AtlasError(f"{path} holds an atlas of other settings; use a new output folder")

    def _plans(self, stages: list[Stage | None]):
        """Each job's items of its current stage (plan order) and the union of all (sorted)."""
        items = []
        for st in stages:
            if st is None:
                items.append(None)
                continue
            b, s = st.item(np.arange(st.n_items))
            items.append((b, s))
        pairs = [np.stack(p, 1) for p in items if p is not None]
        union = np.unique(np.concatenate(pairs), axis=0) if pairs else np.zeros((0, 2), dtype=int)
        return items, union

    def _most_items_after(self, stages: list[Stage | None]) -> int | None:
        """At most how many full-image passes the steps after this one can ask for (None: an estimator does not
        say): per block, the largest of the ROIs' bounds, as every ROI draws a block's samples from the same
        sample indices."""
        n = len(self.jobs[0].grid)
        per_block = np.zeros(n, dtype=np.int64)
        for job, stage in zip(self.jobs, stages):
            if stage is None:
                continue
            for b in np.flatnonzero(job.selected).tolist():
                bound = job.estimator.most_items_after(stage, np.array([b]), n)
                if bound is None:
                    return None
                per_block[b] = max(per_block[b], bound)
        return int(per_block.sum())

    def _metrics(self, blocks: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """(items, ROIs) metric values of full-image interventions."""
        j0 = self.jobs[0]
        x = j0._build(blocks, samples, j0.crop, j0.base_crop, j0.ctx_crop)
        out = j0._forward(x)
        self.forward_passes += len(blocks)
        vals = [j.metric(j._roi(out, (0, 0)), j.ref).detach().cpu().numpy().astype(np.float64) for j in self.jobs]
        return np.stack(vals, 1)

    def run(
        self,
        folder: str | Path | None = None,
        progress: bool = True,
        checkpoint_every: float | None = DEFAULT_CHECKPOINT_S,
    ) -> AtlasResult:
        """Run every ROI's plan in lockstep; with ``folder``, checkpoint there and resume what it holds."""
        t0 = time.perf_counter()
        fp = self.fingerprint()
        k = len(self.jobs)
        n = len(self.jobs[0].grid)
        stats: list[dict[str, BlockStats]] = [{} for _ in range(k)]
        done: list[list[Stage]] = [[] for _ in range(k)]
        stages: list[Stage | None] = [j.estimator.first_stage(n) for j in self.jobs]
        step, partial, done_units = 0, None, 0
        # the cost of the work of earlier processes on this atlas (from its checkpoint)
        carried = {"forward_passes": 0.0, "run_s": 0.0, "sessions": 0.0}
        path = Path(folder) / ATLAS_STATE if folder is not None else None
        if path is not None and path.is_file():
            step, stats, partial, done_units, cost = self._load(path, fp)
            for _ in range(step):  # replay the plan: every decision is a function of the saved statistics
                for i, j in enumerate(self.jobs):
                    if stages[i] is not None:
                        done[i].append(stages[i])
                        stages[i] = j.estimator.next_stage(done[i], stats[i], j.baseline)
            self.notes.append(f"resumed from a checkpoint (step {step}, {done_units} items of it done)")
            if cost is None:
                self.notes.append("the checkpoint predates cost records: the forward passes count this process's only")
            else:
                carried.update(cost)
        counted = any(s is not None for s in stages)  # a finished atlas read back adds no work to its cost

        def run_cost() -> dict[str, float]:
            if not counted:
                return dict(carried)
            return {
                "forward_passes": carried["forward_passes"] + self.forward_passes,
                "run_s": carried["run_s"] + time.perf_counter() - t0,
                "sessions": carried["sessions"] + 1,
            }

        def save(values):
            if path is None:
                return
            arrays: dict[str, Any] = {
                "fingerprint": fp,
                "format_version": ATLAS_FORMAT,
                "step": step,
                "done_units": done_units,
                "partial": values[:done_units],
                **{f"cost/{key}": value for key, value in run_cost().items()},
            }
            for i in range(k):
                for name, s in stats[i].items():
                    arrays.update(s.state(f"{i}/{name}/"))
                arrays[f"{i}/names"] = np.array(list(stats[i]) or [""])
            write_npz(path, **arrays)

        batch = self.jobs[0].batch_size
        while any(s is not None for s in stages):
            items, union = self._plans(stages)
            values = np.full((len(union), k), np.nan)
            if partial is not None and done_units:
                values[:done_units] = partial
            partial = None
            names = sorted({s.name for s in stages if s is not None})
            bar = tqdm(
                total=len(union),
                initial=done_units,
                desc=f"atlas step {step + 1} ({', '.join(names)})",
                unit="fwd",
                disable=not progress,
                dynamic_ncols=True,
            )
            later = self._most_items_after(stages)
            log.info(
                "atlas step %d: %d full-image passes%s",
                step + 1,
                len(union) - done_units,
                "" if later is None else f", then at most {later} in later steps" if later else " (the last step)",
            )
            last = t_step = time.perf_counter()
            step_start = done_units
            try:
                while done_units < len(union):
                    end = min(done_units + batch, len(union))
                    values[done_units:end] = self._metrics(union[done_units:end, 0], union[done_units:end, 1])
                    rate = (end - step_start) / max(time.perf_counter() - t_step, 1e-9)
                    if later:  # the bar's ETA is this step's; the whole atlas's, at most, beside it
                        bar.set_postfix_str(f"run <= {tqdm.format_interval((len(union) - end + later) / rate)} left")
                    bar.update(end - done_units)
                    done_units = end
                    if checkpoint_every is not None and time.perf_counter() - last >= checkpoint_every:
                        save(values)
                        last = time.perf_counter()
            except BaseException:
                save(values)
                raise
            finally:
                bar.close()
            # every ROI's statistics, in its own plan order
            index = {(int(b), int(s)): u for u, (b, s) in enumerate(union.tolist())}
            for i, j in enumerate(self.jobs):
                if stages[i] is None:
                    continue
                b, s = items[i]
                u = np.array([index[(int(bb), int(ss))] for bb, ss in zip(b.tolist(), s.tolist())], dtype=int)
                st = stats[i].setdefault(stages[i].name, BlockStats(n))
                st.update(b, values[u, i], j.baseline)
                done[i].append(stages[i])
                stages[i] = j.estimator.next_stage(done[i], stats[i], j.baseline)
            step, done_units = step + 1, 0
            save(values)
        cost = run_cost()
        passes = int(cost["forward_passes"])
        results = []
        for i, j in enumerate(self.jobs):
            j.notes.extend(self.notes)
            j.forward_passes = passes  # shared: every ROI's run took these passes
            results.append(j._result(stats[i], j.fingerprint()))
        single = sum(int(sum(st.n_items for st in d)) for d in done)
        meta = {
            "fingerprint": fp,
            "forward_passes": passes,  # over every process that worked on the atlas
            "forward_passes_separately": single,
            "saving": single / max(1, passes),
            "steps": step,
            "notes": self.notes,
            "run_s": cost["run_s"],
            "sessions": int(cost["sessions"]),
            "this_session": {"forward_passes": self.forward_passes, "run_s": time.perf_counter() - t0},
            "model": self.jobs[0].model_name,
            "estimator": self.jobs[0].estimator.describe(),
        }
        return AtlasResult(results, meta)

    def _load(self, path: Path, fp: str):
        with np.load(path, allow_pickle=False) as z:
            state = {key: z[key] for key in z.files}
        if str(state["fingerprint"]) != fp:
            raise AtlasError(f"{path} holds an atlas of other settings; use a new output folder")
        stats = []
        for i in range(len(self.jobs)):
            names = [str(s) for s in state.get(f"{i}/names", np.array([""])) if str(s)]
            stats.append({nm: BlockStats.from_state(state, f"{i}/{nm}/") for nm in names})
        cost = (
            {key: float(state[f"cost/{key}"]) for key in ("forward_passes", "run_s", "sessions")}
            if "cost/sessions" in state
            else None
        )
        return int(state["step"]), stats, state["partial"], int(state["done_units"]), cost


def prepare_atlas(
    model, image, task, rois: str | Sequence[Any], *, roi_size: int = 32, roi_stride: int | None = None, **kwargs
) -> AtlasJob:
    """Prepare the atlas of ``rois`` (a list of (top, left, size), or "grid": ROIs of ``roi_size``
    tiling the output with ``roi_stride``); keywords as :func:`~cem_lab.causal.run.prepare_cem`.
    ``blocks`` restrictions and the adaptive estimator's ROI treatment apply per ROI."""
    if kwargs.pop("mode", "full") not in ("full", "auto"):
        raise AtlasError("the atlas runs on the whole image (mode=full)")
    if kwargs.get("recompute", "roi_crop") != "roi_crop":
        raise AtlasError("the atlas runs on the whole image: recompute must be roi_crop")
    if kwargs.get("blocks") is not None:
        raise AtlasError("the atlas computes every block (blocks= restricts single-ROI runs only)")
    scale = (make_task(task) if isinstance(task, str) else task).scale
    shape = getattr(image, "shape", None)
    first = None
    if shape is not None and len(shape) >= 2:  # the output size without a forward pass
        out_h, out_w = shape[0] // scale * scale, shape[1] // scale * scale
    else:  # a file, or a degraded input: a job of a tiny ROI tells the output size
        first = prepare_cem(model, image, task, (0, 0, scale), mode="full", **kwargs)
        out_h, out_w = first.out_shape
    if isinstance(rois, str):
        if rois != "grid":
            raise AtlasError(f"rois must be 'grid' or a list of [top, left, size], got {rois!r}")
        rois = roi_grid(out_h, out_w, roi_size, roi_stride)
    parsed, notes = check_rois(rois, out_h, out_w, scale)
    jobs = [] if first is not None else [prepare_cem(model, image, task, parsed[0].as_list(), mode="full", **kwargs)]
    shared = (first if first is not None else jobs[0]).restored  # the un-intervened pass: run once for all ROIs
    jobs += [
        prepare_cem(model, image, task, r.as_list(), mode="full", full_output=shared, **kwargs)
        for r in parsed[len(jobs) :]
    ]
    return AtlasJob(jobs, notes)
