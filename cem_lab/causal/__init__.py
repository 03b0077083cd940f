"""The causal core: block grid, interventions, estimators, dependency region, runner, result."""

from cem_lab.causal.estimators import (
    AdaptiveEstimator,
    BlockStats,
    CoarseToFineEstimator,
    Estimate,
    Estimator,
    ExhaustiveEstimator,
    Stage,
    classify,
    make_estimator,
)
from cem_lab.causal.grid import BlockGrid, GeometryError, Roi
from cem_lab.causal.interventions import BaselineIntervention, Intervention, LVIntervention, draw_rng, make_intervention
from cem_lab.causal.region import DependencyRegion, dependency_region
from cem_lab.causal.result import FORMAT_VERSION, CEMResult
from cem_lab.causal.runner import BatchInfo, CEMJob, ModelOutputError, RunFolderError, compute_cem, prepare_cem, run_cem

__all__ = [
    "AdaptiveEstimator",
    "BlockStats",
    "CoarseToFineEstimator",
    "Estimate",
    "Estimator",
    "ExhaustiveEstimator",
    "Stage",
    "classify",
    "make_estimator",
    "BlockGrid",
    "GeometryError",
    "Roi",
    "BaselineIntervention",
    "Intervention",
    "LVIntervention",
    "draw_rng",
    "make_intervention",
    "DependencyRegion",
    "dependency_region",
    "FORMAT_VERSION",
    "CEMResult",
    "BatchInfo",
    "CEMJob",
    "ModelOutputError",
    "RunFolderError",
    "compute_cem",
    "prepare_cem",
    "run_cem",
]
