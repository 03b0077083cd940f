"""The errors of running a map that a user can cause (the CLI prints them without a traceback)."""

from __future__ import annotations


class ModelOutputError(RuntimeError):
    """The model returned something a restoration model should not."""


class RunFolderError(RuntimeError):
    """A run folder that holds another run."""
