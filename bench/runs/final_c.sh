#!/usr/bin/env bash
# Final part C: the full characterization again (part B2's ablations failed on a missing --reps).
set -u
timeout 500 python3 -m webgpu_llm.cli.main characterize --preset qwen2.5-0.5b --out $OUT 2>&1 | grep -E "ablations|total|error" | tail -12
