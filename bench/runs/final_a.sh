#!/usr/bin/env bash
# Final table, part A: tg128 / pp512 of the engine, both backends, Qwen2.5 0.5B and 1.5B shapes
# in f32, f16, q8_0, q4_0; the 0.5B f16 decode profile; the unfused and per-dispatch ablation.
set -u
W="python3 -m webgpu_llm.cli.main"
for p in qwen2.5-0.5b qwen2.5-1.5b; do
  timeout 250 $W bench --preset $p --dtype f16,q8_0,q4_0,f32 --backend dawn,wgpu --reps 5 --out $OUT/bench_$p.json 2>&1 | grep -E "^\| [a-z]"
done
timeout 60 $W bench --preset qwen2.5-0.5b --dtype f16 --backend dawn,wgpu --profile --n-pp 0 --reps 3 --out $OUT/profile_05b_f16.json 2>/dev/null | grep -E "^profile|^\| matvec|^\| attention"
timeout 60 $W bench --preset qwen2.5-0.5b --dtype f16 --backend dawn,wgpu --no-fusion --n-pp 0 --reps 3 --out $OUT/unfused.json 2>/dev/null | grep -E "^\| qwen"
timeout 90 $W bench --preset qwen2.5-0.5b --dtype f16 --backend dawn,wgpu --no-fusion --submit-per-dispatch --n-pp 0 --reps 3 --out $OUT/unfused_perdispatch.json 2>/dev/null | grep -E "^\| qwen"
