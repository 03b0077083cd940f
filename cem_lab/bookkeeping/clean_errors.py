"""One form for every user error of a CLI: ``<program>: error: <message>`` on stderr, exit status 2.

User errors arise in three places: Hydra's own composition of the config (an unknown config group
option, a key that does not exist, an override that does not parse), the objects that the config
groups build (a patch bank, a model, a task: Hydra wraps what their constructors raise in an
``InstantiationException``), and cem_lab's checks (the image, the ROI, the run folder). Hydra
prints the first kind itself and exits with status 1, and the second as a chained traceback; so
the CLIs run Hydra with ``HYDRA_FULL_ERROR=1``, which makes it raise them to :func:`run_cli`,
and report all three alike. Anything else is a bug and keeps its traceback. Set
``HYDRA_FULL_ERROR=1`` yourself to see the traceback of a user error too.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import Any

from hydra.errors import HydraException, InstantiationException
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from cem_lab.errors import CemLabError

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


def error_message(err: BaseException) -> str:
    """The message of a user error, with the cause a Hydra composition error carries."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, InterpolationResolutionError):
        # a resolver's own error (an unknown standard image or zoo model): its message, not OmegaConf's wrapping
        text = re.sub(r"^\w+ raised while resolving interpolation: ", "", text.split("\n    full_key:")[0])
    cause = err.__cause__
    if isinstance(err, HydraException) and cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text += "\n" + str(cause).strip()
    return text


def first_line(text: str) -> str:
    """The first non-blank line of ``text``, stripped ("" for none)."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def fail(program: str, err: BaseException) -> None:
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


def run_cli(hydra_main: Callable[[], Any], program: str) -> Any:
    """Run a ``@hydra.main`` function; a user error ends the process in the one form (status 2)."""
    user_full = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return hydra_main()
    except Exception as err:
        user = unwrap_user_error(err)
        if user is None or user_full:
            raise
        fail(program, user)
    finally:
        if user_full is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = user_full
