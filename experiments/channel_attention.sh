#!/usr/bin/env bash
# Study 2 (method doc 6.2): is channel attention (a global mechanism) useful, in SR and in DN?
# CEMs of the embedded zoo's seven RCAN variants on SR x4 and on DN sigma 50, then one report over
# both tasks: reports/channel_attention/. Extra arguments go to every cem-lab job, e.g.
#   bash experiments/channel_attention.sh launcher=joblib
# Variants with global context (global, half, adaptive pooling) run on the whole image (no crop).
set -uo pipefail
status=0   # a failed job does not stop the other sweeps or the report; the exit status says it
cem-lab -m experiment=channel_attention_sr sweep_name=channel_attention_sr "$@" || status=1
cem-lab -m experiment=channel_attention_dn sweep_name=channel_attention_dn "$@" || status=1
cem-report runs/sweeps/cem/channel_attention_sr runs/sweeps/cem/channel_attention_dn \
    --out reports/channel_attention || status=1
exit $status
