"""One form for every user error of a CLI: ``<program>: error: <message>`` on stderr, exit status 2;
and one line for Ctrl-C: ``<program>: interrupted; ...`` (where the work is kept), exit status 130.

User errors arise in three places: Hydra's own composition of the config (an unknown config group
option, a key that does not exist, an override that does not parse), the objects that the config
groups build (a patch bank, a model, a task: Hydra wraps what their constructors raise in an
``InstantiationException``), and cem_lab's checks (the image, the ROI, the run folder). Hydra
prints the first kind itself and exits with status 1, and the second as a chained traceback; so
the CLIs run Hydra with ``HYDRA_FULL_ERROR=1``, which makes it raise them to :func:`run_cli`,
and report all three alike, in one line: Hydra's own messages (an unknown group option, a key that
is not in the config) are rewritten to name the option or key, the nearest valid ones and the list.
Anything else is a bug and keeps its traceback. Set ``HYDRA_FULL_ERROR=1`` yourself to see the
traceback of a user error too. The argparse programs take :class:`OneLineParser`, whose usage errors
take the same form.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from hydra.errors import HydraException, InstantiationException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    OmegaConfBaseException,
)

from cem_lab.errors import CemLabError
from cem_lab.folder_lock import LOCK_FILE

#: what a CLI ends in one line: every error a user can cause (cem_lab's :class:`~cem_lab.errors.CemLabError`)
#: and OmegaConf's errors of a composed config (a wrong type, a missing value); anything else is a bug
USER_ERRORS: tuple[type[BaseException], ...] = (CemLabError, OmegaConfBaseException)


def unwrap_user_error(err: BaseException) -> BaseException | None:
    """The user error behind ``err`` (itself, or the cause Hydra's instantiation wrapped), or None."""
    seen = 0
    while isinstance(err, InstantiationException) and err.__cause__ is not None and seen < 10:
        err, seen = err.__cause__, seen + 1
    if isinstance(err, USER_ERRORS) or (
        isinstance(err, HydraException) and not isinstance(err, InstantiationException)
    ):
        return err
    return None


def did_you_mean(word: str, known: Iterable[str], cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` with the known words nearest to ``word`` (difflib), or ""."""
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=3, cutoff=cutoff)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _unknown_option(err: MissingConfigException) -> str | None:
    """Hydra's "Could not find 'model/swinir2'" (a group option that is not there) in one line."""
    path, options = err.missing_cfg_file, err.options
    if not path or "/" not in str(path) or not options:
        return None
    group, option = str(path).rsplit("/", 1)
    return (
        f"{group}={option}: config group '{group}' has no option '{option}'{did_you_mean(option, options, 0.5)}; "
        f"its options are {', '.join(options)}"
    )


def _unknown_key(err: HydraException) -> str | None:
    """Hydra's "Could not override 'rio'. ... Key 'rio' is not in struct" in one line, with the keys there."""
    cause = err.__cause__
    if not isinstance(cause, (ConfigAttributeError, ConfigKeyError)) or not str(err).startswith("Could not override"):
        return None
    full_key, parent = str(cause.full_key or cause.key), cause.parent_node
    name = str(cause.key)
    where = full_key.rpartition(".")[0]
    keys = sorted(str(k) for k in parent.keys()) if isinstance(parent, DictConfig) else []
    if not full_key.startswith("hydra"):
        keys = [k for k in keys if k != "hydra"]
    line = re.search(r"use \+(\S.*)$", str(err), re.MULTILINE)
    override = line.group(1).strip() if line else full_key
    guess = did_you_mean(name, keys)
    text = f"{override}: no key '{name}' in {where or 'the config'}{guess}"
    if keys and not guess:
        text += f"; the keys {'of ' + where if where else 'at the top level'} are {', '.join(keys)}"
    if isinstance(parent, DictConfig) and "_target_" in parent:
        text += f"; a new keyword of {where}'s class is added with +: +{override}"
    return text


def one_line(text: str) -> str:
    """``text`` as one line: its lines joined, less Hydra's and OmegaConf's report trailers (the config
    search path, ``full_key:``, ``object_type=``)."""
    lines = []
    for line in str(text).splitlines():
        line = line.strip()
        if line.startswith("Config search path:"):
            break
        if line and not line.startswith(("full_key:", "object_type=", "reference_type=", "provider=")):
            lines.append(line)
    return " ".join(lines)


def error_message(err: BaseException) -> str:
    """The message of a user error, with the cause a Hydra composition error carries, in one line."""
    if isinstance(err, MissingConfigException):
        text = _unknown_option(err)
        if text is not None:
            return text
    if isinstance(err, HydraException):
        text = _unknown_key(err)
        if text is not None:
            return text
    text = str(err).strip() or type(err).__name__
    if isinstance(err, OverrideParseException):
        override = getattr(err, "override", None)
        shown = f" in {override}" if override else ""
        # the usual cause: a value holding '=', ',' or brackets, such as a run folder's path, left unquoted
        return one_line(
            f"cannot read the override{shown} ({first_line(text)}); quote a value that holds '=', ',', "
            "spaces or brackets, e.g. \"model.path='runs/train/model=edsr,task=sr/model.safetensors'\""
        )
    if isinstance(err, InterpolationResolutionError):
        # a resolver's own error (an unknown standard image or zoo model): its message, not OmegaConf's wrapping
        text = re.sub(r"^\w+ raised while resolving interpolation: ", "", text.split("\n    full_key:")[0])
    cause = err.__cause__
    if isinstance(err, HydraException) and cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text += "\n" + str(cause).strip()
    return one_line(text)


def first_line(text: str) -> str:
    """The first non-blank line of ``text``, stripped ("" for none)."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def fail(program: str, err: BaseException) -> NoReturn:
    """End the process with ``<program>: error: <message>`` on stderr, exit status 2."""
    print(f"{program}: error: {error_message(err)}", file=sys.stderr, flush=True)
    sys.exit(2)


def job_failed(program: str, err: Exception, folder: Any, multirun: bool) -> dict:
    """What a Hydra task function does with a failure: in a multirun, print it and return the job's
    ``failed`` outcome (the sweep goes on); in a single run, end a user error in the one form;
    re-raise anything else (a bug keeps its traceback)."""
    if multirun:
        message = f"{type(err).__name__}: {first_line(str(err))}"
        print(f"{program}: job failed ({folder}): {message}", file=sys.stderr, flush=True)
        return {"status": "failed", "error": message}
    if isinstance(err, USER_ERRORS):
        fail(program, err)
    raise err


#: the exit status of a program that Ctrl-C ended (128 + SIGINT, as a shell reports it)
INTERRUPTED_STATUS = 130


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the run folder that keeps the work done so far (the same command resumes it)."""

    def __init__(self, folder: Path, saved: str = "the work done so far is saved in") -> None:
        super().__init__(str(folder))
        self.folder, self.saved = Path(folder), saved


@contextmanager
def resumable(folder: str | Path, saved: str = "the work done so far is saved in") -> Iterator[None]:
    """A Ctrl-C in the block ends the program with a line that names ``folder`` (``saved``: what it keeps)
    and says that the same command resumes it (:func:`run_cli`)."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(Path(folder), saved) from None


def _holds_work(folder: Path) -> bool:
    try:
        return any(p.name != LOCK_FILE for p in folder.iterdir())
    except OSError:
        return False


def interrupted_message(err: KeyboardInterrupt, resumes: bool) -> str:
    """What a program ended by Ctrl-C says: where its work is kept and how to resume, when it resumes."""
    if isinstance(err, Interrupted) and _holds_work(err.folder):
        return f"interrupted; {err.saved} {err.folder}: run the same command again to resume"
    if isinstance(err, Interrupted) and resumes:  # stopped before its first save: a rerun is a fresh start
        return "interrupted before anything was saved; the same command starts again from the beginning"
    return "interrupted; run the same command again to resume" if resumes else "interrupted"


#: set beside HYDRA_FULL_ERROR by :func:`run_cli`, so that a cem_lab program started by another (cem-zoo runs
#: cem-train) knows the variable is not the user's and keeps its one-line errors and Ctrl-C line
OWN_FULL_ERROR = "CEM_LAB_HYDRA_FULL_ERROR_SET"


def run_cli(hydra_main: Callable[[], Any], program: str, *, resumes: bool = False) -> Any:
    """Run a CLI's body (a ``@hydra.main`` function, or any function): a user error ends the process in
    the one form (status 2); Ctrl-C in one line, ``<program>: interrupted; ...`` (status 130), which
    names the run folder that keeps the work when the body said so (:func:`resumable`), or says that
    the same command resumes (``resumes``: the program always does)."""
    # HYDRA_FULL_ERROR set by a cem_lab parent (cem-zoo runs cem-train) is not the user's wish for tracebacks
    user_full = None if os.environ.get(OWN_FULL_ERROR) else os.environ.get("HYDRA_FULL_ERROR")
    own_before = os.environ.get(OWN_FULL_ERROR)
    os.environ["HYDRA_FULL_ERROR"] = os.environ[OWN_FULL_ERROR] = "1"
    try:
        return hydra_main()
    except KeyboardInterrupt as err:
        if user_full:
            raise
        print(f"{program}: {interrupted_message(err, resumes)}", file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED_STATUS)
    except Exception as err:
        user = unwrap_user_error(err)
        if user is None or user_full:
            raise
        fail(program, user)
    finally:
        if own_before is None:
            os.environ.pop(OWN_FULL_ERROR, None)
            if user_full is None:
                os.environ.pop("HYDRA_FULL_ERROR", None)
            else:
                os.environ["HYDRA_FULL_ERROR"] = user_full


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors take the one form, ``<program>: error: <message>`` (exit
    status 2), naming ``--help`` instead of printing the usage; its subcommands' parsers too."""

    def error(self, message: str) -> NoReturn:
        """End the program with ``message`` in the one form (argparse calls it on a usage error)."""
        program, *sub = self.prog.split()
        where = f"{' '.join(sub)}: " if sub else ""
        print(f"{program}: error: {where}{message} (see {self.prog} --help)", file=sys.stderr, flush=True)
        sys.exit(2)
