"""The network architectures cem_lab builds itself, one module each (the paper is named at the top of each).

All but DnCNN share :mod:`cem_lab.models.archs.common` (argument checks, upsampler, pre/post upsampling
and the global residual).
"""

from __future__ import annotations

from cem_lab.models.archs.common import PixelShuffleUpsampler, upsample
from cem_lab.models.archs.dncnn import DnCNN
from cem_lab.models.archs.edsr import EDSR
from cem_lab.models.archs.fsrcnn import FSRCNN
from cem_lab.models.archs.rcan import RCAN
from cem_lab.models.archs.srcnn import SRCNN
from cem_lab.models.archs.srresnet import SRResNet
from cem_lab.models.archs.swinlite import SwinLite

__all__ = ["EDSR", "FSRCNN", "RCAN", "SRCNN", "DnCNN", "PixelShuffleUpsampler", "SRResNet", "SwinLite", "upsample"]
