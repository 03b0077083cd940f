"""Official architectures by checkpoint path (model=auto): spandrel detects the architecture from the
state dict. Small random-weight networks of ten architectures are saved in the usual layouts, loaded by
path (the Python API and the CLI), checked against the task, and mapped."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import assert_clean_refusal

spandrel = pytest.importorskip("spandrel", reason="model=auto needs spandrel (pip install spandrel)")

from cem_lab.models.by_path import DetectedNetwork, load_detected  # noqa: E402
from cem_lab.models.checkpoint import CheckpointError  # noqa: E402


def _arch(module: str, cls: str):
    import importlib

    return getattr(importlib.import_module(f"spandrel.architectures.{module}"), cls)


#: name -> (builder with small hyper-parameters, architecture name spandrel reports, scale)
ARCHS = {
    "swinir": (
        lambda: _arch("SwinIR", "SwinIR")(
            img_size=16,
            embed_dim=12,
            depths=[2],
            num_heads=[2],
            window_size=4,
            upscale=2,
            upsampler="pixelshuffledirect",
            mlp_ratio=2.0,
        ),
        "SwinIR",
        2,
    ),
    "hat": (
        lambda: _arch("HAT", "HAT")(
            img_size=16,
            embed_dim=12,
            depths=(2,),
            num_heads=(2,),
            window_size=4,
            upscale=2,
            upsampler="pixelshuffle",
            mlp_ratio=2.0,
            squeeze_factor=4,
            compress_ratio=2,
        ),
        "HAT",
        2,
    ),
    "rcan": (lambda: _arch("RCAN", "RCAN")(scale=2, n_resgroups=1, n_resblocks=2, n_feats=16, reduction=4), "RCAN", 2),
    "esrgan": (
        lambda: _arch("ESRGAN.__arch.RRDB", "RRDBNet")(in_nc=3, out_nc=3, num_filters=16, num_blocks=1, scale=2),
        "ESRGAN",
        2,
    ),
    "compact": (
        lambda: _arch("Compact.__arch.SRVGG", "SRVGGNetCompact")(
            num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=4, upscale=2
        ),
        "RealESRGAN Compact",
        2,
    ),
    "dat": (
        lambda: _arch("DAT", "DAT")(
            img_size=16, embed_dim=16, split_size=[2, 4], depth=[2], num_heads=[2], expansion_factor=4.0, upscale=2
        ),
        "DAT",
        2,
    ),
    "span": (lambda: _arch("SPAN", "SPAN")(num_in_ch=3, num_out_ch=3, feature_channels=12, upscale=2), "SPAN", 2),
    "nafnet": (
        lambda: _arch("NAFNet", "NAFNet")(
            img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]
        ),
        "NAFNet",
        1,
    ),
    "drunet": (lambda: _arch("DRUNet", "DRUNet")(in_nc=4, out_nc=3, nc=[8, 16, 32, 64], nb=3), "DRUNet", 1),
    "dncnn": (lambda: _arch("DnCNN", "DnCNN")(in_nc=3, out_nc=3, nc=16, nb=8, act_mode="R"), "DnCNN", 1),
}
LAYOUTS = ("plain", "params", "params_ema", "module", "safetensors")


def _build(name: str):
    torch.manual_seed(0)
    return ARCHS[name][0]().eval()


def _save(net, folder, layout: str):
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = folder / "net.safetensors"
        save_file(sd, str(path))
        return path
    obj = {
        "plain": sd,
        "params": {"params": sd},
        "params_ema": {"params_ema": sd, "params": sd},
        "module": {f"module.{k}": v for k, v in sd.items()},
    }[layout]
    path = folder / f"net_{layout}.pth"
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_every_layout_loads_the_same_network(tmp_path, name):
    net = _build(name)
    _, arch, scale = ARCHS[name]
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    outs = []
    for layout in LAYOUTS:
        loaded = load_detected(_save(net, tmp_path, layout))
        assert isinstance(loaded, DetectedNetwork)
        info = loaded.model_info
        assert info["architecture"] == arch and loaded.scale == scale == info["scale"]
        assert info["parameters"] == sum(p.numel() for p in net.parameters())
        assert len(info["sha256"]) == 64
        assert info["prefix_stripped"] == ("module." if layout == "module" else None)
        x0 = x.clone()
        with torch.no_grad():
            outs.append(loaded(x))
        torch.testing.assert_close(x, x0, rtol=0, atol=0)  # the caller's input is never changed in place
    assert tuple(outs[0].shape) == (1, 3, 24 * scale, 24 * scale)
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=0, atol=0)


def test_the_network_is_differentiable_and_pads_like_spandrel(tmp_path):
    """The dependency probe needs gradients (spandrel's own call runs under inference_mode); an input off
    the architecture's size grid is padded and cut back exactly as spandrel's call API does."""
    net = _build("drunet")  # DRUNet needs sizes that are multiples of 8
    loaded = load_detected(_save(net, tmp_path, "plain"))
    assert loaded.crop_multiple == 8
    x = torch.rand(1, 3, 21, 19, requires_grad=True)
    y = loaded(x)
    assert tuple(y.shape) == (1, 3, 21, 19)
    y[..., 10, 9].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    desc = spandrel.ModelLoader().load_from_state_dict(net.state_dict())
    torch.testing.assert_close(y.detach().clamp(0, 1), desc(x.detach()), rtol=0, atol=1e-6)


def test_a_windowed_network_crops_on_its_window_grid(tmp_path):
    assert load_detected(_save(_build("swinir"), tmp_path, "plain")).crop_multiple == 4


def test_unknown_checkpoint_names_the_keys_and_the_supported_architectures(tmp_path):
    path = tmp_path / "mystery.pth"
    torch.save({"encoder.layer0.weight": torch.zeros(4, 3, 3, 3), "head.bias": torch.zeros(4)}, path)
    with pytest.raises(CheckpointError) as e:
        load_detected(path)
    msg = str(e.value)
    assert "encoder.layer0.weight" in msg and "SwinIR" in msg and "params_ema" in msg and "model=custom" in msg


def test_truncated_or_edited_checkpoint_is_refused(tmp_path):
    sd = _build("compact").state_dict()
    sd["body.2.weight"] = sd["body.2.weight"][:, :5]  # a tensor that no longer fits the detected architecture
    path = tmp_path / "edited.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="could not build it|cannot identify"):
        load_detected(path)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(_save(_build("compact"), tmp_path, "plain").read_bytes()[:500])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_detected(broken)


def test_a_grey_network_needs_a_choice_and_then_runs_per_channel(tmp_path):
    torch.manual_seed(0)
    grey = _arch("DnCNN", "DnCNN")(in_nc=1, out_nc=1, nc=8, nb=8, act_mode="R").eval()
    path = _save(grey, tmp_path, "plain")
    with pytest.raises(CheckpointError, match="model.grey=per_channel"):
        load_detected(path)
    loaded = load_detected(path, grey="per_channel")
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        y = loaded(x)
        for c in range(3):
            torch.testing.assert_close(y[:, c : c + 1], grey(x[:, c : c + 1]))
    with pytest.raises(CheckpointError, match="drop model.grey"):
        load_detected(_save(_build("dncnn"), tmp_path, "plain"), grey="per_channel")


# --------------------------------------------------------------------------- through the CLI
@pytest.fixture
def small_image(tmp_path, clean_image):
    path = tmp_path / "img.png"
    Image.fromarray(clean_image[:32, :32]).save(path)
    return path


def _cfg(overrides):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="cem_lab.conf", version_base="1.3"):
        return compose(config_name="cem", overrides=overrides)


#: the CLI maps, one layout each (every layout is read in the test above)
CLI_CASES = [
    ("swinir", "params_ema"),
    ("hat", "params"),
    ("rcan", "module"),
    ("esrgan", "plain"),
    ("compact", "safetensors"),
    ("dat", "params"),
    ("nafnet", "params_ema"),
    ("dncnn", "plain"),
]


@pytest.mark.parametrize("name,layout", CLI_CASES)
def test_cli_maps_a_network_loaded_by_path(tmp_path, small_image, name, layout):
    from cem_lab.cli.cem import run

    _, arch, scale = ARCHS[name]
    path = _save(_build(name), tmp_path, layout)
    task = ["task=sr", f"task.scale={scale}", "cem.block=4"] if scale > 1 else ["task=dn", "cem.block=8"]
    cfg = _cfg(
        [
            "model=auto",
            f"model.path={path}",
            f"image={small_image}",
            "roi=[8,8,8]",
            "cem.fine=2",
            "patches.count=100",
            "progress=false",
            "figures=false",
            *task,
        ]
    )
    out = tmp_path / "run"
    result = run(cfg, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_info"]["architecture"] == arch and summary["model_info"]["layout"] in (
        layout,
        "safetensors",
        "plain",
        "module",
    )
    assert summary["model"].startswith(arch)
    assert np.isfinite(result.effect).sum() > 0
    assert summary["mode"] in ("crop", "full")


def _cli(args, cwd):
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "cem_lab.cli.cem", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_cli_refuses_a_network_of_another_scale_before_any_compute(tmp_path, small_image):
    path = _save(_build("compact"), tmp_path, "plain")  # a x2 network
    p = _cli(
        [
            "model=auto",
            f"model.path={path}",
            "task=sr",
            "task.scale=4",
            f"image={small_image}",
            "roi=[8,8,8]",
            "progress=false",
        ],
        tmp_path / "cwd",
    )
    assert_clean_refusal(p, "x2", "task.scale=2")
    assert not list((tmp_path / "cwd").glob("runs/cem/*/cem.npz"))


@pytest.mark.slow  # 12 s: two CLI starts for two refusals the loader tests check in process
def test_cli_refuses_a_grey_network_and_an_unknown_file(tmp_path, small_image):
    torch.manual_seed(0)
    grey = _save(_arch("DnCNN", "DnCNN")(in_nc=1, out_nc=1, nc=8, nb=8, act_mode="R"), tmp_path, "plain")
    p = _cli(["model=auto", f"model.path={grey}", "task=dn", f"image={small_image}", "roi=[8,8,8]"], tmp_path / "a")
    assert_clean_refusal(p, "one-channel", "model.grey=per_channel")
    odd = tmp_path / "odd.pth"
    torch.save({"foo.weight": torch.zeros(2)}, odd)
    p = _cli(["model=auto", f"model.path={odd}", "task=dn", f"image={small_image}", "roi=[8,8,8]"], tmp_path / "b")
    assert_clean_refusal(p, "cannot identify", "foo.weight")
    p = _cli(["model=auto", "task=dn", f"image={small_image}", "roi=[8,8,8]"], tmp_path / "c")
    assert p.returncode != 0 and "model.path" in p.stderr and "Traceback" not in p.stderr
