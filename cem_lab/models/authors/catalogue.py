"""The paper's model zoo as data: every ``MODEL_LIST`` name of the authors' repository with its checkpoint file,
task, scale, layout and how cem_lab builds it (``catalogue.yaml`` beside this module, the facts written once).

Names are the authors' (``EDSR-64-16``, ``RCAN_pooling4``, ``SwinIR_DN``); ``entry(name)`` refuses an unknown
one naming the nearest. :func:`coverage` counts what loads and how.
"""

from __future__ import annotations

import difflib
import importlib.util
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cem_lab.errors import InputError

CATALOGUE_FILE = Path(__file__).with_name("catalogue.yaml")
#: where the authors publish the checkpoints (their README links the Google Drive folder of ModelZoo/models/)
AUTHORS_REPO = "https://github.com/J-FHu/CEM"
#: how cem_lab builds a network: its own implementation, spandrel's detection, or not yet
BUILDS = ("own", "spandrel", "none")
#: the tasks a catalogue entry names; "mixed": one network trained on SR (bicubic-upsampled input), DN and DR
TASKS = ("sr", "dn", "dr", "mixed")
#: the packages a ``build: spandrel`` entry may need beyond spandrel (its ``package``): the module it imports as and
#: the cem_lab extra that installs it (pyproject.toml)
PACKAGES = {"spandrel-extra-arches": ("spandrel_extra_arches", "extra-arches")}


class AuthorsModelError(InputError):
    """A name, folder or checkpoint of the paper's model zoo that cem_lab cannot use as asked."""


@dataclass(frozen=True)
class AuthorsEntry:
    """One ``MODEL_LIST`` name: what the authors publish and how cem_lab builds it."""

    name: str
    file: str
    task: str
    scale: int
    layout: str | list[str]
    build: str
    authors_class: str | None = None
    arch: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    spandrel: str | None = None
    #: the package beyond spandrel that has the architecture (PACKAGES), and the licence of its code
    package: str | None = None
    licence: str | None = None
    #: the authors' forward clamps the output to [0, 1]
    clamp: bool = False
    fixture: str | None = None
    why: str | None = None
    note: str | None = None
    degradation: str | None = None
    parameters: int | None = None
    #: what the paper's studies compare: family, depth and width (from the name), attention variant, training
    study_attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks it may be mapped on: its own, or all three for a multi-task network."""
        return ("sr", "dn", "dr") if self.task == "mixed" else (self.task,)


@cache
def catalogue() -> dict[str, AuthorsEntry]:
    """Every entry, by the authors' name, in their order."""
    raw = yaml.safe_load(CATALOGUE_FILE.read_text())
    out = {}
    for name, rec in raw.items():
        entry = AuthorsEntry(name=name, **rec)
        if entry.build not in BUILDS or entry.task not in TASKS:
            raise ValueError(f"{CATALOGUE_FILE}: {name} has build {entry.build!r}, task {entry.task!r}")
        if entry.package is not None and (entry.package not in PACKAGES or not entry.licence or not entry.arch):
            raise ValueError(f"{CATALOGUE_FILE}: {name} needs package {entry.package!r} with its licence and arch")
        out[name] = entry
    return out


def entry(name: str) -> AuthorsEntry:
    """The entry of ``name``; an unknown name is refused with the nearest known ones."""
    known = catalogue()
    if name in known:
        return known[name]
    near = difflib.get_close_matches(str(name), list(known), n=4, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
    raise AuthorsModelError(
        f"model.name={name!r} is not in the paper's model zoo{hint} (the {len(known)} names of the authors' "
        f"MODEL_LIST, with how cem_lab loads each: docs/authors_zoo.md)"
    )


def package_need(e: AuthorsEntry) -> str:
    """What ``e`` needs beyond spandrel, its licence and the install line (``e.package`` set)."""
    extra = PACKAGES[str(e.package)][1]
    return f"needs {e.package} (its {e.spandrel} code is under the {e.licence}): pip install 'cem_lab[{extra}]'"


def missing_package(e: AuthorsEntry) -> str | None:
    """:func:`package_need` when the package ``e`` needs beyond spandrel is not installed here, else None."""
    if e.package is None:
        return None
    try:
        if importlib.util.find_spec(PACKAGES[e.package][0]) is not None:
            return None
    except (ImportError, ValueError):  # a broken install: as good as none
        pass
    return package_need(e)


def file_key(e: AuthorsEntry) -> str | None:
    """The top-level key under which the authors' file of ``e`` holds its tensors (None: a plain state dict), for
    writing a file as theirs are: BasicSR's ``params``, MPRNet's ``state_dict``."""
    layout = e.layout if isinstance(e.layout, str) else e.layout[0]
    if layout == "plain":
        return None
    return "state_dict" if layout.startswith("mprnet") else "params"


def coverage() -> dict[str, int]:
    """How many entries cem_lab builds itself, through spandrel, or not yet."""
    counts = Counter(e.build for e in catalogue().values())
    return {b: counts.get(b, 0) for b in BUILDS}
