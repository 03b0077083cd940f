"""The paper's three findings, each a table set, figures and a verdict, from the finished run folders.

``cem-report PATHS --finding receptive_field|channel_attention|multitask`` calls :func:`finding_report`,
which writes ``finding_<name>.md`` (printed), ``finding_<name>_*.csv`` and ``figures/finding_*.png``
next to the run table. Nothing is recomputed; every number of the markdown comes from the CSVs it
writes beside it. The statistics are :mod:`cem_lab.analysis.findings`; the verdict rule is
:func:`cem_lab.analysis.findings.verdict`, applied to comparisons named in each section.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cem_lab.analysis.findings import attention_contrast, paired_table, rank_trend, verdict, with_locality
from cem_lab.analysis.study_stats import nested_bootstrap
from cem_lab.io import atomic_path, write_text
from cem_lab.run_format import CEM_FILE, SUMMARY_FILE

__all__ = ["FINDINGS", "FindingError", "finding_report"]

LABELS = {
    "share_positive": "positive share",
    "share_negative": "negative share",
    "total_positive_effect": "sum of positive CE (dB)",
    "total_negative_effect": "sum of negative CE (dB)",
    "reach_max_px": "effective distance (px)",
    "ce_mean_distance_px": "CE-weighted mean distance (px)",
    "near_mass_share": "CE mass share within 32 px",
    "baseline_metric": "ROI PSNR (dB)",
}


class FindingError(ValueError):
    """The runs do not hold the study the finding needs (names what is missing)."""


# ----------------------------------------------------------------------------- helpers
def _num(v: float, digits: int = 3) -> str:
    """``v`` to ``digits`` significant digits; rounding noise of sums (1e-16) is the 0 it stands for."""
    return f"{0.0 if abs(v) < 1e-12 else v:.{digits}g}"


def _iv(mean: float, low: float, high: float, digits: int = 3) -> str:
    if not np.isfinite(low):
        return f"{_num(mean, digits)} [n/a]"
    return f"{_num(mean, digits)} [{_num(low, digits)}, {_num(high, digits)}]"


def _md_table(df: pd.DataFrame) -> str:
    if len(df) == 0:
        return "(none)\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _per_model(df: pd.DataFrame, models: list[str], metrics: list[str], resamples: int = 4000) -> pd.DataFrame:
    rows = []
    for model in models:
        sub = df[df["model"] == model]
        row: dict[str, Any] = {"model": model, "n_units": len(sub)}
        for m in metrics:
            iv = nested_bootstrap(sub[m].to_numpy(float), list(sub["image"].astype(str)), resamples=resamples)
            row.update({f"{m}_mean": iv.mean, f"{m}_low": iv.low, f"{m}_high": iv.high})
        rows.append(row)
    return pd.DataFrame(rows)


def _heldout_record(model: str, task: str) -> dict:
    """The zoo's held-out record of ``model`` on ``task`` (sr / dn / dr); {} when it has none."""
    from cem_lab.analysis.runs import _zoo_entry

    entry = _zoo_entry(model) or {}
    for key, rec in (((entry.get("heldout") or {}).get("tasks")) or {}).items():
        if str(key).split("_")[0] == task:
            return rec
    return {}


def _heldout(model: str, task: str) -> dict[str, float]:
    """The held-out psnr, baseline_psnr and gain of ``model`` on ``task`` (NaN without a record)."""
    rec = _heldout_record(model, task)
    return {k: float(rec.get(k, np.nan)) for k in ("psnr", "baseline_psnr", "gain")}


def _heldout_images(model: str, task: str) -> dict[str, float]:
    """The zoo's held-out PSNR of ``model`` on ``task`` per photograph (image -> dB)."""
    return {str(r["image"]): float(r["psnr"]) for r in _heldout_record(model, task).get("per_image") or []}


def _heldout_gap(a: str, b: str, task: str):
    """b - a of the held-out PSNR, paired by photograph, with its bootstrap interval (None without records)."""
    from cem_lab.analysis.study_stats import paired_difference

    pa, pb = _heldout_images(a, task), _heldout_images(b, task)
    shared = [k for k in pa if k in pb]
    if len(shared) < 2:
        return None
    return paired_difference(np.array([pb[k] for k in shared]), np.array([pa[k] for k in shared]), shared)


def _write_csv(table: pd.DataFrame, path: Path) -> str:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return str(path)


def _units_line(df: pd.DataFrame) -> str:
    images = sorted(set(df["image"].astype(str)))
    units = df["image"].astype(str) + " " + df["roi"].astype(str)
    return (
        f"{units.nunique()} units ({len(images)} images x ROIs: {', '.join(images)}); intervals: 95 %, nested "
        "bootstrap over images with ROIs resampled inside each (expanded percentiles for few images)"
    )


def _pair_cells(t: pd.DataFrame, metric: str) -> pd.Series:
    row = t[t["metric"] == metric].iloc[0]
    return pd.Series({"mean": row["mean"], "low": row["low"], "high": row["high"], "excl": bool(row["excludes_zero"])})


# ----------------------------------------------------------------------------- 1. receptive field
RF_METRICS = [
    "reach_max_px",
    "share_negative",
    "share_positive",
    "total_negative_effect",
    "ce_mean_distance_px",
    "baseline_metric",
]


def _receptive_field(runs: pd.DataFrame, out: Path, figures: Path) -> dict[str, Any]:
    from cem_lab.analysis import finding_figures as ff

    df = with_locality(runs)
    df["dependent_share"] = [dependent_share(f) for f in df["folder"]]
    zoo = df[(df["zoo"] == True) & df["architecture"].isin(["FSRCNN", "EDSR"])].copy()  # noqa: E712
    if zoo["model"].nunique() < 3:
        raise FindingError(
            "receptive_field: needs the FSRCNN and EDSR families of the zoo (at least 3 models); "
            f"found {sorted(zoo['model'].unique())}. Run python experiments/receptive_field.py run"
        )
    models = list(dict.fromkeys(zoo["model"]))
    per = _per_model(zoo, models, RF_METRICS)
    meta = zoo.drop_duplicates("model").set_index("model")
    for c in ("architecture", "depth", "width", "parameters"):
        per[c] = per["model"].map(meta[c])
    per["heldout_gain_db"] = [_heldout(m, "sr")["gain"] for m in per["model"]]
    per["heldout_psnr_db"] = [_heldout(m, "sr")["psnr"] for m in per["model"]]
    per["dependent_share"] = [float(zoo[zoo["model"] == m]["dependent_share"].mean()) for m in per["model"]]
    files = {"per_model": _write_csv(per, out / "finding_receptive_field_models.csv")}

    # rank correlations across models, per family and overall
    trend_rows = []
    for fam, sub in [("all", zoo), *[(a, zoo[zoo["architecture"] == a]) for a in ("FSRCNN", "EDSR")]]:
        fam_models = list(dict.fromkeys(sub["model"]))
        if len(fam_models) < 3 or (fam != "all" and len(fam_models) == zoo["model"].nunique()):
            continue  # too few models for a rank correlation, or the family is all of them
        attrs = {
            "depth": meta.loc[fam_models, "depth"].to_dict(),
            "width": meta.loc[fam_models, "width"].to_dict(),
            "parameters": meta.loc[fam_models, "parameters"].to_dict(),
        }
        for x_name, x in [*attrs.items(), ("effective distance", "reach_max_px")]:
            for metric in (
                ["reach_max_px", "share_negative", "baseline_metric"]
                if x_name != "effective distance"
                else ["share_negative", "total_negative_effect", "baseline_metric"]
            ):
                iv = rank_trend(sub, metric, x, fam_models)
                trend_rows.append(
                    {
                        "family": fam,
                        "x": x_name,
                        "y": metric,
                        "rho": iv.mean,
                        "low": iv.low,
                        "high": iv.high,
                        "excludes_zero": iv.excludes_zero,
                        "models": len(fam_models),
                        "n_images": iv.n_images,
                    }
                )
    trends = pd.DataFrame(trend_rows)
    files["trends"] = _write_csv(trends, out / "finding_receptive_field_trends.csv")

    # one-axis comparisons: deepest vs shallowest at each width, widest vs narrowest at each depth
    pairs, labels = [], {}
    for arch, sub in zoo.groupby("architecture", sort=False):
        m = sub.drop_duplicates("model").set_index("model")
        for fixed, axis in (("width", "depth"), ("depth", "width")):
            for value, g in m.groupby(fixed):
                g = g.sort_values(axis)
                if len(g) > 1:
                    pairs.append((g.index[0], g.index[-1]))
                    labels[pairs[-1]] = {
                        "family": arch,
                        "axis": f"{axis} {int(g[axis].iloc[0])} -> {int(g[axis].iloc[-1])} ({fixed} {int(value)})",
                    }
    paired = paired_table(zoo, pairs, ["reach_max_px", "share_negative", "baseline_metric"], labels=labels)
    files["paired"] = _write_csv(paired, out / "finding_receptive_field_paired.csv")
    support = contradict = informative = 0
    cmp_rows = []
    for (a, b), g in paired.groupby(["a", "b"], sort=False):
        reach, neg, psnr = (_pair_cells(g, m) for m in ("reach_max_px", "share_negative", "baseline_metric"))
        more_reach = reach["excl"] and reach["mean"] > 0
        ho = _heldout_gap(a, b, "sr")
        ho_down = ho is not None and ho.excludes_zero and ho.mean < 0
        ho_up = ho is not None and ho.excludes_zero and ho.mean > 0
        if more_reach:
            informative += 1
            support += bool(ho_down)
            contradict += bool(ho_up)
        cmp_rows.append(
            {
                "family": g["family"].iloc[0],
                "comparison": g["axis"].iloc[0],
                "a": a,
                "b": b,
                "effective distance (b - a, px)": _iv(reach["mean"], reach["low"], reach["high"]),
                "negative share (b - a)": _iv(neg["mean"], neg["low"], neg["high"]),
                "ROI PSNR (b - a, dB)": _iv(psnr["mean"], psnr["low"], psnr["high"]),
                "held-out PSNR (b - a, dB)": "n/a" if ho is None else _iv(ho.mean, ho.low, ho.high),
                "reading": (
                    "more reach, lower PSNR"
                    if more_reach and ho_down
                    else "more reach, higher PSNR"
                    if more_reach and ho_up
                    else "more reach, PSNR not distinguishable"
                    if more_reach
                    else "reach not distinguishable"
                ),
            }
        )
    comparisons = pd.DataFrame(cmp_rows)
    v = verdict(support, contradict, informative)

    # the real networks (any model that is not of the two zoo families)
    real = df[~df["model"].isin(models)]
    real_tab = pd.DataFrame()
    if len(real):
        real_models = list(dict.fromkeys(real["model"]))
        real_tab = _per_model(real, real_models, RF_METRICS)
        real_tab["task"] = real_tab["model"].map(real.drop_duplicates("model").set_index("model")["task_label"])
        real_tab["parameters"] = real_tab["model"].map(
            lambda m: real[real["model"] == m]["folder"].map(_parameters_of).iloc[0]
        )
        files["real"] = _write_csv(real_tab, out / "finding_receptive_field_real.csv")
    figs = {
        "finding_rf_trends": ff.plot_rf_trends(per, figures / "finding_rf_trends.png"),
        "finding_rf_reach_vs_params": ff.plot_rf_reach_vs_params(
            per, real_tab, figures / "finding_rf_reach_vs_params.png"
        ),
        "finding_rf_cem_grid": ff.plot_unit_grid(
            df, figures / "finding_rf_cem_grid.png", models=[m for m in models if "_w16_" in m] or models[:8], ncols=4
        ),
    }

    # the markdown
    def row_of(r):
        return {
            "model": r["model"],
            "depth": int(r["depth"]),
            "width": int(r["width"]),
            "params": f"{int(r['parameters']):,}",
            "effective distance (px)": _iv(r["reach_max_px_mean"], r["reach_max_px_low"], r["reach_max_px_high"]),
            "negative share": _iv(r["share_negative_mean"], r["share_negative_low"], r["share_negative_high"]),
            "positive share": _iv(r["share_positive_mean"], r["share_positive_low"], r["share_positive_high"]),
            "ROI PSNR (dB)": _iv(r["baseline_metric_mean"], r["baseline_metric_low"], r["baseline_metric_high"], 4),
            "held-out PSNR (gain), dB": f"{r['heldout_psnr_db']:.2f} ({r['heldout_gain_db']:+.2f})",
            "input the ROI depends on": f"{100 * r['dependent_share']:.0f} %",
        }

    tr = trends.assign(**{"rho [95 %]": [_iv(r.rho, r.low, r.high, 2) for r in trends.itertuples()]})
    tr["y"] = tr["y"].map(LABELS)
    md = [
        "## Finding 1: more input information (a larger receptive field) does not always help\n",
        f"{_units_line(zoo)}.\n",
        f"**Verdict: {v}.** Rule: each one-axis comparison (deepest vs shallowest at a width, widest vs "
        f"narrowest at a depth) whose effective distance grows (interval above 0) is informative; it supports the "
        f"finding when the network's held-out PSNR (the zoo's record on five whole photographs no zoo model saw, "
        f"paired by photograph) falls (interval below 0) and contradicts it when it rises (interval above 0); the "
        f"ROI PSNR of the mapped units stands beside it. Informative: {informative} of {len(comparisons)}; "
        f"supporting: {support}; contradicting: {contradict}.\n",
        "### Per model\n",
        _md_table(pd.DataFrame([row_of(r) for _, r in per.iterrows()])),
        "### Rank correlations across models (Spearman's rho)\n",
        _md_table(tr[["family", "x", "y", "rho [95 %]", "models"]]),
        "### One-axis comparisons (paired by unit)\n",
        _md_table(comparisons),
    ]
    if len(real_tab):
        md += [
            "### Real networks of the catalogue (different data, objectives and scales: not pooled with the "
            "families)\n",
            _md_table(
                pd.DataFrame(
                    [
                        {
                            "model": r["model"],
                            "task": r["task"],
                            "params": f"{int(r['parameters']):,}",
                            "effective distance (px)": _iv(
                                r["reach_max_px_mean"], r["reach_max_px_low"], r["reach_max_px_high"]
                            ),
                            "negative share": _iv(
                                r["share_negative_mean"], r["share_negative_low"], r["share_negative_high"]
                            ),
                            "ROI PSNR (dB)": _iv(
                                r["baseline_metric_mean"], r["baseline_metric_low"], r["baseline_metric_high"], 4
                            ),
                        }
                        for _, r in real_tab.iterrows()
                    ]
                )
            ),
        ]
    md += [
        f"![trends](figures/{Path(figs['finding_rf_trends']).name})\n",
        f"![reach vs parameters](figures/{Path(figs['finding_rf_reach_vs_params']).name})\n",
        f"![CE maps](figures/{Path(figs['finding_rf_cem_grid']).name})\n",
    ]
    return {"markdown": "\n".join(md), "verdict": v, "files": files, "figures": figs}


def dependent_share(folder: str) -> float:
    """The share of the input pixels that the ROI depends on (the run's gradient-probe dependency region):
    1.0 means the image, not the network, bounds how far an effect can come from."""
    import json

    s = json.loads((Path(folder) / SUMMARY_FILE).read_text())
    dep = (s.get("dependency_region") or {}).get("dependent_pixels")
    with np.load(Path(folder) / CEM_FILE) as z:
        h, w = (int(v) for v in z["input_shape"])
    return float(dep) / (h * w) if dep is not None else float("nan")


def _parameters_of(folder: str) -> float:
    import json

    s = json.loads((Path(folder) / SUMMARY_FILE).read_text())
    return float((s.get("model_info") or {}).get("parameters", np.nan))


# ----------------------------------------------------------------------------- 2. channel attention
CA_METRICS = ["share_positive", "total_positive_effect", "reach_max_px", "ce_mean_distance_px", "baseline_metric"]
#: the variants whose attention pools over the whole image (the paper's "global mechanism")
GLOBAL_VARIANTS = ("global", "half", "adaptive2", "adaptive3")


def _channel_attention(runs: pd.DataFrame, out: Path, figures: Path) -> dict[str, Any]:
    from cem_lab.analysis import finding_figures as ff

    df = with_locality(runs)
    df = df[df["attention_variant"].notna()]
    sr, dn = df[df["task"] == "sr"], df[df["task"] == "dn"]
    if (
        sr["model"].nunique() < 2
        or dn["model"].nunique() < 2
        or "none" not in set(sr["attention_variant"])
        or "none" not in set(dn["attention_variant"])
    ):
        raise FindingError(
            "channel_attention: needs RCAN variants with and without attention on SR and on DN "
            "(attention_variant none among them). Run python experiments/channel_attention.py run"
        )
    variant_of = dict(zip(df["model"], df["attention_variant"].astype(str)))
    con = attention_contrast(sr, dn, variant_of, "none", CA_METRICS)
    files = {"contrast": _write_csv(con, out / "finding_channel_attention_contrast.csv")}
    per = pd.concat(
        [
            _per_model(t, list(dict.fromkeys(t["model"])), CA_METRICS).assign(task=name)
            for name, t in (("sr", sr), ("dn", dn))
        ],
        ignore_index=True,
    )
    per["variant"] = per["model"].map(variant_of)
    files["per_model"] = _write_csv(per, out / "finding_channel_attention_models.csv")
    support = contradict = total = 0
    for _, r in con[
        con["variant"].isin(GLOBAL_VARIANTS) & con["metric"].isin(["share_positive", "total_positive_effect"])
    ].iterrows():
        total += 1
        sr_excl = r["sr_low"] > 0 or r["sr_high"] < 0
        dn_excl = r["dn_low"] > 0 or r["dn_high"] < 0
        support += bool(r["contrast_excludes_zero"] and not dn_excl)
        contradict += bool(dn_excl and not sr_excl)
    v = verdict(support, contradict, total)
    figs = {
        "finding_ca_contrast": ff.plot_attention_contrast(con, figures / "finding_ca_contrast.png"),
        "finding_ca_cem_grid": ff.plot_unit_grid(
            df,
            figures / "finding_ca_cem_grid.png",
            models=list(dict.fromkeys(sr["model"])) + list(dict.fromkeys(dn["model"])),
            ncols=7,
        ),
    }
    tab = con.assign(
        **{
            "metric": con["metric"].map(LABELS),
            "SR: variant - none": [_iv(r.sr_mean, r.sr_low, r.sr_high) for r in con.itertuples()],
            "DN: variant - none": [_iv(r.dn_mean, r.dn_low, r.dn_high) for r in con.itertuples()],
            "contrast SR - DN": [_iv(r.contrast_mean, r.contrast_low, r.contrast_high) for r in con.itertuples()],
        }
    )
    pm = per.assign(
        **{
            LABELS[m]: [
                _iv(a, b, c, 4 if m == "baseline_metric" else 3)
                for a, b, c in zip(per[f"{m}_mean"], per[f"{m}_low"], per[f"{m}_high"])
            ]
            for m in CA_METRICS
        }
    )
    md = [
        "## Finding 2: channel attention (a global mechanism) matters in SR, may be futile in DN\n",
        f"{_units_line(df)}.\n",
        f"**Verdict: {v}.** Rule: for each variant that pools over the whole image ({', '.join(GLOBAL_VARIANTS)}) "
        "and each of the positive share and the sum of positive CE, a comparison supports the finding when the "
        "contrast (SR difference minus DN difference, each against the no-attention RCAN on the same units) "
        "excludes 0 while the DN difference does not; it contradicts it when the DN difference excludes 0 while "
        f"the SR difference does not. Comparisons: {total}; supporting: {support}; contradicting: {contradict}. "
        "The two tasks' effects are in dB of different quantities (a x4 upscale vs a sigma 50 denoise), so the "
        "shares, not the dB sums, are the comparable scale.\n",
        "### Paired differences from the no-attention RCAN, and their contrast\n",
        _md_table(tab[["variant", "metric", "SR: variant - none", "DN: variant - none", "contrast SR - DN"]]),
        "### Per variant\n",
        _md_table(pm[["task", "variant", *[LABELS[m] for m in CA_METRICS]]]),
        f"![contrast](figures/{Path(figs['finding_ca_contrast']).name})\n",
        f"![CE maps](figures/{Path(figs['finding_ca_cem_grid']).name})\n",
    ]
    return {"markdown": "\n".join(md), "verdict": v, "files": files, "figures": figs}


# ----------------------------------------------------------------------------- 3. multi-task
MT_METRICS = [
    "total_positive_effect",
    "share_positive",
    "reach_max_px",
    "ce_mean_distance_px",
    "near_mass_share",
    "baseline_metric",
]


def _multitask(runs: pd.DataFrame, out: Path, figures: Path) -> dict[str, Any]:
    from cem_lab.analysis import finding_figures as ff

    df = with_locality(runs)
    df = df[df["zoo"] == True]  # noqa: E712
    rows, cmp_rows = [], []
    support = contradict = total = 0
    order = {"sr": 0, "dn": 1, "dr": 2}
    for task, t in sorted(df.groupby("task", sort=False), key=lambda kv: order.get(kv[0], 9)):
        for arch, g in t.groupby("architecture", sort=False):
            single = [m for m in dict.fromkeys(g["model"]) if not str(m).endswith("_mixed")]
            mixed = [m for m in dict.fromkeys(g["model"]) if str(m).endswith("_mixed")]
            if not single or not mixed:
                continue
            p = paired_table(g, [(single[0], mixed[0])], MT_METRICS)
            p["task"], p["family"] = task, arch
            rows.append(p)
            c = {m: _pair_cells(p, m) for m in MT_METRICS}
            closer = c["ce_mean_distance_px"]["excl"] and c["ce_mean_distance_px"]["mean"] < 0
            nearer = c["near_mass_share"]["excl"] and c["near_mass_share"]["mean"] > 0
            farther = (c["ce_mean_distance_px"]["excl"] and c["ce_mean_distance_px"]["mean"] > 0) or (
                c["near_mass_share"]["excl"] and c["near_mass_share"]["mean"] < 0
            )
            weaker = c["total_positive_effect"]["excl"] and c["total_positive_effect"]["mean"] < 0
            total += 1
            support += bool((closer or nearer) and not farther)
            contradict += bool(farther and not (closer or nearer))
            reading = (
                "more local"
                if (closer or nearer) and not farther
                else "less local"
                if farther and not (closer or nearer)
                else "weaker, not more local"
                if weaker
                else "no difference found"
            )
            ho_s, ho_m = _heldout(single[0], task), _heldout(mixed[0], task)
            cmp_rows.append(
                {
                    "task": task,
                    "family": arch,
                    "single": single[0],
                    "mixed": mixed[0],
                    "sum of positive CE (mixed - single, dB)": _iv(
                        *c["total_positive_effect"][["mean", "low", "high"]]
                    ),
                    "CE-weighted mean distance (px)": _iv(*c["ce_mean_distance_px"][["mean", "low", "high"]]),
                    "CE mass share within 32 px": _iv(*c["near_mass_share"][["mean", "low", "high"]]),
                    "effective distance (px)": _iv(*c["reach_max_px"][["mean", "low", "high"]]),
                    "ROI PSNR gap (dB)": _iv(*c["baseline_metric"][["mean", "low", "high"]], 3),
                    "held-out PSNR gap (dB)": f"{ho_m['psnr'] - ho_s['psnr']:+.2f}",
                    "reading": reading,
                }
            )
    if not rows:
        raise FindingError(
            "multitask: needs single-task and mixed (<family>_mixed) zoo models on a task. Run "
            "python experiments/multitask.py run"
        )
    paired = pd.concat(rows, ignore_index=True)
    files = {"paired": _write_csv(paired, out / "finding_multitask_paired.csv")}
    comparisons = pd.DataFrame(cmp_rows)
    files["comparisons"] = _write_csv(comparisons, out / "finding_multitask_comparisons.csv")
    v = verdict(support, contradict, total)
    figs = {
        "finding_mt_pairs": ff.plot_multitask_pairs(paired, figures / "finding_mt_pairs.png"),
        "finding_mt_profiles": ff.plot_multitask_profiles(df, figures / "finding_mt_profiles.png"),
        "finding_mt_cem_grid": ff.plot_unit_grid(
            df, figures / "finding_mt_cem_grid.png", models=list(dict.fromkeys(df["model"])), ncols=6, by_task=True
        ),
    }
    teaser_model = _teaser_model(df)
    if teaser_model:
        figs["teaser"] = ff.plot_teaser(df, teaser_model, figures / "teaser.png")
    md = [
        "## Finding 3: multi-task training pushes a network toward local information\n",
        f"{_units_line(df)}.\n",
        f"**Verdict: {v}.** Rule: each (family, task) pair of single-task and mixed models is paired by unit. The "
        "size of the effect (sum of positive CE) falls when a network is weaker as well as when it is more local, so "
        "locality is read from measures that do not scale with it: the CE-weighted mean distance and the share of "
        "the |CE| mass within 32 px of the ROI centre. A pair supports the finding when either moves toward the "
        "ROI (interval excludes 0) and neither moves away; it contradicts it the other way round. Pairs: "
        f"{total}; supporting: {support}; contradicting: {contradict}. The PSNR gap of each pair (ROI, paired; "
        "held-out, the zoo's record on five whole photographs) stands beside it: a mixed model that restores less "
        "well is a weaker network, whatever its map.\n",
        "### Single-task vs mixed (mixed - single, paired by unit)\n",
        _md_table(comparisons),
        f"![pairs](figures/{Path(figs['finding_mt_pairs']).name})\n",
        f"![profiles](figures/{Path(figs['finding_mt_profiles']).name})\n",
        f"![CE maps](figures/{Path(figs['finding_mt_cem_grid']).name})\n",
    ]
    if "teaser" in figs:
        md.append(
            f"### The teaser: {teaser_model} on every task it was trained for\n\nNo network of the pretrained "
            "catalogue restores all three tasks (waifu2x: SR and JPEG; FFDNet: DN; none derains), so the teaser "
            f"shows the project's mixed network with maps on the most tasks, {teaser_model}, on one ROI (the "
            "unit with the largest median sum of positive CE).\n\n"
            f"![teaser](figures/{Path(figs['teaser']).name})\n"
        )
    return {"markdown": "\n".join(md), "verdict": v, "files": files, "figures": figs}


def _teaser_model(df: pd.DataFrame) -> str | None:
    """The mixed model with maps on the most tasks (the one network that restores SR, DN and DR)."""
    mixed = df[df["model"].astype(str).str.endswith("_mixed")]
    if not len(mixed):
        return None
    n = mixed.groupby("model")["task"].nunique()
    best = n[n == n.max()]
    order = [m for m in ("rcan_mixed", "swinlite_mixed", "srresnet_mixed") if m in best.index]
    return order[0] if order else str(best.index[0])


FINDINGS: dict[str, Callable[[pd.DataFrame, Path, Path], dict[str, Any]]] = {
    "receptive_field": _receptive_field,
    "channel_attention": _channel_attention,
    "multitask": _multitask,
}


def finding_report(name: str, runs: pd.DataFrame, out: Path) -> dict[str, Any]:
    """Write ``finding_<name>.md`` (+ CSVs, figures) into ``out`` from the run table; return what it wrote."""
    if name not in FINDINGS:
        raise FindingError(f"unknown finding {name!r}; the findings are: {', '.join(FINDINGS)}")
    res = FINDINGS[name](runs, Path(out), Path(out) / "figures")
    md_path = Path(out) / f"finding_{name}.md"
    write_text(md_path, res["markdown"])
    res["files"]["markdown"] = str(md_path)
    return res
