"""The base of every error a user can cause, and the two generic kinds.

Every error raised because of what a user gave (a config value, a file, an image, a checkpoint, a run
folder) is a :class:`CemLabError`; the console scripts print it as one line ``<program>: error: ...``
with exit status 2 (:mod:`cem_lab.bookkeeping.clean_errors`), and anything else keeps its traceback,
since it is a bug. The rooms subclass it (``TaskError``, ``CheckpointError``, ``GeometryError``, ...);
each subclass keeps the built-in base it had (``ValueError``, ``RuntimeError``, ...), so ``except
ValueError`` in a caller's code still catches what it caught. This module imports nothing of cem_lab.
"""

from __future__ import annotations


class CemLabError(Exception):
    """An error the user can fix: its message names the problem and the fix, in one line."""


class InputError(CemLabError, ValueError):
    """A value the user gave (a key, an argument, an array) that cannot be used."""


class MissingFileError(CemLabError, FileNotFoundError):
    """A file or folder the user named that is not there."""
