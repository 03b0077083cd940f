"""The figure gallery: each kind of figure the paper draws with CEM results, the command that draws
cem_lab's counterpart, and the counterpart itself (``experiments/figures.md``, small PNGs in
``experiments/results/gallery/``).

    python experiments/gallery.py      # after `python experiments/multitask.py run` and
                                       # `python experiments/channel_attention.py run` (their reports too)

Every figure comes from finished run folders of the embedded studies (no map is recomputed here); every
command is run as printed, from the repository's root, and quoted in figures.md as it ran. The unit shown
(image x ROI) is the one with the most positive CE over the models, as the findings' figures choose it.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from study_runner import RESULTS, ROOT, SWEEPS

from cem_lab.analysis.finding_figures import chosen_unit
from cem_lab.analysis.paper_layouts import find_runs
from cem_lab.io import write_text

GALLERY = RESULTS / "gallery"
DPI = "80"  # small PNGs for the repository; the layouts are in inches, so a paper's --dpi 300 only adds pixels


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _run(argv: list[str]) -> str:
    """Run one console script (as ``python -m cem_lab.cli.X`` under the name its users type) and return the
    command as a user types it."""
    program, args = argv[0], argv[1:]
    module = {"cem-figure": "figure", "cem-report": "report"}[program]
    proc = subprocess.run(
        [sys.executable, "-m", f"cem_lab.cli.{module}", *args], cwd=ROOT, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"{program} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return shlex.join(argv)


def _unit(sweep: Path) -> tuple[str, str]:
    """(image glob, ROI) of the unit the findings show for ``sweep``."""
    table = find_runs([sweep]).table
    unit = chosen_unit(table)  # "IMAGE roi R"
    image, roi = unit.split(" roi ", 1)
    return image.split("_crop")[0] + "*", roi


def main() -> int:
    need = ["study_mt_sr", "study_mt_dn", "study_mt_dr"]
    missing = [s for s in need if not (SWEEPS / s).is_dir()]
    if missing:
        print(
            f"gallery: no sweep {', '.join(missing)} under {SWEEPS}; run the multi-task study first "
            "(python experiments/multitask.py run; python experiments/channel_attention.py run for its rows)",
            file=sys.stderr,
        )
        return 2
    ca = all((SWEEPS / f"study_ca_{t}").is_dir() for t in ("sr", "dn"))  # the rows' preferred example
    GALLERY.mkdir(parents=True, exist_ok=True)
    for old in GALLERY.glob("*.png"):
        old.unlink()
    sw = {s: _rel(SWEEPS / s) for s in need + (["study_ca_sr", "study_ca_dn"] if ca else [])}
    rows = ["ca_sr_row", "ca_dn_row"] if ca else ["mt_sr_row", "mt_dn_row"]
    out = {k: _rel(GALLERY / f"{k}.png") for k in ("panel", "teaser", "mt_dn_pies", *rows)}
    image, roi = _unit(SWEEPS / "study_mt_dn")
    where = ["--where", f"image={image}", "--where", f"roi={roi}"]
    cmds = {
        "panel": _run(
            ["cem-figure", "panel", sw["study_mt_dn"], "--where", "model=rcan_dn", *where]
            + ["--out", out["panel"], "--dpi", DPI]
        ),
        "teaser": _run(
            ["cem-figure", "teaser", sw["study_mt_sr"], sw["study_mt_dn"], sw["study_mt_dr"]]
            + ["--where", "model=srresnet_mixed", *where, "--out", out["teaser"], "--dpi", DPI]
        ),
        "mt_dn_pies": _run(["cem-figure", "pie", sw["study_mt_dn"], *where, "--out", out["mt_dn_pies"], "--dpi", DPI]),
    }
    prefix = "study_ca" if ca else "study_mt"
    row_image, row_roi = _unit(SWEEPS / f"{prefix}_dn")
    row_where = ["--where", f"image={row_image}", "--where", f"roi={row_roi}"]
    for key, task in zip(rows, ("sr", "dn")):
        cmds["rows"] = cmds.get("rows", []) + [
            _run(
                ["cem-figure", "row", sw[f"{prefix}_{task}"], *row_where, "--context", "--out", out[key]]
                + ["--dpi", DPI]
            )
        ]
    report = ROOT / "runs" / "reports" / "gallery_mt_dn"
    cmds["report"] = _run(["cem-report", sw["study_mt_dn"], "--out", _rel(report), "--dpi", DPI, "--latex"])
    for name in ("cem_grid", "shares", "study_intervals", "distance_profile", "reach_vs_psnr"):
        shutil.copyfile(report / "figures" / f"{name}.png", GALLERY / f"report_{name}.png")
    latex = (report / "study.tex").read_text().split("\\end{table}")[0] + "\\end{table}\n"
    write_text(ROOT / "experiments" / "figures.md", _markdown(cmds, out, rows, latex, ca))
    print(f"wrote experiments/figures.md and {len(list(GALLERY.glob('*.png')))} PNGs in {_rel(GALLERY)}")
    return 0


def _img(path: str, alt: str) -> str:
    return f"![{alt}]({Path(path).relative_to('experiments')})"


def _markdown(cmds: dict, out: dict[str, str], rows: list[str], latex: str, ca: bool) -> str:
    g = "results/gallery"
    which = (
        "Here the channel-attention variants of RCAN on SR and on DN, the paper's contrast"
        if ca
        else "Here the multi-task study's networks on SR and on DN"
    )
    row_cmds = "\n".join(cmds["rows"])
    row_imgs = "\n\n".join(_img(out[k], k.replace("_", " ")) for k in rows)
    return f"""# Figure gallery: the paper's figures and cem_lab's counterparts

Each section names a kind of figure that the paper (Hu et al., "Interpreting Low-level Vision Models with
Causal Effect Maps", TPAMI 2025) and its authors' repository show with CEM results (the method doc's sections 5
and 6 list what a run and each study report), the command that draws cem_lab's counterpart, and that figure. Made by `python experiments/gallery.py` from the run folders of the embedded studies
(`python experiments/multitask.py run`, `python experiments/channel_attention.py run`): small networks trained
here on 128 px crops, at the paper's estimator settings (block 8, T_c 3, T_f 50). They show what the figures
look like, not the paper's numbers; the findings with their intervals are in `experiments/results/*.md`.
Every command is quoted as it ran from the repository's root; drawn at `--dpi {DPI}` to keep the repository
small (a paper takes `--format pdf` or `--dpi 300`; the layout is in inches, so only the pixels change).

## One map: input, restored image with the ROI, the map with its colour bar, the pie

What every map reports: the degraded input, the restored image with the ROI box (a zoomed inset added here),
the causal effect map (red helps the ROI, blue hurts it, the ROI green; the task's fixed colour range, the
actual min / max marked on the colour bar) and the pie of positive / negative / zero blocks. Every `cem-lab`
run draws it (`figures/cem_panel.png`); from run folders:

```bash
{cmds["panel"]}
```

{_img(out["panel"], "single-run panel")}

## Teaser: one network over several tasks

One network on SR, DN and DR, one row per task: input, restored with the ROI, the map, the pie (the authors'
repository shows its teaser this way, `teaser_CEM.png`).

```bash
{cmds["teaser"]}
```

{_img(out["teaser"], "teaser")}

## A row of models with their ROI PSNR (the receptive-field and channel-attention figures)

One map per model on one unit, the model above it, its ROI PSNR beneath, one colour bar for the row (so the
colours compare); `--context` starts the row with the degraded input and the ground truth around the ROI.
{which}:

```bash
{row_cmds}
```

{row_imgs}

## Pies side by side (the multi-task figures)

The blocks outside the ROI by effect sign, one pie per model, one legend; here single-task against mixed
training on DN:

```bash
{cmds["mt_dn_pies"]}
```

{_img(out["mt_dn_pies"], "pies")}

## Study plots with intervals (shares and distances against width, depth, variant or training)

The paper plots shares of positive / negative blocks and how far effects reach against the networks'
width, depth or variant. cem_lab draws them over a population of images x ROIs, each point with its 95 %
nested-bootstrap interval: `cem-report ... --finding <study>`, run by `python experiments/<study>.py report`
(these are the figures of `experiments/results/<study>.md`):

- channel attention, SR against DN per variant (paired differences with intervals):
  {_img("experiments/results/channel_attention/finding_ca_contrast.png", "channel attention contrast")}
- multi-task, mixed minus single-task per network and task:
  {_img("experiments/results/multitask/finding_mt_pairs.png", "multitask pairs")}
- multi-task, the share of |CE| by distance from the ROI with its band:
  {_img("experiments/results/multitask/finding_mt_profiles.png", "multitask profiles")}
- receptive field, effective distance, negative share and PSNR against depth per family and width, and
  effective distance against parameters: `experiments/results/receptive_field/finding_rf_trends.png` and
  `finding_rf_reach_vs_params.png` (drawn by `python experiments/receptive_field.py report` before the figure
  settings of this gallery; not redrawn in this session).

## A population's maps and statistics (any sweep)

`cem-report` on any sweep: every map with the task's colour range, the block shares, reach against PSNR, each
model's mean with its interval per metric, and the CE profile by distance:

```bash
{cmds["report"]}
```

{_img(f"experiments/{g}/report_cem_grid.png", "all maps")}

{_img(f"experiments/{g}/report_study_intervals.png", "intervals")}

{_img(f"experiments/{g}/report_distance_profile.png", "distance profile")}

{_img(f"experiments/{g}/report_shares.png", "shares")}

{_img(f"experiments/{g}/report_reach_vs_psnr.png", "reach against PSNR")}

`--latex` writes the same tables as booktabs LaTeX (`study.tex`, `runs.tex`); the first table of this one:

```latex
{latex.strip()}
```

## Attribution methods side by side (LAM, integrated gradients, saliency, CEM)

The paper compares the CEM with LAM. `cem-attribution` draws the methods on one ROI and block grid, with
deletion / insertion curves: `experiments/results/attribution/sr_monarch.png`, made by the command in
`experiments/results/attribution.md` (waifu2x photo x2; drawn before this gallery's figure settings and not
redrawn in this session).
"""


if __name__ == "__main__":
    sys.exit(main())
