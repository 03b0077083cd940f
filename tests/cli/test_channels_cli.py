"""``cem-channels`` end to end (the embedded DnCNN at a small size, a zoo RCAN by name): its files, the numbers in
them, a rerun that reads the finished images back, and refusals in one line before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import assert_clean_refusal, run_console

from cem_lab.cli.channels import main

LAYER = "model.13"  # the embedded DnCNN's last ReLU: 32 channels


def test_cem_channels_writes_its_numbers_and_figure_and_resumes(tmp_path):
    out = tmp_path / "ch"
    args = ["--size", "48", "--images", "embedded", "astronaut", "chelsea", "--layer", LAYER, "--roi", "16,16,16"]
    p = run_console("channels", [*args, "--out", str(out), "--quiet", "--format", "png,svg"], tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "channels that help the ROI" in p.stdout and "most helpful" in p.stdout
    s = json.loads((out / "channels.json").read_text())
    assert s["program"] == "cem-channels" and s["model"] == "embedded_dncnn" and s["layer"] == LAYER
    assert s["channels"] == 32 and s["images"] == ["embedded", "astronaut", "chelsea"] and s["value"] == "donor"
    assert sum(s["counts"].values()) == 32
    # every image is probed with the other two as donors, each used once: 32 channels x 2 donors x 3 images
    z = np.load(out / "channels.npz")
    assert z["effect"].shape == (3, 32) and (z["n"] == 2).all()
    assert s["cost"]["forward_passes"] >= 3 * 32 * 2
    # the table ranks by the mean over images, which is the npz's
    table = pd.read_csv(out / "channels.csv")
    np.testing.assert_allclose(
        table.sort_values("channel")["effect_db"], z["effect"].mean(axis=0), rtol=1e-5, atol=1e-9
    )
    assert list(table["rank"]) == list(range(1, 33))
    assert table["effect_db"].is_monotonic_decreasing
    assert (table["low"] <= table["effect_db"] + 1e-9).all() and (table["effect_db"] <= table["high"] + 1e-9).all()
    assert s["ranking"][0] == int(table["channel"].iloc[0])
    for f in ("channels.png", "channels.svg"):
        assert (out / "figures" / f).is_file(), f
    # a rerun reads every finished image back from its checkpoint: no forward pass of an intervention
    again = run_console("channels", [*args, "--out", str(out), "--quiet", "--no-figures"], tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    s2 = json.loads((out / "channels.json").read_text())
    assert s2["effect_db"] == s["effect_db"]
    assert any("read back" in n for n in s2["notes"])


def test_a_zoo_model_by_name_and_its_layers(tmp_path, capsys):
    status = main(["--model", "rcan_global_sr_x4", "--task", "sr", "--size", "32", "--list-layers", "--quiet"])
    assert status == 0
    listing = capsys.readouterr().out
    assert "body.0.body.0.body.3" in listing or "attention" in listing or "body" in listing, listing


@pytest.mark.parametrize(
    "args, words",
    [
        ([], ["give --layer NAME", "--list-layers"]),
        (["--layer", "nope", "--value", "zeros"], ["layer 'nope' is not a module", "model.0"]),
        (["--layer", LAYER, "--images", "embedded"], ["needs a population", "--value zeros"]),
        (["--layer", LAYER, "--value", "noise", "--images", "embedded", "chelsea"], ["--value 'noise'", "donor"]),
        (["--layer", LAYER, "--images", "embedded", "embedded"], ["given twice"]),
        (["--layer", LAYER, "--estimator", "fast"], ["--estimator 'fast'", "coarse_to_fine"]),
        (["--layer", LAYER, "--roi", "60,60,16", "--size", "48", "--value", "zeros"], ["--roi 60,60,16", "48x48"]),
        (["--layer", LAYER, "--model", "edsr", "--value", "zeros"], ["--model 'edsr'", "zoo model"]),
    ],
)
def test_bad_input_is_refused_in_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    try:
        status = main([*args, "--size", "48", "--quiet"] if "--size" not in args else [*args, "--quiet"])
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err

    class P:
        returncode, stderr = status, err

    assert_clean_refusal(P, *words, program="cem-channels")
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()
