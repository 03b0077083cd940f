"""The recipes of the embedded model zoo: each zoo model is one ``cem-train`` run (conf/train.yaml) with
the overrides below (:data:`RECIPES`, grouped by the study that uses them: :data:`STUDIES`). The commands
that train, export and list them: :mod:`cem_lab.cli.zoo` (``cem-zoo``)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from cem_lab.bookkeeping.clean_errors import did_you_mean
from cem_lab.models.zoo import ZooError


@dataclass(frozen=True)
class Recipe:
    """One zoo model: its name, the study that uses it, and the ``cem-train`` overrides."""

    name: str
    study: str
    overrides: tuple[str, ...]
    label: str = ""

    @property
    def command(self) -> str:
        """The ``cem-train`` command line of the recipe, shell-quoted."""
        return " ".join(["cem-train", *map(shlex.quote, self.overrides)])


# ----------------------------------------------------------------------------- the recipes
# Short CPU schedules (minutes per model on 2 cores). SR networks of the receptive-field and the
# channel-attention studies add the bicubic-upsampled input (global_residual=true) and learn the
# residual to bicubic; at scale 1 every network is residual anyway. The receptive-field family learns from the
# whole training pool (cem_lab.standard_images.IMAGE_POOLS["train"], with scikit-image's page and text for thin
# regular lines; it saw six pictures until 2026-12-07). The channel-attention family is still trained on the
# default six pictures, and the multi-task family as said above its recipes: their retraining on the whole pool
# lands with their studies.
_RF = (
    "data.pool=train",
    "task=sr",
    "task.scale=4",
    "model.net.global_residual=true",
    "train.steps=2000",
    "train.crop=64",
    "train.batch_size=16",
    "train.warmup_steps=100",
    "train.val_every=500",
)
#: FSRCNN's plain 3x3 stack (up to 16 layers, no skips) stalls at "output = bicubic" with lr 2e-3
#: (depth 16, width 32: gain 0.00 dB after 2000 steps); lr 5e-4 trains every member
_FSRCNN_LR = "train.lr=5e-4"
_EDSR_LR = "train.lr=2e-3"
RF_DEPTHS = (2, 4, 8, 16)
FSRCNN_WIDTHS = (16, 32, 56)
EDSR_WIDTHS = (8, 16, 32)

_RCAN = ("model=rcan", "model.net.width=16", "model.net.groups=2", "model.net.blocks=2", "model.net.reduction=4")
_RCAN_SR = (
    "task=sr",
    "task.scale=4",
    "model.net.global_residual=true",
    "train.crop=96",
    "train.steps=1500",
    "train.lr=2e-3",
)
_RCAN_DN = ("task=dn", "task.sigma=50", "train.crop=48", "train.steps=1000", "train.lr=1e-3")
_RCAN_COMMON = ("train.batch_size=16", "train.warmup_steps=100", "train.val_every=500")
#: the channel-attention variants of the method doc, section 6.2
RCAN_VARIANTS: dict[str, tuple[str, ...]] = {
    "global": (),
    "none": ("model.net.attention=none",),
    "half": ("model.net.half=true",),
    "local4": ("model.net.attention=local", "model.net.pool_size=4"),
    "local16": ("model.net.attention=local", "model.net.pool_size=16"),
    "adaptive2": ("model.net.attention=adaptive", "model.net.pool_size=2"),
    "adaptive3": ("model.net.attention=adaptive", "model.net.pool_size=3"),
}

_MT_NETS = {
    "srresnet": ("model=srresnet", "model.net.width=16", "model.net.depth=4"),
    "swinlite": (
        "model=swinlite",
        "model.net.width=16",
        "model.net.depth=2",
        "model.net.heads=2",
        "model.net.window=8",
    ),
    # the paper's multi-task study has RCAN too: the channel-attention family's size, global attention
    "rcan": ("model=rcan", "model.net.width=16", "model.net.groups=2", "model.net.blocks=2", "model.net.reduction=4"),
}
#: the mixed model runs three times the steps, so that it sees as many samples of each task as a
#: single-task model (with 1500 steps, SRResNet's mixed model stayed 0.56 dB below bicubic on SR),
#: and weights its SR samples: with equal weights, 4500 steps left SRResNet 0.03 dB and SwinLite
#: 1.28 dB below bicubic on SR while both gained 7.5 to 11.4 dB on DN and DR. SwinLite mixed
#: needs the larger weight (at 8 it ended 0.11 dB below bicubic); see experiments/zoo.md
_MT_TASKS = {
    "sr": ("task=sr", "task.scale=4", "data.pre_upsample=true", "train.steps=1500"),
    "dn": ("task=dn", "task.sigma=50", "train.steps=1500"),
    "dr": ("task=dr", "task.preset=medium", "train.steps=1500"),
    "mixed": ("tasks=[sr,dn,dr]", "train.steps=4500"),
}
_MT_SR_WEIGHT = {"srresnet": 8, "swinlite": 32, "rcan": 8}
#: SwinLite at lr 1e-3 gained only +0.04 dB over bicubic on SR alone (3e-4: +0.01, 3e-3: +0.17)
_MT_LR = {"srresnet": "1e-3", "swinlite": "3e-3", "rcan": "1e-3"}


def _mt_task(net: str, task: str) -> tuple[str, ...]:
    extra = (f"train.task_weights={{sr:{_MT_SR_WEIGHT[net]}}}",) if task == "mixed" else ()
    return (*_MT_TASKS[task], *extra)


#: SwinLite and RCAN learn from the 17-picture training pool (cem_lab.standard_images.IMAGE_POOLS): on the six
#: embedded pictures, SwinLite mixed stayed below bicubic on the held-out photographs (SR x4 -0.07 dB over
#: sporco's five; +0.73 dB on the pool) and SwinLite DR lost on sail's masts. SRResNet's four models beat
#: their baselines on the held-out photographs as trained on the six pictures and are kept as they are;
#: every family's four models share their data (experiments/zoo.md)
_MT_POOL = {"srresnet": None, "swinlite": "train", "rcan": "train"}


def _mt_common(net: str) -> tuple[str, ...]:
    data = (f"data.pool={_MT_POOL[net]}",) if _MT_POOL[net] else ()
    return (
        *data,
        "train.crop=48",
        "train.batch_size=16",
        f"train.lr={_MT_LR[net]}",
        "train.warmup_steps=100",
        "train.val_every=500",
    )


def _recipes() -> list[Recipe]:
    out: list[Recipe] = []
    for family, widths, lr in (("fsrcnn", FSRCNN_WIDTHS, _FSRCNN_LR), ("edsr", EDSR_WIDTHS, _EDSR_LR)):
        for depth in RF_DEPTHS:
            for width in widths:
                out.append(
                    Recipe(
                        f"{family}_d{depth}_w{width}_x4",
                        "receptive_field",
                        (f"model={family}", f"model.net.depth={depth}", f"model.net.width={width}", *_RF, lr),
                        f"{family.upper()} depth {depth} width {width}",
                    )
                )
    for task, task_overrides in (("sr_x4", _RCAN_SR), ("dn_s50", _RCAN_DN)):
        for variant, variant_overrides in RCAN_VARIANTS.items():
            out.append(
                Recipe(
                    f"rcan_{variant}_{task}",
                    "channel_attention",
                    (*_RCAN, *variant_overrides, *task_overrides, *_RCAN_COMMON),
                    f"RCAN {variant}",
                )
            )
    for net, net_overrides in _MT_NETS.items():
        for task in _MT_TASKS:
            label = "mixed sr+dn+dr" if task == "mixed" else f"single-task {task}"
            out.append(
                Recipe(
                    f"{net}_{task}",
                    "multitask",
                    (*net_overrides, *_mt_task(net, task), *_mt_common(net)),
                    f"{net} {label}",
                )
            )
    return out


RECIPES: dict[str, Recipe] = {r.name: r for r in _recipes()}
STUDIES: tuple[str, ...] = ("receptive_field", "channel_attention", "multitask")


def recipe(name: str) -> Recipe:
    """The recipe called ``name`` (a ZooError names the known ones)."""
    if name not in RECIPES:
        raise ZooError(f"no zoo recipe named {name!r}{did_you_mean(name, RECIPES)}; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def select(names: Sequence[str] = (), study: str | None = None) -> list[Recipe]:
    """The recipes named (all without names), of ``study`` only when given."""
    if study is not None and study not in STUDIES:
        raise ZooError(f"unknown study {study!r}; known: {', '.join(STUDIES)}")
    chosen = [recipe(n) for n in names] if names else list(RECIPES.values())
    return [r for r in chosen if study is None or r.study == study]
