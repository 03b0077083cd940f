"""Crop mode for a window-attention model: the embedded zoo's SwinLite DN model, full image vs crop.

SwinLite declares its window grid (``crop_multiple``); the runner snaps the dependency crop to it,
so the crop is cut into the same windows as the whole image and passes the crop-vs-full check.
This script times one job both ways in one process and checks that the two maps agree::

    python benchmarks/bench_window_crop.py [--model swinlite_dn] [--threads 2]

Job: the embedded 256 x 256 ``chelsea`` crop, DN sigma 50, ROI (152, 96, 32), block 16,
coarse-to-fine T_c = 1, T_f = 2 (reduced so that the full-image run takes minutes on a CPU), seed 0,
the default (embedded) patch bank.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from cem_lab import compute_cem
from cem_lab.models.embedded import embedded_demo_image
from cem_lab.models.zoo import load_zoo_model


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="swinlite_dn")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_zoo_model(args.model).eval()
    image = embedded_demo_image()
    kw = dict(block=16, coarse=1, fine=2, seed=0, progress=False, figures=False)
    rows = {}
    for mode in ("auto", "full"):
        start = time.perf_counter()
        res = compute_cem(model, image, "dn", (152, 96, 32), mode=mode, **kw)
        rows[mode] = (time.perf_counter() - start, res)
    (t_auto, auto), (t_full, full) = rows["auto"], rows["full"]
    print(
        f"machine: {platform.machine()}, torch {torch.__version__}, {args.threads} threads; "
        f"model {args.model} (crop_multiple {getattr(model, 'crop_multiple', 1)})"
    )
    print("| mode | wall time | forward passes | region |")
    print("|---|---|---|---|")
    for name, (t, res) in (("full image", rows["full"]), ("auto", rows["auto"])):
        region = res.meta.get("dependency_region") or {}
        crop = region.get("crop") if res.meta["mode"] == "crop" else None
        print(
            f"| {name} (ran: {res.meta['mode']}) | {t:.1f} s | {res.meta['forward_passes']} | "
            f"{f'crop rows {crop[0]}-{crop[1]}, cols {crop[2]}-{crop[3]}' if crop else 'whole 256x256 input'} |"
        )
    diff = float(np.abs(auto.effect - full.effect).max())
    print(
        f"speed-up: {t_full / t_auto:.1f}x; max |CE(auto) - CE(full)| = {diff:.2e} dB "
        f"(max |CE| {float(np.abs(full.effect).max()):.2f} dB); "
        f"same classification: {bool((auto.classification == full.classification).all())}"
    )


if __name__ == "__main__":
    main()
