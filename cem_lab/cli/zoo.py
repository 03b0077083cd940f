"""``cem-zoo``: the commands that train and list the embedded model zoo (its recipes: :mod:`cem_lab.compose.zoo_recipes`).

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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml
from safetensors import safe_open

from cem_lab.bookkeeping.clean_errors import OneLineParser, run_cli
from cem_lab.compose.zoo_recipes import RECIPES, STUDIES, Recipe, select
from cem_lab.folder_lock import LOCK_FILE, FolderBusyError, hold_run_folder, lend_to_child
from cem_lab.models.zoo import ZOO_DIR, ZooError, read_zoo_entry

__all__ = ["below_baseline", "export", "exported", "main", "markdown_table", "measure_heldout", "train"]


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
    weights, config = run_dir / "model.safetensors", run_dir / "model.yaml"
    if not (weights.is_file() and config.is_file()):
        raise ZooError(
            f"{run_dir} holds no finished model (model.safetensors + model.yaml); "
            f"train it first: cem-zoo train {r.name}"
        )

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
    from cem_lab.training.heldout import evaluate_zoo_model  # lazy: Lightning (seconds), for held-out runs only

    with tempfile.TemporaryDirectory() as tmp:
        name = "candidate"
        shutil.copyfile(weights, Path(tmp) / f"{name}.safetensors")
        (Path(tmp) / f"{name}.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        return evaluate_zoo_model(name, zoo_dir=Path(tmp))


def measure_heldout(names: Sequence[str] = (), zoo_dir: Path = ZOO_DIR) -> list[str]:
    """(Re)compute the held-out record of exported models and write it into their ``.yaml`` (atomically)."""
    from cem_lab.training.heldout import evaluate_zoo_model  # lazy: Lightning (seconds), for held-out runs only

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
    in_zoo = busy = 0
    for i, r in enumerate(recipes, 1):
        head = f"[{i}/{len(recipes)}] {r.name}"
        if exported(r, zoo_dir) and not force:
            print(f"{head}: in the zoo already (same recipe), skipped", flush=True)
            in_zoo += 1
            continue
        run_dir = runs / r.name
        try:
            with hold_run_folder(run_dir, what="cem-zoo train"):
                start = time.perf_counter()
                _train_one(r, run_dir, zoo_dir, head, extra, force)
        except FolderBusyError as err:
            print(f"{head}: skipped: {err}", flush=True)
            busy += 1
            continue
        except ZooError as err:  # one failed model does not stop the others
            print(f"{head}: FAILED: {err}", flush=True)
            failed.append(r.name)
            continue
        print(f"{head}: exported in {time.perf_counter() - start:.0f} s", flush=True)
    trained = len(recipes) - in_zoo - busy - len(failed)
    line = f"cem-zoo train: {trained} trained, {in_zoo} already in the zoo (skipped"
    line += "; --force retrains them)" if in_zoo else ")"
    line += f", {busy} busy in another process" if busy else ""
    print(f"{line}, {len(failed)} failed", flush=True)
    return failed


def _train_one(r: Recipe, run_dir: Path, zoo_dir: Path, head: str, extra: Sequence[str], force: bool) -> None:
    """Train one recipe in ``run_dir`` (locked by the caller, lent to cem-train) and export it."""
    cmd = [sys.executable, "-m", "cem_lab.cli.train", *r.overrides, *extra, f"hydra.run.dir={run_dir}"]
    if force and any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        kept = _set_aside(run_dir)
        print(f"{head}: --force: the previous run folder is kept as {kept}", flush=True)
    print(f"{head}: {r.command}", flush=True)
    proc = subprocess.Popen(cmd, env=lend_to_child(run_dir))
    try:
        returncode = proc.wait()
    except KeyboardInterrupt:
        # Ctrl-C at a terminal reaches cem-train too; a signal to this process alone is passed on. Either
        # way cem-train ends its step and keeps last.ckpt (at most a minute: then it is killed)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if returncode != 0:
        raise ZooError(
            f"cem-train exited with status {returncode} (if its run folder "
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
        training = entry.get("training") or {}
        pictures = len(training.get("train_images") or ()) or "?"
        source = f"pool `train` ({pictures})" if "pool" in str(training.get("images", "")) else "6 skimage pictures"
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
    """Run ``cem-zoo`` (list, train, table, heldout); returns the exit status: 0, 1 when a model failed, 2 on a usage
    error."""
    parser = OneLineParser(prog="cem-zoo", description=__doc__.split("\n\n")[0])
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
    # Ctrl-C: one line; `cem-zoo train` resumes each model from its last.ckpt and skips the exported ones
    return run_cli(lambda: _run(args), "cem-zoo", resumes=args.cmd == "train")


def _run(args: argparse.Namespace) -> int:
    try:
        if args.cmd in ("table", "heldout") and not args.zoo_dir.is_dir():
            raise ZooError(f"--zoo-dir {args.zoo_dir} is not a folder; give the folder of the exported models")
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
