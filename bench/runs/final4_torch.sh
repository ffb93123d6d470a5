#!/usr/bin/env bash
# Third session's torch-device table: transformers generate on the webgpu device (Qwen2.5-0.5B shape), Dawn.
set -u
timeout 560 python3 bench/torch_generate.py --backend dawn --dtypes f32,f16 --runs 5 --out $OUT/torch_generate3.json 2>&1 | grep -v Warning | tail -7
python3 -c "
import json; d = json.load(open('$OUT/torch_generate3.json'))
for r in d['results']:
    g = r.get('decode_step_gpu')
    print(r['dtype'], r['mode'], 'launches/run', r['launches_per_run'], 'fallbacks', r['fallback_report'], 'step GPU us', g and round(g['gpu_us']))
"
