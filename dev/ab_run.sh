#!/usr/bin/env bash
# GPU machine: check and time plain test_wgmma builds made by dev/ab_builds.sh (carried in build/).
#   dev/ab_run.sh BASE VAR [VAR ...]   each VAR: `decode` and `tile` once, then `bench` alternated
#   with BASE three times (BASE VAR VAR BASE BASE VAR), so drift shows as a spread, not a bias.
set -uo pipefail
cd "$(dirname "$0")/.."
base=$1; shift
for v in "$@"; do
  for m in decode tile; do
    timeout 120 ./build/twb_$v $m > /tmp/ab_${v}_${m}.log 2>&1; echo "$v $m rc=$?: $(tail -1 /tmp/ab_${v}_${m}.log)"
  done
  for n in $base $v $v $base $base $v; do
    timeout 60 ./build/twb_$n bench 2>&1 | grep ^bench | sed "s/^/$n: /"
  done
done
