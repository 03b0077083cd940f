"""Patch banks and the schemes that sample intervention patches from them."""

from __future__ import annotations

from cem_lab.patches.bank import (
    EMBEDDED_IMAGES,
    PatchBank,
    PatchBankError,
    cut_patches,
    luma_uint8,
    patch_sharpness,
)
from cem_lab.patches.sampling import (
    SAMPLERS,
    PatchSampler,
    SharpnessMatchedSampler,
    StratifiedSampler,
    UniformSampler,
    block_sharpness,
    make_sampler,
)

__all__ = [
    "EMBEDDED_IMAGES",
    "SAMPLERS",
    "PatchBank",
    "PatchBankError",
    "PatchSampler",
    "SharpnessMatchedSampler",
    "StratifiedSampler",
    "UniformSampler",
    "block_sharpness",
    "cut_patches",
    "luma_uint8",
    "make_sampler",
    "patch_sharpness",
]
