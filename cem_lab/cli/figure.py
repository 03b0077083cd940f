"""``cem-figure``: the paper's figure layouts from finished CEM run folders (no map is recomputed).

    cem-figure row runs/cem/edsr_dn runs/cem/rcan_dn --out figs/rf_row.pdf --range auto
    cem-figure row runs/sweeps/cem/ca_dn --out figs/ca.png --labels "none,CA,SA" --context
    cem-figure teaser runs/cem/edsr_sr runs/cem/edsr_dn runs/cem/edsr_dr --out figs/teaser.pdf
    cem-figure pie runs/cem/edsr_dn runs/cem/rcan_dn --out figs/pies.svg
    cem-figure panel runs/cem/edsr_dn --out figs/edsr_dn_panel.png --dpi 300
    cem-figure row runs/sweeps/cem/study_ca_dn --where 'image=monarch*' --where 'roi=48 *' --out figs/ca_dn.pdf

Layouts: row (one row of models on one task, one colour bar: the receptive-field and channel-attention
figures), teaser (one network over its tasks, a row per task), pie (the pies of several runs side by side),
panel (one run's panel). Each RUN is a run folder or a folder above run folders (their finished runs, in
order). --out's suffix gives the format unless --format names several (png, pdf, svg). One line is printed
per file written. Labels are the runs' model names unless --labels gives one per run. --where picks runs out
of a sweep by a run-table column (model, image, roi, block ...) or a setting, matched as a shell glob.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cem_lab.bookkeeping.clean_errors import OneLineParser, run_cli
from cem_lab.cli.figure_options import add_figure_options, figure_style
from cem_lab.errors import InputError

__all__ = ["main"]

PROG = "cem-figure"
_HELP = {
    "row": "one row of models on one task, one shared colour bar",
    "teaser": "one network over its tasks, a row per task (input, restored, map, pie)",
    "pie": "the pies of several runs side by side, one legend",
    "panel": "one run's panel (input, restored with the ROI, map, pie)",
}


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    layouts = parser.add_subparsers(dest="layout", required=True, metavar="LAYOUT", parser_class=OneLineParser)
    for name, text in _HELP.items():
        sub = layouts.add_parser(name, help=text, description=text)
        sub.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="a run folder or a folder above run folders")
        sub.add_argument("--out", type=Path, required=True, metavar="FILE", help="the figure's file (suffix: format)")
        add_figure_options(sub, "--out's suffix")
        sub.add_argument(
            "--where",
            action="append",
            default=[],
            metavar="KEY=GLOB",
            help="keep the runs whose run-table column or setting matches (repeatable), e.g. --where 'image=monarch*'",
        )
        if name in ("row", "pie"):
            sub.add_argument("--labels", default=None, metavar="A,B,...", help="one label per run (default: model)")
            sub.add_argument("--mixed-tasks", action="store_true", help="let the runs be of several tasks")
        if name in ("row", "pie", "teaser"):
            sub.add_argument("--title", default="", help="a title above the figure")
        if name == "row":
            sub.add_argument(
                "--context",
                action="store_true",
                help="first columns: the degraded input with the ROI and the ground truth around the ROI",
            )
    return parser


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cem-figure``; returns the exit status (0 done, 2 bad input; Ctrl-C: one line, 130)."""
    return run_cli(lambda: _figure(argv), PROG)


def _figure(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        style = figure_style(args, out=args.out)
    except InputError as err:
        return _error(str(err))
    for run in args.runs:
        if not run.exists():
            return _error(f"{run} does not exist; give a run folder or a folder above run folders")
    labels = None
    if getattr(args, "labels", None) is not None:
        labels = [s.strip() for s in args.labels.split(",")]
        if not all(labels):
            return _error(f"--labels {args.labels!r} has an empty label; give one non-empty label per run")
    # lazy: matplotlib, pandas and torch load only once the arguments are good (not for --help)
    from cem_lab.analysis.paper_layouts import write_figure

    written = write_figure(
        args.layout,
        args.runs,
        args.out,
        labels=labels,
        style=style,
        mixed_tasks=getattr(args, "mixed_tasks", False),
        context=getattr(args, "context", False),
        title=getattr(args, "title", ""),
        where=args.where,
    )
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
