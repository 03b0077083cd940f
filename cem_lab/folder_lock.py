"""One writer per run folder: an OS-level lock held for the life of a run.

A run folder (a CEM, a training run, a sweep) is written by one process at a time. The writer holds
an exclusive ``flock`` on ``<folder>/.cem_lab.lock`` from before it writes anything until it ends;
the operating system drops the lock when the process exits, however it exits (``kill -9``
included), so a lock is never left behind by a dead process. The lock file also names its holder
(process id, host, start time, command), so that a refused run can say who holds the folder, and
a run that takes over the folder after a killed holder can say so (the file still names a holder
although nobody holds the lock: a clean release empties it).

Taking the lock never waits: a busy folder is refused at once with :class:`FolderBusyError`, and
nothing in the folder is touched. A process may take the same folder's lock again (nested runs in
one process share it). Releasing a lock on a folder that the holder itself created and left empty
(a refused run) removes the lock file and the folder, so that a refusal leaves no trace. Removal
is safe against a process that opened the old file just before: after ``flock`` succeeds the
holder checks that the path still names the file it locked, and starts over otherwise.

Locks work on local file systems and on the network file systems of clusters that support
``flock`` (NFSv4, Lustre and GPFS with locking enabled). Where locking is not supported, the error
says so; ``CEM_LAB_FOLDER_LOCKS=off`` turns the locks off (at your own risk: nothing then stops two
processes from writing one folder).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cem_lab.errors import CemLabError

try:  # POSIX; imported once here, since a lock may be released while the interpreter shuts down
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("cem_lab")

LOCK_FILE = ".cem_lab.lock"
LOCKS_ENV = "CEM_LAB_FOLDER_LOCKS"
#: folders whose lock the parent process holds for this one (see :func:`lend_to_child`)
LENT_ENV = "CEM_LAB_LENT_FOLDERS"


class FolderBusyError(CemLabError, RuntimeError):
    """A run folder that another process is writing."""


class FolderLockError(CemLabError, RuntimeError):
    """A run folder that cannot be locked (no such support, or not writable)."""


@dataclass
class FolderLock:
    """A held lock: the folder, what holds it, and what it found when it took the folder over."""

    folder: Path
    what: str
    created_folder: bool  #: the folder did not exist or was empty when the lock was taken
    previous_holder: dict | None = None  #: set when a killed holder's lock was taken over
    _fd: int | None = field(default=None, repr=False)
    _count: int = field(default=0, repr=False)


_held: dict[str, FolderLock] = {}
#: folders that :func:`check_writable` found missing (the topmost of a run folder's new ancestors, e.g. runs/ of
#: a fresh clone): a refused run removes them again when they are left empty, so that it leaves nothing behind
_fresh: set[Path] = set()
_held_guard = threading.Lock()


def _key(folder: Path) -> str:
    return os.path.realpath(folder)


def describe_holder(info: dict | None) -> str:
    """``pid 123 on host, since 2026-12-01T09:00:00: cem-lab seed=1`` (what is known of it)."""
    if not info:
        return "another process (it left no details)"
    text = f"{info.get('what', 'a run')} (pid {info.get('pid', '?')} on {info.get('host', '?')}"
    if info.get("started"):
        text += f", since {info['started']}"
    text += ")"
    if info.get("command"):
        text += f": {info['command']}"
    return text


def _read_holder(fd_or_path: int | Path) -> dict | None:
    try:
        if isinstance(fd_or_path, int):
            os.lseek(fd_or_path, 0, os.SEEK_SET)
            raw = b""
            while chunk := os.read(fd_or_path, 65536):
                raw += chunk
        else:
            raw = Path(fd_or_path).read_bytes()
    except OSError:
        return None
    if not raw.strip():
        return None
    try:
        info = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return {"what": "an unknown holder", "raw": raw[:200].decode("utf-8", "replace")}
    return info if isinstance(info, dict) else None


def _write_holder(fd: int, info: dict | None) -> None:
    data = (json.dumps(info, sort_keys=True) + "\n").encode() if info else b""
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    if data:
        os.write(fd, data)
    os.fsync(fd)


def _locks_enabled() -> bool:
    if fcntl is None:
        return False
    return os.environ.get(LOCKS_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def _acquire(folder: Path, what: str, command: str | None) -> FolderLock:
    # a folder that does not exist or is empty is this run's own (Hydra makes the run folder, empty,
    # just before the run starts): if the run is refused, it is removed again
    try:
        created = not folder.exists() or not any(folder.iterdir())
    except OSError:
        created = False
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FolderLockError(
            f"cannot create the run folder {folder}: {err.strerror or err}; choose a "
            "folder you can write (hydra.run.dir=... / hydra.sweep.dir=...)"
        ) from err
    path = folder / LOCK_FILE
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise FolderLockError(
                f"cannot write in the run folder {folder}: {err.strerror or err}; choose a "
                "folder you can write (hydra.run.dir=... / hydra.sweep.dir=...)"
            ) from err
        err = _try_lock(fd)
        if err is not None:
            holder = _read_holder(fd)
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise FolderBusyError(
                    f"the run folder {folder} is in use by {describe_holder(holder)}; wait until it ends "
                    "(rerunning the same command then resumes or reuses its run), or give this run "
                    "another folder (hydra.run.dir=...)"
                ) from None
            raise FolderLockError(
                f"cannot lock the run folder {folder} ({err.strerror or err}): its file system does not "
                f"support file locks; use a local folder, or set {LOCKS_ENV}=off to run without locks "
                "(then nothing stops two processes from writing one folder)"
            ) from err
        # the path may have been removed (and made anew) by a refused holder between open and flock
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            folder.mkdir(parents=True, exist_ok=True)
            continue
        previous = _read_holder(fd)
        info = {
            "what": what,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": command if command is not None else " ".join(sys.argv),
        }
        _write_holder(fd, info)
        lock = FolderLock(folder, what, created, _fd=fd)
        if previous is not None:
            lock.previous_holder = previous
            log.warning(
                "the run folder %s was held by %s, which ended without releasing it (killed?): taken over",
                folder,
                describe_holder(previous),
            )
        return lock
    raise FolderLockError(f"could not lock the run folder {folder}: its lock file kept changing")


def _try_lock(fd: int) -> OSError | None:
    """Take the exclusive lock without waiting for a holder: None when taken, else the error. A lock
    held without details is retried for up to a second: it is a reader's brief look
    (:func:`folder_holder`, ``cem-report``) or a holder that is writing its details right now."""
    for _attempt in range(40):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) or _read_holder(fd) is not None:
                return err
            last = err
        time.sleep(0.025)
    return last


def _only_lock_left(folder: Path) -> bool:
    try:
        return all(p.name == LOCK_FILE for p in folder.iterdir())
    except OSError:
        return False


def _release(lock: FolderLock, discard: bool) -> None:
    fd = lock._fd
    if fd is None:
        return
    try:
        if discard and lock.created_folder and _only_lock_left(lock.folder):
            # a refused run in a folder it made: leave nothing (unlink while still holding the lock)
            (lock.folder / LOCK_FILE).unlink(missing_ok=True)
            try:
                lock.folder.rmdir()
            except OSError:
                pass
            else:
                _remove_fresh_parents(lock.folder)
        else:
            _write_holder(fd, None)  # a clean release: an empty lock file names no holder
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
        lock._fd = None


def _remove_fresh_parents(folder: Path) -> None:
    """Remove the empty parents of ``folder`` up to the new ancestor that :func:`check_writable` saw missing."""
    folder = Path(os.path.abspath(folder))
    for root in [r for r in _fresh if r in folder.parents]:
        parent = folder.parent
        while True:
            try:
                parent.rmdir()  # only an empty folder goes
            except OSError:
                break
            if parent == root:
                break
            parent = parent.parent


@contextmanager
def hold_run_folder(
    folder: str | Path, what: str = "a cem_lab run", command: str | None = None
) -> Iterator[FolderLock | None]:
    """Hold ``folder`` (created if needed) for the block; refuse at once if another process does.

    Raises :class:`FolderBusyError` naming the holder. Reentrant within a process. If the block
    raises and the folder was made by this lock and holds nothing else, the folder is removed.
    Yields the :class:`FolderLock` (None when locks are turned off with ``CEM_LAB_FOLDER_LOCKS=off``).
    """
    folder = Path(folder)
    if not _locks_enabled() or _lent_by_parent(folder):
        folder.mkdir(parents=True, exist_ok=True)
        yield None
        return
    key = _key(folder)
    with _held_guard:
        lock = _held.get(key)
        if lock is None:
            lock = _acquire(folder, what, command)
            _held[key] = lock
        lock._count += 1
    ok = False
    try:
        yield lock
        ok = True
    finally:
        with _held_guard:
            lock._count -= 1
            if lock._count == 0:
                _held.pop(key, None)
                _release(lock, discard=not ok)


def lend_to_child(folder: str | Path, env: dict | None = None) -> dict:
    """The environment for a child process that writes ``folder`` while this process holds its lock
    (``cem-zoo`` running ``cem-train`` in the zoo's run folder), or was lent it: the child's
    :func:`hold_run_folder` of that folder then succeeds without locking, as long as the lock's
    holder is one of the child's ancestors."""
    if not holds(folder) and not _lent_by_parent(Path(folder)):
        raise FolderLockError(f"cannot lend {folder}: this process does not hold its lock")
    env = dict(os.environ if env is None else env)
    lent = [p for p in env.get(LENT_ENV, "").split(os.pathsep) if p]
    env[LENT_ENV] = os.pathsep.join(lent + [_key(Path(folder))])
    return env


def _lent_by_parent(folder: Path) -> bool:
    lent = os.environ.get(LENT_ENV, "")
    if not lent or _key(folder) not in lent.split(os.pathsep):
        return False
    holder = folder_holder(folder)
    return bool(holder) and holder.get("pid") in _ancestors() and holder.get("host") == socket.gethostname()


def _ancestors(depth: int = 16) -> list[int]:
    """The parent, grandparent, ... of this process (``/proc``; only the parent elsewhere): a lent
    folder may be written by a grandchild (cem-zoo -> cem-train -> Lightning's extra processes)."""
    out, pid = [], os.getppid()
    while pid > 1 and len(out) < depth:
        out.append(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def holds(folder: str | Path) -> bool:
    """Whether this process holds ``folder``'s lock."""
    with _held_guard:
        return _key(Path(folder)) in _held


def folder_holder(folder: str | Path) -> dict | None:
    """The holder recorded in ``folder``'s lock file, if a process holds it now; else None."""
    if fcntl is None:
        return None
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_holder(fd) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def check_writable(folder: str | Path) -> None:
    """Refuse (:class:`FolderLockError`) a folder that cannot be created or written, before anything
    starts: the folder itself if it exists, else its nearest existing parent. Writes nothing."""
    folder = Path(os.path.abspath(folder))
    probe, missing = folder, None
    while not probe.exists():
        if probe.parent == probe:
            break
        probe, missing = probe.parent, probe
    if missing is not None:
        _fresh.add(missing)
    fix = "choose a folder you can write (hydra.run.dir=... for a run, hydra.sweep.dir=... for a sweep)"
    if not probe.is_dir():
        raise FolderLockError(f"cannot create the output folder {folder}: {probe} is a file, not a folder; {fix}")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == folder else f" (its parent {probe} is not writable)"
        raise FolderLockError(
            f"the output folder {folder} is not writable{where}; {fix}, or make it writable (chmod u+w)"
        )
    if probe == folder and (folder / LOCK_FILE).exists() and not os.access(folder / LOCK_FILE, os.W_OK):
        raise FolderLockError(f"the lock file {folder / LOCK_FILE} is not writable; {fix}")
