#!/usr/bin/env bash
# Round 70: the defaults after round 69 (persistent layers asked for on every model on Dawn):
# the 1.5B must fall back with its per-kernel figures, Llama-3.2-1B f16 keep its gain. The
# seconds each model takes to build are printed (the failed attempt's cost).
set -u
for spec in "qwen2.5-1.5b f16,q8_0,q4_0" "llama-3.2-1b f16"; do
  set -- $spec
  /usr/bin/time -f "%e s for $1 $2" timeout 280 python3 -m webgpu_llm.cli.main bench --preset $1 --dtype $2 --backend dawn \
    --n-pp 0 --out $OUT/round70_$1.json 2>&1 | grep -v Warning | grep -v "^building\|^  tg\|^| model\|^| ---"
done
