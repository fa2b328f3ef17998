# libflash_mla: one build command for the library, the tests and the Python package.
#   make            build libflash_mla.so (sm_90a + sm_80 SASS + compute_80 PTX) at the repo root
#   make test       C tests (no GPU needed) + Python tests (GPU tests skip with a reason without one)
#   make python     copy the library into python/flash_mla/ for in-tree use
#   make bench      the benchmark (needs a GPU)
#   make clean
NVCC      ?= nvcc
CC        ?= gcc
PYTHON    ?= python3
BUILD     := build
LIB       := libflash_mla.so

GENCODE   ?= -gencode=arch=compute_90a,code=sm_90a \
             -gencode=arch=compute_80,code=sm_80 \
             -gencode=arch=compute_80,code=compute_80
CFLAGS    := -std=c11 -O2 -fPIC -fvisibility=hidden -Wall -Wextra -Iinclude -Isrc $(shell $(NVCC) --version >/dev/null 2>&1 && echo -I$$(dirname $$(command -v $(NVCC)))/../include)
NVFLAGS   := -std=c++17 -O3 $(GENCODE) -Xcompiler -fPIC,-fvisibility=hidden -Iinclude -Isrc -Xptxas -warn-spills \
             --expt-relaxed-constexpr -lineinfo
TEST_CFLAGS := -std=c11 -O2 -Wall -Wextra -Iinclude -Isrc

C_SRCS    := $(wildcard src/*.c)
CU_SRCS   := $(wildcard src/*.cu)
OBJS      := $(patsubst src/%.c,$(BUILD)/%.o,$(C_SRCS)) $(patsubst src/%.cu,$(BUILD)/%.cu.o,$(CU_SRCS))
HEADERS   := include/flash_mla.h $(wildcard src/*.h src/*.cuh)

C_TESTS   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(filter-out tests/test_util.c,$(wildcard tests/test_*.c)))

.PHONY: all lib python deps test test-c test-python bench clean
all: lib
lib: $(LIB)

$(BUILD)/%.o: src/%.c $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -c $< -o $@

# ptxas C7520 / C7514 / C7515 ("wgmma.mma_async instructions are serialized", an info line, not a
# warning) silently cost the Hopper kernel ~15% (C7520, seen once) to ~50% (C7514, an experiment);
# C7515 (accumulators defined by other instructions inside a pipeline stage) was met by an
# experiment too. Any of them fails the build.
$(BUILD)/%.cu.o: src/%.cu $(HEADERS) | $(BUILD)
	@$(NVCC) $(NVFLAGS) -c $< -o $@ 2>$@.log; rc=$$?; cat $@.log >&2; \
	  if grep -qE 'C75(20|14|15)|wgmma.mma_async instructions are serialized' $@.log; then echo "error: ptxas serialized wgmma (C7520/C7514/C7515) in $<" >&2; rm -f $@; exit 1; fi; exit $$rc

$(LIB): $(OBJS)
	$(NVCC) -shared -cudart static $(GENCODE) $(OBJS) -o $@ -Xlinker --exclude-libs,ALL

$(BUILD) $(BUILD)/tests:
	mkdir -p $@

$(BUILD)/tests/%: tests/%.c tests/test_util.c tests/test_util.h $(LIB) | $(BUILD)/tests
	$(CC) $(TEST_CFLAGS) $< tests/test_util.c -o $@ -L. -lflash_mla -Wl,-rpath,'$$ORIGIN/../..' -lm

python: $(LIB)
	cp $(LIB) python/flash_mla/$(LIB)

CXX       ?= g++
test-c: $(C_TESTS)
	$(CXX) -std=c++11 -Wall -Wextra -Werror -Iinclude tests/header_cxx.cpp -o $(BUILD)/tests/header_cxx -L. -lflash_mla -Wl,-rpath,'$$ORIGIN/../..'
	@./$(BUILD)/tests/header_cxx && echo "== the header compiles as C++ and the library links from C++"
	@set -e; for t in $(C_TESTS); do echo "== $$t"; $$t; done

test-python: python
	PYTHONPATH=python $(PYTHON) -m pytest -q -rs tests/python

# C tests first, then pytest (its summary is the last line), never interleaved under -j.
test: $(LIB)
	$(MAKE) --no-print-directory test-c
	$(MAKE) --no-print-directory test-python

# Python packages the tests need; installed only when missing (the GPU machine is offline and has them).
deps:
	@$(PYTHON) -c "import torch, numpy, pytest" 2>/dev/null || $(PYTHON) -m pip install -q torch numpy pytest

# The main job: the FlashMLA benchmark cases, every kernel, CUDA-graph timing (needs a GPU).
bench: python
	PYTHONPATH=python $(PYTHON) bench/bench.py --kernel all --out bench/results/latest.json --roofline bench/results/latest-roofline.png

clean:
	rm -rf $(BUILD) $(LIB) python/flash_mla/$(LIB)
