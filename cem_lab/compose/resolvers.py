"""The OmegaConf resolvers of the configs (conf/*.yaml), registered when this module is imported.

``cem_run_name`` (a run folder's name from its overrides), ``cem_sweep_name`` (a sweep folder's name:
:mod:`cem_lab.bookkeeping.sweep_record`), ``cem_neutral_keys`` (the keys left out of folder names:
:mod:`cem_lab.bookkeeping.neutral_keys`), ``cem_zoo_file``, ``cem_standard_image`` and
``cem_folder_image`` (input files). Every console script imports this module before Hydra composes
its config, and so do the processes that launchers start for sweep jobs (through the task function's
module).
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cem_lab.bookkeeping.folder_names import resolve_sweep_name, run_name
from cem_lab.bookkeeping.neutral_keys import neutral_keys
from cem_lab.causal.settings import DEFAULT_CHECKPOINT_S, CEMSettings
from cem_lab.compose.zoo_recipes import select
from cem_lab.errors import InputError
from cem_lab.models.zoo import ZOO_DIR
from cem_lab.standard_images import standard_image_file as installed_file


def zoo_file(name: str) -> str:
    """The resolver ``cem_zoo_file``: the weights file of zoo model ``name``. ``model=zoo`` records
    it, so a finished run is recognised only while those weights are unchanged (done.json keeps
    the size and modification time of every file its config names)."""
    return str(ZOO_DIR / f"{name}.safetensors")


def standard_image_file(name: str) -> str:
    """The resolver ``cem_standard_image`` (conf/dataset/standard.yaml): the installed file of a standard
    test image (cem_lab.standard_images)."""
    return installed_file(name)


def folder_image_file(folder: str, index: Any) -> str:
    """The resolver ``cem_folder_image`` (conf/dataset/folder.yaml): image number ``index`` (0-based, by
    file name) of ``folder``, so that a study sweeps a folder with ``folder.index=range(0,N)``."""
    # lazy: cem_lab.training.data imports Lightning (seconds), needed only with dataset=folder
    from cem_lab.training.data import find_images

    root = Path(str(folder)).expanduser()
    if not root.is_dir():
        raise InputError(f"dataset=folder: {root} is not a folder; give folder.dir=PATH, a folder of images")
    files = find_images(root)  # refuses a folder without images, naming the file types
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(files):
        raise InputError(
            f"dataset=folder: folder.index={index!r}, but {root} holds {len(files)} image(s): use an "
            f"index in [0, {len(files) - 1}] (sweep them all with folder.index=range(0,{len(files)}))"
        )
    return str(files[index])


def setting_default(name: str) -> Any:
    """The resolver ``cem_default`` (conf/cem/*.yaml): the default of the map setting ``name``, written
    once, in :class:`~cem_lab.causal.settings.CEMSettings`."""
    if str(name) == "checkpoint_every_s":  # the run's checkpoint cadence, not a setting of the map
        return DEFAULT_CHECKPOINT_S
    return CEMSettings.default(str(name))


_DEFAULT_REF = re.compile(r"\$\{cem_default:([A-Za-z_][A-Za-z0-9_]*)\}")


def show_defaults(text: str) -> str:
    """``text`` (a config as ``--help`` prints it, unresolved) with every ``${cem_default:KEY}`` replaced by the
    value it stands for, so that the help shows ``block: 8`` rather than the reference to where 8 is written."""

    def value(match: re.Match) -> str:
        v = setting_default(match[1])
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    return _DEFAULT_REF.sub(value, text)


def defaults_in_help(body: Callable[[], Any]) -> Callable[[], Any]:
    """``body`` (a Hydra main) whose ``--help`` output shows the defaults' values (:func:`show_defaults`)."""

    def run() -> Any:
        if not {"--help", "-h"} & set(sys.argv[1:]):
            return body()
        out = io.StringIO()
        try:
            with redirect_stdout(out):
                return body()
        finally:
            sys.stdout.write(show_defaults(out.getvalue()))
            sys.stdout.flush()

    return run


def zoo_models(study: str, suffix: str = "") -> str:
    """The resolver ``cem_zoo_models`` (conf/experiment/ presets): the zoo models a study compares, in the
    zoo's order, as a sweep (``a,b,c``); ``suffix`` keeps those whose name ends with it (``_sr_x4``). The
    family is written once, in the zoo's recipes (:mod:`cem_lab.compose.zoo_recipes`)."""
    names = [r.name for r in select(study=str(study)) if r.name.endswith(str(suffix))]
    if not names:
        raise InputError(f"the zoo has no model of study {study!r} whose name ends with {suffix!r}")
    return ",".join(names)


RESOLVERS = {
    "cem_run_name": run_name,
    "cem_sweep_name": resolve_sweep_name,
    "cem_default": setting_default,
    "cem_neutral_keys": neutral_keys,
    "cem_zoo_file": zoo_file,
    "cem_standard_image": standard_image_file,
    "cem_folder_image": folder_image_file,
    "cem_zoo_models": zoo_models,
}


def register_resolvers() -> None:
    """Register every resolver of :data:`RESOLVERS` that is not registered yet."""
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
