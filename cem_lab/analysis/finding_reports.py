"""The paper's three findings, each a table set, figures and a verdict, from the finished run folders.

``cem-report PATHS --finding receptive_field|channel_attention|multitask`` calls :func:`finding_report`,
which writes ``finding_<name>.md`` (printed), ``finding_<name>_*.csv`` and ``figures/finding_*.png``
next to the run table. Nothing is recomputed; every number of the markdown comes from the CSVs it
writes beside it. The statistics are :mod:`cem_lab.analysis.findings`; the verdict rule is
:func:`cem_lab.analysis.findings.verdict`, applied to comparisons named in each section.
Each finding is a module: :mod:`~cem_lab.analysis.finding_receptive_field`,
:mod:`~cem_lab.analysis.finding_channel_attention` and :mod:`~cem_lab.analysis.finding_multitask`;
their shared tables and cells are :mod:`~cem_lab.analysis.finding_tables`, their figures
:mod:`~cem_lab.analysis.finding_figures`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from cem_lab.analysis.finding_channel_attention import channel_attention_finding
from cem_lab.analysis.finding_multitask import multitask_finding
from cem_lab.analysis.finding_receptive_field import receptive_field_finding
from cem_lab.analysis.finding_tables import FindingError
from cem_lab.io import write_text

__all__ = ["FINDINGS", "finding_report"]

FINDINGS: dict[str, Callable[[pd.DataFrame, Path, Path], dict[str, Any]]] = {
    "receptive_field": receptive_field_finding,
    "channel_attention": channel_attention_finding,
    "multitask": multitask_finding,
}


def finding_report(name: str, runs: pd.DataFrame, out: Path) -> dict[str, Any]:
    """Write ``finding_<name>.md`` (+ CSVs, figures) into ``out`` from the run table; return what it wrote."""
    if name not in FINDINGS:
        raise FindingError(f"unknown finding {name!r}; the findings are: {', '.join(FINDINGS)}")
    res = FINDINGS[name](runs, Path(out), Path(out) / "figures")
    md_path = Path(out) / f"finding_{name}.md"
    write_text(md_path, res["markdown"])
    res["files"]["markdown"] = str(md_path)
    return res
