#!/usr/bin/env bash
# Build a variant of the library with extra -D flags for src/decode_sm90.cu (same-run A/Bs with
# dev/ab_libs.py). Usage: dev/build_variant.sh NAME "-DFMLA_SM90_X=1 ..."  -> variants/NAME.so
# (needs `make lib` first for the other objects).
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; flags=${2:-}
mkdir -p build/variants/$name variants
GENCODE="-gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_80,code=compute_80"
nvcc -std=c++17 -O3 $GENCODE -Xcompiler -fPIC,-fvisibility=hidden -Iinclude -Isrc -Xptxas -warn-spills,-v \
  --expt-relaxed-constexpr -lineinfo $flags -c src/decode_sm90.cu -o build/variants/$name/decode_sm90.cu.o \
  2> build/variants/$name/ptxas.log
if grep -qE 'C75(20|14|15)|instructions are serialized' build/variants/$name/ptxas.log; then echo "$name: wgmma serialized (C7520/C7514/C7515)"; exit 1; fi
objs=$(ls build/*.o | grep -v decode_sm90.cu.o)
nvcc -shared -cudart static $GENCODE $objs build/variants/$name/decode_sm90.cu.o -o variants/$name.so -Xlinker --exclude-libs,ALL
echo "$name: $(grep -E 'sm_90a' -A3 build/variants/$name/ptxas.log | grep -oE 'Used [0-9]+ registers' | sort -u | tr '\n' ' ') spills: $(grep -c 'spill' build/variants/$name/ptxas.log || true)"
