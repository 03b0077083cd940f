"""Monte Carlo estimators of the causal effect of each block.

An estimator is a short sequence of *stages*; each stage asks for ``samples`` interventions on
each of a set of blocks, with sample indices starting at ``first_sample`` (so every draw has its
own seed). Per-block running statistics (count, mean, M2, max deviation from the
un-intervened metric) are updated in plan order, which makes results independent of batch size
and resumable from a checkpoint.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from scipy.special import stdtrit  # Student's t quantile; scipy.stats costs ~1 s of every start

from cem_lab.errors import CemLabError

#: the reference estimator's settings (the paper's T_c, T_f and tol, in dB): the estimators' defaults and
#: :class:`~cem_lab.causal.settings.CEMSettings`'s, written here once
COARSE, FINE, TOL = 3, 50, 0.01
#: the adaptive estimator's own options and their defaults (conf/cem/adaptive.yaml explains each)
ADAPTIVE_DEFAULTS = {
    "round_size": 10,
    "growth": 2.0,
    "max_samples": 160,
    "half_width": 0.0025,
    "settled_half_width": 0.0125,
    "level": 0.95,
    "roi_blocks": "reference",
}


class EstimatorError(CemLabError, ValueError):
    """Settings an estimator cannot run with."""


@dataclass(frozen=True)
class Stage:
    """``samples`` interventions on each block of ``blocks`` (flat indices, ascending)."""

    name: str
    blocks: np.ndarray
    samples: int
    first_sample: int = 0

    @property
    def n_items(self) -> int:
        """Number of interventions in the stage: blocks x samples."""
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
        """Per-block sample variance (ddof 1); NaN where fewer than two samples."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 1, self.m2 / np.maximum(self.n - 1, 1), np.nan)

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        """The statistics as arrays keyed ``{prefix}n``, ``{prefix}mean``, ``{prefix}m2``, ``{prefix}max_dev``."""
        return {
            f"{prefix}n": self.n,
            f"{prefix}mean": self.mean,
            f"{prefix}m2": self.m2,
            f"{prefix}max_dev": self.max_dev,
        }

    @classmethod
    def from_state(cls, state: dict, prefix: str) -> BlockStats:
        """Statistics rebuilt from the arrays of :meth:`state`."""
        s = cls(len(state[f"{prefix}n"]))
        s.n = np.array(state[f"{prefix}n"], dtype=np.int64)
        s.mean = np.array(state[f"{prefix}mean"], dtype=np.float64)
        s.m2 = np.array(state[f"{prefix}m2"], dtype=np.float64)
        s.max_dev = np.array(state[f"{prefix}max_dev"], dtype=np.float64)
        return s


@dataclass
class Estimate:
    """Per-block estimate before classification: CE = M0 - mean, its spread and sample count."""

    effect: np.ndarray  # float64, M0 - mean of the deciding stage (0 where declared no-effect)
    stderr: np.ndarray  # standard error of the mean (NaN where n < 2)
    n: np.ndarray  # samples behind each estimate
    decided_zero: np.ndarray  # bool: declared no-effect by a screening stage (coarse U set)


def take_estimate(
    effect: np.ndarray, stderr: np.ndarray, n: np.ndarray, s: BlockStats, mask: np.ndarray, baseline: float
) -> None:
    """Blocks ``mask`` take their estimate from ``s``: CE = M0 - mean, its standard error, its count."""
    effect[mask] = baseline - s.mean[mask]
    stderr[mask] = np.sqrt(s.variance()[mask] / np.maximum(s.n[mask], 1))
    n[mask] = s.n[mask]


class Estimator(ABC):
    """A plan of stages and the per-block CE estimate from their statistics."""

    name: str

    def bind(self, roi_mask: np.ndarray) -> None:  # noqa: B027 (an optional hook: most estimators ignore it)
        """Told which blocks are the ROI's own (flat boolean mask) before the first stage."""

    @abstractmethod
    def first_stage(self, n_blocks: int) -> Stage:
        """The stage that starts a run on ``n_blocks`` blocks."""

    @abstractmethod
    def next_stage(self, done: list[Stage], stats: dict[str, BlockStats], baseline: float) -> Stage | None:
        """The stage after ``done``, from their statistics (by stage name) and M0; None when the plan is complete."""

    def most_items_after(self, current: Stage, blocks: np.ndarray, n_blocks: int) -> int | None:
        """At most how many items the stages after ``current`` can ask for, when only ``blocks`` (flat indices of
        the ``n_blocks``) are computed: the run's remaining work for its overall ETA. None: no bound known (the
        default, for an estimator that does not say)."""
        return None

    @abstractmethod
    def estimate(self, stats: dict[str, BlockStats], baseline: float) -> Estimate:
        """The per-block CE from the finished stages' statistics (by stage name) and M0."""

    @abstractmethod
    def describe(self) -> dict:
        """The estimator's name and settings, as recorded in summary.json and hashed into the fingerprint."""


class ExhaustiveEstimator(Estimator):
    """T interventions on every block; CE = M0 - mean over the T samples."""

    name = "exhaustive"

    def __init__(self, samples: int = FINE):
        if samples < 1:
            raise EstimatorError(f"exhaustive: samples must be >= 1, got {samples}")
        self.samples = int(samples)

    def first_stage(self, n_blocks):
        """All blocks, ``samples`` draws each."""
        return Stage("exhaustive", np.arange(n_blocks), self.samples, 0)

    def next_stage(self, done, stats, baseline):
        """None: one stage is all."""
        return None

    def most_items_after(self, current, blocks, n_blocks):
        """0: one stage is all."""
        return 0

    def estimate(self, stats, baseline):
        """CE = M0 - mean of the single stage; no block declared zero."""
        s = stats["exhaustive"]
        return Estimate(
            baseline - s.mean, np.sqrt(s.variance() / np.maximum(s.n, 1)), s.n.copy(), np.zeros(len(s.n), dtype=bool)
        )

    def describe(self):
        """Name and samples."""
        return {"name": self.name, "samples": self.samples}


class CoarseToFineEstimator(Estimator):
    """The paper's acceleration (method doc, section 4).

    Coarse: T_c samples per block; a block whose coarse metrics all stay within ``tol`` of M0
    is declared no-effect (CE = 0). Fine: the others get T_f fresh samples and CE is the mean
    over the fine samples only (as the reference).
    """

    name = "coarse_to_fine"

    def __init__(self, coarse: int = COARSE, fine: int = FINE, tol: float = TOL):
        if coarse < 1 or fine < 1:
            raise EstimatorError(f"coarse_to_fine: coarse and fine must be >= 1, got {coarse}, {fine}")
        if tol < 0:
            raise EstimatorError(f"coarse_to_fine: tol must be >= 0, got {tol}")
        self.coarse, self.fine, self.tol = int(coarse), int(fine), float(tol)

    def first_stage(self, n_blocks):
        """All blocks, ``coarse`` draws each."""
        return Stage("coarse", np.arange(n_blocks), self.coarse, 0)

    def screened(self, coarse: BlockStats) -> np.ndarray:
        """Blocks of S: at least one coarse sample deviates from M0 by tol or more."""
        return ~(coarse.max_dev < self.tol)

    def next_stage(self, done, stats, baseline):
        """After the coarse stage, ``fine`` draws for the screened blocks; then None."""
        if len(done) == 1:
            return Stage("fine", np.flatnonzero(self.screened(stats["coarse"])), self.fine, self.coarse)
        return None

    def most_items_after(self, current, blocks, n_blocks):
        """During the coarse stage: ``fine`` draws for every block (all may be screened); then 0."""
        return len(blocks) * self.fine if current.name == "coarse" else 0

    def estimate(self, stats, baseline):
        """CE from the fine draws for screened blocks, 0 (decided zero) for the others."""
        c = stats["coarse"]
        f = stats.get("fine")
        s_set = self.screened(c)
        effect = np.zeros(len(c.n))
        stderr = np.sqrt(c.variance() / np.maximum(c.n, 1))
        n = c.n.copy()
        if f is not None:
            take_estimate(effect, stderr, n, f, s_set, baseline)
        return Estimate(effect, stderr, n, ~s_set)

    def describe(self):
        """Name, coarse, fine and tol."""
        return {"name": self.name, "coarse": self.coarse, "fine": self.fine, "tol": self.tol}


def pooled(parts: list[BlockStats]) -> BlockStats:
    """The statistics of several sample sets of the same blocks taken together (Chan et al.'s
    pairwise combination of count, mean and M2; max deviation: the largest)."""
    out = BlockStats(len(parts[0].n))
    for s in parts:
        n = out.n + s.n
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = s.mean - out.mean
            frac = np.where(n > 0, s.n / np.maximum(n, 1), 0.0)
            out.mean = out.mean + delta * frac
            out.m2 = out.m2 + s.m2 + delta * delta * out.n * frac
        out.n = n
        out.max_dev = np.fmax(out.max_dev, s.max_dev)
    return out


class AdaptiveEstimator(Estimator):
    """Coarse screening as the paper's, then a sequential fine stage: each block outside the ROI
    draws in rounds until its effect is known to the precision asked, instead of T_f draws each.

    1. Coarse: ``coarse`` draws per block; blocks whose draws all stay within ``tol`` of M0 have no
       effect (as :class:`CoarseToFineEstimator`).
    2. The ROI's own blocks (``roi_blocks``): "reference" (default) gives them the reference's fine
       stage, exactly: ``fine`` draws with the same seeds, so their values equal the reference
       estimator's; "settle" lets them draw in rounds until their class alone is settled; "coarse"
       gives them their coarse draws only (their effect is the coarse mean). The ROI's blocks are
       drawn as the ROI and left out of every count, so the cheaper treatments change no figure.
    3. Fine, in rounds whose totals grow by ``growth`` (10, 20, 40, 80, 160 by default; sample
       indices continue from ``coarse``, so every draw keeps its (seed, block, sample) seed and the
       first 50 are the reference's own draws). After each round, every block still drawing gets the
       t-interval of its effect (the fine draws so far, as the reference uses the fine draws only)
       at the corrected level ``1 - (1 - level) / K``, K the number of rounds, the most looks a block
       can have. It stops when that interval
       - has a half-width under ``half_width`` (its value is known to the precision asked), or
       - lies wholly above +tol, wholly below -tol or wholly inside (-tol, tol) (its class is
         settled) and has a half-width under ``settled_half_width`` (its value is known well
         enough for a block whose class is sure), or
       - it has ``max_samples`` fine draws.
       With ``settled_half_width: .inf`` a settled class alone stops a block: the cheapest rule,
       with the reference's classes but less precise values.
       The correction is Bonferroni over the looks (alpha spending with equal shares): the chance
       that any of a block's K intervals misses its true effect is at most 1 - level, so a block
       stops with a wrong settled class, or with a value further than its interval says, with
       probability at most 1 - level, however many times it was looked at.

    Why the precision rule and not the class alone: a block whose class is settled after 10 draws
    may still be 0.01 dB off, more than the reference's 50 draws allow; the benchmark
    (``benchmarks/bench_estimators.py``) measures both against a T = 500 run.

    Every decision depends only on the statistics of finished rounds, so the plan, and the map,
    do not depend on the batch size, the number of processes or where a run was resumed.
    """

    name = "adaptive"

    def __init__(
        self,
        coarse: int = COARSE,
        round_size: int = ADAPTIVE_DEFAULTS["round_size"],
        max_samples: int = ADAPTIVE_DEFAULTS["max_samples"],
        half_width: float = ADAPTIVE_DEFAULTS["half_width"],
        settled_half_width: float = ADAPTIVE_DEFAULTS["settled_half_width"],
        tol: float = TOL,
        level: float = ADAPTIVE_DEFAULTS["level"],
        roi_blocks: str = ADAPTIVE_DEFAULTS["roi_blocks"],
        fine: int = FINE,
        growth: float = ADAPTIVE_DEFAULTS["growth"],
    ):
        if isinstance(coarse, bool) or int(coarse) < 1:
            raise EstimatorError(f"adaptive: coarse must be >= 1, got {coarse}")
        if isinstance(round_size, bool) or int(round_size) < 2:
            raise EstimatorError(f"adaptive: round_size must be >= 2 (a round must give a variance), got {round_size}")
        if isinstance(max_samples, bool) or int(max_samples) < int(coarse):
            raise EstimatorError(
                f"adaptive: max_samples (T_max, {max_samples}) must be at least the coarse "
                f"stage's T_c ({coarse}); raise cem.max_samples"
            )
        if int(max_samples) < int(round_size):
            raise EstimatorError(
                f"adaptive: max_samples (T_max of the fine stage, {max_samples}) must be at least "
                f"one round ({round_size}); raise cem.max_samples or lower cem.round_size"
            )
        if not float(half_width) > 0:
            raise EstimatorError(
                f"adaptive: half_width must be > 0 (the target half-width of each block's "
                f"interval, in the metric's unit), got {half_width}"
            )
        if not float(settled_half_width) >= float(half_width):
            raise EstimatorError(
                f"adaptive: settled_half_width ({settled_half_width}) must be >= half_width "
                f"({half_width}); use .inf to stop on a settled class alone"
            )
        if tol < 0:
            raise EstimatorError(f"adaptive: tol must be >= 0, got {tol}")
        if not 0 < float(level) < 1:
            raise EstimatorError(f"adaptive: level must be in (0, 1), got {level}")
        if roi_blocks not in ("reference", "settle", "coarse"):
            raise EstimatorError(f"adaptive: roi_blocks must be 'reference', 'settle' or 'coarse', got {roi_blocks!r}")
        if isinstance(fine, bool) or int(fine) < 1:
            raise EstimatorError(f"adaptive: fine (the ROI blocks' reference draws) must be >= 1, got {fine}")
        if not float(growth) >= 1:
            raise EstimatorError(f"adaptive: growth (how the rounds' totals grow) must be >= 1, got {growth}")
        self.coarse, self.round_size, self.max_samples = int(coarse), int(round_size), int(max_samples)
        self.half_width, self.settled_half_width = float(half_width), float(settled_half_width)
        self.tol, self.level, self.roi_blocks = float(tol), float(level), roi_blocks
        self.fine, self.growth = int(fine), float(growth)
        totals = [self.round_size]
        while totals[-1] < self.max_samples:
            nxt = (
                totals[-1] + self.round_size
                if self.growth == 1
                else max(totals[-1] + 1, int(math.ceil(totals[-1] * self.growth)))
            )
            totals.append(min(nxt, self.max_samples))
        self.totals = totals
        self.looks = len(totals)
        self.roi = None

    def bind(self, roi_mask: np.ndarray) -> None:
        """Keep the ROI mask, which ``roi_blocks`` treats apart."""
        self.roi = np.asarray(roi_mask, dtype=bool).ravel()

    def _roi(self, n: int) -> np.ndarray:
        return self.roi if self.roi is not None and len(self.roi) == n else np.zeros(n, dtype=bool)

    def first_stage(self, n_blocks):
        """All blocks, ``coarse`` draws each."""
        return Stage("coarse", np.arange(n_blocks), self.coarse, 0)

    @staticmethod
    def _rounds(stats: dict[str, BlockStats]) -> list[str]:
        return sorted((k for k in stats if k.startswith("fine")), key=lambda k: int(k[4:]))

    def screened(self, coarse: BlockStats) -> np.ndarray:
        """Blocks of S: at least one coarse draw deviates from M0 by tol or more."""
        return ~(coarse.max_dev < self.tol)

    def sequential(self, coarse: BlockStats) -> np.ndarray:
        """Blocks of S that draw in rounds (all but the ROI's, unless roi_blocks is 'settle')."""
        s = self.screened(coarse)
        if self.roi_blocks != "settle":
            s &= ~self._roi(len(s))
        return s

    def interval(self, fine: BlockStats, baseline: float, level: float) -> tuple[np.ndarray, np.ndarray]:
        """The t-interval of each block's effect at ``level`` (infinite with fewer than 2 draws)."""
        effect = baseline - fine.mean
        with np.errstate(invalid="ignore", divide="ignore"):
            se = np.sqrt(fine.variance() / np.maximum(fine.n, 1))
            half = np.where(fine.n > 1, stdtrit(np.maximum(fine.n - 1, 1), 0.5 + level / 2) * se, np.inf)
        return effect - half, effect + half

    def settled(self, fine: BlockStats, baseline: float) -> np.ndarray:
        """Blocks whose corrected interval meets the precision asked (see the class docstring)."""
        lo, hi = self.interval(fine, baseline, 1 - (1 - self.level) / self.looks)
        t = self.tol
        with np.errstate(invalid="ignore"):
            half = (hi - lo) / 2
            cls = (lo > t) | (hi < -t) | ((lo > -t) & (hi < t))
            done = (half < self.half_width) | (cls & (half < self.settled_half_width))
            if self.roi_blocks == "settle":  # the ROI's blocks: their class alone
                done |= cls & self._roi(len(done))
        return done

    def next_stage(self, done, stats, baseline):
        """The ROI's reference stage if due, then the next fine round for the blocks not yet stopped; None when done."""
        c = stats["coarse"]
        names = [s.name for s in done]
        roi_s = self.screened(c) & self._roi(len(c.n))
        if self.roi_blocks == "reference" and "roi" not in names and roi_s.any():
            return Stage("roi", np.flatnonzero(roi_s), self.fine, self.coarse)
        rounds = [k for k in self._rounds(stats) if k in names]
        s_set = self.sequential(c)
        if not rounds:
            going = s_set
        else:
            fine = pooled([stats[k] for k in rounds])
            going = s_set & ~self.settled(fine, baseline) & (fine.n < self.max_samples)
        if len(rounds) >= len(self.totals):
            return None
        blocks = np.flatnonzero(going)
        if len(blocks) == 0:
            return None
        before = self.totals[len(rounds) - 1] if rounds else 0
        return Stage(f"fine{len(rounds) + 1}", blocks, self.totals[len(rounds)] - before, self.coarse + before)

    def most_items_after(self, current, blocks, n_blocks):
        """The ROI's reference stage (when due) and every round up to ``max_samples`` for each block that draws in
        rounds."""
        blocks = np.asarray(blocks, dtype=np.int64)
        roi = int(self._roi(n_blocks)[blocks].sum())
        rounds = len(blocks) - (roi if self.roi_blocks != "settle" else 0)
        if current.name == "coarse":
            return (roi * self.fine if self.roi_blocks == "reference" else 0) + rounds * self.totals[-1]
        done = int(current.name[4:]) if current.name.startswith("fine") else 0
        return rounds * (self.totals[-1] - (self.totals[done - 1] if done else 0))

    def estimate(self, stats, baseline):
        """CE from the pooled fine rounds (ROI blocks per ``roi_blocks``); 0 (decided zero) outside the screened set."""
        c = stats["coarse"]
        names = self._rounds(stats)
        f = pooled([stats[k] for k in names]) if names else None
        s_set = self.screened(c)
        effect = np.zeros(len(c.n))
        stderr = np.sqrt(c.variance() / np.maximum(c.n, 1))
        n = c.n.copy()
        roi = self._roi(len(c.n)) & s_set
        if self.roi_blocks == "coarse":  # the ROI's blocks: their coarse mean
            effect[roi] = baseline - c.mean[roi]
        if self.roi_blocks == "reference" and "roi" in stats:
            take_estimate(effect, stderr, n, stats["roi"], roi, baseline)
        if f is not None:
            take_estimate(effect, stderr, n, f, self.sequential(c), baseline)
        return Estimate(effect, stderr, n, ~s_set)

    def describe(self):
        """All settings, with the stopping rule and ROI treatment in words."""
        return {
            "name": self.name,
            "coarse": self.coarse,
            "round_size": self.round_size,
            "max_samples": self.max_samples,
            "growth": self.growth,
            "half_width": self.half_width,
            "settled_half_width": self.settled_half_width,
            "tol": self.tol,
            "level": self.level,
            "roi_blocks": self.roi_blocks,
            **({"fine": self.fine} if self.roi_blocks == "reference" else {}),
            "stopping": f"t-interval at level 1 - (1 - {self.level}) / {self.looks} (Bonferroni over "
            f"{self.looks} looks at {self.totals} fine draws): half-width < {self.half_width}, "
            f"or a settled class with half-width < {self.settled_half_width}, or "
            f"{self.max_samples} fine draws",
            "roi_treatment": {
                "reference": f"the reference's {self.fine} fine draws",
                "settle": "rounds until their class is settled",
                "coarse": "their coarse draws only",
            }[self.roi_blocks],
        }


def make_estimator(name: str = "coarse_to_fine", **kwargs) -> Estimator:
    """The estimator called ``name`` with its own keywords (the factory behind
    :meth:`CEMSettings.make_estimator <cem_lab.causal.settings.CEMSettings.make_estimator>`)."""
    kinds = {"coarse_to_fine": CoarseToFineEstimator, "exhaustive": ExhaustiveEstimator, "adaptive": AdaptiveEstimator}
    if name not in kinds:
        raise EstimatorError(f"unknown estimator {name!r}; choose one of {sorted(kinds)}")
    return kinds[name](**kwargs)


def classify(
    est: Estimate, tol: float = 0.01, rule: str = "tol", level: float = 0.95
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
    tq = stdtrit(dof, 0.5 + level / 2)
    with np.errstate(invalid="ignore"):
        half = np.where(est.n > 1, tq * est.stderr, np.inf)
    ci_low, ci_high = est.effect - half, est.effect + half
    keep = (np.abs(est.effect) >= tol) & ~est.decided_zero
    if rule == "significance":
        keep &= (ci_low > 0) | (ci_high < 0)
    effect = np.where(keep, est.effect, 0.0)
    cls = np.sign(effect).astype(np.int8)
    return effect, cls, ci_low, ci_high
