"""Patch banks: the natural image patches that replace an input block during an intervention.

A bank is a stack of ``p x p`` RGB uint8 patches plus one sharpness score per patch.
It can be loaded from / saved to an ``.npz`` file, cut from a folder of images (with an
on-disk cache), or built from scikit-image's bundled sample images (no network needed).

Sharpness score
---------------
The score reproduces the one stored in the CEM paper's demo bank (``div2k_patches8.npz``)
exactly: the patch is converted to an 8-bit grey image with OpenCV's fixed-point BT.601
luma, ``Y = (9798 R + 19235 G + 3735 B + 2**14) >> 15``, then

    sharpness = round(sqrt(sum(dx**2) + sum(dy**2)))

with ``dx``, ``dy`` the forward differences of ``Y`` along x and y (the L2 norm of the
discrete gradient).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cem_lab.errors import CemLabError
from cem_lab.images import IMAGE_EXTENSIONS, list_images, load_image
from cem_lab.io import PathLike, write_npz
from cem_lab.metrics import BT601_LUMA

CACHE_DIRNAME = ".cem_lab_cache"
_CACHE_VERSION = 1

# scikit-image sample images that ship with the package (no download needed).
EMBEDDED_COLOUR: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "colorwheel",
)
EMBEDDED_GREY: tuple[str, ...] = ("brick", "grass", "gravel", "camera", "coins", "moon")
EMBEDDED_IMAGES: tuple[str, ...] = EMBEDDED_COLOUR + EMBEDDED_GREY

# OpenCV's 15-bit fixed-point BT.601 luma: R and G rounded, B the rest so that the three sum to 2**15
# (9798, 19235, 3735).
_LUMA_SHIFT = 15
_LUMA_R, _LUMA_G = (round(w * (1 << _LUMA_SHIFT)) for w in BT601_LUMA[:2])
_LUMA_B = (1 << _LUMA_SHIFT) - _LUMA_R - _LUMA_G


class PatchBankError(CemLabError, ValueError):
    """A patch bank (file, folder or array) that cannot be used as given."""


# --------------------------------------------------------------------------- sharpness
def luma_uint8(rgb_uint8: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) int32 BT.601 grey on the 0..255 grid (OpenCV's rounding)."""
    x = np.asarray(rgb_uint8).astype(np.int32)
    y = _LUMA_R * x[..., 0] + _LUMA_G * x[..., 1] + _LUMA_B * x[..., 2]
    return (y + (1 << (_LUMA_SHIFT - 1))) >> _LUMA_SHIFT


def _raw_sharpness(patches_uint8: np.ndarray) -> np.ndarray:
    """Unrounded L2 gradient norm of the grey patches, (N, h, w, 3) -> (N,) float64."""
    g = luma_uint8(patches_uint8).astype(np.float64)
    dx = np.diff(g, axis=2)
    dy = np.diff(g, axis=1)
    return np.sqrt(np.square(dx).sum(axis=(1, 2)) + np.square(dy).sum(axis=(1, 2)))


def patch_sharpness(patches_uint8: np.ndarray) -> np.ndarray:
    """Sharpness of each patch: (N, h, w, 3) uint8 -> (N,) float64.

    ``round(sqrt(sum dx^2 + sum dy^2))`` on the 8-bit BT.601 grey patch, forward differences;
    identical to the ``sharpness`` stored in the paper's ``div2k_patches8.npz``.
    """
    arr = np.asarray(patches_uint8)
    if arr.dtype != np.uint8:
        raise PatchBankError(
            f"patch_sharpness needs uint8 patches, got dtype {arr.dtype}; "
            "convert with np.clip(x, 0, 255).astype(np.uint8)"
        )
    if arr.ndim != 4 or arr.shape[3] != 3:
        raise PatchBankError(f"patch_sharpness needs an (N, h, w, 3) array, got shape {arr.shape}")
    return np.round(_raw_sharpness(arr))


# --------------------------------------------------------------------------- the bank
def _readonly(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass
class PatchBank:
    """Stack of ``p x p`` RGB uint8 patches with one sharpness score each."""

    patches: np.ndarray
    sharpness: np.ndarray
    source: str = "memory"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = np.asarray(self.patches)
        _check_patches(p, f"patch bank ({self.source})")
        if p.shape[1] == 0:
            raise PatchBankError(f"patch bank ({self.source}): patch size is 0")
        s = np.asarray(self.sharpness, dtype=np.float64)
        if s.shape != (p.shape[0],):
            raise PatchBankError(
                f"patch bank ({self.source}): sharpness must have shape ({p.shape[0]},) "
                f"(one score per patch), got {s.shape}"
            )
        if not np.all(np.isfinite(s)):
            raise PatchBankError(
                f"patch bank ({self.source}): sharpness holds NaN or inf values; "
                "recompute it with patch_sharpness(patches)"
            )
        meta = dict(self.meta or {})
        for key, value in meta.items():
            if isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] != p.shape[0]:
                raise PatchBankError(
                    f"patch bank ({self.source}): meta[{key!r}] has {value.shape[0]} rows "
                    f"but there are {p.shape[0]} patches"
                )
        self.patches = np.ascontiguousarray(p)
        self.sharpness = s
        self.meta = meta

    @property
    def patch_size(self) -> int:
        """Side ``p`` of the square patches."""
        return int(self.patches.shape[1])

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    def __repr__(self) -> str:
        return (
            f"PatchBank(n={len(self)}, patch_size={self.patch_size}, source={self.source!r}, meta={sorted(self.meta)})"
        )

    # ---------------------------------------------------------------- npz I/O
    @classmethod
    def load(cls, path: PathLike) -> PatchBank:
        """Load a bank from an ``.npz`` with ``patches`` (N, p, p, 3) uint8 and ``sharpness`` (N,).

        Extra keys of length N (``source_image``, ``top_left``, ...) go to :attr:`meta`.
        A file without ``sharpness`` gets it computed.
        """
        path = Path(path)
        if not path.exists():
            raise PatchBankError(
                f"patch bank file not found: {path}; check the path, or build a bank with "
                "PatchBank.from_folder(<image folder>) or PatchBank.embedded()"
            )
        if not path.is_file():
            raise PatchBankError(f"patch bank path is not a file: {path}; give the .npz file itself")
        arrays = _read_npz(path)
        return cls._from_arrays(arrays, source=path.name, origin=str(path))

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], source: str, origin: str) -> PatchBank:
        if "patches" not in arrays:
            raise PatchBankError(
                f"{origin}: no 'patches' array in the file (keys found: {sorted(arrays)}); "
                "a patch bank needs 'patches' uint8 (N, p, p, 3) and 'sharpness' (N,)"
            )
        patches = arrays["patches"]
        _check_patches(patches, origin)
        if "sharpness" in arrays:
            sharp = arrays["sharpness"]
            if sharp.dtype.kind not in "biuf":
                raise PatchBankError(f"{origin}: 'sharpness' must be numeric, got dtype {sharp.dtype}")
        else:
            sharp = patch_sharpness(patches)
        meta = {k: v for k, v in arrays.items() if k not in ("patches", "sharpness")}
        return cls(patches=patches, sharpness=sharp, source=source, meta=meta)

    def save(self, path: PathLike) -> None:
        """Write the bank atomically as ``.npz`` (``patches``, ``sharpness`` and array-like meta)."""
        arrays: dict[str, np.ndarray] = {"patches": self.patches, "sharpness": self.sharpness}
        for key, value in self.meta.items():
            if key in arrays:
                raise PatchBankError(f"meta key {key!r} clashes with a bank array; rename it")
            arr = np.asarray(value)
            if arr.dtype == object:
                raise PatchBankError(
                    f"meta[{key!r}] cannot be saved without pickle (object dtype); store strings or numbers"
                )
            arrays[key] = arr
        write_npz(path, **arrays)

    # ---------------------------------------------------------------- folder of images
    @classmethod
    def from_folder(
        cls,
        folder: PathLike,
        patch_size: int = 8,
        stride: int | None = None,
        count: int | None = None,
        seed: int = 0,
        cache: bool = True,
    ) -> PatchBank:
        """Cut ``patch_size`` patches from every image of ``folder`` (non-recursive, sorted by name).

        Either a regular grid with ``stride`` (default ``patch_size``), or ``count`` random
        patches per image (reproducible for ``seed``). The result is cached in
        ``<folder>/.cem_lab_cache/`` (or ``~/.cache/cem_lab/`` when the folder is not writable),
        keyed on the file names, sizes and modification times.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise PatchBankError(f"image folder not found: {folder}; give a folder of images")
        patch_size = _positive_int(patch_size, "patch_size")
        if count is not None and stride is not None:
            raise PatchBankError("give either stride (regular grid) or count (random patches per image), not both")
        if count is not None:
            count = _positive_int(count, "count")
        else:
            stride = _positive_int(stride if stride is not None else patch_size, "stride")
        files = list_images(folder)
        if not files:
            raise PatchBankError(
                f"no images in {folder}: found no file ending in {', '.join(IMAGE_EXTENSIONS)} "
                "(sub-folders are not searched)"
            )

        name = (
            f"bank_p{patch_size}_s{stride if stride is not None else 'none'}_"
            f"c{count if count is not None else 'none'}_seed{seed}.npz"
        )
        key = _cache_key(files, patch_size, stride, count, seed)
        candidates = _cache_candidates(folder, name)
        if cache:
            for cpath in candidates:
                bank = _read_cache(cpath, key)
                if bank is not None:
                    return bank

        bank = _build_from_files(files, folder, patch_size, stride, count, seed)
        if cache:
            _write_cache(bank, key, candidates)
        return bank

    # ---------------------------------------------------------------- embedded bank
    @classmethod
    def embedded(
        cls, patch_size: int = 8, count: int = 10000, seed: int = 0, exclude: Iterable[str] = ("chelsea",)
    ) -> PatchBank:
        """Bank of ``count`` random patches from scikit-image's bundled sample images.

        Deterministic for ``seed``; ``exclude`` keeps named images (default the demo image
        ``chelsea``) out. Cached in memory: the arrays of the returned bank are read-only.
        """
        excl = tuple(sorted({str(e) for e in ([exclude] if isinstance(exclude, str) else exclude)}))
        unknown = [e for e in excl if e not in EMBEDDED_IMAGES]
        if unknown:
            raise PatchBankError(
                f"unknown embedded image(s) {unknown} in exclude; the names are {', '.join(EMBEDDED_IMAGES)}"
            )
        return _embedded_cached(_positive_int(patch_size, "patch_size"), _positive_int(count, "count"), int(seed), excl)

    # ---------------------------------------------------------------- tensors
    def resized(self, size: int) -> torch.Tensor:
        """All patches as float32 (N, 3, size, size) in [0, 1], on the uint8 grid.

        A size other than ``patch_size`` uses antialiased bicubic resizing, then clamps and
        rounds to multiples of 1/255.
        """
        size = _positive_int(size, "size")
        arr = self.patches if self.patches.flags.writeable else np.array(self.patches)
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
        if size == self.patch_size:
            return x.float() / 255.0
        out = torch.empty((len(self), 3, size, size), dtype=torch.float32)
        chunk = 2048
        for start in range(0, len(self), chunk):
            part = x[start : start + chunk].float() / 255.0
            y = F.interpolate(part, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
            out[start : start + chunk] = torch.round(y.clamp(0.0, 1.0) * 255.0) / 255.0
        return out


# --------------------------------------------------------------------------- helpers
def _check_patches(p: np.ndarray, where: str) -> None:
    """Patches must be a non-empty uint8 (N, p, p, 3) array of square RGB patches."""
    if p.dtype != np.uint8:
        raise PatchBankError(
            f"{where}: patches must be uint8, got dtype {p.dtype}; convert with np.clip(x, 0, 255).astype(np.uint8)"
        )
    if p.ndim != 4 or p.shape[1] != p.shape[2] or p.shape[3] != 3:
        raise PatchBankError(f"{where}: patches must have shape (N, p, p, 3) (square RGB patches), got {p.shape}")
    if p.shape[0] == 0:
        raise PatchBankError(f"{where}: the patch bank is empty (0 patches); rebuild it from images")


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise PatchBankError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        data = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise PatchBankError(
            f"{path} is not a readable .npz patch bank (corrupt or another format: {err}); "
            "re-create it with PatchBank.save or np.savez"
        ) from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise PatchBankError(
            f"{path} is a single .npy array, not an .npz patch bank; save the bank with "
            "np.savez(path, patches=..., sharpness=...)"
        )
    try:
        return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zlib.error) as err:
        raise PatchBankError(
            f"{path} is not a readable .npz patch bank (corrupt entry: {err}); "
            "re-create it with PatchBank.save or np.savez"
        ) from err
    finally:
        data.close()


def _cache_key(files: Sequence[Path], patch_size: int, stride: int | None, count: int | None, seed: int) -> str:
    entries = []
    for f in files:
        st = f.stat()
        entries.append([f.name, st.st_size, st.st_mtime_ns])
    payload = {
        "version": _CACHE_VERSION,
        "patch_size": patch_size,
        "stride": stride,
        "count": count,
        "seed": seed,
        "files": entries,
    }
    return json.dumps(payload, sort_keys=True)


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cem_lab"


def _cache_candidates(folder: Path, name: str) -> list[Path]:
    """Cache files to try, in order: inside the folder, then in the user cache (per-folder name)."""
    digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]
    return [folder / CACHE_DIRNAME / name, _user_cache_dir() / f"{digest}_{name}"]


def _read_cache(path: Path, key: str) -> PatchBank | None:
    if not path.is_file():
        return None
    try:
        arrays = _read_npz(path)
        stored = arrays.pop("cache_key", None)
        if stored is None or str(stored) != key:
            return None
        source = str(arrays.pop("bank_source"))
        return PatchBank._from_arrays(arrays, source=source, origin=str(path))
    except (PatchBankError, OSError):
        return None


def _write_cache(bank: PatchBank, key: str, candidates: Sequence[Path]) -> None:
    errors = []
    for path in candidates:
        try:
            arrays = dict(bank.meta)
            write_npz(
                path,
                patches=bank.patches,
                sharpness=bank.sharpness,
                cache_key=np.array(key),
                bank_source=np.array(bank.source),
                **arrays,
            )
            return
        except OSError as err:
            errors.append(f"{path.parent}: {err}")
    warnings.warn(
        "patch bank not cached (no writable cache folder: " + "; ".join(errors) + "); it will be rebuilt next time",
        stacklevel=3,
    )


def _image_rng(seed: int, name: str) -> np.random.Generator:
    """Per-image generator: depends on the seed and the file name only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])


def cut_patches(
    image: np.ndarray,
    patch_size: int,
    stride: int | None = None,
    count: int | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut patches from one (H, W, 3) uint8 image.

    Regular grid with ``stride`` (positions 0, stride, ... while the patch fits), or ``count``
    random positions drawn from ``rng``. Returns (patches (n, p, p, 3), top_left (n, 2) as (y, x)).
    """
    h, w = image.shape[:2]
    p = patch_size
    if h < p or w < p:
        raise PatchBankError(f"image of size {h}x{w} is smaller than the patch size {p}")
    if count is not None:
        if rng is None:
            raise PatchBankError("cut_patches with count needs an rng")
        ys = rng.integers(0, h - p + 1, size=count)
        xs = rng.integers(0, w - p + 1, size=count)
    else:
        step = stride if stride is not None else p
        gy, gx = np.meshgrid(np.arange(0, h - p + 1, step), np.arange(0, w - p + 1, step), indexing="ij")
        ys, xs = gy.ravel(), gx.ravel()
    windows = np.lib.stride_tricks.sliding_window_view(image, (p, p), axis=(0, 1))  # (H-p+1, W-p+1, 3, p, p)
    patches = np.ascontiguousarray(windows[ys, xs].transpose(0, 2, 3, 1))
    return patches, np.stack([ys, xs], axis=1).astype(np.int64)


def _build_from_files(
    files: Sequence[Path], folder: Path, patch_size: int, stride: int | None, count: int | None, seed: int
) -> PatchBank:
    all_patches, all_tl, all_src, too_small = [], [], [], []
    for f in files:
        image = load_image(f)
        h, w = image.shape[:2]
        if h < patch_size or w < patch_size:
            too_small.append(f"{f.name} ({h}x{w})")
            continue
        rng = _image_rng(seed, f.name) if count is not None else None
        patches, tl = cut_patches(image, patch_size, stride=stride, count=count, rng=rng)
        all_patches.append(patches)
        all_tl.append(tl)
        all_src.append(np.full(len(patches), f.name))
    if not all_patches:
        raise PatchBankError(
            f"every image in {folder} is smaller than the patch size {patch_size}: "
            f"{', '.join(too_small)}; use a smaller patch_size or larger images"
        )
    if too_small:
        warnings.warn(f"skipped images smaller than the patch size {patch_size}: {', '.join(too_small)}", stacklevel=3)
    patches = np.concatenate(all_patches)
    meta = {"source_image": np.concatenate(all_src).astype(str), "top_left": np.concatenate(all_tl)}
    return PatchBank(patches=patches, sharpness=patch_sharpness(patches), source=f"folder:{folder}", meta=meta)


def _load_embedded(name: str) -> np.ndarray:
    import skimage.data  # lazy: scikit-image's data module, only for the embedded bank

    img = np.asarray(getattr(skimage.data, name)())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # grey / RGBA conversion is expected here
        return load_image(img, name=name)


@functools.lru_cache(maxsize=8)
def _embedded_cached(patch_size: int, count: int, seed: int, exclude: tuple[str, ...]) -> PatchBank:
    names = [n for n in EMBEDDED_IMAGES if n not in exclude]
    if not names:
        raise PatchBankError("every embedded image is excluded; the bank would be empty")
    per_image = [count // len(names) + (1 if i < count % len(names) else 0) for i in range(len(names))]
    all_patches, all_tl, all_src = [], [], []
    for name, n in zip(names, per_image):
        if n == 0:
            continue
        image = _load_embedded(name)
        patches, tl = cut_patches(image, patch_size, count=n, rng=_image_rng(seed, name))
        all_patches.append(patches)
        all_tl.append(tl)
        all_src.append(np.full(n, name))
    patches = np.concatenate(all_patches)
    meta = {
        "source_image": _readonly(np.concatenate(all_src).astype(str)),
        "top_left": _readonly(np.concatenate(all_tl)),
    }
    bank = PatchBank(patches=patches, sharpness=patch_sharpness(patches), source="embedded:skimage", meta=meta)
    bank.patches = _readonly(bank.patches)
    bank.sharpness = _readonly(bank.sharpness)
    return bank
