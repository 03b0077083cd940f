"""Plain gradient attributions of the ROI objective: saliency and integrated gradients (Captum).

- :class:`Saliency`: ``|dF / dx|`` per input pixel and channel at the input (Simonyan et al.
  2014; ``abs=False`` keeps the sign), one forward and one backward pass.
- :class:`IntegratedGradients`: Sundararajan et al. 2017 through Captum's
  ``captum.attr.IntegratedGradients`` (not re-implemented here), from a black baseline (zeros) by
  default, or a blurred copy of the input (``baseline="blur"``, the LAM baseline without LAM's
  blur path), or any tensor / number.

Both are aggregated on the CEM block grid like :class:`~cem_lab.attribution.LAM`. Captum is an
optional dependency (the ``dev`` extra of cem_lab); it is imported only by
:class:`IntegratedGradients`.

Integrated gradients are complete in the limit of many steps: the attributions sum to the objective's
change from the baseline. When the sum misses that change by more than :data:`IG_COMPLETENESS_TOL` of it,
the map says so (``meta["completeness_warning"]``, one log line) with the gap and the fix, more steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm import tqdm

from cem_lab.attribution._setup import forward_objective, grad_mode, setup
from cem_lab.attribution.base import AttributionError, AttributionMap, make_map, zero_gradient_error
from cem_lab.attribution.objective import ObjectiveLike
from cem_lab.causal.interventions import gaussian_blur

log = logging.getLogger("cem_lab")

#: integrated gradients warn when their sum misses the objective's change by more than this share of it
IG_COMPLETENESS_TOL = 0.01

IG_METHODS = ("gausslegendre", "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid")


class Saliency:
    """``Saliency(model).attribute(x, roi, block=8)``: the gradient of the ROI objective at the input."""

    method = "saliency"

    def __init__(self, model: Callable, *, device: str | torch.device | None = None):
        self.model, self.device = model, device

    def attribute(
        self,
        inputs,
        roi,
        *,
        block: int = 8,
        objective: ObjectiveLike = "gradient",
        channels: str = "rgb",
        abs: bool = True,
    ) -> AttributionMap:
        """``attribution`` = ``|dF/dx|`` (``abs=True``) or ``dF/dx``; per block, sums as for LAM."""
        with grad_mode():
            s = setup(self.model, inputs, roi, block, objective, channels, self.device)
        if not bool((s.grad != 0).any()):
            raise zero_gradient_error(s.objective.name, s.objective.roi, "at the input")
        attr = s.grad.abs() if abs else s.grad
        meta = {"abs": bool(abs), "objective": s.objective.describe(), "device": str(s.x.device)}
        return make_map(self.method, attr, s.objective.roi, block, s.scale, s.out_hw, s.objective.name, s.value, meta)


class IntegratedGradients:
    """``IntegratedGradients(model).attribute(x, roi, block=8)``: Captum's IG of the ROI objective.

    ``meta["delta"]`` is Captum's convergence delta ``sum(attribution) - (F(x) - F(baseline))``.
    """

    method = "integrated_gradients"

    def __init__(self, model: Callable, *, device: str | torch.device | None = None):
        self.model, self.device = model, device

    @staticmethod
    def baseline_for(x: Tensor, baseline: str | float | Tensor, blur_sigma: float) -> Tensor:
        """The IG baseline as a tensor of ``x``'s shape: ``"black"`` (zeros), ``"blur"`` (Gaussian of
        ``blur_sigma`` input pixels), a constant, or a given tensor of the input's shape."""
        if isinstance(baseline, str):
            if baseline == "black":
                return torch.zeros_like(x)
            if baseline == "blur":
                if not blur_sigma > 0:
                    raise AttributionError(f"blur_sigma must be positive, got {blur_sigma}")
                return gaussian_blur(x, float(blur_sigma))
            raise AttributionError(f"baseline must be 'black', 'blur', a number or a tensor, got {baseline!r}")
        if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
            return torch.full_like(x, float(baseline))
        if isinstance(baseline, Tensor):
            b = baseline.detach().to(x.device, x.dtype)
            if b.dim() == 3:
                b = b[None]
            if tuple(b.shape) != tuple(x.shape):
                raise AttributionError(
                    f"a baseline tensor must have the input's shape {tuple(x.shape)}, got {tuple(baseline.shape)}"
                )
            return b
        raise AttributionError(f"baseline must be 'black', 'blur', a number or a tensor, got {type(baseline).__name__}")

    def attribute(
        self,
        inputs,
        roi,
        *,
        block: int = 8,
        objective: ObjectiveLike = "gradient",
        channels: str = "rgb",
        baseline: str | float | Tensor = "black",
        blur_sigma: float = 1.2,
        steps: int = 50,
        method: str = "gausslegendre",
        batch_size: int | None = 8,
        progress: bool = True,
    ) -> AttributionMap:
        """``steps`` and ``method``: Captum's ``n_steps`` and ``method``; ``batch_size``: its
        ``internal_batch_size`` (path points per forward / backward; None = all at once)."""
        try:
            from captum.attr import IntegratedGradients as CaptumIG  # lazy: Captum, only for integrated gradients
        except ImportError as err:  # pragma: no cover - captum is in the dev extra
            raise AttributionError(
                "integrated gradients use Captum: pip install captum (it comes with cem_lab's 'dev' extra)"
            ) from err

        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise AttributionError(f"steps must be a positive integer, got {steps!r}")
        if method not in IG_METHODS:
            raise AttributionError(f"method must be one of {list(IG_METHODS)}, got {method!r}")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise AttributionError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        with grad_mode():
            s = setup(self.model, inputs, roi, block, objective, channels, self.device)
            base = self.baseline_for(s.x, baseline, blur_sigma)
            bar = tqdm(total=steps, desc="IG", unit="step", disable=not progress, dynamic_ncols=True)

            def forward(x: Tensor) -> Tensor:
                out = forward_objective(s.model, s.objective, x)
                if x.requires_grad:
                    bar.update(x.shape[0])
                return out

            try:
                attr, delta = CaptumIG(forward).attribute(
                    s.x,
                    baselines=base,
                    n_steps=steps,
                    method=method,
                    internal_batch_size=batch_size,
                    return_convergence_delta=True,
                )
            finally:
                bar.close()
            with torch.no_grad():
                base_value = float(forward_objective(s.model, s.objective, base)[0])
        if not bool((attr != 0).any()):
            if bool((base == s.x).all()):
                raise AttributionError(
                    "the baseline equals the input: integrated gradients have nothing to "
                    "attribute; use another baseline"
                )
            raise zero_gradient_error(s.objective.name, s.objective.roi, "along the integrated-gradients path")
        label = baseline if isinstance(baseline, str) else "tensor" if isinstance(baseline, Tensor) else "constant"
        delta_value = float(delta.detach().reshape(-1)[0])
        meta = {
            "baseline": label,
            "blur_sigma": float(blur_sigma) if label == "blur" else None,
            "steps": int(steps),
            "method": method,
            "batch_size": batch_size,
            "objective": s.objective.describe(),
            "baseline_objective": base_value,
            "delta": delta_value,
            "device": str(s.x.device),
        }
        warning = completeness_warning(float(attr.sum()), s.value - base_value, steps)
        if warning:
            meta["completeness_warning"] = warning
            log.warning(warning)
        return make_map(self.method, attr, s.objective.roi, block, s.scale, s.out_hw, s.objective.name, s.value, meta)


def completeness_warning(attribution_sum: float, objective_change: float, steps: int) -> str | None:
    """One line when integrated gradients' ``attribution_sum`` misses the ``objective_change`` from the
    baseline by more than :data:`IG_COMPLETENESS_TOL` of it (None otherwise, or when it does not change)."""
    if objective_change == 0:
        return None
    relative = abs(attribution_sum - objective_change) / abs(objective_change)
    if relative <= IG_COMPLETENESS_TOL:
        return None
    return (
        f"integrated gradients are {relative:.2%} off completeness (more than {IG_COMPLETENESS_TOL:.0%}): the "
        f"attributions sum to {attribution_sum:.4g}, the objective changes by {objective_change:.4g} from the "
        f"baseline; {steps} steps are too few for this model: raise them (attribution.ig.steps)"
    )
