"""``cem-report``: tables and figures of a study from finished CEM run folders (no CEM is recomputed).

    cem-report runs/sweeps/cem/my_sweep                    # report in runs/sweeps/cem/my_sweep/report
    cem-report runs/cem runs/sweeps/cem --out reports/all  # several paths: --out is required
    cem-report runs/sweeps/cem/my_sweep --latex            # the tables as booktabs LaTeX too (*.tex)
    cem-report runs/sweeps/cem/my_sweep --format png,pdf --label '{model} b{block}'  # vector figures, own labels

Each PATH is a run folder or any folder above run folders (searched recursively). The report
holds runs.csv, runs.md, skipped.txt (folders that are not finished runs, with the reason) and
figures/ (see cem_lab/analysis/report.py). A study over images x ROIs (a condition, by default a model,
with runs on several units) also gets study.md and its tables: per condition the mean and a 95 %
nested-bootstrap interval (images resampled, ROIs within them) of the block shares, the CE sums, the
effective distance and the ROI metric; paired differences between conditions over the units both have;
and the CE profile by distance. Runs of different settings are not pooled (they are listed; --by names
what to compare, e.g. --by model,block). --latex also writes the tables as booktabs LaTeX a paper can
\\input as they are (runs.tex, study.tex, faithfulness.tex; \\usepackage{booktabs} is all they need).
--format png,pdf,svg writes each figure in each format, --dpi sets the pixels of PNGs, --range the colour
range of the map grids (paper: the task's fixed bound, auto: the largest |CE|, or a number), --label the
run labels (run-table columns and settings in braces).
From Python, cem_lab.analysis.report.read_report(FOLDER) gives a report's tables back as DataFrames.
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

PROG = "cem-report"


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="a run folder or a folder above run folders"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the report goes (default with one PATH: PATH/report; required with several)",
    )
    parser.add_argument(
        "--by",
        default=None,
        metavar="KEYS",
        help="what the study compares, comma-separated run-table columns or settings keys "
        "(default: model); e.g. --by model,block or --by estimator",
    )
    parser.add_argument(
        "--reference",
        default=None,
        metavar="CONDITION",
        help="pair every condition with this one only (default: every pair)",
    )
    add_figure_options(parser, "png")
    parser.add_argument(
        "--label",
        default=None,
        metavar="TEMPLATE",
        help="run labels in the figures from run-table columns and settings, e.g. --label '{model} b{block}' "
        "(default: the model and what tells its runs apart)",
    )
    parser.add_argument(
        "--finding",
        default=None,
        choices=("receptive_field", "channel_attention", "multitask"),
        help="add one of the paper's findings: its tables, figures and verdict (finding_NAME.md)",
    )
    parser.add_argument(
        "--latex",
        action="store_true",
        help="also write the tables as booktabs LaTeX: runs.tex, study.tex and faithfulness.tex when the report has them",
    )
    return parser


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cem-report``; returns the exit status (0 done, 2 bad input; Ctrl-C: one line, 130)."""
    return run_cli(lambda: _report(argv), PROG)


def _report(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.out is None:
        if len(args.paths) > 1:
            return _error(f"--out DIR is required when several paths are given ({len(args.paths)} given)")
        args.out = args.paths[0] / "report"
    for path in args.paths:
        if not path.exists():
            return _error(f"{path} does not exist; give a run folder or a folder above run folders")
    try:
        style = figure_style(args, label=args.label)
    except InputError as err:
        return _error(str(err))
    from cem_lab.analysis.report import write_report  # lazy: matplotlib and pandas, not for --help or a bad argument

    by = [k.strip() for k in args.by.split(",") if k.strip()] if args.by else None
    try:
        written = write_report(
            args.paths,
            args.out,
            by=by,
            reference=args.reference,
            finding=args.finding,
            latex=args.latex,
            style=style,
        )
    except (ValueError, OSError) as err:
        return _error(str(err))
    skipped = written["skipped"]
    print(f"read {len(written['runs'])} finished run(s) from {', '.join(map(str, args.paths))}")
    print(f"skipped {len(skipped)} folder(s)" + (":" if skipped else ""))
    for s in skipped:
        print(f"  {s}")
    named = ("runs_tex", "study", "study_tex", "faithfulness_tex", "finding_md")
    files = ["runs.csv", "runs.md"] + [Path(written[k]).name for k in named if written.get(k)]
    print(f"report: {written['out_dir']} ({', '.join(files)}, {len(written['figures'])} figure(s) in figures/)")
    print()
    print(Path(written["runs_md"]).read_text(), end="")
    if written.get("study"):
        print()
        print(Path(written["study"]).read_text(), end="")
    elif written.get("study_refused"):
        print(f"\nstudy statistics: {written['study_refused']}", file=sys.stderr)
    if written.get("finding_md"):
        print()
        print(Path(written["finding_md"]).read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
