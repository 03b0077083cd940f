"""Official checkpoints that their authors publish as a direct download, fetched once into the cache.

``model=official model.id=NAME`` maps one. The catalogue is data, in ``official.yaml`` beside this file:
for each id the URL, the spandrel architecture and scale the file must be detected as, the cem_lab task
it was trained for, the licence of the weights as the publisher states it, and a sha256 only where the
publisher states one (a full digest, or the 8-hex prefix of a BasicSR / torch.hub file name); every fact
names the file of the publisher's repository it was read from.

The download (:func:`fetch_checkpoint`):

- goes to ``<cache>/official/<file name>``, where ``<cache>`` is the pretrained catalogue's cache folder
  (:func:`cem_lab.models.pretrained.cache_folder`: ``model.cache_dir``, else ``$CEM_LAB_CACHE/pretrained``,
  else ``~/.cache/cem_lab/pretrained``);
- is written to ``<file name>.part`` in that folder, fsynced, checked (size > 0, the stated sha256, a
  readable state dict whose detected architecture and scale are the catalogue's), and only then moved into
  place with ``os.replace``; a file that fails a check is deleted and never cached;
- resumes: a ``.part`` left by a broken download is continued with an HTTP Range request when the server
  answers one (206), and started again otherwise;
- holds an OS lock (``flock`` on ``.<file name>.lock``) while it looks and writes, so that two processes
  asking for the same file leave one good copy: the second waits, then finds the first one's file;
- shows a progress bar (size, rate, ETA) unless ``progress=false``.

Without a network, the error names the URL and the exact path where a copy fetched elsewhere goes; a file
put there by hand is checked the same way and used. The run's ``model_info`` records the id, the URL, the
sha256 of the file (and the stated one), how the file was obtained and the catalogue entry.

Tests point the downloads at a local server: ``$CEM_LAB_OFFICIAL_URL_BASE`` (:data:`URL_BASE_ENV`), when
set, replaces everything before the file name of every catalogue URL.
"""

from __future__ import annotations

import difflib
import errno
import http.client
import json
import logging
import os
import pkgutil
import re
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from cem_lab.io import PathLike, file_sha256, write_json
from cem_lab.models.by_path import DetectedNetwork, detect
from cem_lab.models.checkpoint import TORCH_SUFFIXES, CheckpointError
from cem_lab.models.pretrained import cache_folder

try:  # POSIX; elsewhere the downloads are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("cem_lab")

CATALOGUE_FILE = Path(__file__).with_name("official.yaml")
#: test-only: a URL prefix that replaces the catalogue's (``http://127.0.0.1:PORT``): URL = prefix/<file>
URL_BASE_ENV = "CEM_LAB_OFFICIAL_URL_BASE"
#: the sub-folder of the pretrained cache that holds the downloads
SUBFOLDER = "official"
TASK_NAMES = ("sr", "dn", "dr", "jpeg")
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
_HEX = re.compile(r"^[0-9a-f]{8,64}$")


class OfficialModelError(CheckpointError):
    """An unknown id, a download that failed or a file that failed its checks."""


@dataclass(frozen=True)
class Official:
    """One catalogue checkpoint: where it is published, what it must be, what it was trained for."""

    id: str
    url: str
    architecture: str  #: the spandrel architecture id the file is detected as
    task: str  #: sr | dn | dr | jpeg
    scale: int
    licence: str  #: of the weights, as the publisher states it
    source: str  #: the publisher's files the facts were read from
    trained_for: str = ""
    objective: str = ""  #: PSNR (an L1/L2 loss) or GAN (perceptual + adversarial)
    sha256: str | None = None  #: stated by the publisher: a full digest or a prefix (>= 8 hex digits)
    sigma: float | None = None  #: dn: the noise level it was trained for (null: blind)
    jpeg_quality: int | None = None  #: jpeg: the quality it was trained for
    grey: str | None = None  #: per_channel for a one-channel network

    @property
    def file(self) -> str:
        """The file name: the URL's last component."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def task_overrides(self) -> list[str]:
        """The cem-lab overrides of the task it was trained for."""
        if self.task == "dn":
            return ["task=dn"] + ([f"task.sigma={self.sigma:g}"] if self.sigma is not None else [])
        if self.task == "jpeg":
            return ["task=jpeg", f"task.quality={self.jpeg_quality}", f"task.scale={self.scale}"]
        if self.task == "dr":
            return ["task=dr"]
        return ["task=sr", f"task.scale={self.scale}"]


def _entry_from(model_id: str, raw: Any) -> Official:
    if not isinstance(raw, dict):
        raise OfficialModelError(f"{CATALOGUE_FILE}: entry {model_id!r} is not a mapping")
    known = {f.name for f in fields(Official)} - {"id"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise OfficialModelError(f"{CATALOGUE_FILE}: entry {model_id!r} has unknown keys {unknown}")
    try:
        e = Official(id=str(model_id), **raw)
    except TypeError as err:
        raise OfficialModelError(f"{CATALOGUE_FILE}: entry {model_id!r}: {err}") from err
    if e.task not in TASK_NAMES:
        raise OfficialModelError(f"{CATALOGUE_FILE}: {e.id}: task {e.task!r} is not one of {TASK_NAMES}")
    if not e.file.lower().endswith(TORCH_SUFFIXES):
        raise OfficialModelError(f"{CATALOGUE_FILE}: {e.id}: {e.file} is not a PyTorch file ({TORCH_SUFFIXES})")
    if e.sha256 is not None and not _HEX.match(str(e.sha256)):
        raise OfficialModelError(f"{CATALOGUE_FILE}: {e.id}: sha256 {e.sha256!r} is not 8 to 64 lower-case hex digits")
    return e


@lru_cache(maxsize=1)
def catalogue() -> dict[str, Official]:
    """Every catalogue entry by id, in file order."""
    raw = yaml.safe_load(CATALOGUE_FILE.read_text(encoding="utf-8")) or {}
    return {str(k): _entry_from(str(k), v) for k, v in raw.items()}


def catalogue_ids() -> list[str]:
    """The ids of the official catalogue, in catalogue order."""
    return list(catalogue())


def entry(model_id: str) -> Official:
    """The catalogue entry of ``model_id``; an unknown id names the closest ones and the whole list."""
    entries = catalogue()
    if model_id not in entries:
        close = difflib.get_close_matches(str(model_id), list(entries), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise OfficialModelError(
            f"no official checkpoint {model_id!r}; {hint}the catalogue has: {', '.join(entries)} "
            "(python -m cem_lab.models.official lists them)"
        )
    return entries[model_id]


def download_url(e: Official) -> str:
    """The URL the file is fetched from: the catalogue's, or ``$CEM_LAB_OFFICIAL_URL_BASE/<file>`` in tests."""
    base = os.environ.get(URL_BASE_ENV, "").strip()
    return f"{base.rstrip('/')}/{e.file}" if base else e.url


def cache_path(model_id: str, cache_dir: PathLike | None = None) -> Path:
    """Where the file of ``model_id`` is kept (and where a copy fetched by hand goes)."""
    return cache_folder(cache_dir) / SUBFOLDER / entry(model_id).file


# --------------------------------------------------------------------------- locking
@contextmanager
def _locked(path: Path, what: str):
    """Hold an exclusive ``flock`` on ``path`` for the block, waiting for another holder (the lock file is
    left in place: removing it would let a waiting process lock a file nobody else sees)."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OfficialModelError(
                    f"cannot lock {path} ({err.strerror or err}); put the cache on a local disk (model.cache_dir=...)"
                ) from err
            log.info("another process is fetching %s: waiting for it", what)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- downloading
def _no_network(e: Official, url: str, target: Path, reason: str) -> OfficialModelError:
    return OfficialModelError(
        f"cannot download {e.id} from {url} ({reason}); without a network, fetch that file elsewhere and put "
        f"it at {target} (it is checked there and used)"
    )


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"bytes\s+(\d+)-\d+/(\d+|\*)", value or "")
    return int(m.group(1)) if m else None


def _download(e: Official, url: str, part: Path, target: Path, progress: bool, again: bool = True) -> int:
    """Fetch ``url`` into ``part``, continuing what it holds where the server allows; returns the size.
    ``again``: whether an unusable partial answer may start the download over (once)."""
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "cem_lab"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have and again:  # the range is past the end: the .part is whole or wrong
            part.unlink(missing_ok=True)
            return _download(e, url, part, target, progress, again=False)
        raise _no_network(e, url, target, f"HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", None) or err
        raise _no_network(e, url, target, str(reason)) from None
    with resp:
        length = resp.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        if resp.status == 206 and _content_range_start(resp.headers.get("Content-Range")) != have:
            if not again:  # a part of the file that is not the part asked for
                raise _no_network(e, url, target, "the server answered with another byte range than asked for")
            part.unlink(missing_ok=True)
            resp.close()
            return _download(e, url, part, target, progress, again=False)
        if resp.status == 206:
            mode, start = "ab", have
            log.info("resuming the download of %s at %d bytes", e.file, have)
        else:
            mode, start = "wb", 0
            if have:
                log.info("the server does not resume %s: starting again", e.file)
        total = start + remaining if remaining is not None else None
        got = start
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"downloading {e.file}",
                dynamic_ncols=True,
            )
        try:
            with open(part, mode) as fh:
                while True:
                    try:
                        chunk = resp.read(_CHUNK)
                    except (http.client.IncompleteRead, OSError, http.client.HTTPException) as err:
                        fh.flush()
                        os.fsync(fh.fileno())
                        raise OfficialModelError(
                            f"the download of {url} broke off after {got} of {total or '?'} bytes "
                            f"({type(err).__name__}); nothing was cached; run again to resume it, or put the "
                            f"file at {target} by hand"
                        ) from None
                    if not chunk:
                        break
                    fh.write(chunk)
                    got += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            if bar is not None:
                bar.close()
    if total is not None and got != total:
        raise OfficialModelError(
            f"the download of {url} ended after {got} of {total} bytes; nothing was cached; run again to "
            f"resume it, or put the file at {target} by hand"
        )
    return got


# --------------------------------------------------------------------------- checking
def _digest_matches(e: Official, digest: str) -> bool:
    return e.sha256 is None or digest.startswith(str(e.sha256).lower())


def _check(e: Official, path: Path, shown: Path):
    """Check the file at ``path`` (size, stated digest, a state dict of the catalogue's architecture and
    scale) and return ``(descriptor, record, sha256)``; raises :class:`OfficialModelError` naming ``shown``."""
    size = path.stat().st_size
    if size == 0:
        raise OfficialModelError(f"{shown} is empty (0 bytes)")
    digest = file_sha256(path)
    if not _digest_matches(e, digest):
        raise OfficialModelError(
            f"{shown} is not the published {e.file}: its sha256 is {digest}, the publisher states "
            f"{e.sha256}{'...' if len(str(e.sha256)) < 64 else ''}"
        )
    try:
        desc, record = detect(path)  # reads it as a state dict (cem_lab.models.checkpoint.read_checkpoint)
    except CheckpointError as err:
        raise OfficialModelError(f"{shown} is not a usable {e.id} checkpoint: {err}") from None
    arch, scale = str(record["architecture_id"]), int(record["scale"])
    if arch != e.architecture or scale != e.scale:
        raise OfficialModelError(
            f"{shown} holds a {record['architecture']} x{scale} network; {e.id} is a {e.architecture} x{e.scale}"
        )
    record = dict(record, sha256=digest, checkpoint=str(shown))
    return desc, record, digest


def _noted_digest(note: Path) -> str | None:
    """The sha256 that the download of a cached file recorded beside it (None: the file was put by hand)."""
    try:
        return json.loads(note.read_text(encoding="utf-8")).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None


def fetch_checkpoint(model_id: str, cache_dir: PathLike | None = None, progress: bool = True):
    """The checked checkpoint of ``model_id`` in the cache, downloaded first if it is not there.

    Returns ``(path, descriptor, record, how)``: the cached file, its spandrel descriptor and record (the
    sha256 it has), and how it was obtained (``downloaded``, ``cached``, or ``placed by hand``)."""
    e = entry(model_id)
    folder = cache_folder(cache_dir) / SUBFOLDER
    target = folder / e.file
    url = download_url(e)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OfficialModelError(
            f"cannot create the cache folder {folder} ({err.strerror or err}); set model.cache_dir or $CEM_LAB_CACHE"
        ) from None
    note = target.with_name(f"{e.file}.json")  # what the download recorded
    with _locked(folder / f".{e.file}.lock", e.file):
        if target.is_file():
            try:
                desc, record, digest = _check(e, target, target)
            except OfficialModelError as err:
                raise OfficialModelError(f"{err} (delete it to download it again)") from None
            return target, desc, record, "cached" if _noted_digest(note) == digest else "placed by hand"
        part = target.with_name(f"{e.file}.part")
        log.info("downloading %s from %s into %s", e.id, url, folder)
        started = time.time()
        _download(e, url, part, target, progress)
        try:
            desc, record, digest = _check(e, part, target)
        except OfficialModelError as err:
            part.unlink(missing_ok=True)
            raise OfficialModelError(f"the download of {url} was refused and deleted: {err}") from None
        os.replace(part, target)
        with suppress(OSError):  # the rename itself is made durable where the OS allows it
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        write_json(
            note,
            {
                "id": e.id,
                "url": url,
                "sha256": digest,
                "size": target.stat().st_size,
                "downloaded": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "seconds": round(time.time() - started, 2),
            },
        )
        return target, desc, record, "downloaded"


# --------------------------------------------------------------------------- the model group
def _task_name(task: str | None) -> str | None:
    """The task name (``sr``, ``dn``, ...) of a task config's ``_target_``; None when it cannot be told."""
    if not task:
        return None
    if task in TASK_NAMES:
        return task
    try:  # the task classes carry their name; read it without a static import of the tasks room
        name = str(pkgutil.resolve_name(str(task)).name)
    except Exception:
        return None
    return name if name in TASK_NAMES else None  # a custom task: nothing to check


def load_official(
    id: str,  # noqa: A002 - the config key is `id`
    cache_dir: PathLike | None = None,
    scale: int | None = None,
    task: str | None = None,
    sigma: float | None = None,
    allow_other_task: bool = False,
    progress: bool = True,
) -> DetectedNetwork:
    """The official checkpoint ``id`` as cem_lab runs it (downloaded and checked at first use, then cached).

    ``scale``: the task's scale (refused when it is not the network's); ``task``: the task's name or
    ``_target_`` (a network of another task is refused unless ``allow_other_task``); ``sigma``: the task's
    noise level (a warning when a denoiser was trained for another)."""
    e = entry(id)
    want = _task_name(task)
    if want is not None and want != e.task and not allow_other_task:
        raise OfficialModelError(
            f"{e.id} was trained for {e.task} (scale {e.scale}), not {want}: map it with "
            f"{' '.join(e.task_overrides())}, or set model.allow_other_task=true to map it off its task anyway"
        )
    if scale is not None and int(scale) != e.scale and (want is None or want == e.task):
        raise OfficialModelError(
            f"{e.id} is a x{e.scale} network and the task asks for x{int(scale)}: map it with "
            f"{' '.join(e.task_overrides())}"
        )
    if e.sigma is not None and sigma is not None and float(sigma) != float(e.sigma) and want in (None, "dn"):
        log.warning("%s was trained for noise sigma %g; the task's is %g", e.id, e.sigma, float(sigma))
    path, desc, record, how = fetch_checkpoint(id, cache_dir=cache_dir, progress=progress)
    net = DetectedNetwork(desc, record, grey=e.grey)
    net.name = e.id
    net.model_info = {
        **net.model_info,
        "loader": f"cem_lab official catalogue; {record['loader']}",
        "id": e.id,
        "url": download_url(e),
        "sha256": record["sha256"],
        "sha256_stated": e.sha256,
        "obtained": how,
        "catalogue": {**asdict(e), "file": e.file},
    }
    log.info("%s: %s x%d, sha256 %s (%s: %s)", e.id, record["architecture"], net.scale, record["sha256"], how, path)
    return net.eval()


def describe_catalogue(cache_dir: PathLike | None = None) -> str:
    """The catalogue as text: one line per id (task, architecture, whether it is cached) and its URL."""
    lines = []
    for e in catalogue().values():
        cached = "cached" if (cache_folder(cache_dir) / SUBFOLDER / e.file).is_file() else "not downloaded"
        lines.append(f"{e.id:26s} {' '.join(e.task_overrides()):36s} {e.architecture:8s} {e.objective:5s} {cached}")
        lines.append(f"{'':26s} {e.url}")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m cem_lab.models.official: the catalogue
    print(describe_catalogue())
