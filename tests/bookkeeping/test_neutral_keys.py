"""One list of result-neutral keys per program: folder names, the run index and sweep names agree on it."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from PIL import Image

from cem_lab.bookkeeping.folder_names import run_name, sweep_name
from cem_lab.bookkeeping.neutral_keys import NEUTRAL_KEYS, drop_keys
from cem_lab.bookkeeping.run_index import finished_run, identity_config
from cem_lab.cli.cem import execute

CONFIGS = {"cem-lab": "cem", "cem-attribution": "attribution", "cem-train": "train"}


def _compose(config_name: str, overrides=(), hydra: bool = False):
    with initialize_config_module(config_module="cem_lab.conf", version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra)


@pytest.mark.parametrize("program", sorted(CONFIGS))
def test_yaml_exclude_keys_are_the_python_list(program):
    cfg = _compose(CONFIGS[program], hydra=True)
    assert list(cfg.hydra.job.config.override_dirname.exclude_keys) == list(NEUTRAL_KEYS[program])


def test_drop_keys_removes_dotted_keys_and_emptied_groups():
    data = {"a": 1, "g": {"x": 1, "y": 2}, "h": {"x": 1, "z": 3}}
    assert drop_keys(data, ["a", "g.x", "g.y", "h.x", "nope", "a.b"]) == {"h": {"z": 3}}


def test_folder_and_sweep_names_leave_out_neutral_keys():
    neutral = ["progress=false", "figures=false", "batch_size=4", "device=cpu", "checkpoint.every_s=1"]
    cfg = _compose("cem", ["seed=1", *neutral], hydra=True)
    assert run_name(cfg.hydra.job.override_dirname) == "seed=1"
    assert sweep_name(["seed=0,1", *neutral]) == sweep_name(["seed=0,1"]) == "seed=0,1"
    assert sweep_name(["seed=0,1", "task=dr"]) != sweep_name(["seed=0,1"])


def test_rerun_differing_in_neutral_keys_only_is_skipped(tmp_path):
    from skimage import data

    image = tmp_path / "img.png"
    Image.fromarray(np.ascontiguousarray(data.astronaut()[100:148, 200:248])).save(image)
    base = [
        "model=custom",
        "model.net._target_=cem_lab.models.DnCNN",
        "+model.net.features=8",
        "+model.net.depth=3",
        f"image={image}",
        "roi=[16,16,16]",
        "cem.fine=2",
        "patches.count=300",
    ]
    folder = tmp_path / "run"
    first = _compose("cem", [*base, "progress=false", "batch_size=8"])
    assert execute(first, folder)["status"] == "done"
    assert (folder / "figures" / "cem_panel.png").is_file()
    again = _compose("cem", [*base, "progress=true", "figures=false", "batch_size=3", "checkpoint.every_s=1"])
    assert identity_config(again) == identity_config(first)
    outcome = execute(again, folder)
    assert outcome["status"] == "skipped" and outcome["forward_passes"] == 0
    for other in ("seed=1", "cem.fine=3", "forward_batch=4", "metric.name=ssim"):
        assert finished_run(_compose("cem", [*base, other]), folder) is None, other
