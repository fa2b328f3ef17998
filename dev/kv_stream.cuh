/*
 * kv_stream.cuh: what the fill-rate diagnostics (dev/tma_rate.cu, dev/mcast_rate.cu,
 * dev/dsmem_rate.cu) share: CK (dev/cuda_check.h), a synthetic K cache of 72 KB blocks (64 tokens x 576 bf16), random block ids for the
 * streams, the library's tile map over it (box 64 columns x 64 tokens, 128-byte swizzle), and the
 * device-side mbarrier wait, the fill producer and consumer, and a cluster launch configuration.
 * Include after ptx_sm90.cuh. GPU machine only.
 */
#ifndef FMLA_DEV_KV_STREAM_CUH
#define FMLA_DEV_KV_STREAM_CUH

#include <cuda.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <random>
#include <vector>

#include "cuda_check.h"

#define STAGE 73728 /* one 64-token block of K: 9 column tiles of 64 x 64 bf16 */

#if FMLA_SM90_DEVICE
/* CTA-scope waits throughout, also on barriers other CTAs arrive on: the cluster-scope acquire form
 * (try_wait...acquire.cluster) compiles to CCTL.IVALL per poll (perf-notes). */
static __device__ __forceinline__ void wait_bar(uint32_t bar, uint32_t parity) {
  while (!mbarrier_try_wait_parity(bar, parity)) {
  }
}

/* The fill producer (one thread): nb blocks `ids` through two 72 KB stages at sb (full / empty: 18
 * mbarriers each, stage-major), tile by tile as each tile's empty barrier lets it; with mc, groups
 * of `share` CTAs are one cluster and tile t is copied once, by CTA t % share, into all of them. */
static __device__ __forceinline__ void kv_fill_produce(const CUtensorMap *map, const int *ids, int nb, uint32_t sb,
                                                       uint32_t full, uint32_t empty, int share, int mc, uint32_t rank) {
  const uint64_t pol = createpolicy_fractional_l2_evict_normal();
  for (int b = 0; b < nb; ++b) {
    const int st = b & 1;
    const uint32_t use = b >> 1;
    for (int t = 0; t < 9; ++t) {
      const uint32_t e = empty + (st * 9 + t) * 8, f = full + (st * 9 + t) * 8;
      const bool mine = !mc || (uint32_t)(t % share) == rank;
      wait_bar(e, (use & 1) ^ 1);
      mbarrier_arrive_expect_tx(f, 8192u);
      if (!mc)
        cp_async_bulk_tensor_4d_g2s(sb + st * STAGE + t * 8192, map, t * 64, 0, 0, ids[b], f, pol);
      else if (mine)
        cp_async_bulk_tensor_4d_g2s_mc(sb + st * STAGE + t * 8192, map, t * 64, 0, 0, ids[b], f,
                                       (uint16_t)((1u << share) - 1), pol);
    }
  }
}

/* The fill consumer (one thread): waits for each stage's 9 tiles, spins `work` SM clocks, gives the
 * tiles back (also on the copying CTA's empty barrier in a cluster; the last two blocks stay). */
static __device__ __forceinline__ void kv_fill_consume(int nb, uint32_t full, uint32_t empty, int share, int mc,
                                                       uint32_t rank, int work) {
  for (int b = 0; b < nb; ++b) {
    const int st = b & 1;
    const uint32_t use = b >> 1;
    for (int t = 0; t < 9; ++t) wait_bar(full + (st * 9 + t) * 8, use & 1);
    if (work) {
      const long long w0 = clock64();
      while (clock64() - w0 < work) {
      }
    }
    if (b < nb - 2)
      for (int t = 0; t < 9; ++t) {
        const uint32_t e = empty + (st * 9 + t) * 8;
        mbarrier_arrive(e);
        if (mc && (uint32_t)(t % share) != rank) mbarrier_arrive_remote(e, (uint32_t)(t % share));
      }
  }
}

/* Checksum of the stage that held the last of nb blocks (64 threads), added to sums[blockIdx.x]:
 * the host compares it with the data the stream should have delivered. */
static __device__ __forceinline__ void stage_checksum(const uint8_t *smem, int nb, unsigned *sums) {
  unsigned s = 0;
  const unsigned *w = (const unsigned *)(smem + ((nb - 1) & 1) * STAGE);
  for (int k = threadIdx.x; k < STAGE / 4; k += 64) s += w[k] * (unsigned)(k * 2654435761u | 1u);
  atomicAdd(&sums[blockIdx.x], s);
}
#endif

/* nblocks blocks of deterministic non-zero data (nblocks * 72 KB on the device). */
static void *kv_cache_alloc(int nblocks) {
  const size_t bytes = (size_t)nblocks * STAGE;
  void *kv;
  CK(cudaMalloc(&kv, bytes));
  std::vector<uint16_t> h(bytes / 2);
  for (size_t k = 0; k < h.size(); ++k) h[k] = (uint16_t)(k * 40503u >> 3);
  CK(cudaMemcpy(kv, h.data(), bytes, cudaMemcpyHostToDevice));
  return kv;
}

/* nstreams x per_stream random block ids in [0, nblocks), on the device. */
static int *kv_random_ids(int nstreams, int per_stream, int nblocks) {
  std::vector<int> ids((size_t)nstreams * per_stream);
  std::mt19937 rng(1);
  for (auto &x : ids) x = (int)(rng() % nblocks);
  int *d;
  CK(cudaMalloc(&d, ids.size() * 4));
  CK(cudaMemcpy(d, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice));
  return d;
}

/* The library's K map (sm90_make_k_map) over the synthetic cache: (576 columns, 1 head, 64 tokens,
 * blocks), box 64 x 64, with the given L2 promotion. */
static CUresult kv_tile_map(CUtensorMap *m, void *kv, int nblocks, CUtensorMapL2promotion promo) {
  cuuint64_t dims[4] = {576, 1, 64, (cuuint64_t)nblocks}, str[3] = {1152, 1152, STAGE};
  cuuint32_t box[4] = {64, 1, 64, 1}, es[4] = {1, 1, 1, 1};
  return cuTensorMapEncodeTiled(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, kv, dims, str, box, es,
                                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, promo,
                                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

/* The cache, each stream's random block ids and the library's tile map (no L2 promotion): what
 * mcast_rate and dsmem_rate start from. Exits with a message if the driver refuses the map. */
static void kv_stream_setup(int nstreams, int per_stream, int nblocks, int **dids, CUtensorMap *map) {
  void *kv = kv_cache_alloc(nblocks);
  *dids = kv_random_ids(nstreams, per_stream, nblocks);
  const CUresult r = kv_tile_map(map, kv, nblocks, CU_TENSOR_MAP_L2_PROMOTION_NONE);
  if (r != CUDA_SUCCESS) {
    printf("tensor map: CUresult %d\n", (int)r);
    exit(1);
  }
}

/* A launch of `grid` CTAs of `threads` threads with `smem` bytes of dynamic shared memory, as
 * clusters of `cx` CTAs; `attr` is the storage the returned configuration points at. */
static cudaLaunchConfig_t cluster_launch_cfg(int grid, int threads, int smem, int cx, cudaLaunchAttribute *attr) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(threads);
  cfg.dynamicSmemBytes = smem;
  attr->id = cudaLaunchAttributeClusterDimension;
  attr->val.clusterDim.x = cx;
  attr->val.clusterDim.y = 1;
  attr->val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}

/* Median time (ms) of 5 launches after 2 warm-ups; `before` runs ahead of each (untimed), `launch`
 * is timed with events. */
template <class B, class L>
static float median_launch_ms(B before, L launch) {
  std::vector<float> ms;
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int rep = 0; rep < 7; ++rep) {
    before();
    CK(cudaEventRecord(a));
    launch();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    CK(cudaGetLastError());
    float x;
    CK(cudaEventElapsedTime(&x, a, b));
    if (rep > 1) ms.push_back(x);
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

#endif
