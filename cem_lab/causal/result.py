"""The result of a CEM run: its per-block arrays, derived numbers and summary; saved and loaded in
the run-folder format of :mod:`cem_lab.run_format` (a public, versioned contract)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cem_lab.causal.grid import Roi, block_distances
from cem_lab.images import load_image, save_image
from cem_lab.run_format import (
    FORMAT_VERSION,
    IMAGES_DIR,
    read_cem_arrays,
    read_summary,
    write_cem_arrays,
    write_summary,
)

ARRAYS = ("effect", "effect_raw", "stderr", "ci_low", "ci_high", "counts", "classification", "roi_mask")


@dataclass
class CEMResult:
    """A causal effect map: per-block arrays on the block grid, the ROI, the geometry, the
    un-intervened metric, and ``meta`` (summary.json's run record) and ``images`` (uint8 RGB)."""

    effect: np.ndarray  # (rows, cols) float64, CE in metric units (dB for PSNR), 0 where no effect
    effect_raw: np.ndarray  # unthresholded estimate M0 - mean
    stderr: np.ndarray  # standard error of the estimate (NaN with < 2 samples)
    ci_low: np.ndarray
    ci_high: np.ndarray
    counts: np.ndarray  # samples behind each estimate
    classification: np.ndarray  # int8: +1 helps the ROI, -1 hurts it, 0 no effect
    roi_mask: np.ndarray  # bool: the ROI's own blocks (left out of all counts)
    roi: Roi
    block: int
    scale: int
    input_shape: tuple[int, int]
    output_shape: tuple[int, int]
    baseline_metric: float
    metric: str = "psnr"
    unit: str = "dB"
    meta: dict[str, Any] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    # --- derived numbers -----------------------------------------------------------------
    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, cols) of the block grid."""
        return tuple(self.effect.shape)

    @property
    def computed(self) -> np.ndarray:
        """Blocks with at least one sample (all of them unless the run was restricted)."""
        return self.counts > 0

    def block_counts(self) -> dict[str, int]:
        """Blocks outside the ROI (and computed) per class: positive, negative, zero."""
        outside = ~self.roi_mask & self.computed
        c = self.classification[outside]
        return {"positive": int((c > 0).sum()), "negative": int((c < 0).sum()), "zero": int((c == 0).sum())}

    def block_distances(self) -> np.ndarray:
        """(rows, cols) distances (output pixels) from each block's centre to the ROI's centre."""
        return block_distances(self.grid_shape, self.block, self.output_shape, self.roi)

    def summary(self) -> dict[str, Any]:
        """The numbers of summary.json: counts and shares per class, total and extreme effects, reach (output pixels),
        and ``meta``."""
        counts = self.block_counts()
        total = max(1, sum(counts.values()))
        outside = ~self.roi_mask & self.computed
        eff = np.where(outside, self.effect, np.nan)
        out: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "metric": self.metric,
            "unit": self.unit,
            "baseline_metric": self.baseline_metric,
            "roi": self.roi.as_list(),
            "block": self.block,
            "scale": self.scale,
            "grid_shape": list(self.grid_shape),
            "blocks_outside_roi": total,
            "counts": counts,
            "shares": {k: v / total for k, v in counts.items()},
            "total_positive_effect": float(np.nansum(np.where(eff > 0, eff, 0))),
            "total_negative_effect": float(np.nansum(np.where(eff < 0, eff, 0))),
        }
        if np.isfinite(eff).any():
            imax, imin = np.nanargmax(eff), np.nanargmin(eff)
            rmax, cmax = np.unravel_index(imax, eff.shape)
            rmin, cmin = np.unravel_index(imin, eff.shape)
            out["effect_max"] = {"value": float(eff[rmax, cmax]), "block": [int(rmax), int(cmax)]}
            out["effect_min"] = {"value": float(eff[rmin, cmin]), "block": [int(rmin), int(cmin)]}
            out["effect_range"] = float(eff[rmax, cmax] - eff[rmin, cmin])
        # how far effects reach: distance (output pixels) from the ROI centre to effective blocks
        d = self.block_distances()[(self.classification != 0) & outside]
        if len(d):
            out["reach_px"] = {"max": float(np.max(d)), "mean": float(np.mean(d))}
        else:
            out["reach_px"] = {"max": 0.0, "mean": 0.0}
        out.update({k: v for k, v in self.meta.items() if k not in out})
        return out

    def to_frame(self):
        """The map as a pandas DataFrame, one row per block of the grid: ``row``, ``col``, the block's box in output
        pixels (``top``, ``left``, ``bottom``, ``right``), ``effect`` (thresholded, metric units), ``effect_raw``,
        ``stderr``, ``ci_low``, ``ci_high``, ``n`` (samples), ``class`` (+1 helps the ROI, -1 hurts it, 0 none),
        ``in_roi``, ``computed`` and ``distance_px`` (block centre to ROI centre, output pixels): for a table or a
        plot of one's own (``df.pivot(index="row", columns="col", values="effect")`` is the map)."""
        import pandas as pd  # lazy: the causal core needs it only here

        rows, cols = self.grid_shape
        h, w = self.output_shape
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        top, left = r * self.block, c * self.block
        bottom, right = np.minimum(top + self.block, h), np.minimum(left + self.block, w)
        frame = {
            "row": r,
            "col": c,
            "top": top,
            "left": left,
            "bottom": bottom,
            "right": right,
            "effect": self.effect,
            "effect_raw": self.effect_raw,
            "stderr": self.stderr,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n": self.counts,
            "class": self.classification.astype(np.int8),
            "in_roi": self.roi_mask,
            "computed": self.computed,
            "distance_px": self.block_distances(),
        }
        return pd.DataFrame({k: np.asarray(v).ravel() for k, v in frame.items()})

    def plot(self, ax=None, kind: str = "panel", range="paper"):  # noqa: A002 - the setting's own name
        """Draw the map and return the matplotlib figure: ``kind="panel"`` (input, restored with the ROI and a
        zoomed inset, the map with its colour bar, the pie: the run folder's cem_panel), ``"overlay"`` (the
        map on the degraded input, ROI in green) or ``"pie"`` (blocks outside the ROI by effect sign), the
        last two into ``ax`` when given. ``range``: ``"paper"`` (the task's fixed colour range), ``"auto"``
        (the largest |CE|) or a number. A figure is shown by Jupyter as the cell's value; ``fig.savefig``
        writes it. Needs matplotlib, which the core itself never imports (:mod:`cem_lab.viz.result_figures`)."""
        from cem_lab.viz.result_figures import plot_result  # lazy: figures stay outside the plain-PyTorch core
        from cem_lab.viz.style import FigureStyle

        return plot_result(self, ax=ax, kind=kind, style=FigureStyle(range=range))

    # --- persistence -------------------------------------------------------------------------
    def save(self, folder) -> Path:
        """Write images/, cem.npz and summary.json atomically (:mod:`cem_lab.run_format`); the
        figures are drawn by :func:`cem_lab.viz.save_result_figures` (``cem_lab.save_result`` does both)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, img in self.images.items():
            save_image(img, folder / IMAGES_DIR / f"{name}.png")
        arrays = {k: getattr(self, k) for k in ARRAYS}
        write_cem_arrays(
            folder,
            {
                **arrays,
                "roi": np.array(self.roi.as_list()),
                "block": self.block,
                "scale": self.scale,
                "grid_shape": np.array(self.grid_shape),
                "input_shape": np.array(self.input_shape),
                "output_shape": np.array(self.output_shape),
                "baseline_metric": self.baseline_metric,
                "metric": self.metric,
                "unit": self.unit,
            },
        )
        write_summary(folder, self.summary())
        return folder

    @classmethod
    def load(cls, folder) -> CEMResult:
        """The result saved in ``folder`` (its summary.json as ``meta``, its images)."""
        folder = Path(folder)
        z = read_cem_arrays(folder)
        res = cls(
            **{k: z[k] for k in ARRAYS},
            roi=Roi(*[int(v) for v in z["roi"]]),
            block=int(z["block"]),
            scale=int(z["scale"]),
            input_shape=tuple(int(v) for v in z["input_shape"]),
            output_shape=tuple(int(v) for v in z["output_shape"]),
            baseline_metric=float(z["baseline_metric"]),
            metric=str(z["metric"]),
            unit=str(z["unit"]),
        )
        summary = read_summary(folder)
        if summary is not None:
            res.meta = summary
        images = folder / IMAGES_DIR
        if images.is_dir():
            res.images = {p.stem: load_image(p) for p in sorted(images.glob("*.png"))}
        return res

    def __repr__(self) -> str:  # short, for notebooks
        c = self.block_counts()
        return (
            f"CEMResult(grid={self.grid_shape}, roi={self.roi.as_list()}, block={self.block}, "
            f"baseline={self.baseline_metric:.3f} {self.unit}, +{c['positive']} -{c['negative']} 0:{c['zero']})"
        )
