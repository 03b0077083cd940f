"""Our restoration architectures: shapes, receptive fields, attention context, Swin windows, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from cem_lab.models.archs import EDSR, FSRCNN, RCAN, SRCNN, SRResNet, SwinLite
from cem_lab.models.archs.swinlite import shifted_window_mask

CLASSES: dict[str, type[nn.Module]] = {
    "srcnn": SRCNN,
    "fsrcnn": FSRCNN,
    "edsr": EDSR,
    "srresnet": SRResNet,
    "rcan": RCAN,
    "swinlite": SwinLite,
}

#: tiny configurations of every architecture (scale and upsampling are added per test)
TINY: dict[str, dict[str, Any]] = {
    "srcnn": dict(channels=8, mid_channels=4, kernel_sizes=(5, 3, 3)),
    "fsrcnn": dict(width=8, shrink=4, depth=2),
    "edsr": dict(width=8, depth=2),
    "srresnet": dict(width=8, depth=2),
    "rcan": dict(width=8, groups=2, blocks=2, reduction=2),
    "swinlite": dict(width=8, depth=2, heads=2, window=4, mlp_ratio=1.0),
}
CASES = [
    (name, scale, up)
    for name in TINY
    for scale in (1, 2, 4)
    for up in ("post", "pre")
    if not (name == "srcnn" and up == "post")
]


def _build(name: str, **kwargs: Any) -> nn.Module:
    torch.manual_seed(0)
    return CLASSES[name](**{**TINY[name], **kwargs}).eval()


@pytest.mark.parametrize(("name", "scale", "upsampling"), CASES)
def test_shapes(name: str, scale: int, upsampling: str) -> None:
    model = _build(name, scale=scale, upsampling=upsampling)
    assert model.scale == scale
    x = torch.rand(2, 3, 12, 10)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, 12 * scale, 10 * scale)
    assert torch.isfinite(y).all()
    # the config rebuilds the same network
    config = model.config()
    assert config["_target_"].endswith(type(model).__name__)
    rebuilt = type(model)(**{k: v for k, v in config.items() if k != "_target_"})
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["fsrcnn", "edsr", "rcan", "swinlite"])
def test_scale_3_post(name: str) -> None:
    y = _build(name, scale=3)(torch.rand(1, 3, 7, 9))
    assert y.shape == (1, 3, 21, 27)


def test_pre_upsampling_untrained_residual_is_bicubic() -> None:
    """In pre mode the network adds its output to the bicubic-upsampled input."""
    model = _build("edsr", scale=2, upsampling="pre")
    for p in model.tail.parameters():
        nn.init.zeros_(p)
    x = torch.rand(1, 3, 8, 8)
    expected = nn.functional.interpolate(x, size=(16, 16), mode="bicubic", align_corners=False)
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("name", ["fsrcnn", "edsr", "rcan", "swinlite"])
def test_global_residual_adds_bicubic_in_post_mode(name: str) -> None:
    """global_residual=True: the post-upsampling network's output is the bicubic-upsampled input
    plus what its layers add (zero when the last conv is zeroed); off by default."""
    model = _build(name, scale=4, global_residual=True)
    assert model.config()["global_residual"] is True
    last = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    x = torch.rand(1, 3, 8, 8)
    expected = nn.functional.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False)
    with torch.no_grad():
        for p in last.parameters():
            p.zero_()
        torch.testing.assert_close(model(x), expected)
        plain = _build(name, scale=4)
        assert plain.config()["global_residual"] is False
        for p in [m for m in plain.modules() if isinstance(m, nn.Conv2d)][-1].parameters():
            p.zero_()
        assert plain(x).abs().max() == 0
    with pytest.raises(ValueError, match="global_residual"):
        _build(name, scale=4, global_residual="yes")


def _receptive_field(model: nn.Module, size: int = 24) -> int:
    """Number of input pixels with a non-zero gradient of the output's centre pixel."""
    model = model.double().eval()
    x = torch.rand(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    y = model(x)
    c = y.shape[-1] // 2
    y[..., c, c].sum().backward()
    return int((x.grad.abs().sum(1) > 0).sum())


@pytest.mark.parametrize("cls", [FSRCNN, EDSR])
@pytest.mark.parametrize("scale", [1, 2])
def test_receptive_field_grows_with_depth(cls: Callable[..., nn.Module], scale: int) -> None:
    counts = []
    for depth in (1, 2, 3):
        torch.manual_seed(0)
        counts.append(_receptive_field(cls(width=8, depth=depth, scale=scale)))
    assert counts[0] < counts[1] < counts[2] < 24 * 24, counts


def _pixel_change(model: nn.Module, far: tuple[int, int], probe: tuple[int, int] = (4, 4)) -> float:
    """How much output pixel ``probe`` changes when input pixel ``far`` changes (float64).

    Through a pooled attention the change is small for tiny untrained nets (~1e-9), but an
    independent pixel gives exactly 0, so the tests compare against 1e-12.
    """
    model = model.double().eval()
    torch.manual_seed(1)
    x = torch.rand(1, 3, 48, 48, dtype=torch.float64)
    x2 = x.clone()
    x2[..., far[0], far[1]] += 1.0
    with torch.no_grad():
        a, b = model(x), model(x2)
    return float((a - b)[..., probe[0], probe[1]].abs().max())


def _rcan(attention: str, **kwargs: Any) -> RCAN:
    torch.manual_seed(0)
    return RCAN(width=8, groups=1, blocks=1, reduction=2, scale=1, attention=attention, **kwargs)


def test_rcan_attention_context() -> None:
    # conv receptive-field radius: head 1 + RCAB 2 + group 1 + body 1 + tail 1 = 6 pixels
    far = (44, 44)  # 40 pixels from the probe (4, 4), and in another 8x8 window / 2x2 region
    glob = _rcan("global")
    assert glob.uses_global_context()
    assert _pixel_change(glob, far) > 1e-12
    half = _rcan("global", half=True)
    assert half.uses_global_context() and _pixel_change(half, far) > 1e-12

    none = _rcan("none")
    assert not none.uses_global_context()
    assert _pixel_change(none, far) == 0.0

    local = _rcan("local", pool_size=8)
    assert not local.uses_global_context()
    assert _pixel_change(local, far) == 0.0
    # within the probe's window but outside the conv receptive field: the window mean sees it
    assert _pixel_change(local, (7, 7), probe=(0, 0)) > 1e-12  # 7 px apart, > radius 6

    adaptive = _rcan("adaptive", pool_size=2)
    assert adaptive.uses_global_context()
    assert _pixel_change(adaptive, (20, 20)) > 1e-12  # same 24x24 region, 16 px away
    assert _pixel_change(adaptive, far) == 0.0  # other region, outside the receptive field


def test_rcan_local_pool_handles_non_divisible_sizes() -> None:
    model = _rcan("local", pool_size=16)
    y = model(torch.rand(1, 3, 21, 35))
    assert y.shape == (1, 3, 21, 35) and torch.isfinite(y).all()


def test_rcan_half_puts_attention_in_first_half() -> None:
    model = RCAN(width=8, groups=2, blocks=3, reduction=2, scale=1, half=True)
    for group in model.body[:-1]:
        has_ca = [len(block.body) == 4 for block in group.body[:-1]]
        assert has_ca == [True, True, False]


def test_swinlite_any_size() -> None:
    torch.manual_seed(0)
    model = SwinLite(width=8, depth=2, heads=2, window=8, scale=2)
    y = model(torch.rand(1, 3, 20, 28))
    assert y.shape == (1, 3, 40, 56) and torch.isfinite(y).all()
    # smaller than one window
    assert model(torch.rand(1, 3, 5, 3)).shape == (1, 3, 10, 6)


def _dependency_box(model: nn.Module, pixel: int = 12, size: int = 24) -> tuple[int, int]:
    """Rows and columns spanned by the input pixels the output ``(pixel, pixel)`` depends on."""
    model = model.double().eval()
    x = torch.rand(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    model(x)[..., pixel, pixel].sum().backward()
    ys, xs = torch.nonzero(x.grad.abs().sum((0, 1)) > 0, as_tuple=True)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


def test_swinlite_shifted_windows_cross_borders() -> None:
    torch.manual_seed(0)
    plain = SwinLite(width=8, depth=2, heads=2, window=8, scale=1, shift=False)
    torch.manual_seed(0)
    shifted = SwinLite(width=8, depth=2, heads=2, window=8, scale=1, shift=True)
    # pixel 12 lies in window [8, 16); without shift the dependency stays in that window plus
    # the conv halos (head 1, after-conv 1, tail 1): at most 8 + 2 * 3 pixels per side
    box_plain = _dependency_box(plain)
    assert max(box_plain) <= 8 + 2 * 3
    box_shifted = _dependency_box(shifted)
    assert min(box_shifted) > 8 + 2 * 3, (box_plain, box_shifted)


def test_shifted_window_mask_blocks_wrapped_tokens() -> None:
    mask = shifted_window_mask(8, 8, window=4, shift=2)
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()  # the top-left window holds one region only
    assert torch.isinf(mask[-1]).any() and (mask[-1].diagonal() == 0).all()


@pytest.mark.parametrize(
    ("factory", "argument"),
    [
        (lambda: EDSR(scale=5), "scale"),
        (lambda: EDSR(scale=True), "scale"),
        (lambda: FSRCNN(upsampling="middle"), "upsampling"),
        (lambda: FSRCNN(depth=-1), "depth"),
        (lambda: EDSR(res_scale=0), "res_scale"),
        (lambda: EDSR(width=0), "width"),
        (lambda: SRResNet(depth=2.5), "depth"),
        (lambda: SRCNN(kernel_sizes=(9, 4, 5)), "kernel_sizes"),
        (lambda: SRCNN(kernel_sizes=(9, 5)), "kernel_sizes"),
        (lambda: SRCNN(upsampling="post"), "upsampling"),
        (lambda: RCAN(attention="spatial"), "attention"),
        (lambda: RCAN(attention="local"), "pool_size"),
        (lambda: RCAN(attention="adaptive", pool_size=0), "pool_size"),
        (lambda: RCAN(attention="global", pool_size=4), "pool_size"),
        (lambda: RCAN(width=8, reduction=16), "reduction"),
        (lambda: RCAN(attention="none", half=True), "half"),
        (lambda: SwinLite(width=10, heads=4), "heads"),
        (lambda: SwinLite(window=0), "window"),
        (lambda: SwinLite(mlp_ratio=-1.0), "mlp_ratio"),
        (lambda: SwinLite(shift="yes"), "shift"),
    ],
)
def test_bad_arguments(factory: Callable[[], nn.Module], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        factory()


def test_scale_message_names_model_and_choices() -> None:
    with pytest.raises(ValueError, match=r"EDSR: scale must be one of 1, 2, 3, 4, got 5"):
        EDSR(scale=5)


def test_bad_input_shape() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, h, w\)"):
        FSRCNN(width=8, shrink=4, depth=1, scale=2)(torch.rand(1, 1, 8, 8))


def test_swinlite_local_mlp_adds_a_depthwise_conv_that_reaches_across_windows() -> None:
    """local_mlp (Uformer's LeFF): a depthwise 3 x 3 conv in each MLP; it is recorded in the
    config (rebuilds the same network) and widens each layer's reach by one token per side."""
    torch.manual_seed(0)
    plain = SwinLite(width=8, depth=2, heads=2, window=8, scale=1, shift=False)
    torch.manual_seed(0)
    local = SwinLite(width=8, depth=2, heads=2, window=8, scale=1, shift=False, local_mlp=True)
    extra = sum(p.numel() for p in local.parameters()) - sum(p.numel() for p in plain.parameters())
    hidden = 16  # width 8 x mlp_ratio 2
    assert extra == 2 * hidden * (9 + 1)  # two layers, a 3 x 3 depthwise kernel + bias each
    assert local.config()["local_mlp"] is True and "local_mlp" not in plain.config()
    rebuilt = SwinLite(**{k: v for k, v in local.config().items() if k != "_target_"})
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in local.parameters())
    assert max(_dependency_box(local)) > max(_dependency_box(plain))
    with pytest.raises(ValueError, match="local_mlp"):
        SwinLite(width=8, depth=2, heads=2, window=8, local_mlp="yes")
