#!/usr/bin/env bash
# Study 3 (method doc 6.3): does multi-task training push a network toward local information?
# CEMs of SRResNet and SwinLite trained on one task each and on the mix of SR, DN and DR (embedded
# zoo), evaluated on each task, then one report: reports/multitask/ (with the single vs mixed
# comparison). Extra arguments go to every cem-lab job, e.g.
#   bash experiments/multitask.sh launcher=joblib
set -uo pipefail
status=0   # a failed job does not stop the other sweeps or the report; the exit status says it
for task in sr dn dr; do
  cem-lab -m experiment=multitask_$task sweep_name=multitask_$task "$@" || status=1
done
cem-report runs/sweeps/cem/multitask_sr runs/sweeps/cem/multitask_dn runs/sweeps/cem/multitask_dr \
    --out reports/multitask || status=1
exit $status
