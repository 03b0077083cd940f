"""The paper's studies on the paper's own networks (the authors' model zoo, GitHub J-FHu/CEM), from the folder of
their checkpoints (their Google Drive folder, downloaded as ``CEM_Demo/ModelZoo/models/``):

    python experiments/paper.py plan --models FOLDER            # present / missing checkpoints, passes, time
    python experiments/paper.py run --models FOLDER device=cuda  # every study (resumable); --study NAME for one
    python experiments/paper.py report                           # tables, figures and the finding per study

Studies (names as in the authors' MODEL_LIST; docs/authors_zoo.md says how each loads):
  receptive_field    FSRCNN-{16..128}-6 and FSRCNN-48-{2..16}, EDSR-64-{10..24} and EDSR-{32..256}-16 (SR x4)
  channel_attention  RCAN and its six channel-attention variants (SR x4; the zoo has no DN variants)
  multitask          SRResNet / RCAN / SwinIR trained on one task against *_mix and *_MIO, on SR, DN and DR
  demo               the authors' demo configs: SR (EDSR, SRResNet), DN (DnCNN, RCAN_DN), DR (SRResNet_DR, MPRNet_DR)
over the held-out population (monarch, barbara, kodim23: 256 px crops, the size of the authors' demo images,
x two placed ROIs) at the paper's settings (block 8, T_c 3, T_f 50), with the statistics of cem-report; the first
three also get their finding's page (``cem-report --finding NAME``: tables, figures and a verdict).
MPRNet_DR needs ``pip install 'cem_lab[extra-arches]'`` (code for non-commercial use only): ``plan`` says so
where it is missing, and ``run`` leaves it out.

Without the authors' files, ``python experiments/paper.py standins --models FOLDER`` writes seeded random-weight
STAND-INS in their layout and names, so that ``plan``, ``run --tiny`` and ``report`` go through every path before
anyone spends a GPU hour. Maps of stand-ins mean nothing: the report says so at its top, and never in
experiments/results/.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from study_runner import IMAGES, ROOT, SWEEPS, Sweep, _hms, population, run

from cem_lab.compose.devices import check_device
from cem_lab.errors import InputError
from cem_lab.io import write_text
from cem_lab.models.authors import AuthorsModelError, entry, load_authors_model
from cem_lab.models.authors.catalogue import file_key, missing_package

#: the file that marks a folder of random-weight stand-ins (written by ``standins``)
STANDIN_MARK = "STAND-INS.txt"
CROP = 256  # the authors' demo images are 256 x 256
REPORTS = ROOT / "reports"
#: the authors' keys and shapes (measured from their code; the tests' fixtures): the spandrel networks' stand-ins
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "models" / "fixtures" / "authors_keys"

RF = [f"FSRCNN-{w}-6" for w in (16, 32, 48, 64, 80, 96, 112, 128)] + [f"FSRCNN-48-{d}" for d in (2, 4, 8, 10, 12)]
RF += [f"FSRCNN-48-{d}" for d in (14, 16)] + [f"EDSR-64-{d}" for d in (10, 12, 14, 16, 18, 20, 22, 24)]
RF += [f"EDSR-{w}-16" for w in (32, 96, 128, 160, 192, 224, 256)]
CA = ["RCAN", "RCAN_half_ca", "RCAN_no_ca", "RCAN_pooling4", "RCAN_pooling16", "RCAN_pooling2x2", "RCAN_pooling3x3"]
MT = {
    "sr": ["SRResNet", "SRResNet_mix", "SRResNet_MIO", "RCAN", "RCAN_mix", "SwinIR", "SwinIR_mix", "SwinIR_MIO"],
    "dn": [
        "SRResNet_DN",
        "SRResNet_mix",
        "SRResNet_MIO",
        "RCAN_DN",
        "RCAN_mix",
        "SwinIR_DN",
        "SwinIR_mix",
        "SwinIR_MIO",
    ],
    "dr": [
        "SRResNet_DR",
        "SRResNet_mix",
        "SRResNet_MIO",
        "RCAN_DR",
        "RCAN_mix",
        "SwinIR_DR",
        "SwinIR_mix",
        "SwinIR_MIO",
    ],
}
DEMO = {"sr": ["EDSR", "SRResNet"], "dn": ["DnCNN", "RCAN_DN"], "dr": ["SRResNet_DR", "MPRNet_DR"]}
TASK_ARGS = {"sr": ["task=sr", "task.scale=4"], "dn": ["task=dn", "task.sigma=50"], "dr": ["task=dr"]}
STUDIES = {
    "receptive_field": [("rf", "sr", RF)],
    "channel_attention": [("ca", "sr", CA)],
    "multitask": [(f"mt_{t}", t, names) for t, names in MT.items()],
    "demo": [(f"demo_{t}", t, names) for t, names in DEMO.items()],
}
#: a run of the paths only: one image, one ROI, a 64 px crop, a coarse estimator
TINY = ["image_crop=64", "roi_place.size=16", "cem.block=16", "cem.coarse=2", "cem.fine=3"]
#: the studies that are one of the paper's findings (``cem-report --finding NAME``, of the same name)
FINDINGS = ("receptive_field", "channel_attention", "multitask")


#: ``--names``: only these networks of the chosen studies (None: all)
ONLY: set[str] | None = None


def _names(study: str | None) -> list[tuple[str, str, str, list[str]]]:
    """(study, sweep suffix, task, names) of the chosen studies (``--names``: only those)."""
    chosen = STUDIES if study is None else {study: STUDIES[study]}
    out = []
    for s, parts in chosen.items():
        for suffix, task, names in parts:
            kept = [n for n in names if ONLY is None or n in ONLY]
            if kept:
                out.append((s, suffix, task, kept))
    return out


def _stamp(png: Path) -> None:
    """Write STAND-INS across a report figure of stand-in networks, so that it cannot pass for a result."""
    import matplotlib  # lazy: only the report of stand-ins draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = plt.imread(png)
    h, w = img.shape[:2]
    fig = plt.figure(figsize=(w / 100, h / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img)
    ax.axis("off")
    ax.text(
        0.5,
        0.5,
        "STAND-INS: random weights, not results",
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=max(8, min(w // 36, h // 6)),
        color="red",
        alpha=0.45,
        rotation=0,
        weight="bold",
    )
    fig.savefig(png, dpi=100)
    plt.close(fig)


def sweeps(models: Path, study: str | None = None, tiny: bool = False) -> list[Sweep]:
    """The cem-lab sweeps of the studies over the networks whose files are in ``models`` (and that cem_lab builds
    here: an optional package it needs is installed)."""
    out = []
    for _, suffix, task, names in _names(study):
        present = [
            n
            for n in names
            if entry(n).build != "none" and not missing_package(entry(n)) and (models / entry(n).file).is_file()
        ]
        if not present:
            continue
        pop = population(IMAGES[:1] if tiny else IMAGES, 64 if tiny else CROP, 1 if tiny else 2)
        pop = [p for p in pop if not p.startswith("roi_place.size")] + (TINY if tiny else ["roi_place.size=32"])
        out.append(
            Sweep(
                f"study_paper_{suffix}{'_tiny' if tiny else ''}",
                present,
                ["model=authors", f"model.dir={models}", *TASK_ARGS[task]],
                {"*": 60.0},
                units=1 if tiny else len(IMAGES) * 2,
                population=pop,
                model_key="model.name",
            )
        )
    return out


def _forward_s(name: str, models: Path, task: str, device: str) -> float:
    """Seconds of one forward pass of ``name`` on one input of the population's size, measured on ``device``."""
    scale = 4 if task == "sr" else 1
    net = load_authors_model(name, models, scale=scale).to(device)
    x = torch.rand(1, 3, CROP // scale, CROP // scale, device=device)
    with torch.inference_mode():
        net(x)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        net(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return time.perf_counter() - t0


def plan(models: Path, study: str | None, device: str, measure: bool) -> int:
    """Per study: which checkpoints are present, missing or not built yet; the passes a map needs at most, and
    the time on ``device`` from a forward pass measured there (``measure``)."""
    if not models.is_dir():
        print(f"paper.py: --models {models} is not a folder (the authors' CEM_Demo/ModelZoo/models/)", file=sys.stderr)
        return 2
    if measure:  # a device this machine lacks: one line before any network is read (not a failure per network)
        try:
            check_device(device)
        except InputError as err:
            said = str(err).split(": ", 1)[-1].replace("device=", "--device ")
            print(f"paper.py: --device {device}: {said}", file=sys.stderr)
            return 2
    blocks = (CROP // 8) ** 2
    passes = blocks * (3 + 50)  # every block through the coarse and the fine stage: a map's most
    units = len(IMAGES) * 2
    standin = (models / STANDIN_MARK).is_file()
    print(f"the paper's networks in {models}{' (STAND-INS: random weights, paths only)' if standin else ''}")
    print(
        f"population: {len(IMAGES)} held-out images x 2 placed ROIs, {CROP} px, block 8, T_c 3, T_f 50: "
        f"a map needs at most {passes:,} passes ({blocks} blocks x 53); local networks need fewer (crop mode)"
    )
    total, measured = 0.0, set()
    for s, suffix, task, names in _names(study):
        print(f"\n{s} ({suffix}, {task}):")
        for n in names:
            e = entry(n)
            path = models / e.file
            if e.build == "none":
                print(f"  {n:18s} not built by cem_lab yet ({e.why})")
                continue
            if not path.is_file():
                print(f"  {n:18s} MISSING {e.file}")
                continue
            if missing_package(e):
                print(f"  {n:18s} present, not loadable here: {missing_package(e)}")
                continue
            line = f"  {n:18s} present  {e.parameters or 0:>11,} parameters"
            if e.package:
                line += f"  ({e.package}: {e.licence})"
            if measure:
                key = (n, task)
                try:
                    fs = _forward_s(n, models, task, device)
                except Exception as err:  # noqa: BLE001 (a plan reports every network, whatever fails)
                    print(f"{line}  cannot run: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                    continue
                per_map = passes * fs
                if key not in measured:
                    total += per_map * units
                    measured.add(key)
                line += f"  {fs:.3f} s a pass on {device} (measured) -> at most {_hms(per_map)} a map"
            print(line)
    if measure:
        print(
            f"\nat most {_hms(total)} on {device} for all maps of the present networks, one at a time (measured here)"
        )
    else:
        print("\n(add --measure to time one forward pass of each present network on --device)")
    return 0


def standins(models: Path, study: str | None = None) -> int:
    """Seeded random-weight files of every network the studies (or ``study``) use, in the authors' layout and
    names."""
    models.mkdir(parents=True, exist_ok=True)
    names = sorted({n for *_, ns in _names(study) for n in ns})
    written = []
    for k, n in enumerate(names):
        e = entry(n)
        if e.build == "none":
            continue
        torch.manual_seed(k)
        if e.build == "own":
            module, _, cls = str(e.arch).rpartition(".")
            state = getattr(importlib.import_module(module), cls)(**e.kwargs).state_dict()
        else:  # spandrel's networks: tensors of the authors' keys and shapes (the fixtures of the tests)
            fx = json.loads((FIXTURES / f"{e.fixture}.json").read_text())
            state = {
                key: torch.zeros(shape, dtype=torch.long)
                if key.endswith("relative_position_index")
                else torch.randn(shape) * 0.02
                for key, shape in fx["state_dict"]
            }
        key = file_key(e)  # BasicSR's params, MPRNet's state_dict, or a plain state dict
        torch.save({key: state} if key else state, models / e.file)
        written.append(e.file)
    write_text(
        models / STANDIN_MARK,
        "STAND-INS: seeded random weights in the authors' layout and file names, written by "
        "`python experiments/paper.py standins`. They prove paths only; their maps mean nothing.\n"
        + "".join(f"{f}\n" for f in written),
    )
    print(f"{len(written)} stand-in files in {models} ({STANDIN_MARK} marks the folder)")
    return 0


def _standin_runs(folder: Path) -> bool:
    for s in folder.glob("*/summary.json"):
        ckpt = (json.loads(s.read_text()).get("model_info") or {}).get("checkpoint")
        if ckpt and (Path(ckpt).parent / STANDIN_MARK).is_file():
            return True
    return False


def _cem_report(folders: list[Path], out: Path, finding: str | None) -> subprocess.CompletedProcess:
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "cem_lab.cli.report", *map(str, folders), "--out", str(out)]
    return subprocess.run(
        [*cmd, *(["--finding", finding] if finding else [])], cwd=ROOT, capture_output=True, text=True
    )


def report(study: str | None, tiny: bool) -> int:
    """cem-report per study over its sweep folders, into reports/paper_<study>/, with the study's finding page
    (finding_<study>.md) where it is one of the paper's findings; under a banner, and with every figure stamped,
    when the runs are of stand-ins. A finding the runs cannot make (too few networks) is said in paper.md."""
    rc = 0
    for s in STUDIES if study is None else [study]:
        folders = [SWEEPS / f"study_paper_{suffix}{'_tiny' if tiny else ''}" for _, suffix, _, _ in _names(s)]
        folders = [f for f in folders if f.is_dir()]
        if not folders:
            print(f"{s}: no runs yet (python experiments/paper.py run --study {s})", file=sys.stderr)
            continue
        out = REPORTS / f"paper_{s}{'_tiny' if tiny else ''}"
        finding = s if s in FINDINGS else None
        proc = _cem_report(folders, out, finding)
        refused = ""
        if finding and proc.returncode == 2:  # a user error: the runs do not hold the finding's networks
            refused = (proc.stderr.strip().splitlines() or ["cem-report refused it"])[-1]
            proc = _cem_report(folders, out, None)
        if proc.returncode != 0:
            print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
            rc = proc.returncode
            continue
        standin = any(_standin_runs(f) for f in folders)
        banner = (
            "> **STAND-INS: these maps are of random-weight networks written by `paper.py standins`. They prove "
            "that every path runs; their numbers mean nothing and are not results.**\n\n"
            if standin
            else ""
        )
        finding_md = out / f"finding_{finding}.md"
        if finding_md.is_file():
            write_text(finding_md, banner + finding_md.read_text())
        elif finding:
            print(f"{s}: no finding page: {refused}", file=sys.stderr)
        pages = [*([finding_md.name] if finding_md.is_file() else []), "study.md", "runs.md"]
        body = "\n\n".join((out / f).read_text().removeprefix(banner) for f in pages if (out / f).is_file())
        if refused:
            body = f"The finding's page (finding_{finding}.md) was not written: {refused}\n\n{body}"
        if standin:
            for png in sorted((out / "figures").glob("*.png")):
                _stamp(png)
        write_text(
            out / "paper.md", f"# The paper's {s.replace('_', ' ')} study on the paper's networks\n\n{banner}{body}"
        )
        print(f"{s}: {out / 'paper.md'}{' (stand-ins)' if standin else ''}")
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("cmd", choices=("plan", "run", "report", "standins"))
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every map (e.g. device=cuda)")
    ap.add_argument("--models", type=Path, help="the folder of the authors' checkpoints")
    ap.add_argument("--study", choices=sorted(STUDIES), help="one study (default: all)")
    ap.add_argument("--tiny", action="store_true", help="one image, one ROI, 64 px, a coarse estimator: paths only")
    ap.add_argument("--device", default="cpu", help="plan: the device to time a forward pass on (cpu, cuda)")
    ap.add_argument("--measure", action="store_true", help="plan: time one forward pass of each present network")
    ap.add_argument("--parallel", type=int, default=1, help="run: maps at once (joblib); default 1")
    ap.add_argument("--names", help="only these networks of the studies, comma-separated (e.g. EDSR-32-16,RCAN)")
    args = ap.parse_intermixed_args(argv)  # key=value overrides before or after the options
    global ONLY
    if args.names:
        ONLY = {n.strip() for n in args.names.split(",") if n.strip()}
        for n in sorted(ONLY):
            try:
                entry(n)
            except AuthorsModelError as err:  # an unknown name: one line, with the nearest
                ap.error(f"--names: {err}")
    if args.cmd in ("plan", "run", "standins") and args.models is None:
        ap.error(f"{args.cmd} needs --models FOLDER (the authors' CEM_Demo/ModelZoo/models/)")
    if args.cmd == "standins":
        return standins(args.models.resolve(), args.study)
    if args.cmd == "plan":
        return plan(args.models.resolve(), args.study, args.device, args.measure)
    if args.cmd == "run":
        todo = sweeps(args.models.resolve(), args.study, args.tiny)
        if not todo:
            print(f"paper.py: no checkpoint of the chosen studies in {args.models}", file=sys.stderr)
            return 2
        return run("paper", todo, args.overrides, args.parallel, "the paper's networks")
    return report(args.study, args.tiny)


if __name__ == "__main__":
    sys.exit(main())
