"""Incremental recompute of traced local networks (cem_lab.causal.local_graph): every node type it
follows gives the whole network's output on every block of an input; the studies' architectures run
it and their maps equal the ROI crop's; global operations end it with the node and its line named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cem_lab import compute_cem
from cem_lab.causal.local_graph import LocalGraph, NotLocal
from cem_lab.causal.window_rules import ConvRule
from cem_lab.models.archs.edsr import EDSR
from cem_lab.models.archs.fsrcnn import FSRCNN
from cem_lab.models.archs.rcan import RCAN
from cem_lab.models.archs.srcnn import SRCNN
from cem_lab.models.archs.srresnet import SRResNet
from cem_lab.models.archs.swinlite import SwinLite
from cem_lab.tasks import make_task

#: exactness is what these tests check: the job keeps incremental recompute even where the crop is faster
pytestmark = pytest.mark.usefixtures("incremental_even_when_slower")


class One(nn.Module):
    """A residual network around one operation under test (``op``: a function of a 8-channel map)."""

    def __init__(self, op, scale: int = 1):
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.op = op
        self.tail = nn.LazyConv2d(3, 3, padding=1)
        self.scale = scale

    def forward(self, x):
        y = self.tail(self.op(torch.relu(self.head(x))))
        return F.interpolate(x, scale_factor=self.scale, mode="nearest") + 0.1 * y if self.scale > 1 else x + 0.1 * y


def _seeded(m: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return m


def _bn():
    bn = nn.BatchNorm2d(8)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    return bn


# each: (name, op builder, scale of the whole network)
OPS = [
    ("conv 5x5", lambda: nn.Conv2d(8, 8, 5, padding=2), 1),
    ("conv 1x3, no padding", lambda: nn.Sequential(nn.ZeroPad2d((1, 1, 0, 0)), nn.Conv2d(8, 8, (1, 3))), 1),
    ("conv dilation 2", lambda: nn.Conv2d(8, 8, 3, padding=2, dilation=2), 1),
    (
        "conv stride 2 kernel 4 + transposed",
        lambda: nn.Sequential(nn.Conv2d(8, 8, 4, 2, 1), nn.ConvTranspose2d(8, 8, 4, 2, 1)),
        1,
    ),
    ("transposed conv x2 (FSRCNN's)", lambda: nn.ConvTranspose2d(8, 8, 9, 2, 4, output_padding=1), 2),
    (
        "pixel unshuffle + shuffle",
        lambda: nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(32, 32, 3, padding=1), nn.PixelShuffle(2)),
        1,
    ),
    ("pixel shuffle x2", lambda: nn.Sequential(nn.Conv2d(8, 32, 3, padding=1), nn.PixelShuffle(2)), 2),
    ("nearest x2", lambda: nn.Upsample(scale_factor=2, mode="nearest"), 2),
    ("bilinear x2", lambda: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), 2),
    ("bicubic x3", lambda: nn.Upsample(scale_factor=3, mode="bicubic", align_corners=False), 3),
    ("batch norm (eval), PReLU, LeakyReLU", lambda: nn.Sequential(_bn(), nn.PReLU(8), nn.LeakyReLU(0.2)), 1),
    ("reflect-free pad + crop", lambda: nn.Sequential(nn.ZeroPad2d(3), nn.Conv2d(8, 8, 3), _Crop(2)), 1),
]


class _Crop(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        return x[:, :, self.k : -self.k, self.k : -self.k]


class Gated(nn.Module):
    """Channel slices, a sigmoid gate (multiply), concatenation and a channel LayerNorm."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(8, 16, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.a(x)
        gate = y[:, :8] * torch.sigmoid(y[:, 8:])
        z = torch.cat([gate, self.b(x)], 1)
        mu = z.mean(1, keepdim=True)
        return (z - mu) / (z.var(1, keepdim=True, unbiased=False) + 1e-5).sqrt()


OPS.append(("slice, gate, cat, channel LayerNorm", lambda: Gated(), 1))


class RRDBStack(nn.Module):
    """Two residual-in-residual dense blocks (ESRGAN's, 3 dense blocks of 5 convs, growth 8)."""

    def __init__(self, width: int = 16, growth: int = 8, blocks: int = 2):
        super().__init__()
        torch.manual_seed(0)

        def dense():
            return nn.ModuleList(
                [nn.Conv2d(width + i * growth, growth if i < 4 else width, 3, padding=1) for i in range(5)]
            )

        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.ModuleList([nn.ModuleList([dense() for _ in range(3)]) for _ in range(blocks)])
        self.up = nn.Conv2d(width, width, 3, padding=1)
        self.tail = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x):
        f = self.head(x)
        trunk = f
        for rrdb in self.blocks:
            inner = trunk
            for convs in rrdb:
                feats = [inner]
                for i, c in enumerate(convs):
                    out = c(torch.cat(feats, 1))
                    if i < 4:
                        feats.append(F.leaky_relu(out, 0.2))
                inner = inner + 0.2 * out
            trunk = trunk + 0.2 * inner
        f = f + trunk
        f = F.leaky_relu(self.up(F.interpolate(f, scale_factor=2, mode="nearest")), 0.2)
        return self.tail(f)


class SEUNet(nn.Module):
    """A small U-Net with squeeze-excitation at its bottleneck (Real-CUGAN's pattern)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 2, 2)
        self.se = nn.Sequential(nn.Conv2d(16, 4, 1), nn.ReLU(), nn.Conv2d(4, 16, 1), nn.Sigmoid())
        self.up = nn.ConvTranspose2d(16, 8, 2, 2)
        self.out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        e = torch.relu(self.enc(x))
        d = torch.relu(self.down(e))
        d = d * self.se(d.mean((2, 3), keepdim=True))
        return x + self.out(e + self.up(d))


def _check_every_block(model: nn.Module, size: int = 32, block: int = 8, roi=None, seed: int = 0) -> LocalGraph:
    """Incremental ROI outputs equal the whole network's for a random change inside every block."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, size, size, generator=g)
    with torch.no_grad():
        full = model(base)
    s = full.shape[-1] // size
    if roi is None:
        roi = (size // 4 * s, size // 2 * s, size // 2 * s, size * 3 // 4 * s)
    graph = LocalGraph(model, base, roi)
    boxes = np.array([(y, y + block, x, x + block) for y in range(0, size, block) for x in range(0, size, block)])
    graph.plan(boxes)
    x = base.repeat(len(boxes), 1, 1, 1)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        x[i, :, y0:y1, x0:x1] = torch.rand(3, y1 - y0, x1 - x0, generator=g)
    worst = 0.0
    for j in range(0, len(boxes), 8):  # in batches of 8 with mixed positions: one shape per node
        rows = list(range(j, min(j + 8, len(boxes))))
        got = graph.roi_outputs(x[rows], rows)
        with torch.no_grad():
            ref = model(x[rows])[:, :, roi[0] : roi[1], roi[2] : roi[3]]
        assert got.shape == ref.shape
        worst = max(worst, float((got - ref).abs().max()))
    assert worst < 1e-5, worst
    return graph


@pytest.mark.parametrize("name, op, scale", OPS, ids=[o[0] for o in OPS])
def test_every_node_type_gives_the_whole_networks_roi_output(name, op, scale):
    model = One(_seeded(op()), scale)
    with torch.no_grad():
        model(torch.rand(1, 3, 8, 8))  # materialise the lazy tail
    _check_every_block(model)


@pytest.mark.parametrize(
    "build",
    [
        lambda: EDSR(width=8, depth=3, scale=4, global_residual=True),
        lambda: FSRCNN(width=16, shrink=8, depth=2, scale=4),
        lambda: SRResNet(width=8, depth=3, scale=4),
        lambda: SRCNN(scale=2),
        lambda: RCAN(width=8, groups=2, blocks=2, reduction=4, scale=2, attention="none"),
        lambda: RRDBStack(),
    ],
    ids=["EDSR", "FSRCNN", "SRResNet", "SRCNN", "RCAN without attention", "RRDB block stack"],
)
def test_the_studies_architectures_are_followed_exactly(build):
    torch.manual_seed(0)
    graph = _check_every_block(build())
    share, _ = graph.work()
    assert 0 < share < 1  # a block recomputes less than the whole network's convolution work


@pytest.mark.parametrize(
    "build, words",
    [
        (
            lambda: RCAN(width=8, groups=1, blocks=1, reduction=4, scale=2),
            r"spatial axes.*rcan\.py:\d+ `att = self\.squeeze\(x\.mean",
        ),
        (
            lambda: SwinLite(width=8, depth=1, heads=2, window=4, scale=2),
            r"aten::permute \(not a local operation\) at \w+\.py:\d+",
        ),
        (lambda: SEUNet(), r"spatial axes.*test_local_graph\.py:\d+ `d = d \* self\.se"),
    ],
    ids=["RCAN channel attention", "SwinIR-style window attention", "SE U-Net"],
)
def test_global_operations_end_it_with_the_node_and_line_named(build, words):
    torch.manual_seed(0)
    model = build().eval()
    base = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        s = model(base).shape[-1] // 32
    graph = LocalGraph(model, base, (8 * s, 16 * s, 8 * s, 16 * s))
    with pytest.raises(NotLocal, match=words):
        graph.plan(np.array([[0, 8, 0, 8], [16, 24, 16, 24]]))


def test_a_change_that_covers_a_node_is_no_longer_tracked_and_any_op_may_follow():
    """Past a node whose window is the whole map, whole tensors flow: a global op there is fine."""

    class LateAttention(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.convs = nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1) for _ in range(6)])

        def forward(self, x):
            y = self.convs(x)
            return x + y * torch.sigmoid(y.mean((2, 3), keepdim=True))

    graph = _check_every_block(LateAttention(), size=12, block=4)
    assert any(p.full for p in graph.plans.values())


def test_window_arithmetic_of_a_strided_convolution():
    rule = ConvRule("conv", kernel=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1))
    lo, hi = rule.changed([(np.array([4]), np.array([6]))], 0)  # inputs 4, 5 reach outputs 2 and 3
    assert (lo[0], hi[0]) == (2, 4)
    lo, hi = rule.need((np.array([2]), np.array([4])), 0)  # outputs 2, 3 read inputs 3 .. 7
    assert (lo[0], hi[0]) == (3, 8)
    t = ConvRule("conv", kernel=(4, 4), stride=(2, 2), padding=(1, 1), dilation=(1, 1), transposed=True)
    lo, hi = t.changed([(np.array([3]), np.array([4]))], 0)  # input 3 writes outputs 5 .. 8
    assert (lo[0], hi[0]) == (5, 9)


def test_sr_maps_equal_the_roi_crop_maps_and_do_not_depend_on_the_batch(small_bank):
    from skimage import data

    torch.manual_seed(0)
    model = EDSR(width=8, depth=2, scale=2, global_residual=True).eval()
    image = np.ascontiguousarray(data.astronaut()[40:136, 150:246])
    kw = dict(block=8, coarse=2, fine=2, progress=False, figures=False, seed=3, patch_bank=small_bank)
    task = make_task("sr", scale=2)
    ref = compute_cem(model, image, task, (32, 32, 32), **kw)
    a = compute_cem(model, image, task, (32, 32, 32), recompute="incremental", forward_batch=3, **kw)
    b = compute_cem(model, image, task, (32, 32, 32), recompute="incremental", forward_batch=8, batch_size=5, **kw)
    notes = [n for n in a.meta["notes"] if n.startswith("incremental recompute (traced graph)")]
    assert notes, a.meta["notes"]
    assert a.meta["incremental_check"]["ok"]
    np.testing.assert_array_equal(a.effect_raw, b.effect_raw)
    np.testing.assert_array_equal(a.classification, ref.classification)
    np.testing.assert_allclose(a.effect_raw, ref.effect_raw, atol=1e-3)
    assert a.meta["pixels_pushed"] < ref.meta["pixels_pushed"]


def test_it_declines_when_the_cached_maps_would_not_fit_in_memory(monkeypatch):
    import cem_lab.causal.local_graph as lg

    monkeypatch.setattr(lg, "available_bytes", lambda device: 4 * 2**20)  # 4 MiB free
    model = SRResNet(width=16, depth=4, scale=2).eval()
    with pytest.raises(
        NotLocal, match=r"intermediate maps on this crop need \d+ MiB, more than a quarter of the 4 MiB free"
    ):
        LocalGraph(model, torch.rand(1, 3, 64, 64), (0, 16, 0, 16))
