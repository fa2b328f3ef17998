#!/usr/bin/env bash
# Everything one device session needs, in one call, with at most 8 files under $OUT:
# full sweep (auto, portable, hopper), sanitizers on a subset, the benchmark (every kernel, against
# the H200 anchor, case 0 twice), and an optional same-run A/B of variant libraries in variants/*.so
# (tp and latency sets, hopper kernel). Usage on the device: scripts/full_run.sh
set -uo pipefail
O=${OUT:-$PWD/out}; mkdir -p "$O"; export OUT=/tmp/fr; mkdir -p $OUT
export PYTHONPATH=$PWD/python PYTHONUNBUFFERED=1
SWEEP_TIMEOUT=${SWEEP_TIMEOUT:-240} KERNELS="${KERNELS:-auto portable hopper}" scripts/device.sh build test > /dev/null 2>&1
for f in $OUT/pytest-*.log; do echo "== $f"; grep -E "flash_mla GPU tests|kernel=|cases|passed|failed|Error" "$f" | tail -8; done > "$O/tests.log"
if [ -n "${SANITIZE-1}" ]; then  # SANITIZE= (empty) skips the sanitizers
  SAN_TIMEOUT=${SAN_TIMEOUT:-240} RACE_K="${RACE_K:-test_strided_tensors}" KERNELS="${SAN_KERNELS:-hopper portable}" \
    scripts/device.sh sanitize > /dev/null 2>&1
  for f in $OUT/san-*.log; do echo "== $f"; grep -E "ERROR SUMMARY|Race reported|Hazard|passed|failed|at .*decode|at .*combine" "$f" | sort | uniq -c | sort -rn | head -12; done > "$O/san.log"
fi
BENCH_KERNEL=${BENCH_KERNEL:-all} BENCH_ARGS="${BENCH_ARGS:---compare bench/anchors/flashmla-h200.json --repeat-case 0}" \
  scripts/device.sh bench > /dev/null 2>&1
cp $OUT/bench.json $OUT/bench.log "$O/"; [ -f $OUT/roofline.png ] && cp $OUT/roofline.png "$O/"
for v in variants/*.so; do
  [ -f "$v" ] || continue
  echo "== $v"; FLASH_MLA_LIBRARY=$PWD/$v python3 bench/bench.py --kernel hopper --set ${AB_SETS:-tp,latency} --no-rotate 2>&1 | grep -E "^(standard|tp|latency) |ceil"
  echo "== default library"; python3 bench/bench.py --kernel hopper --set ${AB_SETS:-tp,latency} --no-rotate 2>&1 | grep -E "^(standard|tp|latency) |ceil"
done > "$O/ab.log"
cp $OUT/summary.log "$O/"
cat "$O/summary.log" "$O/tests.log" "$O/san.log" 2>/dev/null
