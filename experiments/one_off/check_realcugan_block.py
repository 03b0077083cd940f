"""An outside check of one Real-CUGAN se x4 map of the receptive-field study (experiments/results/
receptive_field.md, "Real networks"): does replacing one far block really raise the ROI's PSNR?

    python experiments/one_off/check_realcugan_block.py      # after python experiments/receptive_field.py run

It reads the finished run folder (kodim23, second placed ROI), and without the estimator's code
replaces the 2x2 LR pixels under one 8 px output block (row 15, column 0: about 90 px from the ROI) by
10 patches of the embedded bank, each shrunk x4 with PIL's bicubic, runs the network and measures the
ROI PSNR (RGB, uint8-rounded output) and the ROI's high-frequency detail (std of output minus its
Gaussian blur, sigma 1.5).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from cem_lab.models.pretrained import load_pretrained
from cem_lab.patches import PatchBank

SWEEP = Path(__file__).resolve().parents[2] / "runs" / "sweeps" / "cem" / "study_rf_real_x4"
BLOCK, DRAWS = (15, 0), 10


def main() -> int:
    runs = [d for d in sorted(SWEEP.glob("*realcugan-se-x4*")) if "kodim23" in d.name and "index=1" in d.name]
    if not runs or not (runs[0] / "cem.npz").is_file():
        print(
            f"no finished Real-CUGAN run of kodim23's second ROI under {SWEEP}: run "
            "python experiments/receptive_field.py run first",
            file=sys.stderr,
        )
        return 2
    run = runs[0]
    with np.load(run / "cem.npz") as z:
        top, left, size = (int(v) for v in z["roi"])
        effect = z["effect"]
    lr = np.asarray(Image.open(run / "images" / "input.png"), dtype=np.float32) / 255
    hr = np.asarray(Image.open(run / "images" / "target.png"), dtype=np.float32) / 255
    net = load_pretrained("realcugan-se-x4").eval()
    roi = (slice(top, top + size), slice(left, left + size))

    def forward(x):
        with torch.no_grad():
            y = net(torch.from_numpy(x).permute(2, 0, 1)[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        return np.round(y * 255) / 255

    def psnr(y):
        return 10 * np.log10(1 / ((y[roi] - hr[roi]) ** 2).mean())

    def detail(y):
        a = y[roi]
        return float(np.std(a - gaussian_filter(a, (1.5, 1.5, 0))))

    y0 = forward(lr)
    bank = PatchBank.embedded(patch_size=8, count=10000, seed=0).patches
    rng = np.random.default_rng(0)
    ce, details, change = [], [], []
    for k in rng.integers(0, len(bank), DRAWS):
        x = lr.copy()
        small = Image.fromarray(np.asarray(bank[k]).astype(np.uint8)).resize((2, 2), Image.BICUBIC)
        x[BLOCK[0] * 2 : BLOCK[0] * 2 + 2, BLOCK[1] * 2 : BLOCK[1] * 2 + 2] = np.asarray(small, np.float32) / 255
        y = forward(x)
        ce.append(psnr(y0) - psnr(y))
        details.append(detail(y))
        change.append(float(np.abs(y - y0)[roi].mean()))
    print(f"run: {run.name}")
    print(
        f"ROI PSNR unperturbed {psnr(y0):.2f} dB; block {BLOCK}: map CE {effect[BLOCK]:.2f} dB, "
        f"direct CE {np.mean(ce):.2f} dB over {DRAWS} patches (from {min(ce):.2f} to {max(ce):.2f})"
    )
    print(
        f"ROI detail (high-pass std): unperturbed {detail(y0):.4f}, intervened {np.mean(details):.4f}, "
        f"truth {detail(hr):.4f}; mean |change| in the ROI {255 * np.mean(change):.1f}/255"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
