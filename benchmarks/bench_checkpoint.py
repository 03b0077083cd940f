"""What checkpointing costs: one map with a checkpoint after every round of work vs only at the ends
of its stages, in one process, and the per-checkpoint time that sets the default cadence::

    python benchmarks/bench_checkpoint.py [--threads 2] [--shared ../shared/data]

Job: the paper's DN demo (KAIR's DnCNN, the DIV2K patch bank, demo_2.png, ROI (152, 96, 32),
block 8, T_c 3, T_f 50) when ``../shared/data`` is there, else the embedded default (cem_lab's small
DnCNN on the 256x256 chelsea crop); ``batch_size`` 32. The two maps must be identical: where a run
saves its state does not change its numbers.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cem_lab import compute_cem


def _job(shared: Path):
    if (shared / "dncnn_color_blind.pth").is_file():
        from cem_lab.models import DnCNN
        from cem_lab.models.checkpoint import load_weights
        from cem_lab.patches import PatchBank

        net = DnCNN()
        load_weights(net, shared / "dncnn_color_blind.pth")
        return (
            "KAIR DnCNN, demo_2.png, DIV2K bank",
            net,
            str(shared / "demo_images" / "demo_2.png"),
            dict(patch_bank=PatchBank.load(shared / "div2k_patches8.npz"), roi=(152, 96, 32)),
        )
    from cem_lab.models.embedded import embedded_demo_image, load_embedded_model

    return "embedded DnCNN, chelsea 256", load_embedded_model(), embedded_demo_image(), dict(roi=(112, 112, 32))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    name, model, image, extra = _job(args.shared)
    roi = extra.pop("roi")
    rows = {}
    for label, cadence in (
        ("every round", dict(checkpoint_every=None, checkpoint_every_items=1)),
        ("stage ends only", dict(checkpoint_every=None, checkpoint_every_items=None)),
    ):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            res = compute_cem(
                model.eval(),
                image,
                "dn",
                roi,
                block=8,
                batch_size=32,
                seed=0,
                progress=False,
                figures=False,
                output_dir=out,
                **cadence,
                **extra,
            )
            wall = time.perf_counter() - start
            state = (Path(out) / "state.npz").stat().st_size
        rows[label] = (wall, res, state)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {args.threads} threads; job: {name}")
    print("| checkpoints | wall time | checkpoints written | time in checkpoints | per checkpoint | state.npz |")
    print("|---|---|---|---|---|---|")
    for label, (wall, res, state) in rows.items():
        n, spent = res.meta["checkpoints"], res.meta["timings"]["checkpoint_s"]
        print(
            f"| {label} | {wall:.1f} s | {n} | {spent:.3f} s ({spent / wall:.1%}) | {1000 * spent / n:.1f} ms | "
            f"{state / 1024:.0f} kB |"
        )
    a, b = rows["every round"][1], rows["stage ends only"][1]
    same = np.array_equal(a.effect_raw, b.effect_raw) and np.array_equal(a.classification, b.classification)
    per = rows["every round"][1].meta["timings"]["checkpoint_s"] / rows["every round"][1].meta["checkpoints"]
    print(f"identical maps: {same}; a checkpoint every 5 s costs {per / 5:.2%} of the run time")


if __name__ == "__main__":
    main()
