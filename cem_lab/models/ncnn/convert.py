"""Convert an ncnn graph into a torch model, prove it against the ncnn runtime, cache the result.

::

    from cem_lab.models.ncnn.convert import convert_ncnn
    model, report = convert_ncnn("REALESRGAN_X4PLUS_UP4X.param", "REALESRGAN_X4PLUS_UP4X.bin",
                                 "~/.cache/cem_lab/ncnn")
    sr = model(x)              # (B, 3, H, W) RGB in [0, 1] -> (B, 3, 4H, 4W)

:func:`convert_ncnn` hashes the two source files (sha256). A cache entry
``<cache_dir>/<name>.<key>.safetensors`` + ``.json`` (``key`` from the converter version, both
digests and the wrapper options) that matches them is loaded: the JSON holds the graph spec, the wrapper's settings, the
source digests, the sha256 of the weights file, the agreement figures and the tool versions.
Otherwise the graph is converted (:mod:`~cem_lab.models.ncnn.format`,
:mod:`~cem_lab.models.ncnn.net`), checked against the ncnn runtime in fp32
(:func:`~cem_lab.models.ncnn.runtime.agreement`) and only if it passes :class:`Tolerance` written
to the cache: each file through a temporary file and ``os.replace`` (weights first, the JSON last:
the JSON is what makes an entry). Two processes converting the same graph at once write the same
weights bytes, so whichever files win, the entry is consistent. A cache entry that is unreadable,
whose weights do not hash to what its JSON says, or whose figures miss the asked tolerance, is
not used (it is converted again and replaced).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor

from cem_lab.io import PathLike, atomic_path, file_sha256, write_json
from cem_lab.models.checkpoint import CheckpointError, _file_mode
from cem_lab.models.ncnn.format import NcnnGraph, read_ncnn
from cem_lab.models.ncnn.net import Geometry, NcnnNet, NcnnSR, probe_geometry
from cem_lab.models.ncnn.runtime import NcnnRuntime, agreement, default_inputs

#: bump when a change to the converter changes what it produces (old cache entries then miss)
CONVERTER_VERSION = 1
CACHE_FORMAT = "cem_lab.ncnn_conversion/1"

__all__ = [
    "CACHE_FORMAT",
    "CONVERTER_VERSION",
    "PRO_AFFINE",
    "CacheFolderError",
    "ConversionError",
    "Tolerance",
    "cache_entry",
    "convert_ncnn",
    "detect_output_kind",
    "family_input_affine",
    "file_sha256",
    "load_cached",
    "tool_versions",
]

log = logging.getLogger("cem_lab")


class ConversionError(CheckpointError):
    """The torch port of an ncnn graph does not agree with the ncnn runtime within tolerance."""


class CacheFolderError(CheckpointError):
    """The conversion cache folder cannot be created or written."""


@dataclass(frozen=True)
class Tolerance:
    """What the torch port must reach against ncnn (fp32) to be accepted.

    ``uint8_equal_share``: at least this share of the 8-bit output values equal;
    ``uint8_max_diff``: at most this |diff| in 1/255 units; ``float_max_diff``: at most this
    |diff| of the raw graph outputs (float32)."""

    uint8_equal_share: float = 0.999
    uint8_max_diff: int = 2
    float_max_diff: float = 1e-3

    def failures(self, figures: dict) -> list[str]:
        """What ``figures`` (the port-vs-ncnn comparison) misses of this tolerance, one line each; empty when
        accepted."""
        out = []
        if figures["uint8_equal_share"] < self.uint8_equal_share:
            out.append(f"uint8 equal share {figures['uint8_equal_share']:.6f} < {self.uint8_equal_share}")
        if figures["uint8_max_diff"] > self.uint8_max_diff:
            out.append(f"uint8 max |diff| {figures['uint8_max_diff']}/255 > {self.uint8_max_diff}/255")
        if figures["float_max_diff"] > self.float_max_diff:
            out.append(f"float max |diff| {figures['float_max_diff']:.3g} > {self.float_max_diff:.3g}")
        return out


# --------------------------------------------------------------------------- helpers
def tool_versions() -> dict:
    """Versions of cem_lab, the converter, torch, ncnn, safetensors and Python, for the conversion report (None: not
    installed)."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cem_lab": version("cem_lab"),
        "converter": CONVERTER_VERSION,
        "torch": torch.__version__,
        "ncnn": version("ncnn"),
        "safetensors": version("safetensors"),
        "python": platform.python_version(),
    }


def _safe_stem(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".")
    return cleaned or "model"


def _psnr(a: Tensor, b: Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(1.0 / mse)).item()


def detect_output_kind(sr: NcnnSR) -> tuple[str, float]:
    """Whether the graph outputs the image (``"image"``) or a residual to add to the upsampled
    input (``"residual"``): a flat mid-grey input comes back near 0.5 from an image graph and near
    0 from a residual one (Real-CUGAN x4's graph, whose application adds the nearest-neighbour
    upsampled input). Returns the kind and the mean output."""
    probe = NcnnSR(sr.net, sr.geometry, sr.input_affine, sr.pad_mode, clamp=False, residual=None)
    side = max(8, sr.geometry.min_size - 2 * sr.prepad)
    with torch.no_grad():
        mean = float(probe(torch.full((1, sr.in_channels, side, side), 0.5)).mean())
    if abs(mean - 0.5) < 0.15:
        return "image", mean
    if abs(mean) < 0.15:
        return "residual", mean
    return "unclear", mean


def _plausibility(sr: NcnnSR, x: Tensor) -> float:
    """PSNR (dB) of the model's output against a bicubic upscale of ``x`` (``x`` itself at scale 1)."""
    with torch.no_grad():
        y = sr(x)
        ref = (
            x
            if sr.scale == 1
            else F.interpolate(x, scale_factor=sr.scale, mode="bicubic", align_corners=False).clamp(0, 1)
        )
    return _psnr(y, ref)


# --------------------------------------------------------------------------- cache
class _CacheMiss(Exception):
    pass


def _entry_paths(cache_dir: Path, name: str, key: str) -> tuple[Path, Path]:
    stem = f"{_safe_stem(name)}.{key}"
    return cache_dir / f"{stem}.safetensors", cache_dir / f"{stem}.json"


def _affine(param_path: Path, name: str, input_affine: str | Sequence[float]) -> tuple[float, ...]:
    if input_affine == "auto":
        return family_input_affine(f"{param_path.stem} {name}")
    return tuple(float(v) for v in input_affine)


def _cache_key(sources: dict, residual: str | None, affine: Sequence[float], pad_mode: str) -> str:
    """The cache key of a conversion: the converter version, both source digests and the wrapper options."""
    options = json.dumps({"residual": residual, "input_affine": list(affine), "pad_mode": pad_mode})
    text = f"{CONVERTER_VERSION}:{sources['param']}:{sources['bin']}:{options}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_entry(
    param_path: PathLike,
    bin_path: PathLike | None,
    cache_dir: PathLike,
    *,
    name: str | None = None,
    residual: str | None = "auto",
    input_affine: str | Sequence[float] = "auto",
    pad_mode: str = "replicate",
) -> Path:
    """The ``.json`` that :func:`convert_ncnn` with these arguments reads and writes in ``cache_dir`` (it
    exists once a verified conversion of these very source files has been cached; loading checks it again)."""
    param_path = Path(param_path)
    bin_path = Path(bin_path) if bin_path is not None else param_path.with_suffix(".bin")
    name = name or param_path.stem
    sources = {"param": file_sha256(param_path), "bin": file_sha256(bin_path)}
    key = _cache_key(sources, residual, _affine(param_path, name, input_affine), pad_mode)
    return _entry_paths(Path(cache_dir).expanduser(), name, key)[1]


def _build_from_entry(meta: dict, weights_path: Path) -> NcnnSR:
    cfg = dict(meta["model"])
    cfg.pop("_target_", None)
    net = NcnnNet(cfg.pop("net"))
    sr = NcnnSR(net, **cfg)
    state = load_file(str(weights_path), device="cpu")
    sr.load_state_dict(state, strict=True, assign=True)
    return sr.eval()


def load_cached(
    json_path: PathLike, sources: dict | None = None, tolerance: Tolerance | None = None
) -> tuple[NcnnSR, dict]:
    """Load a cache entry (its ``.json``; the ``.safetensors`` beside it). Raises
    :class:`ConversionError` when it is unreadable, does not match ``sources`` (``{"param":
    sha256, "bin": sha256}``), or its figures miss ``tolerance``."""
    try:
        return _load_entry(Path(json_path), sources, tolerance)
    except _CacheMiss as miss:
        raise ConversionError(f"cache entry {json_path} cannot be used: {miss}") from None


def _load_entry(json_path: Path, sources: dict | None, tolerance: Tolerance | None) -> tuple[NcnnSR, dict]:
    weights_path = json_path.with_suffix(".safetensors")
    if not json_path.is_file() or not weights_path.is_file():
        raise _CacheMiss("absent")
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, ValueError) as err:
        raise _CacheMiss(f"unreadable JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        raise _CacheMiss("not a conversion record")
    if meta.get("converter_version") != CONVERTER_VERSION:
        raise _CacheMiss(f"written by converter version {meta.get('converter_version')}")
    if sources is not None:
        have = {k: (meta.get("sources") or {}).get(k, {}).get("sha256") for k in ("param", "bin")}
        if have != sources:
            raise _CacheMiss("its source digests differ from the files given")
    if tolerance is not None:
        failed = tolerance.failures(
            meta.get("agreement") or {"uint8_equal_share": 0.0, "uint8_max_diff": 255, "float_max_diff": float("inf")}
        )
        if failed:
            raise _CacheMiss(f"its recorded agreement misses the tolerance ({'; '.join(failed)})")
    if file_sha256(weights_path) != meta.get("weights_sha256"):
        raise _CacheMiss("its weights file does not hash to the recorded sha256 (corrupt or replaced)")
    try:
        sr = _build_from_entry(meta, weights_path)
    except Exception as err:  # noqa: BLE001 - any failure to rebuild makes the entry unusable
        raise _CacheMiss(f"cannot rebuild the model ({type(err).__name__}: {err})") from None
    return sr, meta


def _check_writable(cache_dir: Path) -> None:
    hint = "pass another cache_dir (a writable folder)"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheFolderError(
            f"cannot create the ncnn conversion cache folder {cache_dir}: {err.strerror or err}; {hint}"
        ) from err
    if not os.access(cache_dir, os.W_OK | os.X_OK):
        raise CacheFolderError(f"the ncnn conversion cache folder {cache_dir} is not writable; {hint}")


def _write_entry(sr: NcnnSR, meta: dict, weights_path: Path, json_path: Path) -> str:
    """Write the weights, then the JSON that makes the entry; return the weights' sha256."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in sr.state_dict().items()}
    try:
        with atomic_path(weights_path) as tmp:
            # one metadata key: safetensors writes its metadata map in a per-process random order, and
            # two processes racing to write one entry must write the same bytes (the JSON beside it
            # records the weights' sha256; the entry's key is in that JSON and in the file name)
            save_file(tensors, str(tmp), metadata={"format": "pt"})
            os.chmod(tmp, _file_mode())  # save_file recreates the temporary file as 0600
        digest = file_sha256(weights_path)
        write_json(json_path, {**meta, "weights_sha256": digest})
    except OSError as err:
        raise CacheFolderError(
            f"cannot write to the ncnn conversion cache folder {weights_path.parent}: "
            f"{err.strerror or err}; pass another cache_dir (a writable folder)"
        ) from err
    return digest


# --------------------------------------------------------------------------- conversion
#: Real-CUGAN "pro" graphs take ``0.7 x + 0.15`` and return their output in that range, as
#: Real-CUGAN's own pro inference does. Measured on blocks of saturated colours: on plain [0, 1]
#: input the pro graphs leave the range by orders of magnitude (x3: |y - 0.5| up to 6e5), on
#: ``0.7 x + 0.15`` black and white come back at 0.15 / 0.85 (x3 stays within [-0.3, 1.3] after
#: the inverse). The SE graphs stay in range on plain input. The other families take plain [0, 1].
PRO_AFFINE = (0.7, 0.15)


def family_input_affine(name: str) -> tuple[float, float]:
    """The input affine the graph family named ``name`` (a file stem) needs: Real-CUGAN pro's
    ``(0.7, 0.15)``, else ``(1, 0)``. The graph itself does not say, so the name does."""
    upper = name.upper()
    return PRO_AFFINE if "CUGAN" in upper and "PRO" in upper else (1.0, 0.0)


def _build_model(
    graph: NcnnGraph, residual: str | None, input_affine: Sequence[float], pad_mode: str
) -> tuple[NcnnSR, dict]:
    """The torch port of ``graph`` in its SR wrapper, and the facts found on the way."""
    net = NcnnNet(graph).eval()
    geometry: Geometry = probe_geometry(net)
    sr = NcnnSR(net, geometry, input_affine=input_affine, pad_mode=pad_mode, residual=None)
    kind, mean = detect_output_kind(sr)
    facts: dict[str, Any] = {
        "geometry": geometry.to_dict(),
        "output_kind": kind,
        "flat_grey_mean_output": round(mean, 5),
        "warnings": [],
    }
    if residual == "auto":
        residual = "nearest" if kind == "residual" else None
        if kind == "unclear":
            facts["warnings"].append(
                f"a flat 0.5 input gives a mean output of {mean:.3f}: neither an "
                "image nor a residual; treated as an image"
            )
    sr.residual = residual
    facts["residual"] = residual
    return sr.eval(), facts


def convert_ncnn(
    param_path: PathLike,
    bin_path: PathLike | None = None,
    cache_dir: PathLike | None = None,
    *,
    name: str | None = None,
    verify: bool = True,
    tolerance: Tolerance | None = None,
    inputs: Sequence[tuple[str, Tensor]] | None = None,
    check_size: int = 32,
    compare_default: bool = True,
    residual: str | None = "auto",
    input_affine: str | Sequence[float] = "auto",
    pad_mode: str = "replicate",
) -> tuple[NcnnSR, dict]:
    """The ncnn graph ``param_path`` / ``bin_path`` (default: the ``.bin`` beside it) as a verified
    :class:`NcnnSR`, and a report.

    ``cache_dir``: where verified conversions are kept (None: no cache). ``name``: the entry's
    name (default: the ``.param`` stem). ``verify``: check against the ncnn runtime (needs
    ``pip install ncnn``); with ``verify=False`` a matching cache entry is still loaded, but a new
    conversion is not cached. ``tolerance``: :class:`Tolerance` (default: 99.9 % of 8-bit values
    equal, max 2/255, raw float max 1e-3). ``inputs`` / ``check_size``: the check images
    (default: :func:`~cem_lab.models.ncnn.runtime.default_inputs` of ``check_size`` px).
    ``compare_default``: also measure against ncnn's default (fp16-storage) CPU options, for the
    report only. ``residual``: ``"auto"`` (detected, :func:`detect_output_kind`), None,
    ``"nearest"`` or ``"bicubic"``. ``input_affine``: ``"auto"`` (:func:`family_input_affine` of
    the file stem and ``name``) or ``(a, b)``; ``pad_mode``: see :class:`NcnnSR`. These options are part of the
    cache key.

    Raises :class:`~cem_lab.models.ncnn.format.NcnnFormatError` for unreadable graphs,
    :class:`ConversionError` when verification fails (nothing is cached), :class:`CacheFolderError`
    when the cache folder is not writable.
    """
    param_path = Path(param_path)
    bin_path = Path(bin_path) if bin_path is not None else param_path.with_suffix(".bin")
    name = name or param_path.stem
    tolerance = tolerance or Tolerance()
    for path in (param_path, bin_path):
        if not path.is_file():
            raise CheckpointError(f"ncnn file not found: {path}")
    sources = {"param": file_sha256(param_path), "bin": file_sha256(bin_path)}
    affine_source = "family rule" if input_affine == "auto" else "given"
    affine = _affine(param_path, name, input_affine)
    key = _cache_key(sources, residual, affine, pad_mode)
    report: dict[str, Any] = {
        "name": name,
        "key": key,
        "sources": {
            "param": {"path": str(param_path), "sha256": sources["param"], "bytes": param_path.stat().st_size},
            "bin": {"path": str(bin_path), "sha256": sources["bin"], "bytes": bin_path.stat().st_size},
        },
        "cache": {"dir": str(cache_dir) if cache_dir is not None else None},
    }

    weights_path = json_path = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir).expanduser()
        weights_path, json_path = _entry_paths(cache_dir, name, key)
        report["cache"].update(weights=str(weights_path), json=str(json_path))
        try:
            sr, meta = _load_entry(json_path, sources, tolerance if verify else None)
        except _CacheMiss as miss:
            report["cache"]["lookup"] = "miss" if str(miss) == "absent" else f"not used: {miss}"
            report["cache"]["status"] = "not written"
        else:
            report["cache"]["lookup"] = report["cache"]["status"] = "hit"
            report["cache"]["weights_sha256"] = meta["weights_sha256"]
            report.update(
                {
                    k: meta[k]
                    for k in (
                        "facts",
                        "agreement",
                        "agreement_default",
                        "tolerance",
                        "versions",
                        "created",
                        "plausibility",
                    )
                    if k in meta
                }
            )
            report["converted"] = False
            return sr, report
        if verify:  # fail before the work, not after it
            _check_writable(cache_dir)
    else:
        report["cache"]["lookup"] = report["cache"]["status"] = "disabled"

    started = time.perf_counter()
    log.info(
        "%s: first use: converting its ncnn graph to torch%s",
        name,
        f", checking it against the ncnn runtime and caching it in {cache_dir}" if verify and cache_dir else "",
    )
    graph = read_ncnn(param_path, bin_path)
    sr, facts = _build_model(graph, residual, affine, pad_mode)
    facts.update(
        {
            "channel_order": "RGB",
            "value_range": [0.0, 1.0],
            "pad_mode": pad_mode,
            "input_affine": list(sr.input_affine),
            "input_affine_source": affine_source,
            "layers": len(graph.layers),
            "weights": graph.weight_count(),
        }
    )
    report["facts"] = facts
    report["converted"] = True
    check_inputs = None
    if verify or inputs is not None:
        check_inputs = list(inputs) if inputs is not None else default_inputs(check_size)
        report["plausibility"] = {
            "input": check_inputs[0][0],
            "psnr_vs_bicubic_db": round(_plausibility(sr, check_inputs[0][1]), 2),
        }
    if not verify:
        report["agreement"] = None
        report["convert_seconds"] = round(time.perf_counter() - started, 2)
        return sr, report

    figures = agreement(sr, NcnnRuntime(param_path, bin_path, precision="fp32"), check_inputs)
    report["agreement"] = figures
    report["tolerance"] = asdict(tolerance)
    if compare_default:
        report["agreement_default"] = agreement(
            sr, NcnnRuntime(param_path, bin_path, precision="default"), check_inputs
        )
    failed = tolerance.failures(figures)
    if failed:
        raise ConversionError(
            f"the torch port of {param_path.name} does not agree with the ncnn runtime (fp32): "
            f"{'; '.join(failed)} (float max |diff| {figures['float_max_diff']:.3g}, uint8 equal "
            f"{100 * figures['uint8_equal_share']:.4f} %, uint8 max |diff| {figures['uint8_max_diff']}/255); "
            "nothing was cached"
        )
    report["versions"] = tool_versions()
    report["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["convert_seconds"] = round(time.perf_counter() - started, 2)
    if weights_path is not None and json_path is not None:
        meta = {
            "format": CACHE_FORMAT,
            "converter_version": CONVERTER_VERSION,
            "name": name,
            "key": key,
            "sources": report["sources"],
            "model": sr.config(),
            **{
                k: report[k]
                for k in ("facts", "agreement", "agreement_default", "tolerance", "plausibility", "versions", "created")
                if k in report
            },
        }
        report["cache"]["weights_sha256"] = _write_entry(sr, meta, weights_path, json_path)
        report["cache"]["status"] = "written"
    return sr, report
