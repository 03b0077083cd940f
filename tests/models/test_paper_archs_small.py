"""The paper's small networks (SRCNN, FSRCNN, EDSR, LapSRN, MSRResNet, PReNet) in the authors' layout: for every
``MODEL_LIST`` name they cover, cem_lab's class built with the authors' constructor arguments has exactly the
state-dict keys, shapes, order and parameter count of ``fixtures/authors_keys/<NAME>.json``, and maps the
fixture's input shape to its output shape; a checkpoint of another width or depth does not load.

Equal computation (not only equal layouts) was checked outside the tests against the authors' own classes
(see the commit that added these networks): the reference tensors are too big for the repository.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from cem_lab.models.archs.paper.edsr import EDSR
from cem_lab.models.archs.paper.fsrcnn import FSRCNN
from cem_lab.models.archs.paper.lapsrn import LapSRN
from cem_lab.models.archs.paper.msrresnet import MSRResNet
from cem_lab.models.archs.paper.prenet import PReNet
from cem_lab.models.archs.paper.srcnn import SRCNN

FIXTURES = Path(__file__).parent / "fixtures" / "authors_keys"

#: name -> (class, the effective constructor arguments of the authors' get_model for that name, fixture name).
#: A stand-in for the catalogue of cem_lab.models.authors (written separately).
CASES: dict[str, tuple[type[nn.Module], dict[str, Any], str]] = {
    "SRCNN": (SRCNN, {"num_channels": 3, "factors": 4}, "SRCNN"),
    "FSRCNN": (FSRCNN, {"scale_factor": 4, "num_channels": 3, "d": 56, "s": 12, "m": 4}, "FSRCNN"),
    **{
        f"FSRCNN-{s}-{m}": (FSRCNN, {"scale_factor": 4, "num_channels": 3, "d": 56, "s": s, "m": m}, f"FSRCNN-{s}-{m}")
        for s, m in [(w, 6) for w in (16, 32, 48, 64, 80, 96, 112, 128)] + [(48, d) for d in (2, 4, 8, 10, 12, 14, 16)]
    },
    "EDSR": (EDSR, {"num_channels": 3, "factor": 4, "width": 64, "depth": 16}, "EDSR"),
    **{
        f"EDSR-{w}-{d}": (EDSR, {"num_channels": 3, "factor": 4, "width": w, "depth": d}, f"EDSR-{w}-{d}")
        for w, d in [(64, d) for d in (10, 12, 14, 16, 18, 20, 22, 24)]
        + [(w, 16) for w in (32, 96, 128, 160, 192, 224, 256)]
    },
    "LapSRN": (LapSRN, {"num_channels": 3}, "LapSRN"),
    "SRResNet": (
        MSRResNet,
        {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 16, "upscale": 4},
        "SRResNet",
    ),
    # the GAN-trained weights of the same class: no fixture of its own
    "MSRGAN": (MSRResNet, {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 16, "upscale": 4}, "SRResNet"),
    "PReNet": (PReNet, {"recurrent_iter": 6, "use_GPU": True}, "PReNet"),
}

#: the names whose forward runs on the fixture's own 1x3x32x32 input; the other widths / depths of the same
#: classes run on 8x8 (time on one core), their output size checked against the fixture's scale
FULL_SIZE = {"SRCNN", "FSRCNN", "EDSR", "LapSRN", "SRResNet", "PReNet"}


def _fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _build(name: str) -> nn.Module:
    cls, kwargs, _ = CASES[name]
    torch.manual_seed(0)
    return cls(**kwargs).eval()


def test_every_fixture_of_these_classes_is_covered() -> None:
    """Every fixture measured from the authors' SRCNN/FSRCNN/EDSR/LapSRN/MSRResNet/PReNet has a case here."""
    classes = {"SRCNN", "FSRCNN", "EDSR", "Net", "MSRResNet", "PReNet"}
    fixtures = {p.stem for p in FIXTURES.glob("*.json") if json.loads(p.read_text())["authors_class"] in classes}
    assert fixtures == {fixture for _, _, fixture in CASES.values()}


#: one network per architecture in the default suite; the rest of the width / depth sweeps run under -m slow
#: (tests/models/test_authors_zoo.py checks every name's keys and parameters by default)
DEFAULT_CASES = {"SRCNN", "FSRCNN", "FSRCNN-48-6", "EDSR", "EDSR-32-16", "LapSRN", "SRResNet", "PReNet"}


@pytest.mark.parametrize("name", [n if n in DEFAULT_CASES else pytest.param(n, marks=pytest.mark.slow) for n in CASES])
def test_layout_and_shapes_match_the_authors(name: str) -> None:
    fixture = _fixture(CASES[name][2])
    model = _build(name)
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == fixture["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == fixture["parameters"]
    assert [name for name, _ in model.named_buffers()] == [
        b if isinstance(b, str) else b[0] for b in fixture["buffers"]
    ]
    n, c, h, w = fixture["input"]
    _, c_out, h_out, w_out = fixture["output"]
    assert (h_out // h, w_out // w) == (model.scale, model.scale)
    assert h % model.size_multiple == 0 and w % model.size_multiple == 0
    if name not in FULL_SIZE:
        h = w = 8
    with torch.no_grad():
        y = model(torch.rand(n, c, h, w))
    assert tuple(y.shape) == (n, c_out, h * model.scale, w * model.scale)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(
    ("name", "other", "message"),
    [
        ("FSRCNN", "FSRCNN-16-6", "size mismatch"),  # other shrink width (and depth)
        ("FSRCNN-48-6", "FSRCNN-48-8", "Unexpected key"),  # other mapping depth
        ("EDSR-64-16", "EDSR-32-16", "size mismatch"),  # other width
        ("EDSR-64-16", "EDSR-64-10", "Missing key"),  # other depth
    ],
)
def test_other_width_or_depth_does_not_load(name: str, other: str, message: str) -> None:
    model = _build(name)
    with pytest.raises(RuntimeError, match=message):
        model.load_state_dict(_build(other).state_dict())


def test_own_state_dict_round_trips() -> None:
    """A state dict saved from one build loads strictly into another and gives the same output."""
    for name in ("FSRCNN-48-2", "LapSRN", "PReNet", "EDSR-32-16"):
        source = _build(name)
        with torch.no_grad():
            for p in source.parameters():
                p.add_(0.01 * torch.randn_like(p))
        target = _build(name)
        target.load_state_dict(source.state_dict(), strict=True)
        x = torch.rand(1, 3, 8, 6)
        with torch.no_grad():
            assert torch.equal(source(x), target(x)), name


def test_edsr_mean_shift_is_loaded_not_fixed() -> None:
    """The mean-shift 1x1 convs start as -/+ the DIV2K mean, but their checkpoint values are used."""
    model = _build("EDSR-32-16")
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(model.sub_mean(x), x - torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1))
    state = model.state_dict()
    state["add_mean.bias"] = state["add_mean.bias"] + 1.0
    shifted = _build("EDSR-32-16")
    shifted.load_state_dict(state)
    with torch.no_grad():
        assert torch.allclose(shifted(x), model(x) + 1.0, atol=1e-5)


def test_prenet_state_follows_the_input_dtype() -> None:
    """PReNet's recurrent state is made on the input's device and dtype (the authors' class calls .cuda())."""
    model = _build("PReNet").double()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 6, 5, dtype=torch.float64))
    assert y.dtype == torch.float64 and y.shape == (1, 3, 6, 5)


def test_other_scales_build() -> None:
    """The scale arguments other than the zoo's 4 (x2 / x3) give the matching output size."""
    x = torch.rand(1, 3, 6, 5)
    models = [
        SRCNN(factors=2),
        FSRCNN(scale_factor=3, s=4, m=1),
        EDSR(factor=2, width=8, depth=1),
        EDSR(factor=3, width=8, depth=1),
        MSRResNet(num_feat=8, num_block=1, upscale=2),
        MSRResNet(num_feat=8, num_block=1, upscale=3),
    ]
    for model in models:
        with torch.no_grad():
            assert model(x).shape == (1, 3, 6 * model.scale, 5 * model.scale), type(model).__name__
