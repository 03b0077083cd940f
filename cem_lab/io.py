"""Atomic file writes: a result file is either absent or complete, never half-written."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

#: a file or folder given by the user (one definition for the whole package)
PathLike = str | Path


def cache_root() -> Path:
    """The root of cem_lab's caches (converted networks, pictures written from arrays): ``$CEM_LAB_CACHE``, else
    ``~/.cache/cem_lab``."""
    env = os.environ.get("CEM_LAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cem_lab"


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp makes 0600 files; results are meant to be shared
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (numpy scalars, arrays and paths converted)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_text(path: PathLike, text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_npz(path: PathLike, **arrays: Any) -> None:
    """Write ``arrays`` as a compressed .npz, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def file_signature(path: PathLike) -> list:
    """[size, modification time in ns] of a file: how finished runs recognise changed inputs."""
    st = Path(path).stat()
    return [st.st_size, st.st_mtime_ns]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def file_sha256(path: PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks (checkpoint and weight digests)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_safe(value: Any) -> Any:
    """``value`` ready for strict JSON: NaN and infinities become None (JSON has neither), numpy arrays lists and
    numpy scalars Python numbers, dict keys strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
