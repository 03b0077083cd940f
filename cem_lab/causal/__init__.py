"""The causal core: block grid, interventions, estimators, dependency region, settings, recompute
strategies, resume state, job, executors, result and the ROI atlas, and the causal effects of a layer's channels
(no figures: :mod:`cem_lab.api`)."""

from cem_lab.causal.channels import ChannelError, ChannelJob, ChannelResult, layer_outputs
from cem_lab.causal.errors import ModelOutputError, RunFolderError
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
from cem_lab.causal.executors import BatchInfo, LocalExecutor, UnitExecutor
from cem_lab.causal.grid import BlockGrid, GeometryError, Roi
from cem_lab.causal.interventions import BaselineIntervention, Intervention, LVIntervention, draw_rng, make_intervention
from cem_lab.causal.job import CEMJob
from cem_lab.causal.region import DependencyRegion, dependency_region
from cem_lab.causal.result import CEMResult
from cem_lab.causal.run import compute_cem, prepare_cem, run_cem
from cem_lab.causal.settings import CEMSettings
from cem_lab.run_format import FORMAT_VERSION

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
    "LocalExecutor",
    "UnitExecutor",
    "CEMSettings",
    "CEMJob",
    "ChannelError",
    "ChannelJob",
    "ChannelResult",
    "layer_outputs",
    "ModelOutputError",
    "RunFolderError",
    "compute_cem",
    "prepare_cem",
    "run_cem",
]
