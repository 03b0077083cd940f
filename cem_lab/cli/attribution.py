"""`cem-attribution`: the CEM beside gradient attributions of the same model, input, ROI and blocks.

    cem-attribution model=dncnn model.checkpoint=PATH task=dn image=PATH roi=[152,96,32] cem.block=8
    cem-attribution attribution.methods=[lam,cem] attribution.cem_run=runs/cem/<a cem-lab run>

Every `cem-lab` override works (conf/attribution.yaml reuses its config groups), plus the
``attribution.*`` keys. The run:

1. builds the model, task and degraded input exactly as `cem-lab` does
   (:func:`cem_lab.compose.prepare.prepare`), and computes the CEM into ``<run folder>/cem/`` (the CEM's
   own run folder format, checkpointed: a rerun resumes it) or reads a finished `cem-lab` run
   (``attribution.cem_run=PATH``, refused unless its ROI, block, image size and input match);
2. runs LAM, integrated gradients (Captum) and saliency on the job's input, model, ROI and block
   grid (:mod:`cem_lab.attribution`); a model without gradients is refused, the CEM still works;
3. checks every map's block ranking (ROI blocks left out): deletion and insertion curves of the
   run's ROI metric with the blocks replaced by LV interventions (in distribution) and by each
   ablation baseline (:class:`~cem_lab.attribution.BlockReplacementMetric`), their areas; the
   Spearman rank correlation of every pair of maps (absolute values; the CEM's thresholded effect);
   the sign test of the CEM's negative blocks; the share of the image each map marks (the fewest
   blocks outside the ROI that hold 50 % / 90 % of its mass);
4. writes ``attribution.npz``, ``attribution.json`` (read them with
   :func:`cem_lab.analysis.attribution.load_attribution`), ``figures/attribution_panel.png`` and
   ``figures/deletion_curves.png``, and prints a short report.

This module runs the program: the config is read, checked and built in :mod:`cem_lab.compose.attribution`;
the computing and the writing live in :mod:`cem_lab.attribution.study` (and its parts study_methods,
study_output).

Nothing is written before every input is accepted (the gradient maps are computed before that,
so that a refusal of theirs leaves nothing either); the run folder is locked for the whole run.
"""

from __future__ import annotations

import math
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cem_lab.attribution.study import AttributionOutcome, compute_attribution
from cem_lab.attribution.study_output import LOG_FILE, PROGRAM, SHORT, format_share
from cem_lab.bookkeeping.clean_errors import job_failed, resumable, run_cli
from cem_lab.bookkeeping.run_folder import accept_run_folder, buffered_log, close_log_file
from cem_lab.compose.attribution import prepare_attribution
from cem_lab.compose.devices import device_lease
from cem_lab.compose.overrides import check_command_line
from cem_lab.compose.resolvers import defaults_in_help, register_resolvers
from cem_lab.folder_lock import hold_run_folder

register_resolvers()  # before Hydra composes the config (the run folder's name)


# --- the run ----------------------------------------------------------------------------------------------
def run(cfg: DictConfig, output_dir: Path, *, memory=None) -> AttributionOutcome:
    """Check everything, then (folder locked) write the config, compute and write the results."""
    output_dir = Path(output_dir)
    with hold_run_folder(output_dir, what=PROGRAM):
        with nullcontext(memory) if memory is not None else buffered_log() as kept:
            plan = prepare_attribution(cfg, output_dir)  # every refusal happens here, before anything is written
            handler = accept_run_folder(cfg, output_dir, kept, log_name=LOG_FILE)
        try:
            return compute_attribution(plan, output_dir)
        finally:
            close_log_file(handler)


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, fmt)


def report(outcome: AttributionOutcome) -> str:
    """The console lines of a finished run."""
    s, folder = outcome.summary, outcome.folder
    unit = s["metric"]["unit"]
    methods = s["methods"]
    lines = [
        f"attribution written to {folder}",
        f"  ROI {s['metric']['name']} before intervention: {_num(s['baseline_metric'], '.3f')} {unit}; "
        f"{s['blocks_ranked']} blocks outside the ROI ranked by {', '.join(SHORT[m] for m in methods)}",
    ]
    cem = s["settings"].get("cem") or {}
    if cem:
        lines.append(f"  CEM: {'computed in' if cem['source'] == 'computed' else 'read from'} {cem['folder']}")
    if s["faithfulness"]:
        lines.append(
            f"  AUC of the ROI {s['metric']['name']} ({unit}), deletion (lower = more faithful) / "
            "insertion (higher = more faithful):"
        )
        width = max(len(n) for n in s["faithfulness"])
        for name, entry in s["faithfulness"].items():
            parts = [
                f"{SHORT[m]} {_num(v['deletion_auc'], '.3f')}/{_num(v['insertion_auc'], '.3f')}"
                for m, v in entry["methods"].items()
            ]
            lines.append(f"    {name:<{width}}  " + "   ".join(parts))
    if s["rank_correlation"]:
        parts = [
            f"{'~'.join(SHORT[m] for m in pair.split('~'))} {_num(v['rho'], '+.2f')}"
            for pair, v in s["rank_correlation"].items()
        ]
        lines.append("  rank correlation (Spearman, |map|, outside the ROI): " + ", ".join(parts))
    marks = [f"{SHORT[m]} {format_share(v['50'])}/{format_share(v['90'])}" for m, v in s["shares_marked"].items()]
    lines.append("  share of the image marked (blocks holding 50%/90% of the mass): " + ", ".join(marks))
    if s.get("diffusion_index"):
        di = [
            f"{SHORT[m]} {_num(v['blocks'], '.1f')}"
            + (f" ({_num(v['pixels'], '.1f')} per pixel)" if v["pixels"] is not None else "")
            for m, v in s["diffusion_index"].items()
        ]
        lines.append("  diffusion index (LAM's DI, blocks outside the ROI): " + ", ".join(di))
    if s["sign_test"]:
        parts = []
        for name, t in s["sign_test"].items():
            if not t["negative_blocks"]:
                parts.append(f"{name}: no negative block")
            else:
                parts.append(f"{name}: {t['raised']}/{t['negative_blocks']} raised it (p {_num(t['pvalue'], '.3g')})")
        lines.append("  sign test (the CEM's negative blocks replaced one at a time): " + "; ".join(parts))
    for key in ("lam", "ig"):
        c = s["completeness"].get(key)
        if c:
            lines.append(
                f"  {SHORT[key]} completeness: sum {_num(c['attribution_sum'], '.4g')} vs objective change "
                f"{_num(c['objective_change'], '.4g')} (delta {_num(c['delta'], '.2e')})"
                + ("; more than 1% off: raise attribution.ig.steps" if c.get("warning") else "")
            )
    figs = s.get("figures") or {}
    shown = ", ".join(str(folder / p) for p in figs.values())
    lines.append(f"  figures: {shown}" if figs else "  figures: none (figures=false)")
    return "\n".join(lines)


def command_line() -> str:
    """The command that started this process, for the run folder's lock (who holds a busy folder)."""
    prog = Path(sys.argv[0]).name if sys.argv else PROGRAM
    if prog in ("attribution.py", "__main__.py", "-c", ""):
        prog = PROGRAM
    return " ".join([prog, *map(shlex.quote, sys.argv[1:])])


def execute(cfg: DictConfig, folder: Path) -> AttributionOutcome:
    """Lock ``folder``, run, print the report."""
    folder = Path(folder)
    with buffered_log() as memory, hold_run_folder(folder, what=PROGRAM, command=command_line()):
        check_command_line(cfg)  # a key added with + that nothing reads: refused before anything is read or written
        with device_lease(cfg.device) as device:
            if device != cfg.device:
                cfg.device = device
            outcome = run(cfg, folder, memory=memory)
    print(report(outcome), flush=True)
    return outcome


@hydra.main(version_base="1.3", config_path="pkg://cem_lab.conf", config_name="attribution")
def _main(cfg: DictConfig) -> Any:
    hc = HydraConfig.get()
    folder = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    # Ctrl-C: the folder keeps the CEM computed so far (checkpointed), and the same command resumes it
    with resumable(Path(str(hc.sweep.dir)) if multirun else folder):
        try:
            execute(cfg, folder)
            return {"status": "done", "folder": str(folder)}
        except Exception as err:  # one job's failure is reported, the others go on
            return job_failed(PROGRAM, err, folder, multirun)


def main() -> None:
    """The console script ``cem-attribution``."""
    run_cli(defaults_in_help(_main), PROGRAM, resumes=True)


if __name__ == "__main__":
    main()
