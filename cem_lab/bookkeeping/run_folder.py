"""The folder of a CLI run, from refusal to acceptance: writable before anything starts, nothing written
until the run is locked and its input accepted, then its config, Hydra's record and its log.

Hydra would write ``.hydra/`` and ``<job>.log`` into the run folder before the job starts, that is
before cem_lab knows whether the folder belongs to another process or whether the input is
acceptable; so the CLI configs turn both off (``hydra.output_subdir: null`` and the console-only
``hydra/job_logging: cem_console``), and :func:`accept_run_folder` writes them once the run is
accepted. Log lines of the checks before that are kept in memory (:func:`buffered_log`) and go to
the log file on acceptance, or nowhere on refusal.
"""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cem_lab.bookkeeping.clean_errors import fail
from cem_lab.bookkeeping.folder_names import refuse_run_name_in_a_sweep
from cem_lab.errors import InputError
from cem_lab.folder_lock import FolderLockError, check_writable
from cem_lab.io import write_text
from cem_lab.run_format import CONFIG_FILE

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


class CheckOutputFolder(Callback):
    """Refuse an output folder that cannot be written before Hydra creates anything in it.

    ``on_run_start`` checks ``hydra.run.dir``, ``on_multirun_start`` ``hydra.sweep.dir`` (a name that its
    resolver refuses, such as an unsafe ``run_name``, included); the error names the folder and the fix, in the CLI's one error form (Hydra turns an exception raised by a
    callback into a warning and goes on, so the callback ends the process itself).
    """

    def __init__(self, program: str = "cem-lab") -> None:
        self.program = program

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check ``hydra.run.dir``."""
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check ``hydra.sweep.dir``; refuse a swept ``run_name`` (jobs are named from their overrides)."""
        for override in OmegaConf.select(config, "hydra.overrides.task", default=None) or []:
            key, _, value = str(override).partition("=")
            if key.lstrip("+~") == "run_name":
                try:
                    refuse_run_name_in_a_sweep(value)
                except InputError as err:
                    fail(self.program, err)
        self._check(config, "hydra.sweep.dir")

    def _check(self, config: DictConfig, key: str) -> None:
        HydraConfig.instance().set_config(config)  # the folder's name interpolates ${hydra:...}
        try:
            check_writable(str(OmegaConf.select(config, key)))
        except (FolderLockError, OmegaConfBaseException) as err:  # the latter: a refused folder name (run_name=)
            fail(self.program, err)


def _hydra_config() -> DictConfig | None:
    try:
        return HydraConfig.get() if HydraConfig.initialized() else None
    except Exception:
        return None


def write_hydra_record(cfg: DictConfig, folder: Path) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, as Hydra writes them, atomically;
    nothing outside a Hydra app."""
    hc = _hydra_config()
    if hc is None:
        return
    record = folder / ".hydra"
    write_text(record / CONFIG_FILE, OmegaConf.to_yaml(cfg))
    write_text(record / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hc})))
    write_text(record / "overrides.yaml", OmegaConf.to_yaml(hc.overrides.task))


@contextmanager
def buffered_log(logger: str = "") -> Iterator[logging.handlers.MemoryHandler]:
    """Keep the records of ``logger`` (root by default) in memory until :func:`open_log_file` sends
    them to a file; dropped when the block ends without that."""
    memory = logging.handlers.MemoryHandler(
        capacity=1 << 20, flushLevel=logging.CRITICAL + 1, target=None, flushOnClose=False
    )
    memory.setLevel(logging.INFO)
    log = logging.getLogger(logger)
    log.addHandler(memory)
    try:
        yield memory
    finally:
        log.removeHandler(memory)
        memory.close()


def open_log_file(
    path: Path, memory: logging.handlers.MemoryHandler | None = None, logger: str = ""
) -> logging.FileHandler:
    """Append ``logger``'s records to ``path`` from now on, after those ``memory`` kept."""
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    if memory is not None:
        memory.setTarget(handler)
        memory.flush()
        memory.setTarget(None)
    logging.getLogger(logger).addHandler(handler)
    return handler


def close_log_file(handler: logging.Handler | None, logger: str = "") -> None:
    """Stop writing ``logger``'s records to the file of ``handler`` (None: nothing to do)."""
    if handler is None:
        return
    logging.getLogger(logger).removeHandler(handler)
    handler.close()


def accept_run_folder(
    cfg: DictConfig, folder: Path, memory: logging.handlers.MemoryHandler | None = None, log_name: str = "cem.log"
) -> logging.FileHandler:
    """The run is locked and its input accepted: write ``config.yaml`` (resolved) and Hydra's record,
    and open the log (with the checks' records). Returns the log handler to close at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    write_hydra_record(cfg, folder)
    return open_log_file(folder / log_name, memory)
