"""Exact ways of one computation (paths, each on a thread count), raced on a map's own work units.

Incremental recompute and the ROI crop give the same ROI outputs (checked before the map starts); which of
the two is faster depends on the network, on the stage (chunks of one block, or of several blocks whose
windows do not share a slice) and on what else the machine runs. Beside a busy process, the many small
operations of incremental recompute wait for a core, and the few milliseconds of the check's items did not
predict a map's: small networks ran 0.56x to 1.49x the crop's speed across runs (BENCHMARKS.md).

A :class:`PathRace` keeps each path's recent seconds per row of a work unit for each kind of stage (a key),
runs the fastest, and times the others again now and then, spending on them at most :attr:`~PathRace.budget`
of the time the fastest took, so that a load that comes or goes moves the choice within a few units. The
check's figures seed the race: where they make a path slower than the fastest by more than
:attr:`~PathRace.decisive`, it is not timed on the map until the budget allows. Plain Python, no torch: the
caller times the units.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from statistics import median


@dataclass
class _Lane:
    """One key's record: the last seconds per row of each path, the units and items each ran, and for each path
    the units the others ran since it last did."""

    recent: dict[str, deque] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    since: dict[str, int] = field(default_factory=dict)


class PathRace:
    """Which of ``paths`` runs the next unit of a stage (:meth:`pick`), from their seconds on the units before
    (:meth:`record`) and, before a path has any, from ``prior(key)`` (seconds per row, by path: the check's)."""

    def __init__(
        self,
        paths: Sequence[str],
        prior: Callable[[Hashable], dict[str, float]],
        decisive: float = 2.0,
        first: int = 1,
        window: int = 3,
        budget: float = 0.03,
    ) -> None:
        if len(paths) < 2 or len(set(paths)) != len(paths):
            raise ValueError(f"a race is between two or more distinct paths, got {list(paths)}")
        self.paths = tuple(paths)
        self.prior = prior
        #: a path the prior makes slower than this factor is not timed on the map until the budget allows
        self.decisive = decisive
        #: units each path runs at a stage's start (where the prior is not decisive)
        self.first = first
        #: the last ``window`` units of a path make its estimate (their median)
        self.window = window
        #: the share of the fastest path's time spent re-timing the slower ones (shared among them)
        self.budget = budget
        self.lanes: dict[Hashable, _Lane] = {}

    def _lane(self, key: Hashable) -> _Lane:
        lane = self.lanes.get(key)
        if lane is None:
            zeros = dict.fromkeys(self.paths, 0)
            recent = {p: deque(maxlen=self.window) for p in self.paths}
            lane = self.lanes[key] = _Lane(recent, dict(zeros), dict(zeros), dict(zeros))
        return lane

    def estimate(self, key: Hashable) -> dict[str, float]:
        """Seconds per row of each path for ``key``: the median of its last units; before it has any, the prior's,
        scaled by the smallest ratio of a timed path's seconds on the map to its prior (the prior says how the paths
        compare, the map how fast it runs: a check's first, cold call is no measure of the map's pace; and an
        untimed path is given the benefit of the doubt, so that a prior proved wrong does not keep it untimed)."""
        lane = self._lane(key)
        out = {p: median(lane.recent[p]) for p in self.paths if lane.recent[p]}
        if len(out) < len(self.paths):
            prior = {p: float(v) for p, v in self.prior(key).items()}
            scale = min(out[p] / prior[p] for p in out) if out and all(prior[p] > 0 for p in out) else 1.0
            out.update({p: prior[p] * scale for p in self.paths if p not in out})
        return out

    def pick(self, key: Hashable) -> str:
        """The path of the next unit of ``key``'s stage."""
        lane = self._lane(key)
        est = self.estimate(key)
        ranked = sorted(self.paths, key=lambda p: (est[p], self.paths.index(p)))
        fast = ranked[0]
        floor = max(est[fast], 1e-12)
        # a stage's first units: each path that is not decisively slower timed on the map, in turn
        open_ = [p for p in ranked if lane.units[p] < self.first and est[p] < self.decisive * floor]
        if open_:
            return min(open_, key=lambda p: lane.units[p])
        # then the fastest, and a slower one once the fastest's time since it last ran pays for its extra
        # seconds (each slower path an equal share of the budget)
        share = self.budget / (len(self.paths) - 1)
        credit = {p: lane.since[p] * floor * share - (est[p] - floor) for p in ranked[1:]}
        due = max(credit, key=lambda p: credit[p])
        return due if credit[due] >= 0 else fast

    def record(self, key: Hashable, path: str, seconds: float, rows: int, items: int | None = None) -> None:
        """``path`` ran a unit of ``rows`` rows (``items`` of them real, the rest padding) of ``key``'s stage in
        ``seconds``."""
        lane = self._lane(key)
        lane.recent[path].append(seconds / max(rows, 1))
        lane.units[path] += 1
        lane.items[path] += rows if items is None else items
        for p in self.paths:
            lane.since[p] = 0 if p == path else lane.since[p] + 1

    def summary(self) -> dict[str, dict]:
        """Per key: the items and units each path ran and its last estimate (seconds per row)."""
        out = {}
        for key, lane in self.lanes.items():
            est = self.estimate(key)
            out[str(key)] = {
                "items": dict(lane.items),
                "units": dict(lane.units),
                "s_per_row": {p: round(est[p], 7) for p in self.paths},
            }
        return out
