"""The race between incremental recompute and the ROI crop (cem_lab.causal.path_race), on a made-up clock:
each path's seconds per unit are set, so that every choice the race makes can be checked."""

from __future__ import annotations

import pytest

from cem_lab.causal.path_race import PathRace

PATHS = ("incremental", "roi_crop")


def _run(race: PathRace, seconds, units: int, key=3, start: int = 0) -> list[str]:
    """``units`` units of ``key``'s stage, each path taking ``seconds(path, i)`` on unit i: the paths run."""
    ran = []
    for i in range(start, start + units):
        path = race.pick(key)
        race.record(key, path, seconds(path, i) * 8, rows=8)
        ran.append(path)
    return ran


def _prior(incremental: float, crop: float):
    return lambda key: {"incremental": incremental, "roi_crop": crop}


def test_both_paths_are_timed_first_and_the_faster_on_the_map_wins_whatever_the_check_said():
    # the check had incremental recompute 1.5x slower; on the map's units it is 1.8x faster
    race = PathRace(PATHS, _prior(1.5, 1.0))
    ran = _run(race, lambda p, i: 1.0 if p == "incremental" else 1.8, 50)
    assert ran[:2] == ["roi_crop", "incremental"]  # each once, the one the check found faster first
    assert ran[2:].count("incremental") >= 46, ran
    s = race.summary()["3"]
    assert (
        s["units"]["incremental"] + s["units"]["roi_crop"] == 50
        and s["items"]["incremental"] == 8 * s["units"]["incremental"]
    )
    assert s["s_per_row"] == {"incremental": 1.0, "roi_crop": 1.8}


def test_a_path_found_decisively_slower_on_its_first_unit_is_not_timed_again_at_once():
    race = PathRace(PATHS, _prior(1.5, 1.0), decisive=2.0)
    ran = _run(race, lambda p, i: 1.0 if p == "incremental" else 2.5, 20)
    assert ran[:2] == ["roi_crop", "incremental"] and ran[2:] == ["incremental"] * 18


def test_a_path_decisively_slower_on_the_check_is_not_timed_until_the_budget_pays_for_it():
    race = PathRace(PATHS, _prior(1.0, 5.0), decisive=2.0, budget=0.03)
    ran = _run(race, lambda p, i: 1.0 if p == "incremental" else 5.0, 2000)
    assert "roi_crop" not in ran[:100]
    slow = ran.count("roi_crop")
    assert slow >= 1  # a load can change: it is re-timed now and then
    extra = slow * (5.0 - 1.0) / (ran.count("incremental") * 1.0)
    assert extra <= 0.03 * 1.1, extra  # what the re-timing cost, against the faster path's time


def test_the_choice_follows_a_load_that_comes_and_goes():
    """Incremental recompute 1.0 s a unit, the crop 1.5; from unit 200 a busy process triples incremental
    recompute's time (its small operations wait for a core), from unit 600 it is gone again."""

    def seconds(path, i):
        if path == "roi_crop":
            return 1.5
        return 3.0 if 200 <= i < 600 else 1.0

    race = PathRace(PATHS, _prior(1.0, 1.5))
    ran = _run(race, seconds, 800)
    busy, after = ran[200:600], ran[600:]
    # moved to the crop within the two units that make incremental recompute's median slower
    first_crop = busy.index("roi_crop")
    assert first_crop <= 2 and busy[first_crop:].count("roi_crop") >= 0.9 * len(busy[first_crop:])
    # and back once the re-timings (every (3 - 1.5) / (1.5 * 0.03) = 34 units of the crop) see it quiet again
    back = next(i for i in range(len(after)) if after[i : i + 10] == ["incremental"] * 10)
    assert back <= 2 * 35 + 3, back
    assert after[back:].count("incremental") >= 0.9 * len(after[back:])


def test_stages_race_on_their_own():
    """A stage of 2 draws per block (units that mix blocks) and one of 50 time their paths apart."""
    race = PathRace(PATHS, lambda key: {"incremental": 1.0, "roi_crop": 1.0})
    for _ in range(30):
        for key, fast in ((2, "roi_crop"), (50, "incremental")):
            path = race.pick(key)
            race.record(key, path, 1.0 if path == fast else 3.0, rows=1)
    s = race.summary()
    assert s["2"]["units"]["roi_crop"] >= 27 and s["50"]["units"]["incremental"] >= 27, s


def test_a_race_needs_two_paths():
    with pytest.raises(ValueError, match="two or more distinct paths"):
        PathRace(("incremental",), _prior(1.0, 1.0))


def test_four_arms_settle_on_the_fastest_and_re_time_the_others_within_the_budget():
    """Incremental recompute and the crop, each on 1 thread or 2: the thread probe wrongly favoured 2 threads
    (a lull of the busy process), which are 5x slower on the map; the race times each arm once, runs the rest
    on the fastest and spends at most its budget on the others."""
    times = {"incremental@1": 1.0, "incremental@2": 5.0, "roi_crop@1": 1.3, "roi_crop@2": 6.5}
    prior = {"incremental@1": 1.2, "incremental@2": 1.0, "roi_crop@1": 1.5, "roi_crop@2": 1.3}
    race = PathRace(tuple(times), lambda key: prior)
    ran = _run(race, lambda p, i: times[p], 3000)
    assert set(ran[:4]) == set(times)  # each arm once, in turn
    assert ran[:20].count("incremental@2") == ran[:20].count("roi_crop@2") == 1
    assert ran[:20].count("roi_crop@1") == 1  # timed once at the start, then left for the budget
    rest = ran[8:]
    assert rest.count("incremental@1") >= 0.95 * len(rest)
    extra = sum(times[p] - 1.0 for p in rest) / (rest.count("incremental@1") * 1.0)
    assert 0 < extra <= 0.03 * 1.1, extra


def test_the_prior_compares_the_paths_and_the_map_sets_their_pace():
    """The check's times come from a cold first call, ten times the map's pace: the untimed path is judged by the
    prior's ratio at the map's pace (not 10x slower than the timed one), so it is timed and wins."""
    race = PathRace(PATHS, _prior(10.0, 15.0))
    ran = _run(race, lambda p, i: 1.0 if p == "incremental" else 0.6, 30)
    assert ran[:2] == ["incremental", "roi_crop"]
    assert race.estimate(3) == {"incremental": 1.0, "roi_crop": 0.6}
    assert ran[4:].count("roi_crop") >= 24
    fresh = PathRace(PATHS, _prior(10.0, 15.0))
    fresh.record(3, "incremental", 8.0, rows=8)
    assert fresh.estimate(3) == {"incremental": 1.0, "roi_crop": 1.5}


def test_a_probe_can_rule_out_more_threads_but_never_fewer():
    """The races' priors from a thread probe: all threads the probe found slower may be left untimed (beside a
    busy process they ran units 10-100x slower), one thread never is (a fooled probe chose all)."""
    from cem_lab.causal.recompute import FEWER_THREADS_MAX_RATIO, probe_ratio

    fooled = {"chosen": 2, "seconds_1": 0.004, "seconds_2": [0.001, 0.001, 0.001]}
    assert probe_ratio(fooled, 1) == FEWER_THREADS_MAX_RATIO < 2.0 and probe_ratio(fooled, 2) == 1.0
    busy = {"chosen": 1, "seconds_1": 0.001, "seconds_2": [0.005]}
    assert probe_ratio(busy, 2) == 5.0 and probe_ratio(None, 2) == 1.0 and probe_ratio({"chosen": None}, 1) == 1.0
