"""The process-level handling of every CLI: a user error and Ctrl-C each end in one line on stderr."""

from __future__ import annotations

import pytest

from cem_lab.bookkeeping.clean_errors import (
    INTERRUPTED_STATUS,
    OneLineParser,
    error_message,
    resumable,
    run_cli,
)
from cem_lab.errors import InputError
from cem_lab.folder_lock import LOCK_FILE


def _interrupt():
    raise KeyboardInterrupt


def _end(capsys, body, **kw) -> tuple[int, str]:
    with pytest.raises(SystemExit) as end:
        run_cli(body, "prog", **kw)
    return end.value.code, capsys.readouterr().err


def test_ctrl_c_is_one_line_with_status_130(capsys):
    code, err = _end(capsys, _interrupt)
    assert (code, err) == (INTERRUPTED_STATUS, "prog: interrupted\n")
    code, err = _end(capsys, _interrupt, resumes=True)
    assert (code, err) == (130, "prog: interrupted; run the same command again to resume\n")


def test_ctrl_c_names_the_folder_that_keeps_the_work(tmp_path, capsys):
    folder = tmp_path / "run"

    def body():
        with resumable(folder):
            folder.mkdir()
            (folder / LOCK_FILE).write_text("")
            _interrupt()

    code, err = _end(capsys, body, resumes=True)  # only the lock: nothing kept, and the line does not promise a resume
    assert (code, err) == (
        130,
        "prog: interrupted before anything was saved; the same command starts again from the beginning\n",
    )
    (folder / "state.npz").write_bytes(b"")

    def again():
        with resumable(folder, saved="the map so far is in"):
            _interrupt()

    code, err = _end(capsys, again, resumes=True)
    assert err == f"prog: interrupted; the map so far is in {folder}: run the same command again to resume\n"


def test_a_user_error_is_one_line_and_a_bug_keeps_its_traceback(capsys):
    def refused():
        raise InputError("bad value\nsecond line")

    code, err = _end(capsys, refused)
    assert (code, err) == (2, "prog: error: bad value second line\n")

    def bug():
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        run_cli(bug, "prog")


def test_with_hydra_full_error_ctrl_c_keeps_its_traceback(monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(KeyboardInterrupt):
        run_cli(_interrupt, "prog")


def test_argparse_usage_errors_are_one_line(capsys):
    parser = OneLineParser(prog="prog")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run").add_argument("--n", type=int)
    with pytest.raises(SystemExit) as end:
        parser.parse_args(["frob"])
    err = capsys.readouterr().err
    assert end.value.code == 2 and err.count("\n") == 1 and err.startswith("prog: error: argument cmd: invalid choice")
    assert "(see prog --help)" in err
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--n", "x"])
    err = capsys.readouterr().err
    assert err.startswith("prog: error: run: argument --n: invalid int value") and "(see prog run --help)" in err


def test_hydra_trailers_are_dropped_from_a_message():
    text = "Could not do it\n    full_key: a.b\n    object_type=dict\nConfig search path:\n\tprovider=hydra, path=x"
    assert error_message(InputError(text)) == "Could not do it"
