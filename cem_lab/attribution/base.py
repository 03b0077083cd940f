"""What the gradient attributions share: the error, the result object, block aggregation and the
checked, differentiable model call.

Conventions (those of the CEM): the model input is a ``(1, 3, h, w)`` float tensor in [0, 1];
the output is ``(1, 3, h*s, w*s)``; the ROI is given in *output* pixels as a
:class:`~cem_lab.causal.grid.Roi`; blocks are those of :class:`~cem_lab.causal.grid.BlockGrid`
(``block`` output pixels, ``block // s`` input pixels), so an attribution map lies on the same
grid as a CE map of the same ROI and block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cem_lab.causal.grid import BlockGrid, Roi
from cem_lab.errors import CemLabError, InputError


class AttributionError(CemLabError, ValueError):
    """A model, ROI or objective that a gradient attribution cannot work with."""


NOT_DIFFERENTIABLE = (
    "gradient attributions (LAM, saliency, integrated gradients) need a differentiable torch model, "
    "a torch function whose output is connected to its input by autograd; {why}. The causal effect map "
    "(cem_lab.compute_cem) needs no gradients and still works with this model"
)


@dataclass
class AttributionMap:
    """One attribution of one ROI, per pixel of the input and per CEM block.

    ``attribution``: (C, h, w) float64 per input pixel and channel (Captum's convention: same shape
    as the input); ``pixel_map``: (h, w) its sum over channels; ``block_abs``: (rows, cols) sum of
    ``|attribution|`` over each block's pixels and channels; ``block_signed``: the same sum without
    the absolute value. ``roi_mask``: the blocks whose output extent meets the ROI (as in a
    :class:`~cem_lab.CEMResult`). ``objective_value``: the objective at the input. ``meta``:
    method settings and checks (e.g. the completeness delta ``sum(attribution) - (F(x) - F(x0))``).
    """

    method: str
    attribution: np.ndarray
    block_abs: np.ndarray
    block_signed: np.ndarray
    roi: Roi
    block: int
    scale: int
    input_shape: tuple[int, int]
    output_shape: tuple[int, int]
    roi_mask: np.ndarray
    objective: str
    objective_value: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def pixel_map(self) -> np.ndarray:
        """(h, w) attribution summed over channels."""
        return self.attribution.sum(axis=0)

    @property
    def grid(self) -> BlockGrid:
        """The CEM block grid that the block maps lie on."""
        return BlockGrid(self.input_shape[0], self.input_shape[1], self.scale, self.block)

    def block_map(self, signed: bool = False) -> np.ndarray:
        """The (rows, cols) block map: ``block_signed`` if ``signed`` else ``block_abs``."""
        return self.block_signed if signed else self.block_abs

    def ranking(self, signed: bool = False, exclude_roi: bool = True) -> np.ndarray:
        """Flat block indices, most important first (see :func:`~cem_lab.attribution.rank_blocks`)."""
        return rank_blocks(self.block_map(signed), exclude=self.roi_mask if exclude_roi else None)


def aggregate_blocks(pixels: np.ndarray | Tensor, grid: BlockGrid, reduce: str = "abs") -> np.ndarray:
    """Sum a per-pixel map over the blocks of ``grid`` -> (rows, cols) float64.

    ``pixels``: (h, w) or (C, h, w) (or (1, C, h, w)) on the input grid; channels are summed too.
    ``reduce``: ``"abs"`` sums ``|value|``, ``"signed"`` sums the values. Edge blocks are the
    partial boxes of :meth:`BlockGrid.box`.
    """
    if reduce not in ("abs", "signed"):
        raise InputError(f"reduce must be 'abs' or 'signed', got {reduce!r}")
    a = pixels.detach().double().cpu().numpy() if isinstance(pixels, Tensor) else np.asarray(pixels, dtype=np.float64)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3:
        a = (np.abs(a) if reduce == "abs" else a).sum(axis=0)
    elif a.ndim == 2:
        a = np.abs(a) if reduce == "abs" else a
    else:
        raise InputError(f"a per-pixel map must be (h, w) or (C, h, w), got shape {a.shape}")
    if a.shape != (grid.input_h, grid.input_w):
        raise InputError(
            f"map of {a.shape[0]}x{a.shape[1]} pixels does not match the block grid's "
            f"{grid.input_h}x{grid.input_w} input"
        )
    b = grid.block_in
    padded = np.zeros((grid.rows * b, grid.cols * b))
    padded[: grid.input_h, : grid.input_w] = a
    return padded.reshape(grid.rows, b, grid.cols, b).sum(axis=(1, 3))


# --- the model call ------------------------------------------------------------------------------
def model_device(model: Callable, fallback: torch.device) -> torch.device:
    """The device of the module's first parameter or buffer; ``fallback`` for other callables or an empty module."""
    if isinstance(model, nn.Module):
        p = next(iter(model.parameters()), None)
        if p is None:
            p = next(iter(model.buffers()), None)
        if p is not None:
            return p.device
    return fallback


def prepare_input(model: Callable, x, device: str | torch.device | None) -> Tensor:
    """The input as a fresh (1, C, h, w) float tensor (a normal tensor, even when ``x`` was made under
    inference mode) on the model's device."""
    if not callable(model):
        raise AttributionError(NOT_DIFFERENTIABLE.format(why=f"got a {type(model).__name__}, which is not callable"))
    if not isinstance(x, Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[0] != 1:
        raise AttributionError(f"the input must be one image, (C, h, w) or (1, C, h, w); got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise AttributionError(
            f"the input must be a float image in [0, 1] (cem_lab.images.from_uint8 makes one); got dtype {x.dtype}"
        )
    dev = torch.device(device) if device is not None else model_device(model, x.device)
    with torch.inference_mode(False):
        return x.detach().to(dev).clone()


def call_model(model: Callable, x: Tensor) -> Tensor:
    """``model(x)`` with the checks that gradients need: a 4-d torch tensor, connected to autograd."""
    try:
        out = model(x)
    except RuntimeError as err:
        text = str(err)
        if "requires grad" in text or "numpy" in text or "inference" in text.lower():
            raise AttributionError(
                NOT_DIFFERENTIABLE.format(
                    why=f"calling it on an input that requires grad failed ({text.splitlines()[0]})"
                )
            ) from err
        raise
    if isinstance(out, (list, tuple)) and out:
        out = out[0]
    if not isinstance(out, Tensor):
        raise AttributionError(NOT_DIFFERENTIABLE.format(why=f"it returned a {type(out).__name__}, not a torch tensor"))
    if out.dim() != 4 or out.shape[0] != x.shape[0]:
        raise AttributionError(
            f"the model returned {tuple(out.shape)} for an input of {tuple(x.shape)}; expected "
            "one image (N, C, H, W) per input"
        )
    if x.requires_grad and not out.requires_grad:
        raise AttributionError(
            NOT_DIFFERENTIABLE.format(
                why="its output does not require grad (it runs under torch.inference_mode or torch.no_grad, or "
                "detaches its result)"
            )
        )
    return out


def input_gradient(objective_values: Tensor, x: Tensor) -> Tensor:
    """d sum(objective_values) / d x, refused when the objective is not connected to ``x``."""
    if not objective_values.requires_grad:
        raise AttributionError(NOT_DIFFERENTIABLE.format(why="the objective of its output does not require grad"))
    (grad,) = torch.autograd.grad(objective_values.sum(), x, allow_unused=True)
    if grad is None:
        raise AttributionError(
            NOT_DIFFERENTIABLE.format(
                why="its output does not depend on the input through autograd (an operation such as .detach(), "
                ".numpy() or .item() cuts the graph)"
            )
        )
    return grad


def zero_gradient_error(objective_name: str, roi: Roi, where: str) -> AttributionError:
    """The error for an objective whose input gradient is zero everywhere, ``where`` saying at which input."""
    return AttributionError(
        f"the gradient of the objective {objective_name!r} of the ROI (top {roi.top}, left {roi.left}, size "
        f"{roi.size}) with respect to the input is identically zero {where}: the ROI output does not change "
        "with the input (for 'gradient', a flat ROI output has no gradient magnitude to change). Choose another "
        "ROI (one with structure, inside what the model uses) or another objective (e.g. 'roi_sum')"
    )


def make_map(
    method: str,
    attribution: Tensor,
    roi: Roi,
    block: int,
    scale: int,
    out_hw: tuple[int, int],
    objective: str,
    objective_value: float,
    meta: dict,
) -> AttributionMap:
    """An :class:`AttributionMap` from a (C, h, w) or (1, C, h, w) attribution, with its block sums and ROI mask."""
    attr = attribution.detach().double().cpu().numpy()
    if attr.ndim == 4:
        attr = attr[0]
    h, w = attr.shape[-2:]
    try:
        grid = BlockGrid(h, w, scale, block)
    except ValueError as err:
        raise AttributionError(str(err)) from err
    return AttributionMap(
        method,
        attr,
        aggregate_blocks(attr, grid, "abs"),
        aggregate_blocks(attr, grid, "signed"),
        roi,
        int(block),
        int(scale),
        (int(h), int(w)),
        (int(out_hw[0]), int(out_hw[1])),
        grid.roi_mask(roi),
        objective,
        float(objective_value),
        meta,
    )


def scale_of(x: Tensor, out: Tensor) -> int:
    """Output size / input size, one integer for both axes; raises :class:`AttributionError` otherwise."""
    h, w = x.shape[-2:]
    H, W = out.shape[-2:]
    if H % h or W % w or H // h != W // w:
        raise AttributionError(
            f"the output {H}x{W} is not an integer multiple of the input {h}x{w}; the block "
            "grid needs one scale for both axes"
        )
    return H // h


def check_block(h: int, w: int, scale: int, block: int) -> None:
    """Raise :class:`AttributionError` when ``block`` makes no block grid on an ``h`` x ``w`` input at ``scale``."""
    try:
        BlockGrid(h, w, scale, block)
    except ValueError as err:
        raise AttributionError(str(err)) from err


def _flat(values, what: str = "map") -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim not in (1, 2):
        raise AttributionError(f"a block {what} must be (rows, cols) or flat, got shape {a.shape}")
    return a.ravel()


def _exclude_mask(exclude, n: int) -> np.ndarray:
    if exclude is None:
        return np.zeros(n, dtype=bool)
    e = np.asarray(exclude)
    if e.dtype == bool:
        if e.size != n:
            raise AttributionError(f"exclude mask has {e.size} blocks, the map {n}")
        return e.ravel().copy()
    mask = np.zeros(n, dtype=bool)
    idx = e.astype(int).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise AttributionError(f"exclude indices must lie in [0, {n}), got {idx.tolist()[:10]}")
    mask[idx] = True
    return mask


def rank_blocks(block_map, *, exclude=None, by: str = "value", descending: bool = True) -> np.ndarray:
    """Flat block indices sorted by the map, most important first.

    ``by="value"`` ranks the signed values (a CE map: the blocks that help the ROI most first);
    ``by="abs"`` ranks ``|value|``. ``exclude``: a boolean mask or indices of blocks to leave out
    (e.g. ``amap.roi_mask`` or ``cem.roi_mask``); NaN blocks are left out too. Ties keep the
    block order (stable sort).
    """
    if by not in ("value", "abs"):
        raise AttributionError(f"by must be 'value' or 'abs', got {by!r}")
    v = _flat(block_map)
    keep = np.isfinite(v) & ~_exclude_mask(exclude, v.size)
    idx = np.flatnonzero(keep)
    key = np.abs(v[idx]) if by == "abs" else v[idx]
    order = np.argsort(-key if descending else key, kind="stable")
    return idx[order]
