"""Study 2 (paper, section 6.2): channel attention, a global mechanism, matters in SR and may be futile in DN.

    python experiments/channel_attention.py plan     # the maps, and the time they take here
    python experiments/channel_attention.py run      # resumable: finished maps are skipped
    python experiments/channel_attention.py report   # cem-report --finding channel_attention, then
                                                     # experiments/results/channel_attention.md

The seven RCAN variants of the embedded zoo (global average pooling, none, half of the blocks, local
pooling windows 4 and 16, adaptive pooling to 2x2 and 3x3; one small RCAN trained with one schedule)
on SR x4 and on DN sigma 50, at the paper's settings (block 8, T_c 3, T_f 50) over the held-out
population (the six held-out pictures x four 128 px crops x two placed ROIs: 48 units). Every variant's effect is
paired with the no-attention variant on the same unit, on each task; the claim is the contrast of the
two paired differences (SR minus DN), reported with its interval.

Paper scale (GPU, DIV2K-trained RCANs of your own): the same sweeps with your checkpoints,
``model=file model.path=...`` instead of ``model=zoo model.id=...``, ``image_crop=256`` or larger and
``device=cuda launcher=joblib hydra.launcher.n_jobs=<GPUs>``.
"""

from __future__ import annotations

import sys

from study_runner import Sweep, main

from cem_lab.compose.zoo_recipes import select

#: the seven RCAN attention variants on each task, from the zoo's recipes
ZOO = [r.name for r in select(study="channel_attention")]
SWEEPS = [
    Sweep(
        "study_ca_dn_48u",
        [m for m in ZOO if m.endswith("_dn_s50")],
        ["model=zoo", "task=dn", "task.sigma=50"],
        {"*": 60.0},
    ),
    Sweep(
        "study_ca_sr_48u",
        [m for m in ZOO if m.endswith("_sr_x4")],
        ["model=zoo", "task=sr", "task.scale=4"],
        {"*": 25.0},
    ),
]


#: read from the tables of the report (python experiments/channel_attention.py report, 2026-12-01)
NOTES = """
- **What the verdict says.** At this scale, attention of any kind changes neither the share of helpful
  blocks nor their summed effect, on SR or on DN: every paired difference of the rule's two measures
  holds 0, and so does every contrast of them. The paper's contrast is not seen here; it is not contradicted
  either (DN is as flat as the paper says, but SR is flat too).
- **DN is flat indeed.** The seven variants' positive shares on DN are 0.0681 to 0.0694, their ROI
  PSNRs 27.28 to 27.61 dB; the ROI of the no-attention RCAN depends on a sixth to a fifth of the input
  (2,610 to 3,364 of 16,384 px, the gradient probe), with global pooling on all of it, and the extra reach is not used.
- **SR, a fifth of a pixel.** Outside the rule: on SR, attention moves the CE mass slightly away from
  the ROI (CE-weighted mean distance +0.11 to +0.18 px against no attention; adaptive 3x3: +0.177
  [0.0721, 0.421] px, its contrast with DN +0.175 [0.0569, 0.373] px). Real, but far below a block (8 px).
  Local pooling over 4 px costs ROI PSNR on SR (-0.244 [-0.435, -0.0818] dB against no attention).
- **Confounds.** The RCANs are tiny (width 16, 2 groups x 2 blocks, reduction 4) and trained briefly on
  CPU; the paper's RCAN has 10 x 20 blocks of 64 channels trained on DIV2K, where attention has far more
  to modulate. SR effects are larger than DN effects in dB (sums 21.3 to 22.5 vs 3.97 to 4.26 dB), which
  is why the rule reads the shares; three images give wide intervals (expanded percentiles).
- **Left out.** Real squeeze-excitation networks against plain kin: the catalogue has no such pair
  (Real-CUGAN's se and pro graphs both have SE blocks; waifu2x CUNet has SE but differs from upconv_7
  in task, depth and U-Net design), so there is no clean contrast to draw from it.
"""


def report() -> int:
    from study_report import write_study

    return write_study("channel_attention", [s.name for s in SWEEPS], NOTES)


if __name__ == "__main__":
    sys.exit(main("channel_attention", SWEEPS, report, doc=__doc__))
