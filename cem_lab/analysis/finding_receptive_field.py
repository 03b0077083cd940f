"""Finding 1: more input information (a larger receptive field) does not always help.

From the FSRCNN and EDSR families over depth x width, of cem_lab's zoo or of the authors' zoo (the paper's
FSRCNN-{w}-{d} and EDSR-{w}-{d}; the rows come from the run table's ``source``, ``architecture``, ``depth`` and
``width``, never from names), and any real network beside them: per-model intervals, Spearman trends, one-axis
comparisons read against the held-out PSNR (the authors' networks have none: the ROI PSNR stands in), figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cem_lab.analysis import finding_figures as ff
from cem_lab.analysis.finding_tables import (
    HELDOUT_RECORD,
    LABELS,
    NO_HELDOUT,
    SOURCE_NAMES,
    FindingError,
    heldout,
    heldout_gap,
    interval_text,
    markdown_table,
    pair_cells,
    per_model_intervals,
    study_networks,
    units_line,
    write_csv,
)
from cem_lab.analysis.findings import detectable_text, paired_table, rank_trend, significant, verdict, with_locality
from cem_lab.analysis.runs import SOURCE_AUTHORS
from cem_lab.analysis.study_stats import pictures
from cem_lab.run_format import read_cem_arrays, read_summary

#: the swept families (the run table's ``architecture``)
RF_FAMILIES = ("FSRCNN", "EDSR")
RF_METRICS = [
    "reach_max_px",
    "share_negative",
    "share_positive",
    "total_negative_effect",
    "ce_mean_distance_px",
    "baseline_metric",
]


def receptive_field_finding(runs: pd.DataFrame, out: Path, figures: Path) -> dict[str, Any]:
    """Finding 1 from the FSRCNN and EDSR families of cem_lab's zoo or of the authors' (and any real network
    beside them): per-model intervals, rank trends, one-axis comparisons against the held-out PSNR (the ROI PSNR
    for the authors' networks, which have no held-out record), figures, markdown and verdict."""
    df = with_locality(runs)
    df["dependent_share"] = [dependent_share(f) for f in df["folder"]]
    swept = df["architecture"].isin(RF_FAMILIES) & df["depth"].notna() & df["width"].notna()
    zoo, source = study_networks(df[swept], "receptive_field")
    zoo = zoo.copy()
    authors = source == SOURCE_AUTHORS
    if zoo["model"].nunique() < 3:
        raise FindingError(
            "receptive_field: needs the FSRCNN and EDSR families of the zoo or of the authors' zoo (FSRCNN-{w}-{d}, "
            f"EDSR-{{w}}-{{d}}; at least 3 models); found {sorted(zoo['model'].unique())}. Run python "
            "experiments/receptive_field.py run (or experiments/paper.py run --study receptive_field)"
        )
    models = list(dict.fromkeys(zoo["model"]))
    per = per_model_intervals(zoo, models, RF_METRICS)
    meta = zoo.drop_duplicates("model").set_index("model")
    for c in ("architecture", "depth", "width", "parameters"):
        per[c] = per["model"].map(meta[c])
    per["heldout_gain_db"] = [heldout(m, "sr")["gain"] for m in per["model"]]
    per["heldout_psnr_db"] = [heldout(m, "sr")["psnr"] for m in per["model"]]
    per["dependent_share"] = [float(zoo[zoo["model"] == m]["dependent_share"].mean()) for m in per["model"]]
    files = {"per_model": write_csv(per, out / "finding_receptive_field_models.csv")}

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
    files["trends"] = write_csv(trends, out / "finding_receptive_field_trends.csv")

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
    files["paired"] = write_csv(paired, out / "finding_receptive_field_paired.csv")
    # the tests the verdict reads, Holm-corrected together: each comparison's effective distance and PSNR gap
    cells = []
    for (a, b), g in paired.groupby(["a", "b"], sort=False):
        reach, neg, psnr = (pair_cells(g, m) for m in ("reach_max_px", "share_negative", "baseline_metric"))
        ho = heldout_gap(a, b, "sr")
        gap = (psnr["mean"], psnr["p"]) if authors and ho is None else None if ho is None else (ho.mean, ho.p)
        cells.append((a, b, g, reach, neg, psnr, ho, gap))
    tests = {}
    for a, b, _, reach, _, _, _, gap in cells:
        tests[(a, b, "reach")] = (reach["mean"], reach["p"])
        if gap is not None:
            tests[(a, b, "psnr")] = gap

    def decide(correct: bool):
        sig = significant(tests, correct=correct)
        n_sup = n_con = n_inf = 0
        readings = []
        for a, b, *_ in cells:
            more_reach = sig[(a, b, "reach")] > 0
            gap = sig.get((a, b, "psnr"), 0)
            if more_reach:
                n_inf += 1
                n_sup += gap < 0
                n_con += gap > 0
            readings.append(
                "more reach, lower PSNR"
                if more_reach and gap < 0
                else "more reach, higher PSNR"
                if more_reach and gap > 0
                else "more reach, PSNR not distinguishable"
                if more_reach
                else "reach not distinguishable"
            )
        return n_sup, n_con, n_inf, readings

    support, contradict, informative, readings = decide(correct=True)
    raw = decide(correct=False)
    cmp_rows = []
    for (a, b, g, reach, neg, psnr, ho, _), reading in zip(cells, readings):
        cmp_rows.append(
            {
                "family": g["family"].iloc[0],
                "comparison": g["axis"].iloc[0],
                "a": a,
                "b": b,
                "effective distance (b - a, px)": interval_text(reach["mean"], reach["low"], reach["high"]),
                "negative share (b - a)": interval_text(neg["mean"], neg["low"], neg["high"]),
                "ROI PSNR (b - a, dB)": interval_text(psnr["mean"], psnr["low"], psnr["high"]),
                "held-out PSNR (b - a, dB)": "n/a" if ho is None else interval_text(ho.mean, ho.low, ho.high),
                "reading": reading,
            }
        )
    comparisons = pd.DataFrame(cmp_rows)
    v = verdict(support, contradict, informative)
    v_raw = verdict(raw[0], raw[1], raw[2])
    n_img = len(set(pictures(zoo)))
    hw_reach = [(c[3]["high"] - c[3]["low"]) / 2 for c in cells]
    hw_gap = [(c[6].high - c[6].low) / 2 for c in cells if c[6] is not None]
    hw_roi = [(c[5]["high"] - c[5]["low"]) / 2 for c in cells]
    power = detectable_text([("effective distance", hw_reach, " px"), ("ROI PSNR", hw_roi, " dB")], n_img, len(tests))
    if hw_gap:
        ho_n = min(c[6].n_images for c in cells if c[6] is not None)
        power += " " + detectable_text([("held-out PSNR", hw_gap, " dB")], ho_n, len(tests), "the held-out record")

    # the real networks (any model that is not of the two zoo families)
    real = df[~df["model"].isin(models)]
    real_tab = pd.DataFrame()
    if len(real):
        real_models = list(dict.fromkeys(real["model"]))
        real_tab = per_model_intervals(real, real_models, RF_METRICS)
        real_tab["task"] = real_tab["model"].map(real.drop_duplicates("model").set_index("model")["task_label"])
        real_tab["parameters"] = real_tab["model"].map(
            lambda m: real[real["model"] == m]["folder"].map(_parameters_of).iloc[0]
        )
        files["real"] = write_csv(real_tab, out / "finding_receptive_field_real.csv")
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
            "effective distance (px)": interval_text(
                r["reach_max_px_mean"], r["reach_max_px_low"], r["reach_max_px_high"]
            ),
            "negative share": interval_text(
                r["share_negative_mean"], r["share_negative_low"], r["share_negative_high"]
            ),
            "positive share": interval_text(
                r["share_positive_mean"], r["share_positive_low"], r["share_positive_high"]
            ),
            "ROI PSNR (dB)": interval_text(
                r["baseline_metric_mean"], r["baseline_metric_low"], r["baseline_metric_high"], 4
            ),
            "held-out PSNR (gain), dB": np.nan
            if authors
            else f"{r['heldout_psnr_db']:.2f} ({r['heldout_gain_db']:+.2f})",
            "input the ROI depends on": f"{100 * r['dependent_share']:.0f} %",
        }

    tr = trends.assign(**{"rho [95 %]": [interval_text(r.rho, r.low, r.high, 2) for r in trends.itertuples()]})
    tr["y"] = tr["y"].map(LABELS)
    psnr_rule = (
        "ROI PSNR (of the mapped units, paired by unit: it stands in for the held-out PSNR, which these networks lack)"
        if authors
        else f"held-out PSNR ({HELDOUT_RECORD}, paired by picture)"
    )
    md = [
        "## Finding 1: more input information (a larger receptive field) does not always help\n",
        *([f"Study networks: {SOURCE_NAMES[source]}. {NO_HELDOUT}\n"] if authors else []),
        f"{units_line(zoo)}.\n",
        f"**Verdict: {v}.** Rule: each one-axis comparison (deepest vs shallowest at a width, widest vs "
        f"narrowest at a depth) whose effective distance grows is informative; it supports the "
        f"finding when the network's {psnr_rule} falls and contradicts it when it rises"
        + ("" if authors else "; the ROI PSNR of the mapped units stands beside it")
        + f'. A change counts when its test rejects "no difference" at a family-wise error rate of 5 % over the '
        f"{len(tests)} tests the rule reads (Holm's step-down; p from the bootstrap, as the intervals). "
        f"Informative: {informative} of {len(comparisons)}; supporting: {support}; contradicting: {contradict}. "
        f"Without the correction (each test alone at 5 %) the rule would say {v_raw} ({raw[2]} informative, "
        f"{raw[0]} supporting, {raw[1]} contradicting). {power}\n",
        "### Per model\n",
        markdown_table(pd.DataFrame([row_of(r) for _, r in per.iterrows()])),
        "### Rank correlations across models (Spearman's rho)\n",
        markdown_table(tr[["family", "x", "y", "rho [95 %]", "models"]]),
        "### One-axis comparisons (paired by unit)\n",
        markdown_table(comparisons),
    ]
    if len(real_tab):
        md += [
            "### Real networks of the catalogue (different data, objectives and scales: not pooled with the "
            "families)\n",
            markdown_table(
                pd.DataFrame(
                    [
                        {
                            "model": r["model"],
                            "task": r["task"],
                            "params": f"{int(r['parameters']):,}",
                            "effective distance (px)": interval_text(
                                r["reach_max_px_mean"], r["reach_max_px_low"], r["reach_max_px_high"]
                            ),
                            "negative share": interval_text(
                                r["share_negative_mean"], r["share_negative_low"], r["share_negative_high"]
                            ),
                            "ROI PSNR (dB)": interval_text(
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
    s = read_summary(folder, missing_ok=False)
    dep = (s.get("dependency_region") or {}).get("dependent_pixels")
    h, w = (int(v) for v in read_cem_arrays(folder)["input_shape"])
    return float(dep) / (h * w) if dep is not None else float("nan")


def _parameters_of(folder: str) -> float:
    s = read_summary(folder, missing_ok=False)
    return float((s.get("model_info") or {}).get("parameters", np.nan))
