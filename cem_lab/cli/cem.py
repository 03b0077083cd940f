"""`cem-lab`: compute one causal effect map from a Hydra config (see conf/cem.yaml).

With no arguments it runs the embedded default: cem_lab's own small DnCNN on a crop of
scikit-image's `chelsea`, DN sigma 50, embedded patch bank, reference estimator settings.
"""
from __future__ import annotations

import hashlib
import logging
import re
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("cem_lab")


def run_name(override_dirname: str) -> str:
    """A folder name from the command-line overrides: stable, readable, filesystem-safe.

    Path values are shortened to their file name; whenever anything is shortened, a hash of
    the full overrides is appended so that two different runs never share a folder.
    """
    if not override_dirname:
        return "default"
    parts = []
    for item in override_dirname.split(","):
        key, sep, value = item.partition("=")
        if "/" in value or "\\" in value:
            value = re.split(r"[\\/]", value.rstrip("/\\"))[-1] or value
        parts.append(f"{key}{sep}{value}")
    name = re.sub(r"[^A-Za-z0-9=,._+\-\[\]]+", "_", ",".join(parts))
    if name != override_dirname or len(name) > 120:
        digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:8]
        name = f"{name[:120]}-{digest}"
    return name


if not OmegaConf.has_resolver("cem_run_name"):
    OmegaConf.register_new_resolver("cem_run_name", run_name)


def build_model(cfg: DictConfig):
    """The model from a `model` config: a saved cem_lab model (`path`), or `net` + `checkpoint`."""
    from hydra.utils import instantiate

    from cem_lab.models.checkpoint import load_model, load_weights

    if cfg.get("path"):
        return load_model(cfg.path)
    net = instantiate(cfg.net)
    ckpt = cfg.get("checkpoint")
    if ckpt:
        report = load_weights(net, ckpt)
        log.info("loaded %s", report)
    return net


def build_patch_bank(cfg: DictConfig):
    from hydra.utils import instantiate

    return instantiate(cfg)


def resolve_device(name: Any):
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run(cfg: DictConfig, output_dir: Path):
    """Compute and save the CEM that ``cfg`` describes into ``output_dir``."""
    from cem_lab import compute_cem
    from cem_lab.io import write_text
    from cem_lab.tasks import make_task

    output_dir.mkdir(parents=True, exist_ok=True)
    write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    task = make_task(**OmegaConf.to_container(cfg.task, resolve=True))
    device = resolve_device(cfg.device)
    import torch

    torch.manual_seed(cfg.seed)  # models without a checkpoint get a reproducible initialisation
    model = build_model(cfg.model).to(device)
    image, name = cfg.image, None
    if image is None and cfg.degraded is None:
        from cem_lab.models.embedded import embedded_demo_image

        image, name = embedded_demo_image(), "chelsea_256"
    c = cfg.cem
    bank = build_patch_bank(cfg.patches) if c.intervention == "lv" else None
    return compute_cem(
        model, image, task, list(cfg.roi), degraded=cfg.degraded, block=c.block, patch_bank=bank,
        sampler=c.get("sampler", "uniform"), intervention=c.intervention, estimator=c.estimator,
        samples=c.get("samples"), coarse=c.get("coarse", 3), fine=c.get("fine", 50), tol=c.tol,
        classification=c.classification, metric=cfg.metric.name, crop_border=cfg.metric.crop_border,
        test_y_channel=cfg.metric.test_y_channel, seed=cfg.seed, image_seed=cfg.image_seed,
        batch_size=cfg.batch_size, forward_batch=cfg.forward_batch, device=device, mode=cfg.mode, crop_margin=cfg.crop_margin,
        crop_multiple=cfg.crop_multiple, output_dir=output_dir, figures=cfg.figures, progress=cfg.progress,
        image_name=name, model_name=cfg.model.get("name"))


def report(result, folder: Path) -> str:
    s = result.summary()
    c, sh = s["counts"], s["shares"]
    lines = [
        f"CEM written to {folder}",
        f"  ROI {s['metric']} before intervention: {s['baseline_metric']:.3f} {s['unit']}",
        f"  blocks outside the ROI: {s['blocks_outside_roi']}  positive {c['positive']} ({sh['positive']:.1%})  "
        f"negative {c['negative']} ({sh['negative']:.1%})  zero {c['zero']} ({sh['zero']:.1%})",
    ]
    if "effect_max" in s:
        lines.append(f"  effect range {s['effect_range']:.3f} {s['unit']}: max {s['effect_max']['value']:.3f} at block "
                     f"{tuple(s['effect_max']['block'])}, min {s['effect_min']['value']:.3f} at block "
                     f"{tuple(s['effect_min']['block'])}")
    lines.append(f"  mode {s['mode']}, {s['forward_passes']} forward passes, "
                 f"{s['timings'].get('run_s', 0):.1f} s on {s['device']}")
    lines.append(f"  figures: {folder / 'figures' / 'cem_panel.png'}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="pkg://cem_lab.conf", config_name="cem")
def _main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from cem_lab.errors import USER_ERRORS

    folder = Path(HydraConfig.get().runtime.output_dir)
    try:
        result = run(cfg, folder)
    except USER_ERRORS as err:
        print(f"cem-lab: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(report(result, folder))


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
