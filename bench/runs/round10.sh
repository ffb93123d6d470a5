#!/usr/bin/env bash
# Round 10: round 9 plus the weight tile stored k-major in slots that make a warp's
# loads of one operand 16 consecutive vec4s (fewer shared-memory wavefronts per FMA).
bash "$(dirname "$0")/prompt_round.sh" r10 f16,f32,q4_0 f16,f32
