"""Estimators and recompute modes at equal precision: the reference coarse-to-fine estimator and the
adaptive one, on the ROI crop, on per-block crops and with incremental recompute, against a long
exhaustive run (T = 500 draws per block) of the same job, on the paper's DN demo::

    python benchmarks/bench_estimators.py run --job demo256 --estimator exhaustive500
    python benchmarks/bench_estimators.py run --job demo256 --estimator reference
    python benchmarks/bench_estimators.py run --job demo256 --estimator adaptive_incremental
    python benchmarks/bench_estimators.py authors --job demo256     # the authors' code, forward-bound
    python benchmarks/bench_estimators.py report

Jobs (DN sigma 50, the DIV2K patch bank, block 8, tol 0.01 dB, seed 0): ``demo256``: KAIR's DnCNN on
``demo_2.png``, ROI (152, 96, 32); ``crop128``: its rows 96..224 and columns 64..192, ROI (56, 32, 32);
``global128``: the same crop with the zoo's RCAN with global channel attention (every output depends
on the whole input: full-image mode; no T = 500 run, so it is compared with the reference estimator).
Each run is its own process (its peak RSS is its own) and writes a resumable run folder
``<out>/<job>/<estimator>/``: an interrupted run (the T = 500 one is long on a CPU) resumes when the
same command is given again. The report compares every estimator's map with the T = 500 map outside
the ROI: class agreement and max |delta CE|, with forward passes, pixels pushed through the network,
wall time, the ratio to the authors' code and peak RSS. Estimators: ``reference`` (T_c = 3, T_f = 50),
``adaptive`` (the defaults of conf/cem/adaptive.yaml), ``_block``: per-block crops
(``recompute=block_crop``), ``_incremental``: incremental recompute, ``_roi_coarse``: the ROI's own
blocks get their coarse draws only (``roi_blocks=coarse``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
JOBS = {
    "demo256": dict(rows=None, roi=(152, 96, 32)),
    "crop128": dict(rows=(96, 224, 64, 192), roi=(56, 32, 32)),
    # a global model (channel attention pools the whole image): full-image mode, no crop helps
    "global128": dict(rows=(96, 224, 64, 192), roi=(56, 32, 32), model="rcan_global_dn_s50"),
}
ESTIMATORS = {
    "reference": dict(estimator="coarse_to_fine", coarse=3, fine=50),
    "adaptive": dict(estimator="adaptive", coarse=3),
    "adaptive_block": dict(estimator="adaptive", coarse=3, recompute="block_crop"),
    "adaptive_roi_coarse": dict(estimator="adaptive", coarse=3, estimator_options={"roi_blocks": "coarse"}),
    "adaptive_incremental": dict(estimator="adaptive", coarse=3, recompute="incremental"),
    "adaptive_incremental_roi_coarse": dict(
        estimator="adaptive", coarse=3, recompute="incremental", estimator_options={"roi_blocks": "coarse"}
    ),
    # the cheapest rule: a settled class alone stops a block (classes as the reference, values less precise)
    "adaptive_class_incremental": dict(
        estimator="adaptive",
        coarse=3,
        recompute="incremental",
        estimator_options={"roi_blocks": "coarse", "settled_half_width": float("inf")},
    ),
    "adaptive_class": dict(
        estimator="adaptive", coarse=3, estimator_options={"roi_blocks": "coarse", "settled_half_width": float("inf")}
    ),
    "reference_incremental": dict(estimator="coarse_to_fine", coarse=3, fine=50, recompute="incremental"),
    # the truth: incremental recompute gives the ROI-crop outputs to float rounding, 4x faster
    "exhaustive500": dict(estimator="exhaustive", samples=500, recompute="incremental"),
}


def _image(job: str) -> np.ndarray:
    from cem_lab.images import load_image

    img = load_image(DATA / "demo_images" / "demo_2.png")
    box = JOBS[job]["rows"]
    return img if box is None else np.ascontiguousarray(img[box[0] : box[1], box[2] : box[3]])


def _forward_shape(meta: dict, input_shape) -> tuple[int, int]:
    """The input size the network ran on: the dependency crop in crop mode, else the whole input."""
    if meta.get("mode") == "crop":
        y0, y1, x0, x1 = meta["dependency_region"]["crop"]
        return y1 - y0, x1 - x0
    return tuple(input_shape)


def _model(job: str):
    from cem_lab.models import DnCNN, load_weights
    from cem_lab.models.zoo import load_zoo_model

    name = JOBS[job].get("model")
    if name:
        return load_zoo_model(name).eval()
    model = DnCNN()
    load_weights(model, DATA / "dncnn_color_blind.pth")
    return model.eval()


def authors(args) -> None:
    """The authors' code, estimated as forward-bound: one full-image forward per intervention, one
    image at a time (their demo's loop), so its time is (1 + blocks x T_c + |S| x T_f) forwards of the
    whole image; the time of one is measured here (median of ``--repeats`` after a warm-up)."""
    from cem_lab.causal.result import CEMResult

    torch.set_num_threads(args.threads)
    model = _model(args.job)
    img = torch.from_numpy(np.array(_image(args.job))).permute(2, 0, 1)[None].float() / 255
    times = []
    with torch.inference_mode():
        model(img)
        for _ in range(args.repeats):
            t = time.perf_counter()
            model(img)
            times.append(time.perf_counter() - t)
    per = float(np.median(times))
    ref = CEMResult.load(Path(args.out) / args.job / "reference")
    n_blocks = int(ref.roi_mask.size)
    s_count = int((ref.counts > 3).sum())  # blocks of S: fine-stage counts (T_f = 50) instead of T_c = 3
    passes = 1 + n_blocks * 3 + s_count * 50
    out = {
        "job": args.job,
        "forward_s": per,
        "forward_s_all": times,
        "input_hw": list(img.shape[-2:]),
        "blocks": n_blocks,
        "fine_blocks": s_count,
        "forward_passes": passes,
        "estimated_s": passes * per,
        "how": "estimated, forward-bound: (1 + blocks x 3 + |S| x 50) full-image forwards of batch 1, "
        "|S| from this job's reference run, the forward timed here",
        "machine": f"{platform.machine()}, torch {torch.__version__}, {args.threads} threads",
    }
    (Path(args.out) / args.job / "authors.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "forward_s_all"}))


def run(args) -> None:
    from cem_lab import compute_cem
    from cem_lab.patches import PatchBank

    torch.set_num_threads(args.threads)
    model = _model(args.job)
    bank = PatchBank.load(DATA / "div2k_patches8.npz")
    folder = Path(args.out) / args.job / args.estimator
    start = time.perf_counter()
    res = compute_cem(
        model,
        _image(args.job),
        "dn",
        JOBS[args.job]["roi"],
        block=8,
        tol=0.01,
        seed=0,
        patch_bank=bank,
        batch_size=32,
        forward_batch=8,
        output_dir=folder,
        figures=False,
        progress=not args.quiet,
        **ESTIMATORS[args.estimator],
    )
    wall = time.perf_counter() - start
    h, w = _forward_shape(res.meta, res.input_shape)
    bench = {
        "job": args.job,
        "estimator": args.estimator,
        "wall_s": wall,
        "resumed": any("resumed" in n for n in res.meta["notes"]),
        "forward_passes": res.meta["forward_passes"],
        "pixels": int(res.meta["pixels_pushed"]),
        "input_hw": [h, w],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": f"{platform.machine()}, torch {torch.__version__}, {args.threads} threads",
    }
    (folder / "bench.json").write_text(json.dumps(bench, indent=2) + "\n")
    print(json.dumps(bench))


def report(args) -> None:
    from cem_lab.causal.result import CEMResult

    root = Path(args.out)
    print(
        "| job | estimator | forward passes | pixels | wall time | x authors' code | peak RSS | "
        "classes = T500 (outside ROI) | max abs delta CE vs T500 (dB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for job in JOBS:
        truth_dir = root / job / "exhaustive500"
        truth = CEMResult.load(truth_dir) if (truth_dir / "cem.npz").is_file() else None
        if truth is None and not (root / job / "reference" / "cem.npz").is_file():
            continue
        authors_file = root / job / "authors.json"
        authors_s = json.loads(authors_file.read_text())["estimated_s"] if authors_file.is_file() else None
        if authors_s is not None:
            print(
                f"| {job} | authors' code (estimated, forward-bound) | "
                f"{json.loads(authors_file.read_text())['forward_passes']:,} | | {authors_s:.0f} s | 1 | | | |"
            )
        vs = ""
        if truth is None:  # no T = 500 run: agreement with the reference estimator instead
            truth, vs = CEMResult.load(root / job / "reference"), " (vs reference)"
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
            ratio = (
                f"{authors_s / b['wall_s']:.1f}x" if authors_s and not b["resumed"] and est != "exhaustive500" else ""
            )
            print(
                f"| {job} | {est} | {b['forward_passes']:,} | {b['pixels'] / 1e6:.1f} M{est_mark} | {b['wall_s']:.0f} s{note} | "
                f"{ratio} | {b['peak_rss_mb']:.0f} MB | {agree:.2%}{vs} | {diff:.4f}{vs} |"
            )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--job", choices=sorted(JOBS), required=True)
    r.add_argument("--estimator", choices=sorted(ESTIMATORS), required=True)
    r.add_argument("--out", default="benchmarks/out/estimators")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--quiet", action="store_true")
    a = sub.add_parser("authors")
    a.add_argument("--job", choices=sorted(JOBS), required=True)
    a.add_argument("--out", default="benchmarks/out/estimators")
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("--repeats", type=int, default=7)
    rep = sub.add_parser("report")
    rep.add_argument("out", nargs="?", default="benchmarks/out/estimators")
    args = p.parse_args(argv)
    {"run": run, "authors": authors, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
