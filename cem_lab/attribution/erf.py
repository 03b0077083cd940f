"""The effective receptive field (ERF) of a ROI: where the gradient of its output reaches in the input.

Luo et al. ("Understanding the Effective Receptive Field in Deep Convolutional Neural Networks", NeurIPS
2016) measure how much each input pixel moves an output unit: the gradient of that unit with respect to
the input, in absolute value, averaged over images. RepLKNet and MambaIR draw it on a log scale and
summarise it by *high-contribution area ratios*. Here, for a model ``(1, C, h, w) -> (1, C', h*s, w*s)``
and a ROI given in output pixels (``Roi``: top, left, size):

- the differentiated quantity ``F`` (``point``): ``"centre"``, the sum over output channels of the ROI's
  centre pixel ``(top + size // 2, left + size // 2)`` (the exact centre for an odd size, the pixel below
  right of it for an even one); ``"roi"``, the sum of the whole ROI over channels and pixels;
- the ERF of one image: ``E[i, j] = sum_c |dF / dx[c, i, j]|``, on the *input* pixels (for SR the input is
  the LR image, ``s`` times smaller than the output the ROI lives on);
- the population ERF: the mean of the per-image maps;
- the area ratio at level ``p`` of a map: the smallest fraction of its pixels holding ``p`` of its total,
  ``k / N`` with ``k`` the fewest largest values whose sum reaches ``p * sum(E)`` (N input pixels). A map
  on one pixel has ratio ``1 / N`` at every level; an even map has ratio ``p`` (rounded up to a pixel);
- the mass radius at level ``p``: the smallest distance ``r`` (output pixels, from the centre of what is
  differentiated: ``(top + size / 2, left + size / 2)`` for the ROI, the centre pixel's centre for
  ``"centre"``) such that the input pixels whose centres lie within ``r`` hold ``p`` of the mass. Input
  pixel ``(i, j)`` has its centre at output coordinates ``((i + 0.5) s, (j + 0.5) s)``, the convention of
  the CEM's block distances (:func:`cem_lab.causal.grid.block_distances`), so the radius compares with a
  CE map's effective distance ``reach_px["max"]``;
- over images: the mean of each per-image number with a 95 % percentile-bootstrap interval (the images
  resampled with replacement; :func:`bootstrap_interval`; no interval from one image).

The model's input is what the model sees in cem_lab: with ``task`` given, ``images`` are clean images and
each is degraded by the task first (``task.prepare(clean, seed + k)``: noise drawn for DN, bicubic
downscaling for SR, rain for DR); without it, ``images`` are the model inputs themselves.

Plain PyTorch and NumPy (the core's rules). The figures: :mod:`cem_lab.viz.erf_figures`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from cem_lab.attribution._setup import grad_mode
from cem_lab.attribution.base import AttributionError, call_model, input_gradient, prepare_input, scale_of
from cem_lab.attribution.objective import RoiObjective
from cem_lab.causal.grid import Roi
from cem_lab.images import from_uint8
from cem_lab.tasks.factory import make_task

__all__ = [
    "AREA_LEVELS",
    "ERFResult",
    "POINTS",
    "RADIUS_LEVELS",
    "area_ratio",
    "bootstrap_interval",
    "effective_receptive_field",
    "mass_radius",
]

POINTS = ("centre", "roi")
#: the levels of RepLKNet's high-contribution area ratios
AREA_LEVELS: tuple[float, ...] = (0.2, 0.3, 0.5, 0.99)
#: the levels of the mass radii compared with the CEM's effective distance
RADIUS_LEVELS: tuple[float, ...] = (0.5, 0.99)


# --- numbers of one map ---------------------------------------------------------------------------------
def _check_level(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise AttributionError(f"a level must be a share in (0, 1], got {p!r}")
    return float(p)


def area_ratio(erf: np.ndarray, level: float) -> float:
    """The smallest fraction of the map's pixels whose largest values hold ``level`` of its total (NaN for a
    map without mass)."""
    p = _check_level(level)
    v = np.abs(np.asarray(erf, dtype=np.float64)).ravel()
    total = float(v.sum())
    if v.size == 0 or not total > 0:
        return float("nan")
    c = np.cumsum(np.sort(v)[::-1])
    # the tolerance keeps a level reached exactly (a sum of equal values) from needing one pixel more
    k = int(np.searchsorted(c, p * total * (1 - 1e-12), side="left")) + 1
    return min(k, v.size) / v.size


def pixel_distances(input_shape: tuple[int, int], scale: int, centre: tuple[float, float]) -> np.ndarray:
    """(h, w) distances, in output pixels, from every input pixel's centre to ``centre`` (output coordinates)."""
    h, w = input_shape
    yy = (np.arange(h) + 0.5) * scale
    xx = (np.arange(w) + 0.5) * scale
    return np.hypot(yy[:, None] - centre[0], xx[None, :] - centre[1])


def mass_radius(erf: np.ndarray, distances: np.ndarray, level: float) -> float:
    """The smallest distance within which the map holds ``level`` of its total (module docstring); NaN for a
    map without mass."""
    p = _check_level(level)
    v = np.abs(np.asarray(erf, dtype=np.float64)).ravel()
    d = np.asarray(distances, dtype=np.float64).ravel()
    total = float(v.sum())
    if not total > 0:
        return float("nan")
    order = np.argsort(d, kind="stable")
    c = np.cumsum(v[order])
    k = min(int(np.searchsorted(c, p * total * (1 - 1e-12), side="left")), d.size - 1)
    return float(d[order][k])


def bootstrap_interval(
    values, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)`` of the finite ``values``: the mean and a percentile-bootstrap interval of it
    (``resamples`` draws of n values with replacement, seeded); low and high are NaN for fewer than two."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n = v.size
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(v.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), n
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return mean, float(lo), float(hi), n


def _key(p: float) -> str:
    return f"{100 * p:g}"


# --- the result ----------------------------------------------------------------------------------------
@dataclass
class ERFResult:
    """Per-image ERF maps of one ROI and their summaries (module docstring).

    ``maps``: (N, h, w) float64, ``sum_c |dF/dx_c|`` per image on the input pixels; ``names``: one per map;
    ``roi``: in output pixels; ``point``: ``"centre"`` or ``"roi"``; ``target``: the output region
    differentiated ``(top, left, size)``; ``centre``: its centre in output coordinates; ``scale``: output /
    input size; ``values``: ``F`` per image.
    """

    maps: np.ndarray
    names: list[str]
    roi: Roi
    point: str
    target: tuple[int, int, int]
    centre: tuple[float, float]
    scale: int
    input_shape: tuple[int, int]
    output_shape: tuple[int, int]
    values: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_map(self) -> np.ndarray:
        """(h, w) the population ERF: the mean of the per-image maps."""
        return self.maps.mean(axis=0)

    @property
    def distances(self) -> np.ndarray:
        """(h, w) distances (output pixels) from each input pixel's centre to :attr:`centre`."""
        return pixel_distances(self.input_shape, self.scale, self.centre)

    def area_ratios(self, levels: Sequence[float] = AREA_LEVELS) -> np.ndarray:
        """(N, L) the area ratio of each image's map at each level."""
        return np.array([[area_ratio(m, p) for p in levels] for m in self.maps])

    def mass_radii(self, levels: Sequence[float] = RADIUS_LEVELS) -> np.ndarray:
        """(N, L) the mass radius (output pixels) of each image's map at each level."""
        d = self.distances
        return np.array([[mass_radius(m, d, p) for p in levels] for m in self.maps])

    def _summarise(self, per_image: np.ndarray, of_mean: list[float], levels, level, resamples, seed) -> dict:
        out = {}
        for j, p in enumerate(levels):
            mean, lo, hi, n = bootstrap_interval(per_image[:, j], level, resamples, seed)
            out[_key(p)] = {
                "mean": mean,
                "low": lo,
                "high": hi,
                "images": n,
                "of_mean_map": of_mean[j],
                "per_image": per_image[:, j].tolist(),
            }
        return out

    def area_ratio_summary(
        self, levels: Sequence[float] = AREA_LEVELS, level: float = 0.95, resamples: int = 2000, seed: int = 0
    ) -> dict[str, dict]:
        """Per level (key ``"50"`` for 0.5): the mean area ratio over images with its bootstrap interval, the
        count, the ratio of the mean map, and the per-image ratios."""
        of_mean = [area_ratio(self.mean_map, p) for p in levels]
        return self._summarise(self.area_ratios(levels), of_mean, levels, level, resamples, seed)

    def radius_summary(
        self, levels: Sequence[float] = RADIUS_LEVELS, level: float = 0.95, resamples: int = 2000, seed: int = 0
    ) -> dict[str, dict]:
        """Per level: the mass radius (output pixels) over images, as :meth:`area_ratio_summary`."""
        d = self.distances
        of_mean = [mass_radius(self.mean_map, d, p) for p in levels]
        return self._summarise(self.mass_radii(levels), of_mean, levels, level, resamples, seed)

    def summary(self, area_levels=AREA_LEVELS, radius_levels=RADIUS_LEVELS, resamples: int = 2000) -> dict:
        """The JSON-ready numbers: settings, area ratios and mass radii with their intervals."""
        return {
            "roi": self.roi.as_list(),
            "point": self.point,
            "target": list(self.target),
            "centre": list(self.centre),
            "scale": self.scale,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "images": list(self.names),
            "interval": {"level": 0.95, "kind": "percentile bootstrap over images", "resamples": resamples},
            "area_ratio": self.area_ratio_summary(area_levels, resamples=resamples),
            "mass_radius_px": self.radius_summary(radius_levels, resamples=resamples),
            "objective_values": self.values.tolist(),
            **self.meta,
        }


# --- the computation -----------------------------------------------------------------------------------
def _as_inputs(images) -> list[Tensor]:
    """A list of (1, C, h, w) float tensors from a batch tensor, or a sequence of tensors / uint8 arrays."""
    if isinstance(images, Tensor):
        if images.dim() == 3:
            return [images[None]]
        if images.dim() == 4:
            return [images[k : k + 1] for k in range(images.shape[0])]
        raise AttributionError(f"images must be (N, C, h, w) or (C, h, w), got shape {tuple(images.shape)}")
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    out = []
    for k, im in enumerate(images):
        if isinstance(im, np.ndarray):
            if im.dtype != np.uint8 or im.ndim != 3 or im.shape[-1] != 3:
                raise AttributionError(
                    f"image {k}: a numpy image must be (H, W, 3) uint8, got {im.dtype} {im.shape}; "
                    "cem_lab.images.load_image reads files as such"
                )
            im = from_uint8(im)
        if not isinstance(im, Tensor):
            raise AttributionError(f"image {k}: give tensors or uint8 arrays, got {type(im).__name__}")
        out.append(im[None] if im.dim() == 3 else im)
    if not out:
        raise AttributionError("no image given: the ERF averages over at least one image")
    return out


def effective_receptive_field(
    model: Callable,
    images,
    roi,
    *,
    point: str = "centre",
    task=None,
    seed: int = 0,
    names: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> ERFResult:
    """The ERF of ``roi`` (output pixels) over ``images`` (module docstring) -> :class:`ERFResult`.

    ``images``: an (N, C, h, w) tensor, or a sequence of (C, h, w) / (1, C, h, w) float tensors in [0, 1] or
    (H, W, 3) uint8 arrays, all of one size; the model inputs, or clean images when ``task`` (a
    :class:`~cem_lab.tasks.base.Task` or its name) is given, each then degraded with seed ``seed + k``.
    ``point``: ``"centre"`` or ``"roi"``. ``model`` runs on its own device (or ``device``); nn.Modules are
    put in eval mode. ``progress``: a tqdm bar over the images.
    """
    if point not in POINTS:
        raise AttributionError(f"point must be one of {list(POINTS)}, got {point!r}")
    try:
        roi = Roi.parse(roi)
    except ValueError as err:
        raise AttributionError(str(err)) from err
    if isinstance(task, str):
        task = make_task(task)
    inputs = _as_inputs(images)
    shapes = {tuple(x.shape[-2:]) for x in inputs}
    if len(shapes) > 1:
        raise AttributionError(
            f"the images have several sizes {sorted(shapes)}; the ERF averages maps of one size: crop them alike"
        )
    names = list(names) if names is not None else [f"image{k}" for k in range(len(inputs))]
    if len(names) != len(inputs):
        raise AttributionError(f"{len(names)} names for {len(inputs)} images")
    if isinstance(model, nn.Module):
        model.eval()
    half = roi.size // 2
    target = (roi.top + half, roi.left + half, 1) if point == "centre" else (roi.top, roi.left, roi.size)
    objective = RoiObjective(target, "roi_sum")
    centre = (
        (target[0] + 0.5, target[1] + 0.5) if point == "centre" else (roi.top + roi.size / 2, roi.left + roi.size / 2)
    )
    maps, values = [], []
    scale, out_hw = 1, (0, 0)
    bar = tqdm(inputs, desc="ERF", unit="image", disable=not progress, dynamic_ncols=True, delay=2.0)
    with grad_mode():
        for k, x in enumerate(bar):
            if task is not None:
                x = task.prepare(x.float(), seed + k).input
            xg = prepare_input(model, x, device).requires_grad_(True)
            out = call_model(model, xg)
            scale = scale_of(xg, out)
            out_hw = (int(out.shape[-2]), int(out.shape[-1]))
            RoiObjective(roi, "roi_sum").check(*out_hw)  # the ROI itself, named in the refusal
            value = objective(out)
            g = input_gradient(value, xg).detach().double()[0]
            maps.append(g.abs().sum(dim=0).cpu().numpy())
            values.append(float(value.detach()[0]))
    maps_arr = np.stack(maps)
    if not (maps_arr > 0).any():
        raise AttributionError(
            f"the gradient of the ROI {roi.as_list()} ({point}) is zero on every input pixel of every image: "
            "its output does not depend on the input here; choose another ROI or check the model"
        )
    meta = {"task": task.describe() if task is not None else None, "seed": int(seed), "device": str(xg.device)}
    return ERFResult(
        maps_arr,
        names,
        roi,
        point,
        target,
        centre,
        int(scale),
        tuple(maps_arr.shape[-2:]),
        out_hw,
        np.array(values),
        meta,
    )
