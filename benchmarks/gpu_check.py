"""One short device check: how close a full-image CEM comes to the model's bare batched forward, what
bf16 changes in the map, and what the adaptive estimator saves, on whatever device torch finds::

    python benchmarks/gpu_check.py                      # KAIR DnCNN on demo_2 (256x256) if ../shared/data is there
    python benchmarks/gpu_check.py --quick --device cpu # a 64x64 smoke run (the test suite runs this)

Measured, in one process:
1. the bare forward: ``forward_batch`` copies of the input per call, images per second (after warm-up);
2. a full-image CEM (``mode=full``) of the same model and input restricted to ``--blocks`` blocks
   (seeded sample, the ROI's ring first), forward passes per second, and its ratio to (1): the cost of
   building interventions and scoring the ROI around the forward passes;
3. the same map with the model run in bf16 (autocast, outputs cast back to fp32): its speed and
   max |delta CE| against fp32 (and whether the classification changes);
4. the reference estimator (T_c 3, T_f 50) against the adaptive one on the whole map in crop mode:
   forward passes and wall time, and their class agreement.
``--out FILE`` writes the figures as JSON beside the printed table; quote them with the device name.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class Bf16(nn.Module):
    """The model under bf16 autocast, its output cast back to fp32 (the runner's metrics are fp32)."""

    def __init__(self, net: nn.Module, device_type: str):
        super().__init__()
        self.net, self.device_type = net, device_type
        self.scale = getattr(net, "scale", 1)

    def forward(self, x):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.net(x).float()


def _job(args):
    from cem_lab.patches import PatchBank

    if not args.quick and (DATA / "dncnn_color_blind.pth").is_file():
        from cem_lab.images import load_image
        from cem_lab.models import DnCNN, load_weights

        net = DnCNN()
        load_weights(net, DATA / "dncnn_color_blind.pth")
        return (
            "KAIR DnCNN, demo_2.png 256x256, DIV2K bank",
            net,
            load_image(DATA / "demo_images" / "demo_2.png"),
            (152, 96, 32),
            PatchBank.load(DATA / "div2k_patches8.npz"),
        )
    from cem_lab.models.embedded import embedded_demo_image, load_embedded_model

    size = args.size
    img = embedded_demo_image()[:size, :size]
    roi = (size // 2 - 8, size // 2 - 8, 16)
    return (
        f"embedded DnCNN, chelsea {size}x{size}, embedded bank",
        load_embedded_model(),
        img,
        roi,
        PatchBank.embedded(count=2000),
    )


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(model, x, batch, iters, device) -> float:
    xb = x.expand(batch, -1, -1, -1).contiguous()
    with torch.inference_mode():
        for _ in range(2):
            model(xb)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            model(xb)
        _sync(device)
    return batch * iters / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    from cem_lab import compute_cem
    from cem_lab.causal.grid import BlockGrid
    from cem_lab.images import from_uint8
    from cem_lab.tasks import make_task

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--quick", action="store_true", help="a small CPU-sized run (64x64 unless --size)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--blocks", type=int, default=48, help="blocks of the full-image map (seeded sample)")
    p.add_argument("--forward-batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.blocks, args.forward_batch, args.iters = min(args.blocks, 12), min(args.forward_batch, 8), 3
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name, net, image, roi, bank = _job(args)
    net = net.eval().to(device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    task = make_task("dn")
    x = task.prepare(from_uint8(image), 0).input.to(device)
    out: dict = {"device": card, "torch": torch.__version__, "job": name, "forward_batch": args.forward_batch}

    out["bare_fwd_per_s"] = bare_forward(net, x, args.forward_batch, args.iters, device)
    bare_forward(Bf16(net, device.type), x, args.forward_batch, 1, device)  # warm up the bf16 kernels too
    grid = BlockGrid(x.shape[-2], x.shape[-1], 1, 8)
    rng = np.random.default_rng(0)
    blocks = sorted(rng.choice(len(grid), size=min(args.blocks, len(grid)), replace=False).tolist())
    kw = dict(
        block=8,
        patch_bank=bank,
        seed=0,
        progress=False,
        figures=False,
        forward_batch=args.forward_batch,
        batch_size=4 * args.forward_batch,
        device=device,
    )
    maps = {}
    for precision, model in (("fp32", net), ("bf16", Bf16(net, device.type))):
        t0 = time.perf_counter()
        res = compute_cem(model, image, task, roi, mode="full", blocks=blocks, coarse=3, fine=10, **kw)
        _sync(device)
        wall = time.perf_counter() - t0
        run_s = res.meta["timings"]["run_s"]
        maps[precision] = res
        out[f"full_{precision}"] = {
            "wall_s": wall,
            "forward_passes": res.meta["forward_passes"],
            "fwd_per_s": res.meta["forward_passes"] / run_s,
        }
    out["full_fp32"]["share_of_bare_forward"] = out["full_fp32"]["fwd_per_s"] / out["bare_fwd_per_s"]
    a, b = maps["fp32"], maps["bf16"]
    sel = np.isfinite(a.effect_raw) & np.isfinite(b.effect_raw)
    out["bf16_vs_fp32"] = {
        "max_abs_delta_ce": float(np.max(np.abs(a.effect_raw[sel] - b.effect_raw[sel]))),
        "same_classification": bool((a.classification == b.classification).all()),
        "speed_ratio": out["full_bf16"]["fwd_per_s"] / out["full_fp32"]["fwd_per_s"],
    }
    est = {}
    for label, options in (
        ("reference", dict(estimator="coarse_to_fine", coarse=3, fine=50)),
        ("adaptive", dict(estimator="adaptive", coarse=3)),
    ):
        t0 = time.perf_counter()
        res = compute_cem(net, image, task, roi, **options, **kw)
        _sync(device)
        est[label] = res
        out[label] = {
            "wall_s": time.perf_counter() - t0,
            "forward_passes": res.meta["forward_passes"],
            "mode": res.meta["mode"],
        }
    out["adaptive_saving"] = {
        "forward_passes_ratio": out["reference"]["forward_passes"] / out["adaptive"]["forward_passes"],
        "class_agreement": float((est["reference"].classification == est["adaptive"].classification).mean()),
    }

    print(f"device: {card}; torch {torch.__version__}; job: {name}; forward_batch {args.forward_batch}")
    print("| what | value |\n|---|---|")
    print(f"| bare batched forward | {out['bare_fwd_per_s']:.1f} images/s |")
    for precision in ("fp32", "bf16"):
        f = out[f"full_{precision}"]
        print(
            f"| full-image CEM {precision} ({len(blocks)} blocks) | {f['fwd_per_s']:.1f} forward passes/s, "
            f"{f['forward_passes']} passes in {f['wall_s']:.1f} s |"
        )
    print(f"| full-image CEM / bare forward (fp32) | {out['full_fp32']['share_of_bare_forward']:.0%} |")
    c = out["bf16_vs_fp32"]
    print(
        f"| bf16 vs fp32 | {c['speed_ratio']:.2f}x speed, max abs delta CE {c['max_abs_delta_ce']:.4f}, "
        f"same classes: {c['same_classification']} |"
    )
    for label in ("reference", "adaptive"):
        e = out[label]
        print(f"| {label} estimator ({e['mode']}) | {e['forward_passes']} passes, {e['wall_s']:.1f} s |")
    s = out["adaptive_saving"]
    print(
        f"| adaptive saving | {s['forward_passes_ratio']:.2f}x fewer passes, class agreement "
        f"{s['class_agreement']:.2%} |"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
