"""cem_lab's BasicSR-style RCANs and scale-1 SRResNets of the paper's zoo: the authors' state-dict layouts
(``fixtures/authors_keys``), the pooled channel attentions, the strict-loading boundaries between variants.

Numerical equality with the authors' classes (J-FHu/CEM @5fd1d9b) was measured outside the project, where their
code can be run: the same state dict and input give outputs equal to the bit (max abs difference 0.0 for all
13 names, inputs 24x24, 20x30, 33x17); see the commit that added this file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from cem_lab.errors import InputError
from cem_lab.models.archs.paper.rcan_basicsr import BasicSRRCAN, ChannelAttention, ContextPool
from cem_lab.models.archs.paper.srresnet_restore import SRResNetRestore

FIXTURES = Path(__file__).parent / "fixtures" / "authors_keys"

_RCAN = dict(
    num_in_ch=3,
    num_out_ch=3,
    num_feat=64,
    num_group=10,
    num_block=20,
    squeeze_factor=16,
    upscale=4,
    res_scale=1,
    img_range=255.0,
    rgb_mean=(0.4488, 0.4371, 0.4040),
)
#: the half-attention class takes num_ca_group + num_no_ca_group instead of num_group
_RCAN_HALF = {k: v for k, v in _RCAN.items() if k != "num_group"}
_SRRESNET = dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=1)

#: the authors' effective constructor arguments per MODEL_LIST name (facts24/authors_models.json), as cem_lab's
#: class takes them; the DN / DR / mix RCANs ignore their ``upscale`` (DeRCAN's default is 4): here it is 1
AUTHORS_ARGS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "RCAN_half_ca": (
        BasicSRRCAN,
        {**_RCAN_HALF, "num_ca_group": 5, "num_no_ca_group": 5, "attention": "half"},
    ),
    "RCAN_no_ca": (BasicSRRCAN, {**_RCAN, "attention": "none"}),
    "RCAN_pooling4": (BasicSRRCAN, {**_RCAN, "attention": "pool4"}),
    "RCAN_pooling16": (BasicSRRCAN, {**_RCAN, "attention": "pool16"}),
    "RCAN_pooling2x2": (BasicSRRCAN, {**_RCAN, "attention": "grid2"}),
    "RCAN_pooling3x3": (BasicSRRCAN, {**_RCAN, "attention": "grid3"}),
    "RCAN_DN": (BasicSRRCAN, {**_RCAN, "upscale": 1}),
    "RCAN_DR": (BasicSRRCAN, {**_RCAN, "upscale": 1}),
    "RCAN_mix": (BasicSRRCAN, {**_RCAN, "upscale": 1, "num_block": 16}),
    "SRResNet_DN": (SRResNetRestore, _SRRESNET),
    "SRResNet_DR": (SRResNetRestore, _SRRESNET),
    "SRResNet_mix": (SRResNetRestore, _SRRESNET),
    "SRResNet_MIO": (SRResNetRestore, _SRRESNET),
}

TINY = dict(num_feat=8, num_group=2, num_block=2, squeeze_factor=2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny inputs through 15M-parameter networks: one intra-op thread is fastest and does not spin against
    other processes on a shared machine. The previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _build(name: str) -> nn.Module:
    cls, kwargs = AUTHORS_ARGS[name]
    torch.manual_seed(0)
    return cls(**kwargs).eval()


def _layout(sd: dict[str, torch.Tensor]) -> list[list[Any]]:
    return [[k, list(v.shape)] for k, v in sd.items()]


@pytest.mark.parametrize(
    "name",
    [
        n if n in ("RCAN_no_ca", "RCAN_pooling4", "RCAN_DN", "SRResNet_DN") else pytest.param(n, marks=pytest.mark.slow)
        for n in sorted(AUTHORS_ARGS)
    ],
)
def test_authors_layout_and_output_size(name: str) -> None:
    fixture = json.loads((FIXTURES / f"{name}.json").read_text())
    model = _build(name)
    assert _layout(model.state_dict()) == fixture["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == fixture["parameters"]
    params = {k for k, _ in model.named_parameters()}
    assert [k for k in model.state_dict() if k not in params] == fixture["buffers"]
    scale = fixture["output"][-1] // fixture["input"][-1]
    assert model.scale == scale and model.size_multiple in (1, 4, 16)
    with torch.no_grad():
        y = model(torch.rand(1, 3, 16, 16))
    assert y.shape == (1, 3, 16 * scale, 16 * scale)
    assert torch.isfinite(y).all()


def test_variant_checkpoints_do_not_cross_load() -> None:
    no_ca = _build("RCAN_no_ca").state_dict()
    pool4 = _build("RCAN_pooling4")
    with pytest.raises(RuntimeError, match="Missing key"):
        pool4.load_state_dict(no_ca, strict=True)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        BasicSRRCAN(**TINY, attention="none").load_state_dict(BasicSRRCAN(**TINY).state_dict())
    with pytest.raises(RuntimeError, match="body_ca"):
        BasicSRRCAN(**TINY, attention="half").load_state_dict(BasicSRRCAN(**TINY).state_dict())
    with pytest.raises(RuntimeError, match="upsample"):
        BasicSRRCAN(**TINY, upscale=1).load_state_dict(BasicSRRCAN(**TINY).state_dict())
    # the pooled attentions have no parameters: their checkpoints are told apart by name only
    BasicSRRCAN(**TINY, attention="pool16").load_state_dict(BasicSRRCAN(**TINY, attention="pool4").state_dict())


def _attention(kind: str, size: int) -> ChannelAttention:
    torch.manual_seed(1)
    return ChannelAttention(8, 2, ContextPool(kind, size)).eval()


def test_window_attention_weights_each_cell_by_its_own_context() -> None:
    """pool4 on an 8x12 map = the standard (global) attention applied to each 4x4 cell alone; the 2x2 / 3x3
    grids coincide with it where their regions are those cells."""
    x = torch.randn(2, 8, 8, 12)
    window, glob = _attention("window", 4), _attention("global", 1)
    with torch.no_grad():
        y = window(x)
        for i in range(0, 8, 4):
            for j in range(0, 12, 4):
                cell = x[..., i : i + 4, j : j + 4]
                torch.testing.assert_close(y[..., i : i + 4, j : j + 4], glob(cell), rtol=0, atol=1e-6)
        square = torch.randn(1, 8, 12, 12)
        torch.testing.assert_close(_attention("grid", 3)(square), window(square), rtol=0, atol=1e-6)
        torch.testing.assert_close(_attention("grid", 2)(square[..., :8, :8]), window(square[..., :8, :8]))


def test_one_window_is_the_standard_network() -> None:
    """A 16x16 input is one pool16 window: the network equals the standard-attention one, same weights."""
    torch.manual_seed(0)
    std = BasicSRRCAN(**TINY).eval()
    pool16 = BasicSRRCAN(**TINY, attention="pool16").eval()
    pool16.load_state_dict(std.state_dict())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(pool16(x), std(x), rtol=0, atol=1e-5)
        pool4 = BasicSRRCAN(**TINY, attention="pool4").eval()
        pool4.load_state_dict(std.state_dict())
        assert not torch.allclose(pool4(x), std(x), rtol=0, atol=1e-4)
    assert (std.size_multiple, pool16.size_multiple) == (1, 16)
    assert std.uses_global_context() and not pool16.uses_global_context()


def test_window_sizes_the_authors_run_and_refuse() -> None:
    model = BasicSRRCAN(**TINY, attention="pool4").eval()
    with torch.no_grad():
        # not a multiple of 4: runs as the authors' (floor pooling, stretched nearest map), size_multiple says 4
        assert model(torch.rand(1, 3, 30, 7)).shape == (1, 3, 120, 28)
    with pytest.raises(InputError, match=">= 16"):
        BasicSRRCAN(**TINY, attention="pool16")(torch.rand(1, 3, 12, 12))
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        model(torch.rand(1, 1, 8, 8))


def test_scale1_residuals_and_mean() -> None:
    """The DN / DR / mix RCAN has no image residual (zero last conv -> the mean image); the SRResNet adds its
    input (zero last conv -> the input). The mean is a buffer outside the state dict that follows .double()."""
    rcan = BasicSRRCAN(**TINY, upscale=1).eval().double()
    srresnet = SRResNetRestore(num_feat=8, num_block=2).eval().double()
    for model in (rcan, srresnet):
        nn.init.zeros_(model.conv_last.weight)
        nn.init.zeros_(model.conv_last.bias)
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(rcan(x), rcan.mean.expand_as(x))
        torch.testing.assert_close(srresnet(x), x)
    assert "mean" not in rcan.state_dict() and rcan.mean.dtype == torch.float64
    assert rcan.scale == srresnet.scale == 1


@pytest.mark.parametrize(
    ("cls", "kwargs", "word"),
    [
        (BasicSRRCAN, dict(upscale=8), "upscale"),
        (BasicSRRCAN, dict(attention="pool8"), "attention"),
        (BasicSRRCAN, dict(num_ca_group=5), "num_ca_group"),
        (BasicSRRCAN, dict(attention="half", num_ca_group=3, num_group=2), "num_ca_group"),
        (BasicSRRCAN, dict(num_out_ch=1), "num_out_ch"),
        (BasicSRRCAN, dict(squeeze_factor=128), "squeeze_factor"),
        (SRResNetRestore, dict(upscale=4), "upscale"),
        (SRResNetRestore, dict(num_out_ch=1), "num_out_ch"),
    ],
)
def test_bad_arguments(cls: type[nn.Module], kwargs: dict[str, Any], word: str) -> None:
    with pytest.raises(InputError, match=word):
        cls(**{**(TINY if cls is BasicSRRCAN else {}), **kwargs})


def test_half_split_defaults_to_halves() -> None:
    model = BasicSRRCAN(num_feat=8, num_group=3, num_block=1, squeeze_factor=2, attention="half")
    assert (len(model.body_ca), len(model.body_no_ca)) == (1, 2)
