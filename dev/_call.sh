#!/usr/bin/env bash
set -u
OUT=${OUT:-$PWD/out}; mkdir -p $OUT build
nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Isrc dev/wgmma_mix.cu -o build/wgmma_mix 2>&1 | tail -3
./build/wgmma_mix 1000 2>&1 | tee $OUT/mix.log
KERNELS="hopper" RACE_K="test_strided_tensors or bad_page" scripts/device.sh build sanitize
