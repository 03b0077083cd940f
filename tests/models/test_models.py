"""Tests of cem_lab.models: DnCNN, checkpoint reading/saving and the embedded model."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from cem_lab.images import from_uint8, load_image, to_uint8
from cem_lab.models import (
    CheckpointError,
    DnCNN,
    archs,
    build_from_config,
    load_model,
    load_weights,
    read_state_dict,
    save_weights,
)
from cem_lab.tasks.denoise import DenoiseTask

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
KAIR = SHARED / "dncnn_color_blind.pth"
DEMO_2 = SHARED / "demo_images" / "demo_2.png"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10.0 * math.log10(255.0**2 / mse)


def small_net(seed: int = 0, **kwargs) -> DnCNN:
    torch.manual_seed(seed)
    return DnCNN(**{"features": 8, "depth": 4, **kwargs})


def assert_same_weights(model: torch.nn.Module, state: dict[str, Tensor]) -> None:
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


# --------------------------------------------------------------------------- DnCNN
@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (2, 3, 33, 17), (1, 3, 5, 40)])
def test_dncnn_keeps_the_input_shape(shape: tuple[int, ...]) -> None:
    net = small_net()
    with torch.no_grad():
        out = net(torch.rand(shape))
    assert out.shape == shape


def test_dncnn_layout_and_scale() -> None:
    net = DnCNN()
    assert DnCNN.scale == 1 and net.scale == 1
    keys = list(net.state_dict())
    assert keys[0] == "model.0.weight" and keys[-1] == "model.38.bias"
    assert len(keys) == 40
    assert isinstance(net.model[1], torch.nn.ReLU) and isinstance(net.model[38], torch.nn.Conv2d)
    assert net.model[0].in_channels == 3 and net.model[38].out_channels == 3
    other = DnCNN(in_channels=1, out_channels=1, features=16, depth=5)
    assert len(other.model) == 9 and other.model[2].out_channels == 16


def test_dncnn_residual_semantics() -> None:
    x = torch.rand(1, 3, 12, 12)
    res = small_net(residual=True)
    plain = small_net(residual=False)
    plain.load_state_dict(res.state_dict())
    with torch.no_grad():
        body = res.model(x)
        assert torch.allclose(res(x), x - body)
        assert torch.allclose(plain(x), body)
        res.model[-1].weight.zero_()
        res.model[-1].bias.zero_()
        assert torch.equal(res(x), x)  # a residual net with a zero body is the identity


# --------------------------------------------------------------------------- the real checkpoint
@pytest.mark.skipif(
    not KAIR.is_file() or not DEMO_2.is_file(), reason=f"reference data not available ({SHARED} absent)"
)
def test_kair_checkpoint_loads_strictly_and_denoises() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    model = DnCNN()
    report = load_weights(model, KAIR, strict=True)
    assert report["missing"] == [] and report["unexpected"] == [] and report["loaded"] == 40
    model.eval()
    clean_u8 = load_image(DEMO_2)
    noisy = DenoiseTask(sigma=50).degrade(from_uint8(clean_u8), 0)
    with torch.no_grad():
        out = model(noisy)
    p_noisy, p_model = psnr(to_uint8(noisy), clean_u8), psnr(to_uint8(out), clean_u8)
    assert p_noisy < 16.0
    assert p_model > p_noisy + 8.0, (p_noisy, p_model)


# --------------------------------------------------------------------------- layouts
LAYOUTS: dict[str, Callable[[dict, dict], object]] = {
    "plain": lambda sd, other: sd,
    "basicsr_params": lambda sd, other: {"params": sd},
    "basicsr_ema_preferred": lambda sd, other: {"params_ema": sd, "params": other},
    "lightning_prefixed": lambda sd, other: {
        "state_dict": {"model." + k: v for k, v in sd.items()},
        "epoch": 3,
        "global_step": 100,
    },
    "ddp_module_prefix": lambda sd, other: {"module." + k: v for k, v in sd.items()},
    "net_key": lambda sd, other: {"net": sd, "iteration": 7},
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_checkpoint_layouts_load_identical_weights(layout: str, tmp_path: Path) -> None:
    source = small_net(seed=1).state_dict()
    other = small_net(seed=2).state_dict()
    path = tmp_path / f"{layout}.pth"
    torch.save(LAYOUTS[layout](source, other), path)
    target = small_net(seed=3)
    report = load_weights(target, path)
    assert_same_weights(target, source)
    if layout == "ddp_module_prefix":
        assert report["stripped_prefixes"] == ["module."]
    if layout == "lightning_prefixed":
        assert report["stripped_prefixes"] == ["model."]


def test_safetensors_file_loads(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = small_net(seed=1).state_dict()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.items()}, str(path))
    target = small_net(seed=2)
    load_weights(target, path)
    assert_same_weights(target, source)


def test_prefix_is_not_stripped_when_it_does_not_help(tmp_path: Path) -> None:
    # DnCNN's own keys all share "model."; a depth mismatch must not trigger a strip
    path = tmp_path / "deep.pth"
    torch.save(small_net(depth=5).state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_weights(small_net(depth=4), path)
    assert "unexpected keys" in str(info.value) and "model.8.weight" in str(info.value)


# --------------------------------------------------------------------------- errors
def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pth"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_weights(small_net(), path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".ckpt"])
def test_corrupt_file(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(np.random.RandomState(0).bytes(4096))
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert f"corrupt{suffix}" in message and "cannot read checkpoint" in message


def test_file_without_tensors_lists_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "config": {"lr": 0.1}}, path)
    with pytest.raises(CheckpointError, match="holds no tensors.*epoch, config"):
        read_state_dict(path)


class _Pickled:
    """A class that the safe (weights-only) reader refuses."""


def test_pickled_objects_need_trust(tmp_path: Path) -> None:
    source = small_net(seed=1).state_dict()
    path = tmp_path / "objects.pth"
    torch.save({"params": source, "opt": _Pickled()}, path)
    with pytest.raises(CheckpointError, match="trust=True") as info:
        read_state_dict(path)
    assert "unsafe" in str(info.value)
    target = small_net(seed=2)
    load_weights(target, path, trust=True)
    assert_same_weights(target, source)


def test_architecture_mismatch_names_tensor_and_shapes(tmp_path: Path) -> None:
    path = tmp_path / "wide.pth"
    torch.save(DnCNN(features=64, depth=3).state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_weights(DnCNN(features=32, depth=3), path)
    message = str(info.value)
    assert "model.0.weight: checkpoint (64, 3, 3, 3) vs model (32, 3, 3, 3)" in message
    assert "architecture arguments" in message


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path) -> None:
    state = small_net(depth=4).state_dict()
    state["extra.weight"] = torch.zeros(2)
    del state["model.6.bias"]
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_weights(small_net(depth=4), path)
    message = str(info.value)
    assert "missing keys" in message and "model.6.bias" in message
    assert "unexpected keys" in message and "extra.weight" in message
    # non-strict loading accepts the partial checkpoint and reports it
    target = small_net(depth=4, seed=5)
    report = load_weights(target, path, strict=False)
    assert report["missing"] == ["model.6.bias"] and report["unexpected"] == ["extra.weight"]
    assert torch.equal(target.state_dict()["model.0.weight"], state["model.0.weight"])


# --------------------------------------------------------------------------- save / build
def test_save_weights_and_load_model_round_trip(tmp_path: Path) -> None:
    import yaml

    net = small_net(seed=4, residual=False, depth=5)
    path = tmp_path / "sub" / "net.safetensors"
    save_weights(net, path, metadata={"note": "round trip"})
    config = yaml.safe_load(path.with_suffix(".yaml").read_text())
    assert config["model"]["_target_"] == "cem_lab.models.archs.dncnn.DnCNN"
    assert config["model"]["depth"] == 5 and config["model"]["residual"] is False
    assert config["note"] == "round trip"
    loaded = load_model(path)
    assert isinstance(loaded, DnCNN) and not loaded.training
    assert loaded.depth == 5 and loaded.features == 8 and loaded.residual is False
    assert_same_weights(loaded, net.state_dict())
    x = torch.rand(1, 3, 10, 10)
    with torch.no_grad():
        assert torch.equal(loaded(x), net.eval()(x))
    assert not any(p.name.endswith(".tmp") for p in path.parent.iterdir())


def test_load_model_needs_its_yaml(tmp_path: Path) -> None:
    path = tmp_path / "net.safetensors"
    save_weights(small_net(), path)
    path.with_suffix(".yaml").unlink()
    with pytest.raises(CheckpointError, match="model config not found"):
        load_model(path)


def test_build_from_config() -> None:
    net = build_from_config({"_target_": "cem_lab.models.archs.dncnn.DnCNN", "features": 4, "depth": 3})
    assert isinstance(net, DnCNN) and net.features == 4 and len(net.model) == 5
    with pytest.raises(CheckpointError, match="cannot import model class 'cem_lab.nowhere.Net'"):
        build_from_config({"_target_": "cem_lab.nowhere.Net"})
    with pytest.raises(CheckpointError, match="cannot import"):
        build_from_config({"_target_": "cem_lab.models.archs.dncnn.NoSuchNet"})
    with pytest.raises(CheckpointError, match="not a torch.nn.Module class"):
        build_from_config({"_target_": "os.getcwd"})
    with pytest.raises(CheckpointError, match="_target_"):
        build_from_config({"features": 4})
    with pytest.raises(CheckpointError, match="cannot build"):
        build_from_config({"_target_": "cem_lab.models.archs.dncnn.DnCNN", "widht": 3})


@pytest.mark.parametrize(
    ("old_target", "cls_name", "kwargs"),
    [
        ("cem_lab.models.dncnn.DnCNN", "DnCNN", {"features": 4, "depth": 3}),
        ("cem_lab.models.DnCNN", "DnCNN", {"features": 4, "depth": 3}),
        ("cem_lab.models.architectures.EDSR", "EDSR", {"width": 4, "depth": 1, "scale": 2}),
        ("cem_lab.models.architectures.SRCNN", "SRCNN", {"channels": 4, "mid_channels": 4, "scale": 2}),
        ("cem_lab.models.architectures.FSRCNN", "FSRCNN", {"width": 4, "shrink": 2, "depth": 1, "scale": 2}),
        ("cem_lab.models.architectures.SRResNet", "SRResNet", {"width": 4, "depth": 1, "scale": 2}),
        ("cem_lab.models.architectures.RCAN", "RCAN", {"width": 4, "groups": 1, "blocks": 1, "reduction": 2}),
        ("cem_lab.models.architectures.SwinLite", "SwinLite", {"width": 4, "depth": 1, "heads": 1, "window": 4}),
    ],
)
def test_model_file_with_a_moved_target_still_loads(tmp_path: Path, old_target: str, cls_name: str, kwargs) -> None:
    """A model file written before the architectures moved to cem_lab.models.archs records the old
    dotted path; it loads into the class at its new place, with the same weights."""
    import yaml

    cls = getattr(archs, cls_name)
    torch.manual_seed(0)
    net = cls(**kwargs).eval()
    path = tmp_path / "old.safetensors"
    save_weights(net, path)
    data = yaml.safe_load(path.with_suffix(".yaml").read_text())
    assert data["model"]["_target_"] == f"{cls.__module__}.{cls_name}"
    data["model"]["_target_"] = old_target
    path.with_suffix(".yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    loaded = load_model(path)
    assert type(loaded) is cls
    assert_same_weights(loaded, net.state_dict())
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


# --------------------------------------------------------------------------- embedded model
def test_embedded_demo_image() -> None:
    from cem_lab.models import embedded_demo_image

    img = embedded_demo_image()
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    assert img.std() > 20  # texture and edges, not a flat region


def test_embedded_model_beats_the_noisy_input() -> None:
    import yaml

    from cem_lab.models import EMBEDDED_WEIGHTS, embedded_demo_image, load_embedded_model

    assert EMBEDDED_WEIGHTS.is_file(), f"committed weights missing: {EMBEDDED_WEIGHTS}"
    assert EMBEDDED_WEIGHTS.stat().st_size < 1_000_000
    model = load_embedded_model()
    assert isinstance(model, DnCNN) and not model.training and model.scale == 1
    clean_u8 = embedded_demo_image()
    noisy = DenoiseTask(sigma=50).degrade(from_uint8(clean_u8), 0)
    with torch.no_grad():
        out = model(noisy)
    p_noisy, p_model = psnr(to_uint8(noisy), clean_u8), psnr(to_uint8(out), clean_u8)
    assert p_model > 24.0 and p_model > p_noisy + 8.0, (p_noisy, p_model)
    recorded = yaml.safe_load(EMBEDDED_WEIGHTS.with_suffix(".yaml").read_text())
    assert recorded["trained_with"].startswith("python -m cem_lab.training.embedded_training")
    assert abs(recorded["validation"]["psnr_model"] - p_model) < 0.1
    assert abs(recorded["validation"]["psnr_noisy"] - p_noisy) < 0.01


def test_missing_embedded_weights_give_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    from cem_lab.models import embedded

    monkeypatch.setattr(embedded, "EMBEDDED_WEIGHTS", tmp_path / "gone.safetensors")
    with pytest.raises(CheckpointError, match="embedded model weights are missing"):
        embedded.load_embedded_model()
