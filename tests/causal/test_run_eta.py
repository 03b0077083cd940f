"""The whole run's time left: each estimator bounds the work its later stages can ask for, the bound holds
(and is met when every block draws to the end), and a map's progress shows it from its first stage."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import ConvStack

from cem_lab import compute_cem
from cem_lab.causal.estimators import (
    AdaptiveEstimator,
    BlockStats,
    CoarseToFineEstimator,
    ExhaustiveEstimator,
)

N = 12
ROI = np.zeros(N, dtype=bool)
ROI[[5, 6]] = True


def _bounds_and_later_work(est, effects, sd, blocks=None):
    """Drive ``est`` on synthetic draws (block b, sample k: 30 - effect_b + noise); at each stage, its bound on
    the later stages' items and the items they really asked for (counting ``blocks`` only)."""
    blocks = np.arange(N) if blocks is None else np.asarray(blocks)
    est.bind(ROI)
    stats, done, seen = {}, [], []
    stage = est.first_stage(N)
    while stage is not None:
        seen.append((stage, est.most_items_after(stage, blocks, N)))
        st = stats.setdefault(stage.name, BlockStats(N))
        for k in range(stage.n_items):
            b, s = stage.item(np.array([k]))
            rng = np.random.default_rng([0, int(b[0]), int(s[0])])
            st.update(b, [30.0 - effects[b[0]] + sd[b[0]] * rng.standard_normal()], 30.0)
        done.append(stage)
        stage = est.next_stage(done, stats, 30.0)
    work = [sum(int(np.isin(s.blocks, blocks).sum()) * s.samples for s, _ in seen[i + 1 :]) for i in range(len(seen))]
    return [b for _, b in seen], work


ESTIMATORS = {
    "exhaustive": lambda: ExhaustiveEstimator(samples=7),
    "coarse_to_fine": lambda: CoarseToFineEstimator(coarse=3, fine=20),
    "adaptive_reference": lambda: AdaptiveEstimator(round_size=4, max_samples=40, fine=20),
    "adaptive_settle": lambda: AdaptiveEstimator(round_size=4, max_samples=40, roi_blocks="settle"),
    "adaptive_coarse": lambda: AdaptiveEstimator(round_size=4, max_samples=40, roi_blocks="coarse"),
}


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_the_bound_holds_and_is_met_when_every_block_draws_to_the_end(name):
    # at the tolerance with a wide spread: screened, never settled, never precise -> every later stage at its largest
    boundary = _bounds_and_later_work(ESTIMATORS[name](), np.full(N, 0.01), np.full(N, 0.5))
    assert boundary[0] == boundary[1], name  # the bound is the work, stage by stage
    # clear effects, and blocks without any: less work, still bounded; and a run that computes some blocks only
    mixed = np.where(np.arange(N) % 3 == 0, 0.0, 2.0)
    for blocks in (None, [0, 1, 5, 9]):
        bounds, work = _bounds_and_later_work(ESTIMATORS[name](), mixed, np.full(N, 0.001) * (mixed > 0), blocks)
        assert all(w <= b for w, b in zip(work, bounds)), (name, blocks, work, bounds)
        assert work[-1] == 0 and (bounds[-1] == 0 or name.startswith("adaptive"))  # rounds may stop before T_max


def test_an_estimator_that_does_not_say_gives_no_bound():
    class Plain(ExhaustiveEstimator):
        most_items_after = ExhaustiveEstimator.__mro__[1].most_items_after

    assert Plain().most_items_after(Plain().first_stage(4), np.arange(4), 4) is None


def test_a_map_shows_the_whole_runs_time_left_from_its_first_stage(clean_image, small_bank, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="cem_lab"):
        compute_cem(
            ConvStack(),
            clean_image,
            "dn",
            (16, 16, 16),
            patch_bank=small_bank,
            block=8,
            coarse=3,
            fine=6,
            progress=True,
            figures=False,
        )
    plans = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stage ")]
    assert plans[0].startswith("stage coarse: ") and "then at most " in plans[0], plans
    assert plans[-1].startswith("stage fine: ") and plans[-1].endswith("(the last stage)"), plans
    bars = capsys.readouterr().err.replace("\r", "\n").splitlines()
    coarse = [b for b in bars if b.startswith("CEM coarse") and "run <= " in b]
    assert coarse, bars[-10:]
    assert not any("run <= " in b for b in bars if b.startswith("CEM fine")), bars[-10:]  # its own ETA is the run's
