"""A user's mistake through the real console scripts: one line ``<program>: error: <the problem and the fix>``
on stderr, exit status 2, nothing left behind; and the composition root's checks behind them (devices this
machine lacks, keys added with + that nothing reads)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_clean_refusal
from hydra import compose, initialize_config_module
from omegaconf import open_dict

from cem_lab.compose import resolvers  # noqa: F401 (registers the resolvers the configs use)
from cem_lab.compose.devices import check_accelerator, check_device
from cem_lab.compose.overrides import check_added_keys
from cem_lab.errors import InputError

HAS_CUDA = torch.cuda.is_available()
no_cuda = pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA device: nothing to refuse")
no_mps = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an MPS device")

#: a small map, so that a check that stopped refusing costs seconds, not minutes
CHEAP = ["progress=false", "figures=false", "cem.coarse=2", "cem.fine=2"]


def _cli(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", f"cem_lab.cli.{module}", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def assert_one_line_refusal(p, *words, program: str = "cem-lab"):
    """:func:`assert_clean_refusal`, and the message is one line (no search path, no usage, no key trailers)."""
    assert_clean_refusal(p, *words, program=program)
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def _no_run_left(cwd: Path) -> None:
    runs = cwd / "runs"
    left = [f for f in runs.rglob("*") if f.is_file()] if runs.exists() else []
    assert not left, left
    assert not runs.exists(), sorted(runs.rglob("*"))  # not even the empty folders a fresh clone did not have


# --- cem-lab: every mistake of the issue, each through the console script --------------------------------
CEM_CASES = {
    # a run folder's path (its name holds '=' and ',') given unquoted: Hydra's grammar error, with the fix
    "unquoted path": (["model=file", "model.path=runs/train/model=edsr,task=sr/model.safetensors"], ["quote a value"]),
    # values of the wrong type (seed=x was a ValueError traceback from torch.manual_seed)
    "seed not an integer": (["seed=x"], ["seed", "integer", "'x'"]),
    "block not a number": (["cem.block=abc"], ["block", "'abc'"]),
    "block negative": (["cem.block=-1"], ["block", "-1"]),
    "roi of two numbers": (["roi=[1,2]"], ["ROI", "[1, 2]"]),
    "fine not an integer": (["cem.fine=1.5"], ["fine", "1.5"]),
    # devices this machine lacks (were ~60 lines ending in "Found no NVIDIA driver")
    "device cuda": (["device=cuda"], ["device=cuda", "no CUDA device", "cpu only", "device=cpu", "device=null"]),
    "device cuda:1": (["device=cuda:1"], ["device=cuda:1", "device=cpu", "device=null"]),
    "device mps": (["device=mps"], ["device=mps", "no Apple MPS device", "device=cpu"]),
    "device gpu7": (["device=gpu7"], ["device=gpu7", "not a device name", "did you mean device=cuda:7"]),
    # a map over GPUs on a machine without one (was a traceback after 23 s and a run folder left behind)
    "parallel ddp_gpu": (["parallel=ddp_gpu"], ["parallel=ddp_gpu", "cpu only", "parallel=ddp_cpu", "parallel=single"]),
    # misspelt group options (were Hydra's "In 'cem': Could not find ..." and its search path)
    "model option": (["model=swinir2"], ["model=swinir2", "did you mean 'swinlite'", "embedded, file"]),
    "task option": (["task=super"], ["task=super", "did you mean 'sr'", "custom, dn, dr, jpeg, sr"]),
    "sampler option": (["sampler=unifrom"], ["sampler=unifrom", "did you mean 'uniform'"]),
    "cem option": (["cem=adaptiv"], ["cem=adaptiv", "did you mean 'adaptive'", "coarse_to_fine"]),
    # misspelt keys (were Hydra's "Could not override ... Key 'rio' is not in struct" in five lines)
    "top-level key": (["rio=[1,2,3]"], ["rio=[1,2,3]", "no key 'rio'", "did you mean 'roi'"]),
    "cem key": (["cem.fien=5"], ["cem.fien=5", "no key 'fien' in cem", "did you mean 'fine'"]),
    "model keyword without +": (
        ["model=custom", "model.net._target_=cem_lab.models.DnCNN", "model.net.features=8"],
        ["no key 'features' in model.net", "+model.net.features=8"],
    ),
    # keys added with + that nothing reads (+rio was silently ignored)
    "added top-level key": (["+rio=[1,2,3]"], ["+rio=[1,2,3]", "'rio'", "did you mean 'roi'", "without +"]),
    "added cem key": (["+cem.fien=5"], ["+cem.fien=5", "did you mean 'fine'"]),
    "added roi_place key": (["+roi_place.idx=2"], ["+roi_place.idx=2", "did you mean 'index'"]),
    "added new node": (["+foo.bar=1"], ["+foo.bar=1", "no key 'foo'", "roi_place"]),
    # an added keyword the model's class does not take (was a TypeError traceback), a target that does not import
    "model keyword its class lacks": (
        ["+model.net.features=8"],
        ["model.net", "unexpected keyword argument 'features'"],
    ),
    "model target not importing": (
        ["model=custom", "model.net._target_=nope.Net"],
        ["model.net", "nope.Net", "does not import"],
    ),
}
SKIPS = {"device cuda": no_cuda, "parallel ddp_gpu": no_cuda, "device mps": no_mps}
#: one case per kind of mistake runs in the default suite (each case starts a real console script, a few seconds
#: on the 2-core CI); the rest run with -m slow, and the rules behind them are unit-tested below
FAST = {
    "unquoted path",
    "block not a number",
    "seed not an integer",
    "device cuda",
    "parallel ddp_gpu",
    "top-level key",
    "added top-level key",
    "model option",
    "model keyword its class lacks",
    "cem-lab unknown group option",
    "cem-report missing folder",
    "cem-figure missing folder",
    "cem-attribution device",
    "cem-pretrained unknown network",
    "cem-train accelerator",
    "cem-zoo unknown recipe",
    "cem-erf roi outside",
    "cem-sanity unknown method",
}
SLOW = pytest.mark.slow
CUDA_1 = pytest.mark.skipif(torch.cuda.device_count() > 1, reason="this machine has cuda:1")


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c,
            marks=[
                m for m in (SKIPS.get(c), CUDA_1 if c == "device cuda:1" else None, None if c in FAST else SLOW) if m
            ],
            id=c,
        )
        for c in CEM_CASES
    ],
)
def test_a_cem_lab_mistake_is_one_line_and_leaves_nothing(tmp_path, case):
    args, words = CEM_CASES[case]
    p = _cli("cem", CHEAP + args, tmp_path)
    assert_one_line_refusal(p, *words)
    _no_run_left(tmp_path)


# --- every console script: a mistake of each is one line ------------------------------------------------
PROGRAM_CASES = {
    "cem-lab unknown group option": ("cem", ["model=swinir2"], ["did you mean 'swinlite'"]),
    "cem-report missing folder": ("report", ["nowhere"], ["nowhere does not exist"]),
    "cem-report bad option": ("report", ["--finding", "nope", "."], ["--finding", "receptive_field", "--help"]),
    "cem-report no path": ("report", [], ["PATH", "cem-report --help"]),
    "cem-figure missing folder": ("figure", ["row", "nowhere", "--out", "f.png"], ["nowhere does not exist"]),
    "cem-figure no layout": ("figure", [], ["LAYOUT", "cem-figure --help"]),
    "cem-attribution device": ("attribution", ["device=gpu7"], ["device=gpu7", "cuda:7"]),
    "cem-attribution added key": ("attribution", ["+rio=[1,2,3]"], ["did you mean 'roi'"]),
    "cem-attribution unknown option": ("attribution", ["sampler=unifrom"], ["did you mean 'uniform'"]),
    "cem-pretrained unknown network": ("pretrained", ["convert", "nope"], ["'nope'", "cem-pretrained list"]),
    "cem-pretrained unknown command": ("pretrained", ["frob"], ["'frob'", "convert", "--help"]),
    "cem-train accelerator": ("train", ["trainer.accelerator=gpu"], ["trainer.accelerator=gpu", "cpu only"]),
    "cem-train accelerator name": ("train", ["trainer.accelerator=gpus"], ["did you mean gpu"]),
    "cem-train precision": ("train", ["trainer.precision=64x"], ["trainer", "64x", "trainer.precision"]),
    "cem-train unknown option": ("train", ["model=swinir2"], ["did you mean 'swinlite'"]),
    "cem-train misspelt key": ("train", ["trainer.acclerator=gpu"], ["did you mean 'accelerator'"]),
    "cem-train added key": ("train", ["+rio=1"], ["+rio=1", "no key 'rio'"]),
    "cem-zoo unknown recipe": ("zoo", ["train", "edsr_d4_w16"], ["did you mean 'edsr_d4_w16_x4'"]),
    "cem-zoo unknown command": ("zoo", ["frob"], ["'frob'", "--help"]),
    "cem-zoo missing zoo folder": ("zoo", ["table", "--zoo-dir", "nowhere"], ["--zoo-dir nowhere", "not a folder"]),
    "cem-erf roi outside": ("erf", ["--roi", "250,250,16"], ["--roi 250,250,16", "256x256", "[0, 240]"]),
    "cem-sanity unknown method": ("sanity", ["--methods", "lam,gradcam"], ["--methods lam,gradcam", "saliency"]),
    "cem-channels unknown layer": ("channels", ["--layer", "nope", "--value", "zeros"], ["layer 'nope'", "model.0"]),
}
PROGRAMS = {
    "cem": "cem-lab",
    "report": "cem-report",
    "figure": "cem-figure",
    "attribution": "cem-attribution",
    "pretrained": "cem-pretrained",
    "train": "cem-train",
    "zoo": "cem-zoo",
    "erf": "cem-erf",
    "sanity": "cem-sanity",
    "channels": "cem-channels",
}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c,
            marks=[m for m in (no_cuda if c == "cem-train accelerator" else None, None if c in FAST else SLOW) if m],
            id=c,
        )
        for c in PROGRAM_CASES
    ],
)
def test_every_console_script_refuses_a_mistake_in_one_line(tmp_path, case):
    module, args, words = PROGRAM_CASES[case]
    p = _cli(module, args, tmp_path)
    assert_one_line_refusal(p, *words, program=PROGRAMS[module])
    _no_run_left(tmp_path)


def test_every_console_script_is_covered():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]")[1].split("\n\n")[0]
    assert {line.split("=")[0].strip() for line in scripts.strip().splitlines()} == set(PROGRAMS.values())
    assert {PROGRAM_CASES[c][0] for c in PROGRAM_CASES} == set(PROGRAMS)


# --- the composition root's checks, in-process ------------------------------------------------------------
def _compose(config: str, overrides: list[str]):
    with initialize_config_module(config_module="cem_lab.conf", version_base="1.3"):
        cfg = compose(config_name=config, overrides=overrides, return_hydra_config=True)
    choices = set(cfg.hydra.runtime.choices.keys())
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


@pytest.mark.parametrize(
    "config, overrides",
    [
        ("cem", ["model=custom", "model.net._target_=cem_lab.models.DnCNN", "+model.net.features=8"]),
        ("cem", ["task=custom", "task._target_=cem_lab.tasks.denoise.DenoiseTask", "+task.sigma=25"]),
        ("cem", ["+patches.extra=1"]),  # the bank's class refuses it when it is built
        ("cem", ["+cem.estimator.extra=1", "+cem.sampler.extra=1"]),
        ("cem", ["+hydra.job.env_set.X=1", "++rio=1"]),  # Hydra's own; ++ is add-or-override, as meant
        ("train", ["model=rcan", "+rcan_variant=global"]),  # a config group, not a key
        ("cem", ["model=zoo", "model.id=rcan_global_dn_s50", "model.allow_other_task=true"]),
    ],
)
def test_keys_added_where_a_class_reads_them_are_accepted(config, overrides):
    cfg, groups = _compose(config, overrides)
    check_added_keys(cfg, overrides, groups)


@pytest.mark.parametrize(
    "override, words",
    [
        ("+rio=[1,2,3]", ["did you mean 'roi'"]),
        ("+cem.fien=5", ["cem has no key 'fien'", "did you mean 'fine'"]),
        ("+metric.nmae=ssim", ["metric has no key 'nmae'", "did you mean 'name'"]),
        ("+checkpoint.every=3", ["checkpoint has no key 'every'", "every_s"]),
        ("+parallel.device=2", ["parallel has no key 'device'", "did you mean 'devices'"]),
        ("+roi_grid.strid=8", ["roi_grid has no key 'strid'", "did you mean 'stride'"]),
        ("+model.chekpoint=w.pth", ["model has no key 'chekpoint'", "did you mean 'checkpoint'"]),
        ("+a.b.c=1", ["the config has no key 'a'", "the keys at the top level"]),
    ],
)
def test_keys_added_where_nothing_reads_them_are_refused(override, words):
    cfg, groups = _compose("cem", [override])
    with pytest.raises(InputError) as err:
        check_added_keys(cfg, [override], groups)
    for w in [override, *words]:
        assert w in str(err.value), (w, str(err.value))


def test_a_device_is_checked_against_the_machine(monkeypatch):
    assert check_device("cpu") == torch.device("cpu") and check_device(None).type in ("cpu", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(InputError, match=r"device=cuda:2: this machine has 2 CUDA devices .*cuda:0\.\.cuda:1"):
        check_device("cuda:2")
    check_accelerator("gpu", -1, "parallel", "use parallel=ddp_cpu")
    with pytest.raises(InputError, match=r"parallel.devices=4 asks for 4 CUDA devices.*has 2"):
        check_accelerator("gpu", 4, "parallel", "use parallel=ddp_cpu")
    with pytest.raises(InputError, match=r"parallel.devices=\[0, 3\]"):
        check_accelerator("gpu", [0, 3], "parallel", "use parallel=ddp_cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(InputError, match="device=free_gpu: this machine has no CUDA device"):
        check_device("free_gpu")
    check_accelerator("cpu", 2, "parallel", "")  # CPU processes: any number
    check_accelerator("auto", 1, "trainer", "")  # Lightning picks


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["launcher=joblib", "hydra.launcher.n_jobs=0"], ["hydra.launcher.n_jobs=0", "nvidia-smi"]),
        (["launcher=slurm", "hydra.launcher.partition=gpu"], ["launcher=slurm needs Slurm", "submitit_local"]),
        (["device=free_gpu"], ["device=free_gpu: this machine has no CUDA device"]),
        (["device=cpu,cuda"], ["device=cuda: this machine has no CUDA device"]),
    ],
    ids=["joblib n_jobs 0", "slurm without sbatch", "free_gpu without GPUs", "a swept device it lacks"],
)
def test_a_sweep_that_cannot_start_here_is_one_line_and_touches_nothing(tmp_path, args, words):
    """Found in the README walk: these ended in joblib's or submitit's traceback after the sweep folder's records
    were rewritten (a finished sweep of the same name included)."""
    import shutil

    if "slurm" in args[0] and shutil.which("sbatch"):
        pytest.skip("this machine has Slurm")
    import torch

    if "cuda" in " ".join(args) and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    p = _cli("cem", ["-m", *args, "task=dn,dr", "seed=0,1"], tmp_path)
    assert_one_line_refusal(p, *words)
    assert not (tmp_path / "runs").exists()
