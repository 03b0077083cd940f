"""A study report from finished CEM run folders: ``runs.csv``, ``runs.md``, ``skipped.txt`` and figures.

Layout of a report folder (every file written atomically; a rerun replaces it cleanly)::

    runs.csv          the full table, one row per finished run (cem_lab.analysis.runs)
    runs.md           a readable markdown table of the key columns
    study.md, study_summary.csv, study_paired.csv, study_profile.csv
                      the study statistics, when a condition has runs on several units (images x ROIs)
    faithfulness.md, faithfulness.csv, faithfulness_summary.csv
                      the faithfulness of the cem-attribution runs, when there are some
    runs.tex, study.tex, faithfulness.tex
                      with latex=True (cem-report --latex): those tables as booktabs LaTeX
                      (cem_lab.analysis.latex_tables), each when its markdown is written
    skipped.txt       the folders that are not finished runs, one per line with the reason
    report.json       what was read and written (also marks the folder as a report: never searched for runs)
    figures/          cem_grid, shares, reach_vs_psnr, depth_width_<family>_<task>, single_vs_mixed (PNG, or the
                      formats of --format)

:func:`read_report` gives a finished report's tables back as DataFrames (nothing is recomputed).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cem_lab.analysis.runs import REPORT_MARKER, RUN_MARKERS, collect_runs
from cem_lab.analysis.runs_markdown import MARKDOWN_COLUMNS, markdown_table
from cem_lab.errors import InputError, MissingFileError
from cem_lab.io import PathLike, atomic_path, write_json, write_text
from cem_lab.viz.style import FORMATS, FigureStyle  # plain settings (no matplotlib)

__all__ = ["MARKDOWN_COLUMNS", "REPORT_TABLES", "markdown_table", "read_report", "write_report"]


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


def _faithfulness(paths: Sequence[PathLike], out: Path, latex: bool) -> dict[str, Any]:
    """faithfulness.csv (per run, intervention and method), faithfulness_summary.csv and
    faithfulness.md (over runs, with intervals) of the `cem-attribution` runs under ``paths``; with
    ``latex``, faithfulness.tex too."""
    from cem_lab.analysis.attribution_tables import (  # lazy: read only for cem-attribution runs
        faithfulness_markdown,
        faithfulness_rows,
        faithfulness_summary,
        find_attribution_folders,
    )

    names = ("faithfulness.csv", "faithfulness_summary.csv", "faithfulness.md", "faithfulness.tex")
    folders = find_attribution_folders(paths, exclude=[out])
    if not latex or not folders:
        (out / names[3]).unlink(missing_ok=True)  # a stale table from an earlier report
    if not folders:
        for n in names:
            (out / n).unlink(missing_ok=True)
        return {"faithfulness_csv": None, "faithfulness_md": None, "faithfulness_tex": None}
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
    tex = None
    if latex:
        from cem_lab.analysis.latex_tables import faithfulness_latex  # lazy: only with latex

        tex = str(out / names[3])
        write_text(tex, faithfulness_latex(summary, len(folders)))
    return {
        "faithfulness_csv": str(out / names[0]),
        "faithfulness_summary_csv": str(out / names[1]),
        "faithfulness_md": str(out / names[2]),
        "faithfulness_tex": tex,
        "attribution_runs": len(folders),
    }


_STUDY_FILES = ("study_summary.csv", "study_paired.csv", "study_profile.csv", "study.md", "study.tex")


def _study(
    runs: pd.DataFrame, out: Path, by: Sequence[str], reference: Any, explicit: bool, latex: bool
) -> dict[str, Any]:
    """The population statistics (cem_lab.analysis.study_tables) when some condition has several units
    (with ``latex``, study.tex too).

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
        return {"study": None, "study_refused": None, "study_figures": {}, "study_tex": None}
    try:
        res = study_statistics(runs, by=by, reference=reference)
    except StudyError as err:
        if explicit:
            raise
        return {"study": None, "study_refused": str(err), "study_figures": {}, "study_tex": None}
    res.summary.attrs["level"] = res.level
    for name, table in zip(_STUDY_FILES[:3], (res.summary, res.paired, res.profile)):
        with atomic_path(out / name) as tmp:
            table.to_csv(tmp, index=False)
    write_text(out / _STUDY_FILES[3], study_markdown(res))
    tex = None
    if latex:
        from cem_lab.analysis.latex_tables import study_latex  # lazy: only with latex

        tex = str(out / _STUDY_FILES[4])
        write_text(tex, study_latex(res))
    fig_dir = out / "figures"
    figures = {"study_intervals": plot_study_intervals(res.summary, fig_dir / "study_intervals.png")}
    if len(res.profile):  # no block outside any ROI: no profile to draw (the tables say so), not a failed report
        figures["distance_profile"] = plot_distance_profile(res.profile, fig_dir / "distance_profile.png")
    return {
        "study": str(out / _STUDY_FILES[3]),
        "study_summary_csv": str(out / _STUDY_FILES[0]),
        "study_paired_csv": str(out / _STUDY_FILES[1]),
        "study_profile_csv": str(out / _STUDY_FILES[2]),
        "study_tex": tex,
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
    latex: bool = False,
    style: FigureStyle | None = None,
) -> dict[str, Any]:
    """Read the finished runs under ``paths`` and write the report into ``out_dir``.

    When a condition (``by``: run-table columns or settings keys, default the model) has runs on several
    units (images x ROIs), the study statistics are written too: ``study.md``, ``study_summary.csv``,
    ``study_paired.csv``, ``study_profile.csv`` and two figures (cem_lab.analysis.study_tables); runs that
    cannot be pooled are refused (``study_refused`` holds why; with ``by`` given, it is raised).
    ``finding`` (receptive_field, channel_attention or multitask) adds that finding's tables, figures and
    verdict (:mod:`cem_lab.analysis.finding_reports`): ``finding_md``, ``finding_verdict``.
    ``latex`` adds the tables as booktabs LaTeX (:mod:`cem_lab.analysis.latex_tables`): ``runs_tex``,
    ``study_tex`` and ``faithfulness_tex`` (each None when not written; a stale one is removed).
    ``style`` (:class:`~cem_lab.viz.style.FigureStyle`): the figures' formats, dpi, colour range of the map
    grids and a run-label template; a figure file of another format or of a figure not drawn is removed.

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
    style = style or FigureStyle()
    if style.label:
        from cem_lab.analysis.study_figures import template_fields  # lazy: matplotlib

        template_fields(runs, style.label)  # an unknown field is refused before anything is written
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"out_dir": str(out)}
    with atomic_path(out / "runs.csv") as tmp:
        runs.to_csv(tmp, index=False)
    written["runs_csv"] = str(out / "runs.csv")
    write_text(out / "runs.md", markdown_table(runs))
    written["runs_md"] = str(out / "runs.md")
    written["runs_tex"] = None
    if latex:
        from cem_lab.analysis.latex_tables import runs_latex  # lazy: only with latex

        written["runs_tex"] = str(out / "runs.tex")
        write_text(out / "runs.tex", runs_latex(runs))
    else:
        (out / "runs.tex").unlink(missing_ok=True)  # a stale table from an earlier report
    skipped_path = out / "skipped.txt"
    if skipped:
        write_text(skipped_path, "".join(f"{s}\n" for s in skipped))
        written["skipped_txt"] = str(skipped_path)
    else:
        skipped_path.unlink(missing_ok=True)  # a stale list from an earlier report
        written["skipped_txt"] = None
    written.update(_faithfulness(paths, out, latex))
    fig_dir = out / "figures"
    from cem_lab.viz.style import use_style  # lazy: matplotlib, only once the report draws

    with use_style(style):
        written["figures"] = _figures(runs, fig_dir)
        explicit = by is not None
        written.update(_study(runs, out, tuple(by) if by else ("model",), reference, explicit=explicit, latex=latex))
        written["figures"].update(written.pop("study_figures"))
        if finding:
            from cem_lab.analysis.finding_reports import (
                finding_report,  # lazy: matplotlib and scipy.stats, only with --finding
            )

            res = finding_report(finding, runs, out)
            written["figures"].update(res["figures"])
            written["finding_md"] = res["files"]["markdown"]
            written["finding_verdict"] = res["verdict"]
    keep = {Path(p).stem for p in written["figures"].values()}
    for stale in fig_dir.glob("*"):
        fmt = stale.suffix.lstrip(".")
        if fmt in FORMATS and (stale.stem not in keep or fmt not in style.formats):
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


#: the tables of a report folder that :func:`read_report` reads: name -> file
REPORT_TABLES: dict[str, str] = {
    "runs": "runs.csv",
    "study_summary": "study_summary.csv",
    "study_paired": "study_paired.csv",
    "study_profile": "study_profile.csv",
    "faithfulness": "faithfulness.csv",
    "faithfulness_summary": "faithfulness_summary.csv",
}


def read_report(folder: PathLike) -> dict[str, pd.DataFrame]:
    """The tables of a finished report folder (written by :func:`write_report` / ``cem-report``) as
    DataFrames, without re-running it: ``runs`` always, and ``study_summary``, ``study_paired``,
    ``study_profile``, ``faithfulness`` and ``faithfulness_summary`` when the report has them (see
    :data:`REPORT_TABLES`; a table the report wrote without rows is an empty DataFrame).

    Raises MissingFileError when ``folder`` does not exist and InputError when it is not a report folder
    (no ``report.json``)."""
    root = Path(folder)
    if not root.is_dir():
        raise MissingFileError(f"{root} does not exist; give a folder that cem-report wrote (e.g. PATH/report)")
    if not (root / REPORT_MARKER).is_file():
        raise InputError(
            f"{root} is not a cem-report folder (no {REPORT_MARKER}); give the folder cem-report wrote "
            f"(e.g. {root / 'report'}) or write one with cem-report {root}"
        )
    tables = {}
    for name, file in REPORT_TABLES.items():
        path = root / file
        if path.is_file():
            try:
                tables[name] = pd.read_csv(path)
            except pd.errors.EmptyDataError:  # a table without rows or columns
                tables[name] = pd.DataFrame()
    if "runs" not in tables:
        raise InputError(f"{root} has {REPORT_MARKER} but no runs.csv; write the report again with cem-report")
    return tables
