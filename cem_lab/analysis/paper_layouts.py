"""The paper's figure layouts drawn from finished run folders (``cem-figure``; no map is recomputed).

:func:`write_figure` finds the finished runs under the paths given (:func:`~cem_lab.analysis.runs.collect_runs`),
checks that they can share the layout asked for, labels them (the model name of each run's summary, unless
``labels`` are given), draws with :mod:`cem_lab.viz.paper_figures` (or the single-run panel of
:func:`~cem_lab.viz.result_figures.plot_result`) and writes the figure in every format of the style:

- ``row``: one row of models on one task, one colour bar (the receptive-field / channel-attention figures);
- ``teaser``: one network over its tasks, a row per task;
- ``pie``: the pies of several runs side by side;
- ``panel``: one run's panel (input, restored, map, pie).

Every refusal (a folder that is not a finished run, a row that mixes tasks, a label count that does not match)
is one :class:`~cem_lab.errors.InputError` naming the fix, raised before anything is written.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cem_lab.analysis.runs import collect_runs, find_run_folders, read_run
from cem_lab.analysis.study_tables import run_settings
from cem_lab.causal.result import CEMResult
from cem_lab.errors import InputError
from cem_lab.io import PathLike
from cem_lab.viz.canvas import figure_path, save_figure
from cem_lab.viz.paper_figures import overlay_row, pie_row, teaser
from cem_lab.viz.result_figures import plot_result
from cem_lab.viz.style import FigureStyle, use_style

__all__ = ["LAYOUTS", "FoundRuns", "find_runs", "select_runs", "write_figure"]

#: the layouts :func:`write_figure` draws
LAYOUTS: tuple[str, ...] = ("row", "teaser", "pie", "panel")

#: the order of a teaser's rows (other tasks after these, by name)
_TASK_ORDER = {"sr": 0, "dn": 1, "dr": 2, "jpeg": 3}


@dataclass(frozen=True)
class FoundRuns:
    """The finished runs under some paths, in the order the paths were given (one row per run of
    :func:`~cem_lab.analysis.runs.collect_runs`'s table), and the folders skipped below them (with reasons)."""

    table: pd.DataFrame
    skipped: tuple[str, ...]


def find_runs(paths: Sequence[PathLike]) -> FoundRuns:
    """The finished runs under ``paths`` (each a run folder or a folder above run folders), path by path; a path
    that is itself an unfinished run folder, or holds no finished run, is an :class:`InputError`."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise InputError("no run given: name run folders or folders above them")
    tables, skipped = [], []
    for path in paths:
        if find_run_folders([path]) == [Path(path).resolve()]:  # a run folder itself: it must be finished
            summary, reason = read_run(path)
            if summary is None:
                raise InputError(f"{path} is not a finished run ({reason}); give a finished run folder")
        table, skips = collect_runs([path])
        tables.append(table)
        skipped += [str(s) for s in skips]
    table = pd.concat(tables, ignore_index=True).drop_duplicates("folder").reset_index(drop=True)
    return FoundRuns(table, tuple(dict.fromkeys(skipped)))


def select_runs(table: pd.DataFrame, where: Sequence[str]) -> pd.DataFrame:
    """The runs of ``table`` that match every ``KEY=PATTERN`` of ``where``: KEY a run-table column (``model``,
    ``image``, ``roi``, ``block`` ...) or a setting of the runs (``estimator.fine``), PATTERN a shell-style glob
    (``image=monarch*``, ``model=rcan_*``). A bad condition, or one that no run matches, is refused in one line
    that lists what there is."""
    for cond in where:
        key, sep, pattern = str(cond).partition("=")
        key, pattern = key.strip(), pattern.strip()
        if not sep or not key or not pattern:
            raise InputError(f"--where {cond!r}: give KEY=PATTERN, e.g. --where 'image=monarch*'")
        if key in table.columns:
            values = table[key].astype(str)
        else:
            settings = [run_settings(Path(f)) for f in table["folder"]]
            if not any(f"setting:{key}" in st for st in settings):
                known = sorted({k[8:] for st in settings for k in st})
                raise InputError(
                    f"--where {key}: neither a run-table column nor a setting of these runs; columns: "
                    f"{', '.join(map(str, table.columns))}; settings: {', '.join(known)}"
                )
            values = pd.Series([str(st.get(f"setting:{key}")) for st in settings], index=table.index)
        keep = values.map(lambda v, pat=pattern: fnmatch.fnmatchcase(v, pat))
        if not keep.any():
            shown = list(dict.fromkeys(values))
            raise InputError(
                f"--where {key}={pattern}: no run matches; its values here are "
                f"{', '.join(shown[:12])}{' ...' if len(shown) > 12 else ''}"
            )
        table = table[keep]
    return table.reset_index(drop=True)


def _name(row: pd.Series) -> str:
    model = row["model"]
    return str(model) if isinstance(model, str) and model else Path(str(row["folder"])).name


def _labels(table: pd.DataFrame, labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        return [_name(r) for _, r in table.iterrows()]
    labels = [str(s).strip() for s in labels]
    if len(labels) != len(table):
        raise InputError(
            f"{len(labels)} label(s) for {len(table)} run(s) ({', '.join(_name(r) for _, r in table.iterrows())}); "
            "give one label per run, in their order, or leave the labels out"
        )
    return labels


def _one_task(table: pd.DataFrame, mixed_tasks: bool) -> None:
    tasks = list(dict.fromkeys(table["task_label"].astype(str)))
    if len(tasks) > 1 and not mixed_tasks:
        which = "; ".join(
            f"{t}: {', '.join(_name(r) for _, r in table[table['task_label'].astype(str) == t].iterrows())}"
            for t in tasks
        )
        raise InputError(
            f"the row mixes tasks ({which}); give the runs of one task (or allow it: --mixed-tasks, mixed_tasks=True)"
        )


def _teaser_rows(table: pd.DataFrame) -> pd.DataFrame:
    models = list(dict.fromkeys(_name(r) for _, r in table.iterrows()))
    if len(models) > 1:
        raise InputError(
            f"a teaser is one network over its tasks, but the runs are of {', '.join(models)}; "
            "give the runs of one network"
        )
    twice = table[table["task_label"].duplicated(keep=False)]
    if len(twice):
        task = str(twice["task_label"].iloc[0])
        folders = ", ".join(str(f) for f in twice[twice["task_label"] == task]["folder"])
        raise InputError(f"the teaser has two runs of {task} ({folders}); give one run per task")
    order = table["task"].map(lambda t: (_TASK_ORDER.get(str(t), 9), str(t)))
    return table.assign(_order=order).sort_values("_order", kind="stable").drop(columns="_order")


def write_figure(
    layout: str,
    paths: Sequence[PathLike],
    out: PathLike,
    *,
    labels: Sequence[str] | None = None,
    style: FigureStyle | None = None,
    mixed_tasks: bool = False,
    context: bool = False,
    title: str = "",
    where: Sequence[str] = (),
) -> list[str]:
    """Draw ``layout`` (:data:`LAYOUTS`) of the finished runs under ``paths`` and write it at ``out`` (its suffix
    replaced by each format of ``style``; default PNG); returns the files written. ``labels``: one per run
    instead of the model names (row and pie); ``mixed_tasks``: let a row or pie hold several tasks; ``context``:
    a row starts with the degraded input and the ground truth around the ROI; ``title`` above the figure;
    ``where``: keep only the runs that match (:func:`select_runs`; ``["image=monarch*", "roi=48 *"]``)."""
    if layout not in LAYOUTS:
        raise InputError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    style = style or FigureStyle()
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out} is a folder; give a file name for the figure, e.g. {out / (layout + '.pdf')}")
    table = select_runs(find_runs(paths).table, where)
    if layout == "panel":
        if len(table) != 1:
            raise InputError(
                f"a panel is one run, but {len(table)} were found ({', '.join(map(str, table['folder']))}); "
                "give one run folder"
            )
        if labels is not None:
            raise InputError("a panel takes no labels (its title is the run's own); leave --labels out")
    elif layout == "teaser":
        table = _teaser_rows(table)
        if labels is not None:
            raise InputError("a teaser labels its rows by task; leave --labels out")
    else:
        _one_task(table, mixed_tasks)
        names = _labels(table, labels)
    results = [CEMResult.load(f) for f in table["folder"]]
    with use_style(style):
        if layout == "panel":
            fig = plot_result(results[0], kind="panel", fix="--range auto")
        elif layout == "teaser":
            model = _name(table.iloc[0])
            results_by_task = dict(zip(table["task_label"].astype(str), results))
            tasks = f"{len(results)} task{'s' if len(results) > 1 else ''}"
            fig = teaser(results_by_task, title=title or f"{model}: one network, {tasks}")
        elif layout == "row":
            fig = overlay_row(results, names, context=context, title=title)
        else:
            fig = pie_row(results, names, title=title)
        save_figure(fig, out)
    return [str(figure_path(out, fmt)) for fmt in style.formats]
