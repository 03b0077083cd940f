"""A study's population through the CLI: images of a folder by index, ROIs placed by the seeded
texture-strata rule, a centre crop of the clean image, the refusals of bad study input (an empty folder,
an index past its images, ROIs that do not fit, a zoo model of another task), and cem-report on two study
sweeps printing per-model intervals and paired differences."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_clean_refusal
from PIL import Image

from cem_lab.causal.grid import GeometryError
from cem_lab.causal.roi_placement import place_roi, texture_map

SMALL = [
    "model=custom",
    "model.net._target_=cem_lab.models.DnCNN",
    "+model.net.features=8",
    "+model.net.depth=3",
    "cem=exhaustive",
    "cem.samples=2",
    "cem.block=8",
    "patches.count=300",
    "progress=false",
    "figures=false",
]


def _cli(args, cwd: Path, program: str = "cem_lab.cli.cem"):
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", program, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _half_flat(clean_image):
    """The left half flat grey, the right half the textured crop: the strata must find both."""
    img = clean_image.copy()
    img[:, :24] = 128
    return img


# ----------------------------------------------------------------------------- the placement rule
def test_placement_covers_flat_and_textured_strata_and_depends_on_the_image_only(clean_image):
    img = _half_flat(clean_image)
    grad = texture_map(img)
    rois = [place_roi(img, 16, k, 3, seed=0, align=8) for k in range(3)]
    assert [r.as_list() for r in rois] == [r.as_list() for r in (place_roi(img, 16, k, 3, align=8) for k in range(3))]
    textures = [r.texture for r in rois]
    assert textures == sorted(textures) and textures[0] < textures[-1]
    assert rois[0].left == 0  # the flattest stratum lies in the flat half
    for r in rois:
        assert r.top % 8 == 0 and r.left % 8 == 0 and r.top + 16 <= 48 and r.left + 16 <= 48
        assert r.texture == pytest.approx(grad[r.top : r.top + 16, r.left : r.left + 16].mean())
        assert r.stratum[0] <= r.texture <= r.stratum[1]
    other_seed = [place_roi(img, 16, k, 3, seed=1, align=8).as_list() for k in range(3)]
    assert len(other_seed) == 3  # another seed is another (valid) draw from the same strata


def test_placement_refuses_what_cannot_be_placed(clean_image):
    with pytest.raises(GeometryError, match="does not fit the 48x48"):
        place_roi(clean_image, 64, 0, 2)
    with pytest.raises(GeometryError, match=r"index must be an integer in \[0, 1\]"):
        place_roi(clean_image, 16, 2, 2)
    with pytest.raises(GeometryError, match="fewer than roi_place.count=30"):
        place_roi(clean_image, 16, 0, 30, align=8)


# ----------------------------------------------------------------------------- refusals through the CLI
@pytest.fixture
def folders(tmp_path, clean_image):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(clean_image).save(imgs / "a.png")
    Image.fromarray(_half_flat(clean_image)).save(imgs / "b.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    return tmp_path


CASES = {
    "empty dataset folder": (["dataset=folder", "folder.dir={t}/empty"], ["no images in", "empty", ".png"]),
    "dataset folder missing": (["dataset=folder", "folder.dir={t}/nope"], ["is not a folder"]),
    "index past the images": (
        ["dataset=folder", "folder.dir={t}/imgs", "folder.index=2"],
        ["holds 2 image(s)", "folder.index=range(0,2)"],
    ),
    "placed roi larger than the image": (
        ["dataset=folder", "folder.dir={t}/imgs", "roi=placed", "roi_place.size=64"],
        ["does not fit the 48x48", "roi_place.size"],
    ),
    "placed roi index past the count": (
        ["dataset=folder", "folder.dir={t}/imgs", "roi=placed", "roi_place.index=4"],
        ["index must be an integer in [0, 3]"],
    ),
    "explicit roi outside the image": (["dataset=folder", "folder.dir={t}/imgs", "roi=[40,40,16]"], ["outside"]),
    "crop larger than the image": (
        ["dataset=folder", "folder.dir={t}/imgs", "image_crop=64"],
        ["does not fit the 48x48"],
    ),
    "crop cell past the grid": (
        ["dataset=folder", "folder.dir={t}/imgs", "image_crop=16", "image_crop_cell=4"],
        ["image_crop_cell=4 is not a cell of the 2x2 image_crop_grid", "0 to 3"],
    ),
}


#: covered at the CLI in the default suite; the others run with -m slow (their rules are unit-tested above, or
#: by tests/cli/test_cli_refusals.py for explicit ROIs)
FAST_CASES = {"empty dataset folder", "index past the images", "placed roi larger than the image"}


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=[] if c in FAST_CASES else [pytest.mark.slow], id=c) for c in sorted(CASES)]
)
def test_bad_study_input_is_refused_before_anything_is_written(folders, case):
    extra, words = CASES[case]
    p = _cli(SMALL + [a.format(t=folders) for a in extra], folders / "work")
    assert_clean_refusal(p, *words)
    runs = folders / "work" / "runs"
    assert not runs.exists() or not any(runs.rglob("*.json")), list(runs.rglob("*"))


def test_a_zoo_model_of_another_task_is_refused(tmp_path):
    p = _cli(["model=zoo", "model.id=rcan_global_dn_s50", "task=sr", "task.scale=4", "progress=false"], tmp_path)
    assert_clean_refusal(p, "trained for dn_s50, not sr_x4", "model.allow_other_task")
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(f.is_file() for f in runs.rglob("*")), list(runs.rglob("*"))


def test_crop_cells_centre_a_square_in_each_cell_of_the_grid():
    """A study's four crops of a picture (image_crop_cell=0..3): the square centred in each quarter, moved inside
    the picture where a quarter is smaller than it; named by their place; a non-square crop is refused."""
    import numpy as np
    from omegaconf import OmegaConf

    from cem_lab.compose.build import crop_input
    from cem_lab.errors import InputError

    img = np.arange(512 * 768 * 3, dtype=np.uint32).reshape(512, 768, 3).astype(np.uint8)
    names = []
    for cell in range(4):
        cfg = OmegaConf.create(
            {"image_crop": 128, "image_crop_cell": cell, "image_crop_grid": [2, 2], "degraded": None}
        )
        crop, name = crop_input(cfg, img, "monarch")
        assert crop.shape == (128, 128, 3)
        names.append(name)
    assert names == [
        "monarch_crop64_128_128x128",
        "monarch_crop64_512_128x128",
        "monarch_crop320_128_128x128",
        "monarch_crop320_512_128x128",
    ]
    cfg = OmegaConf.create({"image_crop": 400, "image_crop_cell": 3, "image_crop_grid": [2, 2], "degraded": None})
    assert crop_input(cfg, img, "m")[1] == "m_crop112_368_400x400"  # kept inside the picture
    bad = OmegaConf.create({"image_crop": [0, 0, 64, 64], "image_crop_cell": 0, "degraded": None})
    with pytest.raises(InputError, match="places a square crop"):
        crop_input(bad, img, "m")


# ----------------------------------------------------------------------------- a study end to end
def test_a_study_sweep_over_images_and_placed_rois_reports_intervals_and_paired_differences(folders):
    work = folders / "work"
    common = [
        "-m",
        *SMALL,
        "dataset=folder",
        f"folder.dir={folders}/imgs",
        "folder.index=0,1",
        "roi=placed",
        "roi_place.count=2",
        "roi_place.size=16",
        "roi_place.index=0,1",
    ]
    for depth in (2, 3):
        p = _cli(
            common + [f"model.name=dncnn_d{depth}", f"model.net.depth={depth}", f"sweep_name=study_d{depth}"], work
        )
        assert p.returncode == 0, p.stderr[-3000:]
    sweeps = work / "runs" / "sweeps" / "cem"
    rep = _cli(
        [str(sweeps / "study_d2"), str(sweeps / "study_d3"), "--out", str(work / "report")],
        work,
        program="cem_lab.cli.report",
    )
    assert rep.returncode == 0, rep.stderr[-3000:]
    out = rep.stdout
    assert "read 8 finished run(s)" in out
    assert "| dncnn_d2 | 2 | 4 |" in out and "| dncnn_d3 | 2 | 4 |" in out  # 2 images x 2 placed ROIs each
    assert "Paired differences (dn_s50" in out and "| dncnn_d3 | dncnn_d2 | 2 | 4 |" in out
    import pandas as pd

    runs = pd.read_csv(work / "report" / "runs.csv")
    # the same ROIs for both models: placement depends on the image only
    assert runs.groupby("image")["roi"].apply(lambda r: r.nunique()).max() == 2
    assert set(runs["image"]) == {"a.png", "b.png"}


@pytest.mark.slow  # 30 s; the study sweep test above covers placed ROIs and the report by default
def test_placed_rois_stay_put_when_the_block_is_swept_and_the_report_says_why_units_do_not_pair(folders):
    """roi=placed must not depend on a compared setting unless asked: by default the candidates' grid is the
    ROI size, so a sweep over cem.block maps the same ROIs and the report pairs them. With
    roi_place.align=block (asked) the ROIs move with the block, and the report names that as the reason the
    units do not pair, instead of blaming runs that do not exist."""
    work = folders / "work"
    sweep = [
        "-m",
        *[a for a in SMALL if not a.startswith("cem.block")],
        f"image={folders}/imgs/a.png",
        "roi=placed",
        "roi_place.count=2",
        "roi_place.size=16",
        "roi_place.index=0,1",
        "cem.block=8,16",
    ]
    sweeps = work / "runs" / "sweeps" / "cem"
    for name, extra in (("same", []), ("moved", ["roi_place.align=block"])):
        p = _cli([*sweep, *extra, f"sweep_name={name}"], work)
        assert p.returncode == 0, p.stderr[-3000:]
    same = _cli(
        [str(sweeps / "same"), "--by", "model,block", "--out", str(work / "r1")], work, program="cem_lab.cli.report"
    )
    assert same.returncode == 0, same.stderr[-3000:]
    assert "lacks" not in same.stdout and "Paired differences" in same.stdout, same.stdout
    moved = _cli(
        [str(sweeps / "moved"), "--by", "model,block", "--out", str(work / "r2")], work, program="cem_lab.cli.report"
    )
    assert moved.returncode == 0, moved.stderr[-3000:]
    lines = [ln for ln in moved.stdout.splitlines() if "lacks" in ln]
    assert lines and all("the placement's inputs differ (align" in ln for ln in lines), moved.stdout
    assert "no finished run" not in moved.stdout
