"""Checkpoint cadence: a setting in seconds or work items; where a run saves does not change its map."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ConvStack

from cem_lab import compute_cem

KW = dict(block=8, coarse=2, fine=4, progress=False, figures=False, batch_size=4, seed=2)


def test_a_checkpoint_every_round_gives_the_same_map_as_none_within_stages(tmp_path, clean_image, small_bank):
    model = ConvStack(depth=3)
    often = compute_cem(
        model,
        clean_image,
        "dn",
        (16, 16, 16),
        patch_bank=small_bank,
        output_dir=tmp_path / "a",
        checkpoint_every=None,
        checkpoint_every_items=1,
        **KW,
    )
    rarely = compute_cem(
        model,
        clean_image,
        "dn",
        (16, 16, 16),
        patch_bank=small_bank,
        output_dir=tmp_path / "b",
        checkpoint_every=None,
        checkpoint_every_items=None,
        **KW,
    )
    np.testing.assert_array_equal(often.effect_raw, rarely.effect_raw)
    np.testing.assert_array_equal(often.stderr, rarely.stderr)
    # stage ends (and the fill of the blocks outside the dependency region) only, vs after every round too
    stages = rarely.meta["checkpoints"]
    assert 2 <= stages <= 6
    assert often.meta["checkpoints"] > stages + 10
    assert often.meta["timings"]["checkpoint_s"] > 0


def test_the_items_cadence_bounds_the_work_a_kill_loses(tmp_path, clean_image, small_bank):
    """With every_items=k the saved state is never more than k items (one round) behind."""
    from cem_lab.run_format import STATE_FILE

    seen = []

    def on_batch(info):
        with np.load(tmp_path / "run" / STATE_FILE) as z:
            seen.append((info.stage, info.done, str(z["stage_names"][-1]), int(z["done_items"])))

    compute_cem(
        ConvStack(depth=3),
        clean_image,
        "dn",
        (16, 16, 16),
        patch_bank=small_bank,
        output_dir=tmp_path / "run",
        checkpoint_every=None,
        checkpoint_every_items=8,
        on_batch=on_batch,
        **KW,
    )
    lags = [done - saved for stage, done, saved_stage, saved in seen if saved_stage == stage]
    assert lags and max(lags) < 8 + KW["batch_size"]


@pytest.mark.parametrize(
    "every_s, every_items, words",
    [
        (0, None, "every_s"),
        (-1.0, None, "every_s"),
        ("soon", None, "every_s"),
        (None, 0, "every_items"),
        (None, 2.5, "every_items"),
    ],
)
def test_a_bad_cadence_is_refused_before_anything_is_written(
    tmp_path, clean_image, small_bank, every_s, every_items, words
):
    with pytest.raises(ValueError, match=words):
        compute_cem(
            ConvStack(depth=3),
            clean_image,
            "dn",
            (16, 16, 16),
            patch_bank=small_bank,
            output_dir=tmp_path / "run",
            checkpoint_every=every_s,
            checkpoint_every_items=every_items,
            **KW,
        )
    assert not (tmp_path / "run").exists()
