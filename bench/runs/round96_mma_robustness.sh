#!/usr/bin/env bash
# Round 96: how much of the MMA matmul (and the SIMT one) is Dawn's robustness transform (index
# clamps on every dynamic access)? The probe with and without Dawn's disable_robustness toggle.
set -u
python3 bench/probe_mma_matmul.py --out $OUT/probe_gu.json 2>&1 | grep -v "^Warning"
python3 bench/probe_mma_matmul.py --toggles disable_robustness --out $OUT/probe_gu_norobust.json 2>&1 | grep -v "^Warning"
