"""Bad input through the CLI: one error form (``cem-lab: error: ...``, exit status 2), no folder left
behind, nothing touched in a folder that holds another run; every change to the input stated."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_clean_refusal
from PIL import Image

SMALL = [
    "model=custom",
    "model.net._target_=cem_lab.models.DnCNN",
    "+model.net.features=8",
    "+model.net.depth=3",
    "roi=[16,16,16]",
    "cem=exhaustive",
    "cem.samples=2",
    "cem.block=8",
    "patches.count=300",
    "progress=false",
]


def _cli(args, cwd: Path, program: str = "cem_lab.cli.cem"):
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", program, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


_assert_clean_refusal = assert_clean_refusal


@pytest.fixture
def files(tmp_path, clean_image):
    """The inputs of the bad-input cases: a good image and every kind of broken file."""
    from cem_lab.models import DnCNN

    d = tmp_path / "inputs"
    d.mkdir()
    Image.fromarray(clean_image).save(d / "img.png")
    Image.fromarray(clean_image[:12, :12]).save(d / "tiny.png")
    (d / "corrupt.png").write_bytes((d / "img.png").read_bytes()[:200])
    net = DnCNN(features=8, depth=3)
    torch.save(net.state_dict(), d / "good.pth")
    torch.save({k: torch.full_like(v, float("nan")) for k, v in net.state_dict().items()}, d / "nan.pth")
    torch.save({"conv.weight": torch.zeros(3)}, d / "mismatch.pth")
    (d / "corrupt.pth").write_bytes(b"not a checkpoint")
    np.savez(d / "bank_bad.npz", something=np.zeros(3))
    np.savez(d / "bank_empty.npz", patches=np.zeros((0, 8, 8, 3), np.uint8))
    return d


# the bad-input list of the causal-core issue (ROI, block, images, checkpoints, model output,
# patch bank), each with the words its message must hold
CASES = {
    "roi outside": (["roi=[40,40,16]"], ["outside"]),
    "roi not aligned to the scale": (
        [
            "task=sr",
            "model.net._target_=torch.nn.Upsample",
            "~model.net.features",
            "~model.net.depth",
            "+model.net.scale_factor=4",
            "roi=[6,8,16]",
            "cem.block=8",
        ],
        ["not aligned to the scale"],
    ),
    "block not divisible by the scale": (
        [
            "task=sr",
            "model.net._target_=torch.nn.Upsample",
            "~model.net.features",
            "~model.net.depth",
            "+model.net.scale_factor=4",
            "cem.block=6",
        ],
        ["not divisible by the scale"],
    ),
    "block larger than the image": (["cem.block=64"], ["larger than the image"]),
    "image smaller than the roi": (["image={d}/tiny.png"], ["does not fit"]),
    "missing image": (["image={d}/nope.png"], ["not found"]),
    "corrupt image": (["image={d}/corrupt.png"], ["cannot read image"]),
    "missing checkpoint": (["model.checkpoint={d}/nope.pth"], ["nope.pth"]),
    "corrupt checkpoint": (["model.checkpoint={d}/corrupt.pth"], ["corrupt.pth"]),
    "state-dict mismatch": (["model.checkpoint={d}/mismatch.pth"], ["missing"]),
    "output of the wrong scale": (
        [
            "model.net._target_=torch.nn.Upsample",
            "~model.net.features",
            "~model.net.depth",
            "+model.net.scale_factor=2",
        ],
        ["expected (3, 48, 48)"],
    ),
    "NaN output": (["model.checkpoint={d}/nan.pth"], ["NaN or Inf", "DnCNN", "check its weights"]),
    "malformed patch bank": (["patches=npz", "patches.path={d}/bank_bad.npz"], ["patches"]),
    "empty patch bank": (["patches=npz", "patches.path={d}/bank_empty.npz"], ["bank"]),
    "missing patch bank": (["patches=npz", "patches.path={d}/nope.npz"], ["not found"]),
    "unknown config key": (["nokey=1"], ["nokey"]),
    "bad checkpoint cadence": (["checkpoint.every_s=0"], ["every_s", "positive"]),
    "unknown task": (["task=deblur"], ["deblur", "dn"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_through_the_cli_is_refused_cleanly_and_leaves_no_folder(tmp_path, files, case):
    extra, words = CASES[case]
    base = [a for a in SMALL if not a.startswith("patches.")] if "patches=npz" in extra else SMALL
    args = base + [f"image={files}/img.png"] + [a.format(d=files) for a in extra]
    p = _cli(args, tmp_path / "work")
    _assert_clean_refusal(p, *words)
    runs = tmp_path / "work" / "runs" / "cem"
    assert not runs.exists() or list(runs.iterdir()) == [], list(runs.iterdir())


def _snapshot(folder: Path) -> dict:
    """Every file's bytes and modification time; the lock file only by its content (taking and
    releasing the lock of a folder no one holds rewrites it, empty as before)."""
    from cem_lab.folder_lock import LOCK_FILE

    return {
        str(f.relative_to(folder)): (f.read_bytes(), None if f.name == LOCK_FILE else f.stat().st_mtime_ns)
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


def test_a_run_refused_by_a_folder_with_other_settings_touches_nothing(tmp_path, files):
    folder = tmp_path / "run"
    first = _cli(SMALL + [f"image={files}/img.png", f"hydra.run.dir={folder}"], tmp_path)
    assert first.returncode == 0, first.stderr
    (folder / "done.json").unlink()  # the core's own check, not the finished-run record, refuses it
    before = _snapshot(folder)
    other = _cli(SMALL + [f"image={files}/img.png", "seed=5", f"hydra.run.dir={folder}"], tmp_path)
    _assert_clean_refusal(other, "other settings")
    assert _snapshot(folder) == before  # .hydra/, cem.log, config.yaml: all as the first run left them


def test_an_unwritable_output_folder_is_refused_before_anything_starts(tmp_path):
    (tmp_path / "afile").write_text("")
    p = _cli([f"hydra.run.dir={tmp_path / 'afile' / 'run'}"], tmp_path)
    _assert_clean_refusal(p, "is a file, not a folder", "hydra.run.dir")
    p = _cli(["-m", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'afile' / 'sweep'}"], tmp_path)
    _assert_clean_refusal(p, "is a file, not a folder")
    train = _cli([f"hydra.run.dir={tmp_path / 'afile' / 'train'}"], tmp_path, program="cem_lab.cli.train")
    _assert_clean_refusal(train, "is a file, not a folder", program="cem-train")


def _read_only_folder(path: Path):
    """A folder this process cannot write: chmod for a normal user; the immutable flag for root
    (root ignores permission bits). Returns the undo function, or None where neither works."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        return lambda: path.chmod(0o755)
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)
    return None


def test_a_read_only_folder_is_refused_with_the_fix(tmp_path):
    ro = tmp_path / "ro"
    undo = _read_only_folder(ro)
    if undo is None:  # the condition: no way to make a folder this process cannot write
        return pytest.skip("running as root on a file system without the immutable flag: no read-only folder")
    try:
        p = _cli([f"hydra.run.dir={ro / 'run'}"], tmp_path)
        _assert_clean_refusal(p, "not writable", str(ro))
        assert list(ro.iterdir()) == []
    finally:
        undo()


def test_input_changes_are_stated_once_in_the_log_and_in_the_summary(tmp_path, clean_image):
    import png

    # an SR image whose sides are not multiples of the scale, stored as 16-bit RGB
    img16 = np.asarray(clean_image[:45, :47], np.uint16) * 257 + 100
    path = tmp_path / "img16.png"
    png.from_array(img16.reshape(45, -1), "RGB;16").save(path)
    args = [
        "task=sr",
        "model=custom",
        "model.net._target_=torch.nn.Upsample",
        "+model.net.scale_factor=4",
        "roi=[16,16,16]",
        "cem=exhaustive",
        "cem.samples=1",
        "cem.block=16",
        "patches.count=300",
        "patches.patch_size=16",
        "progress=false",
        "figures=false",
        f"image={path}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    p = _cli(args, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    notes = json.loads((tmp_path / "run" / "summary.json").read_text())["notes"]
    cut = [n for n in notes if "cut to 44x44" in n]
    deep = [n for n in notes if "16-bit" in n]
    assert len(cut) == 1 and "45x47" in cut[0] and len(deep) == 1
    console = p.stdout + p.stderr
    log = (tmp_path / "run" / "cem.log").read_text()
    for text in ("cut to 44x44", "16-bit RGB"):
        assert console.count(text) == 1 and log.count(text) == 1, (text, console)


def test_a_report_says_what_it_did_now(tmp_path, files):
    args = SMALL + [f"image={files}/img.png", "figures=false", f"hydra.run.dir={tmp_path / 'run'}"]
    first = _cli(args, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "figures: none (figures=false)" in first.stdout and "cem_panel.png" not in first.stdout
    again = _cli(args, tmp_path)
    assert again.returncode == 0
    assert "already finished (skipped)" in again.stdout
    assert "nothing computed now; the map was computed earlier (finished " in again.stdout
    assert "\n  mode " not in again.stdout  # not the line of a run that just computed its passes
