#!/usr/bin/env bash
# Study 1 (method doc 6.1): does a larger receptive field help? CEMs of the embedded zoo's FSRCNN and
# EDSR families (4 depths x 3 widths each, SR x4) on the embedded image, then the study report:
# reports/receptive_field/{runs.csv,runs.md,figures/} (CE-map grid, shares, reach vs PSNR,
# depth x width heatmaps). Extra arguments go to every cem-lab job, e.g.
#   bash experiments/receptive_field.sh launcher=joblib          # parallel CPU jobs
#   bash experiments/receptive_field.sh device=free_gpu launcher=joblib hydra.launcher.n_jobs=8
# Rerunning skips finished jobs and resumes interrupted ones (runs/sweeps/cem/receptive_field/).
set -uo pipefail
status=0   # a failed job does not stop the other sweeps or the report; the exit status says it
cem-lab -m experiment=receptive_field sweep_name=receptive_field "$@" || status=1
cem-report runs/sweeps/cem/receptive_field --out reports/receptive_field || status=1
exit $status
