#!/usr/bin/env bash
# Torch round 40: eager decode with fused layers (webgpu_llm.torch.fuse_layers: RMSNorm, SwiGLU
# gate and RoPE as one op each) against plain eager, Dawn, f16 and f32, in one call, both
# orders; then compiled f16 once, as a gauge of this host's speed (300 on the fastest seen).
set -u
B="python3 bench/torch_generate.py --backend dawn --dtypes f16,f32 --runs 3"
timeout 170 $B --modes eager,fused --out $OUT/torch_round40_fused_1.json 2>&1 | grep -E "^\| f|fused layers"
timeout 170 $B --modes fused,eager --out $OUT/torch_round40_fused_2.json 2>&1 | grep -E "^\| f"
timeout 200 python3 bench/torch_generate.py --backend dawn --dtypes f16 --modes compiled --runs 3 \
  --out $OUT/torch_round40_compiled.json 2>&1 | grep -E "^\| f"
