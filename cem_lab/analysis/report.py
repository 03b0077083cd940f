"""A study report from finished CEM run folders: ``runs.csv``, ``runs.md``, ``skipped.txt`` and figures.

Layout of a report folder (every file written atomically; a rerun replaces it cleanly)::

    runs.csv          the full table, one row per finished run (cem_lab.analysis.runs)
    runs.md           a readable markdown table of the key columns
    skipped.txt       the folders that are not finished runs, one per line with the reason
    report.json       what was read and written (also marks the folder as a report: never searched for runs)
    figures/*.png     cem_grid, shares, reach_vs_psnr, depth_width_<family>_<task>, single_vs_mixed
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cem_lab.analysis.runs import REPORT_MARKER, RUN_MARKERS, collect_runs
from cem_lab.errors import InputError
from cem_lab.io import PathLike, atomic_path, write_json, write_text

__all__ = ["MARKDOWN_COLUMNS", "markdown_table", "write_report"]

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


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    try:
        text = fmt.format(value)
    except (ValueError, TypeError):
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(runs: pd.DataFrame) -> str:
    """The key columns of the run table as a markdown table (empty cells for missing values)."""
    cols = [c for c in MARKDOWN_COLUMNS if c[0] in runs.columns]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for _, row in runs.iterrows():
        lines.append("| " + " | ".join(_cell(row[c], f) for c, _, f in cols) + " |")
    return "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_").lower()


def _figures(runs: pd.DataFrame, folder: Path) -> dict[str, str]:
    from cem_lab.analysis import study_figures as sf  # lazy: matplotlib, only when a report draws

    out = {
        "cem_grid": sf.plot_cem_grid(runs, folder / "cem_grid.png"),
        "shares": sf.plot_shares(runs, folder / "shares.png"),
        "reach_vs_psnr": sf.plot_reach_vs_psnr(runs, folder / "reach_vs_psnr.png"),
    }
    for arch, task in sf.depth_width_families(runs):
        name = f"depth_width_{_slug(arch)}_{_slug(task)}"
        out[name] = sf.plot_depth_width(runs, folder / f"{name}.png", arch, task)
    if len(sf.multitask_pairs(runs)):
        out["single_vs_mixed"] = sf.plot_single_vs_mixed(runs, folder / "single_vs_mixed.png")
    return out


def _faithfulness(paths: Sequence[PathLike], out: Path) -> dict[str, Any]:
    """faithfulness.csv (per run, intervention and method), faithfulness_summary.csv and
    faithfulness.md (over runs, with intervals) of the `cem-attribution` runs under ``paths``."""
    from cem_lab.analysis.attribution_tables import (  # lazy: read only for cem-attribution runs
        faithfulness_markdown,
        faithfulness_rows,
        faithfulness_summary,
        find_attribution_folders,
    )

    names = ("faithfulness.csv", "faithfulness_summary.csv", "faithfulness.md")
    folders = find_attribution_folders(paths, exclude=[out])
    if not folders:
        for n in names:  # a stale table from an earlier report
            (out / n).unlink(missing_ok=True)
        return {"faithfulness_csv": None, "faithfulness_md": None}
    rows = faithfulness_rows(folders)
    summary = faithfulness_summary(rows)
    with atomic_path(out / names[0]) as tmp:
        rows.to_csv(tmp, index=False)
    with atomic_path(out / names[1]) as tmp:
        summary.to_csv(tmp, index=False)
    write_text(
        out / names[2],
        f"Faithfulness over {len(folders)} cem-attribution runs (mean [95 % interval]; "
        "deletion drop: the ROI metric minus the deletion curve's area)\n\n" + faithfulness_markdown(summary),
    )
    return {
        "faithfulness_csv": str(out / names[0]),
        "faithfulness_summary_csv": str(out / names[1]),
        "faithfulness_md": str(out / names[2]),
        "attribution_runs": len(folders),
    }


_STUDY_FILES = ("study_summary.csv", "study_paired.csv", "study_profile.csv", "study.md")


def _study(runs: pd.DataFrame, out: Path, by: Sequence[str], reference: Any, explicit: bool) -> dict[str, Any]:
    """The population statistics (cem_lab.analysis.study_tables) when some condition has several units.

    Runs that cannot be pooled are refused: nothing pooled is written, and the refusal (with the groups
    found) is returned as ``study_refused``; with ``explicit`` (the caller named ``by``) it is raised."""
    from cem_lab.analysis.study_tables import (  # lazy: scipy.stats and matplotlib, only for a population
        StudyError,
        study_markdown,
        study_statistics,
    )
    from cem_lab.viz.population_figures import (  # lazy: matplotlib, only for a population
        plot_distance_profile,
        plot_study_intervals,
    )

    for n in _STUDY_FILES:  # a stale table from an earlier report
        (out / n).unlink(missing_ok=True)
    units = runs.assign(_u=runs["image"].astype(str) + runs["roi"].astype(str))
    if not explicit and units.groupby(["task_label", "model"], dropna=False)["_u"].nunique().max() < 2:
        return {"study": None, "study_refused": None, "study_figures": {}}
    try:
        res = study_statistics(runs, by=by, reference=reference)
    except StudyError as err:
        if explicit:
            raise
        return {"study": None, "study_refused": str(err), "study_figures": {}}
    res.summary.attrs["level"] = res.level
    for name, table in zip(_STUDY_FILES[:3], (res.summary, res.paired, res.profile)):
        with atomic_path(out / name) as tmp:
            table.to_csv(tmp, index=False)
    write_text(out / _STUDY_FILES[3], study_markdown(res))
    fig_dir = out / "figures"
    figures = {"study_intervals": plot_study_intervals(res.summary, fig_dir / "study_intervals.png")}
    if len(res.profile):  # no block outside any ROI: no profile to draw (the tables say so), not a failed report
        figures["distance_profile"] = plot_distance_profile(res.profile, fig_dir / "distance_profile.png")
    return {
        "study": str(out / _STUDY_FILES[3]),
        "study_summary_csv": str(out / _STUDY_FILES[0]),
        "study_paired_csv": str(out / _STUDY_FILES[1]),
        "study_profile_csv": str(out / _STUDY_FILES[2]),
        "study_refused": None,
        "study_figures": figures,
        "study_missing": res.missing,
    }


def write_report(
    paths: Sequence[PathLike],
    out_dir: PathLike,
    by: Sequence[str] | None = None,
    reference: str | None = None,
    finding: str | None = None,
) -> dict[str, Any]:
    """Read the finished runs under ``paths`` and write the report into ``out_dir``.

    When a condition (``by``: run-table columns or settings keys, default the model) has runs on several
    units (images x ROIs), the study statistics are written too: ``study.md``, ``study_summary.csv``,
    ``study_paired.csv``, ``study_profile.csv`` and two figures (cem_lab.analysis.study_tables); runs that
    cannot be pooled are refused (``study_refused`` holds why; with ``by`` given, it is raised).
    ``finding`` (receptive_field, channel_attention or multitask) adds that finding's tables, figures and
    verdict (:mod:`cem_lab.analysis.finding_reports`): ``finding_md``, ``finding_verdict``.

    Returns what it wrote: ``out_dir``, ``runs_csv``, ``runs_md``, ``skipped_txt`` (None when no
    folder was skipped), ``report_json``, ``figures`` (name -> path), and what it read: ``runs``
    (the DataFrame) and ``skipped`` (list of :class:`~cem_lab.analysis.runs.SkippedRun`).
    Raises FileNotFoundError for a missing path, ValueError when there is no finished run or when
    ``out_dir`` is itself a run folder.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = Path(out_dir)
    if out.is_dir() and any((out / m).exists() for m in RUN_MARKERS):
        raise InputError(f"{out} is a CEM run folder; write the report elsewhere (e.g. {out / 'report'})")
    for p in map(Path, paths):
        if p.exists() and (out.resolve() == p.resolve() or out.resolve() in p.resolve().parents):
            raise InputError(
                f"the report folder {out} is {p} or a folder above it, so it would hide the runs; "
                f"write the report into a subfolder (e.g. {p / 'report'}) or elsewhere"
            )
    runs, skipped = collect_runs(paths, exclude=[out])
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"out_dir": str(out)}
    with atomic_path(out / "runs.csv") as tmp:
        runs.to_csv(tmp, index=False)
    written["runs_csv"] = str(out / "runs.csv")
    write_text(out / "runs.md", markdown_table(runs))
    written["runs_md"] = str(out / "runs.md")
    skipped_path = out / "skipped.txt"
    if skipped:
        write_text(skipped_path, "".join(f"{s}\n" for s in skipped))
        written["skipped_txt"] = str(skipped_path)
    else:
        skipped_path.unlink(missing_ok=True)  # a stale list from an earlier report
        written["skipped_txt"] = None
    written.update(_faithfulness(paths, out))
    fig_dir = out / "figures"
    written["figures"] = _figures(runs, fig_dir)
    written.update(_study(runs, out, tuple(by) if by else ("model",), reference, explicit=by is not None))
    written["figures"].update(written.pop("study_figures"))
    if finding:
        from cem_lab.analysis.finding_reports import (
            finding_report,  # lazy: matplotlib and scipy.stats, only with --finding
        )

        res = finding_report(finding, runs, out)
        written["figures"].update(res["figures"])
        written["finding_md"] = res["files"]["markdown"]
        written["finding_verdict"] = res["verdict"]
    keep = {Path(p).name for p in written["figures"].values()}
    for stale in fig_dir.glob("*.png"):
        if stale.name not in keep:
            stale.unlink()
    write_json(
        out / REPORT_MARKER,
        {
            "kind": "cem-report",
            "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "paths": [str(Path(p).resolve()) for p in paths],
            "runs": len(runs),
            "skipped": [{"folder": str(s.folder), "reason": s.reason} for s in skipped],
            "files": {k: v for k, v in written.items() if k not in ("out_dir", "study_missing")},
        },
    )
    written["report_json"] = str(out / REPORT_MARKER)
    written["runs"] = runs
    written["skipped"] = skipped
    return written
