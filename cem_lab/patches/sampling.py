"""Sampling schemes: which bank patch replaces a block in one intervention draw.

Every sampler is a pure function of (generator state, inputs): the same ``rng`` state,
block sharpness and sample index always give the same bank index, and each draw consumes
exactly one ``rng.integers`` call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from cem_lab.errors import InputError
from cem_lab.patches.bank import PatchBank, _raw_sharpness


class PatchSampler(ABC):
    """Chooses a bank index for one intervention draw."""

    name: str = "base"

    def __init__(self) -> None:
        self._n: int = 0

    def bind(self, bank: PatchBank) -> None:
        """Attach a bank and precompute what :meth:`draw` needs."""
        if len(bank) == 0:  # pragma: no cover - PatchBank refuses empty banks
            raise InputError("cannot bind a sampler to an empty patch bank")
        self._n = len(bank)

    def _check_bound(self) -> None:
        if self._n == 0:
            raise RuntimeError(f"{type(self).__name__} is not bound to a bank; call sampler.bind(bank) first")

    @abstractmethod
    def draw(self, rng: np.random.Generator, block_sharpness: float, sample_index: int) -> int:
        """Bank index for draw ``sample_index`` of a block with sharpness ``block_sharpness``."""

    def options(self) -> dict:
        """The sampler's options that differ from their defaults (recorded beside its name in summary.json and
        hashed into the run's fingerprint; a sampler at its defaults records its name only)."""
        return {}

    def draw_many(self, rng: np.random.Generator, block_sharpness: float, count: int, start: int = 0) -> np.ndarray:
        """``count`` successive draws (sample indices ``start .. start+count-1``) as an int64 array."""
        return np.array([self.draw(rng, block_sharpness, start + i) for i in range(count)], dtype=np.int64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class UniformSampler(PatchSampler):
    """Every bank patch equally likely (the paper's reference scheme)."""

    name = "uniform"

    def draw(self, rng: np.random.Generator, block_sharpness: float, sample_index: int) -> int:
        """Any bank index, uniformly; the block's sharpness and the sample index are ignored."""
        self._check_bound()
        return int(rng.integers(self._n))


class SharpnessMatchedSampler(PatchSampler):
    """Uniform among the ``k`` patches whose sharpness is closest to the block's.

    Patches tied with the k-th closest are all included, so the candidate set does not
    depend on the order of the bank (it may then hold a few more than ``k``).
    """

    name = "sharpness_matched"
    DEFAULT_K = 100

    def __init__(self, k: int = DEFAULT_K) -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"sharpness_matched: k must be a positive integer, got {k!r}")
        self.k = int(k)
        self._order = np.zeros(0, dtype=np.int64)
        self._sorted = np.zeros(0)
        self._ranges: dict[float, tuple[int, int]] = {}

    def bind(self, bank: PatchBank) -> None:
        """Sort the bank by sharpness, for the nearest-``k`` windows."""
        super().bind(bank)
        self._order = np.argsort(bank.sharpness, kind="stable")
        self._sorted = np.asarray(bank.sharpness, dtype=np.float64)[self._order]
        self._ranges = {}

    def candidate_range(self, target: float) -> tuple[int, int]:
        """[lo, hi) in sharpness-sorted order of the patches nearest to ``target``."""
        self._check_bound()
        target = float(target)
        if not np.isfinite(target):
            raise InputError(f"sharpness_matched: block sharpness must be finite, got {target}")
        if target in self._ranges:
            return self._ranges[target]
        s, n = self._sorted, self._n
        k = min(self.k, n)
        # Start of the best window of k consecutive sorted values (binary search on the left edge).
        lo, hi = 0, n - k
        while lo < hi:
            mid = (lo + hi) // 2
            if target - s[mid] > s[mid + k] - target:
                lo = mid + 1
            else:
                hi = mid
        a, b = lo, lo + k  # window [a, b)
        dk = max(target - s[a], s[b - 1] - target)
        # Include every patch at distance <= dk: ties with the window's edges, inside or just outside it.
        if a > 0 and abs(s[a - 1] - target) <= dk:
            a = int(np.searchsorted(s, s[a - 1], side="left"))
        else:
            a = int(np.searchsorted(s, s[a], side="left")) if abs(s[a] - target) == dk else a
        if b < n and abs(s[b] - target) <= dk:
            b = int(np.searchsorted(s, s[b], side="right"))
        else:
            b = int(np.searchsorted(s, s[b - 1], side="right")) if abs(s[b - 1] - target) == dk else b
        if len(self._ranges) < 65536:
            self._ranges[target] = (a, b)
        return a, b

    def draw(self, rng: np.random.Generator, block_sharpness: float, sample_index: int) -> int:
        """Uniform among the ``k`` patches (and ties) closest in sharpness to the block."""
        a, b = self.candidate_range(block_sharpness)
        return int(self._order[a + int(rng.integers(b - a))])

    def options(self) -> dict:
        """``k`` when it is not :attr:`DEFAULT_K`."""
        return {} if self.k == self.DEFAULT_K else {"k": self.k}

    def __repr__(self) -> str:
        return f"SharpnessMatchedSampler(k={self.k})"


class StratifiedSampler(PatchSampler):
    """Sharpness-quantile strata; draw ``i`` takes stratum ``i % strata``, uniform inside it.

    The strata hold equal numbers of patches (by sharpness rank), so T draws cover the
    sharpness range evenly whatever the block.
    """

    name = "stratified"
    DEFAULT_STRATA = 5

    def __init__(self, strata: int = DEFAULT_STRATA) -> None:
        super().__init__()
        if isinstance(strata, bool) or not isinstance(strata, (int, np.integer)) or strata < 1:
            raise InputError(f"stratified: strata must be a positive integer, got {strata!r}")
        self.strata = int(strata)
        self._order = np.zeros(0, dtype=np.int64)
        self._bounds = np.zeros(1, dtype=np.int64)

    def bind(self, bank: PatchBank) -> None:
        """Sort the bank by sharpness and cut it into equal-count strata (fewer when the bank is smaller)."""
        super().bind(bank)
        self._order = np.argsort(bank.sharpness, kind="stable")
        m = min(self.strata, self._n)
        self._bounds = np.round(np.linspace(0, self._n, m + 1)).astype(np.int64)

    @property
    def n_strata(self) -> int:
        """Strata actually used (``strata`` clipped to the bank size)."""
        return len(self._bounds) - 1

    def stratum_indices(self, stratum: int) -> np.ndarray:
        """Bank indices in ``stratum`` (0 = least sharp)."""
        self._check_bound()
        return self._order[self._bounds[stratum] : self._bounds[stratum + 1]]

    def draw(self, rng: np.random.Generator, block_sharpness: float, sample_index: int) -> int:
        """Uniform within stratum ``sample_index % strata``; the block's sharpness is ignored."""
        self._check_bound()
        s = int(sample_index) % self.n_strata
        lo, hi = int(self._bounds[s]), int(self._bounds[s + 1])
        return int(self._order[lo + int(rng.integers(hi - lo))])

    def options(self) -> dict:
        """``strata`` when it is not :attr:`DEFAULT_STRATA`."""
        return {} if self.strata == self.DEFAULT_STRATA else {"strata": self.strata}

    def __repr__(self) -> str:
        return f"StratifiedSampler(strata={self.strata})"


SAMPLERS: dict[str, type[PatchSampler]] = {
    UniformSampler.name: UniformSampler,
    SharpnessMatchedSampler.name: SharpnessMatchedSampler,
    StratifiedSampler.name: StratifiedSampler,
}


def make_sampler(name: str, **kwargs) -> PatchSampler:
    """Sampler by name (``uniform``, ``sharpness_matched``, ``stratified``) with its options."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in SAMPLERS:
        raise InputError(f"unknown patch sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    try:
        return SAMPLERS[key](**kwargs)
    except TypeError as err:
        raise InputError(f"bad options for patch sampler {key!r}: {err}") from err


def block_sharpness(image_uint8: np.ndarray, box: Sequence[int], patch_size: int) -> float:
    """Sharpness of the block ``box = (top, left, bottom, right)`` of an (H, W, 3) uint8 image.

    Same score as :func:`patch_sharpness`; a block whose side differs from ``patch_size`` has
    its score multiplied by ``patch_size / side`` (side = sqrt(h * w)) to be comparable with
    the bank's patches.
    """
    img = np.asarray(image_uint8)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"block_sharpness needs an (H, W, 3) uint8 image, got {img.dtype} {img.shape}")
    top, left, bottom, right = (int(v) for v in box)
    h, w = img.shape[:2]
    if not (0 <= top < bottom <= h and 0 <= left < right <= w):
        raise InputError(f"block box {tuple(box)} (top, left, bottom, right) is empty or outside the {h}x{w} image")
    block = img[top:bottom, left:right]
    score = float(np.round(_raw_sharpness(block[None])[0]))
    side = float(np.sqrt((bottom - top) * (right - left)))
    if side != patch_size:
        score *= patch_size / side
    return score
