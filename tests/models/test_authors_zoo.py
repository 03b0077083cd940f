"""The paper's own networks (the authors' model zoo, GitHub J-FHu/CEM) load by folder and name from files in the
authors' layout and names, with the authors' keys and shapes; every mistake is one line before any compute.

No real checkpoint can be downloaded here: the files are cem_lab's implementations (or spandrel's) with seeded
random weights, written as the authors' files are (plain state dicts, BasicSR ``params``), under their names."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_clean_refusal, run_console

from cem_lab.models.authors import AuthorsModelError, catalogue, coverage, entry, load_authors_model
from cem_lab.models.authors.catalogue import file_key

FIXTURES = Path(__file__).parent / "fixtures" / "authors_keys"
OWN = [name for name, e in catalogue().items() if e.build == "own"]
#: the default suite builds the small ones; the 5M+ parameter networks (RCANs, wide EDSRs) run under -m slow
OWN_CASES = [pytest.param(n, marks=pytest.mark.slow) if (entry(n).parameters or 0) > 5_000_000 else n for n in OWN]


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{entry(name).fixture}.json").read_text())


def _build(name: str) -> torch.nn.Module:
    e = entry(name)
    module, _, cls = e.arch.rpartition(".")
    return getattr(importlib.import_module(module), cls)(**e.kwargs)


def fixture_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with exactly the authors' keys and shapes of ``name`` (its fixture), seeded random values;
    integer index buffers (SwinIR's relative position indices) kept in range."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in _fixture(name)["state_dict"]:
        if key.endswith("relative_position_index"):
            state[key] = torch.zeros(shape, dtype=torch.long)
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.02
    return state


def write_authors_file(name: str, folder: Path, seed: int = 0, net: torch.nn.Module | None = None) -> Path:
    """``name``'s checkpoint as the authors publish it: its file name, its layout, seeded random weights (a network
    spandrel builds: its fixture's keys and shapes)."""
    e = entry(name)
    torch.manual_seed(seed)
    if net is None and e.arch is None and e.fixture:
        state = fixture_state(name, seed)
    else:
        state = (net if net is not None else _build(name)).state_dict()
    key = file_key(e)
    obj = {key: state} if key else state
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(obj, folder / e.file)
    return folder / e.file


def test_the_catalogue_covers_the_authors_model_list():
    cat = catalogue()
    assert len(cat) == 90  # every MODEL_LIST name of J-FHu/CEM@5fd1d9b
    counts = coverage()
    assert sum(counts.values()) == 90 and counts["own"] + counts["spandrel"] >= 50, counts
    for e in cat.values():
        assert e.file and e.scale in (1, 4) and e.task in ("sr", "dn", "dr", "mixed"), e
        if e.build == "own":
            assert e.arch and e.fixture and e.parameters, e.name
        if e.build == "none":
            assert e.why, e.name


@pytest.mark.parametrize("name", OWN_CASES)
def test_own_implementations_have_the_authors_keys_shapes_and_parameters(name):
    fx = _fixture(name)
    net = _build(name)
    got = [[k, list(v.shape)] for k, v in net.state_dict().items()]
    assert got == fx["state_dict"], name
    assert sum(p.numel() for p in net.parameters()) == fx["parameters"] == entry(name).parameters


def test_a_name_not_in_the_zoo_names_the_nearest():
    with pytest.raises(AuthorsModelError, match="did you mean 'EDSR-64-18' or 'EDSR-64-16'"):
        entry("EDSR-64-17")


def test_a_missing_folder_or_file_names_the_file_and_where_it_is_published(tmp_path):
    with pytest.raises(AuthorsModelError, match=r"model\.dir=PATH .*EDSR-64-16_15000\.pth"):
        load_authors_model("EDSR-64-16", None)
    with pytest.raises(AuthorsModelError, match="is not a folder"):
        load_authors_model("EDSR-64-16", tmp_path / "nowhere")
    with pytest.raises(AuthorsModelError, match=r"needs EDSR-64-16_15000\.pth in .*github\.com/J-FHu/CEM"):
        load_authors_model("EDSR-64-16", tmp_path)


def _kair_dncnn(nb: int = 20) -> torch.nn.Module:
    kair = importlib.import_module("spandrel.architectures.DnCNN.__arch.network_dncnn").DnCNN
    return kair(in_nc=3, out_nc=3, nc=64, nb=nb, act_mode="R")


def test_a_spandrel_network_loads_and_a_file_of_another_depth_is_refused(tmp_path):
    write_authors_file("DnCNN", tmp_path / "good", net=_kair_dncnn())
    net = load_authors_model("DnCNN", tmp_path / "good")
    assert net.model_info["parameters"] == entry("DnCNN").parameters == _fixture("DnCNN")["parameters"]
    assert net.model_info["name"] == "DnCNN" and net.model_info["build"] == "spandrel"
    assert net(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)
    write_authors_file("DnCNN", tmp_path / "deep", net=_kair_dncnn(nb=17))
    with pytest.raises(AuthorsModelError, match="parameters; DnCNN has 668,227"):
        load_authors_model("DnCNN", tmp_path / "deep")


def test_a_scale_the_network_does_not_serve_is_refused(tmp_path):
    write_authors_file("DnCNN", tmp_path, net=_kair_dncnn())
    with pytest.raises(AuthorsModelError, match="scale-1 network"):
        load_authors_model("DnCNN", tmp_path, scale=4)


@pytest.mark.slow
def test_cli_maps_an_authors_network_by_folder_and_name(tmp_path):
    write_authors_file("DnCNN", tmp_path / "zoo", net=_kair_dncnn())
    args = [
        "model=authors",
        "model.name=DnCNN",
        f"model.dir={tmp_path / 'zoo'}",
        "task=dn",
        "dataset=standard",
        "standard.name=monarch",
        "image_crop=64",
        "roi=[24,24,16]",
        "cem.block=16",
        "cem.coarse=2",
        "cem.fine=4",
        "figures=false",
        "progress=false",
        "run_name=authors_dncnn",
    ]
    p = run_console("cem", args, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    folder = tmp_path / "runs" / "cem" / "authors_dncnn"
    summary = json.loads((folder / "summary.json").read_text())
    info = summary["model_info"]
    assert summary["model"] == "DnCNN" and info["name"] == "DnCNN" and info["build"] == "spandrel"
    assert info["checkpoint"].endswith("dncnn_color_blind.pth") and len(info["sha256"]) == 64
    effect = np.load(folder / "cem.npz")["effect_raw"]
    assert effect.shape == (4, 4) and np.isfinite(effect).all()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(["model.name=EDSR-64-17", "task=sr"], ["'EDSR-64-16'", "did you mean"], marks=pytest.mark.slow),
        (["model.name=RCAN_DN", "task=sr"], ["RCAN_DN was trained for dn", "model.allow_other_task=true"]),
        pytest.param(["model.name=EDSR-64-16", "task=dn"], ["EDSR-64-16 was trained for sr"], marks=pytest.mark.slow),
        (["model.name=EDSR-64-16", "task=sr"], ["needs EDSR-64-16_15000.pth in", "J-FHu/CEM"]),
    ],
    ids=["unknown name", "dn network on sr", "sr network on dn", "file missing"],
)
def test_cli_refuses_each_mistake_in_one_line_before_any_compute(tmp_path, args, words):
    p = run_console("cem", ["model=authors", f"model.dir={tmp_path}", *args], tmp_path)
    assert_clean_refusal(p, *words)
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny inputs through big networks: one thread, no spinning against other workers
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", OWN_CASES)
def test_every_own_network_loads_from_its_authors_file_by_folder_and_name(name, tmp_path, one_thread):
    write_authors_file(name, tmp_path)
    net = load_authors_model(name, tmp_path)
    e = entry(name)
    assert net.model_info["name"] == name and net.model_info["parameters"] == e.parameters
    assert net.model_info["layout"] == ("plain" if e.layout == "plain" else "params")
    assert net.scale == e.scale


def test_a_checkpoint_of_another_width_is_refused_with_its_shapes(tmp_path):
    e = entry("EDSR-64-16")
    write_authors_file("EDSR-32-16", tmp_path)
    (tmp_path / entry("EDSR-32-16").file).rename(tmp_path / e.file)
    with pytest.raises(AuthorsModelError, match=r"tensors of other shapes \(.*: \[32, .*\] in the file, \[64, "):
        load_authors_model("EDSR-64-16", tmp_path)


def test_a_multi_task_network_on_sr_takes_the_bicubic_upsampled_lr_image(tmp_path, one_thread):
    write_authors_file("SRResNet_mix", tmp_path)
    net = load_authors_model("SRResNet_mix", tmp_path, scale=4)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        y = net(x)
        direct = net.net(torch.nn.functional.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False))
    assert net.scale == 4 and y.shape == (1, 3, 32, 32) and torch.equal(y, direct)
    assert "bicubic-upsampled x4" in net.model_info["sr_input"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("SRCNN", ["task=sr", "task.scale=4"]),
        ("FSRCNN-48-6", ["task=sr", "task.scale=4"]),
        ("EDSR-32-16", ["task=sr", "task.scale=4"]),
        ("RCAN_pooling4", ["task=sr", "task.scale=4"]),
        ("RCAN_DN", ["task=dn"]),
        ("SRResNet_DR", ["task=dr"]),
        ("SRResNet_mix", ["task=sr", "task.scale=4"]),
        ("SRResNet", ["task=sr", "task.scale=4"]),
        ("SwinIR", ["task=sr", "task.scale=4"]),
        ("SwinIR_DN", ["task=dn"]),
        ("SwinIR_MIO", ["task=dr"]),
    ],
)
def test_cli_maps_the_papers_networks(name, task, tmp_path):
    write_authors_file(name, tmp_path / "zoo")
    args = ["model=authors", f"model.name={name}", f"model.dir={tmp_path / 'zoo'}", *task, "dataset=standard"]
    args += ["standard.name=monarch", "image_crop=64", "roi=[24,24,16]", "cem.block=16", "cem.coarse=2"]
    args += ["cem.fine=3", "figures=false", "progress=false", "run_name=m"]
    p = run_console("cem", args, tmp_path, OMP_NUM_THREADS="1")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "cem" / "m" / "summary.json").read_text())
    assert summary["model_info"]["name"] == name and summary["model_info"]["parameters"] == entry(name).parameters
    assert np.isfinite(np.load(tmp_path / "runs" / "cem" / "m" / "cem.npz")["effect_raw"]).all()


def test_the_coverage_table_is_the_catalogues():
    from cem_lab.models.authors.coverage import coverage_markdown

    doc = Path(__file__).parents[2] / "docs" / "authors_zoo.md"
    assert doc.read_text() == coverage_markdown(), "regenerate: python -m cem_lab.models.authors.coverage > " + str(doc)


SPANDREL = [n for n, e in catalogue().items() if e.build == "spandrel" and e.fixture and n != "DnCNN"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SPANDREL)
def test_spandrel_networks_load_from_a_file_of_the_authors_keys_and_shapes(name, tmp_path, one_thread):
    """A file with exactly the authors' keys and shapes (seeded random values; integer index buffers kept in
    range) loads through spandrel with the architecture, scale and parameter count of its name."""
    e = entry(name)
    write_authors_file(name, tmp_path)
    net = load_authors_model(name, tmp_path)
    assert net.model_info["parameters"] == e.parameters and net.model_info["build"] == "spandrel"


@pytest.mark.slow
def test_cli_maps_an_authors_network_at_the_papers_size_and_settings(tmp_path):
    """A 256 px picture, a 32 px ROI, block 8, T_c 3, T_f 50 (the paper's demo settings), through the CLI."""
    write_authors_file("FSRCNN-48-6", tmp_path / "zoo")
    args = ["model=authors", "model.name=FSRCNN-48-6", f"model.dir={tmp_path / 'zoo'}", "task=sr", "task.scale=4"]
    args += ["dataset=standard", "standard.name=monarch", "image_crop=256", "roi=[112,112,32]", "cem.block=8"]
    args += ["cem.coarse=3", "cem.fine=50", "figures=false", "progress=false", "run_name=paper_size"]
    p = run_console("cem", args, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    folder = tmp_path / "runs" / "cem" / "paper_size"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["settings"]["estimator"]["fine"] == 50 and summary["block"] == 8
    effect = np.load(folder / "cem.npz")["effect_raw"]
    assert effect.shape == (32, 32) and np.isfinite(effect[~np.isnan(effect)]).all()
