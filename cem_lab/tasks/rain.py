"""Synthetic rain streaks, as in the CEM paper's deraining demo (numpy + scipy only).

The reference generator used OpenCV; this module reproduces its steps without it:

1. draw the parameters (beta, density, width, length, angle) from one legacy
   ``np.random.RandomState(seed)``, in that order, then a uniform noise field;
2. keep the noise values above ``256 - 256 * density`` as streak seeds and
   correlate them with a small cross kernel;
3. correlate the seeds with a rotated, Gaussian-blurred line kernel, min-max
   normalise to [0, 255] and truncate to uint8.

OpenCV conventions used throughout: ``filter2D`` is a *correlation* whose anchor is
``ksize // 2`` and whose border is "reflect 101" (scipy's ``mode='mirror'``).

Streak orientation convention: with ``angle = a`` degrees, a streak makes the angle
``a`` with the vertical, measured counter-clockwise *as displayed* (rows going down).
So ``a = 0`` gives vertical streaks and ``a > 0`` streaks whose upper end leans to the
left (a "\\" shape). In mathematical axes (x to the right, y up) the streak's direction
is ``90 + a`` degrees (mod 180).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy  # scipy.ndimage loads on first use (scipy's lazy submodules): no start-up cost for non-rain runs

from cem_lab.errors import InputError

__all__ = ["RAIN_PRESETS", "RainParams", "draw_rain_params", "synthesize_rain", "add_rain"]

# Ranges are inclusive: density/beta are uniform floats, length/angle uniform integers,
# width is drawn among ``widths`` with probabilities ``width_probs``.
RAIN_PRESETS: dict[str, dict] = {
    "small": {
        "density": (0.002, 0.004),
        "widths": (1, 3),
        "width_probs": (0.5, 0.5),
        "length": (25, 35),
        "angle": (-10, 10),
        "beta": (0.6, 1.0),
    },
    "medium": {
        "density": (0.005, 0.007),
        "widths": (3, 5, 7),
        "width_probs": (0.25, 0.5, 0.25),
        "length": (35, 45),
        "angle": (-30, 30),
        "beta": (0.6, 1.0),
    },
    "large": {
        "density": (0.008, 0.010),
        "widths": (7, 9),
        "width_probs": (0.5, 0.5),
        "length": (45, 55),
        "angle": (-60, 60),
        "beta": (0.6, 1.0),
    },
    "random": {
        "density": (0.002, 0.010),
        "widths": (1, 3, 5, 7, 9),
        "width_probs": (0.2, 0.2, 0.2, 0.2, 0.2),
        "length": (25, 55),
        "angle": (-60, 60),
        "beta": (0.6, 1.0),
    },
}

# The cross kernel that first thickens each seed a little (OpenCV reference).
_SEED_KERNEL = np.array([[0.0, 0.1, 0.0], [0.1, 8.0, 0.1], [0.0, 0.1, 0.0]])

# cv2.getGaussianKernel(n, sigma<=0) returns these fixed tables for n in {1, 3, 5, 7};
# the sigma formula is only used from n = 9 on.
_SMALL_GAUSSIAN_TABLES: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}


@dataclass(frozen=True)
class RainParams:
    """The drawn parameters of one rain layer.

    density: share of pixels that seed a streak; width: odd Gaussian kernel width
    (streak thickness); length: side of the line kernel (streak length, pixels);
    angle: streak angle in degrees (see the module docstring for the sign);
    beta: weight of the rain layer in the rainy image.
    """

    density: float
    width: int
    length: int
    angle: int
    beta: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.density <= 1.0:
            raise InputError(f"density must lie in [0, 1], got {self.density}")
        if self.width < 1 or self.width % 2 == 0:
            raise InputError(f"width must be a positive odd integer, got {self.width}")
        if self.length < 1:
            raise InputError(f"length must be a positive integer, got {self.length}")


def _preset(preset: str) -> dict:
    try:
        return RAIN_PRESETS[preset]
    except (KeyError, TypeError):
        known = ", ".join(repr(k) for k in RAIN_PRESETS)
        raise InputError(f"unknown rain preset {preset!r}; known presets: {known}") from None


def _draw(rs: np.random.RandomState, preset: str) -> RainParams:
    """Draw beta, density, width, length, angle from ``rs`` in the reference order."""
    cfg = _preset(preset)
    beta = float(rs.uniform(*cfg["beta"]))
    density = float(rs.uniform(*cfg["density"]))
    width = int(rs.choice(list(cfg["widths"]), p=list(cfg["width_probs"])))
    length = int(rs.randint(cfg["length"][0], cfg["length"][1] + 1))
    angle = int(rs.randint(cfg["angle"][0], cfg["angle"][1] + 1))
    return RainParams(density=density, width=width, length=length, angle=angle, beta=beta)


def draw_rain_params(seed: int, preset: str = "medium") -> RainParams:
    """The parameters that :func:`synthesize_rain` uses for this seed and preset."""
    _preset(preset)
    return _draw(np.random.RandomState(seed), preset)


def _gaussian_kernel_1d(size: int) -> np.ndarray:
    """cv2.getGaussianKernel(size, 0): fixed tables up to 7, else the sigma rule."""
    if size < 1 or size % 2 == 0:
        raise InputError(f"Gaussian kernel size must be a positive odd integer, got {size}")
    if size in _SMALL_GAUSSIAN_TABLES:
        g = np.array(_SMALL_GAUSSIAN_TABLES[size], dtype=np.float64)
    else:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
        x = np.arange(size, dtype=np.float64) - (size - 1) * 0.5
        g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _rotate(image: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotate a square image about its centre like cv2.warpAffine(getRotationMatrix2D).

    Positive angles turn counter-clockwise as displayed; bilinear interpolation, zeros
    outside. (OpenCV additionally quantises sample positions to 1/32 pixel.)
    """
    n = image.shape[0]
    c = (n - 1) / 2.0
    t = np.deg2rad(angle_deg)
    a, b = np.cos(t), np.sin(t)
    # cv2 forward map (x, y): x' = a x + b y + ., y' = -b x + a y + .; warpAffine
    # samples src at the inverse map. In scipy's (row, col) = (y, x) order the
    # inverse is [[a, b], [-b, a]] about the centre.
    matrix = np.array([[a, b], [-b, a]])
    offset = np.array([c, c]) - matrix @ np.array([c, c])
    return scipy.ndimage.affine_transform(
        image, matrix, offset=offset, order=1, mode="grid-constant", cval=0.0, prefilter=False
    )


def _streak_kernel(length: int, angle: int, width: int) -> np.ndarray:
    """The (length, length) streak kernel: a rotated diagonal, Gaussian-blurred, not normalised."""
    line = _rotate(np.eye(length, dtype=np.float64), angle - 45)
    g = _gaussian_kernel_1d(width)
    if width > 1:
        line = scipy.ndimage.correlate1d(line, g, axis=0, mode="mirror")
        line = scipy.ndimage.correlate1d(line, g, axis=1, mode="mirror")
    return line


def _seed_field(noise: np.ndarray, density: float) -> np.ndarray:
    """Zero the noise below ``256 - 256 * density`` and thicken the seeds with the cross kernel."""
    seeds = noise.copy()
    seeds[seeds < 256.0 - density * 256.0] = 0.0
    return scipy.ndimage.correlate(seeds, _SEED_KERNEL, mode="mirror")


def _normalize_to_uint8(x: np.ndarray) -> np.ndarray:
    """cv2.normalize(NORM_MINMAX, 0, 255) followed by a truncating uint8 cast."""
    lo, hi = float(x.min()), float(x.max())
    scale = 255.0 * (1.0 / (hi - lo)) if hi - lo > np.finfo(np.float64).eps else 0.0
    y = x * scale + (0.0 - lo * scale)
    return np.clip(y, 0.0, 255.0).astype(np.uint8)


def synthesize_rain(height: int, width: int, seed: int, preset: str = "medium") -> tuple[np.ndarray, float]:
    """Draw a rain layer.

    Returns ``(layer, beta)``: ``layer`` is float32 of shape (height, width) holding the
    integer values 0..255 of the uint8 rain layer (the same for the 3 colour channels),
    ``beta`` the weight to pass to :func:`add_rain`.
    """
    if int(height) != height or int(width) != width or height <= 0 or width <= 0:
        raise InputError(f"height and width must be positive integers, got {height} x {width}")
    height, width = int(height), int(width)
    rs = np.random.RandomState(seed)
    params = _draw(rs, preset)
    noise = rs.uniform(0, 256, (height, width))
    seeds = _seed_field(noise, params.density)
    kernel = _streak_kernel(params.length, params.angle, params.width)
    streaks = scipy.ndimage.correlate(seeds, kernel, mode="mirror")
    layer = _normalize_to_uint8(streaks)
    return layer.astype(np.float32), params.beta


def add_rain(clean_uint8: np.ndarray, layer: np.ndarray, beta: float) -> np.ndarray:
    """Rainy image ``saturate_uint8(round(clean + beta * layer))`` as (H, W, 3) uint8.

    ``clean_uint8`` is an (H, W, 3) uint8 image, ``layer`` an (H, W) rain layer with values
    in [0, 255] (as returned by :func:`synthesize_rain`); rounding is half-to-even.
    """
    clean = np.asarray(clean_uint8)
    layer = np.asarray(layer)
    if clean.dtype != np.uint8 or clean.ndim != 3 or clean.shape[2] != 3:
        raise InputError(f"clean_uint8 must be an (H, W, 3) uint8 image, got {clean.dtype} {clean.shape}")
    if layer.shape != clean.shape[:2]:
        raise InputError(f"layer shape {layer.shape} does not match image shape {clean.shape[:2]}")
    rainy = clean.astype(np.float64) + float(beta) * layer.astype(np.float64)[..., None]
    return np.clip(np.rint(rainy), 0, 255).astype(np.uint8)
