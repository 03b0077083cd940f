"""DnCNN: K. Zhang, W. Zuo, Y. Chen, D. Meng and L. Zhang, "Beyond a Gaussian Denoiser: Residual
Learning of Deep CNN for Image Denoising", IEEE TIP 2017; in the KAIR layout.

The network is one ``nn.Sequential`` named ``model`` holding conv layers at even indices and
ReLUs at odd ones, with a bias on every conv and no batch norm, so KAIR's colour blind
checkpoint (keys ``model.{0,2,...,38}.{weight,bias}``) loads with ``strict=True`` as is.
"""

from __future__ import annotations

from torch import Tensor, nn

from cem_lab.errors import InputError


class DnCNN(nn.Module):
    """Plain DnCNN: conv+ReLU, ``depth - 2`` x (conv+ReLU), conv.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        features: width of the hidden layers.
        depth: number of convolutions (at least 2).
        residual: the body predicts the noise and ``forward`` returns ``x - body(x)``.
    """

    #: DnCNN keeps the input size (restoration at scale 1)
    scale: int = 1

    def __init__(
        self, in_channels: int = 3, out_channels: int = 3, features: int = 64, depth: int = 20, residual: bool = True
    ):
        super().__init__()
        if depth < 2:
            raise InputError(f"DnCNN depth must be at least 2 (first and last conv), got {depth}")
        if residual and in_channels != out_channels:
            raise InputError(
                f"a residual DnCNN needs in_channels == out_channels (got {in_channels} and {out_channels})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features = features
        self.depth = depth
        self.residual = residual
        layers: list[nn.Module] = [nn.Conv2d(in_channels, features, 3, padding=1, bias=True), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1, bias=True), nn.ReLU()]
        layers.append(nn.Conv2d(features, out_channels, 3, padding=1, bias=True))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``x - body(x)`` when residual, else ``body(x)``; same size as ``x``."""
        out = self.model(x)
        return x - out if self.residual else out

    def conv_chain(self) -> tuple[nn.Sequential, int]:
        """The body and how it joins the input, for incremental recompute
        (:mod:`cem_lab.causal.incremental`): ``x - body(x)`` when residual."""
        return self.model, (-1 if self.residual else 0)

    def config(self) -> dict:
        """Keyword arguments that rebuild this network (with its ``_target_``)."""
        return {
            "_target_": f"{type(self).__module__}.{type(self).__qualname__}",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "features": self.features,
            "depth": self.depth,
            "residual": self.residual,
        }

    def extra_repr(self) -> str:
        """The constructor arguments, for ``print(model)``."""
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"features={self.features}, depth={self.depth}, residual={self.residual}"
        )
