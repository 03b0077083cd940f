"""The dependency probe forecasts the memory of its next, larger window from the last one's and takes the whole
input (full-image mode: the same map, no crop) rather than run a probe that would not fit (a README command once
ended in the kernel's OOM kill there: SwinIR-M on a 256x384 image)."""

from __future__ import annotations

import numpy as np
import torch
from conftest import ConvStack

import cem_lab.causal.region as region
from cem_lab import compute_cem


class Global(torch.nn.Module):
    """Every output pixel depends on every input pixel (a global mean added): the probe's window keeps growing."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + x.mean(dim=(2, 3), keepdim=True)


def test_peak_memory_sees_a_block_of_work():
    """In a fresh process: a test worker that already holds freed heap may serve a block from resident memory,
    which the peak resident set cannot see (it failed once in the suite this way); a probe's first windows are
    its own process's first large blocks."""
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from cem_lab.causal.memory import PeakMemory\n"
        "with PeakMemory(torch.device('cpu')) as m:\n"
        "    x = torch.ones(50_000_000)\n"  # 200 MB
        "    del x\n"
        "print(m.used)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    used = out.stdout.split()[-1]
    assert used == "None" or int(used) >= 150_000_000, used  # None only where /proc cannot be read


def test_a_probe_forecast_beyond_the_free_memory_takes_the_whole_input(monkeypatch, small_bank):
    x = torch.rand(1, 3, 200, 200)
    ok = region.dependency_region(Global(), x, (96, 112, 96, 112), 1, window=8)
    assert ok.method == "gradient_probe" and ok.covers_input  # it grew to the whole image
    monkeypatch.setattr(region, "available_bytes", lambda device: 1024)  # 1 KiB free
    monkeypatch.setattr(region.PeakMemory, "__exit__", lambda self, *exc: setattr(self, "used", 10_000_000))
    guarded = region.dependency_region(Global(), x, (96, 112, 96, 112), 1, window=8)
    assert guarded.method == "memory_forecast" and guarded.covers_input
    assert "would need about" in guarded.notes[0] and "full-image mode" in guarded.notes[0]
    # a local model's first window is its region: no forecast needed, the crop stays
    local = region.dependency_region(ConvStack(depth=2), x, (96, 112, 96, 112), 1, window=8)
    assert local.method == "gradient_probe" and not local.covers_input
    # and a map through it is the full-image map, with the note
    torch.manual_seed(0)
    net = Global()
    kw = dict(patch_bank=small_bank, block=8, coarse=2, fine=3, progress=False, figures=False)
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[100:196, 200:296])  # 96 px: the probe's first window is smaller
    r = compute_cem(net, image, "dn", (40, 40, 16), **kw)
    full = compute_cem(net, image, "dn", (40, 40, 16), mode="full", **kw)
    assert r.meta["mode"] == "full" and any("would need about" in n for n in r.meta["notes"]), r.meta["notes"]
    np.testing.assert_array_equal(r.effect_raw, full.effect_raw)
