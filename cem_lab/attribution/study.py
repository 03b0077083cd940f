"""The `cem-attribution` study itself, apart from its command line (:mod:`cem_lab.cli.attribution`).

On plain values and on the CEM job that :func:`cem_lab.compose.prepare.prepare` built (no Hydra, nothing
from :mod:`cem_lab.cli`), in three parts:

- :mod:`cem_lab.attribution.study_methods`: the settings (:class:`~cem_lab.attribution.study_methods.Settings`)
  and the inputs: a finished `cem-lab` run's CEM, the gradient maps, the block-replacement metrics,
  gathered here in an :class:`AttributionPlan`;
- this module, the numbers: :func:`compute_attribution` computes or reads the CEM, runs the deletion
  and insertion curves (recorded once by :class:`_Recorder`, evaluated together, answered by
  :class:`_Table`), the rank correlations, the CEM's sign test and the marked shares
  (:func:`marked_shares`), and returns an :class:`AttributionOutcome`;
- :mod:`cem_lab.attribution.study_output`: the run folder's format, ``attribution.npz``,
  ``attribution.json`` and the figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cem_lab.attribution.base import AttributionError
from cem_lab.attribution.diffusion import diffusion_index
from cem_lab.attribution.faithfulness import deletion_curve, insertion_curve, rank_correlation, sign_test
from cem_lab.attribution.study_methods import Settings
from cem_lab.attribution.study_output import CEM_DIR, FORMAT_VERSION, PROGRAM, save_figures, write_results
from cem_lab.causal.run import run_cem
from cem_lab.viz.style import FigureStyle  # plain settings (no matplotlib)

SHARE_LEVELS = (0.5, 0.9)


class _Recorder:
    """A ``metric_after`` that only notes the block sets asked for (the first pass of a curve)."""

    def __init__(self):
        self.sets: dict[bytes, np.ndarray] = {}

    def __call__(self, blocks) -> float:
        b = np.unique(np.asarray(blocks, dtype=np.int64).ravel())
        self.sets.setdefault(b.tobytes(), b)
        return 0.0


class _Table:
    """A ``metric_after`` that answers from the values evaluated for the recorded sets."""

    def __init__(self, values: dict[bytes, float]):
        self.values = values

    def __call__(self, blocks) -> float:
        return self.values[np.unique(np.asarray(blocks, dtype=np.int64).ravel()).tobytes()]


@dataclass
class AttributionPlan:
    """A run whose every input has been built and checked, with nothing written yet."""

    figures: FigureStyle  #: the config's ``figures`` (``figures.draw``: whether any are drawn)
    progress: bool  #: the config's ``progress``
    config: dict  #: the config's identity (written as ``config`` in attribution.json)
    settings: Settings
    prepared: Any  #: cem_lab.compose.prepare.PreparedRun
    maps: dict[str, Any]  #: the gradient AttributionMaps
    metrics: dict[str, Any]  #: BlockReplacementMetric per intervention
    cem: Any = None  #: a CEMResult read from attribution.cem_run
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def job(self):
        """The prepared run's :class:`~cem_lab.causal.job.CEMJob`."""
        return self.prepared.job


# --- the numbers ------------------------------------------------------------------------------------------
def cem_pixel_map(effect: np.ndarray, block_in: int, input_shape: tuple[int, int]) -> np.ndarray:
    """A block map on the input pixels: every block's value over its pixels."""
    up = np.repeat(np.repeat(np.asarray(effect, dtype=np.float64), block_in, axis=0), block_in, axis=1)
    return np.ascontiguousarray(up[: input_shape[0], : input_shape[1]])


def cem_ranking(cem, roi_mask: np.ndarray) -> np.ndarray:
    """The CEM's blocks outside the ROI, most helpful first: by effect, ties (the blocks of no
    effect) by the unthresholded estimate, then by block order."""
    eff, raw = cem.effect.ravel(), cem.effect_raw.ravel()
    idx = np.flatnonzero(np.isfinite(eff) & ~np.asarray(roi_mask, dtype=bool).ravel())
    order = np.lexsort((np.arange(idx.size), -np.nan_to_num(raw[idx]), -eff[idx]))
    return idx[order].astype(np.int64)


def marked_shares(block_abs: np.ndarray, roi_mask: np.ndarray, levels=SHARE_LEVELS) -> dict[str, float | None]:
    """The share of the blocks outside the ROI that hold ``level`` of the map's mass (the fewest,
    largest first); None for a map without mass there."""
    v = np.abs(np.asarray(block_abs, dtype=np.float64)).ravel()[~np.asarray(roi_mask, dtype=bool).ravel()]
    v = v[np.isfinite(v)]
    total = float(v.sum())
    out: dict[str, float | None] = {}
    for q in levels:
        key = f"{round(100 * q)}"
        if v.size == 0 or not total > 0:
            out[key] = None
            continue
        c = np.cumsum(np.sort(v)[::-1])
        k = int(np.searchsorted(c, q * total * (1 - 1e-12), side="left")) + 1
        out[key] = min(k, v.size) / v.size
    return out


def diffusion_indices(abs_maps: dict[str, np.ndarray], maps: dict[str, Any], roi_mask: np.ndarray) -> dict:
    """LAM's diffusion index per method (:mod:`cem_lab.attribution.diffusion`): ``blocks``, of the absolute
    block map outside the ROI (every method, the same grid); ``pixels``, of ``|pixel_map|`` over the whole
    input as LAM computes it (the gradient methods; None for the CEM, whose map has no pixels below its blocks)."""
    outside = ~np.asarray(roi_mask, dtype=bool)
    return {
        m: {
            "blocks": diffusion_index(np.asarray(a, dtype=np.float64)[outside]),
            "pixels": diffusion_index(maps[m].pixel_map) if m in maps else None,
        }
        for m, a in abs_maps.items()
    }


@dataclass
class AttributionOutcome:
    """What a run wrote: the json summary, the arrays, the CEM and where the figures are."""

    folder: Path
    summary: dict
    arrays: dict
    cem: Any
    figures: dict[str, str]


def compute_attribution(plan: AttributionPlan, folder: Path) -> AttributionOutcome:
    """The CEM (computed into ``folder/cem`` or read), the faithfulness checks, the files."""
    s, job = plan.settings, plan.job
    timings = dict(plan.timings)
    roi_mask = np.asarray(job.roi_mask, dtype=bool)
    cem, cem_source = plan.cem, None
    if "cem" in s.methods:
        t0 = time.perf_counter()
        if cem is None:
            kw = plan.prepared.kwargs
            from cem_lab.viz.result_figures import draw_run_figures  # lazy: matplotlib, when the CEM is computed

            cem = run_cem(
                job,
                folder / CEM_DIR,
                on_saved=partial(draw_run_figures, style=plan.figures) if plan.figures.draw else None,
                progress=bool(plan.progress),
                checkpoint_every=kw["checkpoint_every"],
                checkpoint_every_items=kw["checkpoint_every_items"],
            )
            cem_source = {"source": "computed", "folder": str(folder / CEM_DIR)}
        else:
            cem_source = {"source": "cem_run", "folder": str(Path(s.cem_run).expanduser().resolve())}
        cem_source["fingerprint"] = cem.meta.get("fingerprint")
        timings["cem_s"] = time.perf_counter() - t0

    # every map on the block grid: (abs, signed, pixel); the CEM's abs is |effect|
    block_in = job.grid.block_in
    input_shape = (job.grid.input_h, job.grid.input_w)
    arrays: dict[str, Any] = {}
    abs_maps: dict[str, np.ndarray] = {}
    rankings: dict[str, np.ndarray] = {}
    for m in s.methods:
        if m == "cem":
            signed = np.asarray(cem.effect, dtype=np.float64)
            absolute, pixel = np.abs(signed), cem_pixel_map(signed, block_in, input_shape)
            rankings[m] = cem_ranking(cem, roi_mask)
            arrays[f"{m}/effect_raw"] = np.asarray(cem.effect_raw, dtype=np.float64)
            arrays[f"{m}/classification"] = np.asarray(cem.classification)
        else:
            a = plan.maps[m]
            signed, absolute, pixel = a.block_signed, a.block_abs, a.pixel_map
            rankings[m] = a.ranking()
        abs_maps[m] = absolute
        arrays.update(
            {
                f"{m}/block_abs": absolute,
                f"{m}/block_signed": signed,
                f"{m}/pixel_map": pixel,
                f"{m}/ranking": rankings[m],
            }
        )

    # faithfulness: deletion / insertion per intervention and method, the CEM's sign test. The
    # library's curves and test run twice: once to note the block sets they replace, then on the
    # values of those sets, evaluated together (many inputs per model call)
    def checks(metric_after, base: float):
        curves = {
            m: (
                deletion_curve(rankings[m], metric_after, steps=s.steps),
                insertion_curve(rankings[m], metric_after, steps=s.steps),
            )
            for m in s.methods
        }
        st = (
            sign_test(cem.effect, metric_after, exclude=roi_mask, base=base, tol=s.sign_tol)
            if cem is not None
            else None
        )
        return curves, st

    recorded = {}
    for name in s.interventions:
        rec = _Recorder()
        checks(rec, 0.0)
        recorded[name] = rec.sets
    faith: dict[str, Any] = {}
    signs: dict[str, Any] = {}
    curves_fig: dict[str, dict] = {}
    t0 = time.perf_counter()
    bar = tqdm(
        total=sum(len(v) for v in recorded.values()),
        desc="faithfulness",
        unit="set",
        disable=not plan.progress,
        dynamic_ncols=True,
    )
    try:
        for name in s.interventions:
            metric = plan.metrics[name]
            keys = list(recorded[name])
            values = metric.many([recorded[name][k] for k in keys], on_done=bar.update)
            curves, st = checks(_Table(dict(zip(keys, values.tolist()))), metric.baseline)
            entry = {
                "samples": metric.samples,
                "baseline_metric": metric.baseline,
                "intervention": metric.intervention.describe(),
                "block_sets": len(keys),
                "methods": {},
            }
            curves_fig[name] = {}
            for m, (d, i) in curves.items():
                entry["methods"][m] = {
                    "deletion_auc": d.auc,
                    "insertion_auc": i.auc,
                    "deletion_end": float(d.values[-1]),
                    "insertion_start": float(i.values[0]),
                }
                curves_fig[name][m] = {}
                for c in (d, i):
                    prefix = f"curves/{name}/{m}/{c.kind}/"
                    arrays.update(
                        {prefix + "counts": c.counts, prefix + "fractions": c.fractions, prefix + "values": c.values}
                    )
                    curves_fig[name][m][c.kind] = {"fractions": c.fractions, "values": c.values, "auc": c.auc}
            faith[name] = entry
            if st is not None:
                signs[name] = {
                    "negative_blocks": st.n,
                    "raised": st.k,
                    "share_raised": st.share,
                    "pvalue": st.pvalue,
                    "base": st.base,
                    "tol": s.sign_tol,
                    "mean_delta": float(st.deltas.mean()) if st.n else None,
                }
                arrays[f"sign_test/{name}/blocks"] = st.blocks.astype(np.int64)
                arrays[f"sign_test/{name}/deltas"] = st.deltas.astype(np.float64)
    finally:
        bar.close()
    timings["faithfulness_s"] = time.perf_counter() - t0

    # rank correlations of every pair (absolute maps; the CEM's effect), outside the ROI
    corr: dict[str, Any] = {}
    for k, a in enumerate(s.methods):
        for b in s.methods[k + 1 :]:
            try:
                rc = rank_correlation(abs_maps[a], abs_maps[b], exclude=roi_mask, absolute=True, support=True)
                corr[f"{a}~{b}"] = {"rho": rc.rho, "pvalue": rc.pvalue, "n": rc.n}
            except AttributionError:
                corr[f"{a}~{b}"] = {"rho": None, "pvalue": None, "n": 0}
    shares = {m: marked_shares(abs_maps[m], roi_mask) for m in s.methods}
    diffusion = diffusion_indices(abs_maps, plan.maps, roi_mask)

    objective, completeness = {}, {}
    if plan.maps:
        first = next(iter(plan.maps.values()))
        objective = {"name": first.objective, "channels": s.channels, "value": first.objective_value}
        for m, a in plan.maps.items():
            if "baseline_objective" in a.meta:
                objective[f"{m}_baseline"] = a.meta["baseline_objective"]
                gap = a.objective_value - a.meta["baseline_objective"]
                completeness[m] = {
                    "delta": a.meta["delta"],
                    "attribution_sum": float(a.attribution.sum()),
                    "objective_change": gap,
                    "relative_delta": a.meta["delta"] / gap if gap != 0 else None,
                }
                if a.meta.get("completeness_warning"):
                    completeness[m]["warning"] = a.meta["completeness_warning"]
    gradients = {
        m: {k: v for k, v in a.meta.items() if k not in ("path_objective", "sigmas", "objective")}
        for m, a in plan.maps.items()
    }

    figures: dict[str, str] = {}
    if plan.figures.draw:
        t0 = time.perf_counter()
        from cem_lab.viz.style import use_style  # lazy: matplotlib, only when figures are drawn

        with use_style(plan.figures):
            figures = save_figures(
                folder / "figures",
                plan,
                cem,
                abs_maps,
                arrays,
                corr,
                shares,
                curves_fig,
                {n: faith[n]["baseline_metric"] for n in faith},
            )
        timings["figures_s"] = time.perf_counter() - t0

    rows, cols = job.grid.shape
    arrays.update(
        {
            "roi": np.array(job.roi.as_list()),
            "block": job.block,
            "scale": job.scale,
            "roi_mask": roi_mask,
            "grid_shape": np.array([rows, cols]),
            "input_shape": np.array(input_shape),
            "output_shape": np.array(job.out_shape),
            "methods": np.array(s.methods),
            "format_version": FORMAT_VERSION,
        }
    )
    summary = {
        "format_version": FORMAT_VERSION,
        "program": PROGRAM,
        "methods": s.methods,
        "metric": {"name": job.metric.name, "unit": job.metric.unit},
        "baseline_metric": float(job.baseline),  # the CEM's un-intervened metric (on its crop for a local model)
        "mode": job.mode,
        "roi": job.roi.as_list(),
        "block": job.block,
        "scale": job.scale,
        "grid_shape": [rows, cols],
        "input_shape": list(input_shape),
        "output_shape": list(job.out_shape),
        "blocks_ranked": int((~roi_mask).sum()),
        "model": job.model_name,
        "image": job.image_name,
        "task": job.task.describe(),
        "settings": {**s.describe(), "cem": cem_source, "seed": job.seed, "forward_batch": job.forward_batch},
        "objective": objective,
        "completeness": completeness,
        "gradients": gradients,
        "shares_marked": shares,
        "diffusion_index": diffusion,
        "faithfulness": faith,
        "rank_correlation": corr,
        "sign_test": signs,
        "figures": {k: str(Path(v).relative_to(folder)) for k, v in figures.items()},
        "device": str(job.device),
        "timings": timings,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": plan.config,
    }
    summary = write_results(folder, arrays, summary)
    return AttributionOutcome(folder, summary, arrays, cem, figures)
