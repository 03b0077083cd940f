"""Incremental recompute against the ROI crop, on a quiet machine and with a second busy process.

Users run maps on laptops and shared nodes, where another process competes for the cores. This
script times the DnCNN demo job both ways, first alone and then beside a process that keeps every
core busy (a loop of float32 matrix products on as many threads as torch uses), in one run::

    CEM_LAB_DATA=../shared/data python benchmarks/bench_incremental_contention.py [--threads 2]

Job: KAIR's colour blind DnCNN, demo_2.png (256 x 256), DN sigma 50, ROI (152, 96, 32), block 8,
coarse-to-fine T_c = 3, T_f = 10, seed 0, the DIV2K patch bank. Reported per row: wall time, its
preparation (and its share of the wall time) and map parts, forward passes, the path the map ran on
(incremental recompute is kept only when no slower than the crop on its check) with its CPU threads as
probed, and for incremental recompute the largest |delta CE| from the ROI crop's map of the same
condition and whether the classes are equal.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from cem_lab import compute_cem
from cem_lab.images import load_image
from cem_lab.models import DnCNN, load_weights
from cem_lab.patches import PatchBank

BUSY = "import torch, sys; torch.set_num_threads(int(sys.argv[1])); a = torch.rand(1024, 1024)\nwhile True: a @ a"


@contextmanager
def busy_process(threads: int, on: bool = True) -> Iterator[None]:
    """The block runs beside a second process busy on ``threads`` cores (matrix products), when ``on``."""
    if not on:
        yield
        return
    busy = subprocess.Popen([sys.executable, "-c", BUSY, str(threads)])
    time.sleep(2.0)  # its threads running before the first timing
    try:
        yield
    finally:
        busy.kill()
        busy.wait()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=os.environ.get("CEM_LAB_DATA", str(Path(__file__).parents[2] / "shared" / "data")))
    args = p.parse_args(argv)
    data = Path(args.data)
    if not (data / "dncnn_color_blind.pth").is_file():
        sys.exit(f"the DnCNN weights are not in {data}: pass --data or set CEM_LAB_DATA")
    torch.set_num_threads(args.threads)
    model = DnCNN()
    load_weights(model, data / "dncnn_color_blind.pth")
    model.eval()
    bank = PatchBank.load(data / "div2k_patches8.npz")
    image = load_image(data / "demo_images" / "demo_2.png")
    kw = dict(block=8, coarse=3, fine=10, seed=0, patch_bank=bank, progress=False, figures=False)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads"
    )
    print(
        "| machine | recompute | ran on | wall s | prepare s | share | map s | passes | threads | "
        "max abs delta CE vs crop (dB) | classes equal |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for condition in ("quiet", "one busy process"):
        with busy_process(args.threads, on=condition != "quiet"):
            res = {}
            for rc in ("roi_crop", "incremental"):
                t = time.perf_counter()
                res[rc] = r = compute_cem(model, image, "dn", (152, 96, 32), recompute=rc, **kw)
                wall = time.perf_counter() - t
                tm = r.meta["timings"]
                if rc == "incremental":
                    d = float(np.nanmax(np.abs(r.effect_raw - res["roi_crop"].effect_raw)))
                    same = bool((r.classification == res["roi_crop"].classification).all())
                    extra = f"{d:.2g} | {same}"
                else:
                    extra = "- | -"
                used = ran_on(r)
                threads = (
                    r.meta["incremental_check"]["threads"]["chosen"]
                    if used == "incremental"
                    else r.meta.get("crop_threads", {}).get("chosen", args.threads)
                )
                print(
                    f"| {condition} | {rc} | {used} | {wall:.1f} | {tm['prepare_s']:.1f} | "
                    f"{tm['prepare_s'] / wall:.0%} | {tm['run_s']:.1f} | {r.meta['forward_passes']} | {threads} "
                    f"| {extra} |",
                    flush=True,
                )


def ran_on(r) -> str:
    """The path the map ran on: incremental recompute, or the ROI crop (also where incremental was declined)."""
    notes = r.meta["notes"]
    if any(n.startswith("incremental recompute") and "not used" not in n for n in notes):
        return "incremental"
    return "roi_crop"


if __name__ == "__main__":
    main()
