"""The errors of running a map that a user can cause (the CLI prints them without a traceback)."""

from __future__ import annotations

from cem_lab.errors import CemLabError


class ModelOutputError(CemLabError, RuntimeError):
    """The model returned something a restoration model should not."""


class RunFolderError(CemLabError, RuntimeError):
    """A run folder that holds another run."""
