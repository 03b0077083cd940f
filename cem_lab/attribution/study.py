"""The `cem-attribution` study itself, apart from its command line (:mod:`cem_lab.cli.attribution`).

It holds everything that computes or writes, on plain values and on the CEM job that
:func:`cem_lab.cli.cem.prepare` built (no Hydra, nothing from :mod:`cem_lab.cli`):

- the format: :data:`FORMAT_VERSION`, the file names of a run folder, the methods
  (:data:`METHODS`, :data:`GRADIENT_METHODS` and their labels) and the faithfulness
  interventions (:data:`INTERVENTIONS`), :class:`Settings` (the checked ``attribution`` section);
- the inputs: :func:`load_cem_run` (a finished `cem-lab` run's CEM, refused unless it matches),
  :func:`gradient_maps` (LAM, integrated gradients, saliency) and :func:`replacement_metrics`
  (the batched block-replacement metric per intervention), gathered in an :class:`AttributionPlan`;
- the numbers: :func:`compute_attribution` computes or reads the CEM, runs the deletion and
  insertion curves (recorded once by :class:`_Recorder`, evaluated together, answered by
  :class:`_Table`), the rank correlations, the CEM's sign test and the marked shares
  (:func:`marked_shares`), and writes ``attribution.npz``, ``attribution.json`` and, through
  :func:`save_figures`, the panel and the curves; it returns an :class:`AttributionOutcome`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("cem_lab")

PROGRAM = "cem-attribution"
FORMAT_VERSION = 1
METHODS = ("lam", "ig", "saliency", "cem")
GRADIENT_METHODS = ("lam", "ig", "saliency")
LABELS = {"lam": "LAM", "ig": "integrated gradients", "saliency": "saliency", "cem": "CEM"}
SHORT = {"lam": "LAM", "ig": "IG", "saliency": "saliency", "cem": "CEM"}
INTERVENTIONS = ("lv", "zeros", "mean", "blur", "noise")
SHARE_LEVELS = (0.5, 0.9)
RESULT_JSON, RESULT_NPZ, LOG_FILE, CEM_DIR = "attribution.json", "attribution.npz", "attribution.log", "cem"
PANEL_FILE, CURVES_FILE = "attribution_panel.png", "deletion_curves.png"


# --- settings ------------------------------------------------------------------------------------------
@dataclass
class Settings:
    """The checked ``attribution`` section of the config."""

    methods: list[str]
    objective: str
    channels: str
    lam: dict
    ig: dict
    interventions: list[str]
    steps: int | None
    samples: int
    sign_tol: float
    cem_run: str | None

    @property
    def gradient_methods(self) -> list[str]:
        return [m for m in self.methods if m in GRADIENT_METHODS]

    def describe(self) -> dict:
        return {
            "methods": self.methods,
            "objective": self.objective,
            "channels": self.channels,
            "lam": self.lam,
            "ig": self.ig,
            "faithfulness": {
                "interventions": self.interventions,
                "steps": self.steps,
                "samples": self.samples,
                "sign_tol": self.sign_tol,
            },
            "cem_run": self.cem_run,
        }


# --- the inputs ----------------------------------------------------------------------------------------------
def load_cem_run(path: str, job) -> Any:
    """The finished CEM of a `cem-lab` run folder, refused unless it is a map of this run's input
    with this run's ROI and block grid."""
    from cem_lab.attribution import AttributionError
    from cem_lab.causal.result import CEMResult
    from cem_lab.causal.runner import RunFolderError
    from cem_lab.folder_lock import describe_holder, folder_holder
    from cem_lab.images import to_uint8

    where = f"attribution.cem_run={path}"
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(
            f"{where}: no such folder; give the folder of a finished cem-lab run "
            "(runs/cem/<name>), or drop attribution.cem_run to compute the CEM here"
        )
    holder = folder_holder(p)
    if holder is not None:
        raise RunFolderError(f"{where} is being written by {describe_holder(holder)}; wait until it ends")
    if not (p / "cem.npz").is_file():
        raise FileNotFoundError(
            f"{where} holds no finished CEM (cem.npz is missing); run cem-lab to the end "
            "there first, or drop attribution.cem_run to compute the CEM here"
        )
    try:
        res = CEMResult.load(p)
    except (KeyError, OSError, ValueError) as err:
        raise AttributionError(f"{where}: cannot read its CEM ({err})") from err
    ours_in = (job.grid.input_h, job.grid.input_w)
    diffs = []
    if res.roi != job.roi:
        diffs.append(f"ROI {res.roi.as_list()} (this run: roi={job.roi.as_list()})")
    if int(res.block) != int(job.block):
        diffs.append(f"block {res.block} (this run: cem.block={job.block})")
    if tuple(res.input_shape) != ours_in:
        diffs.append(f"a {res.input_shape[0]}x{res.input_shape[1]} input (this run: {ours_in[0]}x{ours_in[1]})")
    if tuple(res.output_shape) != tuple(job.out_shape):
        diffs.append(
            f"a {res.output_shape[0]}x{res.output_shape[1]} output (this run: "
            f"{job.out_shape[0]}x{job.out_shape[1]}, task {job.task.name} x{job.scale})"
        )
    if diffs:
        raise AttributionError(
            f"{where} does not match this run: its CEM has {'; '.join(diffs)}. Give the cem-lab run of the "
            "same roi, cem.block, image and task, or drop attribution.cem_run to compute the CEM here"
        )
    inp = res.images.get("input")
    if inp is not None and not np.array_equal(np.asarray(inp), to_uint8(job.ti.input)):
        raise AttributionError(
            f"{where} does not match this run: its degraded input differs from this run's (another image, "
            "task, degradation or image_seed). Give the cem-lab run of the same input, or drop "
            "attribution.cem_run to compute the CEM here"
        )
    if res.metric != job.metric.name:
        log.warning("%s: its CEM is in %s, this run's faithfulness metric is %s", where, res.metric, job.metric.name)
    model = res.meta.get("model")
    if model and model != job.model_name:
        log.warning("%s: its CEM is of the model %s, this run's model is %s", where, model, job.model_name)
    return res


def gradient_maps(
    job, settings: Settings, progress: bool, cem_command: str = "cem-lab <the same overrides>"
) -> dict[str, Any]:
    """LAM, IG and saliency of the job's ROI on its input and block grid (saliency first: one forward
    and one backward pass check that the model has gradients before the longer paths run).
    ``cem_command``: the `cem-lab` command that a refusal of a model without gradients suggests."""
    from cem_lab.attribution import LAM, AttributionError, IntegratedGradients, Saliency

    x, roi, block, model = job.ti.input, job.roi, job.block, job.model
    common = {"block": block, "objective": settings.objective, "channels": settings.channels}
    maps: dict[str, Any] = {}
    order = sorted(settings.gradient_methods, key=lambda m: {"saliency": 0, "lam": 1, "ig": 2}[m])
    try:
        for m in order:
            t0 = time.perf_counter()
            if m == "saliency":
                maps[m] = Saliency(model).attribute(x, roi, **common)
            elif m == "lam":
                maps[m] = LAM(model).attribute(x, roi, progress=progress, **common, **settings.lam)
            else:
                maps[m] = IntegratedGradients(model).attribute(x, roi, progress=progress, **common, **settings.ig)
            maps[m].meta["time_s"] = time.perf_counter() - t0
    except AttributionError as err:
        if "differentiable torch model" in str(err):
            raise AttributionError(
                f"{err}. From the command line: {cem_command} (or cem-attribution with attribution.methods=[cem])"
            ) from None
        raise
    return {m: maps[m] for m in settings.gradient_methods}


def _replacement_class():
    from cem_lab.attribution import AttributionError, BlockReplacementMetric
    from cem_lab.causal.interventions import draw_rng

    class CropReplacementMetric(BlockReplacementMetric):
        """:class:`~cem_lab.attribution.BlockReplacementMetric` on the job's own model input: the
        verified crop of a local model (``job.mode == "crop"``; blocks outside it do not change the
        ROI output, which is what made the crop), else the whole image; with any intervention, bound
        to the job, its draws seeded from ``(seed, block, sample)`` like the CEM's. Replacing one block
        with the job's own intervention is therefore exactly the CEM's draw of it: ``baseline -
        metric_after([b])`` is the exhaustive CEM's ``effect_raw[b]`` for the same seed and samples.
        :meth:`many` evaluates many block sets at once, ``forward_batch`` inputs per model call.
        """

        def __init__(self, job, intervention=None, samples: int | None = None):
            own = intervention is None or intervention is job.intervention
            intervention = job.intervention if own else intervention
            if samples is None:
                samples = 1 if intervention.deterministic else 8
            super().__init__(job, samples)
            if not own:
                intervention.bind(job.task, job.ti, job.boxes, job.grid.block_in, job.device)
            self.intervention = intervention
            self.crop = tuple(job.crop)
            self.evaluated = 0

        @property
        def baseline(self) -> float:
            """The metric with nothing replaced (the CEM's un-intervened metric)."""
            return float(self.job.baseline)

        def __call__(self, blocks) -> float:
            return float(self.many([blocks])[0])

        def _inputs(self, blocks: np.ndarray):
            job = self.job
            x = job.base_crop.expand(self.samples, -1, -1, -1).clone()
            placements = job._placements(blocks, self.crop)
            for block, pl in zip(blocks, placements):
                draws = [
                    self.intervention.draw(draw_rng(job.seed, int(block), s), int(block), s)
                    for s in range(self.samples)
                ]
                x = self.intervention.apply(
                    x, job.ctx_crop, [pl] * self.samples, draws, origin=(self.crop[0], self.crop[2])
                )
            return x

        def many(self, sets, on_done=None) -> np.ndarray:
            """The metric after replacing each block set of ``sets`` (mean over the samples);
            ``on_done(n)`` after every ``n`` sets evaluated."""
            import torch

            job = self.job
            out = np.full(len(sets), self.baseline)
            pending: list[tuple[int, Any]] = []
            rows = 0

            def flush():
                nonlocal rows
                if not pending:
                    return
                x = torch.cat([t for _, t in pending])
                roi = job._roi(job._forward(x), (self.crop[0], self.crop[2]))
                values = job.metric(roi, job.ref).double().cpu().numpy().reshape(len(pending), self.samples)
                for (i, _), v in zip(pending, values):
                    out[i] = float(v.mean())
                if on_done is not None:
                    on_done(len(pending))
                pending.clear()
                rows = 0

            for i, blocks in enumerate(sets):
                b = np.unique(np.asarray(blocks, dtype=np.int64).ravel())
                self.calls += 1
                if b.size and (b.min() < 0 or b.max() >= len(job.grid)):
                    raise AttributionError(f"block indices must lie in [0, {len(job.grid)}), got {b.tolist()[:10]}")
                b = b[job.active[b]]  # the blocks that reach the model input (all of them on the whole image)
                if b.size == 0:
                    if on_done is not None:
                        on_done(1)
                    continue
                pending.append((i, self._inputs(b)))
                rows += self.samples
                self.evaluated += 1
                if rows >= 4 * job.forward_batch:
                    flush()
            flush()
            return out

    return CropReplacementMetric


def replacement_metrics(
    prepared, settings: Settings, *, sampler: str, make_patch_bank: Callable[[], Any]
) -> dict[str, Any]:
    """``metric_after(blocks)`` per faithfulness intervention, on the CEM job's model input (its
    crop for a local model): the job's own intervention (one replaced block = the CEM's draw of
    it) or another one bound to the job; ``samples`` draws for a random intervention, one for a
    deterministic baseline. ``sampler``: the CEM's ``cem.sampler``; ``make_patch_bank()`` builds
    the LV patch bank (called only when an LV intervention needs one the job does not hold)."""
    from cem_lab.causal.interventions import make_intervention

    cls = _replacement_class()
    job = prepared.job
    out: dict[str, Any] = {}
    for name in settings.interventions:
        if job.intervention.name == name:
            intervention = job.intervention
        else:
            bank = None
            if name == "lv":
                bank = prepared.kwargs.get("patch_bank") or make_patch_bank()
            intervention = make_intervention(name, bank=bank, sampler=sampler)
        out[name] = cls(job, intervention, 1 if intervention.deterministic else settings.samples)
    return out


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

    figures: bool  #: the config's ``figures``
    progress: bool  #: the config's ``progress``
    config: dict  #: the config's identity (written as ``config`` in attribution.json)
    settings: Settings
    prepared: Any  #: cem_lab.cli.cem.PreparedRun
    maps: dict[str, Any]  #: the gradient AttributionMaps
    metrics: dict[str, Any]  #: BlockReplacementMetric per intervention
    cem: Any = None  #: a CEMResult read from attribution.cem_run
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def job(self):
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


class _Counted:
    """A ``metric_after`` that moves a progress bar."""

    def __init__(self, fn, bar):
        self.fn, self.bar = fn, bar

    def __call__(self, blocks):
        value = self.fn(blocks)
        self.bar.update(1)
        return value


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
    from tqdm import tqdm

    from cem_lab.attribution import AttributionError, deletion_curve, insertion_curve, rank_correlation, sign_test
    from cem_lab.causal.runner import run_cem

    s, job = plan.settings, plan.job
    timings = dict(plan.timings)
    roi_mask = np.asarray(job.roi_mask, dtype=bool)
    cem, cem_source = plan.cem, None
    if "cem" in s.methods:
        t0 = time.perf_counter()
        if cem is None:
            kw = plan.prepared.kwargs
            cem = run_cem(
                job,
                folder / CEM_DIR,
                figures=bool(plan.figures),
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
    gradients = {
        m: {k: v for k, v in a.meta.items() if k not in ("path_objective", "sigmas", "objective")}
        for m, a in plan.maps.items()
    }

    figures: dict[str, str] = {}
    if plan.figures:
        t0 = time.perf_counter()
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
        "faithfulness": faith,
        "rank_correlation": corr,
        "sign_test": signs,
        "figures": {k: str(Path(v).relative_to(folder)) for k, v in figures.items()},
        "device": str(job.device),
        "timings": timings,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": plan.config,
    }
    from cem_lab.io import write_json, write_npz

    write_npz(folder / RESULT_NPZ, **arrays)
    summary = _finite(summary)
    write_json(folder / RESULT_JSON, summary)  # last: its presence marks a finished run
    return AttributionOutcome(folder, summary, arrays, cem, figures)


def save_figures(
    folder: Path, plan: AttributionPlan, cem, abs_maps, arrays, corr, shares, curves, baselines
) -> dict[str, str]:
    from cem_lab.images import to_uint8
    from cem_lab.viz.attribution_figures import MapPanel, save_attribution_panel, save_deletion_curves, symmetric_bound
    from cem_lab.viz.cem_figures import TASK_BOUNDS

    job, s = plan.job, plan.settings
    roi_mask = np.asarray(job.roi_mask, dtype=bool)
    panels = []
    for m in s.methods:
        sh = shares[m]
        marks = "marks " + " / ".join(_pct(sh[k]) for k in ("50", "90")) + " (50/90% of mass)"
        lines = [marks]
        if "cem" in s.methods and m != "cem":
            rho = (corr.get(f"{m}~cem") or corr.get(f"cem~{m}") or {}).get("rho")
            lines.append(
                f"rank corr. with CEM {rho:+.2f}"
                if rho is not None and math.isfinite(rho)
                else "rank corr. with CEM n/a"
            )
        if m == "cem":
            values = np.asarray(cem.effect, dtype=np.float64)
            bound = float(cem.meta.get("display_bound") or TASK_BOUNDS.get(job.task.name, 1.0))
            unit = cem.unit
            label = f"CEM ({cem.metric})"
        else:
            # LAM and IG keep their sign (toward / against the objective); saliency is |gradient|
            values = arrays[f"{m}/block_signed"]
            bound, unit, label = symmetric_bound(values, roi_mask), "", LABELS[m]
        panels.append(MapPanel(m, label, values, bound, unit, lines))
    title = f"{job.model_name} | {job.task.name} | {job.image_name} | ROI {job.roi.as_list()}, block {job.block}"
    out = {
        "attribution_panel": save_attribution_panel(
            folder / PANEL_FILE,
            input_rgb=to_uint8(job.ti.input),
            roi=job.roi.as_list(),
            block=job.block,
            output_shape=job.out_shape,
            roi_mask=roi_mask,
            panels=panels,
            title=title,
        )
    }
    if curves:
        out["deletion_curves"] = save_deletion_curves(
            folder / CURVES_FILE,
            curves=curves,
            baselines=baselines,
            labels=SHORT,
            metric=job.metric.name,
            unit=job.metric.unit,
        )
    return out


def _pct(share: float | None) -> str:
    """A share as a percentage: one decimal below 10 %, none above; ``n/a`` for none."""
    if share is None or not math.isfinite(share):
        return "n/a"
    return f"{100 * share:.1f}%" if share < 0.1 else f"{100 * share:.0f}%"
