#!/usr/bin/env bash
# Round 2: decode kernel-shape sweeps (bench/sweep_decode.py) per backend and weight type.
set -u
S="timeout 150 python3 bench/sweep_decode.py"
$S --preset qwen2.5-0.5b --dtype f16,q4_0 --backend dawn --out $OUT/sweep_05b_dawn.json 2>&1 | grep -v '^{'
$S --preset qwen2.5-0.5b --dtype f16 --backend wgpu --out $OUT/sweep_05b_wgpu.json 2>&1 | grep -v '^{'
$S --preset qwen2.5-1.5b --dtype f16,q8_0 --backend dawn --out $OUT/sweep_15b_dawn.json 2>&1 | grep -v '^{'
cat $OUT/sweep_*.json | python3 -c "import json,sys; [print(r['backend'], r['preset'], r['dtype'], r['tuning'], r['attn_chunk'], round(r['step_gpu_us']), round(r['tg64_tok_s'])) for f in sys.stdin.read().replace('][',']\n[').split('\n') if f.strip() for r in json.loads(f)]"
