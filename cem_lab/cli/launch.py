"""The console scripts' first step: import a program, then run it, with Ctrl-C answered in one line from the
first moment.

A program's module imports torch, Hydra and Lightning (one to three seconds) before its ``main`` can catch
anything, so a Ctrl-C in those seconds used to end in a ``KeyboardInterrupt`` traceback. The console scripts
of ``pyproject.toml`` point here instead: this module imports nothing heavy (``cem_lab``'s own top is lazy),
imports the program inside a guard, and hands over to its ``main``, whose
:func:`~cem_lab.bookkeeping.clean_errors.run_cli` answers Ctrl-C and user errors from then on.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

#: the exit status of a program that Ctrl-C ended (128 + SIGINT); the same as clean_errors.INTERRUPTED_STATUS,
#: not imported from there because that module imports Hydra
INTERRUPTED_STATUS = 130

#: testing aid: a file this module creates once its Ctrl-C guard is in place (tests/cli/test_interrupt.py)
READY_ENV = "CEM_LAB_TEST_LAUNCH_READY"

#: console script -> the module whose ``main`` runs it
PROGRAMS = {
    "cem-lab": "cem_lab.cli.cem",
    "cem-train": "cem_lab.cli.train",
    "cem-zoo": "cem_lab.cli.zoo",
    "cem-report": "cem_lab.cli.report",
    "cem-figure": "cem_lab.cli.figure",
    "cem-attribution": "cem_lab.cli.attribution",
    "cem-pretrained": "cem_lab.cli.pretrained",
    "cem-erf": "cem_lab.cli.erf",
    "cem-sanity": "cem_lab.cli.sanity",
    "cem-channels": "cem_lab.cli.channels",
}


def start(program: str) -> object:
    """Import ``program``'s module and run its ``main``; a Ctrl-C while it imports ends in one line (status 130),
    before anything is written."""
    interrupted = []

    def on_sigint(_signum, _frame):
        # remembered as well as raised: a library that swallows KeyboardInterrupt in its own imports (a bare
        # ``except:`` around an optional import) must not turn a Ctrl-C into a run
        interrupted.append(True)
        raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.SIG_IGN:  # a program started with Ctrl-C ignored (nohup, a background job) keeps it so
        signal.signal(signal.SIGINT, on_sigint)
    try:
        ready = os.environ.get(READY_ENV)
        if ready:  # testing aid: the guard is in place (the program's imports come next)
            open(ready, "w").close()  # noqa: SIM115 (an empty marker, closed at once)
        main = importlib.import_module(PROGRAMS[program]).main
    except KeyboardInterrupt:
        interrupted.append(True)
    except BaseException:
        # a Ctrl-C that a library's import turned into another error (seen once in CI: a RecursionError from a
        # half-imported module's lazy attribute lookup) is still the user's interruption, said in one line
        if not interrupted:
            raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        print(f"{program}: interrupted while starting; nothing was written", file=sys.stderr, flush=True)
        raise SystemExit(INTERRUPTED_STATUS)
    return main()


def cem_lab() -> object:
    """``cem-lab``."""
    return start("cem-lab")


def cem_train() -> object:
    """``cem-train``."""
    return start("cem-train")


def cem_zoo() -> object:
    """``cem-zoo``."""
    return start("cem-zoo")


def cem_report() -> object:
    """``cem-report``."""
    return start("cem-report")


def cem_figure() -> object:
    """``cem-figure``."""
    return start("cem-figure")


def cem_attribution() -> object:
    """``cem-attribution``."""
    return start("cem-attribution")


def cem_pretrained() -> object:
    """``cem-pretrained``."""
    return start("cem-pretrained")


def cem_erf() -> object:
    """``cem-erf``."""
    return start("cem-erf")


def cem_sanity() -> object:
    """``cem-sanity``."""
    return start("cem-sanity")


def cem_channels() -> object:
    """``cem-channels``."""
    return start("cem-channels")
