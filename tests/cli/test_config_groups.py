"""Every option of every config group composes, and what it describes is built by the composition root.

Written against the files in ``conf/`` (not a hand list of options): a new option of any group is
covered as soon as it exists. Each program's primary config (cem-lab, cem-attribution, cem-train) is
composed with each option of each group it lists; the values an option leaves to the user (``???``)
are filled with files made in ``tmp_path``; then the objects the option describes are built the way
the CLI builds them (``cem_lab.compose``): the task, the map's settings, the patch bank, the model.
Launchers, loggers and the ``parallel`` group are composed only: they configure processes, not objects.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from PIL import Image

from cem_lab.causal.interventions import LVIntervention
from cem_lab.compose import resolvers  # noqa: F401 (registers the resolvers the configs use)
from cem_lab.compose.build import build_model, build_patch_bank, build_task
from cem_lab.compose.prepare import map_settings
from cem_lab.models import DnCNN
from cem_lab.models.checkpoint import save_weights
from cem_lab.patches import PatchBank
from cem_lab.tasks import Task

CONF = Path(__file__).resolve().parents[2] / "conf"
#: groups that configure how processes run, not objects: composed, not built
PROCESS_GROUPS = ("launcher", "logger", "parallel")
#: options whose model is a network with real weights to convert or download (covered by their own tests)
HEAVY_MODELS = {"pretrained", "official"}  # official: a download (tests/models/test_official.py)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def groups_of(config: str) -> list[str]:
    """The groups a primary config lists in its defaults (``- group: option`` and ``- group: null``)."""
    defaults = OmegaConf.load(CONF / f"{config}.yaml").get("defaults", [])
    out = []
    for entry in defaults:
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            (key,) = entry.keys()
            if not str(key).startswith("override") and (CONF / str(key)).is_dir():
                out.append(str(key))
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The files a user gives where an option says ``???``: an image, a folder of images, a patch bank,
    a saved cem_lab model, a plain checkpoint."""
    root = tmp_path_factory.mktemp("user_files")
    rng = np.random.default_rng(0)
    image = root / "img.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
    folder = root / "images"
    folder.mkdir()
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    bank = root / "bank.npz"
    PatchBank.embedded(patch_size=8, count=64, seed=0).save(bank)
    torch.manual_seed(0)
    net = DnCNN(features=4, depth=3)
    model_file = root / "dncnn.safetensors"
    save_weights(net, model_file)
    plain = root / "compact_x2.pth"  # an official architecture spandrel detects (model=auto)
    compact = importlib.import_module("spandrel.architectures.Compact.__arch.SRVGG").SRVGGNetCompact
    torch.save(compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2).state_dict(), plain)
    authors = root / "authors_zoo"  # the paper's zoo folder: KAIR's colour DnCNN in the authors' file name
    authors.mkdir()
    kair = importlib.import_module("spandrel.architectures.DnCNN.__arch.network_dncnn").DnCNN
    torch.save(kair(in_nc=3, out_nc=3, nc=64, nb=20, act_mode="R").state_dict(), authors / "dncnn_color_blind.pth")
    return {
        "image": image,
        "folder": folder,
        "bank": bank,
        "model_file": model_file,
        "plain": plain,
        "authors": authors,
    }


def fill(group: str, option: str, files: dict) -> list[str]:
    """The overrides that give an option the values it leaves to the user."""
    need = {
        ("model", "file"): [f"model.path={files['model_file']}"],
        ("model", "auto"): [f"model.path={files['plain']}", "task=sr", "task.scale=2"],
        ("model", "custom"): ["model.net._target_=cem_lab.models.DnCNN", "+model.net.features=4", "+model.net.depth=3"],
        ("model", "zoo"): ["model.id=edsr_d2_w8_x4", "task=sr"],
        ("model", "pretrained"): ["model.id=waifu2x-photo-x2"],
        ("model", "official"): ["model.id=realesr-general-x4v3", "task=sr", "task.scale=4"],
        ("model", "authors"): [f"model.dir={files['authors']}", "model.name=DnCNN", "task=dn"],
        ("patches", "npz"): [f"patches.path={files['bank']}"],
        ("patches", "folder"): [f"patches.folder={files['folder']}"],
        ("dataset", "file"): [f"image={files['image']}"],
        ("dataset", "pair"): [f"image={files['image']}", f"degraded={files['image']}", "task=dn"],
        ("dataset", "folder"): [f"folder.dir={files['folder']}"],
        ("task", "custom"): ["task._target_=cem_lab.tasks.denoise.DenoiseTask", "+task.sigma=25"],
    }
    if group == "recipe":  # the paper-scale training grids read DIV2K from $DIV2K_HR or data.images
        return [f"data.images={files['folder']}"]
    return need.get((group, option), [])


def compose_config(config: str, overrides: list[str]):
    with initialize_config_module(config_module="cem_lab.conf", version_base="1.3"):
        return compose(config_name=config, overrides=overrides)


CASES = [
    (config, group, option)
    for config in ("cem", "attribution", "train")
    for group in groups_of(config)
    for option in options(group)
]


def test_every_group_of_every_program_has_options():
    assert {"model", "task", "patches", "cem", "sampler", "intervention", "dataset", "parallel", "experiment"} <= set(
        groups_of("cem")
    )
    assert len(CASES) > 60, len(CASES)


@pytest.mark.parametrize(("config", "group", "option"), CASES, ids=[f"{c}:{g}={o}" for c, g, o in CASES])
def test_option_composes_and_builds(config, group, option, files):
    cfg = compose_config(config, [f"{group}={option}", *fill(group, option, files)])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    if group in PROCESS_GROUPS or config == "train":
        return  # cem-train's groups are built by its own tests (a Lightning run per model)
    if group == "experiment" and OmegaConf.select(cfg, "data_dir") is not None:
        return  # presets on the reference data (../shared/data): composed, built by the study tests
    task = build_task(cfg.task)
    assert isinstance(task, Task) and type(task).__qualname__ == cfg.task._target_.rsplit(".", 1)[-1]
    settings = map_settings(cfg)
    assert settings.block == cfg.cem.block
    # the estimator, sampler and intervention nodes are built into objects of their _target_
    for key, value in (("estimator", settings.estimator), ("intervention", settings.intervention)):
        assert f"{type(value).__module__}.{type(value).__qualname__}" == cfg.cem[key]._target_, key
    if isinstance(settings.intervention, LVIntervention):
        assert len(settings.intervention.bank) > 0
        assert type(settings.intervention.sampler).__qualname__ == cfg.cem.sampler._target_.rsplit(".", 1)[-1]
        assert len(build_patch_bank(cfg.patches)) > 0
    if group == "model" and option in HEAVY_MODELS:
        return
    if group in ("model", "experiment") or (group, option) == ("cem", "coarse_to_fine"):
        model = build_model(cfg.model)
        assert isinstance(model, torch.nn.Module)
