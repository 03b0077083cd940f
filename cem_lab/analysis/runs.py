"""Finished CEM run folders -> one tidy table (a pandas DataFrame, one row per run).

A run folder is what :meth:`cem_lab.causal.result.CEMResult.save` (and the ``cem-lab`` CLI) writes:
``summary.json`` + ``cem.npz`` (+ ``done.json`` and ``config.yaml`` for a CLI run). Folders that look
like runs but are not finished (failed, interrupted, corrupt, of a newer format) are listed apart,
each with a one-line reason. Nothing here recomputes a CEM; it reads the files only.

When a run's model is a name of the embedded zoo, the zoo's metadata (study, architecture, depth,
width, attention variant, training regime, validation PSNR on the run's task, parameters) are
added as columns; a network of the paper's own zoo (``model=authors``) gets the same columns from
cem_lab's catalogue of it (no validation PSNR: cem_lab holds no record of those networks). ``source``
says where a network comes from: :data:`SOURCE_ZOO` (cem_lab's zoo), :data:`SOURCE_AUTHORS` (the
paper's zoo) or ``"other"``; the findings take their study networks from the first two.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from cem_lab.errors import InputError, MissingFileError
from cem_lab.folder_lock import describe_holder, folder_holder
from cem_lab.io import PathLike, file_signature
from cem_lab.models.authors.catalogue import AuthorsModelError
from cem_lab.models.authors.catalogue import entry as authors_entry
from cem_lab.models.zoo import ZooError, read_zoo_entry
from cem_lab.run_format import (
    CEM_FILE,
    CONFIG_FILE,
    DONE_FILE,
    ERROR_FILE,
    FORMAT_VERSION,
    RUN_MARKERS,
    STATE_FILE,
    SUMMARY_FILE,
    picture_of,
)
from cem_lab.tasks.base import task_label

__all__ = [
    "RUN_MARKERS",
    "REPORT_MARKER",
    "RUN_COLUMNS",
    "SOURCE_AUTHORS",
    "SOURCE_ZOO",
    "STUDY_SOURCES",
    "ZOO_COLUMNS",
    "SkippedRun",
    "collect_runs",
    "find_run_folders",
    "read_run",
    "run_row",
    "task_label",
    "zoo_info",
]

#: written into a report folder by ``cem-report``: such folders are never searched for runs
REPORT_MARKER = "report.json"
#: keys a finished run's summary.json must hold
_REQUIRED = (
    "metric",
    "unit",
    "baseline_metric",
    "block",
    "scale",
    "counts",
    "shares",
    "total_positive_effect",
    "total_negative_effect",
    "reach_px",
)

RUN_COLUMNS: tuple[str, ...] = (
    "run",
    "folder",
    "model",
    "image",
    "picture",
    "task",
    "task_label",
    "scale",
    "block",
    "roi",
    "metric",
    "unit",
    "baseline_metric",
    "blocks_outside_roi",
    "n_positive",
    "n_negative",
    "n_zero",
    "share_positive",
    "share_negative",
    "share_zero",
    "total_positive_effect",
    "total_negative_effect",
    "effect_max",
    "effect_min",
    "effect_range",
    "reach_max_px",
    "reach_mean_px",
    "forward_passes",
    "estimator",
    "samples",
    "coarse",
    "intervention",
    "sampler",
    "mode",
    "roi_placement",
)
#: ``source`` of a network of cem_lab's own trained zoo, and of one of the paper's (the authors') zoo
SOURCE_ZOO, SOURCE_AUTHORS = "zoo", "authors"
#: the sources whose networks carry the study columns (family, depth, width, attention, training)
STUDY_SOURCES: tuple[str, ...] = (SOURCE_ZOO, SOURCE_AUTHORS)
ZOO_COLUMNS: tuple[str, ...] = (
    "zoo",
    "source",
    "study",
    "zoo_label",
    "architecture",
    "depth",
    "width",
    "attention_variant",
    "training",
    "val_psnr",
    "val_baseline_psnr",
    "val_gain",
    "parameters",
)


@dataclass(frozen=True)
class SkippedRun:
    """A folder that looks like a run but is not a finished one, and why."""

    folder: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.folder}: {self.reason}"


# ----------------------------------------------------------------------------- finding folders
def _holds_run(files: Iterable[str]) -> bool:
    return any(m in files for m in RUN_MARKERS)


def find_run_folders(paths: Sequence[PathLike], exclude: Sequence[PathLike] = ()) -> list[Path]:
    """Every folder under ``paths`` (each a run folder or a folder above run folders) that holds a
    run file (:data:`RUN_MARKERS`), sorted. Hidden folders, the insides of run folders, report
    folders (they hold :data:`REPORT_MARKER`) and the folders in ``exclude`` are not searched.
    A path that does not exist or is not a folder is a :class:`FileNotFoundError`."""
    skip = {Path(p).resolve() for p in exclude}
    found: set[Path] = set()
    for path in paths:
        root = Path(path)
        if not root.exists():
            raise MissingFileError(f"{root} does not exist; give a run folder or a folder above run folders")
        if not root.is_dir():
            raise MissingFileError(f"{root} is not a folder; give a run folder or a folder above run folders")
        for here, dirs, files in os.walk(root.resolve()):
            folder = Path(here)
            if folder in skip or REPORT_MARKER in files:
                dirs[:] = []
                continue
            if _holds_run(files):
                found.add(folder)
                dirs[:] = []  # figures/, images/, .hydra/: no runs inside a run
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(found)


# ----------------------------------------------------------------------------- one folder
def _first_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError as err:
        return f"(unreadable: {err})"
    return lines[0] if lines else "(empty error.txt)"


def _read_json(path: Path) -> tuple[Any | None, str]:
    try:
        return json.loads(path.read_text()), ""
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return None, str(err).splitlines()[0] if str(err) else type(err).__name__


def read_run(folder: PathLike) -> tuple[dict | None, str]:
    """(summary, "") for a finished run folder; (None, reason) for anything else."""

    folder = Path(folder)
    holder = folder_holder(folder)
    if holder is not None:  # a run that is being written: whatever it holds now is not its result
        return None, f"in progress: being written by {describe_holder(holder)}; report it when it ends"
    if (folder / ERROR_FILE).is_file():
        return None, f"failed: {_first_line(folder / ERROR_FILE)}"
    if not (folder / SUMMARY_FILE).is_file():
        if (folder / STATE_FILE).is_file():
            return None, "interrupted: state.npz but no summary.json; rerun its command to resume it"
        return None, "no summary.json: not a finished CEM run"
    summary, err = _read_json(folder / SUMMARY_FILE)
    if summary is None:
        return None, f"corrupt summary.json ({err}); rerun the run or delete the folder"
    if not isinstance(summary, dict):
        return None, "corrupt summary.json (not a JSON object); rerun the run or delete the folder"
    version = summary.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        return None, f"corrupt summary.json (format_version {version!r} is not an integer)"
    if version > FORMAT_VERSION:
        return None, (
            f"summary.json has format_version {version}; this cem_lab reads up to {FORMAT_VERSION}: upgrade cem_lab"
        )
    if version < 1:
        return None, f"unsupported summary.json format_version {version} (this cem_lab reads 1..{FORMAT_VERSION})"
    missing = [k for k in _REQUIRED if k not in summary]
    if missing:
        return None, f"corrupt summary.json (missing {', '.join(missing)})"
    npz_reason = _check_npz(folder / CEM_FILE)
    if npz_reason:
        return None, npz_reason
    done_path = folder / DONE_FILE
    if (folder / CONFIG_FILE).is_file() and not done_path.is_file():
        return None, "cem-lab run not marked finished (config.yaml but no done.json); rerun its command"
    if done_path.is_file():
        done, err = _read_json(done_path)
        if not isinstance(done, dict):
            return None, f"corrupt done.json ({err or 'not a JSON object'}); rerun its command"
        if done.get("fingerprint") != summary.get("fingerprint"):
            return None, "done.json and summary.json are of different runs (fingerprints differ); rerun its command"
        changed = _changed_input(done.get("inputs"))
        if changed:
            return None, (
                f"stale: {changed} changed after this map was computed (e.g. a retrained "
                "zoo model); delete the folder and rerun its command to recompute it"
            )
    return summary, ""


def _changed_input(inputs: Any) -> str:
    """The first input file that ``done.json`` recorded (path, size, mtime) and that now exists
    with another size or modification time, as "key (path)"; "" when none. Files that are gone
    are not reported: run folders are often read on another machine than the one that ran them."""
    if not isinstance(inputs, Mapping):
        return ""
    for key, sig in inputs.items():
        if not (isinstance(sig, list) and len(sig) == 3 and isinstance(sig[0], str)):
            continue  # a folder's digest, or a format this version does not know
        path = Path(sig[0])
        try:
            if path.is_file() and file_signature(path) != list(sig[1:]):
                return f"{key} ({path})"
        except OSError:
            continue
    return ""


def _check_npz(path: Path) -> str:
    if not path.is_file():
        return "no cem.npz (the effect map); rerun the run"
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("effect", "roi_mask") if k not in z.files]
    except Exception as err:  # a truncated or foreign file: numpy raises several kinds
        return f"corrupt cem.npz ({type(err).__name__}); rerun the run"
    return f"corrupt cem.npz (missing {', '.join(missing)})" if missing else ""


# ----------------------------------------------------------------------------- one row
def _get(d: Any, *keys: str, default: Any = np.nan) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d or d[k] is None:
            return default
        d = d[k]
    return d


def run_row(summary: Mapping[str, Any], folder: PathLike, run: str) -> dict[str, Any]:
    """The table row (RUN_COLUMNS, then ZOO_COLUMNS) of one finished run.

    ``samples``: interventions per block (exhaustive) or per block of the fine stage
    (coarse-to-fine, whose coarse stage has ``coarse``); ``roi``: "top left size" in output pixels.
    """
    settings = summary.get("settings") or {}
    task = settings.get("task") or {}
    est = settings.get("estimator") or {}
    est_name = est.get("name", np.nan)
    samples = est.get("samples") if est_name == "exhaustive" else est.get("fine", est.get("samples"))
    label = task_label(task) if task else "unknown"
    row: dict[str, Any] = {
        "run": run,
        "folder": str(Path(folder)),
        "model": summary.get("model", np.nan),
        "image": summary.get("image", np.nan),
        "picture": picture_of(summary["image"]) if summary.get("image") else np.nan,  # the crop's source picture
        "task": task.get("name", np.nan),
        "task_label": label,
        "scale": summary["scale"],
        "block": summary["block"],
        "roi": " ".join(str(v) for v in summary.get("roi", [])) or np.nan,
        "metric": summary["metric"],
        "unit": summary["unit"],
        "baseline_metric": summary["baseline_metric"],
        "blocks_outside_roi": summary.get("blocks_outside_roi", np.nan),
        **{f"n_{k}": _get(summary, "counts", k) for k in ("positive", "negative", "zero")},
        **{f"share_{k}": _get(summary, "shares", k) for k in ("positive", "negative", "zero")},
        "total_positive_effect": summary["total_positive_effect"],
        "total_negative_effect": summary["total_negative_effect"],
        "effect_max": _get(summary, "effect_max", "value"),
        "effect_min": _get(summary, "effect_min", "value"),
        "effect_range": _get(summary, "effect_range"),
        "reach_max_px": _get(summary, "reach_px", "max"),
        "reach_mean_px": _get(summary, "reach_px", "mean"),
        "forward_passes": _get(summary, "forward_passes"),
        "estimator": est_name,
        "samples": np.nan if samples is None else samples,
        "coarse": _get(est, "coarse"),
        "intervention": _get(settings, "intervention", "name"),
        "sampler": _get(settings, "intervention", "sampler"),
        "mode": _get(summary, "mode"),
        # a placed ROI's rule inputs (size, index, count, seed, align, margin), as JSON; NaN for a given ROI
        "roi_placement": json.dumps((summary.get("roi_placement") or {}).get("inputs"), sort_keys=True)
        if (summary.get("roi_placement") or {}).get("inputs")
        else np.nan,
    }
    model = row["model"]
    info = summary.get("model_info") or {}
    if "authors_class" in info:  # a network of the paper's zoo (model=authors)
        row.update(authors_info(str(info.get("name", model))))
    else:
        row.update(zoo_info(model, label) if isinstance(model, str) else _empty_zoo())
    return row


def authors_info(name: str) -> dict[str, Any]:
    """The study columns of a network of the paper's zoo (model=authors): its family, depth and width (from the
    authors' name), attention variant, training regime and parameters, from cem_lab's catalogue of it."""
    try:
        e = authors_entry(name)
    except AuthorsModelError:
        return {**_empty_zoo(), "source": SOURCE_AUTHORS}
    s = e.study_attrs or {}
    return {
        **_empty_zoo(),
        "source": SOURCE_AUTHORS,
        "study": s.get("study", np.nan),
        "zoo_label": name,
        "architecture": s.get("family", e.authors_class.rsplit(":", 1)[-1] if e.authors_class else np.nan),
        "depth": s.get("depth", np.nan),
        "width": s.get("width", np.nan),
        "attention_variant": s.get("attention", np.nan),
        "training": s.get("training", np.nan),
        "parameters": e.parameters if e.parameters is not None else np.nan,
    }


# ----------------------------------------------------------------------------- zoo metadata
def _empty_zoo() -> dict[str, Any]:
    return {**{k: np.nan for k in ZOO_COLUMNS}, "zoo": False, "source": "other"}


@cache
def _zoo_entry(name: str) -> dict | None:

    try:
        return read_zoo_entry(name)
    except (ZooError, OSError, yaml.YAMLError):  # not a zoo name, or an unreadable entry
        return None


def _attention_variant(model: Mapping[str, Any]) -> Any:
    """RCAN's channel-attention variant: global / none / half / local4 / local16 / adaptive2 / ..."""
    if "attention" not in model:
        return np.nan
    kind = str(model["attention"])
    if kind in ("local", "adaptive"):
        return f"{kind}{model.get('pool_size', '')}"
    if kind == "global" and model.get("half"):
        return "half"
    return kind


def zoo_info(name: str, label: str) -> dict[str, Any]:
    """The zoo columns (ZOO_COLUMNS) of model ``name`` on task ``label``; NaN when not a zoo model.

    ``depth`` is the ``depth`` knob (RCAN: groups x blocks); ``val_*`` are the validation numbers of
    the task ``label`` (NaN when the model was not validated on it); ``training`` is ``mixed`` for a
    model trained on several tasks, else ``single-task``.
    """
    entry = _zoo_entry(name)
    if entry is None:
        return _empty_zoo()
    model = entry.get("model") or {}
    depth = model.get("depth")
    if depth is None and model.get("groups") is not None and model.get("blocks") is not None:
        depth = int(model["groups"]) * int(model["blocks"])
    val_tasks = _get(entry, "validation", "tasks", default={}) or {}
    trained_on = entry.get("tasks")
    mixed = (isinstance(trained_on, list) and len(trained_on) > 1) or len(val_tasks) > 1
    val = val_tasks.get(label) or {}
    return {
        "zoo": True,
        "source": SOURCE_ZOO,
        "study": _get(entry, "zoo", "study"),
        "zoo_label": _get(entry, "zoo", "label"),
        "architecture": str(model.get("_target_", "")).rsplit(".", 1)[-1] or np.nan,
        "depth": np.nan if depth is None else depth,
        "width": model.get("width", np.nan),
        "attention_variant": _attention_variant(model),
        "training": "mixed" if mixed else "single-task",
        "val_psnr": val.get("psnr", np.nan),
        "val_baseline_psnr": val.get("baseline_psnr", np.nan),
        "val_gain": val.get("gain", np.nan),
        "parameters": entry.get("parameters", np.nan),
    }


# ----------------------------------------------------------------------------- the table
def _run_names(folders: Sequence[Path]) -> list[str]:
    """Short unique names: each folder relative to the folder all of them share."""
    if len(folders) == 1:
        return [folders[0].name]
    common = Path(os.path.commonpath([str(f) for f in folders]))
    return [f.relative_to(common).as_posix() if f != common else f.name for f in folders]


def collect_runs(paths: Sequence[PathLike], exclude: Sequence[PathLike] = ()) -> tuple[pd.DataFrame, list[SkippedRun]]:
    """The table of the finished runs under ``paths`` and the folders skipped (with reasons).

    Raises :class:`FileNotFoundError` for a path that does not exist and :class:`ValueError` when
    no finished run is found.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise InputError("no paths given: name run folders or folders above them")
    folders = find_run_folders(paths, exclude)
    _zoo_entry.cache_clear()  # the zoo grows while models train: read it afresh
    finished: list[tuple[Path, dict]] = []
    skipped: list[SkippedRun] = []
    for folder in folders:
        summary, reason = read_run(folder)
        if summary is None:
            skipped.append(SkippedRun(folder, reason))
        else:
            finished.append((folder, summary))
    if not finished:
        where = ", ".join(str(p) for p in paths)
        extra = (
            f" ({len(skipped)} unfinished folder(s) skipped: {skipped[0]}{' ...' if len(skipped) > 1 else ''})"
            if skipped
            else ""
        )
        raise InputError(
            f"no finished CEM run under {where}{extra}. A run folder holds summary.json and cem.npz "
            "(written by cem-lab or cem_lab.compute_cem(..., output_dir=...)), and done.json when "
            "cem-lab made it; give such folders or folders above them"
        )
    names = _run_names([f for f, _ in finished])
    rows = [run_row(s, f, n) for (f, s), n in zip(finished, names)]
    table = pd.DataFrame(rows, columns=list(RUN_COLUMNS + ZOO_COLUMNS))
    # families together, in the order of their knobs (depth 2 before depth 16), then by name
    order = ["study", "architecture", "task_label", "training", "attention_variant", "depth", "width", "model", "run"]
    table = table.sort_values(order, na_position="last", kind="stable", key=_natural_key)
    return table.reset_index(drop=True), skipped


def _natural_key(column: pd.Series) -> pd.Series:
    """Sort numbers as numbers; text as text (so the object columns of mixed NaN / str sort)."""
    if pd.api.types.is_numeric_dtype(column):
        return column
    return column.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
