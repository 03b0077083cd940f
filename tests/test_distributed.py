"""The same CEM on 1 process and on 2 DDP processes (CPU, gloo) gives the same map."""
from __future__ import annotations

import numpy as np
import pytest

from cem_lab import compute_cem

from conftest import ConvStack


@pytest.mark.parametrize("batch_size", [3])
def test_two_ddp_processes_give_the_single_process_map(tmp_path, clean_image, small_bank, batch_size):
    pytest.importorskip("lightning")
    from cem_lab.engine.distributed import compute_cem_distributed

    model = ConvStack(depth=3, width=6)
    kw = dict(block=8, patch_bank=small_bank, coarse=3, fine=5, progress=False, seed=3)
    single = compute_cem(model, clean_image, "dn", (16, 16, 16), batch_size=8, **kw)
    multi = compute_cem_distributed(model, clean_image, "dn", (16, 16, 16), devices=2, accelerator="cpu",
                                    batch_size=batch_size, output_dir=tmp_path / "ddp", **kw)
    np.testing.assert_array_equal(multi.effect_raw, single.effect_raw)
    np.testing.assert_array_equal(multi.stderr, single.stderr)
    np.testing.assert_array_equal(multi.classification, single.classification)
    assert (tmp_path / "ddp" / "cem.npz").is_file() and (tmp_path / "ddp" / "figures" / "cem_panel.png").is_file()
