"""Study 3 (paper, section 6.3): multi-task training pushes a network toward local information.

    python experiments/multitask.py plan     # the maps, and the time they take here
    python experiments/multitask.py run      # resumable: finished maps are skipped
    python experiments/multitask.py report   # cem-report --finding multitask, then
                                             # experiments/results/multitask.md

SRResNet, SwinLite and RCAN of the embedded zoo, each trained on one task (SR x4, DN sigma 50, DR
medium) and on the mix of the three, mapped on each task at the paper's settings (block 8, T_c 3,
T_f 50) over the held-out population (monarch, barbara, kodim23: 128 px crops x two placed ROIs).
Single-task and mixed are paired on the same unit; the PSNR gap of each pair (ROI and held-out) is
reported beside every effect difference, and "more local" is told from "weaker" by the CE-weighted
mean distance and the share of the CE mass near the ROI, which do not scale with the effect's size.

Paper scale (GPU, DIV2K): ``model=file model.path=single.safetensors,mixed.safetensors`` per task,
``image_crop=256`` or larger, ``device=cuda launcher=joblib hydra.launcher.n_jobs=<GPUs>``.
"""
from __future__ import annotations

import sys

from study_runner import Sweep, main

FAMILIES = ("srresnet", "swinlite", "rcan")
TASKS = {"sr": ["task=sr", "task.scale=4"], "dn": ["task=dn", "task.sigma=50"], "dr": ["task=dr"]}
COST = {"rcan_sr": 80.0, "rcan_dn": 80.0, "rcan_dr": 80.0, "rcan_mixed": 80.0, "swinlite_sr": 18.0,
        "swinlite_dn": 18.0, "swinlite_dr": 18.0, "swinlite_mixed": 18.0, "*": 9.0}
SWEEPS = [Sweep(f"study_mt_{t}", [m for f in FAMILIES for m in (f"{f}_{t}", f"{f}_mixed")], ["model=zoo", *args],
                COST) for t, args in TASKS.items()]


def report() -> int:
    from study_report import write_study

    return write_study("multitask", [s.name for s in SWEEPS])


if __name__ == "__main__":
    sys.exit(main("multitask", SWEEPS, report, doc=__doc__))
