"""The options that the probes (cem-erf, cem-sanity, cem-channels) share: the network, the images, the task and the
ROI they probe (:func:`add_probe_options`), where and how they write (:func:`add_output_options`), and their
checks before anything is loaded (:func:`checked_probe_options`): declared and checked in one place."""

from __future__ import annotations

import argparse
from pathlib import Path

from cem_lab.cli.figure_options import add_figure_options, figure_style
from cem_lab.errors import InputError
from cem_lab.viz.style import FigureStyle  # plain settings: numpy only, no matplotlib

__all__ = ["add_output_options", "add_probe_options", "checked_probe_options", "model_name", "parse_roi"]


def add_probe_options(parser: argparse.ArgumentParser, roi_default: str = "centred, 16") -> None:
    """--model, --model-path, --images, --size, --roi, --task, --sigma."""
    parser.add_argument(
        "--model",
        default="embedded",
        help="embedded (the embedded DnCNN; default), a zoo model's (cem-zoo list) or a catalogue network's name (cem-pretrained list)",
    )
    parser.add_argument("--model-path", default=None, metavar="FILE", help="a checkpoint; spandrel detects the network")
    parser.add_argument(
        "--images", nargs="+", default=["embedded"], metavar="IMAGE", help="files, 'embedded' or standard images"
    )
    parser.add_argument("--size", type=int, default=256, metavar="N", help="centre crop of every image (default 256)")
    parser.add_argument("--roi", default=None, metavar="TOP,LEFT,SIZE", help=f"output pixels (default: {roi_default})")
    parser.add_argument("--task", default="dn", help="dn (default) | sr | dr | none")
    parser.add_argument("--sigma", type=float, default=50.0, help="dn: noise level, 0..255 scale (default 50)")


def add_output_options(parser: argparse.ArgumentParser, out_default: str) -> None:
    """--out, --device, the figure options, --no-figures, --quiet."""
    parser.add_argument("--out", type=Path, default=None, metavar="DIR", help=f"default {out_default}")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: where the model is, cpu)")
    add_figure_options(parser, "png", colour_range=False)
    parser.add_argument("--no-figures", action="store_true", help="write the numbers only")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


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


def checked_probe_options(args: argparse.Namespace) -> tuple[tuple[int, int, int] | None, FigureStyle]:
    """The ROI (None: the program's default) and the figure style of the parsed options; an
    :class:`~cem_lab.errors.InputError` for a bad ROI, a bad figure option or a missing checkpoint."""
    roi = parse_roi(args.roi) if args.roi is not None else None
    style = figure_style(args)
    if args.no_figures:
        style = FigureStyle(formats=style.formats, dpi=style.dpi, draw=False)
    if args.model_path is not None and not Path(args.model_path).is_file():
        raise InputError(f"--model-path {args.model_path}: no such file; give a checkpoint (.pth, .pt, .safetensors)")
    return roi, style


def model_name(args: argparse.Namespace) -> str:
    """The probed network's name for the default output folder: the checkpoint's stem, else ``--model``."""
    return Path(args.model_path).stem if args.model_path else args.model
