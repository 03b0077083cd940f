"""Tables and figures of ``experiments/results/beyond.md`` from the json files of ``experiments/beyond.py``
(``runs/beyond/channels.json``, ``runs/beyond/erf.json``): nothing is recomputed. Prints markdown tables; writes
small PNGs into ``experiments/results/beyond/``."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from cem_lab.analysis.study_stats import nested_bootstrap, paired_difference

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "beyond"
RESULTS = ROOT / "experiments" / "results" / "beyond"


def _interval(rows: list[dict], key) -> tuple[float, float, float, int]:
    """The studies' interval (cem_lab.analysis.study_stats): the mean over images of each image's mean over its
    ROIs, with the nested bootstrap (ROIs redrawn inside images) and Hesterberg's expansion for few images."""
    iv = nested_bootstrap(np.array([key(r) for r in rows]), [r["image"].split("_")[0] for r in rows])
    return iv.mean, iv.low, iv.high, iv.n_images


def _fmt(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    if not np.isfinite(lo):
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"


def channel_tables(record: dict) -> tuple[str, dict]:
    rows = record["rows"]
    variants = sorted(
        {r["variant"] for r in rows},
        key=lambda v: ["global", "half", "local4", "local16", "adaptive2", "adaptive3"].index(v),
    )
    lines = [
        "| variant | SR x4: sum \\|CE\\| (dB) | DN s50: sum \\|CE\\| (dB) | SR - DN (dB, paired) "
        "| share of the input map's \\|CE\\| (%): SR / DN | SR - DN share (points, paired) "
        "| weights with \\|CE\\| >= 0.01 dB: SR / DN | Spearman(first order, CE), median: SR / DN |",
        "|---|---|---|---|---|---|---|---|",
    ]
    numbers = {}
    for v in variants:
        cells, frac, spear, share, shares = {}, {}, {}, {}, {}
        per = {}
        for task in ("sr", "dn"):
            sub = [r for r in rows if r["variant"] == v and r["task"] == task]
            per[task] = {(r["image"].split("_")[0], r["roi_index"]): r["sum_abs"] for r in sub}
            share[task] = {(r["image"].split("_")[0], r["roi_index"]): 100 * r["sum_abs"] / r["cem_total"] for r in sub}
            sm, slo, shi, _ = _interval(sub, lambda r: 100 * r["sum_abs"] / r["cem_total"])
            shares[task] = _fmt(sm, slo, shi)
            m, lo, hi, n = _interval(sub, lambda r: r["sum_abs"])
            cells[task] = _fmt(m, lo, hi)
            effects = (
                np.concatenate([np.abs(np.asarray(p["effect"])) for r in sub for p in r["layers"]])
                if sub
                else np.array([])
            )
            frac[task] = f"{100 * float((effects >= 0.01).mean()):.0f} %" if effects.size else "-"
            rho = [p.get("spearman_first_order") for r in sub for p in r["layers"]]
            rho = [x for x in rho if x is not None and np.isfinite(x)]
            spear[task] = f"{np.median(rho):.2f}" if rho else "-"
            numbers[(v, task)] = (m, lo, hi, n)
        keys = sorted(set(per["sr"]) & set(per["dn"]))
        iv = paired_difference(
            np.array([per["sr"][k] for k in keys]), np.array([per["dn"][k] for k in keys]), [k[0] for k in keys]
        )
        m, lo, hi = iv.mean, iv.low, iv.high
        numbers[(v, "diff")] = (m, lo, hi, iv.n_images)
        siv = paired_difference(
            np.array([share["sr"][k] for k in keys]), np.array([share["dn"][k] for k in keys]), [k[0] for k in keys]
        )
        lines.append(
            f"| {v} | {cells['sr']} | {cells['dn']} | {_fmt(m, lo, hi)} | {shares['sr']} / {shares['dn']} "
            f"| {_fmt(siv.mean, siv.low, siv.high)} | {frac['sr']} / {frac['dn']} "
            f"| {spear['sr']} / {spear['dn']} |"
        )
    return "\n".join(lines), numbers


def channel_figure(record: dict, numbers: dict) -> None:
    from cem_lab.viz.canvas import add_axes_in, new_figure, save_figure
    from cem_lab.viz.channel_figures import save_channel_figure
    from cem_lab.viz.style import task_colour

    variants = [v for v in ["global", "half", "local4", "local16", "adaptive2", "adaptive3"] if (v, "sr") in numbers]
    fig = new_figure(6.0, 3.0)
    ax = add_axes_in(fig, 0.75, 0.55, 3.9, 2.1)
    x = np.arange(len(variants))
    for k, task in enumerate(("sr", "dn")):
        m = np.array([numbers[(v, task)][0] for v in variants])
        lo = np.array([numbers[(v, task)][1] for v in variants])
        hi = np.array([numbers[(v, task)][2] for v in variants])
        xs = x + (k - 0.5) * 0.36
        ax.bar(xs, m, width=0.34, color=task_colour(task), label={"sr": "SR x4", "dn": "DN sigma 50"}[task])
        ok = np.isfinite(lo)
        ax.errorbar(xs[ok], m[ok], yerr=[m[ok] - lo[ok], hi[ok] - m[ok]], fmt="none", ecolor="black", capsize=2, lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(variants, fontsize=7)
    ax.set_ylabel("summed |CE| of the attention weights (dB)", fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("how much a ROI depends on the attention weights (mean over 3 images, 95 % CI)", fontsize=8)
    RESULTS.mkdir(parents=True, exist_ok=True)
    save_figure(fig, RESULTS / "channels_attention_sr_vs_dn.png")
    # one unit's ranked attention weights of the last block, SR and DN
    for task in ("sr", "dn"):
        rows = [r for r in record["rows"] if r["variant"] == "global" and r["task"] == task]
        if not rows:
            continue
        r = rows[0]
        layer = r["layers"][-1]
        e = np.asarray(layer["effect"])
        save_channel_figure(
            RESULTS / f"channels_global_{task}_last_block.png",
            mean=e,
            low=np.full_like(e, np.nan),
            high=np.full_like(e, np.nan),
            title=f"{r['model']} | {r['image']} ROI {r['roi']} | {layer['layer']} (attention weights) | donors: "
            + ", ".join(d.split("_")[0] for d in r["donors"]),
        )


def _family(model: str) -> str:
    return model.split("_")[0] if "_d" in model and "_w" in model else "catalogue" if "-" in model else "other"


def erf_tables(record: dict) -> tuple[str, list[dict]]:
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in record["rows"]:
        by_model[r["model"]].append(r)
    lines = [
        "| model | units | CEM effective distance (px) | ERF 50 % radius (px) | ERF 99 % radius (px) | reach / ERF 99 % |",
        "|---|---|---|---|---|---|",
    ]
    points = []
    for model, rows in by_model.items():

        def stat(key, rows=rows):
            return _interval(rows, key)

        reach = stat(lambda r: r["reach_px"]["max"])
        r50 = stat(lambda r: r["radius_px"]["50"])
        r99 = stat(lambda r: r["radius_px"]["99"])
        ratio = stat(lambda r: r["reach_px"]["max"] / r["radius_px"]["99"])
        lines.append(
            f"| {model} | {len(rows)} | {_fmt(*reach[:3])} | {_fmt(*r50[:3])} | {_fmt(*r99[:3])} | {_fmt(*ratio[:3])} |"
        )
        points.append({"model": model, "family": _family(model), "reach": reach, "r50": r50, "r99": r99})
    return "\n".join(lines), points


def erf_figure(points: list[dict]) -> None:
    from cem_lab.viz.canvas import add_axes_in, new_figure, save_figure
    from cem_lab.viz.style import categorical

    fig = new_figure(6.2, 3.6)
    ax = add_axes_in(fig, 0.7, 0.55, 3.0, 2.8)
    families = sorted({p["family"] for p in points})
    top = 1.0
    for k, fam in enumerate(families):
        sub = [p for p in points if p["family"] == fam]
        x = np.array([p["reach"][0] for p in sub])
        for key, marker, fill in (("r50", "o", categorical(k)), ("r99", "s", "white")):
            y = np.array([p[key][0] for p in sub])
            ax.scatter(x, y, marker=marker, s=18, edgecolors=categorical(k), facecolors=fill, linewidths=0.9, zorder=3)
            top = max(top, float(np.nanmax(np.concatenate([x, y]))))
        ax.scatter([], [], marker="o", s=18, color=categorical(k), label=fam)
    ax.scatter([], [], marker="o", s=18, color="0.3", label="ERF 50 % radius")
    ax.scatter([], [], marker="s", s=18, edgecolors="0.3", facecolors="white", label="ERF 99 % radius")
    ax.plot([0, 1.05 * top], [0, 1.05 * top], ":", color="0.5", lw=0.8, label="equal")
    ax.set_xlim(0, 1.05 * top)
    ax.set_ylim(0, 1.05 * top)
    ax.set_xlabel("CEM effective distance (px from the ROI centre)", fontsize=7)
    ax.set_ylabel("ERF radius (px from the ROI centre)", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.set_title("where gradients reach vs where interventions matter (per network)", fontsize=8)
    RESULTS.mkdir(parents=True, exist_ok=True)
    save_figure(fig, RESULTS / "erf_vs_cem_reach.png")


def partial_spearman(trained: np.ndarray, other: np.ndarray, roi: list[int], block: int) -> tuple[float, float]:
    """Spearman of ``|trained|`` and ``|other|`` over their support (ROI blocks left out, as cem-sanity does),
    with the blocks' distance to the ROI centre partialled out; and the trained map's own Spearman with
    distance (how much of its ranking the receptive field's geometry alone gives)."""
    from scipy.stats import spearmanr

    rows, cols = trained.shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    top, left, size = roi
    cy, cx = (top + size / 2) / block - 0.5, (left + size / 2) / block - 0.5
    dist = np.hypot(yy - cy, xx - cx)
    inside = np.zeros_like(trained, dtype=bool)
    inside[top // block : (top + size) // block, left // block : (left + size) // block] = True
    a, b = np.abs(trained), np.abs(other)
    keep = ((a != 0) | (b != 0)) & ~inside
    x, y, d = a[keep], b[keep], dist[keep]
    rxy, rxd, ryd = (float(spearmanr(u, v).statistic) for u, v in ((x, y), (x, d), (y, d)))
    return (rxy - rxd * ryd) / np.sqrt(max((1 - rxd**2) * (1 - ryd**2), 1e-12)), rxd


def di_table(folders: list[Path]) -> str:
    """LAM's diffusion index ((1 - Gini) x 100) of each method's block map outside the ROI, trained and fully
    randomised, from the sanity checks' maps: mean [min, max] over the images."""
    from cem_lab.attribution.diffusion import diffusion_index

    lines = [
        "| network | method | DI, trained (%) | DI, every layer random (%) |",
        "|---|---|---|---|",
    ]
    for folder in folders:
        summary = json.loads((folder / "sanity.json").read_text())
        z = np.load(folder / "sanity.npz")
        top, left, size = (int(v) for v in z["roi"])
        block = int(z["block"])
        for method in summary["verdicts"]:
            maps = z[f"maps_{method}"].astype(np.float64)
            outside = np.ones(maps.shape[-2:], dtype=bool)
            outside[top // block : (top + size) // block, left // block : (left + size) // block] = False
            cells = []
            for step in (0, -1):
                di = np.array([diffusion_index(m[step][outside]) for m in maps])
                cells.append(f"{di.mean():.1f} [{di.min():.1f}, {di.max():.1f}]")
            lines.append(f"| {summary['model']} | {method} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def sanity_table(folder: Path) -> str:
    """The check's own measures at the fully randomised step (cem-sanity's json) and, from its npz, the
    distance-controlled Spearman, per method: mean [min, max] over the images."""
    summary = json.loads((folder / "sanity.json").read_text())
    z = np.load(folder / "sanity.npz")
    roi, block = [int(v) for v in z["roi"]], int(z["block"])
    lines = [
        "| method | Spearman of \\|values\\| | SSIM | top-k overlap | verdict (Spearman < 0.5) "
        "| Spearman with distance partialled out | trained map vs distance (Spearman) |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, v in summary["verdicts"].items():
        maps = z[f"maps_{method}"]
        part = [partial_spearman(m[0], m[-1], roi, block) for m in maps]
        p = np.array([x[0] for x in part])
        dd = np.array([x[1] for x in part])

        def cell(e):
            return f"{e['mean']:.2f} [{e['low']:.2f}, {e['high']:.2f}]"

        lines.append(
            f"| {method} | {cell(v['spearman'])} | {cell(v['ssim'])} | {cell(v['topk'])} | "
            f"{'passes' if v['passes'] else 'fails'} | {p.mean():.2f} [{p.min():.2f}, {p.max():.2f}] "
            f"| {dd.mean():.2f} [{dd.min():.2f}, {dd.max():.2f}] |"
        )
    t = summary["timings"]["total_s"]
    return "\n".join(lines) + f"\n\n{summary['model']}: {len(summary['layers'])} layers, {t:.0f} s"


def report() -> int:
    ch = OUT / "channels.json"
    if ch.is_file():
        record = json.loads(ch.read_text())
        table, numbers = channel_tables(record)
        print("## channels\n")
        print(table)
        print(f"\n{len(record['rows'])} units, {record['seconds']:.0f} s")
        channel_figure(record, numbers)
    else:
        print(f"{ch}: none yet (python experiments/beyond.py channels)")
    for name in ("sanity_dncnn", "sanity_waifu2x"):
        folder = OUT / name
        if (folder / "sanity.json").is_file():
            print(f"\n## {name}\n")
            print(sanity_table(folder))
            RESULTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / "figures" / "sanity.png", RESULTS / f"{name}.png")
    done = [OUT / n for n in ("sanity_dncnn", "sanity_waifu2x") if (OUT / n / "sanity.json").is_file()]
    if done:
        print("\n## diffusion index\n")
        print(di_table(done))
    ef = OUT / "erf.json"
    if ef.is_file():
        record = json.loads(ef.read_text())
        table, points = erf_tables(record)
        print("\n## ERF vs CEM reach\n")
        print(table)
        print(f"\n{len(record['rows'])} runs, {record['seconds']:.0f} s")
        erf_figure(points)
    else:
        print(f"{ef}: none yet (python experiments/beyond.py erf)")
    return 0
