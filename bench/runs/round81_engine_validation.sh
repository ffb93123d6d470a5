#!/usr/bin/env bash
# Round 81: does Dawn's skipped command validation (round 78, now the default) move the
# engine? Expected: no (the decode is GPU-bound, its CPU encode ~57-200 µs a token); the
# profile's CPU encode per token should drop. 0.5B f16 and q4_0 on Dawn, validation on / off
# alternated twice, tg128 and pp512, then --profile once each way.
set -u
for i in 1 2; do
  for v in 1 0; do
    WEBGPU_LLM_VALIDATE=$v timeout 150 python3 -m webgpu_llm.cli.main bench --preset qwen2.5-0.5b --dtype f16,q4_0 \
      --backend dawn --reps 3 --out $OUT/validate${v}_$i.json 2>&1 | grep -v Warning | grep "^| " | sed "s/^/validate=$v $i /"
  done
done
for v in 1 0; do
  WEBGPU_LLM_VALIDATE=$v timeout 120 python3 -m webgpu_llm.cli.main bench --preset qwen2.5-0.5b --dtype f16 --backend dawn \
    --n-pp 0 --profile --json --out $OUT/profile_validate$v.json > /dev/null 2>&1
  python3 -c "
import json; p = json.load(open('$OUT/profile_validate$v.json'))['engine'][0]['profile']
print('validate=$v profile: CPU encode', round(p['cpu_encode_us']), 'µs/token, GPU', round(p['gpu_us']), 'µs/token')"
done
