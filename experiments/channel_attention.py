"""Study 2 (paper, section 6.2): channel attention, a global mechanism, matters in SR and may be futile in DN.

    python experiments/channel_attention.py plan     # the maps, and the time they take here
    python experiments/channel_attention.py run      # resumable: finished maps are skipped
    python experiments/channel_attention.py report   # cem-report --finding channel_attention, then
                                                     # experiments/results/channel_attention.md

The seven RCAN variants of the embedded zoo (global average pooling, none, half of the blocks, local
pooling windows 4 and 16, adaptive pooling to 2x2 and 3x3; one small RCAN trained with one schedule)
on SR x4 and on DN sigma 50, at the paper's settings (block 8, T_c 3, T_f 50) over the held-out
population (monarch, barbara, kodim23: 128 px crops x two placed ROIs). Every variant's effect is
paired with the no-attention variant on the same unit, on each task; the claim is the contrast of the
two paired differences (SR minus DN), reported with its interval.

Paper scale (GPU, DIV2K-trained RCANs of your own): the same sweeps with your checkpoints,
``model=file model.path=...`` instead of ``model=zoo model.id=...``, ``image_crop=256`` or larger and
``device=cuda launcher=joblib hydra.launcher.n_jobs=<GPUs>``.
"""
from __future__ import annotations

import sys

from study_runner import Sweep, main

VARIANTS = ("global", "none", "half", "local4", "local16", "adaptive2", "adaptive3")
SWEEPS = [
    Sweep("study_ca_dn", [f"rcan_{v}_dn_s50" for v in VARIANTS], ["model=zoo", "task=dn", "task.sigma=50"],
          {"*": 60.0}),
    Sweep("study_ca_sr", [f"rcan_{v}_sr_x4" for v in VARIANTS], ["model=zoo", "task=sr", "task.scale=4"],
          {"*": 25.0}),
]


def report() -> int:
    from study_report import write_study

    return write_study("channel_attention", [s.name for s in SWEEPS])


if __name__ == "__main__":
    sys.exit(main("channel_attention", SWEEPS, report, doc=__doc__))
