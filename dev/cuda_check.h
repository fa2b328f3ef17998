/* dev/cuda_check.h: CK(call) for the stand-alone diagnostics in dev/ (test_wgmma.cu, wgmma_mix.cu and,
 * through kv_stream.cuh, the fill-rate tools): print the failing call with file and line and
 * exit(2). Not for the library, which never exits. */
#ifndef FLASH_MLA_DEV_CUDA_CHECK_H
#define FLASH_MLA_DEV_CUDA_CHECK_H
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (x);                                                                       \
    if (e_ != cudaSuccess) {                                                                    \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));        \
      exit(2);                                                                                  \
    }                                                                                           \
  } while (0)

#endif
