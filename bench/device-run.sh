#!/usr/bin/env bash
# Runs a long benchmark on the lent GPU machine across several `run` calls (each at most 10
# minutes; the machine stays warm ~30 s between them):
#   source .gl/setup.sh && bash bench/device-run.sh 560 python bench/suite.py batch1 peers --out /tmp/pipe/out
# The first call copies the tree to /tmp/repo (a later call's fresh copy of the working tree cannot
# pull the floor from under it) and starts the command there in the background; every call then
# waits up to BUDGET seconds for it to end and returns what it has so far in $OUT/pipe.tgz (the
# command's output in log, and /tmp/pipe/out, where the command should write its results). A call
# after the end prints the log's tail again; `rm -rf /tmp/pipe` first starts anew.
set -u
budget=${1:?usage: device-run.sh BUDGET_S COMMAND...}
shift
mkdir -p /tmp/pipe/out
if [ ! -f /tmp/pipe/started ]; then
  date > /tmp/pipe/started
  rm -rf /tmp/repo && mkdir -p /tmp/repo && cp -r . /tmp/repo/
  (cd /tmp/repo && PYTHONPATH=/tmp/site:/tmp/repo/src:/tmp/repo${PYTHONPATH:+:$PYTHONPATH} \
     setsid nohup bash -c '"$@"; echo $? > /tmp/pipe/done' _ "$@" > /tmp/pipe/log 2>&1 < /dev/null &)
fi
end=$((SECONDS + budget))
while [ $SECONDS -lt $end ] && [ ! -f /tmp/pipe/done ]; do sleep 3; done
tar czf "${OUT:-/tmp}/pipe.tgz" -C /tmp/pipe out log 2>/dev/null
if [ -f /tmp/pipe/done ]; then echo "=== done, exit status $(cat /tmp/pipe/done)"; else echo "=== still running"; fi
tail -40 /tmp/pipe/log
