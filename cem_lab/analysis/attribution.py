"""Reading a finished `cem-attribution` run folder (it never recomputes).

A run folder holds (format version 1):

- ``attribution.json``: ``format_version``, ``methods``, ``settings``, the ROI metric and the
  objective values, LAM / IG completeness deltas, the AUC of every deletion / insertion curve
  (``faithfulness[intervention]["methods"][method]``), the Spearman rank correlation of every pair
  of methods (``rank_correlation["lam~cem"]``), the CEM's sign test per intervention, the share of
  the image each map marks (``shares_marked[method]["50"]`` / ``["90"]``), LAM's diffusion index of each map
  (``diffusion_index[method]["blocks"]`` outside the ROI, ``["pixels"]`` for the gradient methods; absent in
  runs written before it; :mod:`cem_lab.attribution.diffusion`), the figures;
- ``attribution.npz``: per method ``<method>/block_abs``, ``<method>/block_signed`` (rows, cols),
  ``<method>/pixel_map`` (h, w) and ``<method>/ranking``; per curve
  ``curves/<intervention>/<method>/<deletion|insertion>/{counts,fractions,values}``; per sign test
  ``sign_test/<intervention>/{blocks,deltas}``; and ``roi``, ``block``, ``scale``, ``roi_mask``,
  ``input_shape``, ``output_shape``, ``format_version``;
- ``cem/``: the CEM's own run folder (:mod:`cem_lab.causal.result`) when it was computed here;
- ``figures/attribution_panel.png``, ``figures/deletion_curves.png``; ``config.yaml``, ``.hydra/``,
  ``attribution.log``.

JSON numbers that are not finite (a correlation of a constant map, a sign test without negative
blocks) are written as ``null``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cem_lab.errors import InputError, MissingFileError

FORMAT_VERSION = 1
RESULT_JSON = "attribution.json"
RESULT_NPZ = "attribution.npz"


@dataclass
class AttributionRun:
    """A finished `cem-attribution` run folder: its summary (attribution.json) and arrays (attribution.npz)."""

    folder: Path
    summary: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(repr=False)

    @property
    def methods(self) -> list[str]:
        """The methods the run mapped (lam, ig, saliency, cem)."""
        return list(self.summary["methods"])

    def block_map(self, method: str, signed: bool = False) -> np.ndarray:
        """The (rows, cols) block map of ``method``: summed |attribution|, or the signed sum."""
        return self.arrays[f"{method}/{'block_signed' if signed else 'block_abs'}"]

    def pixel_map(self, method: str) -> np.ndarray:
        """The per-pixel map of a gradient method on the input grid."""
        return self.arrays[f"{method}/pixel_map"]

    def curve(self, intervention: str, method: str, kind: str = "deletion") -> dict[str, np.ndarray]:
        """A deletion or insertion curve: blocks replaced (``counts``, ``fractions``) and the ROI metric (``values``)."""
        prefix = f"curves/{intervention}/{method}/{kind}/"
        return {k: self.arrays[prefix + k] for k in ("counts", "fractions", "values")}

    def auc(self, intervention: str, method: str, kind: str = "deletion") -> float:
        """The area under a deletion or insertion curve (NaN when the run could not compute it)."""
        value = self.summary["faithfulness"][intervention]["methods"][method][f"{kind}_auc"]
        return float("nan") if value is None else float(value)

    def diffusion_index(self, method: str, where: str = "blocks") -> float:
        """LAM's diffusion index of ``method``'s map: ``where="blocks"`` (outside the ROI) or ``"pixels"``;
        NaN when the run has none (the CEM's pixels, a run written before the index, a map without mass)."""
        if where not in ("blocks", "pixels"):
            raise InputError(f"where must be 'blocks' or 'pixels', got {where!r}")
        value = (self.summary.get("diffusion_index") or {}).get(method, {}).get(where)
        return float("nan") if value is None else float(value)

    def rank_correlation(self, a: str, b: str) -> float:
        """Spearman's rho of the block rankings of methods ``a`` and ``b`` (either order)."""
        rc = self.summary["rank_correlation"]
        entry = rc.get(f"{a}~{b}") or rc.get(f"{b}~{a}")
        if entry is None:
            raise KeyError(f"no rank correlation of {a} and {b} in {self.folder}")
        return float("nan") if entry["rho"] is None else float(entry["rho"])


def load_attribution(folder: str | Path) -> AttributionRun:
    """The numbers of a finished `cem-attribution` run folder."""
    folder = Path(folder)
    js, npz = folder / RESULT_JSON, folder / RESULT_NPZ
    if not js.is_file() or not npz.is_file():
        missing = [p.name for p in (js, npz) if not p.is_file()]
        raise MissingFileError(f"no finished cem-attribution run in {folder}: {', '.join(missing)} missing")
    summary = json.loads(js.read_text())
    version = int(summary.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise InputError(
            f"{js} has format version {version}; this cem_lab reads up to {FORMAT_VERSION}: upgrade cem_lab"
        )
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return AttributionRun(folder, summary, arrays)
