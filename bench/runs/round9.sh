#!/usr/bin/env bash
# Round 9: prompt matmul with the next unit's global loads in flight during the multiply
# (register double buffering); pp512 and the prompt's per-kernel profile.
bash "$(dirname "$0")/prompt_round.sh" r9 f16,q4_0 f16
