#!/usr/bin/env bash
# Round 26: row blocks per decode mat-vec workgroup (one staged/normalised/quantized x for more rows).
set -u
timeout 560 python3 bench/sweep_decode.py --blocks --preset qwen2.5-0.5b --dtype f16,q4_0 --backend dawn,wgpu --out $OUT/blocks_05b.json 2>&1 | grep -v '^{'
python3 -c "
import json
for r in json.load(open('$OUT/blocks_05b.json')):
    print(r['backend'], r['dtype'], r['blocks'], 'step', round(r['start_step_gpu_us']), '->', round(r['step_gpu_us']), 'us; tg64', round(r['tg64_tok_s_default']), '->', round(r['tg64_tok_s']))
"
