"""The five networks of the paper's zoo that only spandrel-extra-arches builds (MPRNet, MPRNet_DR, MIRNetV2,
Restormer_DN, Restormer_DR) load by folder and name from files in the authors' layout and names, fit the authors'
keys and shapes, give the output the authors' forward gives (the last stage's image; clamped to [0, 1] for
MPRNet_DR), log their non-commercial licence, and without the package are refused in one line naming the fix.

The files are the package's classes with the authors' constructor arguments and seeded random weights (no real
checkpoint can be downloaded here); that these classes compute the authors' outputs exactly was measured against
the authors' own classes outside the project (max abs diff 0.0)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_clean_refusal, run_console

from cem_lab.models.authors import AuthorsModelError, catalogue, entry, load_authors_model
from cem_lab.models.authors.catalogue import file_key

#: the tests that build the networks need the extra-arches extra (in dev); the refusals make it absent themselves
needs_package = pytest.mark.skipif(
    importlib.util.find_spec("spandrel_extra_arches") is None, reason="pip install 'cem_lab[extra-arches]'"
)
FIXTURES = Path(__file__).parent / "fixtures" / "authors_keys"
EXTRA = [n for n, e in catalogue().items() if e.package]


def _class(name: str):
    module, _, cls = str(entry(name).arch).rpartition(".")
    return getattr(importlib.import_module(module), cls)


def write_authors_file(name: str, folder: Path, seed: int = 0, **kwargs) -> torch.nn.Module:
    """``name``'s checkpoint as the authors publish it (file name, layout) with seeded random weights; the network
    written (``kwargs`` replace the authors' constructor arguments: another width)."""
    e = entry(name)
    torch.manual_seed(seed)
    net = _class(name)(**{**e.kwargs, **kwargs}).eval()
    with torch.no_grad():  # off the initialisation, so that every layer (and MPRNet's clamp) matters
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    key = file_key(e)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({key: net.state_dict()} if key else net.state_dict(), folder / e.file)
    return net


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_five_networks_name_their_package_licence_and_fixture():
    assert EXTRA == ["MPRNet", "MIRNetV2", "Restormer_DN", "MPRNet_DR", "Restormer_DR"]
    for n in EXTRA:
        e = entry(n)
        assert e.build == "spandrel" and e.package == "spandrel-extra-arches" and e.fixture == n, n
        assert "non-commercial" in e.licence and e.parameters, n
    assert [n for n in EXTRA if entry(n).clamp] == ["MPRNet_DR"]


@needs_package
@pytest.mark.parametrize("name", EXTRA)
def test_the_package_class_with_the_authors_arguments_has_the_authors_keys_shapes_and_parameters(name):
    fx = json.loads((FIXTURES / f"{name}.json").read_text())
    with torch.device("meta"):  # shapes only: the 26M-parameter Restormers cost nothing here
        net = _class(name)(**entry(name).kwargs)
    assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == fx["state_dict"], name
    # MPRNet's CABs share one PReLU: parameters() counts it once, the state dict under every key (as the authors')
    assert sum(p.numel() for p in net.parameters()) == fx["parameters"] == entry(name).parameters


@needs_package
@pytest.mark.parametrize("name", EXTRA)  # all five: 1.5 s for a 26M Restormer, 3.7 s for MPRNet (one thread, 16x24)
def test_loads_from_the_authors_file_by_folder_and_name_with_the_authors_output(name, tmp_path, one_thread, caplog):
    e = entry(name)
    ref_net = write_authors_file(name, tmp_path)
    with caplog.at_level(logging.INFO, logger="cem_lab"):
        net = load_authors_model(name, tmp_path)
    info = net.model_info
    assert info["name"] == name and info["parameters"] == e.parameters and info["build"] == "spandrel"
    assert "spandrel-extra-arches 0." in info["loader"] and info["licence"] == e.licence
    assert info["layout"] == file_key(e) and net.scale == 1
    licence_lines = [r.getMessage() for r in caplog.records if "non-commercial" in r.getMessage()]
    assert len(licence_lines) == 1 and name in licence_lines[0] and e.file in licence_lines[0]
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        y = net(x)
        ref = ref_net(x)
    ref = ref[0] if isinstance(ref, (list, tuple)) else ref  # MPRNet: the last stage's image comes first
    if e.clamp:
        assert ref.min() < 0 or ref.max() > 1  # the clamp matters on these weights
        ref = ref.clamp(0, 1)
    assert y.shape == (1, 3, 16, 24) and torch.equal(y, ref)


@needs_package
def test_a_checkpoint_of_another_width_is_refused_with_its_shapes(tmp_path):
    write_authors_file("MPRNet_DR", tmp_path, n_feat=48)
    with pytest.raises(AuthorsModelError, match=r"tensors of other shapes \(.*: \[48, 3, 3, 3\] in the file, \[40, "):
        load_authors_model("MPRNet_DR", tmp_path)


def test_without_the_package_the_name_is_refused_in_one_line_naming_the_licence_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "spandrel_extra_arches", None)  # as if not installed
    with pytest.raises(AuthorsModelError) as err:
        load_authors_model("MPRNet_DR", tmp_path)  # refused before the (absent) file is even looked for
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("MPRNet_DR needs spandrel-extra-arches")
    assert "ACADEMIC PUBLIC LICENSE, non-commercial use only" in msg and "pip install 'cem_lab[extra-arches]'" in msg


def _map_args(name: str, zoo: Path, task: str) -> list[str]:
    args = ["model=authors", f"model.name={name}", f"model.dir={zoo}", f"task={task}", "dataset=standard"]
    # a 32 px crop, 2 x 2 blocks: the smallest map MPRNet's multiple-of-8 grid takes (about 3 s of passes on a CPU)
    args += ["standard.name=monarch", "image_crop=32", "roi=[16,16,16]", "cem.block=16", "cem.coarse=2"]
    return args + ["cem.fine=3", "figures=false", "progress=false", "run_name=m"]


def test_cli_without_the_package_refuses_before_any_compute(tmp_path):
    shadow = tmp_path / "shadow" / "spandrel_extra_arches"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    pythonpath = os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])
    p = run_console("cem", _map_args("MPRNet_DR", tmp_path / "zoo", "dr"), tmp_path, PYTHONPATH=pythonpath)
    assert_clean_refusal(p, "MPRNet_DR needs spandrel-extra-arches", "non-commercial", "cem_lab[extra-arches]")
    assert not (tmp_path / "runs").exists()


@needs_package
@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("MPRNet_DR", "dr"),
        pytest.param("MIRNetV2", "dn", marks=pytest.mark.slow),
        pytest.param("MPRNet", "dn", marks=pytest.mark.slow),
        pytest.param("Restormer_DN", "dn", marks=pytest.mark.slow),
        pytest.param("Restormer_DR", "dr", marks=pytest.mark.slow),
    ],
)
def test_cli_maps_the_network_by_folder_and_name(name, task, tmp_path):
    write_authors_file(name, tmp_path / "zoo")
    p = run_console("cem", _map_args(name, tmp_path / "zoo", task), tmp_path, OMP_NUM_THREADS="1")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "non-commercial" in p.stderr + p.stdout
    folder = tmp_path / "runs" / "cem" / "m"
    summary = json.loads((folder / "summary.json").read_text())
    info = summary["model_info"]
    assert info["name"] == name and info["parameters"] == entry(name).parameters and "non-commercial" in info["licence"]
    assert info["checkpoint"].endswith(entry(name).file) and len(info["sha256"]) == 64
    effect = np.load(folder / "cem.npz")["effect_raw"]
    assert effect.shape == (2, 2) and np.isfinite(effect).all()
