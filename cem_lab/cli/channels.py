"""``cem-channels``: the causal effect of each channel of a layer on a ROI (a causal map inside the network).

    cem-channels --list-layers                            # the layers of the embedded DnCNN, with their channels
    cem-channels --layer body.4 --images embedded chelsea astronaut coffee
    cem-channels --model rcan_global_sr_x4 --task sr --size 128 --layer body.1.body.1.body.3 \
        --images monarch barbara kodim23 --roi 48,48,32
    cem-channels --layer body.4 --value mean --images embedded chelsea astronaut   # mean ablation
    cem-channels --layer body.4 --value zeros --images embedded                    # zero ablation (not natural)

Channel c of --layer is set, for the whole forward pass, to a natural value, and the ROI's PSNR is read again:
CE(c) = M0 - E[M], in dB, > 0 where the channel's own content helps the ROI (the input map's sign). --value
donor (default): the channel's activation under another image of the population, at the same positions; mean:
its mean over the population's images and positions (a constant plane); zeros: switched off, for comparison.
Each image of --images (files, `embedded` or standard images, centre-cropped to --size, degraded by --task) is
probed in turn with the others as its donors; the channels are ranked by their mean effect over the images,
with 95 % bootstrap intervals. --estimator default uses every donor once (the exact population mean); the
input map's estimators (exhaustive with --fine samples, coarse_to_fine, adaptive) draw donors instead. Each
image checkpoints in --out/units/ and a rerun resumes there. Writes channels.npz, channels.csv,
figures/channels.png and channels.json (last) in --out (default runs/channels/<model>_<task>_<layer>_<value>).
From Python: cem_lab.causal.channels.ChannelJob(model, task_input, roi, layer, donors=[...]).run().
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

PROG = "cem-channels"


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    add_probe_options(parser)
    parser.add_argument("--layer", default=None, metavar="NAME", help="the module whose channels are set")
    parser.add_argument("--list-layers", action="store_true", help="print the layers a channel map can take, and stop")
    parser.add_argument("--value", default="donor", help="donor (default) | mean | zeros")
    parser.add_argument(
        "--estimator", default="default", help="default (every donor once) | exhaustive | coarse_to_fine | adaptive"
    )
    parser.add_argument("--coarse", type=int, default=3, help="coarse_to_fine / adaptive: the screening samples")
    parser.add_argument("--fine", type=int, default=50, help="exhaustive / coarse_to_fine: samples per channel")
    parser.add_argument("--tol", type=float, default=0.01, help="|CE| below this is no effect (dB; default 0.01)")
    parser.add_argument("--seed", type=int, default=0, help="the first image's degradation seed; the donors' order")
    add_output_options(parser, "runs/channels/<model>_<task>_<layer>_<value>")
    return parser


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cem-channels``; returns the exit status (0 done, 2 bad input; Ctrl-C: one line, 130)."""
    return run_cli(lambda: _channels(argv), PROG)


def _channels(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        roi, style = checked_probe_options(args)
    except InputError as err:
        return _error(str(err))
    if not args.list_layers and not args.layer:
        return _error("give --layer NAME (the module whose channels are set); --list-layers prints the candidates")
    # lazy: torch and the models load only once the arguments are good (not for --help)
    from cem_lab.attribution.channels_run import list_layers, plan_channels, run_channels

    if args.list_layers:
        rows = list_layers(args.model, args.model_path, args.images, args.size, args.task, args.sigma)
        print(f"{'layer':<40} {'channels':>8}  output (C, H, W)  runs")
        for name, shape, calls in rows:
            flag = "" if calls == 1 else f"  (runs {calls} times: not usable)"
            print(f"{name:<40} {shape[1]:>8}  {str(tuple(shape[1:])):<16}  {calls}{flag}")
        return 0
    name = model_name(args)
    folder = f"{name}_{args.task}_{args.layer.replace('.', '-')}_{args.value}"
    out = args.out if args.out is not None else Path("runs") / "channels" / folder
    plan = plan_channels(
        model=args.model,
        model_path=args.model_path,
        images=args.images,
        size=args.size,
        roi=roi,
        task=args.task,
        sigma=args.sigma,
        layer=args.layer,
        value=args.value,
        estimator=args.estimator,
        coarse=args.coarse,
        fine=args.fine,
        tol=args.tol,
        seed=args.seed,
        out=out,
        style=style,
        device=args.device,
        progress=not args.quiet,
    )  # every refusal happens here, before any intervention is computed and anything is written
    s = run_channels(plan)
    c = s["counts"]
    print(
        f"{PROG}: {s['model']}, layer {s['layer']} ({s['channels']} channels), value {s['value']}, "
        f"{len(s['images'])} image(s), ROI {s['roi']}: {s['cost']['forward_passes']} forward passes, "
        f"{s['timings']['channels_s']:.1f} s"
    )
    print(f"  channels that help the ROI: {c['positive']}, hurt it: {c['negative']}, no effect: {c['zero']}")
    print(f"  most helpful: {_listed(s, s['ranking'], 1)}; most harmful: {_listed(s, s['ranking'][::-1], -1)}")
    print(
        f"  wrote {out / 'channels.json'}, {out / 'channels.csv'}"
        + "".join(f", {out / f}" for f in s["figures"].values())
    )
    return 0


def _listed(s: dict, order: list[int], sign: int) -> str:
    """The first three channels of ``order`` whose class is ``sign``, with their mean effects; "none" if none is."""
    unit = "dB" if s["task"] is not None else ""
    picked = [k for k in order if s["classes"][k] == sign][:3]
    return ", ".join(f"{k} ({s['effect_db'][str(k)][0]:+.3g} {unit})".replace(" )", ")") for k in picked) or "none"


if __name__ == "__main__":
    sys.exit(main())
