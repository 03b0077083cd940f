"""Study 1 (paper, section 6.1): more input information (a larger receptive field) does not always help.

    python experiments/receptive_field.py plan     # the maps, and the time they take here
    python experiments/receptive_field.py run      # resumable: finished maps are skipped
    python experiments/receptive_field.py report   # cem-report --finding receptive_field, then
                                                   # experiments/results/receptive_field.md

The embedded zoo's one-axis sweeps, FSRCNN and EDSR (depths 2, 4, 8, 16 x widths; SR x4, one
schedule), and real networks of the pretrained catalogue that see further (SRVGG compact, waifu2x
upconv_7, Real-CUGAN), mapped at the paper's settings (block 8, T_c 3, T_f 50) over the held-out
population (monarch, barbara, kodim23: 128 px crops x two placed ROIs). Per model: the effective
distance (farthest significant block), the negative share and the ROI PSNR, with intervals; across
models, the rank correlation of each with depth, width and parameter count (bootstrap over the images).
The 23-block RRDBNets (Real-ESRGAN, RealSR) run in full-image mode at about 1 s a pass here: about
15 min a map, 1.5 h for the population; they are a GPU job (``real_rrdb`` below, left out of ``run``
unless ``--with-rrdb``).

Paper scale (GPU, DIV2K): ``image_crop=256`` or larger, ``device=cuda launcher=joblib
hydra.launcher.n_jobs=<GPUs>``, your own families with ``model=file model.path=a,b,...``.
"""
from __future__ import annotations

import sys

from study_runner import Sweep, main

DEPTHS, FSRCNN_WIDTHS, EDSR_WIDTHS = (2, 4, 8, 16), (16, 32, 56), (8, 16, 32)
ZOO = [f"fsrcnn_d{d}_w{w}_x4" for d in DEPTHS for w in FSRCNN_WIDTHS] + \
      [f"edsr_d{d}_w{w}_x4" for d in DEPTHS for w in EDSR_WIDTHS]
COST = {**{f"edsr_d16_w{w}_x4": 45.0 for w in EDSR_WIDTHS}, **{f"edsr_d8_w{w}_x4": 20.0 for w in EDSR_WIDTHS},
        "*": 8.0}
SWEEPS = [
    Sweep("study_rf_zoo", ZOO, ["model=zoo", "task=sr", "task.scale=4"], COST),
    Sweep("study_rf_real_x4", ["realesr-animevideov3-x4", "realcugan-se-x4"],
          ["model=pretrained", "task=sr", "task.scale=4"], {"*": 60.0}),
    Sweep("study_rf_real_x2", ["waifu2x-photo-x2"], ["model=pretrained", "task=sr", "task.scale=2"], {"*": 30.0}),
]
RRDB = Sweep("study_rf_real_rrdb", ["realsr-df2k-x4", "realesrgan-x4plus"],
             ["model=pretrained", "task=sr", "task.scale=4"], {"*": 900.0})


def report() -> int:
    from study_report import write_study

    return write_study("receptive_field", [s.name for s in SWEEPS + [RRDB]])


if __name__ == "__main__":
    argv = sys.argv[1:]
    sweeps = SWEEPS + [RRDB] if "--with-rrdb" in argv else SWEEPS
    sys.exit(main("receptive_field", sweeps, report, [a for a in argv if a != "--with-rrdb"], doc=__doc__))
