"""``cem-sanity`` end to end on the embedded DnCNN at a small size, its files, and its refusals before any compute."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_clean_refusal, run_console

from cem_lab.cli.sanity import main


def test_cem_sanity_writes_its_numbers_and_figure(tmp_path):
    out = tmp_path / "sanity"
    p = run_console(
        "sanity",
        ["--size", "48", "--block", "4", "--images", "embedded", "astronaut", "--methods", "saliency,lam"]
        + ["--steps", "4", "--layers", "model.10,model.12,model.14", "--out", str(out), "--quiet"],
        tmp_path,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "saliency: at the last step spearman" in p.stdout
    s = json.loads((out / "sanity.json").read_text())
    assert s["program"] == "cem-sanity" and s["model"] == "embedded_dncnn" and s["roi"] == [16, 16, 16]
    assert s["steps"] == ["model.14", "model.12", "model.10"] and s["layers"][0] == "model.0"
    assert s["images"] == ["embedded", "astronaut"] and s["methods"] == ["saliency", "lam"]
    z = np.load(out / "sanity.npz")
    assert z["maps_saliency"].shape == (2, 4, 12, 12) and z["similarity_lam"].shape == (2, 3, 3)
    # the json's numbers are those of the npz; three of eight layers randomised: no verdict (the rule is about a
    # fully random network)
    for m in ("saliency", "lam"):
        for j, measure in enumerate(z["measures"]):
            for k in range(3):
                entry = s["similarity"][m][str(measure)][k]
                assert entry["mean"] == pytest.approx(z[f"similarity_{m}"][:, k, j].mean())
                assert entry["low"] <= entry["mean"] <= entry["high"]
        assert s["verdicts"][m] is None
    assert s["figures"] == {"sanity": "figures/sanity.png"} and (out / "figures" / "sanity.png").is_file()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--methods", "lam,gradcam"], ["--methods lam,gradcam", "saliency"]),
        (["--mode", "top_down"], ["--mode 'top_down'", "cascading or independent"]),
        (["--layers", "model.99"], ["--layers model.99", "model.0"]),
        (["--block", "40", "--size", "48"], ["--block 40", "3x3"]),
        (["--roi", "40,40,16", "--size", "48"], ["--roi 40,40,16", "48x48"]),
        (["--model", "edsr"], ["--model 'edsr'", "--model-path FILE"]),
    ],
)
def test_bad_input_is_refused_in_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    try:
        status = main([*args, "--quiet"])
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err

    class P:
        returncode, stderr = status, err

    assert_clean_refusal(P, *words, program="cem-sanity")
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()
