/*
 * tma_rate.cu: how fast can one SM's producer thread fill shared memory with K blocks through TMA,
 * and does the box shape matter? (diagnostics for docs/perf-notes.md; GPU machine)
 *
 * Every CTA (one per SM, 132) streams NB_PER_CTA K blocks (64 tokens x 576 bf16 = 72 KB each, from
 * a random page permutation, 600 MB in all) into two 72 KB stages, as the decode kernel's producer
 * does; a consumer warp waits for each stage's full barriers and gives the stage back at once (no
 * compute), so the time is the fill rate alone. Box shapes:
 *   tile9  the library's map: (576 cols, 64 tokens, blocks), box 64 x 64 -> 9 copies per block
 *   grp    a map over (64 cols, 64 tokens, 9 column tiles, blocks) with the tile stride 128 bytes
 *          below the token stride, box (64, 64, G, 1): 9/G copies per block, and the same smem image
 *          (tile-major 8 KB tiles with the 128-byte swizzle) -- if the driver accepts the strides
 * pairs=1: CTAs 2c and 2c+1 read the same blocks (the decode kernel's two M tiles at s_q = 1).
 * The last stage's contents are checksummed per CTA, so grp can be checked against tile9.
 *
 * Build: nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Iinclude -Isrc dev/tma_rate.cu -o build/tma_rate -lcuda
 */
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "ptx_sm90.cuh"
#include "kv_stream.cuh"

#define NB_PER_CTA 192

/* mode 0: tile9 (9 copies of 8 KB per block); mode G>0: grp with G tiles per copy */
__global__ void __launch_bounds__(64, 1) fill_kernel(const __grid_constant__ CUtensorMap map, const int *ids, int mode,
                                                     int pairs, unsigned long long *clk, unsigned *sums) {
#if FMLA_SM90_DEVICE
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t *smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  const uint32_t sb = smem_u32(smem);
  const uint32_t full = sb + 2 * STAGE, empty = full + 2 * 9 * 8;
  if (threadIdx.x == 0) {
    for (int t = 0; t < 18; ++t) {
      mbarrier_init(full + t * 8, 1);
      mbarrier_init(empty + t * 8, 1);
    }
    fence_mbarrier_init_release_cluster();
  }
  __syncthreads();
  const int stream = pairs ? blockIdx.x / 2 : blockIdx.x;
  const int *my = ids + (size_t)stream * NB_PER_CTA;
  const int G = mode == 0 ? 1 : mode, ngrp = (9 + G - 1) / G;
  long long t0 = clock64();
  if (threadIdx.x == 0) { /* producer */
    const uint64_t pol = createpolicy_fractional_l2_evict_normal();
    for (int b = 0; b < NB_PER_CTA; ++b) {
      const int st = b & 1;
      const uint32_t use = b >> 1;
      for (int g = 0; g < ngrp; ++g) {
        const int t0_ = g * G, nt = 9 - t0_ < G ? 9 - t0_ : G;
        wait_bar(empty + (st * 9 + g) * 8, (use & 1) ^ 1);
        mbarrier_arrive_expect_tx(full + (st * 9 + g) * 8, G * 8192u);
        if (mode == 0)
          cp_async_bulk_tensor_4d_g2s(sb + st * STAGE + t0_ * 8192, &map, t0_ * 64, 0, 0, my[b], full + (st * 9 + g) * 8, pol);
        else /* a box of G tiles; the last group starts at 9 - G so it never runs past tile 8 (overlap rewrites equal data) */
          cp_async_bulk_tensor_4d_g2s(sb + st * STAGE + (t0_ + nt - G) * 8192, &map, 0, 0, t0_ + nt - G, my[b],
                                      full + (st * 9 + g) * 8, pol);
      }
    }
  } else if (threadIdx.x == 32) { /* consumer */
    for (int b = 0; b < NB_PER_CTA; ++b) {
      const int st = b & 1;
      const uint32_t use = b >> 1;
      for (int g = 0; g < ngrp; ++g) wait_bar(full + (st * 9 + g) * 8, use & 1);
      if (b < NB_PER_CTA - 2)
        for (int g = 0; g < ngrp; ++g) mbarrier_arrive(empty + (st * 9 + g) * 8);
    }
    clk[blockIdx.x] = clock64() - t0;
  }
  __syncthreads();
  stage_checksum(smem, NB_PER_CTA, sums); /* the last block's stage (stage 1) */
#endif
}

/* Median time (ms) of 5 launches after 2 warm-ups; the last launch's stamps stay in dclk / dsum. */
static float time_fill(const CUtensorMap &m, int sms, int smem, const int *dids, int mode, int pairs,
                       unsigned long long *dclk, unsigned *dsum) {
  return median_launch_ms([&] { CK(cudaMemset(dsum, 0, sms * 4)); },
                          [&] { fill_kernel<<<sms, 64, smem>>>(m, dids, mode, pairs, dclk, dsum); });
}

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int nblocks = 8192;
  void *kv = kv_cache_alloc(nblocks);
  int *dids = kv_random_ids(sms, NB_PER_CTA, nblocks);
  unsigned long long *dclk;
  unsigned *dsum;
  CK(cudaMalloc(&dclk, sms * 8));
  CK(cudaMalloc(&dsum, sms * 4));
  CUtensorMap m9, mg[3];
  printf("tile9 map: CUresult %d\n", (int)kv_tile_map(&m9, kv, nblocks, CU_TENSOR_MAP_L2_PROMOTION_L2_256B));
  /* L2 promotion of the tile9 map: none, 64B, 128B, 256B (the library used 256B until 9b46198) */
  CUtensorMap mp[4];
  const CUtensorMapL2promotion promo[4] = {CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_64B,
                                           CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B};
  for (int k = 0; k < 4; ++k) {
    const CUresult r = kv_tile_map(&mp[k], kv, nblocks, promo[k]);
    if (r != CUDA_SUCCESS) printf("promo map %d: CUresult %d\n", k, (int)r);
  }
  const int G[3] = {3, 4, 9};
  int gok[3];
  for (int k = 0; k < 3; ++k) {
    cuuint64_t dims[4] = {64, 64, 9, (cuuint64_t)nblocks}, str[3] = {1152, 128, STAGE};
    cuuint32_t box[4] = {64, 64, (cuuint32_t)G[k], 1}, es[4] = {1, 1, 1, 1};
    CUresult r = cuTensorMapEncodeTiled(&mg[k], CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, kv, dims, str, box, es,
                                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    gok[k] = r == CUDA_SUCCESS;
    printf("grp map G=%d (tile stride 128 B under token stride 1152 B): CUresult %d\n", G[k], (int)r);
  }
  const int smem = 2 * STAGE + 2 * 18 * 8 + 1024;
  CK(cudaFuncSetAttribute(fill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::vector<unsigned> ref(sms);
  for (int pairs = 0; pairs < 2; ++pairs)
    for (int v = 0; v < 4; ++v) {
      if (v > 0 && !gok[v - 1]) continue;
      const CUtensorMap &m = v == 0 ? m9 : mg[v - 1];
      const int mode = v == 0 ? 0 : G[v - 1];
      std::vector<unsigned long long> clk(sms);
      std::vector<unsigned> sum(sms);
      const double t = time_fill(m, sms, smem, dids, mode, pairs, dclk, dsum) * 1e-3;
      CK(cudaMemcpy(clk.data(), dclk, sms * 8, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(sum.data(), dsum, sms * 4, cudaMemcpyDeviceToHost));
      if (v == 0) ref = sum;
      int same = 0;
      for (int k = 0; k < sms; ++k) same += sum[k] == ref[k];
      std::sort(clk.begin(), clk.end());
      const double per_sm = (double)NB_PER_CTA * STAGE;
      printf("%s pairs=%d %-6s copies/block %d: %.1f us, %.0f GB/s into smem (all SMs), median CTA %.1f B/clk, %.0f clk/copy; "
             "checksums equal to tile9: %d/%d\n",
             prop.name, pairs, v == 0 ? "tile9" : (G[v - 1] == 3 ? "grp3" : G[v - 1] == 4 ? "grp4" : "grp9"),
             v == 0 ? 9 : (9 + G[v - 1] - 1) / G[v - 1], t * 1e6, per_sm * sms / t * 1e-9, per_sm / clk[sms / 2],
             (double)clk[sms / 2] / (NB_PER_CTA * (v == 0 ? 9 : (9 + G[v - 1] - 1) / G[v - 1])), same, sms);
    }
  static const char *pn[4] = {"none", "64B", "128B", "256B"};
  for (int pairs = 0; pairs < 2; ++pairs)
    for (int k = 0; k < 4; ++k) {
      const double t = time_fill(mp[k], sms, smem, dids, 0, pairs, dclk, dsum) * 1e-3;
      printf("%s pairs=%d tile9 L2 promotion %-4s: %.1f us, %.0f GB/s into smem\n", prop.name, pairs, pn[k], t * 1e6,
             (double)NB_PER_CTA * STAGE * sms / t * 1e-9);
    }
  return 0;
}
