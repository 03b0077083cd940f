"""Shared fixtures: toy models, small images and a small patch bank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"reference data not found at {SHARED_DATA} (../shared/data)"
)


def run_console(module: str, args, cwd, timeout: float = 600, **env: str):
    """A console script run as a real process (``python -m cem_lab.cli.<module> ARGS`` in ``cwd``, with ``env``
    added to this process's environment): its completed process, output captured."""
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", f"cem_lab.cli.{module}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )


def assert_clean_refusal(p, *words, program: str = "cem-lab"):
    """A CLI refusal: exit 2, one ``<program>: error: ...`` message naming ``words``, no traceback."""
    assert p.returncode == 2, (p.returncode, p.stderr[-3000:])
    assert p.stderr.startswith(f"{program}: error: "), p.stderr[-3000:]
    assert p.stderr.count(f"{program}: error:") == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    for w in words:
        assert w in p.stderr, (w, p.stderr)


class Identity(nn.Module):
    """y = x; scale 1. Has a parameter so that the device can be read from it."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x + 0 * self.dummy


class ConvStack(nn.Module):
    """A small local network: residual stack of 3x3 convolutions (receptive field 2*depth+1)."""

    def __init__(self, depth: int = 4, width: int = 8, scale: int = 1, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        layers = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers += [nn.Conv2d(width, 3 * scale * scale, 3, padding=1)]
        self.body = nn.Sequential(*layers)
        self.scale = scale
        self.up = nn.PixelShuffle(scale) if scale > 1 else nn.Identity()

    def forward(self, x):
        base = x if self.scale == 1 else nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")
        return base + 0.1 * self.up(self.body(x))


class GlobalAttention(nn.Module):
    """Conv + channel attention with global average pooling: every output depends on every input."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        f = self.conv(x)
        a = torch.sigmoid(self.fc(f.mean(dim=(2, 3), keepdim=True)))
        return x + 0.1 * f * a


@pytest.fixture
def incremental_even_when_slower(monkeypatch):
    """Incremental recompute used whenever its outputs equal the crop's, even slower: on the toy networks of
    the exactness tests the crop is often the faster, and the job would (rightly) run on it."""
    from cem_lab.causal.recompute import IncrementalRecompute

    monkeypatch.setattr(IncrementalRecompute, "ONLY_WHEN_FASTER", False)


@pytest.fixture
def clean_image() -> np.ndarray:
    """A 48x48 RGB uint8 image with structure (a crop of scikit-image's astronaut)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:148, 200:248])


@pytest.fixture(scope="session")
def small_bank():
    from cem_lab.patches import PatchBank

    return PatchBank.embedded(patch_size=8, count=300, seed=1)


@pytest.fixture
def torch_threads():
    """Sets torch's intra-op thread count for the test (call it with the count); the caller's count is back
    afterwards."""
    import torch

    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)
