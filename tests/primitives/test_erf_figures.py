"""The ERF figures: written in every format the style asks for, with what they were given."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from cem_lab.viz.erf_figures import ReachPoint, save_erf_figure, save_reach_figure
from cem_lab.viz.style import FigureStyle, use_style

RATIOS = {
    "20": {"mean": 0.002, "low": 0.001, "high": 0.003, "of_mean_map": 0.002},
    "50": {"mean": 0.01, "low": None, "high": None, "of_mean_map": 0.012},
    "99": {"mean": 0.2, "low": 0.15, "high": 0.25, "of_mean_map": 0.19},
}


def test_the_erf_figure_is_written_in_each_format(tmp_path):
    m = np.zeros((32, 48))
    m[10:14, 20:26] = np.arange(24).reshape(4, 6) + 1.0  # zeros elsewhere: the log scale must not fail
    with use_style(FigureStyle(formats=("png", "svg"))):
        first = save_erf_figure(
            tmp_path / "erf.png", mean_map=m, roi=[20, 40, 8], target=[24, 44, 1], scale=2, area_ratios=RATIOS
        )
    assert first == str(tmp_path / "erf.png")
    with Image.open(first) as im:
        assert im.size[0] > im.size[1] > 100
    svg = (tmp_path / "erf.svg").read_text()
    assert "high-contribution area ratios" in svg and "99 %" in svg


def test_the_reach_figure_takes_a_network_without_a_cem(tmp_path):
    nan = (math.nan, math.nan, math.nan)
    points = [
        ReachPoint("dncnn", (3.0, 2.5, 3.5), (9.0, 8.0, 10.0), (12.0, 10.0, 14.0)),
        ReachPoint("x", (1, 1, 1), (2, 2, 2), nan),
    ]
    with use_style(FigureStyle(formats=("svg",))):
        path = save_reach_figure(tmp_path / "reach.png", points)
    text = open(path).read()
    assert path.endswith("reach.svg") and "dncnn" in text and "CEM effective distance" in text
