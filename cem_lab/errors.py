"""The errors a user can cause with bad input: the CLI prints them without a traceback."""

from __future__ import annotations


def _user_errors() -> tuple[type[BaseException], ...]:
    from omegaconf.errors import OmegaConfBaseException

    from cem_lab.causal.errors import ModelOutputError, RunFolderError
    from cem_lab.folder_lock import FolderBusyError, FolderLockError
    from cem_lab.image_decoding import ImageError
    from cem_lab.models.checkpoint import CheckpointError

    # ValueError covers GeometryError, TaskError, EstimatorError, PatchBankError, metric errors
    return (
        ValueError,
        FileNotFoundError,
        ImageError,
        CheckpointError,
        ModelOutputError,
        RunFolderError,
        FolderBusyError,
        FolderLockError,
        OmegaConfBaseException,
    )


USER_ERRORS = _user_errors()
