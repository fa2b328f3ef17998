#!/usr/bin/env bash
# One call on the GPU machine: build (unless a carried libflash_mla.so is newer than the sources),
# C tests, the Python GPU sweep per kernel, sanitizers on a subset, and the benchmark.
# Logs go to $OUT (or ./out). Usage: scripts/device.sh [build|test|sanitize|bench|host|profile|dev]...
set -uo pipefail
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/python
steps=${*:-build test}
status=0
log() { echo "[device.sh $(date +%T)] $*" | tee -a "$OUT/summary.log"; }

for step in $steps; do
  case $step in
  build)
    nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
    if [ -f libflash_mla.so ] && [ -z "${REBUILD:-}" ]; then
      log "using carried libflash_mla.so (REBUILD=1 to build here)"
    else
      log "building"; (time make -j16 lib) > "$OUT/build.log" 2>&1 || { log "BUILD FAILED"; tail -40 "$OUT/build.log"; exit 1; }
    fi
    mk="make"; [ -z "${REBUILD:-}" ] && mk="make -o libflash_mla.so"
    $mk python >/dev/null && $mk -j16 $(ls tests/test_*.c | grep -v test_util | sed 's|tests/\(.*\)\.c|build/tests/\1|') > "$OUT/build-tests.log" 2>&1 || { log "TEST BUILD FAILED"; tail -20 "$OUT/build-tests.log"; status=1; }
    ;;
  test)
    for t in build/tests/test_*; do
      "$t" > "$OUT/$(basename "$t").log" 2>&1; rc=$?
      log "$(basename "$t") rc=$rc: $(tail -1 "$OUT/$(basename "$t").log")"; [ $rc = 0 ] || status=1
    done
    for k in ${KERNELS:-portable hopper}; do
      FLASH_MLA_TEST_KERNEL=$k timeout ${SWEEP_TIMEOUT:-400} python3 -m pytest -q -x -rs tests/python > "$OUT/pytest-$k.log" 2>&1; rc=$?
      log "pytest kernel=$k rc=$rc: $(tail -1 "$OUT/pytest-$k.log")"; [ $rc = 0 ] || { status=1; grep -E "Error|assert|FAILED" "$OUT/pytest-$k.log" | head -20; }
    done
    ;;
  sanitize)
    for k in ${KERNELS:-portable hopper}; do
      for tool in memcheck racecheck; do
        sel=(); [ $tool = racecheck ] && sel=(-k "${RACE_K:-test_strided_tensors}")  # racecheck is slow: one small test
        FLASH_MLA_TEST_KERNEL=$k FLASH_MLA_TEST_SUBSET=1 timeout ${SAN_TIMEOUT:-300} compute-sanitizer --tool $tool --error-exitcode 9 \
          python3 -m pytest -q -x tests/python/test_gpu.py "${sel[@]}" > "$OUT/san-$tool-$k.log" 2>&1; rc=$?
        log "compute-sanitizer $tool kernel=$k rc=$rc: $(grep -E 'ERROR SUMMARY|passed|failed' "$OUT/san-$tool-$k.log" | tail -2 | tr '\n' ' ')"
        [ $rc = 0 ] || status=1
      done
    done
    ;;
  bench)
    python3 bench/bench.py --kernel ${BENCH_KERNEL:-all} ${BENCH_ARGS:-} --out "$OUT/bench.json" --roofline "$OUT/roofline.png" \
      2>&1 | tee "$OUT/bench.log"; [ ${PIPESTATUS[0]} = 0 ] || status=1
    ;;
  host)
    nvcc -O2 -Iinclude bench/host_overhead.cu -o build/host_overhead -L. -lflash_mla -Xlinker -rpath,$PWD > "$OUT/host-build.log" 2>&1 \
      && ./build/host_overhead 2>&1 | tee "$OUT/host.log"
    python3 bench/bench.py --set latency --kernel auto --no-rotate 2>&1 | tail -12 | tee -a "$OUT/host.log"
    ;;
  profile)
    # ncu of one benchmark case (PROFILE_CASE index in bench/cases.json, default 0: standard s_q=1 s_k=4K),
    # with per-SASS-instruction stall samples for finding the dominant wait.
    timeout 300 ncu --clock-control none --set full --import-source yes --kernel-name regex:fmla_decode \
      --launch-skip 2 --launch-count 1 -o "$OUT/prof" python3 dev/profile_case.py ${PROFILE_CASE:-0} ${PROFILE_KERNEL:-hopper} \
      > "$OUT/ncu.log" 2>&1 || { log "ncu failed"; tail -5 "$OUT/ncu.log"; status=1; }
    ncu --import "$OUT/prof.ncu-rep" --page details > "$OUT/ncu-details.txt" 2>&1
    ncu --import "$OUT/prof.ncu-rep" --page source --csv --print-source sass > "$OUT/ncu-sass.csv" 2>&1
    log "profile: $(grep -E 'Duration' "$OUT/ncu-details.txt" | head -1)"
    ;;
  dev)
    mkdir -p build
    nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Iinclude -Isrc dev/test_wgmma.cu src/sched_host.c -o build/test_wgmma \
      > "$OUT/dev-build.log" 2>&1 || { log "dev build failed"; tail -20 "$OUT/dev-build.log"; }
    for m in ${DEV_MODES:-tile decode}; do
      timeout 120 ./build/test_wgmma $m > "$OUT/dev-$m.log" 2>&1; rc=$?
      log "test_wgmma $m rc=$rc: $(tail -1 "$OUT/dev-$m.log")"; tail -15 "$OUT/dev-$m.log"; [ $rc = 0 ] || status=1
    done
    ;;
  esac
done
log "done, status=$status"
exit $status
