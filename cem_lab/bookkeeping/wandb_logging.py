"""Weights & Biases logging for `cem-lab logger=wandb` (optional: pip install "cem_lab[wandb]").

One W&B run per CEM run, made from the run folder's files (so a run reused from an earlier command
logs the same things as one computed now):
- the resolved config (``wandb.config``);
- the summary metrics of ``summary.json``: block counts and shares, effect range, max and min,
  baseline metric, reach, forward passes, timings (as ``counts/positive``, ``timings/run_s``, ...);
- every ``figures/*.png`` as an image (``figures/<name>``);
- the per-block table ``cem_blocks`` (row, col, effect, stderr, n, class, roi) from ``cem.npz``.

Runs of one sweep share ``group=<sweep name>``. Without ``logger.mode`` the mode is online when
``WANDB_MODE`` is unset and an API key is found (``WANDB_API_KEY`` or the ``wandb login`` entry in
~/.netrc), else offline: nothing needs a network, and ``wandb sync <run folder>/wandb/offline-run-*``
uploads later. The W&B run is finished in every case, with exit code 1 when the CEM run failed.
A run logged once is not logged again when a rerun finds it finished (``wandb.json`` in the folder).
The core (cem_lab.causal) never imports wandb.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cem_lab.errors import InputError
from cem_lab.io import write_json
from cem_lab.run_format import FIGURES_DIR, read_cem_arrays, read_summary

MARKER = "wandb.json"
TABLE_COLUMNS = ["row", "col", "effect", "stderr", "n", "class", "roi"]
_SCALARS = (
    "baseline_metric",
    "baseline_metric_full_image",
    "blocks_outside_roi",
    "effect_range",
    "total_positive_effect",
    "total_negative_effect",
    "forward_passes",
)
_GROUPS = ("counts", "shares", "reach_px", "timings")


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
        return netrc.netrc().authenticators(host) is not None
    except Exception:
        return False


def resolve_mode(requested: str | None) -> str | None:
    """The ``mode`` to give wandb.init: the requested one, else None (wandb reads WANDB_MODE, or goes
    online) when WANDB_MODE is set or an API key is found, else "offline"."""
    if requested:
        return str(requested)
    if os.environ.get("WANDB_MODE") or _has_api_key():
        return None
    return "offline"


def metrics_from_summary(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers of ``summary.json`` worth tracking, with flat slash-separated names."""
    out: dict[str, float] = {}
    for key in _SCALARS:
        v = summary.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    for group in _GROUPS:
        for k, v in (summary.get(group) or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{group}/{k}"] = v
    for key in ("effect_max", "effect_min"):
        if isinstance(summary.get(key), dict):
            out[f"{key}"] = summary[key]["value"]
    return out


def block_rows(folder: Path) -> list[list[Any]]:
    """One row per block: row, col, effect, stderr, n, class (-1/0/+1), roi (in the ROI)."""

    def num(x: float) -> float | None:
        return None if not math.isfinite(float(x)) else float(x)

    z = read_cem_arrays(folder)
    effect, stderr, n = z["effect"], z["stderr"], z["counts"]
    cls, roi = z["classification"], z["roi_mask"]
    rows = []
    for r in range(effect.shape[0]):
        for c in range(effect.shape[1]):
            rows.append([r, c, num(effect[r, c]), num(stderr[r, c]), int(n[r, c]), int(cls[r, c]), bool(roi[r, c])])
    return rows


def already_logged(folder: Path, fingerprint: str | None) -> bool:
    """Whether ``folder``'s W&B marker records this ``fingerprint`` (False when either is missing)."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return fingerprint is not None and marker.get("fingerprint") == fingerprint


class WandbRun:
    """A started W&B run and the way a cem-lab run folder is logged to it."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def log_folder(self, folder: Path) -> None:
        """Log a run folder's summary metrics, figures and block table, and write its W&B marker."""
        import wandb  # lazy: an optional dependency (cem_lab[wandb]), for logger=wandb only

        folder = Path(folder)
        summary = read_summary(folder, missing_ok=False)
        data: dict[str, Any] = dict(metrics_from_summary(summary))
        for png in sorted((folder / FIGURES_DIR).glob("*.png")):
            data[f"figures/{png.stem}"] = wandb.Image(str(png))
        data["cem_blocks"] = wandb.Table(columns=TABLE_COLUMNS, data=block_rows(folder))
        self.run.log(data)
        self.run.summary["fingerprint"] = summary.get("fingerprint")
        self.run.summary["run_folder"] = str(folder)
        offline = bool(getattr(self.run, "offline", False))
        write_json(
            folder / MARKER,
            {
                "fingerprint": summary.get("fingerprint"),
                "id": self.run.id,
                "project": self.run.project,
                "group": self.run.group,
                "dir": str(self.run.dir),
                "offline": offline,
                "url": None if offline else self.run.url,
                "logged": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )


@contextmanager
def wandb_run(
    cfg: DictConfig, folder: Path, *, group: str | None = None, name: str | None = None
) -> Iterator[WandbRun]:
    """Start a W&B run for the CEM run of ``cfg`` in ``folder``; always finish it (exit code 1 on
    error, the error re-raised)."""
    try:
        import wandb  # lazy: an optional dependency (cem_lab[wandb]), for logger=wandb only
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise InputError('logger=wandb needs wandb: pip install "cem_lab[wandb]"') from err

    lc = cfg.logger
    folder = Path(folder)
    wdir = Path(lc.get("dir") or folder)
    wdir.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    run = wandb.init(
        project=lc.get("project") or "cem_lab",
        entity=lc.get("entity"),
        group=lc.get("group") or group,
        name=name or folder.name,
        job_type="cem",
        tags=list(lc.get("tags") or []),
        config=config,
        dir=str(wdir),
        mode=resolve_mode(lc.get("mode")),
    )
    exit_code = 1
    try:
        yield WandbRun(run)
        exit_code = 0
    except BaseException as err:
        run.summary["error"] = f"{type(err).__name__}: {err}".splitlines()[0]
        raise
    finally:
        run.finish(exit_code=exit_code)
