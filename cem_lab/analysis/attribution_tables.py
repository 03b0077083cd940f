"""Faithfulness over a study: the deletion and insertion numbers of finished `cem-attribution` run
folders, per run and over runs, with intervals and the paired comparison with the CEM (read from
``attribution.json``; nothing is recomputed).

Per run, intervention and method: ``deletion_drop`` = the ROI metric before any deletion minus the
area under the deletion curve (how far the metric falls, on average over the curve, when the
method's highest-ranked blocks are replaced first: larger = the ranking finds the blocks the ROI
needs), and ``insertion_gain`` = the insertion curve's area minus its start (larger = better).
Over runs, per intervention and method: the mean of each with a 95 % t-interval, the share of
runs where the method's deletion drop is the largest of all methods, the paired difference of
its drop from the CEM's (mean and 95 % t-interval over the runs that have both), and LAM's diffusion
index of the method's map (``diffusion_index``: of the block map outside the ROI, every method on the
same grid; ``diffusion_index_pixels``: of the per-pixel map, gradient methods only; mean and 95 %
t-interval over runs; :mod:`cem_lab.attribution.diffusion`). Runs written before the index have none
(NaN, left out of its mean).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from cem_lab.analysis.attribution import RESULT_JSON
from cem_lab.io import PathLike

ROW_COLUMNS = (
    "run",
    "model",
    "image",
    "roi",
    "intervention",
    "method",
    "baseline_metric",
    "deletion_auc",
    "insertion_auc",
    "deletion_drop",
    "insertion_gain",
    "rank_correlation_with_cem",
    "diffusion_index",
    "diffusion_index_pixels",
)


def find_attribution_folders(paths: Sequence[PathLike], exclude: Iterable[PathLike] = ()) -> list[Path]:
    """Every folder under ``paths`` holding a finished attribution run (``attribution.json``), sorted;
    hidden folders and those in ``exclude`` are not searched."""
    skip = {Path(p).resolve() for p in exclude}
    found = set()
    for path in paths:
        root = Path(path)
        if not root.is_dir():
            continue
        for here, dirs, files in os.walk(root.resolve()):
            folder = Path(here)
            if folder in skip:
                dirs[:] = []
                continue
            if RESULT_JSON in files:
                found.add(folder)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(found)


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def faithfulness_rows(folders: Sequence[PathLike]) -> pd.DataFrame:
    """One row per (run, intervention, method); see the module docstring."""
    rows = []
    for folder in map(Path, folders):
        s = json.loads((folder / RESULT_JSON).read_text())
        rc = s.get("rank_correlation", {})
        di = s.get("diffusion_index") or {}
        for inter, f in (s.get("faithfulness") or {}).items():
            base = _num(f.get("baseline_metric", s.get("baseline_metric")))
            for method, m in f.get("methods", {}).items():
                corr = rc.get(f"{method}~cem") or rc.get(f"cem~{method}") or {}
                dele, ins = _num(m.get("deletion_auc")), _num(m.get("insertion_auc"))
                rows.append(
                    {
                        "run": str(folder),
                        "model": s.get("model"),
                        "image": s.get("image"),
                        "roi": str(s.get("roi")),
                        "intervention": inter,
                        "method": method,
                        "baseline_metric": base,
                        "deletion_auc": dele,
                        "insertion_auc": ins,
                        "deletion_drop": base - dele,
                        "insertion_gain": ins - _num(m.get("insertion_start")),
                        "rank_correlation_with_cem": 1.0 if method == "cem" else _num(corr.get("rho")),
                        "diffusion_index": _num((di.get(method) or {}).get("blocks")),
                        "diffusion_index_pixels": _num((di.get(method) or {}).get("pixels")),
                    }
                )
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS))


def _mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float, int]:
    v = values[np.isfinite(values)]
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    m = float(v.mean())
    if n < 2:
        return m, float("nan"), float("nan"), n
    half = float(sps.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / np.sqrt(n))
    return m, m - half, m + half, n


def faithfulness_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (intervention, method), over runs: see the module docstring."""
    out = []
    if rows.empty:
        return pd.DataFrame(out)
    rows = rows.copy()
    rows["key"] = rows["run"] + "|" + rows["roi"]
    best = rows.groupby(["key", "intervention"])["deletion_drop"].transform("max")
    rows["best"] = rows["deletion_drop"] >= best
    for (inter, method), g in rows.groupby(["intervention", "method"], sort=True):
        d = _mean_ci(g["deletion_drop"].to_numpy(float))
        i = _mean_ci(g["insertion_gain"].to_numpy(float))
        entry = {
            "intervention": inter,
            "method": method,
            "runs": d[3],
            "deletion_drop": d[0],
            "deletion_drop_lo": d[1],
            "deletion_drop_hi": d[2],
            "insertion_gain": i[0],
            "insertion_gain_lo": i[1],
            "insertion_gain_hi": i[2],
            "share_best_deletion": float(g["best"].mean()),
            "rank_correlation_with_cem": float(np.nanmean(g["rank_correlation_with_cem"]))
            if g["rank_correlation_with_cem"].notna().any()
            else float("nan"),
        }
        for col in ("diffusion_index", "diffusion_index_pixels"):
            v = _mean_ci(g[col].to_numpy(float)) if col in g else (float("nan"),) * 3
            entry.update({col: v[0], f"{col}_lo": v[1], f"{col}_hi": v[2]})
        cem = rows[(rows["intervention"] == inter) & (rows["method"] == "cem")].set_index("key")["deletion_drop"]
        paired = g.set_index("key")["deletion_drop"].sub(cem).dropna()
        p = _mean_ci(paired.to_numpy(float))
        entry.update({"minus_cem": p[0], "minus_cem_lo": p[1], "minus_cem_hi": p[2], "paired_runs": p[3]})
        out.append(entry)
    return pd.DataFrame(out)


def faithfulness_number(v: float, pct: bool = False) -> str:
    """A faithfulness number as its tables write it: 4 decimals (a share: a percentage), ``-`` when not finite."""
    if not np.isfinite(v):
        return "-"
    return f"{v:.1%}" if pct else f"{v:.4f}"


def faithfulness_markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table: mean [95 % interval] per column."""
    lines = [
        "| intervention | method | runs | deletion drop (dB) | insertion gain (dB) | best deletion | "
        "drop minus CEM's (dB) | rank corr. with CEM | diffusion index (blocks) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.itertuples():
        lines.append(
            f"| {r.intervention} | {r.method} | {r.runs} | {faithfulness_number(r.deletion_drop)} [{faithfulness_number(r.deletion_drop_lo)}, "
            f"{faithfulness_number(r.deletion_drop_hi)}] | {faithfulness_number(r.insertion_gain)} [{faithfulness_number(r.insertion_gain_lo)}, {faithfulness_number(r.insertion_gain_hi)}] | "
            f"{faithfulness_number(r.share_best_deletion, pct=True)} | "
            + (
                "-"
                if r.method == "cem"
                else f"{faithfulness_number(r.minus_cem)} [{faithfulness_number(r.minus_cem_lo)}, {faithfulness_number(r.minus_cem_hi)}]"
            )
            + f" | {faithfulness_number(r.rank_correlation_with_cem)} | {diffusion_text(r)} |"
        )
    return "\n".join(lines) + "\n"


def diffusion_text(r) -> str:
    """A summary row's diffusion index (blocks outside the ROI) as ``mean [low, high]``, one decimal; ``-`` when
    the runs have none."""
    mean = getattr(r, "diffusion_index", float("nan"))
    if not np.isfinite(mean):
        return "-"
    lo, hi = getattr(r, "diffusion_index_lo", float("nan")), getattr(r, "diffusion_index_hi", float("nan"))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{mean:.1f}"
    return f"{mean:.1f} [{lo:.1f}, {hi:.1f}]"
