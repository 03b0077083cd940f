"""model=official: catalogue checkpoints downloaded once, checked, cached and mapped.

Nothing leaves the machine: a loopback HTTP server (127.0.0.1, port 0, in a thread; it answers Range
requests, and can be told to cut a response short or to ignore ranges) serves small networks the tests
make, and ``$CEM_LAB_OFFICIAL_URL_BASE`` points every catalogue URL at it (``<base>/<file name>``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import importlib
import io
import json
import logging
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import assert_clean_refusal

pytest.importorskip("spandrel", reason="model=official detects the architecture with spandrel")

from cem_lab.models import official  # noqa: E402
from cem_lab.models.official import OfficialModelError, cache_path, load_official  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
COMPACT_ID = "realesr-general-x4v3"  # a Compact (SRVGG) x4 in the catalogue: served as a tiny one
DIGEST_ID = "esrgan-x4-official"  # the catalogue states its sha256 prefix (ff704c30)


def _compact_bytes(seed: int = 0) -> bytes:
    srvgg = importlib.import_module("spandrel.architectures.Compact.__arch.SRVGG").SRVGGNetCompact
    torch.manual_seed(seed)
    net = srvgg(num_in_ch=3, num_out_ch=3, num_feat=4, num_conv=2, upscale=4)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return buf.getvalue()


GOOD = _compact_bytes()
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        srv = self.server
        name = self.path.lstrip("/")
        srv.requests.append((name, self.headers.get("Range")))
        data = srv.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and srv.ranges:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes" if srv.ranges else "none")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cut = srv.cut.pop(name, None)  # one short answer: fewer bytes than Content-Length, then close
        if cut is not None:
            body = body[:cut]
            self.close_connection = True
        if srv.hold:  # the first bytes, then the rest once the test releases it
            self.wfile.write(body[:64])
            self.wfile.flush()
            srv.release.wait(60)
            body = body[64:]
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut: dict[str, int] = {}
        self.ranges = True
        self.hold = False  # hold every answer after its first bytes until `release` is set
        self.release = threading.Event()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server(monkeypatch, tmp_path):
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv(official.URL_BASE_ENV, srv.base)
    monkeypatch.setenv("CEM_LAB_CACHE", str(tmp_path / "cache"))
    srv.files[official.entry(COMPACT_ID).file] = GOOD
    srv.files[official.entry(DIGEST_ID).file] = GOOD  # not the published file: its digest differs
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _leftovers(model_id: str) -> list[str]:
    folder = cache_path(model_id).parent
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.is_dir() else []


# --------------------------------------------------------------------------- the catalogue
def test_every_entry_is_well_formed_and_states_only_publisher_digests():
    entries = official.catalogue()
    assert {"swinir-m-x2-classical", "realesrgan-x4plus", "dncnn-color-blind", "scunet-color-50"} <= set(entries)
    for e in entries.values():
        assert e.url.startswith("https://github.com/") and "/releases/download/" in e.url, e.id
        assert e.task in official.TASK_NAMES and e.scale >= 1 and e.licence and e.source, e.id
        assert (e.scale > 1) == (e.task == "sr"), e.id
        if e.sha256 is not None:  # only the publisher's: BasicSR's NAME-<8 hex of sha256>.pth
            assert e.file.rsplit(".", 1)[0].endswith(f"-{e.sha256}"), e.id
    assert len({e.file for e in entries.values()}) == len(entries)


def test_an_unknown_id_names_the_closest_and_a_wrong_task_is_refused_before_any_request(server):
    with pytest.raises(OfficialModelError, match="did you mean realesr-general-x4v3"):
        load_official("realesr-general", progress=False)
    with pytest.raises(OfficialModelError, match=r"x4 network and the task asks for x2: map it with task=sr"):
        load_official(COMPACT_ID, scale=2, progress=False)
    with pytest.raises(OfficialModelError, match="trained for sr .* not dn"):
        load_official(COMPACT_ID, scale=1, task="cem_lab.tasks.denoise.DenoiseTask", progress=False)
    assert server.requests == []


# --------------------------------------------------------------------------- downloading
def test_a_good_download_is_cached_and_reused_without_a_second_request(server):
    net = load_official(COMPACT_ID, scale=4, task="cem_lab.tasks.super_resolution.SuperResolutionTask", progress=False)
    info = net.model_info
    assert net.scale == 4 and info["architecture_id"] == "Compact" and info["obtained"] == "downloaded"
    assert info["sha256"] == GOOD_SHA and info["url"] == f"{server.base}/{official.entry(COMPACT_ID).file}"
    target = cache_path(COMPACT_ID)
    assert target.read_bytes() == GOOD and info["checkpoint"] == str(target)
    assert _leftovers(COMPACT_ID) == [target.name, f"{target.name}.json"]  # no .part left behind
    assert json.loads(target.with_name(f"{target.name}.json").read_text())["sha256"] == GOOD_SHA
    out = net(torch.rand(2, 3, 5, 6))
    assert out.shape == (2, 3, 20, 24)

    again = load_official(COMPACT_ID, scale=4, progress=False)
    assert again.model_info["obtained"] == "cached" and again.model_info["sha256"] == GOOD_SHA
    assert len(server.requests) == 1

    other = _compact_bytes(seed=1)  # the cached file replaced by hand: used, and said so
    target.write_bytes(other)
    info = load_official(COMPACT_ID, progress=False).model_info
    assert info["obtained"] == "placed by hand" and info["sha256"] == hashlib.sha256(other).hexdigest()
    assert len(server.requests) == 1


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed", "restarted"])
def test_a_truncated_download_is_refused_never_cached_and_the_next_call_completes_it(server, ranges):
    server.ranges = ranges
    name = official.entry(COMPACT_ID).file
    half = len(GOOD) // 2
    server.cut[name] = half
    with pytest.raises(OfficialModelError, match=f"after {half} of {len(GOOD)} bytes.*run again to resume"):
        load_official(COMPACT_ID, progress=False)
    target = cache_path(COMPACT_ID)
    assert not target.exists() and target.with_name(f"{name}.part").stat().st_size == half

    net = load_official(COMPACT_ID, progress=False)
    assert net.model_info["sha256"] == GOOD_SHA and target.read_bytes() == GOOD
    assert server.requests == [(name, None), (name, f"bytes={half}-")]  # the second asks for the rest
    assert _leftovers(COMPACT_ID) == [name, f"{name}.json"]


def test_a_part_file_the_server_cannot_continue_is_started_again(server):
    part = cache_path(COMPACT_ID).with_name(f"{official.entry(COMPACT_ID).file}.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * (len(GOOD) + 10))  # longer than the file: the range is past its end (416)
    assert load_official(COMPACT_ID, progress=False).model_info["sha256"] == GOOD_SHA
    assert [r for _, r in server.requests] == [f"bytes={len(GOOD) + 10}-", None] and not part.exists()


def test_a_file_whose_sha256_is_not_the_stated_one_is_refused_deleted_and_never_cached(server, monkeypatch):
    e = official.entry(DIGEST_ID)
    with pytest.raises(OfficialModelError) as err:
        load_official(DIGEST_ID, progress=False)
    msg = str(err.value)
    assert f"its sha256 is {GOOD_SHA}" in msg and "the publisher states ff704c30" in msg and "deleted" in msg
    assert _leftovers(DIGEST_ID) == []  # neither the file nor its .part

    # a full stated digest: the published bytes pass, altered ones are refused
    stated = {**official.catalogue(), COMPACT_ID: dataclasses.replace(official.entry(COMPACT_ID), sha256=GOOD_SHA)}
    monkeypatch.setattr(official, "catalogue", lambda: stated)
    server.files[official.entry(COMPACT_ID).file] = GOOD[:-1] + bytes([GOOD[-1] ^ 1])
    with pytest.raises(OfficialModelError, match=f"the publisher states {GOOD_SHA}"):
        load_official(COMPACT_ID, progress=False)
    assert _leftovers(COMPACT_ID) == []
    server.files[official.entry(COMPACT_ID).file] = GOOD
    assert load_official(COMPACT_ID, progress=False).model_info["sha256_stated"] == GOOD_SHA
    assert e.sha256 == "ff704c30"


def _child(cache: str, base: str, queue) -> None:
    os.environ["CEM_LAB_CACHE"] = cache
    os.environ[official.URL_BASE_ENV] = base
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("cem_lab").addHandler(handler)
    logging.getLogger("cem_lab").setLevel(logging.INFO)
    queue.put("ready")
    try:
        info = load_official(COMPACT_ID, progress=False).model_info
        queue.put((info["obtained"], info["sha256"], any("another process is fetching" in m for m in said)))
    except Exception as err:  # reported to the parent
        queue.put(("error", repr(err), False))


@pytest.mark.slow
def test_two_processes_downloading_the_same_file_leave_one_good_copy(server, tmp_path):
    server.hold = True  # the first download holds the lock until both processes have asked for the file
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(str(tmp_path / "cache"), server.base, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    assert [queue.get(timeout=120) for _ in procs] == ["ready", "ready"]
    time.sleep(1.0)  # both are in load_official now: one downloading, the other waiting for its lock
    server.release.set()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    # one downloaded; the other waited for it and found its file
    assert results == [("cached", GOOD_SHA, True), ("downloaded", GOOD_SHA, False)], results
    assert len(server.requests) == 1 and cache_path(COMPACT_ID).read_bytes() == GOOD
    name = official.entry(COMPACT_ID).file
    assert _leftovers(COMPACT_ID) == [name, f"{name}.json"]


# --------------------------------------------------------------------------- no network
def test_without_a_network_one_error_names_the_url_and_the_path_and_a_file_put_there_is_used(server, monkeypatch):
    base = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv(official.URL_BASE_ENV, base)
    target = cache_path(COMPACT_ID)
    with pytest.raises(OfficialModelError) as err:
        load_official(COMPACT_ID, progress=False)
    msg = str(err.value)
    assert f"{base}/{target.name}" in msg and f"put it at {target} " in msg and "\n" not in msg

    target.write_bytes(b"not a checkpoint")  # a bad copy put by hand: refused, and left for the user to delete
    with pytest.raises(OfficialModelError, match=r"is not a usable .*\(delete it to download it again\)"):
        load_official(COMPACT_ID, progress=False)
    assert target.exists()

    target.write_bytes(GOOD)
    net = load_official(COMPACT_ID, progress=False)
    assert net.model_info["obtained"] == "placed by hand" and net.model_info["sha256"] == GOOD_SHA
    assert server.requests == []


def _cem(args, cwd: Path, env: dict):
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "cem_lab.cli.cem", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


MAP = [
    f"model.id={COMPACT_ID}",
    "task=sr",
    "task.scale=4",
    "dataset=standard",
    "standard.name=monarch",
    "image_crop=32",
    "roi=[8,8,16]",
    "cem.block=16",
    "cem.coarse=2",
    "cem.fine=3",
    "figures=false",
    "progress=false",
]


@pytest.mark.slow
def test_the_cli_maps_an_official_checkpoint_and_refuses_in_one_line_without_a_network(server, tmp_path):
    env = {"CEM_LAB_CACHE": str(tmp_path / "cache"), official.URL_BASE_ENV: f"http://127.0.0.1:{_closed_port()}"}
    p = _cem(["model=official", *MAP, f"hydra.run.dir={tmp_path / 'refused'}"], tmp_path, env)
    assert_clean_refusal(p, "cannot download", f"put it at {cache_path(COMPACT_ID)}")

    env[official.URL_BASE_ENV] = server.base
    run = tmp_path / "run"
    p = _cem(["model=official", *MAP, f"hydra.run.dir={run}"], tmp_path, env)
    assert p.returncode == 0, p.stderr[-3000:]
    info = json.loads((run / "summary.json").read_text())["model_info"]
    assert info["id"] == COMPACT_ID and info["obtained"] == "downloaded" and info["sha256"] == GOOD_SHA
    assert info["architecture"] == "RealESRGAN Compact" and info["scale"] == 4
    assert len(server.requests) == 1
