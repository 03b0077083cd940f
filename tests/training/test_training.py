"""Training with Lightning (`cem-train`): a smoke run, resume, the data module and bad input."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_module
from hydra.errors import MissingConfigException
from PIL import Image

from cem_lab.cli.train import report, run
from cem_lab.metrics import psnr, quantize_uint8, rgb_to_y
from cem_lab.models.archs import EDSR
from cem_lab.models.checkpoint import load_model
from cem_lab.tasks import SuperResolutionTask
from cem_lab.training.data import DataError, RestorationDataModule, pre_upsample, pre_upsample_config
from cem_lab.training.restoration_module import RestorationModule, schedule_factor

TINY = [
    "model=edsr",
    "model.net.width=8",
    "model.net.depth=1",
    "task=sr",
    "task.scale=2",
    "train.crop=32",
    "train.batch_size=4",
    "train.lr=2e-3",
    "data.val_crop=64",
    "trainer.progress=false",
    "trainer.log_every=1",
]


def _cfg(overrides, name="train"):
    with initialize_config_module(config_module="cem_lab.conf", version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def _losses(run_dir: Path, version: int = 0) -> dict[int, float]:
    with open(run_dir / "logs" / f"version_{version}" / "metrics.csv", newline="") as fh:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(fh) if r.get("train/loss")}


# ----------------------------------------------------------------------------- end to end
def test_smoke_training_exports_a_model_that_reloads_identically(tmp_path):
    out = tmp_path / "run"
    summary = run(_cfg(TINY + ["train.steps=20", "train.val_every=20"]), out, command="cem-train test")
    assert summary["steps"] == 20 and summary["resumed_from"] is None
    losses = _losses(out)
    assert sorted(losses) == list(range(20))
    first, last = np.mean([losses[i] for i in range(5)]), np.mean([losses[i] for i in range(15, 20)])
    assert last < 0.8 * first, (first, last)
    for f in ("checkpoints/last.ckpt", "model.safetensors", "model.yaml", "config.yaml"):
        assert (out / f).is_file(), f

    meta = yaml.safe_load((out / "model.yaml").read_text())
    assert meta["model"]["_target_"].endswith("EDSR") and meta["model"]["scale"] == 2
    assert meta["task"] == {"name": "sr", "scale": 2, "kernel": "bicubic"}
    assert meta["training"]["steps"] == 20 and meta["trained_with"] == "cem-train test"
    v = meta["validation"]
    assert v["step"] == 20 and v["images"][0]["image"] == "chelsea_256"
    assert v["metric"]["settings"] == {"sr_x2": {"crop_border": 2, "test_y_channel": True}}
    assert abs(v["gain"] - (v["psnr"] - v["baseline_psnr"])) < 1e-3

    # the baseline is bicubic upsampling measured with BasicSR conventions (crop 2, Y channel),
    # on the centre 64 x 64 of the chelsea crop (data.val_crop=64)
    from cem_lab.images import from_uint8
    from cem_lab.models.embedded import embedded_demo_image

    clean = from_uint8(embedded_demo_image())[..., 96:160, 96:160]
    lr = SuperResolutionTask(2).degrade(clean, 0)
    up = torch.nn.functional.interpolate(lr, size=(64, 64), mode="bicubic", align_corners=False)
    space = [rgb_to_y(quantize_uint8(x))[..., 2:-2, 2:-2] for x in (up, clean)]
    assert abs(float(psnr(*space)[0]) - v["baseline_psnr"]) < 1e-3

    # the exported weights are the trained network's, and rebuild from the YAML alone
    trained = summary["module"].inference_net.eval()
    loaded = load_model(out / "model.safetensors")
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        assert torch.equal(loaded(x), trained(x))
    assert "PSNR" in report(summary)
    # the command that maps the model, its path quoted (run folder names hold '=' and ','), with the task
    line = next(ln for ln in report(summary).splitlines() if "map it:" in ln)
    assert f"cem-lab model=file \"model.path='{out / 'model.safetensors'}'\" task=sr task.scale=2" in line, line


def test_resume_continues_from_the_checkpoint_and_matches_an_uninterrupted_run(tmp_path):
    # step 10 is in the middle of the third epoch (4 steps each)
    resumed = tmp_path / "resumed"
    first = run(_cfg(TINY + ["train.steps=10", "train.val_every=4", "train.schedule=none"]), resumed)
    assert first["steps"] == 10
    ckpt = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 10

    second = run(_cfg(TINY + ["train.steps=20", "train.val_every=4", "train.schedule=none"]), resumed)
    assert second["steps"] == 20 and second["resumed_from"] == 10
    assert second["module"].global_step == 20
    assert sorted(_losses(resumed, 1)) == list(range(10, 20))  # only the new steps were run

    # rerunning the finished command does nothing
    again = run(_cfg(TINY + ["train.steps=20", "train.val_every=4", "train.schedule=none"]), resumed)
    assert again["already_trained"] and again["module"] is None and again["steps"] == 20
    assert not (resumed / "logs" / "version_2").exists()

    # a folder written before tasks had a _target_ (config.yaml: task: {name: sr, scale: 2}) is the same run
    stored = yaml.safe_load((resumed / "config.yaml").read_text())
    assert stored["task"] == {"_target_": "cem_lab.tasks.super_resolution.SuperResolutionTask", "scale": 2}
    stored["task"] = {"name": "sr", "scale": 2}
    (resumed / "config.yaml").write_text(yaml.safe_dump(stored))
    old = run(_cfg(TINY + ["train.steps=20", "train.val_every=4", "train.schedule=none"]), resumed)
    assert old["already_trained"] and old["steps"] == 20

    # the same folder with other settings is refused, finished or not: it would hand back (or
    # continue) the model trained with the old ones
    before = (resumed / "model.yaml").read_text()
    for changed in (["train.lr=1e-3"], ["task.scale=4"], ["train.task_weights={sr:2}"]):
        with pytest.raises(ValueError, match="holds a run with other settings") as err:
            run(_cfg(TINY + ["train.steps=20", "train.val_every=4", "train.schedule=none", *changed]), resumed)
        assert changed[0].split("=")[0] in str(err.value)
    assert (resumed / "model.yaml").read_text() == before

    # the data depend on the step only (and the schedule is constant): resuming mid-epoch gives
    # the weights of an uninterrupted run
    straight = run(_cfg(TINY + ["train.steps=20", "train.val_every=4", "train.schedule=none"]), tmp_path / "straight")
    a = second["module"].net.state_dict()
    b = straight["module"].net.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_ctrl_c_before_the_first_validation_keeps_the_steps_of_the_last_minutes(tmp_path, monkeypatch):
    """Found in the README walk: a long first epoch (paper_edsr validates at step 5000) lost every step on Ctrl-C
    while the program said "resume". last.ckpt is now also written every train.checkpoint_every_min minutes of
    training, and the resumed run ends with the weights of an uninterrupted one."""
    import lightning as L

    from cem_lab.cli import train as train_cli

    class CtrlCAtStep7(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == 7:
                raise KeyboardInterrupt

    built = train_cli.build_trainer

    def with_ctrl_c(cfg, output_dir, callbacks):
        return built(cfg, output_dir, [*callbacks, CtrlCAtStep7()])

    settings = TINY + ["train.steps=10", "train.val_every=100", "train.schedule=none"]
    monkeypatch.setattr(train_cli, "build_trainer", with_ctrl_c)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # every step ends a "minute": a checkpoint after each
        run(_cfg([*settings, "train.checkpoint_every_min=0"]), out)
    assert torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 7

    never = tmp_path / "never"
    with pytest.raises(KeyboardInterrupt):  # only at validations (the old behaviour): nothing to resume from
        run(_cfg([*settings, "train.checkpoint_every_min=null"]), never)
    assert not (never / "checkpoints" / "last.ckpt").exists()

    monkeypatch.setattr(train_cli, "build_trainer", built)
    resumed = run(_cfg([*settings, "train.checkpoint_every_min=0"]), out)  # a neutral key: the same run folder
    assert resumed["resumed_from"] == 7 and resumed["steps"] == 10
    straight = run(_cfg(settings), tmp_path / "straight")
    a, b = resumed["module"].net.state_dict(), straight["module"].net.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


# ----------------------------------------------------------------------------- data
@pytest.mark.parametrize(
    ("tasks", "crop", "in_side"),
    [
        ({"name": "sr", "scale": 2}, 32, 16),
        ({"name": "sr", "scale": 4}, 32, 8),
        ("dn", 24, 24),
        ("dr", 24, 24),
    ],
)
def test_data_module_shapes(tasks, crop, in_side):
    dm = RestorationDataModule(tasks, crop=crop, batch_size=3, steps_per_epoch=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == (3, 3, in_side, in_side)
    assert batch["target"].shape == (3, 3, crop, crop)
    for x in (batch["input"], batch["target"]):  # images on the uint8 grid in [0, 1]
        assert x.min() >= 0 and x.max() <= 1
        assert torch.equal(torch.round(x * 255), x * 255)
    val = next(iter(dm.val_dataloader()))
    assert val["target"].shape == (1, 3, 256, 256)
    assert val["input"].shape == (1, 3, 256 * in_side // crop, 256 * in_side // crop)
    assert val["name"] == ["chelsea_256"]


def test_mixed_tasks_feed_pre_upsampled_sr_and_load_into_the_pre_network():
    dm = RestorationDataModule(["sr", "dn", "dr"], crop=24, batch_size=12, steps_per_epoch=1)
    dm.setup("fit")
    assert dm.pre_upsample
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == batch["target"].shape == (12, 3, 24, 24)
    assert set(batch["task"].tolist()) == {0, 1, 2}
    sr = SuperResolutionTask(4)
    for i in torch.nonzero(batch["task"] == 0).flatten().tolist():
        expected = pre_upsample(sr.degrade(batch["target"][i : i + 1], 0), 4)
        assert torch.equal(batch["input"][i : i + 1], expected)
    assert len(dm.val_set) == 3  # chelsea once per task

    # a scale-1 network trained on these pairs is the scale-4 "pre" network with the same weights
    torch.manual_seed(0)
    net1 = EDSR(width=8, depth=1, scale=1).eval()
    config = pre_upsample_config(net1.config(), 4)
    net4 = EDSR(**{k: v for k, v in config.items() if k != "_target_"}).eval()
    net4.load_state_dict(net1.state_dict())
    lr = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        assert torch.allclose(net4(lr), net1(pre_upsample(lr, 4)), atol=1e-6)


def test_data_is_reproducible_for_a_seed_and_changes_with_seed_and_epoch():
    def first(seed, epoch=0):
        dm = RestorationDataModule(["sr", "dn"], crop=24, batch_size=4, steps_per_epoch=1, seed=seed)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return next(iter(loader))

    a, b = first(3), first(3)
    assert torch.equal(a["input"], b["input"]) and torch.equal(a["target"], b["target"])
    assert not torch.equal(a["target"], first(4)["target"])
    assert not torch.equal(a["target"], first(3, epoch=1)["target"])


def test_folder_of_images(tmp_path, recwarn):
    rng = np.random.default_rng(0)
    for i, side in enumerate((40, 16, 48)):
        Image.fromarray(rng.integers(0, 256, (side, side + 4, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    dm = RestorationDataModule("dn", images=tmp_path, crop=32, batch_size=2, steps_per_epoch=1)
    with pytest.warns(UserWarning, match=r"im1\.png \(16x20\)"):
        dm.setup("fit")
    assert dm.train_names == ["im0.png"] and dm.val_names == ["im2.png"]
    assert next(iter(dm.train_dataloader()))["input"].shape == (2, 3, 32, 32)

    with pytest.warns(UserWarning, match="smaller than the crop"):
        with pytest.raises(DataError, match="no training image"):
            RestorationDataModule("dn", images=tmp_path, crop=44).setup("fit")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no images in .*\.png.*\.jpg"):
        RestorationDataModule("dn", images=empty).setup("fit")


# ----------------------------------------------------------------------------- module
def test_module_metric_conventions_and_schedules():
    net = EDSR(width=4, depth=0, scale=1)
    m = RestorationModule(net, ["sr", {"name": "dn", "sigma": 25}, "dr"])
    assert m.labels == ["sr_x4", "dn_s25", "dr_medium"]
    assert [m.metric_settings(k) for k in range(3)] == [(4, True), (0, False), (0, False)]
    m = RestorationModule(net, "sr", crop_border=0, test_y_channel=False)
    assert m.metric_settings(0) == (0, False)
    assert schedule_factor(0, "cosine", 100, 1e-3, 0.0) == 1.0
    assert schedule_factor(100, "cosine", 100, 1e-3, 1e-5) == pytest.approx(1e-2)
    assert schedule_factor(50, "step", 100, 1e-3, milestones=[10, 40], gamma=0.5) == 0.25
    assert schedule_factor(4, "none", 100, 1e-3, warmup_steps=10) == 0.5
    with pytest.raises(ValueError, match="schedule"):
        RestorationModule(net, "dn", schedule="linear")


def test_ema_tracks_the_weights():
    torch.manual_seed(0)
    m = RestorationModule(EDSR(width=4, depth=0, scale=1), "dn", ema_decay=0.5)
    with torch.no_grad():
        for p in m.net.parameters():
            p.add_(1.0)
    m.on_train_batch_end(None, None, 0)  # first update: decay min(0.5, 1/10) = 0.1
    ema, net = next(m.ema_net.parameters()), next(m.net.parameters())
    assert torch.allclose(ema, net - 0.1, atol=1e-6)
    assert m.inference_net is m.ema_net


# ----------------------------------------------------------------------------- bad input
def test_unknown_architecture_lists_the_choices():
    with pytest.raises(MissingConfigException) as err:
        _cfg(["model=resnet9000"])
    assert "edsr" in str(err.value) and "swinlite" in str(err.value)


SMALL = ["model.net.width=4", "model.net.depth=1"]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["model=custom", "model.net._target_=cem_lab.models.NoSuchNet"], ["NoSuchNet", "_target_"]),
        (["model=custom", "model.net._target_=math.sqrt"], ["math.sqrt"]),
        (["model=edsr", "model.net.width=0"], ["EDSR", "width"]),
        (["model=dncnn", "task=dn"], ["model.checkpoint=null"]),
        (["model=edsr", *SMALL, "task=sr", "task.scale=4", "model.net.scale=1"], ["SR x4", "scale 1", "edsr"]),
        (["model=edsr", *SMALL, "task=dn", "model.net.scale=2"], ["dn_s50", "scale 2", "edsr"]),
        (["model=srresnet", *SMALL, "tasks=[sr,dn]", "model.net.scale=4"], ["sr_x4, dn_s50", "scale 4", "srresnet"]),
        (["model=edsr", *SMALL, "task=sr", "task.scale=3", "train.crop=32"], ["crop 32", "scale 3"]),
        (["model=edsr", *SMALL, "task=dn", "data.images=/no/such/folder"], ["/no/such/folder"]),
        (
            ["model=srresnet", *SMALL, "tasks=[sr,dn]", "train.task_weights={dr:2}"],
            ["task_weights", "'dr'", "sr_x4, dn_s50"],
        ),
        (["model=srresnet", *SMALL, "tasks=[sr,dn]", "train.task_weights={sr:0}"], ["task_weights", "positive"]),
    ],
)
def test_bad_settings_fail_before_anything_is_written(tmp_path, overrides, words):
    out = tmp_path / "run"
    with pytest.raises(ValueError) as err:  # TrainingError, DataError, TaskError are ValueErrors
        run(_cfg(overrides), out)
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    assert not out.exists()


def test_model_configs_build_for_cem_lab_too():
    from cem_lab.compose.build import build_model

    for name in ("srcnn", "fsrcnn", "edsr", "srresnet", "rcan", "swinlite"):
        cfg = _cfg([f"model={name}", "task=sr", "task.scale=2"], name="cem")
        assert cfg.model.name == name and cfg.model.checkpoint is None
        assert build_model(cfg.model).scale == 2
    assert _cfg(["model=edsr", "task=dn"], name="cem").model.net.scale == 1


def test_cli_error_is_short_and_leaves_no_folder(tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "cem_lab.cli.train",
            "model=edsr",
            "task=dn",
            "model.net.scale=4",
            "trainer.progress=false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    assert "scale 4" in p.stderr and "Traceback" not in p.stderr
    assert not list(tmp_path.glob("runs/train/*"))


# ----------------------------------------------------------------------------- paper-scale recipes
@pytest.mark.parametrize(
    ("recipe", "jobs"), [("paper_fsrcnn", 16), ("paper_edsr", 16), ("paper_rcan", 14), ("paper_multitask", 8)]
)
def test_paper_recipes_compose_into_their_grids(recipe, jobs, monkeypatch):
    """Each recipe composes (documented, not trained here), needs a DIV2K-like folder, and its
    sweep has the paper's grid; every job's config builds a network."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError

    from cem_lab.bookkeeping.sweep_record import count_jobs

    monkeypatch.delenv("DIV2K_HR", raising=False)
    with initialize_config_module(config_module="cem_lab.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"recipe={recipe}"], return_hydra_config=True)
        with pytest.raises(InterpolationResolutionError, match="DIV2K_HR"):
            _ = cfg.data.images
        params = dict(cfg.hydra.sweeper.params)
        sweep = OmegaConf.create(
            {
                "hydra": {
                    "sweeper": {**OmegaConf.to_container(cfg.hydra.sweeper), "params": params},
                    "overrides": {"task": []},
                }
            }
        )
        assert count_jobs(sweep) == jobs
        parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
        for job in BasicSweeper.split_arguments(parsed, None)[0][::3]:
            job_cfg = compose(config_name="train", overrides=[f"recipe={recipe}", *job, "data.images=/tmp"])
            assert job_cfg.train.steps >= 100000
            net = instantiate(job_cfg.model.net)
            assert sum(p.numel() for p in net.parameters()) > 0


def test_loss_choice():
    """train.loss: l1 (default) or l2 (mean squared error); anything else is refused."""
    torch.manual_seed(0)
    net = EDSR(width=4, depth=1, scale=2)
    batch = {"input": torch.rand(2, 3, 8, 8), "target": torch.rand(2, 3, 16, 16)}
    with torch.no_grad():
        out = net(batch["input"])
    for name, expected in (("l1", (out - batch["target"]).abs().mean()), ("l2", ((out - batch["target"]) ** 2).mean())):
        module = RestorationModule(net, "sr", loss=name)
        module.log = lambda *a, **k: None  # outside a Trainer
        with torch.no_grad():
            torch.testing.assert_close(module.training_step(batch, 0), expected)
    with pytest.raises(ValueError, match="loss must be one of l1, l2"):
        RestorationModule(net, "sr", loss="huber")


def test_task_weights_weight_each_sample_by_its_task():
    """train.task_weights: the loss is the weighted mean of the per-sample losses; equal weights
    (or none) give the plain mean; names and labels both select a task; others weigh 1."""
    torch.manual_seed(0)
    net = EDSR(width=4, depth=1, scale=1)
    batch = {"input": torch.rand(3, 3, 8, 8), "target": torch.rand(3, 3, 8, 8), "task": torch.tensor([0, 1, 1])}
    with torch.no_grad():
        per_sample = (net(batch["input"]) - batch["target"]).abs().flatten(1).mean(1)
    tasks = [{"name": "sr", "scale": 4}, {"name": "dn", "sigma": 25}]
    for weights, w in (
        (None, [1, 1, 1]),
        ({"sr": 1}, [1, 1, 1]),
        ({"sr": 8}, [8, 1, 1]),
        ({"sr_x4": 2, "dn": 3}, [2, 3, 3]),
    ):
        module = RestorationModule(net, tasks, task_weights=weights)
        module.log = lambda *a, **k: None  # outside a Trainer
        w = torch.tensor(w, dtype=torch.float32)
        with torch.no_grad():
            torch.testing.assert_close(module.training_step(batch, 0), (w * per_sample).sum() / w.sum())
    assert RestorationModule(net, tasks, task_weights={"sr": 8}).task_weights == [8.0, 1.0]
    with pytest.raises(ValueError, match="not a trained task; the tasks are sr_x4, dn_s25"):
        RestorationModule(net, tasks, task_weights={"dr": 2})
    for bad in (-1, 0, float("nan"), "4", True):
        with pytest.raises(ValueError, match="must be a positive number"):
            RestorationModule(net, tasks, task_weights={"sr": bad})
