"""runs.md: the key columns of a report's run table, as markdown (the LaTeX table of
:mod:`cem_lab.analysis.latex_tables` takes the same columns, headers and formats from here)."""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["MARKDOWN_COLUMNS", "format_cell", "markdown_table"]

#: the columns of runs.md: (column, header, format)
MARKDOWN_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("run", "run", "{}"),
    ("model", "model", "{}"),
    ("task_label", "task", "{}"),
    ("image", "image", "{}"),
    ("block", "block", "{:g}"),
    ("baseline_metric", "ROI metric", "{:.2f}"),
    ("share_positive", "positive", "{:.1%}"),
    ("share_negative", "negative", "{:.1%}"),
    ("share_zero", "zero", "{:.1%}"),
    ("total_positive_effect", "sum +", "{:.2f}"),
    ("total_negative_effect", "sum \u2212", "{:.2f}"),
    ("reach_mean_px", "reach mean (px)", "{:.1f}"),
    ("reach_max_px", "reach max (px)", "{:.1f}"),
    ("val_psnr", "val PSNR (dB)", "{:.2f}"),
    ("study", "model made for study", "{}"),  # the zoo study a network belongs to, not the sweep
)


def format_cell(value: Any, fmt: str) -> str:
    """A run-table value as its column's format writes it (``""`` when missing; as text when the format does
    not fit), before any markup's escaping: runs.md and runs.tex take their cells from here."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _cell(value: Any, fmt: str) -> str:
    return format_cell(value, fmt).replace("|", "\\|").replace("\n", " ")


def markdown_table(runs: pd.DataFrame) -> str:
    """The key columns of the run table as a markdown table (empty cells for missing values)."""
    cols = [c for c in MARKDOWN_COLUMNS if c[0] in runs.columns]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for _, row in runs.iterrows():
        lines.append("| " + " | ".join(_cell(row[c], f) for c, _, f in cols) + " |")
    return "\n".join(lines) + "\n"
