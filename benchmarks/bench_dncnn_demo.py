"""Full-image mode vs accelerated (crop) mode on the paper's DN demo job.

Job: the shared KAIR DnCNN, the DIV2K patch bank, demo_2.png, DN sigma 50, ROI (152, 96, 32),
block 8, coarse-to-fine T_c 3, T_f 50, tol 0.01 (method doc, section 7).

Each mode runs in its own process so that its peak RSS is its own:

    python benchmarks/bench_dncnn_demo.py run --mode auto --out benchmarks/out/auto
    python benchmarks/bench_dncnn_demo.py run --mode full --out benchmarks/out/full --subset-of benchmarks/out/auto
    python benchmarks/bench_dncnn_demo.py report benchmarks/out/auto benchmarks/out/full

A complete full-image run is hours of forward passes on 2 cores, so with ``--subset-of`` the full
run covers a seeded sample of blocks (``--region-blocks`` inside the accelerated run's crop, where
the crop changes the computation, and ``--ring-blocks`` just outside it, which the accelerated run
never evaluates). Each block's estimate depends only on its own seeded draws, so these blocks get
exactly the values a complete full run would give them: the report compares them with the
accelerated map, and scales the full run's steady-state rate (forward passes per second) to the
forward passes of the complete job. Without ``--subset-of`` the full run is complete.
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
JOB = dict(task="dn", roi=(152, 96, 32), block=8, coarse=3, fine=50, tol=0.01, seed=0)


def subset_blocks(fast_dir: Path, region_blocks: int, ring_blocks: int, fine_blocks: int = 0) -> list[int]:
    """Seeded sample of blocks inside the accelerated run's crop and in a ring just outside it.

    ``fine_blocks`` of the region's blocks are drawn from those the accelerated run sent to the
    fine stage (the blocks with an effect), the other ``region_blocks`` from the whole region.
    """
    summary = json.loads((fast_dir / "run" / "summary.json").read_text())
    with np.load(fast_dir / "run" / "cem.npz") as z:
        in_fine = (z["counts"] == json.loads((fast_dir / "bench.json").read_text())["fine"]).ravel()
    y0, y1, x0, x1 = summary["dependency_region"]["crop"]
    b = JOB["block"]
    rows, cols = summary["grid_shape"]
    inside, ring = [], []
    for r in range(rows):
        for c in range(cols):
            by0, by1, bx0, bx1 = r * b, (r + 1) * b, c * b, (c + 1) * b
            if by0 < y1 and by1 > y0 and bx0 < x1 and bx1 > x0:
                inside.append(r * cols + c)
            elif by0 < y1 + 2 * b and by1 > y0 - 2 * b and bx0 < x1 + 2 * b and bx1 > x0 - 2 * b:
                ring.append(r * cols + c)
    rng = np.random.default_rng(2025)
    fine = [i for i in inside if in_fine[i]]
    pick = list(rng.choice(fine, size=min(fine_blocks, len(fine)), replace=False)) if fine_blocks else []
    rest = [i for i in inside if i not in pick]
    pick += list(rng.choice(rest, size=min(region_blocks, len(rest)), replace=False))
    pick += list(rng.choice(ring, size=min(ring_blocks, len(ring)), replace=False))
    return sorted(int(i) for i in pick)


def run(args) -> None:
    from cem_lab import compute_cem
    from cem_lab.models import DnCNN, load_weights
    from cem_lab.patches import PatchBank

    torch.set_num_threads(args.threads)
    model = DnCNN()
    load_weights(model, DATA / "dncnn_color_blind.pth")
    bank = PatchBank.load(DATA / "div2k_patches8.npz")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fine = args.fine or JOB["fine"]
    counter = {"t0": None, "items": 0, "passes0": 0}
    blocks = None
    if args.subset_of:
        blocks = subset_blocks(Path(args.subset_of), args.region_blocks, args.ring_blocks, args.fine_blocks)

    def on_batch(info):
        if counter["t0"] is None:  # time from the end of the first batch (warm-up excluded)
            counter["t0"], counter["passes0"] = time.perf_counter(), info.forward_passes
        counter["passes"] = info.forward_passes
        counter["t1"] = time.perf_counter()

    t0 = time.perf_counter()
    record = {
        "mode": args.mode,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "fine": fine,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    res = compute_cem(
        model,
        DATA / "demo_images" / "demo_2.png",
        JOB["task"],
        JOB["roi"],
        block=JOB["block"],
        patch_bank=bank,
        coarse=JOB["coarse"],
        fine=fine,
        tol=JOB["tol"],
        seed=JOB["seed"],
        batch_size=args.batch_size,
        mode=args.mode,
        output_dir=out / "run",
        progress=not args.quiet,
        on_batch=on_batch,
        blocks=blocks,
    )
    passes = counter["passes"] - counter["passes0"]
    record.update(
        complete=blocks is None,
        wall_s=time.perf_counter() - t0,
        forward_passes=res.meta["forward_passes"],
        run_mode=res.meta["mode"],
        counts=res.block_counts(),
        baseline=res.baseline_metric,
        fine_blocks=int((res.counts == fine).sum()),
        blocks=None if blocks is None else len(blocks),
        rate_fwd_per_s=passes / (counter["t1"] - counter["t0"]),
    )
    if "dependency_region" in res.meta:
        record["crop"] = res.meta["dependency_region"]["crop"]
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (out / "bench.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


def report(args) -> None:
    from cem_lab.causal import CEMResult

    fast_dir, full_dir = Path(args.fast), Path(args.full)
    fast = json.loads((fast_dir / "bench.json").read_text())
    full = json.loads((full_dir / "bench.json").read_text())
    fine = fast["fine"]
    # forward passes of a complete full-image run: base + every block x T_c + the fine set x T_f
    full_passes = 1 + 32 * 32 * JOB["coarse"] + fast["fine_blocks"] * fine
    if full["complete"]:
        full_wall, note = full["wall_s"], "complete run"
    else:
        full_wall = full_passes / full["rate_fwd_per_s"]
        note = (
            f"run on {full['blocks']} of 1024 blocks ({full['forward_passes']} forward passes at "
            f"{full['rate_fwd_per_s']:.3f}/s), scaled to the {full_passes:,} forward passes of the whole job"
        )
    fast_res = CEMResult.load(fast_dir / "run")
    d = draw = 0.0
    same, n_blocks, n_fine, n_effect = True, set(), 0, 0
    for folder in [full_dir, *map(Path, args.agreement)]:
        full_res = CEMResult.load(folder / "run")
        done = full_res.computed
        d = max(d, float(np.abs(full_res.effect[done] - fast_res.effect[done]).max()))
        draw = max(draw, float(np.abs(full_res.effect_raw[done] - fast_res.effect_raw[done]).max()))
        same &= bool((full_res.classification[done] == fast_res.classification[done]).all())
        new = set(np.flatnonzero(done.ravel())) - n_blocks
        n_blocks |= new
        n_fine += sum(int(full_res.counts.ravel()[i] == fine) for i in new)
        n_effect += sum(int(full_res.classification.ravel()[i] != 0) for i in new)
    rows = [
        "| mode | wall time | forward passes | peak RSS | note |",
        "|---|---|---|---|---|",
        f"| full image (256x256 input) | {full_wall:,.0f} s | {full_passes:,} | {full['peak_rss_mb']:.0f} MB | {note} |",
        f"| accelerated (crop {fast.get('crop')}) | {fast['wall_s']:,.0f} s | {fast['forward_passes']:,} | "
        f"{fast['peak_rss_mb']:.0f} MB | complete run, T_f = {fine} |",
        "",
        f"speed-up: {full_wall / fast['wall_s']:.1f}x",
        f"agreement on the {len(n_blocks)} blocks computed in both modes ({n_fine} of them in the fine stage, "
        f"{n_effect} with an effect): max |delta CE| = {d:.2e} dB "
        f"(unthresholded {draw:.2e} dB), identical classification: {same}",
        f"accelerated map: {fast['counts']}, {fast['fine_blocks']} blocks in the fine stage, baseline ROI PSNR "
        f"{fast['baseline']:.3f} dB",
    ]
    print("\n".join(rows))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--mode", choices=["auto", "full"], required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--subset-of", default=None, help="an accelerated run's --out folder")
    r.add_argument("--region-blocks", type=int, default=12)
    r.add_argument("--ring-blocks", type=int, default=8)
    r.add_argument(
        "--fine-blocks", type=int, default=0, help="region blocks drawn from the accelerated run's fine-stage blocks"
    )
    r.add_argument("--fine", type=int, default=None, help="T_f (default 50, the reference)")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--quiet", action="store_true")
    q = sub.add_parser("report")
    q.add_argument("fast")
    q.add_argument("full", help="the full-image run whose rate is scaled to the whole job")
    q.add_argument("--agreement", nargs="*", default=[], help="more full-image subset runs to compare")
    args = p.parse_args(argv)
    if not DATA.is_dir():
        sys.exit(f"reference data not found at {DATA}: this benchmark needs ../shared/data")
    (run if args.cmd == "run" else report)(args)


if __name__ == "__main__":
    main()
