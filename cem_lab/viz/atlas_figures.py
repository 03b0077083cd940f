"""The ROI atlas figure: over the restored image, every ROI coloured by its share of negative
blocks and by its mean effective distance (reach), and the distributions of both over the ROIs.

Small (dpi 100), written atomically, no global matplotlib state (:mod:`cem_lab.viz.canvas`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.patches import Rectangle

from cem_lab.viz.canvas import new_figure, save_figure


def save_atlas_figure(path: str | Path, atlas) -> str:
    """Draw the atlas figure (every ROI's negative share and effective distance over the restored image) at ``path``."""
    rows = atlas.table()
    first = atlas.results[0]
    image = first.images.get("restored")
    if image is None:
        image = np.full((*first.output_shape, 3), 255, dtype=np.uint8)
    neg = np.array([r["share_negative"] for r in rows])
    reach = np.array([r["reach_mean_px"] for r in rows])
    fig = new_figure(11, 7.6, dpi=100)
    panels = [
        # an all-zero panel keeps a readable 0..1 scale (a 0..1e-9 one printed an offset label and nothing else)
        ("share of negative blocks", neg, "Blues", Normalize(0, float(neg.max()) or 1.0)),
        ("mean effective distance (output px)", reach, "viridis", Normalize(0, float(reach.max()) or 1.0)),
    ]
    for i, (label, values, cmap, norm) in enumerate(panels):
        ax = fig.add_subplot(2, 2, 1 + i)
        ax.imshow(image)
        cm = colormaps[cmap]
        for r, v in zip(atlas.rois, values):
            ax.add_patch(
                Rectangle(
                    (r.left, r.top), r.size, r.size, facecolor=cm(norm(v)), alpha=0.55, edgecolor="black", linewidth=0.5
                )
            )
        ax.set_title(f"{label}\nper ROI ({len(rows)} ROIs)", fontsize=9)
        ax.axis("off")
        fig.colorbar(ScalarMappable(norm=norm, cmap=cm), ax=ax, fraction=0.046, pad=0.02)
        hx = fig.add_subplot(2, 2, 3 + i)
        hx.hist(values, bins=min(20, max(5, len(values))), color=cm(0.7), edgecolor="black", linewidth=0.5)
        med = float(np.median(values))
        hx.axvline(med, color="black", linestyle="--", linewidth=1)
        hx.set_xlabel(label, fontsize=9)
        hx.set_ylabel("ROIs", fontsize=9)
        hx.set_title(
            f"median {med:.3g}, IQR {np.quantile(values, 0.25):.3g} to {np.quantile(values, 0.75):.3g}", fontsize=9
        )
    title = (
        f"ROI atlas: {atlas.meta.get('model', '')}, {len(rows)} ROIs, "
        f"{atlas.meta.get('forward_passes', 0):,} forward passes "
        f"({atlas.meta.get('saving', 1):.1f}x fewer than separate runs)"
    )
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.04, right=0.97, top=0.9, bottom=0.07, hspace=0.35, wspace=0.15)
    return save_figure(fig, path)
