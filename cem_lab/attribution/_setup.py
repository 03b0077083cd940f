"""The checked start of every gradient attribution: input on the model's device, one forward and
backward at the input, ROI and block checked against the output."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cem_lab.attribution.base import call_model, check_block, input_gradient, prepare_input, scale_of
from cem_lab.attribution.objective import ObjectiveLike, RoiObjective, make_objective


@dataclass
class Setup:
    model: Callable
    x: Tensor  # (1, C, h, w) on the model's device, no grad
    objective: RoiObjective
    scale: int
    out_hw: tuple[int, int]
    value: float  # objective at the input
    grad: Tensor  # d objective / d input at the input, (1, C, h, w)


def grad_mode() -> contextlib.ExitStack:
    """Gradients on, whatever the caller's context (``torch.no_grad`` or ``torch.inference_mode``)."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode(False))
    stack.enter_context(torch.enable_grad())
    return stack


def forward_objective(model: Callable, objective: RoiObjective, x: Tensor) -> Tensor:
    """Objective values (N,) of a batch of inputs (the checks of :func:`call_model` included)."""
    return objective(call_model(model, x))


def setup(
    model: Callable, inputs, roi, block: int, objective: ObjectiveLike, channels: str, device: str | torch.device | None
) -> Setup:
    if isinstance(model, nn.Module):
        model.eval()
    x = prepare_input(model, inputs, device)
    obj = make_objective(objective, roi, channels)
    xg = x.clone().requires_grad_(True)
    out = call_model(model, xg)
    scale = scale_of(x, out)
    obj.check(out.shape[-2], out.shape[-1])
    check_block(x.shape[-2], x.shape[-1], scale, block)
    value = obj(out)
    grad = input_gradient(value, xg)
    return Setup(
        model, x, obj, scale, (int(out.shape[-2]), int(out.shape[-1])), float(value.detach()[0]), grad.detach()
    )
