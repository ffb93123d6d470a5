#!/usr/bin/env bash
# Round 100: the MMA matmul's output at real sizes against numpy (and its time beside the SIMT
# matmul): the 0.5B gate/up in q8_0, the 1.5B down in q4_0, the 1.5B gate/up in q4_k.
set -u
for a in "--rows 9728 --k 896 --fmt q8_0" "--rows 1536 --k 8960 --epilogue add --fmt q4_0" "--rows 17920 --k 1536 --fmt q4_k"; do
  echo "== $a"
  python3 bench/probe_mma_matmul.py $a --out $OUT/check_$(echo $a | cut -d' ' -f2)_$(echo $a | awk '{print $NF}').json 2>&1 \
    | grep -v "^Warning" | grep -E "numpy|^mma  |simt tm=4 "
done
