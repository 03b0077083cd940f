"""The ROI atlas: every ROI's map from shared full-image passes equals its own single-ROI run, with
fewer passes; bad ROI lists are refused before any compute; an interrupted atlas resumes to the
same maps; the CLI runs roi=grid into one folder and reuses a finished one."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ConvStack

from cem_lab import compute_cem
from cem_lab.api import compute_atlas
from cem_lab.causal.atlas import AtlasError, AtlasJob, check_rois, prepare_atlas, roi_grid

KW = dict(block=8, coarse=2, fine=6, seed=3)


@pytest.fixture
def image64() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:164, 200:264])


@pytest.mark.parametrize("estimator", ["coarse_to_fine", "adaptive"])
def test_every_roi_of_the_atlas_equals_its_single_roi_run(image64, small_bank, estimator):
    model = ConvStack(depth=4)
    rois = [[8, 8, 16], [16, 16, 16], [40, 24, 24]]  # the first two overlap
    opts = {"round_size": 4, "max_samples": 16} if estimator == "adaptive" else None
    atlas = compute_atlas(
        model,
        image64,
        "dn",
        rois,
        patch_bank=small_bank,
        estimator=estimator,
        estimator_options=opts,
        progress=False,
        **KW,
    )
    assert any("overlap" in n for n in atlas.meta["notes"])
    single_passes = 0
    for roi, a in zip(rois, atlas.results):
        r = compute_cem(
            model,
            image64,
            "dn",
            roi,
            patch_bank=small_bank,
            estimator=estimator,
            mode="full",
            estimator_options=opts,
            progress=False,
            figures=False,
            **KW,
        )
        for name in ("effect", "effect_raw", "stderr", "counts", "classification", "roi_mask"):
            np.testing.assert_array_equal(getattr(a, name), getattr(r, name), err_msg=name)
        assert a.baseline_metric == r.baseline_metric
        single_passes += r.meta["forward_passes"]  # with the un-intervened pass and the last chunk's padding
    # the single runs also count their un-intervened pass and the padding of chunks to forward_batch
    assert single_passes - len(rois) * (8 + 2 * 7) <= atlas.meta["forward_passes_separately"] <= single_passes
    assert atlas.meta["forward_passes"] < 0.6 * atlas.meta["forward_passes_separately"]  # the coarse stage is shared


def test_roi_grid_tiles_the_output_centred():
    g = roi_grid(64, 64, 16)
    assert len(g) == 16 and g[0].as_list() == [0, 0, 16] and g[-1].as_list() == [48, 48, 16]
    g = roi_grid(70, 64, 32, stride=16)
    assert [r.top for r in g[::3]] == [3, 19, 35] and [r.left for r in g[:3]] == [0, 16, 32]
    with pytest.raises(AtlasError, match="do not fit"):
        roi_grid(16, 16, 32)


@pytest.mark.parametrize(
    "rois, words",
    [
        ([[0, 0, 16]], "at least two ROIs"),
        ([[0, 0, 16], [0, 0, 16]], "are the same"),
        ([[0, 0, 16], [56, 56, 16]], "ROI 1 of the atlas"),
        ([[0, 0, 16], [-4, 0, 16]], "ROI 1 of the atlas"),
        ("tiles", "'grid' or a list"),
    ],
)
def test_bad_roi_lists_are_refused_before_any_forward_pass(image64, small_bank, rois, words):
    model = ConvStack(depth=3)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(AtlasError, match=words):
        prepare_atlas(model, image64, "dn", rois, patch_bank=small_bank, **KW)
    assert not calls


def test_the_atlas_refuses_settings_it_cannot_honour(image64, small_bank):
    with pytest.raises(AtlasError, match="recompute"):
        prepare_atlas(
            ConvStack(), image64, "dn", "grid", roi_size=32, patch_bank=small_bank, recompute="incremental", **KW
        )
    with pytest.raises(AtlasError, match="blocks"):
        prepare_atlas(ConvStack(), image64, "dn", "grid", roi_size=32, patch_bank=small_bank, blocks=[0, 1], **KW)
    assert check_rois([[0, 0, 8], [8, 8, 8]], 64, 64, 1)[1] == []


def test_an_interrupted_atlas_resumes_to_the_same_maps(tmp_path, image64, small_bank, monkeypatch):
    model = ConvStack(depth=3)
    kw = dict(patch_bank=small_bank, roi_size=32, batch_size=16, **KW)
    whole = compute_atlas(model, image64, "dn", "grid", progress=False, **kw)
    real = AtlasJob._metrics
    seen = [0]

    def flaky(self, blocks, samples):
        seen[0] += 1
        if seen[0] == 20:  # in the fine step
            raise KeyboardInterrupt
        return real(self, blocks, samples)

    monkeypatch.setattr(AtlasJob, "_metrics", flaky)
    with pytest.raises(KeyboardInterrupt):
        compute_atlas(
            model,
            image64,
            "dn",
            "grid",
            output_dir=tmp_path / "a",
            progress=False,
            checkpoint_every=0,
            figures=False,
            **kw,
        )
    monkeypatch.setattr(AtlasJob, "_metrics", real)
    again = compute_atlas(model, image64, "dn", "grid", output_dir=tmp_path / "a", progress=False, **kw)
    assert any("resumed" in n for n in again.meta["notes"])
    for a, b in zip(whole.results, again.results):
        np.testing.assert_array_equal(a.effect_raw, b.effect_raw)
        np.testing.assert_array_equal(a.counts, b.counts)
    # the done part was not redone, and the record counts the work of both processes
    assert again.meta["this_session"]["forward_passes"] < whole.meta["forward_passes"]
    assert again.meta["forward_passes"] == whole.meta["forward_passes"] and again.meta["sessions"] == 2
    s = json.loads((tmp_path / "a" / "atlas.json").read_text())
    assert s["n_rois"] == 4 and len(s["rois"]) == 4 and (tmp_path / "a" / "figures" / "atlas.png").is_file()
    assert (tmp_path / "a" / "rois" / "roi_003" / "cem.npz").is_file()
    with np.load(tmp_path / "a" / "atlas.npz") as z:
        assert z["effect"].shape == (4, 8, 8)


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "cem_lab.cli.cem", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def test_cli_roi_grid_writes_one_atlas_folder_and_reuses_it(tmp_path, image64):
    from PIL import Image

    Image.fromarray(image64).save(tmp_path / "img.png")
    args = [
        f"image={tmp_path / 'img.png'}",
        "roi=grid",
        "roi_grid.size=32",
        "cem.fine=4",
        "progress=false",
        "figures=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    p = _cli(*args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ROI atlas written to" in p.stdout and "4 ROIs" in p.stdout
    assert json.loads((tmp_path / "run" / "atlas.json").read_text())["n_rois"] == 4
    p2 = _cli(*args, cwd=tmp_path)
    assert p2.returncode == 0 and "already finished (skipped)" in p2.stdout
    bad = _cli(
        f"image={tmp_path / 'img.png'}", "roi=[[0,0,16],[0,0,16]]", f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path
    )
    assert bad.returncode == 2 and "are the same" in bad.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("estimator", ["coarse_to_fine", "adaptive"])
def test_the_atlas_shows_the_whole_runs_time_left_and_its_bound_holds(image64, small_bank, estimator, caplog, capsys):
    import logging
    import re

    opts = {"round_size": 4, "max_samples": 16} if estimator == "adaptive" else None
    with caplog.at_level(logging.INFO, logger="cem_lab"):
        compute_atlas(
            ConvStack(depth=4),
            image64,
            "dn",
            [[8, 8, 16], [16, 16, 16], [40, 24, 24]],
            patch_bank=small_bank,
            estimator=estimator,
            estimator_options=opts,
            progress=True,
            **KW,
        )
    steps = [
        m
        for m in (
            re.match(r"atlas step \d+: (\d+) full-image passes(?:, then at most (\d+))?", r.getMessage())
            for r in caplog.records
        )
        if m
    ]
    passes = [int(m[1]) for m in steps]
    bounds = [int(m[2] or 0) for m in steps]
    assert len(steps) >= 2 and bounds[0] > 0, [r.getMessage() for r in caplog.records]
    for i, bound in enumerate(bounds):
        assert sum(passes[i + 1 :]) <= bound, (passes, bounds)
    assert "run <= " in capsys.readouterr().err
