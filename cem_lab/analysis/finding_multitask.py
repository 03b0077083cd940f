"""Finding 3: multi-task training pushes a network toward local information.

From single-task and mixed networks of one family, of cem_lab's zoo (``<family>_mixed``) or of the authors'
(``*_mix``, and the multi-in-one ``*_MIO``), told apart by the run table's ``training`` column (single-task /
mixed / multi-in-one), never by names: per (family, task) the paired difference in the size of the effect and
in its locality, beside the PSNR gap; figures and the teaser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cem_lab.analysis import finding_figures as ff
from cem_lab.analysis.finding_tables import (
    HELDOUT_RECORD,
    NO_HELDOUT,
    SOURCE_NAMES,
    FindingError,
    heldout,
    interval_text,
    markdown_table,
    pair_cells,
    study_networks,
    units_line,
    write_csv,
)
from cem_lab.analysis.findings import detectable_text, paired_table, significant, verdict, with_locality
from cem_lab.analysis.runs import SOURCE_AUTHORS
from cem_lab.analysis.study_stats import pictures

MT_METRICS = [
    "total_positive_effect",
    "share_positive",
    "reach_max_px",
    "ce_mean_distance_px",
    "near_mass_share",
    "baseline_metric",
]
#: the ``training`` of the networks compared with the single-task ones, in the order of the tables
OTHER_TRAINING = ("mixed", "multi-in-one")


def multitask_finding(runs: pd.DataFrame, out: Path, figures: Path) -> dict[str, Any]:
    """Finding 3 from single-task and mixed (or multi-in-one) networks of cem_lab's zoo or of the authors':
    paired differences per (family, task) in the size and the locality of the effect, figures (and the teaser),
    markdown and verdict."""
    df = with_locality(runs)
    df, source = study_networks(df, "multitask")
    authors = source == SOURCE_AUTHORS
    rows, found = [], []
    order = {"sr": 0, "dn": 1, "dr": 2}
    for task, t in sorted(df.groupby("task", sort=False), key=lambda kv: order.get(kv[0], 9)):
        for (arch, kind), g, single, mixed in _pairs(t):
            p = paired_table(g, [(single, mixed)], MT_METRICS)
            p["task"], p["family"] = task, arch
            if authors:
                p["training"] = kind
            rows.append(p)
            found.append((task, arch, kind, single, mixed, {m: pair_cells(p, m) for m in MT_METRICS}))
    # the tests the readings read, Holm-corrected together: per pair, the two locality measures (the verdict)
    # and the size of the effect (the reading "weaker")
    read = ("ce_mean_distance_px", "near_mass_share", "total_positive_effect")
    tests = {(i, m): (c[m]["mean"], c[m]["p"]) for i, (*_, c) in enumerate(found) for m in read}

    def decide(correct: bool):
        sig = significant(tests, correct=correct)
        n_sup = n_con = 0
        readings = []
        for i in range(len(found)):
            closer, nearer = sig[(i, "ce_mean_distance_px")] < 0, sig[(i, "near_mass_share")] > 0
            farther = sig[(i, "ce_mean_distance_px")] > 0 or sig[(i, "near_mass_share")] < 0
            weaker = sig[(i, "total_positive_effect")] < 0
            n_sup += bool((closer or nearer) and not farther)
            n_con += bool(farther and not (closer or nearer))
            readings.append(
                "more local"
                if (closer or nearer) and not farther
                else "less local"
                if farther and not (closer or nearer)
                else "weaker, not more local"
                if weaker
                else "no difference found"
            )
        return n_sup, n_con, readings

    total = len(found)
    support, contradict, readings = decide(correct=True)
    raw = decide(correct=False)
    cmp_rows = []
    for (task, arch, kind, single, mixed, c), reading in zip(found, readings):
        ho_s, ho_m = heldout(single, task), heldout(mixed, task)
        cmp_rows.append(
            {
                "task": task,
                "family": arch,
                **({"training": kind} if authors else {}),
                "single": single,
                "mixed": mixed,
                "sum of positive CE (mixed - single, dB)": interval_text(
                    *c["total_positive_effect"][["mean", "low", "high"]]
                ),
                "CE-weighted mean distance (px)": interval_text(*c["ce_mean_distance_px"][["mean", "low", "high"]]),
                "CE mass share within 32 px": interval_text(*c["near_mass_share"][["mean", "low", "high"]]),
                "effective distance (px)": interval_text(*c["reach_max_px"][["mean", "low", "high"]]),
                "ROI PSNR gap (dB)": interval_text(*c["baseline_metric"][["mean", "low", "high"]], 3),
                "held-out PSNR gap (dB)": np.nan if authors else f"{ho_m['psnr'] - ho_s['psnr']:+.2f}",
                "reading": reading,
            }
        )
    if not rows:
        raise FindingError(
            "multitask: needs single-task and mixed (or multi-in-one) networks of one family on a task (the "
            "training column: cem_lab's <family>_mixed zoo models, the authors' *_mix and *_MIO). Run "
            "python experiments/multitask.py run (or experiments/paper.py run --study multitask)"
        )
    paired = pd.concat(rows, ignore_index=True)
    files = {"paired": write_csv(paired, out / "finding_multitask_paired.csv")}
    comparisons = pd.DataFrame(cmp_rows)
    files["comparisons"] = write_csv(comparisons, out / "finding_multitask_comparisons.csv")
    v = verdict(support, contradict, total)
    v_raw = verdict(raw[0], raw[1], total)
    power = detectable_text(
        [
            (
                "CE-weighted mean distance",
                [(c["ce_mean_distance_px"]["high"] - c["ce_mean_distance_px"]["low"]) / 2 for *_, c in found],
                " px",
            ),
            ("near share", [(c["near_mass_share"]["high"] - c["near_mass_share"]["low"]) / 2 for *_, c in found], ""),
        ],
        len(set(pictures(df))),
        len(tests),
    )
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
        *(
            [
                f"Study networks: {SOURCE_NAMES[source]}; each single-task network is paired with the mixed (*_mix) "
                "and the multi-in-one (*_MIO) network of its family (column training; the column mixed names the "
                f"network it is paired with). {NO_HELDOUT}\n"
            ]
            if authors
            else []
        ),
        f"{units_line(df)}.\n",
        f"**Verdict: {v}.** Rule: each (family, task) pair of single-task and mixed models is paired by unit. The "
        "size of the effect (sum of positive CE) falls when a network is weaker as well as when it is more local, so "
        "locality is read from measures that do not scale with it: the CE-weighted mean distance and the share of "
        "the |CE| mass within 32 px of the ROI centre. A pair supports the finding when either moves toward the "
        "ROI and neither moves away; it contradicts it the other way round. A move counts when its test rejects "
        f'"no difference" at a family-wise error rate of 5 % over the {len(tests)} tests the readings read (Holm\'s '
        f"step-down; p from the bootstrap, as the intervals). Pairs: {total}; supporting: {support}; contradicting: "
        f"{contradict}. Without the correction (each test alone at 5 %) the rule would say {v_raw} ({raw[0]} "
        f"supporting, {raw[1]} contradicting). {power} The PSNR gap of each pair (ROI, paired; "
        f"held-out, {HELDOUT_RECORD}) stands beside it: a mixed model that restores less "
        "well is a weaker network, whatever its map.\n",
        "### Single-task vs mixed (mixed - single, paired by unit)\n",
        markdown_table(comparisons),
        f"![pairs](figures/{Path(figs['finding_mt_pairs']).name})\n",
        f"![profiles](figures/{Path(figs['finding_mt_profiles']).name})\n",
        f"![CE maps](figures/{Path(figs['finding_mt_cem_grid']).name})\n",
    ]
    if "teaser" in figs:
        why = (
            f"The teaser shows the authors' mixed network with maps on the most tasks, {teaser_model}"
            if authors
            else "No network of the pretrained catalogue restores all three tasks (waifu2x: SR and JPEG; FFDNet: DN; "
            f"none derains), so the teaser shows the project's mixed network with maps on the most tasks, {teaser_model}"
        )
        md.append(
            f"### The teaser: {teaser_model} on every task it was trained for\n\n{why}, on one ROI (the "
            "unit with the largest median sum of positive CE).\n\n"
            f"![teaser](figures/{Path(figs['teaser']).name})\n"
        )
    return {"markdown": "\n".join(md), "verdict": v, "files": files, "figures": figs}


def _pairs(t: pd.DataFrame):
    """Per family of the runs ``t`` of one task and per training in :data:`OTHER_TRAINING` it has beside a
    single-task network: ((family, training), the family's runs, the single-task model, the other model)."""
    for arch, g in t.groupby("architecture", sort=False):
        single = list(dict.fromkeys(g[g["training"] == "single-task"]["model"]))
        for kind in OTHER_TRAINING:
            other = list(dict.fromkeys(g[g["training"] == kind]["model"]))
            if single and other:
                yield (arch, kind), g, single[0], other[0]


def _teaser_model(df: pd.DataFrame) -> str | None:
    """The mixed model with maps on the most tasks (the one network that restores SR, DN and DR)."""
    mixed = df[df["training"] == "mixed"]
    if not len(mixed):
        return None
    n = mixed.groupby("model")["task"].nunique()
    best = n[n == n.max()]
    order = [m for m in ("rcan_mixed", "swinlite_mixed", "srresnet_mixed") if m in best.index]
    return order[0] if order else str(best.index[0])
