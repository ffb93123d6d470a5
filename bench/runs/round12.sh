#!/usr/bin/env bash
# Round 12: prompt attention over blocks of 16 query tokens with key/value chunks staged once per
# block (round 11's matmul shapes); pp512 and the prompt's per-kernel profile.
bash "$(dirname "$0")/prompt_round.sh" r12 f16,f32,q4_0 f16,f32
