"""Incremental recompute of traced local networks against the ROI crop, on the studies' networks.

The receptive-field study's EDSR and FSRCNN families (width 16, depths 2 to 16), SRResNet (the
multitask study's SR model) and a real catalogue RRDBNet (Real-ESRGAN x4plus, 23 RRDB blocks), each
mapped both ways in one process on a 64 x 64 input (SR x4 of monarch's 256 x 256 centre crop), ROI
(112, 112, 32), block 8, coarse-to-fine T_c = 3, T_f = 10, seed 0, the embedded patch bank::

    python benchmarks/bench_incremental_graph.py [--models edsr_d2_w16_x4,...] [--threads 2] [--fine 10] [--blocks N]
        [--busy] [--repeat K]

``--busy``: both ways beside a second process that keeps every core busy (bench_incremental_contention.py's).
One throwaway incremental map first: the process's first trace sets up torch's tracing machinery (about 1.5 s,
once per process, shared by a study's maps). ``--repeat K``: each way K times, the two ways taking turns; the
table gives the median and the range (beside a busy process one path's times scatter by a factor of two).

Per model: wall seconds each way, the convolution work an item recomputes (share of the crop's), the
forward pixels pushed, the largest |delta CE| between the two maps (float rounding) and whether the
classes are equal; a model the traced graph declines is reported with the reason.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from bench_incremental_contention import busy_process, ran_on  # the demo rows' busy process and path

from cem_lab import compute_cem
from cem_lab.models.pretrained import load_pretrained
from cem_lab.models.zoo import load_zoo_model
from cem_lab.standard_images import standard_image
from cem_lab.tasks import make_task

MODELS = [
    *[f"edsr_d{d}_w16_x4" for d in (2, 4, 8, 16)],
    *[f"fsrcnn_d{d}_w16_x4" for d in (2, 4, 8, 16)],
    "srresnet_sr",
    "realesrgan-x4plus",
]


def _load(name: str):
    if name.startswith("realesrgan") or name.startswith("realsr"):
        return load_pretrained(name)
    return load_zoo_model(name, scale=4)  # x4 (a multitask model runs on the bicubic x4 input)


def _cell(times: list[float]) -> str:
    """Median seconds, and the range when there are several."""
    med = float(np.median(times))
    return f"{med:.1f}" + (f" ({min(times):.1f}-{max(times):.1f})" if len(times) > 1 else "")


def _notes(res) -> list[str]:
    return [n for n in res.meta["notes"] if n.startswith("incremental recompute")]


def _path(res) -> str:
    """What a job asked for ``recompute=incremental`` ran on: where it raced the crop, the share of its items
    that went to incremental recompute; where it was the crop, why."""
    used = _notes(res)
    if used and "slower than the ROI crop" in used[0]:
        return "crop (incremental > 2x slower on its check)"
    if used and "not used" in used[0]:
        return "crop (declined: " + used[0].split("not used: ", 1)[1][:100] + ")"
    race = res.meta.get("path_race")
    if race and "incremental_check" in res.meta:
        items: dict[str, int] = {}
        for stage in race.values():
            for name, n in stage["items"].items():
                items[name] = items.get(name, 0) + n
        total = max(1, sum(items.values()))
        share = sum(n for name, n in items.items() if name.startswith("incremental")) / total
        return f"raced: {share:.0%} of items incremental"
    return ran_on(res)


def _share(res) -> str:
    used = _notes(res)
    if used and "of the" in used[0] and "not used" not in used[0] and "slower" not in used[0]:
        return used[0].split("recomputes ", 1)[1].split(" of", 1)[0]
    return "-"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--busy", action="store_true", help="beside a second CPU-bound process")
    p.add_argument("--fine", type=int, default=10)
    p.add_argument("--repeat", type=int, default=1, help="each way this many times, taking turns (median, range)")
    p.add_argument(
        "--blocks",
        type=int,
        default=0,
        help="map only the N blocks nearest the ROI's centre (0: all); for a network too slow to map whole here",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    image = standard_image("monarch")
    h, w = image.shape[:2]
    image = np.ascontiguousarray(image[(h - 256) // 2 : (h + 256) // 2, (w - 256) // 2 : (w + 256) // 2])
    kw = dict(block=8, coarse=3, fine=args.fine, seed=0, progress=False, figures=False)
    if args.blocks:  # the 64 x 64 input's grid of 2 x 2 input px blocks (32 x 32), nearest the ROI's centre first
        yy, xx = np.mgrid[0:32, 0:32]
        near = np.argsort(np.hypot((yy + 0.5) * 2 - 32, (xx + 0.5) * 2 - 32).ravel(), kind="stable")
        kw["blocks"] = np.sort(near[: args.blocks])
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads"
    )
    print(
        "| model | crop s | recompute=incremental s | speed-up | ran on | work share | threads (crop / incr.) "
        "| pixels (crop / incr.) | max abs delta CE (dB) | classes equal |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    if args.busy:
        print("beside one busy process (2-thread float32 matrix products)")
    with busy_process(args.threads, on=args.busy):
        # the process's first trace sets up torch's tracing machinery (about 1.5 s, once per process: a study's
        # maps share it); paid here, on a throwaway map, so that no row carries it
        warm = _load(args.models.split(",")[0]).eval()
        compute_cem(warm, image, make_task("sr", scale=4), (112, 112, 32), recompute="incremental", **{**kw, "fine": 1})
        for name in args.models.split(","):
            model = _load(name).eval()
            task = make_task("sr", scale=4)
            res, times, paths = {}, {"roi_crop": [], "incremental": []}, []
            for _ in range(args.repeat):
                for rc in ("roi_crop", "incremental"):
                    t = time.perf_counter()
                    res[rc] = compute_cem(model, image, task, (112, 112, 32), recompute=rc, **kw)
                    times[rc].append(time.perf_counter() - t)
                    if rc == "incremental":
                        paths.append(_path(res[rc]))
            wall = {rc: float(np.median(v)) for rc, v in times.items()}
            a, b = res["roi_crop"], res["incremental"]
            path = paths[0] if len(set(paths)) == 1 else ", ".join(f"{p} x{paths.count(p)}" for p in sorted(set(paths)))
            share = _share(b)
            d = float(np.nanmax(np.abs(a.effect_raw - b.effect_raw)))
            threads = (
                f"{a.meta.get('crop_threads', {}).get('chosen', '-')} / "
                f"{b.meta.get('incremental_check', {}).get('threads', {}).get('chosen', '-')}"
            )
            print(
                f"| {name} | {_cell(times['roi_crop'])} | {_cell(times['incremental'])} | {wall['roi_crop'] / wall['incremental']:.2f}x | "
                f"{path} | {share} | {threads} | "
                f"{a.meta['pixels_pushed'] / 1e6:.2f} M / {b.meta['pixels_pushed'] / 1e6:.2f} M | {d:.2g} | "
                f"{bool((a.classification == b.classification).all())} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
