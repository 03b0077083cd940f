"""Crops of one picture are one cluster: a study that cuts 6 photographs into 24 crops has 6 pictures' worth of
evidence, and its intervals must say so."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cem_lab.analysis.finding_tables import units_line
from cem_lab.analysis.findings import paired_table
from cem_lab.analysis.runs import run_row
from cem_lab.run_format import crop_name, picture_of


def test_a_crop_names_its_picture_and_a_whole_image_is_its_own():
    assert picture_of(crop_name("barbara", 79, 111, 128, 128)) == "barbara"
    assert picture_of(crop_name("ascent-PyWavelets-1.9.0", 64, 320, 128, 128)) == "ascent-PyWavelets-1.9.0"
    assert picture_of(crop_name("my_crop_1", 0, 0, 64, 48)) == "my_crop_1"
    for whole in ("kodim23", "my_crop_photo", "img_crop12"):  # not a crop name: the picture itself
        assert picture_of(whole) == whole


def _population(rng, effect_sd: float, with_picture: bool) -> pd.DataFrame:
    """Two models on 6 pictures x 4 crops x 2 ROIs; their difference has mean 0, a per-picture offset
    (``effect_sd``) shared by its crops, and a little noise per unit."""
    rows = []
    for p in range(6):
        name = f"photo{p}"
        offset = rng.normal(0, effect_sd)
        for c in range(4):
            image = crop_name(name, 64 * c, 0, 128, 128)
            for r in range(2):
                base = rng.normal(30, 2)
                for model, d in (("a", 0.0), ("b", offset + rng.normal(0, 0.1))):
                    row = {"model": model, "image": image, "roi": f"{r} 0 32", "psnr": base + d}
                    if with_picture:
                        row["picture"] = picture_of(image)
                    rows.append(row)
    return pd.DataFrame(rows)


def test_a_studys_interval_resamples_pictures_so_that_crops_of_one_picture_do_not_count_as_independent():
    rng = np.random.default_rng(0)
    covered = {True: 0, False: 0}
    sims = 150
    for _ in range(sims):
        for with_picture in (True, False):
            df = _population(rng, 1.0, with_picture)
            row = paired_table(df, [("a", "b")], ["psnr"], resamples=1000).iloc[0]
            covered[with_picture] += bool(row["low"] <= 0 <= row["high"])
            if with_picture:
                assert row["n_images"] == 6 and row["n_units"] == 48
    # resampling the 6 pictures keeps the nominal 95 % (about; 150 populations); treating the 24 crops as
    # independent pictures, as the studies did before, covers far less (about two thirds)
    assert covered[True] / sims >= 0.88, covered
    assert covered[False] / sims <= 0.8, covered


def test_the_runs_table_and_the_population_line_name_the_pictures():
    summary = {
        "image": crop_name("sail", 64, 512, 128, 128),
        "scale": 4,
        "block": 8,
        "metric": "psnr",
        "unit": "dB",
        "baseline_metric": 20.0,
        "total_positive_effect": 1.0,
        "total_negative_effect": 0.0,
    }
    assert run_row(summary, "f", "r")["picture"] == "sail"
    df = _population(np.random.default_rng(1), 1.0, True)
    line = units_line(df[df["model"] == "a"])
    assert line.startswith("48 units (6 pictures: photo0, photo1") and "24 crops of them x ROIs" in line
    whole = pd.DataFrame({"image": ["x", "y"], "picture": ["x", "y"], "roi": ["0 0 8", "0 0 8"]})
    assert units_line(whole).startswith("2 units (2 images x ROIs: x, y)")
