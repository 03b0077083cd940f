"""Gradient attributions of a ROI on the CEM's block grid, and faithfulness checks of block maps.

    from cem_lab.attribution import LAM
    amap = LAM(model).attribute(x, roi=(152, 96, 32), block=8)   # x: (1, 3, h, w) in [0, 1]
    amap.block_abs          # (rows, cols), the grid of a CE map with the same ROI and block

- :class:`LAM` (Local Attribution Maps, Gu & Dong 2021), implemented from the paper;
- :class:`Saliency` and :class:`IntegratedGradients` (Captum's IG);
- the ROI objective they differentiate (:class:`RoiObjective`: LAM's gradient magnitude, or
  ``"roi_sum"``);
- the effective receptive field of a ROI over a population of images (:func:`effective_receptive_field`:
  per-image |gradient| maps, area ratios and mass radii with intervals);
- LAM's diffusion index of any map (:func:`diffusion_index`, from the Gini coefficient :func:`gini`);
- deletion / insertion curves, Spearman rank correlation and the sign test of any block map
  (LAM, IG, saliency or a CE map), given a ``metric_after(blocks)`` callable
  (:func:`replace_blocks_metric` builds one from cem_lab's interventions).

Part of the core: no Lightning, Hydra or W&B. Captum is needed only by IntegratedGradients.
"""

from cem_lab.attribution.base import AttributionError, AttributionMap, aggregate_blocks, rank_blocks
from cem_lab.attribution.diffusion import diffusion_index, gini
from cem_lab.attribution.erf import ERFResult, effective_receptive_field
from cem_lab.attribution.faithfulness import (
    Curve,
    RankCorrelation,
    SignTest,
    curve_auc,
    deletion_curve,
    insertion_curve,
    rank_correlation,
    sign_test,
)
from cem_lab.attribution.gradients import IntegratedGradients, Saliency
from cem_lab.attribution.lam import LAM, blur_path
from cem_lab.attribution.objective import RoiObjective, make_objective
from cem_lab.attribution.replacement import BlockReplacementMetric, replace_blocks_metric

__all__ = [
    "AttributionError",
    "AttributionMap",
    "aggregate_blocks",
    "Curve",
    "RankCorrelation",
    "SignTest",
    "curve_auc",
    "diffusion_index",
    "effective_receptive_field",
    "ERFResult",
    "gini",
    "deletion_curve",
    "insertion_curve",
    "rank_blocks",
    "rank_correlation",
    "sign_test",
    "IntegratedGradients",
    "Saliency",
    "LAM",
    "blur_path",
    "RoiObjective",
    "make_objective",
    "BlockReplacementMetric",
    "replace_blocks_metric",
]
