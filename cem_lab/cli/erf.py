"""``cem-erf``: the effective receptive field of a ROI (gradient of its output w.r.t. the input, over images).

    cem-erf                                              # the embedded DnCNN on the embedded 256x256 image
    cem-erf --images chelsea astronaut coffee camera --roi 120,120,16 --out runs/erf/dncnn
    cem-erf --model-path edsr_x4.pth --task sr --images monarch barbara --size 256 --point roi
    cem-erf --draws 8 --cem-run runs/cem/embedded_dn    # 8 noise draws; the CEM's reach beside the ERF's

The ERF of one image is |dF/dx| summed over channels on the input pixels, F the ROI's centre pixel (--point
centre, summed over output channels) or the whole ROI (--point roi); the figure shows the mean over images on a
log scale with the high-contribution area ratios (the fewest pixels holding 20/30/50/99 % of the gradient mass)
and their 95 % bootstrap intervals over images (and draws). Each image (a file, `embedded`, or a standard image
such as chelsea) is centre-cropped to --size and degraded by --task (dn: Gaussian noise of --sigma; sr: bicubic
down by the model's scale; dr: synthetic rain; none: the crop is the model input). --roi TOP,LEFT,SIZE is in
output pixels (default: a 16-pixel ROI at the centre). --cem-run gives finished cem-lab runs of the same ROI:
their effective distance (reach_px max) is drawn against the ERF's 50 / 99 % mass radii (figures/reach.png).
Writes erf.npz, figures/erf.png and erf.json (last) in --out (default runs/erf/<model>_<task>).
From Python: cem_lab.attribution.effective_receptive_field(model, images, roi).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cem_lab.bookkeeping.clean_errors import OneLineParser, run_cli
from cem_lab.cli.figure_options import add_figure_options, figure_style
from cem_lab.errors import InputError
from cem_lab.viz.style import FigureStyle  # plain settings: numpy only, no matplotlib

__all__ = ["main"]

PROG = "cem-erf"


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--model", default="embedded", help="embedded (the embedded DnCNN; default)")
    parser.add_argument("--model-path", default=None, metavar="FILE", help="a checkpoint; spandrel detects the network")
    parser.add_argument(
        "--images", nargs="+", default=["embedded"], metavar="IMAGE", help="files, 'embedded' or standard images"
    )
    parser.add_argument("--size", type=int, default=256, metavar="N", help="centre crop of every image (default 256)")
    parser.add_argument(
        "--roi",
        default=None,
        metavar="TOP,LEFT,SIZE",
        help="output pixels (default: --cem-run's ROI, else centred, 16)",
    )
    parser.add_argument("--task", default="dn", help="dn (default) | sr | dr | none")
    parser.add_argument("--sigma", type=float, default=50.0, help="dn: noise level, 0..255 scale (default 50)")
    parser.add_argument("--point", default="centre", help="centre (the ROI's centre pixel; default) | roi")
    parser.add_argument("--draws", type=int, default=1, metavar="N", help="degradation draws per image (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="the first degradation draw's seed")
    parser.add_argument("--cem-run", action="append", default=[], metavar="DIR", help="a cem-lab run of the same ROI")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR", help="default runs/erf/<model>_<task>")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: where the model is, cpu)")
    add_figure_options(parser, "png", colour_range=False)
    parser.add_argument("--no-figures", action="store_true", help="write the numbers only")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def parse_roi(text: str) -> tuple[int, int, int]:
    """``TOP,LEFT,SIZE`` -> three integers, refused in one line otherwise."""
    parts = [p.strip() for p in str(text).replace(" ", ",").split(",") if p.strip()]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or values[2] < 1 or min(values) < 0:
        raise InputError(f"--roi {text!r}: give TOP,LEFT,SIZE as three non-negative integers, e.g. --roi 120,120,16")
    return values  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cem-erf``; returns the exit status (0 done, 2 bad input; Ctrl-C: one line, 130)."""
    return run_cli(lambda: _erf(argv), PROG)


def _erf(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        roi = parse_roi(args.roi) if args.roi is not None else None
        style = figure_style(args)
    except InputError as err:
        return _error(str(err))
    if args.no_figures:
        style = FigureStyle(formats=style.formats, dpi=style.dpi, draw=False)
    if args.model_path is not None and not Path(args.model_path).is_file():
        return _error(f"--model-path {args.model_path}: no such file; give a checkpoint (.pth, .pt, .safetensors)")
    for run in args.cem_run:
        if not Path(run).is_dir():
            return _error(f"--cem-run {run}: no such folder; give a finished cem-lab run folder")
    # lazy: torch and the models load only once the arguments are good (not for --help)
    from cem_lab.attribution.erf_run import plan_erf, run_erf

    name = Path(args.model_path).stem if args.model_path else args.model
    out = args.out if args.out is not None else Path("runs") / "erf" / f"{name}_{args.task}"
    plan = plan_erf(
        model=args.model,
        model_path=args.model_path,
        images=args.images,
        size=args.size,
        roi=roi,
        task=args.task,
        sigma=args.sigma,
        point=args.point,
        draws=args.draws,
        seed=args.seed,
        out=out,
        style=style,
        cem_runs=args.cem_run,
        device=args.device,
        progress=not args.quiet,
    )  # every refusal happens here, before any gradient is computed and anything is written
    s = run_erf(plan)
    ratios = ", ".join(
        f"{k} % {_pct(v['mean'])} [{_pct(v['low'])}, {_pct(v['high'])}]" for k, v in s["area_ratio"].items()
    )
    radii = ", ".join(f"{k} % {_px(v['mean'])} px" for k, v in s["mass_radius_px"].items())
    print(
        f"{PROG}: {s['model']}, {len(s['images'])} image(s), ROI {s['roi']} ({s['point']}), {s['timings']['erf_s']:.1f} s"
    )
    print(f"  area ratio (share of input pixels holding the gradient mass): {ratios}")
    print(f"  mass radius (output px from the ROI centre): {radii}")
    if "cem_effective_distance_px" in s:
        print(f"  CEM effective distance: {_px(s['cem_effective_distance_px']['mean'])} px")
    print(f"  wrote {out / 'erf.json'}, {out / 'erf.npz'}" + "".join(f", {out / f}" for f in s["figures"].values()))
    return 0


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.3g}%"


def _px(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


if __name__ == "__main__":
    sys.exit(main())
