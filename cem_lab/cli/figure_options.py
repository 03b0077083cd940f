"""The figure options that cem-report, cem-figure, cem-erf and cem-sanity share (--format, --dpi, --range), read into one
:class:`~cem_lab.viz.style.FigureStyle`: the options are declared and checked in one place."""

from __future__ import annotations

import argparse
from pathlib import Path

from cem_lab.errors import InputError
from cem_lab.viz.style import FORMATS, FigureStyle  # plain settings: numpy only, no matplotlib

__all__ = ["add_figure_options", "figure_style"]


def add_figure_options(parser: argparse.ArgumentParser, format_default: str, colour_range: bool = True) -> None:
    """Add --format, --dpi and (``colour_range``: for figures of CE maps) --range to ``parser``;
    ``format_default`` says in --help what an absent --format means."""
    parser.add_argument(
        "--format",
        default=None,
        metavar="FMTS",
        help=f"comma-separated figure formats ({', '.join(FORMATS)}; default: {format_default})",
    )
    parser.add_argument("--dpi", type=int, default=None, metavar="N", help="resolution of the pixels (30 to 2400)")
    if not colour_range:
        return
    parser.add_argument(
        "--range",
        default="paper",
        metavar="RANGE",
        help="colour range of the maps: paper (the task's fixed bound, so maps compare), auto (the largest |CE|) "
        "or a number",
    )


def figure_style(args: argparse.Namespace, out: Path | None = None, label: str | None = None) -> FigureStyle:
    """The style of the parsed options; without --format, ``out``'s suffix (cem-figure) or PNG. A bad value is
    an :class:`~cem_lab.errors.InputError` naming the option."""
    formats = args.format
    if formats is None:
        suffix = out.suffix.lower().lstrip(".") if out is not None else ""
        if suffix and suffix not in FORMATS:
            raise InputError(
                f"--out {out}: the suffix .{suffix} is not a figure format ({', '.join(FORMATS)}); e.g. --out fig.pdf"
            )
        formats = suffix or "png"
    return FigureStyle.from_options(formats, args.dpi, getattr(args, "range", "paper"), label=label)
