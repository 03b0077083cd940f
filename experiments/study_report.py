"""The write-up of one study: ``cem-report --finding NAME`` over its sweeps, then
``experiments/results/NAME.md`` (the finding's markdown, as the report printed it, under a header with
the command, the population and the time the maps took here) and its figures as small PNGs in
``experiments/results/NAME/``."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from study_runner import RESULTS, ROOT, SWEEPS

from cem_lab.io import write_text

REPORTS = ROOT / "reports"


def _time_taken(folders: Sequence[Path]) -> tuple[int, float]:
    n, total = 0, 0.0
    for sweep in folders:
        for s in sweep.glob("*/summary.json"):
            if not (s.parent / "done.json").is_file():
                continue
            t = json.loads(s.read_text()).get("timings") or {}
            n += 1
            total += float(t.get("run_s", 0.0)) + float(t.get("prepare_s", 0.0))
    return n, total


def write_study(name: str, sweeps: Sequence[str], notes: str = "") -> int:
    """``notes``: the reading of the numbers, the confounds and what was left out, written by hand from the
    tables above it (appended under its own heading)."""
    folders = [SWEEPS / s for s in sweeps if (SWEEPS / s).is_dir()]
    if not folders:
        print(f"{name}: no sweep folder yet under {SWEEPS} (run: python experiments/{name}.py run)", file=sys.stderr)
        return 2
    out = REPORTS / name
    cmd = [sys.executable, "-m", "cem_lab.cli.report", *map(str, folders), "--out", str(out), "--finding", name]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-4000:] + proc.stderr[-4000:], file=sys.stderr)
        return proc.returncode
    finding = (out / f"finding_{name}.md").read_text()
    maps, seconds = _time_taken(folders)
    fig_dir = RESULTS / name
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in fig_dir.glob("*.png"):
        old.unlink()
    for png in sorted((out / "figures").glob("finding_*.png")) + sorted((out / "figures").glob("teaser.png")):
        shutil.copyfile(png, fig_dir / png.name)
    body = finding.replace("](figures/", f"]({name}/")
    rel = [str(f.relative_to(ROOT)) for f in folders]
    head = (
        f"# {name.replace('_', ' ')}: the paper's finding at the embedded scale\n\n"
        f"Made by `python experiments/{name}.py run` then `python experiments/{name}.py report`, which runs "
        f"`cem-report {' '.join(rel)} --out reports/{name} --finding {name}` and copies its "
        f"`finding_{name}.md` here (the numbers below are the ones it printed; the CSVs beside it in "
        f"`reports/{name}/` hold every interval). Machine: {platform.machine()}, 2 CPU cores, one thread per map. "
        f"The {maps} maps took {seconds / 60:.0f} min of compute: each map's preparation and interventions as its "
        "run folder records them across resumes (a job's start, model loading and figures not counted), whether "
        "it ran alone or beside another map or a training.\n\n"
    )
    text = head + body + (f"\n## Reading, confounds and what is left out\n\n{notes.strip()}\n" if notes else "")
    write_text(RESULTS / f"{name}.md", text)
    print(text)
    return 0
