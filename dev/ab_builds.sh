#!/usr/bin/env bash
# Kernel-only A/B of src/decode_sm90.cu variants on PLAIN builds (no trace stamps: the clock64 trace
# build changes ptxas's schedule enough to flip 3-5% results, see docs/perf-notes.md, 2026-11-29
# fourth session). Here: build dev/test_wgmma.cu once per variant, two at a time.
#   dev/ab_builds.sh base "" nl "-DFMLA_SM90_PROBE_NOLOAD=1" ...     -> build/twb_base, build/twb_nl
# On the GPU machine, alternate them (each `bench` is 3 shapes x 30 launches, ~1 s):
#   for n in base nl nl base base nl; do echo "== $n"; ./build/twb_$n bench | grep ^bench; done
# and check each variant's correctness with `./build/twb_NAME decode` (14 hostile shapes).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
build() {
  nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Iinclude -Isrc $2 dev/test_wgmma.cu src/sched_host.c \
    -o "build/twb_$1" -lcuda > "build/twb_$1.log" 2>&1 || { echo "$1: build failed (build/twb_$1.log)"; return 1; }
  if grep -qE 'C75(20|14|15)|instructions are serialized' "build/twb_$1.log"; then echo "$1: wgmma serialized (C7520/C7514/C7515)"; return 1; fi
  echo "$1: build/twb_$1"
}
pids=()
while [ $# -ge 2 ]; do
  build "$1" "$2" & pids+=($!)
  shift 2
  if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
