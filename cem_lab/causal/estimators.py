"""Monte Carlo estimators of the causal effect of each block.

An estimator is a short sequence of *stages*; each stage asks for ``samples`` interventions on
each of a set of blocks, with sample indices starting at ``first_sample`` (so every draw has its
own seed). Per-block running statistics (count, mean, M2, max deviation from the
un-intervened metric) are updated in plan order, which makes results independent of batch size
and resumable from a checkpoint.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import stats as sps


class EstimatorError(ValueError):
    pass


@dataclass(frozen=True)
class Stage:
    """``samples`` interventions on each block of ``blocks`` (flat indices, ascending)."""

    name: str
    blocks: np.ndarray
    samples: int
    first_sample: int = 0

    @property
    def n_items(self) -> int:
        return int(len(self.blocks)) * self.samples

    def item(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Block index and sample index of plan items ``k`` (block-major order)."""
        k = np.asarray(k)
        return self.blocks[k // self.samples], self.first_sample + k % self.samples


class BlockStats:
    """Welford running statistics of the metric per block, plus max |M0 - M|."""

    def __init__(self, n_blocks: int):
        self.n = np.zeros(n_blocks, dtype=np.int64)
        self.mean = np.zeros(n_blocks, dtype=np.float64)
        self.m2 = np.zeros(n_blocks, dtype=np.float64)
        self.max_dev = np.zeros(n_blocks, dtype=np.float64)

    def update(self, blocks: np.ndarray, values: np.ndarray, baseline: float) -> None:
        """Add samples in the given order (sequential, so the result is order-exact)."""
        for b, v in zip(np.asarray(blocks).tolist(), np.asarray(values, dtype=np.float64).tolist()):
            n = self.n[b] + 1
            delta = v - self.mean[b]
            self.mean[b] += delta / n
            self.m2[b] += delta * (v - self.mean[b])
            self.n[b] = n
            dev = abs(baseline - v)
            if not dev <= self.max_dev[b]:  # also propagates NaN
                self.max_dev[b] = dev

    def variance(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 1, self.m2 / np.maximum(self.n - 1, 1), np.nan)

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}n": self.n, f"{prefix}mean": self.mean, f"{prefix}m2": self.m2,
                f"{prefix}max_dev": self.max_dev}

    @classmethod
    def from_state(cls, state: dict, prefix: str) -> "BlockStats":
        s = cls(len(state[f"{prefix}n"]))
        s.n = np.array(state[f"{prefix}n"], dtype=np.int64)
        s.mean = np.array(state[f"{prefix}mean"], dtype=np.float64)
        s.m2 = np.array(state[f"{prefix}m2"], dtype=np.float64)
        s.max_dev = np.array(state[f"{prefix}max_dev"], dtype=np.float64)
        return s


@dataclass
class Estimate:
    """Per-block estimate before classification: CE = M0 - mean, its spread and sample count."""

    effect: np.ndarray     # float64, M0 - mean of the deciding stage (0 where declared no-effect)
    stderr: np.ndarray     # standard error of the mean (NaN where n < 2)
    n: np.ndarray          # samples behind each estimate
    decided_zero: np.ndarray  # bool: declared no-effect by a screening stage (coarse U set)


class Estimator(ABC):
    name: str

    @abstractmethod
    def first_stage(self, n_blocks: int) -> Stage: ...

    @abstractmethod
    def next_stage(self, done: list[Stage], stats: dict[str, BlockStats], baseline: float) -> Optional[Stage]: ...

    @abstractmethod
    def estimate(self, stats: dict[str, BlockStats], baseline: float) -> Estimate: ...

    @abstractmethod
    def describe(self) -> dict: ...


class ExhaustiveEstimator(Estimator):
    """T interventions on every block; CE = M0 - mean over the T samples."""

    name = "exhaustive"

    def __init__(self, samples: int = 50):
        if samples < 1:
            raise EstimatorError(f"exhaustive: samples must be >= 1, got {samples}")
        self.samples = int(samples)

    def first_stage(self, n_blocks):
        return Stage("exhaustive", np.arange(n_blocks), self.samples, 0)

    def next_stage(self, done, stats, baseline):
        return None

    def estimate(self, stats, baseline):
        s = stats["exhaustive"]
        return Estimate(baseline - s.mean, np.sqrt(s.variance() / np.maximum(s.n, 1)), s.n.copy(),
                        np.zeros(len(s.n), dtype=bool))

    def describe(self):
        return {"name": self.name, "samples": self.samples}


class CoarseToFineEstimator(Estimator):
    """The paper's acceleration (method doc, section 4).

    Coarse: T_c samples per block; a block whose coarse metrics all stay within ``tol`` of M0
    is declared no-effect (CE = 0). Fine: the others get T_f fresh samples and CE is the mean
    over the fine samples only (as the reference).
    """

    name = "coarse_to_fine"

    def __init__(self, coarse: int = 3, fine: int = 50, tol: float = 0.01):
        if coarse < 1 or fine < 1:
            raise EstimatorError(f"coarse_to_fine: coarse and fine must be >= 1, got {coarse}, {fine}")
        if tol < 0:
            raise EstimatorError(f"coarse_to_fine: tol must be >= 0, got {tol}")
        self.coarse, self.fine, self.tol = int(coarse), int(fine), float(tol)

    def first_stage(self, n_blocks):
        return Stage("coarse", np.arange(n_blocks), self.coarse, 0)

    def screened(self, coarse: BlockStats) -> np.ndarray:
        """Blocks of S: at least one coarse sample deviates from M0 by tol or more."""
        return ~(coarse.max_dev < self.tol)

    def next_stage(self, done, stats, baseline):
        if len(done) == 1:
            return Stage("fine", np.flatnonzero(self.screened(stats["coarse"])), self.fine, self.coarse)
        return None

    def estimate(self, stats, baseline):
        c = stats["coarse"]
        f = stats.get("fine")
        s_set = self.screened(c)
        effect = np.zeros(len(c.n))
        stderr = np.sqrt(c.variance() / np.maximum(c.n, 1))
        n = c.n.copy()
        if f is not None:
            effect[s_set] = baseline - f.mean[s_set]
            stderr[s_set] = np.sqrt(f.variance()[s_set] / np.maximum(f.n[s_set], 1))
            n[s_set] = f.n[s_set]
        return Estimate(effect, stderr, n, ~s_set)

    def describe(self):
        return {"name": self.name, "coarse": self.coarse, "fine": self.fine, "tol": self.tol}


def make_estimator(name: str = "coarse_to_fine", **kwargs) -> Estimator:
    kinds = {"coarse_to_fine": CoarseToFineEstimator, "exhaustive": ExhaustiveEstimator}
    if name not in kinds:
        raise EstimatorError(f"unknown estimator {name!r}; choose one of {sorted(kinds)}")
    return kinds[name](**kwargs)


def classify(est: Estimate, tol: float = 0.01, rule: str = "tol", level: float = 0.95
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Threshold and classify effects.

    ``rule="tol"`` (reference): any |CE| < tol is set to 0; the class is the sign.
    ``rule="significance"``: non-zero only where the ``level`` confidence interval excludes 0
    and |CE| >= tol. Returns (effect, classification int8, ci_low, ci_high); ``effect`` is 0
    wherever the class is 0.
    """
    if rule not in ("tol", "significance"):
        raise EstimatorError(f"unknown classification rule {rule!r}; choose 'tol' or 'significance'")
    dof = np.maximum(est.n - 1, 1)
    tq = sps.t.ppf(0.5 + level / 2, dof)
    with np.errstate(invalid="ignore"):
        half = np.where(est.n > 1, tq * est.stderr, np.inf)
    ci_low, ci_high = est.effect - half, est.effect + half
    keep = (np.abs(est.effect) >= tol) & ~est.decided_zero
    if rule == "significance":
        keep &= (ci_low > 0) | (ci_high < 0)
    effect = np.where(keep, est.effect, 0.0)
    cls = np.sign(effect).astype(np.int8)
    return effect, cls, ci_low, ci_high
