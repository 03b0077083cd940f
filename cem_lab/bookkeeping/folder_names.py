"""Folder names from command-line overrides: a run's (``cem_run_name``) and a sweep's (``cem_sweep_name``).

Both are stable (rerunning a command finds its folder), readable (the overrides themselves) and safe
for file systems and shells: path values are cut to their file names, other characters become ``_``,
and whenever anything was shortened a hash of the full overrides is appended, so that two different
runs or sweeps never share a folder. A user may name a run's folder instead (``run_name=NAME``: a short
name of safe characters, checked here); whatever the name, the folder's own identity check refuses a run of
other settings in it (its checkpoint's fingerprint, :mod:`cem_lab.causal.resume`).
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser

from cem_lab.bookkeeping.neutral_keys import CEM_NEUTRAL_KEYS
from cem_lab.errors import InputError

#: the environment variable through which a sweep's name reaches its jobs (set by SweepProgress)
SWEEP_ENV = "CEM_LAB_SWEEP_NAME"
_UNSAFE = re.compile(r"[^A-Za-z0-9=,._+\-\[\]]+")
#: a user's folder name (run_name=): letters, digits, '.', '_', '-'; no leading '.' or '-'; at most 100
_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def safe_name(text: str) -> str:
    """``text`` with every run of characters outside ``A-Za-z0-9=,._+-[]`` replaced by ``_``."""
    return _UNSAFE.sub("_", text)


def with_digest(name: str, full: str, limit: int) -> str:
    """``name`` cut to ``limit`` characters with 8 hex digits of the SHA-1 of ``full`` appended."""
    digest = hashlib.sha1(full.encode()).hexdigest()[:8]
    return f"{name[:limit]}-{digest}" if name else digest


def shorten_value(value: str) -> str:
    """Path pieces of a (possibly comma-separated) override value reduced to their file names."""
    pieces = []
    for piece in value.split(","):
        if "/" in piece or "\\" in piece:
            piece = re.split(r"[\\/]", piece.rstrip("/\\"))[-1] or piece
        pieces.append(piece)
    return ",".join(pieces)


def user_run_name(value: Any) -> str:
    """``value`` (``run_name=``) as a folder name, refused unless it is 1 to 100 letters, digits, ``.``,
    ``_`` or ``-`` that start with a letter, digit or ``_`` (no path, no shell or glob characters)."""
    text = str(value)
    if isinstance(value, bool) or not _USER_NAME.fullmatch(text):
        raise InputError(
            f"run_name={text!r} is not a safe folder name: use 1 to 100 letters, digits, '.', '_' or '-', "
            "starting with a letter, digit or '_' (e.g. run_name=demo2_roi152)"
        )
    return text


def _items(override_dirname: str) -> list[str]:
    """The overrides of Hydra's ``override_dirname`` (joined by ``,``), keeping a quoted value whole: a quoted path
    may hold commas and ``=`` (a cem-train run folder's name), which must not read as further overrides."""
    items, current, quote = [], [], None
    for ch in override_dirname:
        if quote is None and ch == ",":
            items.append("".join(current))
            current = []
            continue
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote == ch else ch
        current.append(ch)
    items.append("".join(current))
    return items


def _unquoted(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


def run_name(override_dirname: str, explicit: Any = None) -> str:
    """A folder name from the command-line overrides: stable, readable, filesystem-safe; or the user's
    own ``explicit`` name (``run_name=``), checked by :func:`user_run_name`.

    Path values are shortened to their file name; whenever anything is shortened, a hash of
    the full overrides is appended so that two different runs never share a folder.
    """
    if explicit not in (None, ""):
        return user_run_name(explicit)
    if not override_dirname:
        return "default"
    parts = []
    for item in _items(override_dirname):
        key, sep, value = item.partition("=")
        plain = _unquoted(value)  # a quoted value is one piece (a path whose folder names hold commas)
        parts.append(f"{key}{sep}{shorten_value(plain) if plain == value else shorten_value(plain.replace(',', '_'))}")
    name = safe_name(",".join(parts))
    if name != override_dirname or len(name) > 200:
        name = with_digest(name, override_dirname, 200)
    return name


def _swept(overrides: list[str]) -> list[bool]:
    """Which overrides are sweeps (``a=1,2``, ``range(...)``, ``choice(...)``) in Hydra's grammar."""
    try:
        return [o.is_sweep_override() for o in OverridesParser.create().parse_overrides(overrides)]
    except Exception:  # e.g. glob() needs a config loader: call everything swept
        return [True] * len(overrides)


def sweep_name(overrides: list[str], exclude: tuple[str, ...] = CEM_NEUTRAL_KEYS) -> str:
    """A folder name for a sweep from its command-line overrides: stable, readable, filesystem-safe.

    The swept overrides, sorted (the order on the command line does not matter), e.g.
    ``seed=0,1,task=dn,dr``, or the fixed ones when nothing is swept on the command line
    (``experiment=receptive_field``); when there are also fixed overrides (which the job folders spell out)
    or anything had to be shortened, a hash of all of them is appended, so that two different sweeps
    never share a folder. Keys that do not change results (``exclude``) are left out.
    """
    overrides = [str(o) for o in overrides]
    kept = [(o, sw) for o, sw in zip(overrides, _swept(overrides)) if o.partition("=")[0].lstrip("+~") not in exclude]
    if not kept:
        return "default"
    full = ",".join(sorted(o for o, _ in kept))
    # the swept overrides; a sweep defined by a preset alone (experiment=receptive_field, whose
    # grid is in the preset's hydra.sweeper.params) is named from its fixed overrides
    named = sorted(o for o, sw in kept if sw) or sorted(o for o, _ in kept)
    readable = ",".join(named)
    name = ",".join(f"{k}{s}{shorten_value(v)}" for k, s, v in (o.partition("=") for o in named))
    name = safe_name(name)
    if name != readable or len(name) > 100 or len(named) < len(kept):
        name = with_digest(name, full, 100)
    return name


def refuse_run_name_in_a_sweep(user_run: Any) -> None:
    """Raise :class:`InputError` when a sweep is given ``run_name`` (``user_run``): it names one run's folder."""
    if user_run not in (None, ""):
        raise InputError(
            f"run_name={user_run} names the folder of a single run; a sweep (-m) names its folder with "
            "sweep_name=NAME and each job's folder from its overrides: drop run_name"
        )


def resolve_sweep_name(explicit: Any = None, user_run: Any = None) -> str:
    """The resolver ``cem_sweep_name`` (registered by :mod:`cem_lab.compose.resolvers`): ``sweep_name``
    when set, else the name of the running sweep. ``user_run``: the ``run_name`` of the config, which a
    sweep refuses (it would give every job one folder)."""
    refuse_run_name_in_a_sweep(user_run)
    if explicit not in (None, ""):
        return safe_name(str(explicit))
    return os.environ.get(SWEEP_ENV) or "default"
