"""The paper's DN demo job with the real DnCNN and the DIV2K bank follows the reference semantics.

Each rule is recomputed here independently, with numpy, the way the authors' demo does it:
the noisy input (np.random.seed(0), clip, np.uint8 truncation), the ROI PSNR on uint8-rounded
outputs, an LV intervention (patch + fresh noise, clip, truncate) on the full image, the
coarse-to-fine rule and the final tolerance. Skipped when ../shared/data is absent.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, needs_shared

from cem_lab import compute_cem
from cem_lab.causal import BlockGrid, draw_rng
from cem_lab.images import load_image

pytestmark = needs_shared

ROI = (152, 96, 32)


@pytest.fixture(scope="module")
def setup():
    from cem_lab.models.archs import DnCNN
    from cem_lab.models.checkpoint import load_weights
    from cem_lab.patches import PatchBank

    torch.set_num_threads(2)
    model = DnCNN()
    load_weights(model, SHARED_DATA / "dncnn_color_blind.pth")
    bank = PatchBank.load(SHARED_DATA / "div2k_patches8.npz")
    gt = load_image(SHARED_DATA / "demo_images" / "demo_2.png")
    return model.eval(), bank, gt


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


FORWARD_BATCH = 2  # small, to keep the test short; both sides use the same forward shape


def _restore(model, images: list) -> list:
    """Model outputs, rounded to uint8, run FORWARD_BATCH at a time like cem_lab (float rounding alike)."""
    outs = []
    for i in range(0, len(images), FORWARD_BATCH):
        chunk = images[i : i + FORWARD_BATCH]
        chunk = chunk + [chunk[0]] * (FORWARD_BATCH - len(chunk))
        # contiguous NCHW like cem_lab: a channels-last tensor makes oneDNN pick another algorithm
        x = torch.from_numpy(np.ascontiguousarray(np.stack(chunk).transpose(0, 3, 1, 2), dtype=np.float32) / 255)
        with torch.no_grad():
            y = model(x).numpy().transpose(0, 2, 3, 1).clip(0, 1)
        outs += [np.uint8(np.round(v * 255)) for v in y[: len(images[i : i + FORWARD_BATCH])]]
    return outs


def test_demo2_dn_job_follows_the_reference(setup):
    model, bank, gt = setup
    t, left, size = ROI
    # two blocks: one next to the ROI (inside the receptive field), one far away. Full-image mode,
    # so that every forward pass is the same computation as the reference's (crop mode agrees to
    # float32 rounding, see BENCHMARKS.md)
    grid = BlockGrid(256, 256, 1, 8)
    blocks = [18 * 32 + 11, 2 * 32 + 2]
    res = compute_cem(
        model,
        gt,
        "dn",
        ROI,
        block=8,
        patch_bank=bank,
        coarse=3,
        fine=4,
        tol=0.01,
        blocks=blocks,
        progress=False,
        batch_size=8,
        mode="full",
        forward_batch=FORWARD_BATCH,
    )
    # the reference's noisy input
    img = gt / 255.0
    np.random.seed(0)
    gauss = np.random.normal(0, 50 / 255, img.shape)
    noisy = np.uint8(np.clip(gauss + img, 0, 1) * 255)
    assert (res.images["input"] == noisy).all()
    sr = _restore(model, [noisy])[0]
    m0 = _psnr(sr[t : t + size, left : left + size], gt[t : t + size, left : left + size])
    assert res.baseline_metric == pytest.approx(m0, abs=1e-6)
    assert res.roi_mask.sum() == 16  # the ROI's 4 x 4 blocks, left out of the counts
    patches = bank.patches
    for b in blocks:
        r, c = divmod(b, 32)
        y0, y1, x0, x1 = grid.box(b)

        def metrics(samples, b=b, y0=y0, y1=y1, x0=x0, x1=x1):
            inputs = []
            for sample in samples:
                rng = draw_rng(0, b, sample)
                idx = int(rng.integers(len(bank)))  # the uniform sampler's draw
                noise = rng.standard_normal((3, 8, 8)).astype(np.float32).transpose(1, 2, 0)
                patch = np.clip(patches[idx] / 255.0 + noise * (50 / 255), 0, 1)
                x = noisy.copy()
                x[y0:y1, x0:x1] = np.uint8(patch * 255)
                inputs.append(x)
            return [
                _psnr(out[t : t + size, left : left + size], gt[t : t + size, left : left + size])
                for out in _restore(model, inputs)
            ]

        coarse = metrics(range(3))
        if max(abs(m0 - m) for m in coarse) < 0.01:
            assert res.effect[r, c] == 0 and res.counts[r, c] == 3
            continue
        fine = metrics(range(3, 7))
        ce = m0 - np.mean(fine)
        assert res.effect_raw[r, c] == pytest.approx(ce, abs=1e-9)
        assert res.effect[r, c] == (0.0 if abs(ce) < 0.01 else pytest.approx(ce, abs=1e-9))
        assert res.counts[r, c] == 4
    far = divmod(blocks[1], 32)
    assert res.effect[far] == 0 and res.counts[far] == 3  # outside DnCNN's receptive field
