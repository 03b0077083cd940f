"""``cem-sanity``: does an attribution map depend on what the network learned? Model-parameter randomisation.

    cem-sanity                                           # the embedded DnCNN on the embedded 256x256 image
    cem-sanity --images embedded astronaut coffee --methods lam,ig,saliency --out runs/sanity/dncnn
    cem-sanity --mode independent --methods saliency     # each layer randomised alone
    cem-sanity --model-path edsr_x4.pth --task sr --images monarch --size 128 --block 8

The network's layers (modules owning parameters, in the order the forward pass calls them) are randomised
from the last to the first (--mode cascading: step k has the last k layers random; --mode independent: one
layer at a time), and each method's block map of the ROI is recomputed at every step. Its similarity to the
trained map (Spearman of |values|, SSIM of the block maps, top-k overlap; the ROI's own blocks left out) is
reported per step with a 95 % bootstrap interval over images. A method passes (cascading only) when the
Spearman at the fully randomised step is below 0.5, the interval's upper end included. Each image (a file,
`embedded`, or a standard image such as chelsea) is centre-cropped to --size and degraded by --task (dn:
Gaussian noise of --sigma; sr: bicubic down by the model's scale; dr: synthetic rain; none: the crop is the
model input). --roi TOP,LEFT,SIZE is in output pixels (default: a 16-pixel ROI at the centre). The method
cem (the causal effect map, exhaustive with --cem-samples draws per block) costs blocks x samples forward
passes per image and step. Writes sanity.npz, figures/sanity.png and sanity.json (last) in --out (default
runs/sanity/<model>_<task>_<mode>).
From Python: cem_lab.attribution.sanity.randomisation_check(model, images, roi, methods, block).
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

PROG = "cem-sanity"


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    add_probe_options(parser, roi_default="centred, 16")
    parser.add_argument("--methods", default="lam,ig,saliency", help="comma-separated: lam, ig, saliency, cem")
    parser.add_argument("--mode", default="cascading", help="cascading (default) | independent")
    parser.add_argument("--block", type=int, default=8, help="CEM block in output pixels (default 8)")
    parser.add_argument("--layers", default=None, metavar="NAMES", help="comma-separated layers (default: all)")
    parser.add_argument("--randomise", default="reset", help="reset (the layer's initialisation; default) | gaussian")
    parser.add_argument("--steps", type=int, default=50, help="LAM and IG path points (default 50)")
    parser.add_argument("--cem-samples", type=int, default=2, metavar="N", help="cem: draws per block (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="degradation and randomisation seed")
    add_output_options(parser, "runs/sanity/<model>_<task>_<mode>")
    return parser


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cem-sanity``; returns the exit status (0 done, 2 bad input; Ctrl-C: one line, 130)."""
    return run_cli(lambda: _sanity(argv), PROG)


def _sanity(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        roi, style = checked_probe_options(args)
    except InputError as err:
        return _error(str(err))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    layers = [n.strip() for n in args.layers.split(",") if n.strip()] if args.layers else None
    # lazy: torch and the models load only once the arguments are good (not for --help)
    from cem_lab.attribution.sanity_run import plan_sanity, run_sanity

    name = model_name(args)
    out = args.out if args.out is not None else Path("runs") / "sanity" / f"{name}_{args.task}_{args.mode}"
    plan = plan_sanity(
        model=args.model,
        model_path=args.model_path,
        images=args.images,
        size=args.size,
        roi=roi,
        task=args.task,
        sigma=args.sigma,
        methods=methods,
        mode=args.mode,
        block=args.block,
        layers=layers,
        seed=args.seed,
        randomise=args.randomise,
        steps=args.steps,
        cem_samples=args.cem_samples,
        out=out,
        style=style,
        device=args.device,
        progress=not args.quiet,
    )  # every refusal happens here, before any map is computed and anything is written
    s = run_sanity(plan)
    print(
        f"{PROG}: {s['model']}, {len(s['images'])} image(s), ROI {s['roi']}, {s['mode']} over {len(s['steps'])} "
        f"layer(s), {s['timings']['check_s']:.1f} s"
    )
    for m in s["methods"]:
        sim = s["similarity"][m]
        last = {k: sim[k][-1] for k in sim}
        text = ", ".join(f"{k} {_iv(v)}" for k, v in last.items())
        verdict = s["verdicts"].get(m)
        tag = "" if verdict is None else (" PASSES" if verdict["passes"] else " FAILS")
        print(f"  {m}: at the last step {text}{tag}")
    print(
        f"  wrote {out / 'sanity.json'}, {out / 'sanity.npz'}" + "".join(f", {out / f}" for f in s["figures"].values())
    )
    return 0


def _iv(v: dict) -> str:
    if v.get("mean") is None:
        return "-"
    if v.get("low") is None or v.get("high") is None:
        return f"{v['mean']:.3f}"
    return f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"


if __name__ == "__main__":
    sys.exit(main())
