"""``cem-erf`` end to end on the embedded DnCNN at a small size, its files, and its refusals before any compute."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_clean_refusal, run_console

from cem_lab.cli.erf import main
from cem_lab.cli.probe_options import parse_roi
from cem_lab.errors import InputError


def test_cem_erf_writes_its_numbers_and_figures(tmp_path):
    out = tmp_path / "erf"
    cem = tmp_path / "cem_run"  # a finished cem-lab run's summary is all cem-erf reads of it
    cem.mkdir()
    (cem / "summary.json").write_text(json.dumps({"roi": [20, 20, 8], "reach_px": {"max": 11.3, "mean": 6.0}}))
    from cem_lab.run_format import write_cem_arrays

    write_cem_arrays(cem, {"output_shape": np.array([48, 48])})  # the output it mapped: the ERF's own size
    p = run_console(
        "erf",
        ["--size", "48", "--images", "embedded", "astronaut", "--draws", "2"]  # the ROI: --cem-run's
        + ["--cem-run", str(cem), "--out", str(out), "--quiet", "--format", "png,svg"],
        tmp_path,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "area ratio" in p.stdout and "CEM effective distance: 11.3 px" in p.stdout
    s = json.loads((out / "erf.json").read_text())
    assert s["program"] == "cem-erf" and s["model"] == "embedded_dncnn" and s["roi"] == [20, 20, 8]
    assert s["task"]["name"] == "dn" and s["task"]["sigma"] == 50.0 and s["draws_per_image"] == 2
    assert s["images"] == ["embedded#0", "embedded#1", "astronaut#0", "astronaut#1"]
    z = np.load(out / "erf.npz")
    assert z["maps"].shape == (4, 48, 48) and z["mean_map"].shape == (48, 48)
    # the numbers in the json are those of the maps in the npz
    from cem_lab.attribution.erf import area_ratio

    for j, level in enumerate(z["area_levels"]):
        key = f"{100 * level:g}"
        per = [area_ratio(m, level) for m in z["maps"]]
        assert s["area_ratio"][key]["per_image"] == pytest.approx(per)
        assert s["area_ratio"][key]["mean"] == pytest.approx(np.mean(per))
        assert s["area_ratio"][key]["low"] <= s["area_ratio"][key]["mean"] <= s["area_ratio"][key]["high"]
        np.testing.assert_allclose(z["area_ratios"][:, j], per)
    # the embedded DnCNN is 8 layers of 3x3: its gradient stays within 8 pixels of the centre pixel (24, 24)
    support = np.argwhere(z["mean_map"] > 0)
    assert support.min() >= 24 - 8 and support.max() <= 24 + 8
    assert s["area_ratio"]["99"]["mean"] <= 17 * 17 / 48**2
    assert s["cem_effective_distance_px"]["mean"] == pytest.approx(11.3)
    for f in ("erf.png", "erf.svg", "reach.png", "reach.svg"):
        assert (out / "figures" / f).is_file(), f
    assert s["figures"] == {"erf": "figures/erf.png", "reach": "figures/reach.png"}
    # erf.json holds what a figure of several networks needs
    from cem_lab.attribution.erf_run import reach_numbers

    r = reach_numbers(s)
    assert r["label"] == "embedded_dncnn" and r["cem_reach"][0] == pytest.approx(11.3)
    assert 0 < r["radius_50"][0] <= r["radius_99"][0] == pytest.approx(s["mass_radius_px"]["99"]["mean"])


@pytest.mark.parametrize(
    "args, words",
    [
        (["--roi", "40,40,16", "--size", "48"], ["--roi 40,40,16", "48x48", "[0, 32]"]),
        (["--roi", "1,2"], ["--roi '1,2'", "TOP,LEFT,SIZE"]),
        (["--task", "sr"], ["--task sr", "does not upscale"]),
        (["--images", "nowhere.png"], ["--images nowhere.png", "no such file", "chelsea"]),
        (["--size", "400"], ["smaller than --size 400"]),
        (["--model", "edsr"], ["--model 'edsr'", "--model-path FILE"]),
        (["--model-path", "nope.pth"], ["--model-path nope.pth", "no such file"]),
        (["--format", "gif"], ["gif"]),
    ],
)
def test_bad_input_is_refused_in_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    try:  # in process (what the console script's sys.exit(main()) gives back)
        status = main([*args, "--quiet"])
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err

    class P:  # the shape assert_clean_refusal reads
        returncode, stderr = status, err

    assert_clean_refusal(P, *words, program="cem-erf")
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_parse_roi():
    assert parse_roi("1,2,3") == (1, 2, 3) and parse_roi(" 4 5 6") == (4, 5, 6)
    with pytest.raises(InputError):
        parse_roi("1,2,0")


def test_a_cem_run_of_another_output_size_is_refused(tmp_path, capsys, monkeypatch):
    """The same ROI numbers on a 64x64 map and a 48x48 crop are two places: no comparison is drawn."""
    from cem_lab.run_format import write_cem_arrays

    cem = tmp_path / "cem_run"
    cem.mkdir()
    (cem / "summary.json").write_text(json.dumps({"roi": [20, 20, 8], "reach_px": {"max": 11.3, "mean": 6.0}}))
    write_cem_arrays(cem, {"output_shape": np.array([64, 64])})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["--size", "48", "--cem-run", str(cem), "--quiet"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "64x64 output" in err and "48x48" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()
