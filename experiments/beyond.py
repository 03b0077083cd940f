"""Beyond the paper (issue 26): causal effects of channels, effective receptive fields against the CEM's reach,
and the numbers of ``experiments/results/beyond.md``.

    python experiments/beyond.py channels   # RCAN's channel attention seen from inside, SR vs DN (minutes)
    python experiments/beyond.py erf        # the ERF of every finished receptive-field / pretrained map's ROI
    python experiments/beyond.py report     # tables and figures -> experiments/results/beyond/ (nothing recomputed)

``channels``: for each RCAN variant of the channel-attention study that has attention (global, half, local 4 /
16, adaptive 2 / 3) on SR x4 and on DN sigma 50, and for each unit of that study (its run folders in
``runs/sweeps/cem/study_ca_{sr,dn}``: the same degraded input, ground truth and placed ROI), a channel map
(:class:`cem_lab.causal.channels.ChannelJob`) of the attention weights of every residual channel-attention block
(the sigmoid's output, ``body.G.body.B.body.3.squeeze``): each weight set to its value under another image of
the population (the study's other images, same crop size and positions; every donor once). The statistic of a
unit is the summed |CE| over the weights of all four blocks (dB): how much the ROI depends on what the attention
computes from this image; divided by the unit's summed |CE| of its input map (the study's run), a scale-free
share (the two tasks' dB measure different quantities). Per task: its mean over the images (the two ROIs of an image averaged first) with a
95 % bootstrap interval over the images; SR minus DN paired by image and ROI. Each map checkpoints in
``runs/beyond/channels/`` and a rerun resumes there.

``erf``: for every finished run folder given (default: the receptive-field study's sweeps and the pretrained
catalogue's runs), the ERF of the run's ROI (the whole ROI, ``point="roi"``) on the run's own input, so that the
gradient's mass radii and the CEM's effective distance (``reach_px``) describe the same ROI of the same image.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "runs" / "sweeps" / "cem"
OUT = ROOT / "runs" / "beyond"
RESULTS = ROOT / "experiments" / "results" / "beyond"
CA_VARIANTS = ("global", "half", "local4", "local16", "adaptive2", "adaptive3")
TASKS = {"sr": "sr_x4", "dn": "dn_s50"}


def _run_folders(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / "done.json").is_file()) if sweep.is_dir() else []


def _unit(folder: Path) -> dict:
    """What a finished cem-lab run folder says of its unit: model, image, ROI, the input and ground truth."""
    from cem_lab.images import from_uint8, load_image
    from cem_lab.run_format import read_summary
    from cem_lab.tasks.base import TaskInput

    s = read_summary(folder)
    x = from_uint8(load_image(folder / "images" / "input.png"))
    y = from_uint8(load_image(folder / "images" / "target.png"))
    return {
        "folder": folder,
        "model": s["model"],
        "image": s["image"],
        "roi": s["roi"],
        "roi_index": (s.get("roi_placement") or {}).get("index"),
        "reach_px": s.get("reach_px"),
        "cem_total": float(s.get("total_positive_effect", 0.0)) + abs(float(s.get("total_negative_effect", 0.0))),
        "input": TaskInput(x, y),
    }


def attention_layers(model: torch.nn.Module) -> list[str]:
    """The sigmoid attention weights of every residual channel-attention block, in forward order."""
    return [n for n, m in model.named_modules() if n.endswith("body.3.squeeze") and isinstance(m, torch.nn.Sequential)]


def first_order(job) -> np.ndarray:
    """FAIG's idea on the same question (Wang et al. 2021 rank filters by gradients integrated between two
    settings): the first-order estimate of each channel's donor effect, ``-grad . (A_donor - A)`` summed over the
    channel's plane and averaged over the donors, with the gradient of the ROI's PSNR (un-quantised RGB) at the
    trained activation. Same sign and units as the causal effect; exact only where the network is linear in
    the channel."""
    y0, y1, x0, x1 = job.roi.box
    held = {}

    def hook(_m, _i, out):
        held["a"] = out.detach().requires_grad_(True)
        return held["a"]

    handle = job.module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            out = job.model(job.ti.input)
            mse = ((out[:, :, y0:y1, x0:x1] - job.ti.target[:, :, y0:y1, x0:x1]) ** 2).mean()
            psnr = -10 * torch.log10(mse)
            (grad,) = torch.autograd.grad(psnr, held["a"])
    finally:
        handle.remove()
    delta = job.donor_acts - job.activation[None]  # (D, C, H, W)
    return (-(grad[0][None] * delta).sum(dim=(2, 3)).mean(dim=0)).detach().cpu().numpy().astype(np.float64)


def channels() -> int:
    from cem_lab.causal.channels import ChannelJob
    from cem_lab.models.zoo import load_zoo_model

    rows, t0 = [], time.perf_counter()
    for task, suffix in TASKS.items():
        units_by_model: dict[str, list[dict]] = {}
        for f in _run_folders(SWEEPS / f"study_ca_{task}"):
            u = _unit(f)
            units_by_model.setdefault(u["model"], []).append(u)
        for variant in CA_VARIANTS:
            model_id = f"rcan_{variant}_{suffix}"
            units = units_by_model.get(model_id, [])
            if not units:
                print(f"{model_id}: no finished run of the channel-attention study; run it first", flush=True)
                continue
            net = load_zoo_model(model_id)
            layers = attention_layers(net)
            for u in units:
                donors = [v for v in units if v["image"] != u["image"] and v["roi_index"] == u["roi_index"]]
                per_layer = []
                for layer in layers:
                    folder = OUT / "channels" / model_id / f"{u['image']}_roi{u['roi_index']}" / layer
                    folder.mkdir(parents=True, exist_ok=True)
                    job = ChannelJob(
                        net,
                        u["input"],
                        u["roi"],
                        layer,
                        donors=[v["input"] for v in donors],
                        donor_names=[v["image"] for v in donors],
                        image_name=u["image"],
                        model_name=model_id,
                    )
                    r = job.run(folder, progress=False)
                    fo = first_order(job)
                    per_layer.append(
                        {
                            "layer": layer,
                            "effect": r.raw_effect.tolist(),
                            "first_order": fo.tolist(),
                            "spearman_first_order": float(spearmanr(fo, r.raw_effect).statistic),
                            "sum_abs": float(np.abs(r.raw_effect).sum()),
                            "counts": r.counts(),
                            "baseline": r.baseline,
                            "passes": int((r.meta["cost"] or {}).get("total", {}).get("forward_passes", 0)),
                        }
                    )
                rows.append(
                    {
                        "task": task,
                        "variant": variant,
                        "model": model_id,
                        "image": u["image"],
                        "roi": u["roi"],
                        "roi_index": u["roi_index"],
                        "donors": [v["image"] for v in donors],
                        "layers": per_layer,
                        "sum_abs": float(sum(p["sum_abs"] for p in per_layer)),
                        "cem_total": u["cem_total"],
                        "baseline": per_layer[0]["baseline"] if per_layer else None,
                    }
                )
                print(f"{model_id} {u['image']} roi{u['roi_index']}: sum |CE| {rows[-1]['sum_abs']:.4f} dB", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    record = {"rows": rows, "seconds": time.perf_counter() - t0, "torch_threads": torch.get_num_threads()}
    (OUT / "channels.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {OUT / 'channels.json'} ({len(rows)} units, {record['seconds']:.0f} s)")
    return 0


def erf(folders: list[str]) -> int:
    from cem_lab.attribution.erf import RADIUS_LEVELS, effective_receptive_field
    from cem_lab.attribution.probe_inputs import load_network

    if not folders:
        folders = [
            str(f) for s in ("study_rf_zoo", "study_rf_real_x4", "study_rf_real_x2") for f in _run_folders(SWEEPS / s)
        ]
        folders += [str(f) for f in sorted((ROOT / "runs" / "pretrained").glob("*")) if (f / "done.json").is_file()]
    folders = [str(f) for f in folders if (Path(f) / "done.json").is_file()]  # finished runs only
    rows, nets, t0 = [], {}, time.perf_counter()
    for f in folders:
        u = _unit(Path(f))
        if u["model"] not in nets:
            nets[u["model"]] = load_network(u["model"], None)[0]
        res = effective_receptive_field(nets[u["model"]], u["input"].input, u["roi"], point="roi", progress=False)
        radii = res.mass_radii(RADIUS_LEVELS)[0]
        rows.append(
            {
                "folder": str(Path(f).resolve().relative_to(ROOT)),
                "model": u["model"],
                "image": u["image"],
                "roi": u["roi"],
                "reach_px": u["reach_px"],
                "radius_px": {f"{100 * lv:g}": float(r) for lv, r in zip(RADIUS_LEVELS, radii)},
            }
        )
        print(f"{u['model']:28s} {u['image']:36s} reach {u['reach_px']['max']:.1f} px, ERF radii {radii.round(1)}")
    OUT.mkdir(parents=True, exist_ok=True)
    record = {"rows": rows, "seconds": time.perf_counter() - t0}
    (OUT / "erf.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {OUT / 'erf.json'} ({len(rows)} runs, {record['seconds']:.0f} s)")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("channels", "erf", "report"):
        print(__doc__)
        return 2
    if argv[0] == "channels":
        return channels()
    if argv[0] == "erf":
        return erf(argv[1:])
    from beyond_report import report  # the tables and figures, from the json files above

    return report()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
