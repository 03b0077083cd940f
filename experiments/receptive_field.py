"""Study 1 (paper, section 6.1): more input information (a larger receptive field) does not always help.

    python experiments/receptive_field.py plan     # the maps, and the time they take here
    python experiments/receptive_field.py run      # resumable: finished maps are skipped
    python experiments/receptive_field.py report   # cem-report --finding receptive_field, then
                                                   # experiments/results/receptive_field.md

The embedded zoo's one-axis sweeps, FSRCNN and EDSR (depths 2, 4, 8, 16 x widths; SR x4, one
schedule), and real networks of the pretrained catalogue that see further (SRVGG compact, waifu2x
upconv_7, Real-CUGAN), mapped at the paper's settings (block 8, T_c 3, T_f 50) over the held-out
population (the six held-out pictures x four 128 px crops x two placed ROIs: 48 units; the real networks
the first population: monarch, barbara, kodim23, centre crops x two ROIs). Per model: the effective
distance (farthest significant block), the negative share and the ROI PSNR, with intervals; across
models, the rank correlation of each with depth, width and parameter count (bootstrap over the images).
The 23-block RRDBNets (Real-ESRGAN, RealSR) see the whole crop, so every block is refined (about
13,600 passes a map, as Real-CUGAN's took: 800 to 950 s at 0.065 s a pass); at their 17 times
Real-CUGAN's forward time (experiments/results/pretrained.md) that is about 4 h a map here, so they are a GPU
job (``RRDB`` below, left out of ``run`` unless ``--with-rrdb``).

Paper scale (GPU, DIV2K): ``image_crop=256`` or larger, ``device=cuda launcher=joblib
hydra.launcher.n_jobs=<GPUs>``, your own families with ``model=file model.path=a,b,...``.
"""

from __future__ import annotations

import sys

from study_runner import FIRST_POPULATION, FIRST_UNITS, Sweep, main

from cem_lab.compose.zoo_recipes import EDSR_WIDTHS, select

ZOO = [r.name for r in select(study="receptive_field")]  # the FSRCNN and EDSR depth x width families
COST = {**{f"edsr_d16_w{w}_x4": 45.0 for w in EDSR_WIDTHS}, **{f"edsr_d8_w{w}_x4": 20.0 for w in EDSR_WIDTHS}, "*": 8.0}
#: the real networks keep the first population (6 units): 48 of Real-CUGAN's 15-minute maps are a GPU's job
_FIRST = dict(population=FIRST_POPULATION, units=FIRST_UNITS)
SWEEPS = [
    Sweep("study_rf_zoo_48u", ZOO, ["model=zoo", "task=sr", "task.scale=4"], COST),
    Sweep(
        "study_rf_real_x4",
        ["realesr-animevideov3-x4", "realcugan-se-x4"],
        ["model=pretrained", "task=sr", "task.scale=4"],
        {"realcugan-se-x4": 900.0, "*": 120.0},
        **_FIRST,
    ),
    Sweep(
        "study_rf_real_x2", ["waifu2x-photo-x2"], ["model=pretrained", "task=sr", "task.scale=2"], {"*": 30.0}, **_FIRST
    ),
]
RRDB = Sweep(
    "study_rf_real_rrdb",
    ["realsr-df2k-x4", "realesrgan-x4plus"],
    ["model=pretrained", "task=sr", "task.scale=4"],
    {"*": 14400.0},
    **_FIRST,
)


#: read from the tables of the report (python experiments/receptive_field.py report, 2026-12-08: the retrained
#: families on 48 units of 6 held-out pictures, intervals over pictures)
NOTES = """
- **What the verdict says.** Depth buys reach in both families (Spearman's rho of depth with the
  effective distance: FSRCNN 0.93 [0.78, 0.97], EDSR 0.95 [0.35, 0.97]); width does not (FSRCNN 0.059
  [-0.089, 0.21], EDSR -0.12 [-0.77, 0.33]). With Holm's correction over the rule's 28 tests, 2 of the 14
  one-axis comparisons gain reach: FSRCNN depth 2 -> 16 at width 16 (+9.27 [6.7, 11.9] px) and at width
  56 (+11.2 [7.78, 15.1] px). Neither loses quality that the held-out record can see (+0.168 [-0.0154,
  0.345] and -0.0291 [-0.198, 0.0597] dB), so none supports the finding and none contradicts it: the
  verdict is inconclusive. Read alone at 5 % each, the tests give 5 reach gains, 1 supporting comparison
  (FSRCNN depth 2 -> 16 at width 32: +5.57 [1.7, 9.3] px and -0.258 [-0.362, -0.157] dB held-out, the
  comparison that supported the finding on 6 units) and 2 contradicting ones (EDSR depth 2 -> 16 at
  widths 8 and 32: +3.21 [1.35, 4.81] and +2.88 [0.497, 5.04] px of reach with +0.532 [0.241, 0.875] and
  +0.385 [0.109, 0.656] dB held-out): inconclusive too. What the population could have seen (the
  median half-width of the intervals): the reach to +/-2.44 px (+/-5.74 px at Holm's strictest step),
  the held-out PSNR to +/-0.233 dB (+/-0.549 dB); a quality cost of extra reach smaller than about a
  quarter of a dB is not ruled out, and in EDSR the deeper networks are the better ones.
- **More reach comes with more negative effect.** This is the firmest result of the study: across the 24
  models the effective distance ranks with the negative share (rho 0.94 [0.69, 0.95]) and with a more
  negative sum of harmful CE (-0.9 [-0.93, -0.62]); depth ranks with the negative share in both families
  (FSRCNN 0.93 [0.58, 0.97], EDSR 0.95 [0.39, 0.97]). The
  harmful share stays small (0.6 to 2.8 % of the blocks outside the ROI): the extra reach brings a few
  blocks that hurt, not a change of sign.
- **What buys PSNR is not reach.** In EDSR, width 8 -> 32 raises the held-out PSNR at every depth (+0.527
  to +0.674 dB, every interval above 0) and the ROI PSNR (+0.49 to +0.621 dB, every interval above 0)
  while the reach does not move (-1 to -0.297 px, every interval across 0). Over the 24 models the
  parameter count ranks with the ROI PSNR (rho 0.75 [0.52, 0.8]) and not with the reach (0.096 [-0.21,
  0.36]); within EDSR, 0.96 [0.75, 0.99].
- **The image bounds the reach.** On 128 px crops (a 32 px input at x4) the ROI of a depth-16 EDSR
  depends on the whole input (depth 8: 93 %; FSRCNN depth 16: 89 %; depth 2: 26 to 40 %, the gradient
  probe), so the deepest networks could reach further than the crop lets them. The effective distances
  (33.5 to 45.5 px) stay below the crop's half-diagonal, so at this scale the bound is on what could be
  seen more than on what was used; the paper-scale run (256 px or larger, GPU) removes it.
- **Real networks** (reported beside the families, not pooled with them: other data, objectives and
  scales). They ran on the first population (3 photographs' centre crops x 2 ROIs, 6 units): 48 of
  Real-CUGAN's 15-minute full-image maps are a GPU's job.
  - *waifu2x upconv_7 photo x2* (552,483 parameters, PSNR-trained on photos) is the most local network
    of the study (effective distance 28.6 [28.3, 30.5] px), has almost no harmful block (negative share
    0.00139 [0, 0.00417]) and beats bicubic by 3.1 dB PSNR-Y (32.81 against 29.68, experiments/results/pretrained.md).
  - *SRVGG compact* (realesr-animevideov3-x4, 621,424) reaches 65.7 [52.2, 74.4] px, further than any
    zoo model (33.5 to 45.5), and a fifth of its blocks hurt the ROI (negative share 0.21 [0.00417,
    0.558]).
  - *Real-CUGAN se x4* (1,406,812; its squeeze-excitation blocks pool over the whole input, so it ran
    in full-image mode) depends on the whole crop (124 [110, 142] px) and most blocks hurt the ROI
    (negative share 0.853 [0.7, 0.988]; up to -3.5 dB for one block). I checked this outside the
    estimator (`python experiments/one_off/check_realcugan_block.py`): replacing the 2x2 LR pixels under one
    output block about 90 px from kodim23's second ROI with 10 bank patches (PIL bicubic) raised the ROI
    PSNR by 1.41 dB on average (0.08 to 3.58 dB); the map says 1.72. The change is not a smoothing: the
    intervened ROIs have more high-frequency detail than the unperturbed one (high-pass std 0.0366
    against 0.0351; the truth's 0.0436), with a mean change of 1.5/255 per pixel. Why the unperturbed
    input gives the worse ROI I did not establish. Its LR input here is 32x32, so one block is 1/256 of
    what the SE blocks pool; on larger images each block weighs less.
  - Both anime GAN networks lose to bicubic on PSNR-Y (SRVGG 25.25, Real-CUGAN 25.05 against 25.59).
    So reach and harm rise together and PSNR falls, the finding's pattern, but objective, training
    domain and scale (x2 against x4) change with the reach: this is an observation, not a controlled
    comparison. The 23-block RRDBNets (Real-ESRGAN, RealSR) need every block refined (their receptive
    field covers the crop): at about 17 times Real-CUGAN's forward time, about 4 h a map here, so they
    are a GPU job (`--with-rrdb`).
- **Confounds.** One schedule for all models of a family (the authors' design), small networks trained
  on CPU (on the 19-picture `train` pool); 6 pictures: their 24 crops share each picture's content, so
  the intervals resample pictures (expanded percentiles for 6), and the held-out record is the same 6
  pictures whole; the reach is measured in 8 px blocks, so differences below a block are noise of the
  grid.
"""


def report() -> int:
    from study_report import write_study

    return write_study("receptive_field", [s.name for s in SWEEPS + [RRDB]], NOTES)


if __name__ == "__main__":
    argv = sys.argv[1:]
    sweeps = SWEEPS + [RRDB] if "--with-rrdb" in argv else SWEEPS
    sys.exit(main("receptive_field", sweeps, report, [a for a in argv if a != "--with-rrdb"], doc=__doc__))
