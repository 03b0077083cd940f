"""Recognising a finished `cem-lab` run without any model work.

After a run succeeds, ``done.json`` records its resolved config (less the keys that do not change
the result: :mod:`cem_lab.bookkeeping.neutral_keys`), the size and modification time of every input file the config names, and the
fingerprint that ``state.npz`` and ``summary.json`` hold. A rerun whose config and inputs match is
skipped; anything else goes to the core, which resumes from ``state.npz`` and checks the
fingerprint itself (settings, model weights, images, patch bank). A finished run asked for figures
that it did not draw (it ran with ``figures=false``) goes to the core too, which draws them from the
finished checkpoint. Code changes (an edited model
class, a new cem_lab) are not noticed here: delete ``done.json`` to force the core's full check.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from cem_lab.bookkeeping.neutral_keys import CEM_NEUTRAL_KEYS, drop_keys
from cem_lab.images import is_image_file
from cem_lab.io import file_signature, write_json
from cem_lab.run_format import CEM_FILE, DONE_FILE, STATE_FILE, SUMMARY_FILE
from cem_lab.viz.style import STYLE_FILE, FigureStyle

#: the figure whose absence makes a finished run asked for figures go to the core (which draws them)
PANEL_FILE = "figures/cem_panel.png"


def identity_config(cfg: DictConfig, neutral: Iterable[str] = CEM_NEUTRAL_KEYS) -> dict:
    """The resolved config less the keys that do not change the result (``neutral``: the program's
    list in :mod:`cem_lab.bookkeeping.neutral_keys`), JSON-normalised."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    drop_keys(data, neutral)
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def input_signatures(cfg: DictConfig) -> dict[str, Any]:
    """Size and modification time of every file that the config names (its identity part), and of
    the image files in the folders that keys named ``*folder``, ``*dir`` or ``*root`` name."""
    out: dict[str, Any] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")
        elif isinstance(node, str) and node and len(node) < 4096:
            p = Path(node)
            try:
                if p.is_file():
                    out[key] = [str(p.resolve())] + file_signature(p)
                elif key.rsplit(".", 1)[-1].endswith(("folder", "dir", "root")) and p.is_dir():
                    h = hashlib.sha1()
                    for f in sorted(p.rglob("*")):
                        if is_image_file(f):
                            h.update(f"{f.relative_to(p)}:{file_signature(f)}\n".encode())
                    out[key] = [str(p.resolve()), h.hexdigest()]
            except OSError:
                pass

    walk(identity_config(cfg), "")
    return out


def state_status(folder: Path) -> tuple[str, str] | None:
    """(``complete`` or ``partial``, fingerprint) of the folder's checkpoint; None without one."""
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return ("complete" if bool(z["complete"]) else "partial"), str(z["fingerprint"])
    except Exception:
        return "partial", ""


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def finished_run(cfg: DictConfig, folder: Path) -> dict | None:
    """The summary of the finished run in ``folder`` if it is exactly this config's run, else None."""
    done = _read_json(folder / DONE_FILE)
    if not done or not (folder / CEM_FILE).is_file():
        return None
    summary = _read_json(folder / SUMMARY_FILE)
    state = state_status(folder)
    if summary is None or state is None or state[0] != "complete":
        return None
    if not (done.get("fingerprint") == summary.get("fingerprint") == state[1]):
        return None
    if done.get("config") != identity_config(cfg) or done.get("inputs") != input_signatures(cfg):
        return None
    style = FigureStyle.from_setting(cfg.get("figures"))
    if style.draw and not all((folder / PANEL_FILE).with_suffix(f".{f}").is_file() for f in style.formats):
        return None
    if style.draw and _read_json(folder / PANEL_FILE.rsplit("/", 1)[0] / STYLE_FILE) != style.as_setting():
        return None  # drawn in another style (figures.range, dpi ...): the core redraws them from the result
    return summary


def mark_done(cfg: DictConfig, folder: Path, fingerprint: str) -> None:
    """Write ``done.json``: this config's identity and inputs, and the result's fingerprint."""
    write_json(
        folder / DONE_FILE,
        {
            "fingerprint": fingerprint,
            "config": identity_config(cfg),
            "inputs": input_signatures(cfg),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
