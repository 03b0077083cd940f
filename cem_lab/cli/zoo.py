"""``cem-zoo``: the recipes of the embedded model zoo, and the commands that train and list it.

Each zoo model is one ``cem-train`` run (``conf/train.yaml``) with the overrides below, trained in
``runs/zoo/<name>/`` and exported into the package (``cem_lab/assets/zoo/<name>.safetensors`` with
its ``.yaml``), where ``cem-lab model=zoo model.id=<name>`` finds it::

    cem-zoo list                               # the recipes, and which are in the package
    cem-zoo train --study receptive_field      # train (or resume) a study's models, then export
    cem-zoo train edsr_d4_w16_x4               # one model
    cem-zoo table                              # held-out and validation PSNR vs the trivial baseline
    cem-zoo heldout                            # (re)measure exported models on the held-out pool

Training is resumable: an interrupted ``cem-zoo train`` resumes each run from its ``last.ckpt``
and skips the models already exported with the same recipe.
"""

from __future__ import annotations

import argparse
import math
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cem_lab.folder_lock import LOCK_FILE, FolderBusyError, hold_run_folder, lend_to_child
from cem_lab.models.zoo import ZOO_DIR, ZooError, read_zoo_entry

__all__ = ["RECIPES", "STUDIES", "Recipe", "below_baseline", "main", "markdown_table", "measure_heldout", "recipe"]


@dataclass(frozen=True)
class Recipe:
    """One zoo model: its name, the study that uses it, and the ``cem-train`` overrides."""

    name: str
    study: str
    overrides: tuple[str, ...]
    label: str = ""

    @property
    def command(self) -> str:
        return " ".join(["cem-train", *map(shlex.quote, self.overrides)])


# ----------------------------------------------------------------------------- the recipes
# Short CPU schedules (minutes per model on 2 cores). SR networks of the receptive-field and the
# channel-attention studies add the bicubic-upsampled input (global_residual=true) and learn the
# residual to bicubic; at scale 1 every network is residual anyway.
_RF = (
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


#: SwinLite and RCAN learn from the 17-picture training pool (cem_lab.datasets.IMAGE_POOLS): on the six
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
    if name not in RECIPES:
        raise ZooError(f"no zoo recipe named {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def select(names: Sequence[str] = (), study: str | None = None) -> list[Recipe]:
    if study is not None and study not in STUDIES:
        raise ZooError(f"unknown study {study!r}; known: {', '.join(STUDIES)}")
    chosen = [recipe(n) for n in names] if names else list(RECIPES.values())
    return [r for r in chosen if study is None or r.study == study]


# ----------------------------------------------------------------------------- train / export
def exported(r: Recipe, zoo_dir: Path = ZOO_DIR) -> bool:
    """Whether ``zoo_dir`` holds ``r``'s model, trained with exactly ``r``'s command."""
    try:
        entry = read_zoo_entry(r.name, zoo_dir)
    except ZooError:
        return False
    return entry.get("zoo", {}).get("command") == r.command


def export(r: Recipe, run_dir: Path, zoo_dir: Path = ZOO_DIR) -> Path:
    """Copy a finished run's ``model.safetensors`` + ``model.yaml`` into ``zoo_dir`` as
    ``<name>.safetensors`` / ``<name>.yaml`` (written to temporary names, then renamed), with a
    ``zoo`` section: the name, the study and the recipe's command."""
    import yaml

    weights, config = run_dir / "model.safetensors", run_dir / "model.yaml"
    if not (weights.is_file() and config.is_file()):
        raise ZooError(
            f"{run_dir} holds no finished model (model.safetensors + model.yaml); "
            f"train it first: cem-zoo train {r.name}"
        )
    from safetensors import safe_open

    meta = yaml.safe_load(config.read_text())
    with safe_open(str(weights), framework="pt") as f:
        meta["parameters"] = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    meta["zoo"] = {"name": r.name, "study": r.study, "label": r.label, "command": r.command}
    zoo_dir.mkdir(parents=True, exist_ok=True)
    meta["heldout"] = _heldout_of(weights, meta)
    tmp_w = zoo_dir / f".{r.name}.safetensors.tmp"
    tmp_y = zoo_dir / f".{r.name}.yaml.tmp"
    shutil.copyfile(weights, tmp_w)
    tmp_y.write_text(yaml.safe_dump(meta, sort_keys=False))
    tmp_w.replace(zoo_dir / f"{r.name}.safetensors")
    tmp_y.replace(zoo_dir / f"{r.name}.yaml")
    return zoo_dir / f"{r.name}.safetensors"


def _heldout_of(weights: Path, meta: dict) -> dict:
    """The held-out record (cem_lab.training.heldout) of a model that is not in a zoo folder yet."""
    import tempfile

    import yaml

    from cem_lab.training.heldout import evaluate_zoo_model

    with tempfile.TemporaryDirectory() as tmp:
        name = "candidate"
        shutil.copyfile(weights, Path(tmp) / f"{name}.safetensors")
        (Path(tmp) / f"{name}.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        return evaluate_zoo_model(name, zoo_dir=Path(tmp))


def measure_heldout(names: Sequence[str] = (), zoo_dir: Path = ZOO_DIR) -> list[str]:
    """(Re)compute the held-out record of exported models and write it into their ``.yaml`` (atomically)."""
    import yaml

    from cem_lab.training.heldout import evaluate_zoo_model

    done = []
    for r in select(names) if names else list(RECIPES.values()):
        try:
            entry = read_zoo_entry(r.name, zoo_dir)
        except ZooError:
            continue
        entry["heldout"] = evaluate_zoo_model(r.name, zoo_dir=zoo_dir)
        tmp = zoo_dir / f".{r.name}.yaml.tmp"
        tmp.write_text(yaml.safe_dump(entry, sort_keys=False))
        tmp.replace(zoo_dir / f"{r.name}.yaml")
        gains = ", ".join(
            f"{t} {v['gain']:+.2f} dB ({v['wins']}/{v['images']})" for t, v in entry["heldout"]["tasks"].items()
        )
        print(f"{r.name}: held-out {gains}", flush=True)
        done.append(r.name)
    return done


def train(
    recipes: Iterable[Recipe],
    runs: Path = Path("runs/zoo"),
    zoo_dir: Path = ZOO_DIR,
    extra: Sequence[str] = (),
    force: bool = False,
) -> list[str]:
    """Train (or resume) and export each recipe; returns the names that failed.

    ``force``: retrain from scratch even when the zoo holds the model; an existing run folder is
    kept, renamed ``<name>.previous-<k>``. Without it, a run folder left by a changed recipe is
    refused by ``cem-train`` (other settings) and the model is reported as failed."""
    recipes = list(recipes)
    failed: list[str] = []
    for i, r in enumerate(recipes, 1):
        head = f"[{i}/{len(recipes)}] {r.name}"
        if exported(r, zoo_dir) and not force:
            print(f"{head}: in the zoo already (same recipe), skipped", flush=True)
            continue
        run_dir = runs / r.name
        try:
            with hold_run_folder(run_dir, what="cem-zoo train"):
                start = time.perf_counter()
                _train_one(r, run_dir, zoo_dir, head, extra, force)
        except FolderBusyError as err:
            print(f"{head}: skipped: {err}", flush=True)
            continue
        except ZooError as err:  # one failed model does not stop the others
            print(f"{head}: FAILED: {err}", flush=True)
            failed.append(r.name)
            continue
        print(f"{head}: exported in {time.perf_counter() - start:.0f} s", flush=True)
    return failed


def _train_one(r: Recipe, run_dir: Path, zoo_dir: Path, head: str, extra: Sequence[str], force: bool) -> None:
    """Train one recipe in ``run_dir`` (locked by the caller, lent to cem-train) and export it."""
    cmd = [sys.executable, "-m", "cem_lab.cli.train", *r.overrides, *extra, f"hydra.run.dir={run_dir}"]
    if force and any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        kept = _set_aside(run_dir)
        print(f"{head}: --force: the previous run folder is kept as {kept}", flush=True)
    print(f"{head}: {r.command}", flush=True)
    proc = subprocess.run(cmd, env=lend_to_child(run_dir))
    if proc.returncode != 0:
        raise ZooError(
            f"cem-train exited with status {proc.returncode} (if its run folder "
            f"holds other settings, `cem-zoo train --force {r.name}` retrains it "
            "from scratch and keeps the old folder)"
        )
    export(r, run_dir, zoo_dir)


def _set_aside(run_dir: Path) -> Path:
    """Move a run folder's contents (all but our lock) into ``<name>.previous-<k>``, k the first
    free number; returns that folder."""
    k = 1
    while (kept := run_dir.with_name(f"{run_dir.name}.previous-{k}")).exists():
        k += 1
    kept.mkdir()
    for item in run_dir.iterdir():
        if item.name != LOCK_FILE:
            item.rename(kept / item.name)
    return kept


# ----------------------------------------------------------------------------- table
def markdown_table(zoo_dir: Path = ZOO_DIR, recipes: Iterable[Recipe] = ()) -> str:
    """Every exported zoo model against its trivial baseline: on the held-out pool (the mean over its
    pictures, how many it wins, which it loses) and on the validation crop."""
    rows = [
        "| model | study | task | held-out PSNR (dB) | baseline (dB) | gain (dB) | wins | loses on | "
        "val PSNR (dB) | val gain (dB) | trained on | params | size |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in list(recipes) or list(RECIPES.values()):
        try:
            entry = read_zoo_entry(r.name, zoo_dir)
        except ZooError:
            rows.append(f"| `{r.name}` | {r.study} | | not trained | | | | | | | | | |")
            continue
        weights = zoo_dir / f"{r.name}.safetensors"
        params = entry.get("parameters")
        held = (entry.get("heldout") or {}).get("tasks") or {}
        data = (entry.get("training") or {}).get("images", "")
        source = "pool `train` (17)" if "pool" in str(data) else "6 skimage pictures"
        for task, v in entry["validation"]["tasks"].items():
            h = held.get(task)
            cells = (
                [
                    f"{h['psnr']:.2f}",
                    f"{h['baseline_psnr']:.2f}",
                    f"{h['gain']:+.2f}",
                    f"{h['wins']}/{h['images']}",
                    ", ".join(h["loses_on"]) or "none",
                ]
                if h
                else ["not measured", "", "", "", ""]
            )
            rows.append(
                f"| `{r.name}` | {r.study} | {task} | "
                + " | ".join(cells)
                + f" | {v['psnr']:.2f} | {v['gain']:+.2f} | {source} | {params if params is not None else ''} | "
                f"{weights.stat().st_size / 1024:.0f} kB |"
            )
    return "\n".join(rows)


def below_baseline(zoo_dir: Path = ZOO_DIR) -> list[str]:
    """ "model task" for every exported model whose held-out mean is not above its baseline (or unmeasured)."""
    out = []
    for r in RECIPES.values():
        try:
            entry = read_zoo_entry(r.name, zoo_dir)
        except ZooError:
            continue
        held = (entry.get("heldout") or {}).get("tasks") or {}
        for task in entry["validation"]["tasks"]:
            if task not in held or held[task]["gain"] <= 0:
                out.append(f"{r.name} {task}")
    return out


# ----------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cem-zoo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_list = sub.add_parser("list", help="the recipes and which are in the package")
    p_list.add_argument("--study", choices=STUDIES)
    p_train = sub.add_parser("train", help="train (or resume) and export zoo models")
    p_train.add_argument("names", nargs="*", help="recipe names (default: all of the study)")
    p_train.add_argument("--study", choices=STUDIES)
    p_train.add_argument(
        "--runs", type=Path, default=Path("runs/zoo"), help="where the training runs go (default runs/zoo)"
    )
    p_train.add_argument(
        "--zoo-dir", type=Path, default=ZOO_DIR, help="where the models are exported (default: the package's zoo)"
    )
    p_train.add_argument(
        "--force",
        action="store_true",
        help="retrain from scratch, also models already exported (an old run folder is kept as <name>.previous-<k>)",
    )
    p_train.add_argument(
        "--extra",
        nargs=argparse.REMAINDER,
        default=[],
        help="more cem-train overrides, e.g. --extra trainer.progress=false",
    )
    p_table = sub.add_parser("table", help="markdown table: held-out and validation PSNR vs the trivial baseline")
    p_table.add_argument("--zoo-dir", type=Path, default=ZOO_DIR)
    p_held = sub.add_parser("heldout", help="(re)measure exported models on the held-out pool, into their .yaml")
    p_held.add_argument("names", nargs="*", help="recipe names (default: every exported model)")
    p_held.add_argument("--zoo-dir", type=Path, default=ZOO_DIR)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "list":
            for r in select(study=args.study):
                mark = "in zoo" if exported(r) else "      "
                print(f"{mark}  {r.name:28s} {r.command}")
            return 0
        if args.cmd == "table":
            print(markdown_table(args.zoo_dir))
            below = below_baseline(args.zoo_dir)
            print(
                f"\n{len(below)} model/task pair(s) not above the baseline on the held-out mean"
                + (f": {', '.join(below)}" if below else "")
            )
            return 0
        if args.cmd == "heldout":
            measure_heldout(args.names, args.zoo_dir)
            return 0
        failed = train(select(args.names, args.study), args.runs, args.zoo_dir, args.extra, args.force)
    except ZooError as err:
        print(f"cem-zoo: error: {err}", file=sys.stderr)
        return 2
    if failed:
        print(f"cem-zoo: {len(failed)} model(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
