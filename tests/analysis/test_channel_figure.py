"""The channel map's figure: readable (no text overlaps another or leaves the canvas) for a few channels and for
many with a long title; the colours follow the intervals; the middle of a long ranking is left out and said."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from test_figure_layout import layout_problems

from cem_lab.viz.channel_figures import HELPS, HURTS, NEUTRAL, channel_colours, save_channel_figure, shown_channels

TITLE = (
    "rcan_global_sr_x4 | sr | layer body.1.body.1.body.3.squeeze | value donor | 3 image(s) | "
    "ROI [16, 48, 32] | a long note that has to wrap"
)


@pytest.mark.parametrize("channels, images", [(6, 1), (64, 3), (256, 4)])
def test_the_channel_figure_is_readable(tmp_path, monkeypatch, channels, images):
    rng = np.random.default_rng(channels)
    per_image = rng.normal(0, 0.3, size=(images, channels))
    mean = per_image.mean(axis=0)
    low, high = (mean - 0.2, mean + 0.2) if images > 1 else (np.full(channels, np.nan),) * 2
    caught = []
    original = Figure.savefig

    def savefig(fig, *args, **kwargs):
        caught.append(fig)
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    path = save_channel_figure(
        tmp_path / "channels.png", mean=mean, low=low, high=high, per_image=per_image, title=TITLE
    )
    assert (tmp_path / "channels.png").is_file() and path.endswith("channels.png")
    assert layout_problems(caught[0]) == []
    texts = " ".join(t.get_text() for t in caught[0].texts)
    assert ("middle channels not drawn" in texts) == (channels > 48)
    assert ("dots: the images" in texts) == (images > 1)


def test_colours_and_the_shown_channels():
    mean = np.array([0.5, -0.4, 0.1, 0.0, 0.3])
    low = np.array([0.2, -0.6, -0.1, np.nan, np.nan])
    high = np.array([0.8, -0.2, 0.3, np.nan, np.nan])
    assert channel_colours(mean, low, high) == [HELPS, HURTS, NEUTRAL, NEUTRAL, HELPS]
    order, left_out = shown_channels(mean, 4)
    assert order.tolist() == [0, 4, 3, 1] and left_out == 1  # the two most helpful, the two most harmful
