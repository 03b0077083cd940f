"""Finding 2: channel attention (a global mechanism) matters in SR, may be futile in DN.

From RCAN variants with and without attention on SR and on DN, of cem_lab's zoo or of the authors' (RCAN,
RCAN_half_ca, RCAN_no_ca, RCAN_pooling*; the variant is the run table's ``attention_variant``): each variant's
paired difference from no attention, the SR - DN contrast of those differences, per-variant intervals, figures.
The authors' zoo has the variants on SR only: then the contrast is unavailable, the report says so, and the SR
differences stand with their intervals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cem_lab.analysis import finding_figures as ff
from cem_lab.analysis.finding_tables import (
    LABELS,
    SOURCE_NAMES,
    FindingError,
    interval_text,
    markdown_table,
    per_model_intervals,
    study_networks,
    units_line,
    write_csv,
)
from cem_lab.analysis.findings import (
    attention_contrast,
    detectable_text,
    paired_table,
    significant,
    verdict,
    with_locality,
)
from cem_lab.analysis.runs import SOURCE_AUTHORS
from cem_lab.analysis.study_stats import pictures

CA_METRICS = ["share_positive", "total_positive_effect", "reach_max_px", "ce_mean_distance_px", "baseline_metric"]
#: the variants whose attention pools over the whole image (the paper's "global mechanism")
GLOBAL_VARIANTS = ("global", "half", "adaptive2", "adaptive3")


def channel_attention_finding(runs: pd.DataFrame, out: Path, figures: Path) -> dict[str, Any]:
    """Finding 2 from RCAN variants with and without channel attention on SR and DN: paired differences
    from no attention, their SR - DN contrast, figures, markdown and verdict."""
    df = with_locality(runs)
    df, source = study_networks(df[df["attention_variant"].notna()], "channel_attention")
    sr, dn = df[df["task"] == "sr"], df[df["task"] == "dn"]

    def has_variants(t: pd.DataFrame) -> bool:
        return t["model"].nunique() >= 2 and "none" in set(t["attention_variant"])

    if not has_variants(sr) or (source != SOURCE_AUTHORS and not has_variants(dn)):
        raise FindingError(
            "channel_attention: needs RCAN variants with and without attention on SR and on DN "
            "(attention_variant none among them; the authors' zoo: on SR). Run python "
            "experiments/channel_attention.py run (or experiments/paper.py run --study channel_attention)"
        )
    variant_of = dict(zip(df["model"], df["attention_variant"].astype(str)))
    with_dn = has_variants(dn)
    con = attention_contrast(sr, dn, variant_of, "none", CA_METRICS) if with_dn else _sr_differences(sr, variant_of)
    files = {"contrast": write_csv(con, out / "finding_channel_attention_contrast.csv")}
    per = pd.concat(
        [
            per_model_intervals(t, list(dict.fromkeys(t["model"])), CA_METRICS).assign(task=name)
            for name, t in (("sr", sr), ("dn", dn))
            if len(t)
        ],
        ignore_index=True,
    )
    per["variant"] = per["model"].map(variant_of)
    files["per_model"] = write_csv(per, out / "finding_channel_attention_models.csv")
    # the tests the verdict reads, Holm-corrected together: per compared row, the SR and DN differences and
    # their contrast (without DN runs no comparison of the rule can be made)
    rows = con[
        con["variant"].isin(GLOBAL_VARIANTS) & con["metric"].isin(["share_positive", "total_positive_effect"]) & with_dn
    ]
    tests = {}
    for i, r in rows.iterrows():
        for part in ("sr", "dn", "contrast"):
            tests[(i, part)] = (r[f"{part}_mean"], r[f"{part}_p"])

    def decide(correct: bool):
        sig = significant(tests, correct=correct)
        n_sup = n_con = 0
        for i in rows.index:
            n_sup += bool(sig[(i, "contrast")] and not sig[(i, "dn")])
            n_con += bool(sig[(i, "dn")] and not sig[(i, "sr")])
        return n_sup, n_con

    total = len(rows)
    support, contradict = decide(correct=True)
    raw = decide(correct=False)
    v_raw = verdict(*raw, total)
    power = ""
    if len(rows):
        n_img = min(len(set(pictures(sr))), len(set(pictures(dn))))
        parts = []
        for metric, label, unit in (
            ("share_positive", "positive share", ""),
            ("total_positive_effect", "sum of positive CE", " dB"),
        ):
            r = rows[rows["metric"] == metric]
            parts.append((f"{label} contrast", list((r["contrast_high"] - r["contrast_low"]) / 2), unit))
        power = detectable_text(parts, n_img, len(tests))
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
            "SR: variant - none": [interval_text(r.sr_mean, r.sr_low, r.sr_high) for r in con.itertuples()],
            "DN: variant - none": [
                interval_text(r.dn_mean, r.dn_low, r.dn_high) if with_dn else "n/a" for r in con.itertuples()
            ],
            "contrast SR - DN": [
                interval_text(r.contrast_mean, r.contrast_low, r.contrast_high) if with_dn else "n/a"
                for r in con.itertuples()
            ],
        }
    )
    pm = per.assign(
        **{
            LABELS[m]: [
                interval_text(a, b, c, 4 if m == "baseline_metric" else 3)
                for a, b, c in zip(per[f"{m}_mean"], per[f"{m}_low"], per[f"{m}_high"])
            ]
            for m in CA_METRICS
        }
    )
    no_contrast = (
        []
        if with_dn
        else [
            "**The SR - DN contrast is unavailable:** the runs hold the RCAN attention variants on SR only (the "
            "authors' zoo has no DN variants of them), so no comparison of the rule can be made and the verdict is "
            "inconclusive by construction. The SR differences from the no-attention RCAN stand below with their "
            "intervals; the DN and contrast cells are n/a.\n"
        ]
    )
    md = [
        "## Finding 2: channel attention (a global mechanism) matters in SR, may be futile in DN\n",
        *([f"Study networks: {SOURCE_NAMES[source]}.\n"] if source == SOURCE_AUTHORS else []),
        f"{units_line(df)}.\n",
        f"**Verdict: {v}.** Rule: for each variant that pools over the whole image ({', '.join(GLOBAL_VARIANTS)}) "
        "and each of the positive share and the sum of positive CE, a comparison supports the finding when the "
        "contrast (SR difference minus DN difference, each against the no-attention RCAN on the same units) "
        "differs from 0 while the DN difference does not; it contradicts it when the DN difference differs from 0 "
        'while the SR difference does not. A difference counts when its test rejects "no difference" at a '
        f"family-wise error rate of 5 % over the {len(tests)} tests the rule reads (Holm's step-down; p from the "
        f"bootstrap, as the intervals). Comparisons: {total}; supporting: {support}; contradicting: {contradict}. "
        f"Without the correction (each test alone at 5 %) the rule would say {v_raw} ({raw[0]} supporting, "
        f"{raw[1]} contradicting). {power} "
        "The two tasks' effects are in dB of different quantities (a x4 upscale vs a sigma 50 denoise), so the "
        "shares, not the dB sums, are the comparable scale.\n",
        *no_contrast,
        "### Paired differences from the no-attention RCAN, and their contrast\n",
        markdown_table(tab[["variant", "metric", "SR: variant - none", "DN: variant - none", "contrast SR - DN"]]),
        "### Per variant\n",
        markdown_table(pm[["task", "variant", *[LABELS[m] for m in CA_METRICS]]]),
        f"![contrast](figures/{Path(figs['finding_ca_contrast']).name})\n",
        f"![CE maps](figures/{Path(figs['finding_ca_cem_grid']).name})\n",
    ]
    return {"markdown": "\n".join(md), "verdict": v, "files": files, "figures": figs}


def _sr_differences(sr: pd.DataFrame, variant_of: dict[str, str]) -> pd.DataFrame:
    """The columns of :func:`~cem_lab.analysis.findings.attention_contrast` from SR alone: each variant's paired
    difference from no attention with its interval; the DN and contrast columns NaN (no DN variants)."""
    t = sr.assign(variant=sr["model"].map(variant_of))
    variants = [v for v in dict.fromkeys(t["variant"]) if v != "none"]
    p = paired_table(t, [("none", v) for v in variants], CA_METRICS, condition="variant")
    return pd.DataFrame(
        {
            "variant": p["b"],
            "reference": p["a"],
            "metric": p["metric"],
            "sr_mean": p["mean"],
            "sr_low": p["low"],
            "sr_high": p["high"],
            **{f"{k}_{e}": np.nan for k in ("dn", "contrast") for e in ("mean", "low", "high")},
            "contrast_excludes_zero": False,
            "n_images": p["n_images"],
            "n_units": p["n_units"],
        }
    )
