"""CEMResult.to_frame: the map as one row per block, consistent with the arrays and the run's summary."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cem_lab import compute_cem


def test_the_frame_is_the_map_block_by_block(small_bank):
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[100:148, 200:248])
    kw = dict(block=8, patch_bank=small_bank, estimator="exhaustive", samples=2, progress=False, figures=False)
    blur = nn.Conv2d(3, 3, 9, padding=4, padding_mode="replicate", groups=3, bias=False)  # effects reach 4 px
    with torch.no_grad():
        blur.weight.fill_(1 / 81)
    res = compute_cem(blur, image, "dn", (16, 24, 16), **kw)
    df = res.to_frame()
    rows, cols = res.grid_shape
    assert len(df) == rows * cols and list(df[["row", "col"]].iloc[cols + 1]) == [1, 1]
    np.testing.assert_array_equal(df.pivot(index="row", columns="col", values="effect").to_numpy(), res.effect)
    np.testing.assert_array_equal(df.pivot(index="row", columns="col", values="n").to_numpy(), res.counts)
    assert df["in_roi"].sum() == res.roi_mask.sum() == 4  # a 16 px ROI on 8 px blocks
    outside = df[~df["in_roi"] & df["computed"]]
    counts = {"positive": int((outside["class"] > 0).sum()), "negative": int((outside["class"] < 0).sum())}
    counts["zero"] = int((outside["class"] == 0).sum())
    assert counts == res.block_counts()
    effective = outside[outside["class"] != 0]
    reach = res.summary()["reach_px"]
    assert len(effective) and np.isclose(effective["distance_px"].max(), reach["max"])
    assert np.isclose(effective["distance_px"].mean(), reach["mean"])
    # the boxes tile the output
    h, w = res.output_shape
    assert ((df["bottom"] - df["top"]) * (df["right"] - df["left"])).sum() == h * w
