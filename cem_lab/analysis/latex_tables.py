"""The report's tables as LaTeX: booktabs tables a paper can ``\\input`` as they are.

Each function returns the text of one ``.tex`` file: a comment line saying what it needs (the
``booktabs`` package, nothing else), then one ``table`` environment per table (a ``tabular`` with
``\\toprule`` / ``\\midrule`` / ``\\bottomrule``, a caption and a label). The numbers are written with
the same digits as the markdown tables (:func:`cem_lab.analysis.study_tables.format_number`,
:func:`cem_lab.analysis.attribution_tables.faithfulness_number`, the formats of
:data:`cem_lab.analysis.runs_markdown.MARKDOWN_COLUMNS`), and every name is escaped (model names such as
``fsrcnn_d2_w16_x4`` hold underscores).

* :func:`study_latex`: per task, the per-condition table (mean [low, high] per metric, with the images
  and units of each condition) and the paired differences (b minus a; a star where the interval
  excludes 0).
* :func:`runs_latex`: the key columns of the run table (those of ``runs.md``).
* :func:`faithfulness_latex`: the faithfulness summary of ``cem-attribution`` runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cem_lab.analysis.attribution_tables import faithfulness_number
from cem_lab.analysis.runs_markdown import MARKDOWN_COLUMNS, format_cell
from cem_lab.analysis.study_tables import STUDY_METRICS, StudyResult, format_number

__all__ = [
    "PREAMBLE",
    "faithfulness_latex",
    "latex_escape",
    "paired_latex",
    "runs_latex",
    "study_latex",
    "summary_latex",
]

#: the first line of every file written here
PREAMBLE = "% requires \\usepackage{booktabs}\n"

#: how each character that LaTeX reads as markup is written as text
_ESCAPES = {
    "\\": "\\textbackslash{}",
    "{": "\\{",
    "}": "\\}",
    "_": "\\_",
    "%": "\\%",
    "&": "\\&",
    "#": "\\#",
    "$": "\\$",
    "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}",
    "<": "\\textless{}",
    ">": "\\textgreater{}",
    "|": "\\textbar{}",
    "\u2212": "$-$",  # the markdown's minus sign (runs.md's "sum -" header)
    "\u00d7": "$\\times$",
    "\u00b7": "$\\cdot$",
    "\n": " ",
}
_ESCAPE_RE = re.compile("|".join(re.escape(c) for c in _ESCAPES))
#: the star that marks a paired difference whose interval excludes 0
STAR = "\\textsuperscript{*}"


def latex_escape(text: Any) -> str:
    """``text`` as LaTeX that prints it: ``_ % & # $ { } ~ ^ \\ < > |`` escaped, newlines as spaces."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], str(text))


def _number(text: str) -> str:
    """A formatted number with a real minus sign (a hyphen in text mode is too short); the markdown's ``-``
    for no value as a dash."""
    if text == "-":
        return "--"
    return "$-$" + text[1:] if text.startswith("-") else text


def _label(*parts: str) -> str:
    return ":".join(re.sub(r"[^A-Za-z0-9.-]+", "-", p).strip("-").lower() or "x" for p in parts)


def _table(columns: Sequence[str], align: str, rows: Sequence[Sequence[str]], caption: str, label: str) -> str:
    """One booktabs table: ``columns`` (LaTeX already), ``align`` (one letter a column), ``rows`` of LaTeX cells."""
    if len(align) != len(columns) or any(len(r) != len(columns) for r in rows):
        raise ValueError(f"a table of {len(columns)} columns got rows of {sorted({len(r) for r in rows})} cells")
    lines = [
        "\\begin{table}[tbp]",
        "\\centering",
        "\\small",
        "\\setlength{\\tabcolsep}{4pt}",
        "\\begin{tabular}{" + " ".join(align) + "}",
        "\\toprule",
        " & ".join(columns) + " \\\\",
        "\\midrule",
        *(" & ".join(_guard(r)) + " \\\\" for r in rows),
        "\\bottomrule",
        "\\end{tabular}",
        f"\\caption{{{caption}}}",
        f"\\label{{{label}}}",
        "\\end{table}",
    ]
    return "\n".join(lines) + "\n"


def _guard(row: Sequence[str]) -> list[str]:
    """A row whose first cell starts with ``[``: braced, or LaTeX would read it as the previous line's
    ``\\\\[length]`` (or ``\\midrule[width]``)."""
    return [("{}" + row[0]) if row and row[0].startswith("[") else row[0], *row[1:]] if row else []


# ----------------------------------------------------------------------------- the study
def _interval(row: pd.Series) -> str:
    """``mean [low, high]`` with the markdown's digits (``mean [n/a]`` without an interval)."""
    mean = _number(format_number(row["mean"]))
    if not np.isfinite(row["low"]):
        return f"{mean} [n/a]"
    return f"{mean} [{_number(format_number(row['low']))},\\,{_number(format_number(row['high']))}]"


def _metrics(table: pd.DataFrame) -> list[tuple[str, str, str]]:
    present = set(table["metric"])
    return [m for m in STUDY_METRICS if m[0] in present]


def _header(table: pd.DataFrame, metric: str, label: str) -> str:
    """A metric's header with its unit: ``ROI metric (dB)``; the unit from the table's ``unit`` column
    (the runs' own unit for the CE sums and the ROI metric), else :data:`STUDY_METRICS`'."""
    units: list[str] = []
    if "unit" in table.columns:
        units = [str(u) for u in dict.fromkeys(table.loc[table["metric"] == metric, "unit"].dropna()) if str(u)]
    else:
        units = [u for m, _, u in STUDY_METRICS if m == metric and u and u != "unit"]
    return latex_escape(f"{label} ({', '.join(units)})" if units else label)


def _percent(level: float) -> str:
    return f"{level * 100:g}\\,\\%"


def _task_units(group: pd.DataFrame) -> int:
    """The units (image x ROI) of a task: each condition's units plus those it lacks."""
    n = group["n_units"].astype(int)
    if "missing_units" in group.columns:
        n = n + group["missing_units"].fillna(0).astype(int)
    return int(n.max())


def summary_latex(summary: pd.DataFrame, level: float = 0.95, by: Sequence[str] = ("model",)) -> str:
    """Per task, a table of each condition's mean [interval] per metric, with its images and units (the
    first table of each task in ``study.md``); ``summary`` is :attr:`StudyResult.summary` or
    ``study_summary.csv``. No preamble line (see :func:`study_latex`)."""
    out = []
    for task, group in summary.groupby("task", sort=False):
        metrics = _metrics(group)
        columns = ["condition", "images", "units", *(_header(group, m, label) for m, label, _ in metrics)]
        rows = []
        for condition, sub in group.groupby("condition", sort=False):
            sub = sub.set_index("metric")
            first = sub.iloc[0]
            rows.append(
                [
                    latex_escape(condition),
                    str(int(first["n_images"])),
                    str(int(first["n_units"])),
                    *(_interval(sub.loc[m]) for m, _, _ in metrics),
                ]
            )
        caption = (
            f"{latex_escape(task)}: per condition ({latex_escape(', '.join(by))}), the mean over images "
            f"[{_percent(level)} nested-bootstrap interval over pictures, their crops and ROIs resampled within "
            f"them; expanded for few pictures]; {_task_units(group)} unit(s) (image $\\times$ ROI)."
        )
        out.append(_table(columns, "l" + "r" * (len(columns) - 1), rows, caption, _label("tab", "study", task)))
    return "\n".join(out)


def paired_latex(paired: pd.DataFrame, level: float = 0.95, summary: pd.DataFrame | None = None) -> str:
    """Per task, a table of the paired differences b minus a over the units both have, mean [interval] per
    metric, starred where the interval excludes 0 (the second table of each task in ``study.md``);
    ``paired`` is :attr:`StudyResult.paired` or ``study_paired.csv``, ``summary`` (optional) gives the
    metrics' units. Empty text when there is no pair."""
    if paired is None or not len(paired):
        return ""
    units = summary if summary is not None else paired
    out = []
    n_units = {t: _task_units(g) for t, g in units.groupby("task", sort=False)} if "n_units" in units.columns else {}
    for task, group in paired.groupby("task", sort=False):
        metrics = _metrics(group)
        task_units = units[units["task"] == task] if "task" in units.columns else units
        columns = [
            "b",
            "a",
            "images",
            "units",
            *(_header(task_units if len(task_units) else group, m, label) for m, label, _ in metrics),
        ]
        rows = []
        for (a, b), sub in group.groupby(["a", "b"], sort=False):
            sub = sub.set_index("metric")
            first = sub.iloc[0]
            rows.append(
                [
                    latex_escape(b),
                    latex_escape(a),
                    str(int(first["n_images"])),
                    str(int(first["n_units"])),
                    *(
                        _interval(sub.loc[m]) + (STAR if _truth(sub.loc[m, "excludes_zero"]) else "")
                        for m, _, _ in metrics
                    ),
                ]
            )
        of = n_units.get(task, int(group["n_units"].max()))
        caption = (
            f"{latex_escape(task)}: paired differences, b minus a over the units (image $\\times$ ROI) both have, "
            f"of the {of} unit(s) of the task: the mean over images [{_percent(level)} nested-bootstrap interval "
            f"over pictures, their crops and ROIs resampled within them]; {STAR} the interval excludes 0."
        )
        out.append(_table(columns, "llrr" + "r" * len(metrics), rows, caption, _label("tab", "paired", task)))
    return "\n".join(out)


def _truth(v: Any) -> bool:
    """A boolean from a DataFrame or a CSV read back (``True`` / ``"True"``)."""
    return str(v).strip().lower() == "true" if isinstance(v, str) else bool(v)


def study_latex(result: StudyResult) -> str:
    """``study.tex``: the study's tables as :func:`cem_lab.analysis.study_tables.study_markdown` gives them
    (per task the conditions, then the paired differences), as booktabs tables."""
    parts = []
    for task, summary in result.summary.groupby("task", sort=False):
        parts.append(summary_latex(summary, result.level, result.by))
        if len(result.paired):
            paired = paired_latex(result.paired[result.paired["task"] == task], result.level, summary)
            parts += [paired] if paired else []
    return PREAMBLE + "\n" + "\n".join(parts)


# ----------------------------------------------------------------------------- the runs
def _run_cell(value: Any, fmt: str) -> str:
    text = format_cell(value, fmt)
    if not text:
        return ""
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return _number(latex_escape(text)) if numeric else latex_escape(text)


def runs_latex(runs: pd.DataFrame, caption: str | None = None) -> str:
    """``runs.tex``: the key columns of the run table (those of ``runs.md``, with its digits), one row per
    run; a column empty for every run is left out."""
    cols = [c for c in MARKDOWN_COLUMNS if c[0] in runs.columns and runs[c[0]].notna().any()]
    rows = [[_run_cell(row[c], f) for c, _, f in cols] for _, row in runs.iterrows()]
    units = list(dict.fromkeys(runs["unit"].dropna().astype(str))) if "unit" in runs.columns else []
    headers = [f"{h} ({units[0]})" if c == "baseline_metric" and len(units) == 1 else h for c, h, _ in cols]
    numeric = [pd.api.types.is_numeric_dtype(runs[c]) and not pd.api.types.is_bool_dtype(runs[c]) for c, _, _ in cols]
    text = (
        caption
        or f"The {len(runs)} finished run(s) of the report: ROI metric before intervention, block shares, CE sums and reach."
    )
    return (
        PREAMBLE
        + "\n"
        + _table(
            [latex_escape(h) for h in headers],
            "".join("r" if n else "l" for n in numeric),
            rows,
            latex_escape(text),
            "tab:runs",
        )
    )


# ----------------------------------------------------------------------------- faithfulness
def _faith_interval(mean: float, low: float, high: float) -> str:
    m = _number(faithfulness_number(mean))
    return f"{m} [{_number(faithfulness_number(low))},\\,{_number(faithfulness_number(high))}]"


def _diffusion_cell(r) -> str:
    mean = getattr(r, "diffusion_index", float("nan"))
    if not np.isfinite(mean):
        return "--"
    lo, hi = getattr(r, "diffusion_index_lo", float("nan")), getattr(r, "diffusion_index_hi", float("nan"))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return _number(f"{mean:.1f}")
    return f"{_number(f'{mean:.1f}')} [{_number(f'{lo:.1f}')},\\,{_number(f'{hi:.1f}')}]"


def faithfulness_latex(summary: pd.DataFrame, attribution_runs: int | None = None) -> str:
    """``faithfulness.tex``: the faithfulness summary (:func:`cem_lab.analysis.attribution_tables.
    faithfulness_summary` or ``faithfulness_summary.csv``), the columns and digits of ``faithfulness.md``."""
    columns = [
        "intervention",
        "method",
        "runs",
        "deletion drop (dB)",
        "insertion gain (dB)",
        "best deletion",
        "drop minus CEM's (dB)",
        "rank corr.\\ with CEM",
        "diffusion index",
    ]
    rows = []
    for r in summary.itertuples():
        rows.append(
            [
                latex_escape(r.intervention),
                latex_escape(r.method),
                str(int(r.runs)),
                _faith_interval(r.deletion_drop, r.deletion_drop_lo, r.deletion_drop_hi),
                _faith_interval(r.insertion_gain, r.insertion_gain_lo, r.insertion_gain_hi),
                latex_escape(faithfulness_number(r.share_best_deletion, pct=True)),
                "--" if r.method == "cem" else _faith_interval(r.minus_cem, r.minus_cem_lo, r.minus_cem_hi),
                _number(faithfulness_number(r.rank_correlation_with_cem)),
                _diffusion_cell(r),
            ]
        )
    over = f" over {attribution_runs} cem-attribution run(s)" if attribution_runs is not None else ""
    caption = (
        f"Faithfulness{over}: mean [95\\,\\% $t$-interval over runs]; deletion drop: the ROI metric minus the "
        "area under the deletion curve; insertion gain: the insertion curve's area minus its start; best "
        "deletion: the share of runs where the method's drop is the largest; the paired difference of its "
        "drop from the CEM's; diffusion index: LAM's DI, (1 $-$ Gini) $\\times$ 100 of the block map outside the ROI "
        "(larger: more spread)."
    )
    return PREAMBLE + "\n" + _table(columns, "llrrrrrrr", rows, caption, "tab:faithfulness")
