"""The robustness ablations of the method (paper, section 6.4), run over a population of images x ROIs.

    python experiments/ablations.py plan      # what it will run, and the time it took here
    python experiments/ablations.py run       # the sweeps (resumable: finished jobs are skipped)
    python experiments/ablations.py report    # tables + figures -> experiments/results/ablations.md
    python experiments/ablations.py all       # run, then report

Two networks: KAIR's real colour blind DnCNN (``../shared/data/dncnn_color_blind.pth``, or
``$CEM_LAB_DATA``) on DN sigma 50, and the zoo's EDSR (depth 4, width 16) on SR x4. Population: 256 x 256
centre crops of held-out photographs (no zoo model saw them: monarch, barbara, kodim23 for SR; monarch
and barbara for the DnCNN, whose maps cost about five times more here) x two ROIs of 32 px placed by the
seeded texture-strata rule (``roi=placed roi_place.count=2``: one flat, one textured; on a 16 px grid,
so every block size maps the same ROIs). Each factor is changed alone from
the reference settings (block 8, T_c 3, T_f 50, LV with the DIV2K bank for DN and the embedded bank for
SR, uniform sampling):

- patch source: DIV2K bank / embedded (scikit-image) bank / patches of the image itself;
- block size: 4, 8, 16;
- sampling scheme: uniform, sharpness-matched, stratified;
- intervention: LV vs zeros, mean, blur, noise;
- convergence in T and coarse-to-fine vs exhaustive: exhaustive runs at T = 10, 25, 50 and 200 (DnCNN:
  10 and 50, and the T = 200 reference on monarch's two ROIs only); the draws are seeded by (seed, block, sample), so T = 50 uses the first 50 draws of T = 200.

The report reads the finished run folders only (cem_lab.analysis), and writes every number of
``experiments/results/ablations.md`` from them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from study_runner import Sweep, main

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CEM_LAB_DATA", ROOT.parent / "shared" / "data"))
SWEEPS = ROOT / "runs" / "sweeps" / "cem"
PREFIX = "ablation"
OUT = ROOT / "experiments" / "results"
FIG = OUT / "ablations"
IMAGES = ("monarch", "barbara", "kodim23")
SELF_PATCHES = ROOT / "runs" / "ablations" / "self_patches"

#: the DnCNN maps cost about 5x the EDSR ones here: on 2 CPU cores they run on the first two images only
IMAGES_OF = {"sr": IMAGES, "dn": IMAGES[:2]}


def _population(model: str) -> list[str]:
    return [
        "dataset=standard",
        f"standard.name={','.join(IMAGES_OF[model])}",
        "image_crop=256",
        "roi=placed",
        "roi_place.count=2",
        "roi_place.index=0,1",
        "roi_place.size=32",
        "roi_place.align=16",
        "progress=false",
        "figures=true",
    ]


MODELS = {
    "dn": [
        "model=dncnn",
        f"model.checkpoint={DATA / 'dncnn_color_blind.pth'}",
        "task=dn",
        "task.sigma=50",
        "patches=npz",
        f"patches.path={DATA / 'div2k_patches8.npz'}",
        "recompute=incremental",
    ],
    "sr": ["model=zoo", "model.id=edsr_d4_w16_x4", "task=sr", "task.scale=4"],
}
#: factor -> the sweeps that change it (the reference settings are the sweep "reference")
FACTORS = {
    "reference": [[]],
    "patches": [["patches=embedded"], ["patches=folder", f"patches.folder={SELF_PATCHES}/" + "${standard.name}"]],
    "block": [["cem.block=4,16"]],
    "sampler": [["sampler=sharpness_matched,stratified"]],
    "intervention": [["cem.intervention=zeros,mean,blur,noise"]],
    "exhaustive": [["cem=exhaustive", "cem.samples=10,25,50,200"]],
}
#: DnCNN (CPU time): T = 25 left out, and the T = 200 reference on the first image's two ROIs only
EXHAUSTIVE_DN = ["cem=exhaustive", "cem.samples=10,50"]
EXHAUSTIVE_DN_200 = ["cem=exhaustive", "cem.samples=200", f"standard.name={IMAGES[0]}"]


def _sweeps(model: str) -> list[tuple[str, list[str]]]:
    out = []
    for factor, variants in FACTORS.items():
        for k, extra in enumerate(variants):
            if model == "sr" and factor == "patches" and extra[0] == "patches=embedded":
                extra = ["patches=npz", f"patches.path={DATA / 'div2k_patches8.npz'}"]  # SR's reference is embedded
            if model == "dn" and factor == "exhaustive":
                extra = EXHAUSTIVE_DN
            name = f"{PREFIX}_{model}_{factor}" + (f"_{k}" if len(variants) > 1 else "")
            out.append((name, extra))
    if model == "dn":
        out.append((f"{PREFIX}_dn_exhaustive_200", EXHAUSTIVE_DN_200))
    return out


def _jobs(extra: list[str], model: str) -> int:
    n = len(IMAGES_OF[model]) * 2
    if any(e.startswith("standard.name=") for e in extra):
        n = 2 * len(next(e for e in extra if e.startswith("standard.name=")).split("=", 1)[1].split(","))
    for e in extra:
        if e.startswith("standard.name="):
            continue
        if "=" in e and "," in e.split("=", 1)[1] and not e.startswith("~"):
            n *= len(e.split("=", 1)[1].split(","))
    return n


def _self_patches() -> None:
    """The patch folders of 'the image itself': each held-out crop alone in its folder."""
    from PIL import Image

    from cem_lab.standard_images import standard_image

    for name in IMAGES:
        folder = SELF_PATCHES / name
        if (folder / f"{name}.png").is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        arr = standard_image(name)
        h, w = arr.shape[:2]
        crop = arr[(h - 256) // 2 : (h - 256) // 2 + 256, (w - 256) // 2 : (w - 256) // 2 + 256]
        tmp = folder / f".{name}.png.tmp"
        Image.fromarray(crop).save(tmp, format="PNG")
        tmp.replace(folder / f"{name}.png")


def _merge(base: list[str], extra: list[str]) -> list[str]:
    """``base`` with ``extra`` applied: an override of a key (or of a config group) replaces the base's."""
    out = list(base)
    for item in extra:
        key = item.split("=", 1)[0].lstrip("~+")
        out = [b for b in out if not (b.split("=", 1)[0] == key or b.split("=", 1)[0].startswith(key + "."))]
        out.append(item)
    return out


#: seconds per map measured here (2 CPU cores, one thread per map): EDSR 8-35 s (90-130 s at T = 200), KAIR's
#: DnCNN with incremental recompute 40-50 s (longer at block 4 and T = 200)
COST_S = {"sr": 20.0, "sr_exhaustive": 60.0, "dn": 45.0, "dn_block": 70.0, "dn_exhaustive_200": 200.0}


def _cost(name: str, model: str) -> float:
    for key in (name.removeprefix(f"{PREFIX}_"), f"{model}_{name.split('_')[2]}"):
        if key in COST_S:
            return COST_S[key]
    return COST_S[model]


def sweeps() -> list[Sweep]:
    """Every sweep of the ablations (the cheap SR maps first), each with its merged overrides."""
    out = []
    for model in ("sr", "dn"):
        for name, extra in _sweeps(model):
            args = _merge(MODELS[model] + _population(model), extra)
            out.append(Sweep(name, (), args, {"*": _cost(name, model)}, units=_jobs(extra, model), population=()))
    return out


def _before_run() -> int:
    """The reference data must be there, and the patch folders of 'the image itself' are made."""
    if not (DATA / "dncnn_color_blind.pth").is_file():
        print(
            f"ablations: {DATA / 'dncnn_color_blind.pth'} is missing: set CEM_LAB_DATA to the folder holding KAIR's "
            "DnCNN and the DIV2K patch bank",
            file=sys.stderr,
        )
        return 2
    _self_patches()
    return 0


# ----------------------------------------------------------------------------- report
def _runs(model: str) -> pd.DataFrame:
    from cem_lab.analysis.runs import collect_runs

    paths = [SWEEPS / name for name, _ in _sweeps(model) if (SWEEPS / name).is_dir()]
    runs, skipped = collect_runs(paths)
    for s in skipped:
        print(f"  skipped (not pooled): {s}", file=sys.stderr)
    runs["sweep"] = runs["folder"].map(lambda f: Path(f).parent.name)
    return runs


def _level(runs: pd.DataFrame, factor: str) -> pd.Series:
    from cem_lab.analysis.study_tables import run_settings

    settings = [run_settings(Path(f)) for f in runs["folder"]]
    if factor == "patches":

        def bank(s):
            name = str(s.get("setting:intervention.bank", ""))
            return (
                "div2k"
                if "div2k" in name
                else "self (the image)"
                if "self_patches" in name
                else "embedded"
                if name.startswith("embedded")
                else name
            )

        return pd.Series([bank(s) for s in settings], index=runs.index)
    if factor == "block":
        return runs["block"].astype(int).astype(str)
    if factor == "sampler":
        return runs["sampler"].astype(str)
    if factor == "intervention":
        return runs["intervention"].astype(str)
    raise ValueError(factor)


def _factor_table(runs: pd.DataFrame, factor: str, reference: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per level: intervals of the statistics, and paired differences from the reference level."""
    from cem_lab.analysis.study_tables import study_statistics

    sub = runs[runs["sweep"].str.contains(f"_{factor}") | runs["sweep"].str.endswith("_reference")].copy()
    sub["level"] = _level(sub, factor)
    # patches of the image itself: each image's bank is its own, by design
    per_unit = ("intervention.bank", "intervention.bank_size") if factor == "patches" else ()
    res = study_statistics(sub, by=("level",), reference=reference or None, resamples=4000, per_unit=per_unit)
    res.summary.attrs["missing"] = res.missing
    return res.summary, res.paired


def _maps(folders) -> dict[str, dict]:
    out = {}
    for f in folders:
        with np.load(Path(f) / "cem.npz") as z:
            out[f] = {
                "effect": z["effect_raw"].astype(float),
                "cls": z["classification"].astype(int),
                "mask": ~z["roi_mask"].astype(bool) & (z["counts"] > 0),
            }
    return out


def _convergence(runs: pd.DataFrame) -> pd.DataFrame:
    """Exhaustive runs at T against the T = 200 run of the same unit: Pearson correlation of the raw
    effects and agreement of the classes over the blocks outside the ROI; and coarse-to-fine (the
    reference run) against exhaustive T = 50: blocks the coarse stage set to zero that T = 50 finds."""
    from cem_lab.analysis.study_stats import nested_bootstrap

    ex = runs[runs["sweep"].str.contains("_exhaustive")].copy()
    ref = runs[runs["sweep"].str.endswith("_reference")].copy()
    ex["unit"] = ex["image"] + " " + ex["roi"]
    ref["unit"] = ref["image"] + " " + ref["roi"]
    maps = _maps(list(ex["folder"]) + list(ref["folder"]))
    rows = []
    for unit, g in ex.groupby("unit"):
        top = g["samples"].max()  # the longest exhaustive run of the unit is its reference (T = 200 where run)
        full = g[g["samples"] == top]
        m200 = maps[full["folder"].iloc[0]]
        keep = m200["mask"] & (m200["effect"] != 0)  # the blocks the network reaches (the rest are exact zeros)
        for _, r in g.iterrows():
            m = maps[r["folder"]]
            k = keep & m["mask"]
            rows.append(
                {
                    "unit": unit,
                    "image": r["image"],
                    "estimator": f"exhaustive T={int(r['samples'])}",
                    "reference": f"T={int(top)}",
                    "corr": float(np.corrcoef(m["effect"][k], m200["effect"][k])[0, 1]),
                    "class_agreement": float((m["cls"][k] == m200["cls"][k]).mean()),
                    "passes": float(r["forward_passes"]),
                }
            )
        c2f = ref[ref["unit"] == unit]
        if len(c2f):
            m = maps[c2f["folder"].iloc[0]]
            k = keep & m["mask"]
            t50 = g[g["samples"] == 50]
            lost = np.nan
            if len(t50):
                e50 = maps[t50["folder"].iloc[0]]
                lost = float(((m["cls"][k] == 0) & (e50["cls"][k] != 0)).sum())
            rows.append(
                {
                    "unit": unit,
                    "image": c2f["image"].iloc[0],
                    "estimator": "coarse-to-fine T_c=3, T_f=50",
                    "reference": f"T={int(top)}",
                    "corr": float(np.corrcoef(m["effect"][k], m200["effect"][k])[0, 1]),
                    "class_agreement": float((m["cls"][k] == m200["cls"][k]).mean()),
                    "passes": float(c2f["forward_passes"].iloc[0]),
                    "dropped_vs_T50": lost,
                }
            )
    df = pd.DataFrame(rows)
    df["order"] = df["estimator"].map(lambda e: int(e.split("=")[1]) if e.startswith("exhaustive") else 10**6)
    df = df.sort_values("order", kind="stable")
    out = []
    for (ref, est), g in df.groupby(["reference", "estimator"], sort=False):
        if est == f"exhaustive {ref}":
            continue  # a map against itself
        row = {"estimator": est, "against exhaustive": ref, "units": len(g), "passes (mean)": g["passes"].mean()}
        for col in ("corr", "class_agreement", "dropped_vs_T50"):
            if col in g and g[col].notna().any():
                iv = nested_bootstrap(g[col].to_numpy(float), list(g["image"]), resamples=4000)
                row[col] = str(iv)
        out.append(row)
    return pd.DataFrame(out)


def _num(v: float, signed: bool = False) -> str:
    """4 decimals below 1 (the block shares), 2 above."""
    if not np.isfinite(v):
        return "n/a"
    digits = 4 if abs(v) < 1 else 2
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append(
            "| "
            + " | ".join(
                ""
                if (isinstance(v, float) and not np.isfinite(v))
                else (f"{v:,.0f}" if isinstance(v, float) else str(v))
                for v in r
            )
            + " |"
        )
    return "\n".join(lines)


def _fmt_pairs(
    paired: pd.DataFrame,
    reference: str,
    metrics=("share_negative", "share_positive", "reach_max_px", "total_negative_effect", "baseline_metric"),
) -> str:
    if paired.empty:
        return "(no other level has finished runs yet)"
    p = paired[(paired["a"] == reference) | (paired["b"] == reference)]
    lines = [
        "| level | vs | " + " | ".join(p[p["metric"] == m]["label"].iloc[0] for m in metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for (a, b), g in p.groupby(["a", "b"], sort=False):
        g = g.set_index("metric")
        sign = 1 if a == reference else -1  # always "level minus reference"
        other = b if a == reference else a
        cells = []
        for m in metrics:
            r = g.loc[m]
            lo, hi = sorted((sign * r["low"], sign * r["high"]))
            cells.append(
                f"{_num(sign * r['mean'], True)} [{_num(lo, True)}, {_num(hi, True)}]"
                + ("*" if r["excludes_zero"] else "")
            )
        lines.append(f"| {other} | {reference} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt_summary(
    summary: pd.DataFrame, metrics=("share_negative", "share_positive", "reach_max_px", "total_negative_effect")
) -> str:
    lines = [
        "| level | units | " + " | ".join(summary[summary["metric"] == m]["label"].iloc[0] for m in metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for c, g in summary.groupby("condition", sort=False):
        g = g.set_index("metric")
        cells = [f"{_num(g.loc[m, 'mean'])} [{_num(g.loc[m, 'low'])}, {_num(g.loc[m, 'high'])}]" for m in metrics]
        lines.append(f"| {c} | {int(g.iloc[0]['n_units'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _findings(paired: pd.DataFrame, reference: str, factor: str) -> list[str]:
    """One line per level and metric whose paired difference from the reference excludes 0."""
    out = []
    if paired.empty:
        return out
    for _, r in paired[paired["excludes_zero"]].iterrows():
        if reference not in (r["a"], r["b"]) or r["metric"] == "baseline_metric":
            continue
        sign = 1 if r["a"] == reference else -1
        other = r["b"] if sign == 1 else r["a"]
        lo, hi = sorted((sign * r["low"], sign * r["high"]))
        out.append(
            f"{factor} {other} vs {reference}: {r['label']} {_num(sign * r['mean'], True)} "
            f"[{_num(lo, True)}, {_num(hi, True)}]"
        )
    return out


def _compute_time(runs: pd.DataFrame) -> tuple[float, int]:
    total, passes = 0.0, 0
    for f in runs["folder"]:
        s = json.loads((Path(f) / "summary.json").read_text())
        total += float((s.get("timings") or {}).get("run_s", 0.0))
        passes += int(s.get("forward_passes") or 0)
    return total, passes


def cmd_report() -> int:
    from cem_lab.viz.population_figures import plot_study_intervals

    FIG.mkdir(parents=True, exist_ok=True)
    parts = [
        "# Ablations over a population (paper, section 6.4)\n",
        "Made by `python experiments/ablations.py report` from the run folders of `python experiments/ablations.py run` "
        "(the module doc says what runs). Every interval: 95 %, nested bootstrap over the images (ROIs nested), "
        "expanded for few images; `*` marks an interval that excludes 0. Paired differences are *level minus "
        "reference* over the same units and the same intervention draws.\n",
    ]
    parts.append(
        "How to read it. The shares are of every block outside the ROI on the 256 x 256 image; blocks beyond a "
        "network's receptive field are exact zeros, so a small share is the norm for these local networks (the "
        "EDSR reaches about 35 output px, the DnCNN about 20 input px). *Why zeros are out of distribution*: a "
        "zero (black) patch, like a flat mean patch or a blurred block, is a value that no natural patch degraded "
        "by the task takes; what the network does with it measures its reaction to an artefact as much as the role "
        "of the content it replaced. LV draws natural patches and degrades them as the input was degraded, so the "
        "intervened image stays a plausible input. The paired differences below say how far the other "
        "interventions move each statistic from LV on the same units and draws.\n"
    )
    refs = {"patches": None, "block": "8", "sampler": "uniform", "intervention": "lv"}
    for model, title in (("dn", "KAIR DnCNN, DN sigma 50"), ("sr", "zoo EDSR d4 w16, SR x4")):
        try:
            runs = _runs(model)
        except (ValueError, FileNotFoundError) as err:
            parts.append(f"## {title}\n\nnot run: {err}\n")
            continue
        seconds, passes = _compute_time(runs)
        parts.append(
            f"## {title}\n\n{len(runs)} finished maps, {passes:,} forward passes, {seconds / 60:.1f} min of "
            "map computation in all (the runs' own timings, on the 2 CPU cores of this machine, shared with "
            "the session's other work: upper bounds).\n"
        )
        found: list[str] = []
        for factor, ref in refs.items():
            if factor == "patches":
                ref = "div2k" if model == "dn" else "embedded"  # each network's reference bank
            try:
                summary, paired = _factor_table(runs, factor, ref or "")
            except Exception as err:  # a factor whose runs are missing is reported, not hidden
                parts.append(f"### {factor}\n\nnot reported: {type(err).__name__}: {err}\n")
                continue
            summary.attrs["level"] = 0.95
            found += _findings(paired, ref, factor)
            fig = plot_study_intervals(summary, FIG / f"{model}_{factor}.png")
            missing = summary.attrs.get("missing") or []
            if missing:
                parts.append(
                    f"### {factor}: units not run (CPU time), not pooled\n\n"
                    + "\n".join(
                        f"- {m.split(': ', 1)[1].replace(' (no finished run; see the skipped folders)', '')}"
                        for m in missing
                    )
                    + "\n"
                )
            parts.append(
                f"### {factor}\n\nPer level (mean [interval]):\n\n{_fmt_summary(summary)}\n\n"
                f"Paired differences from the reference `{ref}`:\n\n{_fmt_pairs(paired, ref)}\n\n"
                f"![{factor}](ablations/{Path(fig).name})\n"
            )
        parts.append(
            "Paired differences whose interval excludes 0 (ROI metric left out: it does not depend on the "
            "intervention):\n\n" + ("\n".join(f"- {f}" for f in found) if found else "- none") + "\n"
        )
        try:
            conv = _convergence(runs)
            parts.append(
                "### convergence in T, and coarse-to-fine against exhaustive\n\nAgainst the longest exhaustive "
                "map of the same unit (T = 200; for the DnCNN, T = 50 on the units that have no T = 200 run), over the blocks outside the ROI that the network reaches (non-zero raw "
                "effect in the reference; the others are exact zeros in every run): Pearson correlation of the raw "
                "effects and agreement of the classes; `dropped_vs_T50`: blocks the coarse-to-fine "
                "reference run set to zero that exhaustive T = 50 finds non-zero.\n\n" + _markdown(conv) + "\n"
            )
        except Exception as err:
            parts.append(f"### convergence\n\nnot reported: {type(err).__name__}: {err}\n")
    text = "\n".join(parts)
    tmp = OUT / ".ablations.md.tmp"
    tmp.write_text(text)
    tmp.replace(OUT / "ablations.md")
    print(text)
    return 0


POPULATION = (
    f"SR: {len(IMAGES_OF['sr'])} images x 2 placed ROIs, DN: {len(IMAGES_OF['dn'])} images x 2 placed ROIs, "
    "256 px crops, one factor at a time from block 8, T_c 3, T_f 50"
)

if __name__ == "__main__":
    sys.exit(main("ablations", sweeps(), cmd_report, doc=__doc__, describe=POPULATION, before_run=_before_run))
