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
output pixels (default: --cem-run's ROI, else a 16-pixel ROI at the centre). --cem-run gives finished cem-lab
runs of the same ROI on an output of the same size:
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
from cem_lab.cli.probe_options import add_output_options, add_probe_options, checked_probe_options, model_name
from cem_lab.errors import InputError

__all__ = ["main"]

PROG = "cem-erf"


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    add_probe_options(parser, roi_default="--cem-run's ROI, else centred, 16")
    parser.add_argument("--point", default="centre", help="centre (the ROI's centre pixel; default) | roi")
    parser.add_argument("--draws", type=int, default=1, metavar="N", help="degradation draws per image (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="the first degradation draw's seed")
    parser.add_argument("--cem-run", action="append", default=[], metavar="DIR", help="a cem-lab run of the same ROI")
    add_output_options(parser, "runs/erf/<model>_<task>")
    return parser


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cem-erf``; returns the exit status (0 done, 2 bad input; Ctrl-C: one line, 130)."""
    return run_cli(lambda: _erf(argv), PROG)


def _erf(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        roi, style = checked_probe_options(args)
    except InputError as err:
        return _error(str(err))
    for run in args.cem_run:
        if not Path(run).is_dir():
            return _error(f"--cem-run {run}: no such folder; give a finished cem-lab run folder")
    # lazy: torch and the models load only once the arguments are good (not for --help)
    from cem_lab.attribution.erf_run import plan_erf, run_erf

    name = model_name(args)
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
