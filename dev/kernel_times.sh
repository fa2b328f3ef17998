#!/usr/bin/env bash
# Per-kernel GPU durations (ncu gpu__time_duration) of the decode and combine kernels of one call,
# for bench/cases.json cases given as arguments (default: the latency set). Usage:
#   dev/kernel_times.sh [CASE_INDEX...]     (KERNEL=hopper|portable|auto)
export PYTHONPATH=$PWD/python
for c in ${*:-28 29 30 31 32 33 34 35}; do
  echo "== case $c"
  timeout 120 ncu --clock-control none --metrics gpu__time_duration.sum --kernel-name regex:fmla \
    --launch-skip 2 --launch-count 2 python3 dev/profile_case.py "$c" "${KERNEL:-hopper}" 2>&1 |
    grep -E "^  [a-z_]+.*fmla|gpu__time_duration|^case" | sed 's/(fmla_kernel_params.*//'
done
