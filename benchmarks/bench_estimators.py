"""Estimators at equal precision: the reference coarse-to-fine estimator and the adaptive one against a
long exhaustive run (T = 500 draws per block) of the same job, on the paper's DN demo::

    python benchmarks/bench_estimators.py run --job demo256 --estimator exhaustive500 --out benchmarks/out/est
    python benchmarks/bench_estimators.py run --job demo256 --estimator reference --out benchmarks/out/est
    python benchmarks/bench_estimators.py run --job demo256 --estimator adaptive --out benchmarks/out/est
    python benchmarks/bench_estimators.py report benchmarks/out/est

Jobs (KAIR's DnCNN, the DIV2K patch bank, DN sigma 50, block 8, tol 0.01 dB, seed 0):
``demo256``: ``demo_2.png``, ROI (152, 96, 32); ``crop128``: its rows 96..224 and columns 64..192,
ROI (56, 32, 32). Each run is its own process (its peak RSS is its own) and writes a resumable run
folder ``<out>/<job>/<estimator>/``: an interrupted run (the T = 500 one is long on a CPU) resumes
when the same command is given again. The report compares every estimator's map with the T = 500
map outside the ROI: class agreement and max |delta CE|, with forward passes, pixels pushed through
the network, wall time and peak RSS. ``adaptive_block`` is the adaptive estimator with per-block
recompute (``recompute="block_crop"``).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
JOBS = {"demo256": dict(rows=None, roi=(152, 96, 32)), "crop128": dict(rows=(96, 224, 64, 192), roi=(56, 32, 32))}
ESTIMATORS = {
    "reference": dict(estimator="coarse_to_fine", coarse=3, fine=50),
    "adaptive": dict(estimator="adaptive", coarse=3),
    "adaptive_block": dict(estimator="adaptive", coarse=3, recompute="block_crop"),
    "adaptive_incremental": dict(estimator="adaptive", coarse=3, recompute="incremental"),
    "adaptive_incremental_roi_coarse": dict(estimator="adaptive", coarse=3, recompute="incremental",
                                            estimator_options={"roi_blocks": "coarse"}),
    "reference_incremental": dict(estimator="coarse_to_fine", coarse=3, fine=50, recompute="incremental"),
    # the truth: incremental recompute gives the ROI-crop outputs to float rounding, 4x faster
    "exhaustive500": dict(estimator="exhaustive", samples=500, recompute="incremental"),
}


def _image(job: str) -> np.ndarray:
    from cem_lab.images import load_image

    img = load_image(DATA / "demo_images" / "demo_2.png")
    box = JOBS[job]["rows"]
    return img if box is None else np.ascontiguousarray(img[box[0]:box[1], box[2]:box[3]])


def _forward_shape(meta: dict, input_shape) -> tuple[int, int]:
    """The input size the network ran on: the dependency crop in crop mode, else the whole input."""
    if meta.get("mode") == "crop":
        y0, y1, x0, x1 = meta["dependency_region"]["crop"]
        return y1 - y0, x1 - x0
    return tuple(input_shape)


def run(args) -> None:
    from cem_lab import compute_cem
    from cem_lab.models import DnCNN, load_weights
    from cem_lab.patches import PatchBank

    torch.set_num_threads(args.threads)
    model = DnCNN()
    load_weights(model, DATA / "dncnn_color_blind.pth")
    bank = PatchBank.load(DATA / "div2k_patches8.npz")
    folder = Path(args.out) / args.job / args.estimator
    start = time.perf_counter()
    res = compute_cem(model.eval(), _image(args.job), "dn", JOBS[args.job]["roi"], block=8, tol=0.01, seed=0,
                      patch_bank=bank, batch_size=32, forward_batch=8, output_dir=folder, figures=False,
                      progress=not args.quiet, **ESTIMATORS[args.estimator])
    wall = time.perf_counter() - start
    h, w = _forward_shape(res.meta, res.input_shape)
    bench = {"job": args.job, "estimator": args.estimator, "wall_s": wall,
             "resumed": any("resumed" in n for n in res.meta["notes"]),
             "forward_passes": res.meta["forward_passes"], "pixels": int(res.meta["pixels_pushed"]),
             "input_hw": [h, w], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
             "machine": f"{platform.machine()}, torch {torch.__version__}, {args.threads} threads"}
    (folder / "bench.json").write_text(json.dumps(bench, indent=2) + "\n")
    print(json.dumps(bench))


def report(args) -> None:
    from cem_lab.causal.result import CEMResult

    root = Path(args.out)
    print("| job | estimator | forward passes | pixels | wall time | peak RSS | classes = T500 (outside ROI) | "
          "max abs delta CE vs T500 (dB) |")
    print("|---|---|---|---|---|---|---|---|")
    for job in JOBS:
        truth_dir = root / job / "exhaustive500"
        if not (truth_dir / "cem.npz").is_file():
            print(f"| {job} | (no finished T = 500 run in {truth_dir}) | | | | | | |", file=sys.stderr)
            continue
        truth = CEMResult.load(truth_dir)
        outside = ~truth.roi_mask
        for est in ESTIMATORS:
            d = root / job / est
            if not (d / "bench.json").is_file():
                continue
            b = json.loads((d / "bench.json").read_text())
            r = CEMResult.load(d)
            if r.meta.get("pixels_pushed") is not None:  # counted by the runner (preparation included)
                b["pixels"], est_mark = int(r.meta["pixels_pushed"]), ""
            else:  # runs from before the runner counted pixels: forward passes x the crop
                h, w = _forward_shape(r.meta, r.input_shape)
                b["pixels"], est_mark = int(r.meta["forward_passes"]) * h * w, " (est.)"
            agree = float((r.classification[outside] == truth.classification[outside]).mean())
            diff = float(np.nanmax(np.abs(r.effect_raw[outside] - truth.effect_raw[outside])))
            note = " (resumed: time of the last part)" if b["resumed"] else ""
            print(f"| {job} | {est} | {b['forward_passes']:,} | {b['pixels'] / 1e6:.1f} M{est_mark} | {b['wall_s']:.0f} s{note} | "
                  f"{b['peak_rss_mb']:.0f} MB | {agree:.2%} | {diff:.4f} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--job", choices=sorted(JOBS), required=True)
    r.add_argument("--estimator", choices=sorted(ESTIMATORS), required=True)
    r.add_argument("--out", default="benchmarks/out/estimators")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--quiet", action="store_true")
    rep = sub.add_parser("report")
    rep.add_argument("out", nargs="?", default="benchmarks/out/estimators")
    args = p.parse_args(argv)
    run(args) if args.cmd == "run" else report(args)


if __name__ == "__main__":
    main()
