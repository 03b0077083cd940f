"""Sanity checks of attribution maps by model-parameter randomisation (Adebayo et al., "Sanity Checks for
Saliency Maps", NeurIPS 2018): a map that explains the *trained* network must change when the network's
weights are replaced by random ones. A map that does not (an edge detector, a map fixed by the architecture)
explains the input or the architecture, not what the network learned.

    from cem_lab.attribution.sanity import randomisation_check
    res = randomisation_check(model, [x1, x2], roi=(120, 120, 16), methods=("lam", "ig", "saliency"), block=8)
    res.summary()["verdicts"]       # per method: passes, the Spearman at the fully randomised step, the rule

What it does
------------
- **Layers**: the modules that own parameters (``parameters(recurse=False)``), in the order the forward
  pass first calls them, found by forward hooks on one probe call (not the order of ``named_modules``,
  which is the order of registration). A module called twice (shared weights) is one layer; a module with
  parameters that the forward pass never calls as a module is listed in ``unreached`` and never randomised.
- **Randomisation** of a layer replaces its own parameters only (never its children's): ``"reset"``
  (default) draws them from the layer's initialisation (``reset_parameters()`` of a scratch copy, under a
  generator seeded by ``(seed, layer index)``; the same draw whatever the order or mode), a layer without
  ``reset_parameters`` falling back to ``"gaussian"``; ``"gaussian"`` draws each tensor from N(0, std of the
  trained tensor) (N(0, 1) for a one-element or constant tensor). The model given is never changed: the
  steps run on a deep copy.
- **Modes**: ``"cascading"``: step k randomises the last k layers (k = 1 .. L, last layer first, the
  order of the paper); ``"independent"``: step k randomises the k-th layer from the end alone. Step 0 is the
  trained network.
- **Methods**: ``"lam"``, ``"ig"``, ``"saliency"`` (:mod:`cem_lab.attribution`), recomputed at every step
  on every image, compared by their ``block_abs`` maps. ``"cem"``: the causal effect map of the copy
  (``|effect_raw|``, exhaustive estimator with ``cem_samples`` draws per block, the ``output_change`` metric,
  so that no ground truth is needed); it costs ``blocks x cem_samples`` forward passes of the network per
  image and step (a 256x256 input at block 8 is 1024 blocks: 2048 passes with 2 samples, against about 50
  forward and backward passes for LAM or IG), so give it small inputs, few images or a coarse block.
  A randomised network whose ROI objective has no gradient at all gets a zero map (noted in ``notes``).

Similarity to the trained map (per image and step; :func:`map_similarity`)
---------------------------------------------------------------------------
The ROI's own blocks are left out (set to zero in both maps; ``exclude_roi=False`` keeps them), as in the
CEM: in a residual network (the embedded DnCNN adds its output to its input) the identity path alone gives
the ROI's blocks most of the gradient of their own objective, whatever the weights. Both maps are then
compared on their *support*, the blocks where either is non-zero: outside it both are zero
by architecture (a local network's receptive field), whatever the weights, and those shared zeros would push
every measure toward 1 without saying anything about the weights.

- ``spearman``: Spearman's rank correlation of ``|values|`` over the support (scipy);
- ``ssim``: SSIM (scikit-image) of the two ``|maps|``, each divided by its largest value (so in [0, 1],
  ``data_range=1``), on the bounding box of the support (at least 3x3 blocks), with a uniform window of the
  largest odd side up to 7 that fits the box;
- ``topk``: the share of the trained map's top k blocks (by ``|value|``) that are also among the randomised
  map's top k, k = 10 % (``topk_share``) of the trained map's non-zero blocks, at least 1.

Two identical maps score 1 on every measure; a zero map against a non-zero one scores 0 on every measure,
two zero maps 1. Where a measure is undefined (a map constant on a support of several blocks) it is 0 if the
maps differ. The mean over images of each measure comes with a 95 % percentile-bootstrap interval
(:func:`~cem_lab.attribution.erf.bootstrap_interval`; none for one image).

The verdict (cascading mode)
----------------------------
A method **passes** when, at the fully randomised step (every layer random), the mean Spearman over images
is below ``threshold`` (0.5) **and** so is the upper end of its 95 % interval; with one image there is no
interval and the mean alone decides (the verdict says so). Independent mode has no fully randomised step and
gives no verdict: its per-layer curves say which layers a map is sensitive to.

Why not Quantus
---------------
Quantus 0.6.0's ``MPRT`` runs on our model wrapped as a one-output "classifier" (an ``nn.Module`` mapping the
image to ``(N, 1)`` = the ROI objective, ``y_batch=[0]``, an ``explain_func`` calling these methods), but it
cannot do this check as stated, so it is not used here:

- its layers are those of ``named_modules()`` that have a ``reset_parameters`` attribute, in *registration*
  order (``PyTorchModel.get_random_layer_generator`` in ``quantus/helpers/model/pytorch_model.py``), reversed
  for ``top_down``: a network that registers its modules in another order than it calls them is randomised
  in the wrong order, parameters held by modules without ``reset_parameters`` (e.g. a bare ``nn.Parameter``
  of a custom block) are never randomised, and a module with ``reset_parameters`` and parameterised children
  (``nn.MultiheadAttention``) resets them too, as two steps of one layer;
- every layer is reset after ``torch.manual_seed(seed + 1)``: the global generator is reseeded (a side
  effect on the caller) and layers of one shape get the same weights;
- one similarity per call on the per-pixel maps (``explain_func``'s output must have the input's spatial
  shape, ``assert_attributions`` in ``quantus/helpers/asserts.py``), so the three measures on the CEM's block
  grid would take three calls, each recomputing every map (and ``MPRT.__call__`` computes the trained maps
  twice, in ``custom_preprocess`` and at its first layer): three to six times the cost of LAM or IG;
- no support restriction (on the embedded DnCNN at 48x48 its Spearman stays at 0.998 at every step of a
  cascading saliency check, the shared zeros outside the receptive field deciding it), no intervals over
  images, no verdict, no CEM;
- ``EfficientMPRT`` (eMPRT) scores the rise in the maps' histogram entropy, and the entropy of the model's
  softmax output, which is 0 for a one-output model: the second half does not apply to a ROI objective.

Part of the core: plain PyTorch, numpy, scipy and scikit-image; no figures (:mod:`cem_lab.viz.sanity_figures`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import Tensor, nn
from tqdm import tqdm

from cem_lab.attribution.base import AttributionError, prepare_input
from cem_lab.attribution.erf import bootstrap_interval
from cem_lab.attribution.gradients import IntegratedGradients, Saliency
from cem_lab.attribution.lam import LAM
from cem_lab.attribution.objective import make_objective
from cem_lab.causal.grid import BlockGrid, Roi

METHODS = ("lam", "ig", "saliency", "cem")
MODES = ("cascading", "independent")
RANDOMISE = ("reset", "gaussian")
MEASURES = ("spearman", "ssim", "topk")
#: a method passes when the Spearman at the fully randomised step is below this (and its upper bound too)
THRESHOLD = 0.5
#: top-k overlap: k is this share of the trained map's non-zero blocks
TOPK_SHARE = 0.1
#: the rule, as written in sanity.json
RULE = (
    "passes when, at the fully randomised step (cascading, every layer random), the mean Spearman of |block "
    "values| over images is below {t} and so is the upper end of its 95 % bootstrap interval (one image: the "
    "mean alone)"
)


# --- layers ------------------------------------------------------------------------------------------------
def forward_layers(model: nn.Module, probe: Tensor) -> tuple[list[str], list[str]]:
    """``(layers, unreached)``: the names of the modules owning parameters, in the order one forward pass on
    ``probe`` first calls them, and those it never calls."""
    owners = {name: m for name, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None}
    order: list[str] = []
    handles = []
    for name, module in owners.items():

        def hook(_m, _inp, _out, name=name):
            if name not in order:
                order.append(name)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for h in handles:
            h.remove()
    return order, [n for n in owners if n not in order]


def _layer_generator(seed: int, index: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) * 1_000_003 + int(index))
    return g


def randomise_layer(model: nn.Module, name: str, *, seed: int, index: int, how: str = "reset") -> None:
    """Replace the parameters owned by ``model``'s module ``name`` (not its children's) with random ones, in
    place; the draw depends only on ``(seed, index)`` (module docstring)."""
    module = model.get_submodule(name)
    own = dict(module.named_parameters(recurse=False))
    if not own:
        raise AttributionError(f"layer {name!r} owns no parameters; give a layer from the network's layer list")
    new: dict[str, Tensor] = {}
    if how == "reset" and hasattr(module, "reset_parameters"):
        scratch = copy.deepcopy(module)
        # every CUDA device's generator is restored too: torch.manual_seed seeds them all
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
            torch.manual_seed(int(seed) * 1_000_003 + int(index))
            scratch.reset_parameters()
        new = {k: v.detach() for k, v in scratch.named_parameters(recurse=False)}
    else:
        g = _layer_generator(seed, index, torch.device("cpu"))
        for k, p in own.items():
            std = float(p.detach().float().std()) if p.numel() > 1 else 0.0
            std = std if math.isfinite(std) and std > 0 else 1.0
            new[k] = torch.randn(p.shape, generator=g, dtype=torch.float64).mul_(std).to(p.dtype)
    with torch.no_grad():
        for k, p in own.items():
            p.copy_(new[k].to(p.device, p.dtype))


def randomised_models(
    model: nn.Module, layers: Sequence[str], mode: str, *, seed: int = 0, how: str = "reset"
) -> Iterator[tuple[str, nn.Module]]:
    """``(layer, copy)`` per step, last layer first: cascading, the copy has this layer and every later one
    random; independent, this layer alone. ``layers``: forward order. The copy is reused from step to step
    in cascading mode (do not keep it); ``model`` is never changed."""
    if mode not in MODES:
        raise AttributionError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if how not in RANDOMISE:
        raise AttributionError(f"randomise must be one of {list(RANDOMISE)}, got {how!r}")
    index = {name: k for k, name in enumerate(layers)}
    work = copy.deepcopy(model).eval() if mode == "cascading" else None
    for name in reversed(layers):
        if mode == "independent":
            work = copy.deepcopy(model).eval()
        randomise_layer(work, name, seed=seed, index=index[name], how=how)
        yield name, work


# --- similarity ----------------------------------------------------------------------------------------------
def _support(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a != 0) | (b != 0)


def spearman_abs(trained: np.ndarray, other: np.ndarray) -> float:
    """Spearman of ``|values|`` over the blocks where either map is non-zero (module docstring)."""
    a, b = np.abs(np.asarray(trained, float)), np.abs(np.asarray(other, float))
    keep = _support(a, b)
    if not keep.any():
        return 1.0
    x, y = a[keep], b[keep]
    if np.array_equal(x, y):
        return 1.0
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def ssim_blocks(trained: np.ndarray, other: np.ndarray) -> float:
    """SSIM of the two ``|maps|`` scaled to [0, 1], on the bounding box of their support (module docstring)."""
    a, b = np.abs(np.asarray(trained, float)), np.abs(np.asarray(other, float))
    keep = _support(a, b)
    if not keep.any():
        return 1.0
    if not a.any() or not b.any():
        return 0.0
    a, b = a / a.max(), b / b.max()
    rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    r0, r1 = _widen(rows[0], rows[-1] + 1, a.shape[0])
    c0, c1 = _widen(cols[0], cols[-1] + 1, a.shape[1])
    a, b = a[r0:r1, c0:c1], b[r0:r1, c0:c1]
    side = min(7, a.shape[0], a.shape[1])
    side -= 1 - side % 2
    return float(structural_similarity(a, b, data_range=1.0, win_size=side))


def _widen(lo: int, hi: int, n: int, least: int = 3) -> tuple[int, int]:
    """``[lo, hi)`` grown to at least ``least`` (within ``[0, n)``)."""
    while hi - lo < least and (lo > 0 or hi < n):
        if hi < n:
            hi += 1
        if hi - lo < least and lo > 0:
            lo -= 1
    return lo, hi


def topk_overlap(trained: np.ndarray, other: np.ndarray, share: float = TOPK_SHARE) -> float:
    """Share of the trained map's top k blocks (by ``|value|``) among the other map's top k; k = ``share`` of
    the trained map's non-zero blocks, at least 1."""
    a, b = np.abs(np.asarray(trained, float)).ravel(), np.abs(np.asarray(other, float)).ravel()
    if not a.any() and not b.any():
        return 1.0
    if not a.any() or not b.any():
        return 0.0
    k = max(1, int(round(share * np.count_nonzero(a))))
    top_a = np.argsort(-a, kind="stable")[:k]
    top_b = np.argsort(-b, kind="stable")[:k]
    return float(np.intersect1d(top_a, top_b).size / k)


def map_similarity(trained: np.ndarray, other: np.ndarray, topk_share: float = TOPK_SHARE) -> dict[str, float]:
    """The three measures of the module docstring, ``{"spearman", "ssim", "topk"}``."""
    if np.shape(trained) != np.shape(other):
        raise AttributionError(f"block maps of shapes {np.shape(trained)} and {np.shape(other)} do not compare")
    return {
        "spearman": spearman_abs(trained, other),
        "ssim": ssim_blocks(trained, other),
        "topk": topk_overlap(trained, other, topk_share),
    }


# --- the check -------------------------------------------------------------------------------------------
@dataclass
class SanityResult:
    """A randomisation check: per method, block maps and similarities per image and step.

    ``layers``: forward order; ``steps``: the layer randomised at each step (last layer first; step 0, the
    trained network, is not in it); ``maps[method]``: (images, 1 + steps, rows, cols) ``|block|`` maps, index
    0 the trained one; ``similarity[method]``: (images, steps, measures) in :data:`MEASURES` order.
    """

    mode: str
    layers: list[str]
    steps: list[str]
    methods: list[str]
    maps: dict[str, np.ndarray]
    similarity: dict[str, np.ndarray]
    names: list[str]
    roi: Roi
    block: int
    seed: int
    randomise: str
    threshold: float = THRESHOLD
    topk_share: float = TOPK_SHARE
    unreached: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def intervals(self, method: str) -> dict[str, list[dict[str, float]]]:
        """Per measure and step: the mean over images with its 95 % bootstrap interval."""
        out: dict[str, list[dict[str, float]]] = {}
        for j, measure in enumerate(MEASURES):
            rows = []
            for k in range(len(self.steps)):
                mean, lo, hi, n = bootstrap_interval(self.similarity[method][:, k, j], seed=self.seed)
                rows.append({"mean": mean, "low": lo, "high": hi, "n": n})
            out[measure] = rows
        return out

    def verdict(self, method: str) -> dict[str, Any] | None:
        """Cascading mode: whether ``method`` passes (module docstring), with the numbers it rests on; None when
        the last step leaves some layer trained (``layers=`` a subset): the rule is about a fully random network."""
        if self.mode != "cascading" or not self.steps or set(self.steps) != set(self.layers):
            return None
        last = self.intervals(method)
        final = {m: last[m][-1] for m in MEASURES}
        s = final["spearman"]
        has_interval = math.isfinite(s["low"]) and math.isfinite(s["high"])
        decider = s["high"] if has_interval else s["mean"]
        return {
            "passes": bool(decider < self.threshold),
            "spearman": s,
            "ssim": final["ssim"],
            "topk": final["topk"],
            "decided_by": "upper 95 % bound" if has_interval else "mean (one image: no interval)",
            "threshold": self.threshold,
        }

    def summary(self) -> dict[str, Any]:
        """The JSON-ready numbers: settings, layers, per-method intervals per step and the verdicts."""
        return {
            "mode": self.mode,
            "randomise": self.randomise,
            "seed": self.seed,
            "roi": self.roi.as_list(),
            "block": self.block,
            "images": list(self.names),
            "methods": list(self.methods),
            "layers": list(self.layers),
            "steps": list(self.steps),
            "unreached_layers": list(self.unreached),
            "measures": list(MEASURES),
            "topk_share": self.topk_share,
            "rule": RULE.format(t=self.threshold) if self.mode == "cascading" else "independent mode: no verdict",
            "similarity": {m: self.intervals(m) for m in self.methods},
            "verdicts": {m: self.verdict(m) for m in self.methods},
            "notes": list(self.notes),
            "settings": dict(self.settings),
        }


MapFunction = Callable[[nn.Module, Tensor], np.ndarray]


def method_maps(
    methods: Sequence[str],
    roi: Roi,
    block: int,
    *,
    objective: str = "gradient",
    channels: str = "rgb",
    lam: dict | None = None,
    ig: dict | None = None,
    cem_samples: int = 2,
    task: Any = None,
) -> dict[str, MapFunction]:
    """Per method, ``f(model, x) -> (rows, cols) |block| map`` (``lam`` / ``ig``: keywords of their
    ``attribute``; ``cem``: exhaustive with ``cem_samples`` draws per block, needs ``task``)."""
    lam, ig = dict(lam or {}), dict(ig or {})

    def gradient(cls, options):
        def run(model, x):
            return (
                cls(model).attribute(x, roi, block=block, objective=objective, channels=channels, **options).block_abs
            )

        return run

    table: dict[str, MapFunction] = {
        "lam": gradient(LAM, {"progress": False, **lam}),
        "ig": gradient(IntegratedGradients, {"progress": False, **ig}),
        "saliency": gradient(Saliency, {}),
    }

    def cem(model, x):
        from cem_lab.causal.run import compute_cem  # the causal core, only for the optional CEM

        res = compute_cem(
            model,
            None,
            task,
            roi.as_list(),
            degraded=x,
            metric="output_change",
            estimator="exhaustive",
            samples=int(cem_samples),
            block=block,
            progress=False,
        )
        return np.abs(np.nan_to_num(res.effect_raw))

    table["cem"] = cem
    unknown = [m for m in methods if m not in table]
    if unknown:
        raise AttributionError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if "cem" in methods and task is None:
        raise AttributionError("method 'cem' needs the task (e.g. task='dn'): its interventions are the task's")
    return {m: table[m] for m in methods}


def _zero_gradient(err: AttributionError) -> bool:
    return "identically zero" in str(err)


def randomisation_check(
    model: nn.Module,
    images: Sequence[Any],
    roi,
    methods: Sequence[str] = ("lam", "ig", "saliency"),
    block: int = 8,
    mode: str = "cascading",
    layers: Sequence[str] | None = None,
    seed: int = 0,
    *,
    randomise: str = "reset",
    threshold: float = THRESHOLD,
    topk_share: float = TOPK_SHARE,
    objective: str = "gradient",
    channels: str = "rgb",
    lam: dict | None = None,
    ig: dict | None = None,
    cem_samples: int = 2,
    task: Any = None,
    exclude_roi: bool = True,
    names: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    map_functions: dict[str, MapFunction] | None = None,
) -> SanityResult:
    """Randomise ``model`` layer by layer and recompute each method's block map at each step (module
    docstring). ``images``: model inputs, float ``(1, C, h, w)`` / ``(C, h, w)`` in [0, 1]; ``roi``: output
    pixels; ``exclude_roi``: leave the ROI's own blocks out of the comparison (module docstring); ``layers``: a subset of the network's layers (default all); ``map_functions``: replaces the
    built-in methods (``{name: f(model, x) -> block map}``, for tests and new methods)."""
    if mode not in MODES:
        raise AttributionError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if randomise not in RANDOMISE:
        raise AttributionError(f"randomise must be one of {list(RANDOMISE)}, got {randomise!r}")
    if not 0 < topk_share <= 1:
        raise AttributionError(f"topk_share must be in (0, 1], got {topk_share}")
    if not isinstance(model, nn.Module):
        raise AttributionError(
            f"the randomisation check needs a torch nn.Module (its layers), got {type(model).__name__}"
        )
    if not images:
        raise AttributionError("give at least one image")
    roi = Roi.parse(roi)
    make_objective(objective, roi, channels)  # refused here, before any compute
    fns = map_functions or method_maps(
        methods, roi, block, objective=objective, channels=channels, lam=lam, ig=ig, cem_samples=cem_samples, task=task
    )
    methods = list(fns)
    trained = copy.deepcopy(model).eval()
    xs = [prepare_input(trained, x, device) for x in images]
    found, unreached = forward_layers(trained, xs[0])
    with torch.no_grad():
        out = trained(xs[0])
    out = out[0] if isinstance(out, (list, tuple)) else out
    try:
        grid = BlockGrid(xs[0].shape[-2], xs[0].shape[-1], int(out.shape[-1]) // int(xs[0].shape[-1]), block)
    except ValueError as err:
        raise AttributionError(str(err)) from err
    keep = ~grid.roi_mask(roi) if exclude_roi else np.ones((grid.rows, grid.cols), dtype=bool)
    if not found:
        raise AttributionError("the network calls no module that owns parameters: there is nothing to randomise")
    if layers is not None:
        missing = [n for n in layers if n not in found]
        if missing:
            raise AttributionError(
                f"layer(s) {missing} are not among the network's layers in forward order: {', '.join(found)}"
            )
        chosen = [n for n in found if n in set(layers)]
    else:
        chosen = found
    names = list(names) if names is not None else [f"image{k}" for k in range(len(xs))]
    notes: list[str] = []
    n_steps = len(chosen)
    maps: dict[str, list[list[np.ndarray]]] = {m: [[] for _ in xs] for m in methods}
    bar = tqdm(total=(n_steps + 1) * len(xs), desc="sanity", unit="map", disable=not progress, dynamic_ncols=True)

    def compute(net: nn.Module, step: str) -> None:
        for i, x in enumerate(xs):
            for m, fn in fns.items():
                try:
                    bm = np.asarray(fn(net, x), dtype=np.float64)
                except AttributionError as err:
                    if step == "trained" or not _zero_gradient(err):
                        raise
                    bm = np.zeros_like(maps[m][i][0])
                    notes.append(f"{m}, {names[i]}, step {step}: the ROI objective has no gradient; a zero map")
                maps[m][i].append(bm)
            bar.update(1)

    try:
        compute(trained, "trained")
        for name, net in randomised_models(trained, chosen, mode, seed=seed, how=randomise):
            bar.set_postfix_str(name)
            compute(net, name)
    finally:
        bar.close()
    arrays = {m: np.stack([np.stack(per) for per in maps[m]]) for m in methods}
    sims = {
        m: np.array(
            [
                [
                    [map_similarity(a[i, 0] * keep, a[i, k] * keep, topk_share)[s] for s in MEASURES]
                    for k in range(1, n_steps + 1)
                ]
                for i in range(a.shape[0])
            ]
        ).reshape(a.shape[0], n_steps, len(MEASURES))
        for m, a in arrays.items()
    }
    settings = {
        "objective": objective,
        "channels": channels,
        "lam": dict(lam or {}),
        "ig": dict(ig or {}),
        "cem_samples": int(cem_samples) if "cem" in methods else None,
        "exclude_roi": bool(exclude_roi),
    }
    return SanityResult(
        mode,
        list(found),
        list(reversed(chosen)),
        methods,
        arrays,
        sims,
        names,
        roi,
        int(block),
        int(seed),
        randomise,
        float(threshold),
        float(topk_share),
        unreached,
        notes,
        settings,
    )
