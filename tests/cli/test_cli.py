"""The Hydra CLI: composition, a small end-to-end run, resume by folder name, clear errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_clean_refusal
from hydra import compose, initialize_config_module
from PIL import Image

from cem_lab.bookkeeping.folder_names import run_name
from cem_lab.cli.cem import report, run

SMALL = [
    "model=custom",
    "model.net._target_=cem_lab.models.DnCNN",
    "+model.net.features=8",
    "+model.net.depth=3",
    "roi=[16,16,16]",
    "cem.fine=3",
    "patches.count=300",
    "progress=false",
]


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
    assert cfg.cem.estimator._target_ == "cem_lab.causal.estimators.CoarseToFineEstimator"
    assert (cfg.cem.coarse, cfg.cem.fine, cfg.cem.tol, cfg.cem.block) == (3, 50, 0.01, 8)
    assert (cfg.cem.estimator.coarse, cfg.cem.estimator.fine, cfg.cem.estimator.tol) == (3, 50, 0.01)
    assert cfg.cem.intervention._target_ == "cem_lab.causal.interventions.LVIntervention"
    assert cfg.cem.sampler._target_ == "cem_lab.patches.sampling.UniformSampler"
    assert cfg.task._target_ == "cem_lab.tasks.denoise.DenoiseTask" and cfg.task.sigma == 50
    assert cfg.metric.name == "psnr" and cfg.metric.crop_border == 0 and not cfg.metric.test_y_channel


@pytest.mark.parametrize("task", ["dn", "dr"])
def test_cli_run_writes_numbers_and_figures(tmp_path, image_file, task):
    cfg = _cfg(SMALL + [f"task={task}", f"image={image_file}"])
    out = tmp_path / "run"
    result = run(cfg, out)
    for f in [
        "cem.npz",
        "summary.json",
        "config.yaml",
        "state.npz",
        "figures/cem_panel.png",
        "figures/cem_overlay.png",
        "figures/pie.png",
        "figures/colorbar.png",
        "figures/restored_roi.png",
        "images/input.png",
        "images/restored.png",
        "images/target.png",
    ]:
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
    # found in the README walk: a quoted path through a cem-train run folder (whose name holds ',' and '=') was
    # split into fake overrides (`...,train.steps=model.safetensors_,...`); it is one value, cut to its file name
    trained = "'runs/train/model.net.depth=4,model=edsr,task.scale=4,train.steps=1500/model.safetensors'"
    name = run_name(f"model.path={trained},model=file,task.scale=4,task=sr")
    assert name.startswith("model.path=model.safetensors,model=file,task.scale=4,task=sr-"), name
    assert run_name(f"model.path={trained},model=file") != run_name(
        f"model.path={trained.replace('4', '8')},model=file"
    )


def _cli(args, cwd):
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "cem_lab.cli.cem", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_help_says_that_the_block_and_the_roi_are_in_output_pixels(tmp_path):
    p = _cli(["--help"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("cem-lab: one causal effect map")
    flat = " ".join(p.stdout.split())
    assert "cem.block=8 the side of a block in output pixels" in flat
    assert "roi=[top,left,size] the region of interest, in output pixels" in flat
    assert "run_name=NAME names it runs/cem/NAME instead" in flat
    assert "== Configuration groups ==" in flat and "cem: adaptive, coarse_to_fine, exhaustive" in flat
    # the config shows the defaults' values, not the references to where they are written
    assert "${cem_default" not in p.stdout, [ln for ln in p.stdout.splitlines() if "cem_default" in ln]
    from cem_lab.causal.settings import CEMSettings

    assert (
        f"  block: {CEMSettings.default('block')}\n" in p.stdout
        and f"  tol: {CEMSettings.default('tol')}\n" in p.stdout
    )
    assert not list(tmp_path.iterdir())  # help writes nothing


def test_a_block_that_does_not_divide_the_image_is_said_in_the_log_and_the_notes(tmp_path, image_file):
    p = _cli(SMALL + [f"image={image_file}", "cem.block=7"], tmp_path)  # 48 = 6 x 7 + 6
    assert p.returncode == 0, p.stderr[-3000:]
    line = "cem.block=7 does not divide the 48x48 output: 13 of the 49 blocks are partial"
    assert (p.stdout + p.stderr).count(line) == 1
    (folder,) = (tmp_path / "runs" / "cem").iterdir()
    notes = json.loads((folder / "summary.json").read_text())["notes"]
    assert [n for n in notes if n.startswith(line)] == [
        f"{line} (the last row 6x7 px, the last column 7x6 px, the corner 6x6 px, height x width in output "
        "pixels; their patches are cut to fit); a block size that divides the image avoids them"
    ]
    assert line in (folder / "cem.log").read_text()
    # a block that divides the image says nothing
    q = _cli(SMALL + [f"image={image_file}", "cem.block=8"], tmp_path)
    assert q.returncode == 0 and "partial" not in q.stdout + q.stderr


@pytest.mark.slow  # 19 s: three CLI runs; run folder names and identity are covered by the rerun tests
def test_run_name_names_the_folder_and_its_identity_check_still_refuses_other_settings(tmp_path, image_file):
    args = SMALL + [f"image={image_file}"]
    first = _cli(args + ["run_name=demo_roi16"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs" / "cem").iterdir()] == ["demo_roi16"]
    folder = tmp_path / "runs" / "cem" / "demo_roi16"
    summary, effect = (folder / "summary.json").read_text(), np.load(folder / "cem.npz")["effect"]
    # the same command again reuses it; run_name does not change the map, so it is not part of its identity
    again = _cli(args + ["run_name=demo_roi16"], tmp_path)
    assert again.returncode == 0 and "already finished (skipped)" in again.stdout
    # another map under the same name is refused by the folder's own check, and the folder is untouched
    other = _cli(args + ["run_name=demo_roi16", "seed=1"], tmp_path)
    assert_clean_refusal(other, "holds a run with other settings", "run_name=NAME")
    assert (folder / "summary.json").read_text() == summary
    np.testing.assert_array_equal(np.load(folder / "cem.npz")["effect"], effect)
    # without run_name the folder keeps its name from the overrides (existing folders are still found)
    plain = _cli(args, tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    with initialize_config_module(config_module="cem_lab.conf", version_base="1.3"):
        named = run_name(
            compose(config_name="cem", overrides=args, return_hydra_config=True).hydra.job.override_dirname
        )
    assert named.startswith("+model.net.depth=3,") and "run_name" not in named
    assert sorted(p.name for p in (tmp_path / "runs" / "cem").iterdir()) == sorted(["demo_roi16", named])


@pytest.mark.parametrize("name", ["../up", "a*b"])
def test_an_unsafe_run_name_is_refused_in_one_line(tmp_path, name):
    p = _cli([f"run_name={name}"], tmp_path)
    assert_clean_refusal(p, "is not a safe folder name", "letters, digits")
    assert not list(tmp_path.iterdir())


def test_which_run_names_are_safe():
    from cem_lab.bookkeeping.folder_names import user_run_name
    from cem_lab.errors import InputError

    for good in ["demo", "roi_152-96.v2", "_x", "7"]:
        assert run_name("seed=1", good) == user_run_name(good) == good
    for bad in ["../up", "a/b", "a*b", "a[1]", "a,b", ".hidden", "-x", "a b", "a" * 101, True]:
        with pytest.raises(InputError, match="is not a safe folder name"):
            user_run_name(bad)
    assert run_name("seed=1", None) == run_name("seed=1") == "seed=1"  # no run_name: the name from the overrides


@pytest.mark.parametrize("sweep", [["run_name=a", "seed=0,1"], ["run_name=a,b"]])
def test_a_sweep_refuses_run_name(tmp_path, sweep):
    p = _cli(["-m", *sweep], tmp_path)
    assert_clean_refusal(p, "names the folder of a single run", "sweep_name=")
    assert not list(tmp_path.iterdir())


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
    assert (
        "read back from its finished checkpoint" in json.loads((folders[0] / "summary.json").read_text())["notes"][-1]
    )
    np.testing.assert_array_equal(np.load(folders[0] / "cem.npz")["effect"], effect)


@pytest.mark.slow  # 22 s; the 256 px two-process test (tests/parallel) gives the same equality by default
def test_cli_two_processes_give_the_single_process_map(tmp_path, image_file):
    args = SMALL + [f"image={image_file}"]
    one = _cli(args, tmp_path / "one")
    two = _cli(args + ["parallel=ddp_cpu"], tmp_path / "two")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    a = np.load(next((tmp_path / "one").glob("runs/cem/*/cem.npz")))
    b = np.load(next((tmp_path / "two").glob("runs/cem/*/cem.npz")))
    np.testing.assert_array_equal(a["effect_raw"], b["effect_raw"])
    np.testing.assert_array_equal(a["classification"], b["classification"])


@pytest.mark.parametrize(
    "preset",
    [
        "demo_dn",
        "ablation_block",
        "ablation_sampler",
        "ablation_samples",
        "ablation_estimator",
        "ablation_patch_source",
    ],
)
def test_experiment_presets_compose(preset):
    with initialize_config_module(config_module="cem_lab.conf", version_base="1.3"):
        cfg = compose(config_name="cem", overrides=[f"experiment={preset}"], return_hydra_config=True)
    if preset == "demo_dn":
        assert cfg.roi == [152, 96, 32] and cfg.model.name == "dncnn" and cfg.image.endswith("demo_2.png")
        assert cfg.patches.path.endswith("div2k_patches8.npz") and cfg.cem.fine == 50 and cfg.task.sigma == 50
    else:
        assert len(cfg.hydra.sweeper.params) >= 1


def test_an_experiment_without_its_data_folder_names_cem_lab_data(tmp_path):
    """Found in the README walk: `cem-lab experiment=demo_dn` without the data folder said only "checkpoint not
    found: ../shared/data/dncnn_color_blind.pth", with no word of the variable that names the folder."""
    from conftest import run_console

    p = run_console("cem", ["experiment=demo_dn"], tmp_path, CEM_LAB_DATA=str(tmp_path / "nowhere"))
    assert_clean_refusal(p, "CEM_LAB_DATA", str(tmp_path / "nowhere"))
    assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())  # nothing written


def test_config_groups_for_every_axis():
    cfg = _cfg(["sampler=stratified", "roi=[152,96,32]", "dataset=file", "image=x.png", "parallel=ddp_cpu"])
    assert cfg.cem.sampler._target_.endswith("StratifiedSampler") and cfg.roi == [152, 96, 32] and cfg.image == "x.png"
    assert cfg.parallel.devices == 2 and cfg.parallel.accelerator == "cpu"


@pytest.mark.slow  # 31 s; the DDP CLI path is in the default suite through test_cli_two_processes_give_the_single_process_map
def test_ddp_inside_a_multirun(tmp_path, image_file):
    """The spawn launch path works inside a Hydra multirun (no re-run of the command line)."""
    p = _cli(["-m", "seed=0,1", "parallel=ddp_cpu"] + SMALL + [f"image={image_file}"], tmp_path / "m")
    assert p.returncode == 0, p.stderr[-3000:]
    maps = sorted((tmp_path / "m").glob("runs/sweeps/cem/*/*/cem.npz"))
    assert len(maps) == 2
    single = _cli(SMALL + [f"image={image_file}", "seed=1"], tmp_path / "s")
    assert single.returncode == 0
    ref = np.load(next((tmp_path / "s").glob("runs/cem/*/cem.npz")))["effect_raw"]
    seed1 = [m for m in maps if "seed=1" in str(m)][0]
    np.testing.assert_array_equal(np.load(seed1)["effect_raw"], ref)


def test_every_phase_of_a_map_says_what_it_does_before_it_does_it(tmp_path, image_file):
    """No silent minute: the preparation's phases (the full-image pass, the dependency probe, the crop check
    with its pass count and estimate) and each stage's passes are logged as they start, and a stage after
    the first gets an estimate from the last one's rate (the run's remaining time, at the last stage)."""
    p = _cli(SMALL + [f"image={image_file}", "cem.tol=0"], tmp_path)  # tol 0: every block goes to the fine stage
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [ln.split(" - ", 1)[-1] for ln in p.stdout.splitlines() if "][cem_lab][INFO] - " in ln]  # the log: stdout
    order = [
        "preparing: the un-intervened output of the full",
        "preparing: the input region the ROI depends on",
        "preparing: checking the",
        "stage coarse:",
        "stage fine:",
    ]
    found = [next(i for i, ln in enumerate(lines) if ln.startswith(o)) for o in order]
    assert found == sorted(found), lines
    check = lines[found[2]]
    assert re.search(r"\d+ full-image pass(es)?, about \d+ s", check), check
    assert " passes, about " in lines[found[4]] and "passes/s" in lines[found[4]], lines[found[4]]
    # the first stage too, at the rate of the preparation's last passes (no stage has run yet)
    assert " passes, about " in lines[found[3]] and "(the preparation's rate)" in lines[found[3]], lines[found[3]]
