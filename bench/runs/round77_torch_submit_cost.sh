#!/usr/bin/env bash
# Round 77: where the rest of an eager token goes. bench/torch_host_cost.py with the GPU taken
# out (host only) and with the encoding and submits kept (+submit; reads still answered, so
# nothing waits for the GPU), Dawn and wgpu-native, at this session's code.
set -u
for b in dawn wgpu; do
  timeout 100 python3 bench/torch_host_cost.py --backend $b --repeat 7 --json $OUT/host_$b.json | sed "s/^/$b /"
  timeout 100 python3 bench/torch_host_cost.py --backend $b --repeat 7 --submit --json $OUT/submit_$b.json | sed "s/^/$b /"
done
