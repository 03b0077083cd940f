"""Run original ncnn graphs with the ``ncnn`` runtime (pip ``ncnn``) and measure how closely the
torch port (:class:`~cem_lab.models.ncnn.net.NcnnSR`) agrees with it.

:class:`NcnnRuntime` loads a ``.param`` / ``.bin`` pair on the CPU. By default it computes in
fp32 (Vulkan off; fp16 storage / arithmetic / packing and bf16 off), for a tight comparison;
``precision="default"`` keeps ncnn's own CPU defaults (fp16 storage and packing where the CPU
supports them), which is what the applications ship with.

:func:`agreement` runs both on the same images through the wrapper's own pre- and
post-processing (:meth:`NcnnSR.prepare` / :meth:`NcnnSR.finish`), so the ncnn runtime only ever
sees input sizes the graph takes (ncnn does not check: a size the graph cannot take may crash the
process).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skimage import data
from torch import Tensor

from cem_lab.errors import InputError
from cem_lab.io import PathLike
from cem_lab.models.checkpoint import CheckpointError
from cem_lab.models.ncnn.net import NcnnSR

__all__ = [
    "FP32_OPTIONS",
    "NcnnNotInstalled",
    "NcnnRuntime",
    "NcnnRuntimeError",
    "agreement",
    "compare_outputs",
    "default_inputs",
    "ncnn_version",
    "require_ncnn",
]

#: the ncnn options that make the CPU path compute in fp32
FP32_OPTIONS = {
    "use_vulkan_compute": False,
    "use_fp16_storage": False,
    "use_fp16_arithmetic": False,
    "use_fp16_packed": False,
    "use_bf16_storage": False,
    "use_bf16_packed": False,
}


class NcnnNotInstalled(ImportError):
    """The ``ncnn`` Python package is missing."""


class NcnnRuntimeError(CheckpointError):
    """The ncnn runtime refused a graph, or failed on an input."""


def require_ncnn() -> Any:
    """The ``ncnn`` module, or :class:`NcnnNotInstalled` saying how to install it."""
    try:
        import ncnn  # lazy: optional package (cem_lab[pretrained])
    except ImportError as err:
        raise NcnnNotInstalled(
            "the ncnn runtime is needed to verify a converted ncnn graph, and it is not installed: "
            "pip install ncnn (or pip install 'cem_lab[pretrained]'); or convert with verify=False "
            f"({err})"
        ) from err
    return ncnn


def ncnn_version() -> str | None:
    """The installed ncnn package version, or None."""
    try:
        return metadata.version("ncnn")
    except metadata.PackageNotFoundError:
        return None


class NcnnRuntime:
    """An ncnn graph loaded in the ncnn runtime, on the CPU.

    ``precision``: ``"fp32"`` (the default, :data:`FP32_OPTIONS`) or ``"default"`` (ncnn's own
    options, Vulkan off). ``run`` maps ``(B, C, H, W)`` float32 tensors to the output blob,
    one batch item at a time.
    """

    def __init__(
        self, param_path: PathLike, bin_path: PathLike, precision: str = "fp32", num_threads: int | None = None
    ):
        ncnn = require_ncnn()
        if precision not in ("fp32", "default"):
            raise InputError(f"precision must be 'fp32' or 'default', got {precision!r}")
        self.param_path, self.bin_path, self.precision = Path(param_path), Path(bin_path), precision
        self._ncnn = ncnn
        self.net = ncnn.Net()
        options = FP32_OPTIONS if precision == "fp32" else {"use_vulkan_compute": False}
        for key, value in options.items():  # options must be set before loading
            if hasattr(self.net.opt, key):
                setattr(self.net.opt, key, value)
        self.net.opt.num_threads = int(num_threads or torch.get_num_threads())
        if self.net.load_param(str(self.param_path)) != 0:
            raise NcnnRuntimeError(f"the ncnn runtime cannot load {self.param_path}")
        if self.net.load_model(str(self.bin_path)) != 0:
            raise NcnnRuntimeError(f"the ncnn runtime cannot load the weights {self.bin_path}")
        self.input_names = list(self.net.input_names())
        self.output_names = list(self.net.output_names())
        if len(self.input_names) != 1 or len(self.output_names) != 1:
            raise NcnnRuntimeError(
                f"{self.param_path}: expected one input and one output blob, got "
                f"{self.input_names} and {self.output_names}"
            )

    def options(self) -> dict:
        """The :data:`FP32_OPTIONS` as set on the loaded net (those this ncnn build has)."""
        return {key: bool(getattr(self.net.opt, key)) for key in FP32_OPTIONS if hasattr(self.net.opt, key)}

    def run(self, x: Tensor) -> Tensor:
        """The graph's output for a ``(B, C, H, W)`` batch (sizes the graph takes only)."""
        if x.dim() != 4:
            raise InputError(f"expected a (B, C, H, W) batch, got {tuple(x.shape)}")
        outs = []
        for item in x.detach().to("cpu", torch.float32):
            with self.net.create_extractor() as ex:
                ex.input(self.input_names[0], self._mat(item.numpy()))
                ret, out = ex.extract(self.output_names[0])
                if ret != 0:
                    raise NcnnRuntimeError(f"ncnn failed on a {tuple(item.shape)} input (code {ret})")
                outs.append(self._tensor(out))
        return torch.stack(outs)

    def _mat(self, data: np.ndarray) -> Any:
        """A 3-D ncnn Mat holding ``data`` (C, H, W). ``ncnn.Mat(array)`` would wrap the array with
        a channel step of ``H * W``, but ncnn's layers expect each channel to start 16-byte
        aligned; so allocate an ncnn Mat and copy into its (strided) memory."""
        c, h, w = data.shape
        mat = self._ncnn.Mat(w, h, c)
        view = np.array(mat, copy=False)
        if view.shape != data.shape:
            raise NcnnRuntimeError(f"unexpected ncnn Mat layout {view.shape} for {data.shape}")
        view[...] = data
        return mat

    @staticmethod
    def _tensor(mat: Any) -> Tensor:
        """An ncnn output Mat as (C, H, W): 1-D blobs (pooled vectors) become (C, 1, 1)."""
        out = np.array(mat, dtype=np.float32, copy=True)
        if out.ndim == 1:
            out = out[:, None, None]
        elif out.ndim == 2:
            out = out[None]
        return torch.from_numpy(np.ascontiguousarray(out))


def default_inputs(size: int = 32, seed: int = 0) -> list[tuple[str, Tensor]]:
    """The check images: ``size``-px crops of two scikit-image photos, and a seeded uniform-noise
    image, each ``(1, 3, size, size)`` RGB in [0, 1]."""

    def crop(img: np.ndarray, top: int, left: int) -> Tensor:
        patch = img[top : top + size, left : left + size]
        return torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)[None].float() / 255.0

    gen = torch.Generator().manual_seed(seed)
    return [
        ("astronaut", crop(data.astronaut(), 100, 180)),
        ("chelsea", crop(data.chelsea(), 80, 150)),
        (f"random(seed={seed})", torch.rand(1, 3, size, size, generator=gen)),
    ]


def compare_outputs(torch_raw: Tensor, ncnn_raw: Tensor, torch_img: Tensor, ncnn_img: Tensor) -> dict:
    """Figures for one input: float max / mean |diff| of the raw graph outputs, and of the final
    images after rounding to 8 bits (share of equal values, max |diff| in 1/255 units)."""
    if torch_raw.shape != ncnn_raw.shape:
        raise NcnnRuntimeError(
            f"the torch port's output {tuple(torch_raw.shape)} and ncnn's {tuple(ncnn_raw.shape)} differ in shape"
        )
    diff = (torch_raw.double() - ncnn_raw.double()).abs()
    a = torch.round(torch_img.clamp(0, 1) * 255).to(torch.int16)
    b = torch.round(ncnn_img.clamp(0, 1) * 255).to(torch.int16)
    d8 = (a - b).abs()
    return {
        "float_max_diff": float(diff.max()),
        "float_mean_diff": float(diff.mean()),
        "uint8_equal_share": float((d8 == 0).double().mean()),
        "uint8_max_diff": int(d8.max()),
        "values": int(a.numel()),
    }


def _summary(items: list[dict]) -> dict:
    total = sum(i["values"] for i in items)
    return {
        "float_max_diff": max(i["float_max_diff"] for i in items),
        "float_mean_diff": sum(i["float_mean_diff"] * i["values"] for i in items) / total,
        "uint8_equal_share": sum(i["uint8_equal_share"] * i["values"] for i in items) / total,
        "uint8_max_diff": max(i["uint8_max_diff"] for i in items),
        "values": total,
    }


def agreement(sr: NcnnSR, runtime: NcnnRuntime, inputs: Sequence[tuple[str, Tensor]] | None = None) -> dict:
    """Compare the torch port ``sr`` with the ncnn ``runtime`` of the same graph on ``inputs``
    (``[(label, (1, 3, H, W) tensor)]``, default :func:`default_inputs`).

    Returns the overall figures (:func:`compare_outputs`, worst case over the inputs; shares
    pooled), ``per_input`` figures and ``precision``.
    """
    inputs = list(inputs) if inputs is not None else default_inputs()
    per_input = []
    was_training = sr.training
    sr.eval()
    try:
        for label, x in inputs:
            padded, size = sr.prepare(x)
            with torch.no_grad():
                raw_t = sr.net(padded)
            raw_n = runtime.run(padded)
            with torch.no_grad():
                img_t = sr.finish(raw_t, size, x)
                img_n = sr.finish(raw_n.to(raw_t.dtype), size, x)
            per_input.append({"input": label, "shape": list(x.shape), **compare_outputs(raw_t, raw_n, img_t, img_n)})
    finally:
        sr.train(was_training)
    return {**_summary(per_input), "precision": runtime.precision, "per_input": per_input}
