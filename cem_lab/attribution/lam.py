"""LAM, Local Attribution Maps (Gu & Dong, "Interpreting Super-Resolution Networks with Local
Attribution Maps", CVPR 2021), implemented from the paper's definition.

LAM is a path-integrated gradient whose path goes from a heavily blurred copy of the input (the
baseline, with no high frequencies) to the input itself, by un-blurring it progressively:

    x(alpha) = blur_{sigma(alpha)}(x),   sigma(alpha) = (1 - alpha) * sigma_max,   alpha in [0, 1]

(the path function of the paper: linear in alpha *of the blur sigma*; x(0) = blur_{sigma_max}(x)
is the baseline, x(1) = x since a blur of sigma 0 is the identity). The attribution of input
pixel (and channel) i is

    LAM_i = integral_0^1  dF(x(alpha)) / dx_i  *  dx_i(alpha) / dalpha  dalpha

with F the ROI objective (:mod:`cem_lab.attribution.objective`, LAM's gradient magnitude by
default). With ``steps`` = n and alpha_k = k / n, x_k = x(alpha_k), the integral is approximated
with the exact finite differences of the path (dx/dalpha dalpha ~ x_k - x_{k-1}):

- ``integration="riemann_right"`` (the LAM reference code): sum_k g(x_k) . (x_k - x_{k-1}),
  k = 1..n (n gradient evaluations; the baseline itself is not evaluated);
- ``integration="trapezoid"``: sum_k (g(x_k) + g(x_{k-1})) / 2 . (x_k - x_{k-1}) (n + 1
  evaluations; second order in 1/n on a smooth objective).

Both telescope: for an objective linear in the input, the gradient is constant along the path and
the map is exactly ``g . (x - x(0))``; in general ``sum(map) ~ F(x) - F(x(0))`` (completeness;
``meta["delta"]`` reports the gap). The blur is :func:`cem_lab.causal.interventions.gaussian_blur`
(separable, radius ``round(3 sigma)``, reflect padding, as the ``blur`` baseline intervention);
the reference defaults are ``sigma_max = 1.2`` and 50 steps.

Tasks other than SR (denoising, deraining, JPEG): LAM is defined for SR, and nothing here refuses the others.
``x`` is always the *model's input*: the LR image for SR, the degraded image (noisy, rainy, compressed) for
DN / DR / JPEG. The baseline is therefore the blurred degraded input and the path un-blurs it back to the
degraded input: it attributes what the high frequencies of the degraded image, the image's edges and the
degradation's own (noise grains, thin rain streaks, block edges) together, do to the ROI objective. The
blur removes much of the degradation but not all of it: white noise blurred at sigma 1.2 keeps roughly a
quarter of its standard deviation (1 / sqrt(4 pi sigma^2)), so at sigma 50 about 12 grey levels remain in
the baseline. ``meta["baseline"]`` says which input was blurred. Read a DN / DR LAM map as "where the
model takes its detail from in the degraded input", not as a path from a clean image, which the model
never sees.

LAM's diffusion index of a map (Gini coefficient of ``|pixel_map|``): :mod:`cem_lab.attribution.diffusion`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from cem_lab.attribution._setup import forward_objective, grad_mode, setup
from cem_lab.attribution.base import AttributionError, AttributionMap, input_gradient, make_map, zero_gradient_error
from cem_lab.attribution.objective import ObjectiveLike
from cem_lab.causal.interventions import gaussian_blur

INTEGRATIONS = ("riemann_right", "trapezoid")


def blur_path(x: Tensor, sigma_max: float, steps: int) -> tuple[np.ndarray, Tensor]:
    """The LAM path: sigmas (steps + 1,) from ``sigma_max`` down to 0 and the images
    (steps + 1, C, h, w); image 0 is the baseline, the last one is ``x`` itself."""
    sigmas = float(sigma_max) * (1.0 - np.arange(steps + 1) / steps)
    sigmas[-1] = 0.0
    images = torch.cat([gaussian_blur(x, float(s)) if s > 0 else x for s in sigmas])
    return sigmas, images


class LAM:
    """Local Attribution Maps: ``LAM(model).attribute(x, roi, block=8)`` -> :class:`AttributionMap`.

    ``model``: a differentiable torch callable (1, 3, h, w) -> (1, 3, h*s, w*s); it runs on its own
    device (that of its first parameter, or ``device``), and nn.Modules are put in eval mode.
    """

    method = "lam"

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
        sigma_max: float = 1.2,
        steps: int = 50,
        batch_size: int = 8,
        integration: str = "riemann_right",
        progress: bool = True,
    ) -> AttributionMap:
        """Attribute the ROI objective to the input pixels along the blur path (module docstring).

        ``roi``: (top, left, size) in output pixels; ``block``: the CEM block in output pixels
        (the map's ``block_abs`` / ``block_signed`` lie on the CE map's grid); ``batch_size``:
        path points per forward / backward pass; ``progress``: a tqdm bar over the path points.
        """

        if not sigma_max > 0:
            raise AttributionError(f"sigma_max must be positive (the blur of the baseline), got {sigma_max}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise AttributionError(f"steps must be a positive integer, got {steps!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise AttributionError(f"batch_size must be a positive integer, got {batch_size!r}")
        if integration not in INTEGRATIONS:
            raise AttributionError(f"integration must be one of {list(INTEGRATIONS)}, got {integration!r}")
        with grad_mode():
            s = setup(self.model, inputs, roi, block, objective, channels, self.device)
            sigmas, path = blur_path(s.x, sigma_max, steps)
            diffs = (path[1:] - path[:-1]).double()  # (steps, C, h, w)
            first = 1 if integration == "riemann_right" else 0
            points = np.arange(first, steps + 1)
            attr = torch.zeros_like(s.x, dtype=torch.float64)[0]
            values = np.full(steps + 1, np.nan)
            grad_l1 = 0.0
            bar = tqdm(total=len(points), desc="LAM", unit="step", disable=not progress, dynamic_ncols=True)
            try:
                for i in range(0, len(points), batch_size):
                    ks = points[i : i + batch_size]
                    xb = path[ks].detach().clone().requires_grad_(True)
                    val = forward_objective(s.model, s.objective, xb)
                    g = input_gradient(val, xb).double()
                    values[ks] = val.detach().double().cpu().numpy()
                    grad_l1 += float(g.abs().sum())
                    for j, k in enumerate(ks):
                        if integration == "riemann_right":
                            attr += g[j] * diffs[k - 1]
                        else:
                            if k >= 1:
                                attr += 0.5 * g[j] * diffs[k - 1]
                            if k < steps:
                                attr += 0.5 * g[j] * diffs[k]
                    bar.update(len(ks))
            finally:
                bar.close()
            if np.isnan(values[0]):
                with torch.no_grad():
                    values[0] = float(forward_objective(s.model, s.objective, path[:1])[0])
        if not grad_l1 > 0:
            raise zero_gradient_error(s.objective.name, s.objective.roi, "along the LAM blur path")
        if not bool((diffs != 0).any()):
            raise AttributionError(
                "the input equals its blurred baseline (a flat image): LAM has nothing to "
                "attribute; use an image with structure"
            )
        delta = float(attr.sum()) - (values[-1] - values[0])
        meta = {
            "sigma_max": float(sigma_max),
            "steps": int(steps),
            "integration": integration,
            "path": "x(alpha) = blur_{(1 - alpha) * sigma_max}(x)",
            "baseline": "blur_{sigma_max}(x), x the model input (the degraded image for DN / DR / JPEG, the LR image for SR)",
            "batch_size": int(batch_size),
            "objective": s.objective.describe(),
            "baseline_objective": float(values[0]),
            "delta": delta,
            "path_objective": values.tolist(),
            "sigmas": sigmas.tolist(),
            "device": str(s.x.device),
        }
        return make_map(self.method, attr, s.objective.roi, block, s.scale, s.out_hw, s.objective.name, s.value, meta)
