#!/usr/bin/env bash
set -u
OUT=${OUT:-$PWD/out}; mkdir -p $OUT
KERNELS="hopper" SWEEP_TIMEOUT=240 scripts/device.sh build test
export PYTHONPATH=$PWD/python
python3 dev/ab_libs.py variants/v619.so variants/pp.so --cases 19,20,21,22 --rounds 3 2>&1 | tee $OUT/ab.log | tail -25
python3 dev/ab_libs.py variants/v619.so variants/pp.so --cases 19,22,21 --rounds 2 --sustain 1.5 2>&1 | tee $OUT/ab_sus.log | tail -25
