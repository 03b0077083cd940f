"""The run folder of one map, its file names and its format version: one reader and one writer.

A run folder holds:

- ``cem.npz`` (:data:`CEM_FILE`): per-block arrays ``effect`` (dB, thresholded), ``effect_raw``
  (unthresholded estimate), ``stderr``, ``ci_low``, ``ci_high``, ``counts`` (samples per block),
  ``classification`` (-1/0/+1), ``roi_mask``, plus ``roi`` (top, left, size), ``block``, ``scale``,
  ``grid_shape``, ``input_shape``, ``output_shape``, ``baseline_metric``, ``metric``, ``unit`` and
  ``format_version``;
- ``summary.json`` (:data:`SUMMARY_FILE`): counts and shares, effect range and where, reach, forward
  passes, timings, device, and the settings of the run;
- ``images/``: the degraded input, the restored output and the ground truth (PNG);
- ``figures/``: the CE map overlay, colour bar, pie chart, restored image with the ROI box and a
  panel of all four (drawn by :mod:`cem_lab.viz`, not by the core);
- while it runs, and after: ``state.npz`` (:data:`STATE_FILE`), the checkpoint a rerun resumes from;
- written by the CLI: ``config.yaml`` (the resolved config), ``done.json`` (a finished run's
  identity, for skipping it) or ``error.txt`` (why it failed).

The analysis layer reads only these files. A reader refuses a file of a newer
:data:`FORMAT_VERSION` than it knows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from cem_lab.errors import InputError, MissingFileError
from cem_lab.io import PathLike, write_json, write_npz

#: the version of cem.npz, summary.json and state.npz (a reader accepts this and older)
FORMAT_VERSION = 1

CEM_FILE = "cem.npz"
SUMMARY_FILE = "summary.json"
STATE_FILE = "state.npz"
DONE_FILE = "done.json"
ERROR_FILE = "error.txt"
CONFIG_FILE = "config.yaml"
IMAGES_DIR = "images"
FIGURES_DIR = "figures"
#: files any of which marks a folder as a run folder (finished, running or failed)
RUN_MARKERS: tuple[str, ...] = (SUMMARY_FILE, CEM_FILE, STATE_FILE, DONE_FILE, ERROR_FILE)


_CROP_NAME = re.compile(r"^(?P<picture>.+)_crop\d+_\d+_\d+x\d+$")


def crop_name(picture: str, top: int, left: int, height: int, width: int) -> str:
    """The image name a run records for a crop of ``picture`` (``image_crop``):
    ``<picture>_crop<top>_<left>_<height>x<width>``."""
    return f"{picture}_crop{top}_{left}_{height}x{width}"


def picture_of(image: str) -> str:
    """The picture an image name comes from: ``image`` less its :func:`crop_name` suffix (a whole image is
    its own picture). Crops of one picture share its content, so a study resamples pictures, not crops."""
    m = _CROP_NAME.match(str(image))
    return m.group("picture") if m else str(image)


def check_version(version: int, what: PathLike) -> None:
    """Refuse a file written by a newer cem_lab."""
    if int(version) > FORMAT_VERSION:
        raise InputError(
            f"{what} has format version {int(version)}; this cem_lab reads up to {FORMAT_VERSION}: upgrade cem_lab"
        )


def write_cem_arrays(folder: PathLike, arrays: dict[str, Any]) -> Path:
    """Write ``cem.npz`` (atomically) with ``arrays`` and the format version; its path."""
    path = Path(folder) / CEM_FILE
    write_npz(path, **arrays, format_version=FORMAT_VERSION)
    return path


def read_cem_arrays(folder: PathLike) -> dict[str, np.ndarray]:
    """The arrays of a finished run's ``cem.npz`` (FileNotFoundError when there is none)."""
    path = Path(folder) / CEM_FILE
    if not path.is_file():
        raise MissingFileError(f"no finished CEM in {folder}: {path.name} is missing")
    with np.load(path, allow_pickle=False) as z:
        check_version(z["format_version"], path)
        return {k: z[k] for k in z.files}


def write_summary(folder: PathLike, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` (atomically); its path."""
    path = Path(folder) / SUMMARY_FILE
    write_json(path, summary)
    return path


def read_summary(folder: PathLike, missing_ok: bool = True) -> dict[str, Any] | None:
    """The ``summary.json`` of a run folder; None when it has none (``missing_ok=False``: MissingFileError)."""
    path = Path(folder) / SUMMARY_FILE
    if not path.is_file():
        if not missing_ok:
            raise MissingFileError(f"no summary in {folder}: {path.name} is missing")
        return None
    return json.loads(path.read_text())


def state_path(folder: PathLike) -> Path:
    """Where a run folder's checkpoint lives."""
    return Path(folder) / STATE_FILE


def write_state(path: PathLike, arrays: dict[str, Any]) -> None:
    """Write a checkpoint (atomically: a kill leaves the previous one)."""
    write_npz(path, **arrays)


def read_state(path: PathLike) -> dict[str, np.ndarray]:
    """The arrays of the checkpoint ``path`` (whatever np.load raises when it cannot be read)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
