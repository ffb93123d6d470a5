#!/usr/bin/env bash
# Round 69: the persistent layers on the other presets' shapes (SmolLM2-135M: Llama, 9 heads
# over 3 KV heads, no QKV bias; Llama-3.2-1B: hidden 2048, off by default as a wide model),
# Dawn, per kernel against the default and 264 workgroups.
set -u
for p in smollm2-135m llama-3.2-1b; do
  timeout 250 python3 -m webgpu_llm.cli.main bench --preset $p --dtype f16,q4_1 --backend dawn --persist 0,264 --n-pp 0 \
    --out $OUT/round69_$p.json 2>&1 | grep -v Warning | grep -v "^building\|^  tg" | grep -v "^| model\|^| ---"
done
