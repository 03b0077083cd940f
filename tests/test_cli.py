"""The Hydra CLI: composition, a small end-to-end run, resume by folder name, clear errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from PIL import Image

from cem_lab.cli.cem import report, run, run_name

SMALL = ["model=custom", "model.net._target_=cem_lab.models.DnCNN", "+model.net.features=8",
         "+model.net.depth=3", "roi=[16,16,16]", "cem.fine=3", "patches.count=300", "progress=false"]


@pytest.fixture
def image_file(tmp_path, clean_image):
    path = tmp_path / "img_7.png"
    Image.fromarray(clean_image).save(path)
    return path


def _cfg(overrides):
    with initialize_config_module(config_module="cem_lab.conf", version_base="1.3"):
        return compose(config_name="cem", overrides=overrides)


def test_default_config_composes_to_the_reference_settings():
    cfg = _cfg([])
    assert cfg.cem.estimator == "coarse_to_fine"
    assert (cfg.cem.coarse, cfg.cem.fine, cfg.cem.tol, cfg.cem.block) == (3, 50, 0.01, 8)
    assert cfg.task.name == "dn" and cfg.task.sigma == 50
    assert cfg.metric.name == "psnr" and cfg.metric.crop_border == 0 and not cfg.metric.test_y_channel


@pytest.mark.parametrize("task", ["dn", "dr"])
def test_cli_run_writes_numbers_and_figures(tmp_path, image_file, task):
    cfg = _cfg(SMALL + [f"task={task}", f"image={image_file}"])
    out = tmp_path / "run"
    result = run(cfg, out)
    for f in ["cem.npz", "summary.json", "config.yaml", "state.npz", "figures/cem_panel.png",
              "figures/cem_overlay.png", "figures/pie.png", "figures/colorbar.png", "figures/restored_roi.png",
              "images/input.png", "images/restored.png", "images/target.png"]:
        assert (out / f).is_file(), f
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["task"]["name"] == task
    assert summary["roi"] == [16, 16, 16]
    assert sum(summary["counts"].values()) == summary["blocks_outside_roi"] == 36 - 4
    if task == "dr":  # the rain seed is the first number in the file name
        assert "img_7" in summary["image"]
    text = report(result, out)
    assert "positive" in text and "cem_panel.png" in text


def test_run_names_come_from_overrides():
    assert run_name("") == "default"
    assert run_name("model=dncnn,roi=[1,2,3]") == "model=dncnn,roi=[1,2,3]"
    assert "/" not in run_name("image=/data/x.png")


def _cli(args, cwd):
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "cem_lab.cli.cem", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_cli_rejects_a_roi_outside_the_image(tmp_path, image_file):
    p = _cli(SMALL[:-2] + [f"image={image_file}", "roi=[40,40,16]", "progress=false"], tmp_path)
    assert p.returncode == 2
    assert "outside" in p.stderr and "Traceback" not in p.stderr
    assert not list(tmp_path.glob("runs/cem/*/cem.npz"))


def test_cli_rejects_an_unknown_task(tmp_path):
    p = _cli(["task=deblur"], tmp_path)
    assert p.returncode != 0
    assert "deblur" in p.stderr and "dn" in p.stderr  # Hydra lists the available options


def test_cli_rerun_reuses_the_folder(tmp_path, image_file):
    args = SMALL + [f"image={image_file}"]
    first = _cli(args, tmp_path)
    assert first.returncode == 0, first.stderr
    folders = list((tmp_path / "runs" / "cem").iterdir())
    assert len(folders) == 1
    effect = np.load(folders[0] / "cem.npz")["effect"]
    summary = (folders[0] / "summary.json").read_text()
    second = _cli(args, tmp_path)
    assert second.returncode == 0, second.stderr
    # a finished run is recognised (done.json) and reused without any model work
    assert "already finished (skipped)" in second.stdout
    assert (folders[0] / "summary.json").read_text() == summary
    np.testing.assert_array_equal(np.load(folders[0] / "cem.npz")["effect"], effect)
    (folders[0] / "done.json").unlink()  # without the record, the core resumes from state.npz
    third = _cli(args, tmp_path)
    assert third.returncode == 0, third.stderr
    assert "resumed" in json.loads((folders[0] / "summary.json").read_text())["notes"][-1]
    np.testing.assert_array_equal(np.load(folders[0] / "cem.npz")["effect"], effect)


def test_cli_two_processes_give_the_single_process_map(tmp_path, image_file):
    args = SMALL + [f"image={image_file}"]
    one = _cli(args, tmp_path / "one")
    two = _cli(args + ["distributed.devices=2", "distributed.accelerator=cpu"], tmp_path / "two")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    a = np.load(next((tmp_path / "one").glob("runs/cem/*/cem.npz")))
    b = np.load(next((tmp_path / "two").glob("runs/cem/*/cem.npz")))
    np.testing.assert_array_equal(a["effect_raw"], b["effect_raw"])
    np.testing.assert_array_equal(a["classification"], b["classification"])
