"""The `cem-attribution` study, part 3: its run folder format, its files and its figures.

``attribution.npz`` (every map, curve and test), ``attribution.json`` (the summary, written last: its
presence marks a finished run; read both with :func:`cem_lab.analysis.attribution.load_attribution`),
``figures/attribution_panel.png`` and ``figures/deletion_curves.png``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cem_lab.images import to_uint8
from cem_lab.io import json_safe, write_json, write_npz

PROGRAM = "cem-attribution"
FORMAT_VERSION = 1
LABELS = {"lam": "LAM", "ig": "integrated gradients", "saliency": "saliency", "cem": "CEM"}
SHORT = {"lam": "LAM", "ig": "IG", "saliency": "saliency", "cem": "CEM"}
RESULT_JSON, RESULT_NPZ, LOG_FILE, CEM_DIR = "attribution.json", "attribution.npz", "attribution.log", "cem"
PANEL_FILE, CURVES_FILE = "attribution_panel.png", "deletion_curves.png"


def write_results(folder: Path, arrays: dict, summary: dict) -> dict:
    """``attribution.npz`` and then ``attribution.json`` (last: its presence marks a finished run);
    returns the summary as written (JSON-safe)."""
    write_npz(folder / RESULT_NPZ, **arrays)
    summary = json_safe(summary)
    write_json(folder / RESULT_JSON, summary)
    return summary


def save_figures(folder: Path, plan, cem, abs_maps, arrays, corr, shares, curves, baselines) -> dict[str, str]:
    """The panel of every map beside the input, and the deletion / insertion curves, in ``folder``; their paths."""
    # lazy: matplotlib (start-up time), only when figures are drawn
    from cem_lab.viz.attribution_figures import MapPanel, save_attribution_panel, save_deletion_curves, symmetric_bound
    from cem_lab.viz.cem_maps import TASK_BOUNDS  # lazy: matplotlib, only when figures are drawn
    from cem_lab.viz.style import current_style

    job, s = plan.job, plan.settings
    roi_mask = np.asarray(job.roi_mask, dtype=bool)
    panels = []
    for m in s.methods:
        sh = shares[m]
        marks = "marks " + " / ".join(format_share(sh[k]) for k in ("50", "90")) + " (50/90% of mass)"
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
            paper = float(cem.meta.get("display_bound") or TASK_BOUNDS.get(job.task.name, 1.0))
            bound = current_style().bound(paper, [values], [cem.roi_mask])  # figures.range
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


def format_share(share: float | None) -> str:
    """A share as a percentage: one decimal below 10 %, none above; ``n/a`` for none."""
    if share is None or not math.isfinite(share):
        return "n/a"
    return f"{100 * share:.1f}%" if share < 0.1 else f"{100 * share:.0f}%"
