/*
 * dsmem_rate.cu: does SM-to-SM traffic inside a 2-CTA cluster (DSMEM, cp.async.bulk shared::cta ->
 * shared::cluster) compete with the K fills (TMA from L2/HBM into shared memory) for the same path
 * into an SM? Diagnostics for docs/perf-notes.md (eleventh session: a split-D cluster would trade
 * half of each SM's K bytes for as many bytes of partial S sent through DSMEM). GPU machine.
 *
 * 66 clusters of 2 CTAs (one per SM), 128 threads each:
 *   thread 0   fill producer: NB K blocks (72 KB, 9 tiles of 8 KB, random pages of a 600 MB cache)
 *              through two stages, tile t copied by CTA t % 2 into both CTAs (multicast), as the
 *              library's 128-row kernel does;
 *   thread 32  fill consumer: waits for each stage's 9 tiles and gives them back at once;
 *   thread 64  DSMEM sender: NX chunks of 16 KB from its own shared memory into the peer CTA's
 *              NSLOT-slot receive ring (-DNSLOT=, default 2) (complete_tx on the peer's barrier), each slot reused once the
 *              peer gave it back;
 *   thread 96  DSMEM receiver: arms its slot for 16 KB, waits, gives it back (remote arrive).
 * Modes: fills alone, DSMEM alone, both at once. Printed: B/clk per SM landed by each stream (median
 * CTA) and the received data checked against the peer's pattern.
 *
 * Build: nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Iinclude -Isrc dev/dsmem_rate.cu -o build/dsmem_rate -lcuda
 */
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <random>
#include <vector>

#include "ptx_sm90.cuh"
#include "kv_stream.cuh"

#define NB 192
#define NX 864 /* 16 KB chunks: as many bytes as the NB blocks */
#define XCH 16384
#ifndef NSLOT
#define NSLOT 2 /* receive ring slots (DSMEM bytes in flight: NSLOT x 16 KB) */
#endif
#define OFF_X (2 * STAGE)             /* receive ring: NSLOT x 16 KB */
#define OFF_SRC (OFF_X + NSLOT * XCH) /* what the sender sends: 16 KB */
#define OFF_BAR (OFF_SRC + XCH)       /* full[18], empty[18], xfull[NSLOT], xempty[NSLOT] */
#define SMEM_BYTES (OFF_BAR + (36 + 2 * NSLOT) * 8 + 1024)

__global__ void __launch_bounds__(128, 1) dsmem_kernel(const __grid_constant__ CUtensorMap map, const int *ids, int fills,
                                                       int xch, unsigned long long *clk_f, unsigned long long *clk_x,
                                                       unsigned *ok) {
#if FMLA_SM90_DEVICE
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t *smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  const uint32_t sb = smem_u32(smem);
  const uint32_t full = sb + OFF_BAR, empty = full + 18 * 8, xfull = empty + 18 * 8, xempty = xfull + NSLOT * 8;
  const uint32_t rank = cluster_ctarank(), peer = rank ^ 1;
  unsigned *src = (unsigned *)(smem + OFF_SRC);
  for (int k = threadIdx.x; k < XCH / 4; k += 128) src[k] = (unsigned)k * 2654435761u + rank * 977u + 1u;
  if (threadIdx.x == 0) {
    for (int st = 0; st < 2; ++st)
      for (int t = 0; t < 9; ++t) {
        mbarrier_init(full + (st * 9 + t) * 8, 1);
        mbarrier_init(empty + (st * 9 + t) * 8, (uint32_t)(t % 2) == rank ? 2 : 1);
      }
    for (int s = 0; s < NSLOT; ++s) {
      mbarrier_init(xfull + s * 8, 1);  /* our receiver's arm; the peer's bytes */
      mbarrier_init(xempty + s * 8, 1); /* the peer's receiver gave our chunk back */
    }
    fence_mbarrier_init_release_cluster();
  }
  fence_proxy_async_shared_cta(); /* src is read by the bulk copies */
  __syncthreads();
  cluster_sync_all();
  const int *my = ids + (size_t)(blockIdx.x / 2) * NB;
  const long long t0 = clock64();
  if (threadIdx.x == 0 && fills) {
    kv_fill_produce(&map, my, NB, sb, full, empty, 2, 1, rank);
  } else if (threadIdx.x == 32 && fills) {
    kv_fill_consume(NB, full, empty, 2, 1, rank, 0);
    clk_f[blockIdx.x] = clock64() - t0;
  } else if (threadIdx.x == 64 && xch) {
    for (int i = 0; i < NX; ++i) {
      const int s = i % NSLOT;
      const uint32_t use = i / NSLOT;
      wait_bar(xempty + s * 8, (use & 1) ^ 1);
      cp_async_bulk_s2s_remote(sb + OFF_X + s * XCH, sb + OFF_SRC, XCH, xfull + s * 8, peer);
    }
  } else if (threadIdx.x == 96 && xch) {
    for (int i = 0; i < NX; ++i) {
      const int s = i % NSLOT;
      const uint32_t use = i / NSLOT;
      mbarrier_arrive_expect_tx(xfull + s * 8, XCH);
      wait_bar(xfull + s * 8, use & 1);
      if (i < NX - NSLOT) mbarrier_arrive_remote(xempty + s * 8, peer);
    }
    clk_x[blockIdx.x] = clock64() - t0;
    /* every slot holds the peer's pattern */
    const unsigned *x = (const unsigned *)(smem + OFF_X);
    unsigned good = 1;
    for (int k = 0; k < NSLOT * XCH / 4; ++k) good &= x[k] == (unsigned)(k % (XCH / 4)) * 2654435761u + peer * 977u + 1u;
    ok[blockIdx.x] = good;
  }
  __syncthreads();
  cluster_sync_all(); /* no CTA leaves while its peer may still copy or arrive into it */
#endif
}

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  sms -= sms % 2;
  const int nblocks = 8192;
  int *dids;
  CUtensorMap m9;
  kv_stream_setup(sms, NB, nblocks, &dids, &m9);
  unsigned long long *dclk_f, *dclk_x;
  unsigned *dok;
  CK(cudaMalloc(&dclk_f, sms * 8));
  CK(cudaMalloc(&dclk_x, sms * 8));
  CK(cudaMalloc(&dok, sms * 4));
  CK(cudaFuncSetAttribute(dsmem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_BYTES));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  const int modes[3][2] = {{1, 0}, {0, 1}, {1, 1}};
  int bad = 0;
  for (int rep = 0; rep < 1; ++rep)
    for (const auto &md : modes) {
      const int fills = md[0], xch = md[1];
      cudaLaunchAttribute attr;
      const cudaLaunchConfig_t cfg = cluster_launch_cfg(sms, 128, SMEM_BYTES, 2, &attr);
      CK(cudaMemset(dclk_f, 0, sms * 8));
      CK(cudaMemset(dclk_x, 0, sms * 8));
      CK(cudaMemset(dok, 0, sms * 4));
      const float ms = median_launch_ms([&] {},
                                        [&] { CK(cudaLaunchKernelEx(&cfg, dsmem_kernel, m9, dids, fills, xch, dclk_f, dclk_x, dok)); });
      std::vector<unsigned long long> cf(sms), cx(sms);
      std::vector<unsigned> okv(sms);
      CK(cudaMemcpy(cf.data(), dclk_f, sms * 8, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(cx.data(), dclk_x, sms * 8, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(okv.data(), dok, sms * 4, cudaMemcpyDeviceToHost));
      std::sort(cf.begin(), cf.end());
      std::sort(cx.begin(), cx.end());
      int good = 0;
      for (unsigned v : okv) good += v == 1;
      if (xch && good != sms) ++bad;
      printf("%s NSLOT=%d fills=%d dsmem=%d: %8.1f us; fills %5.1f B/clk per SM (median CTA %9llu clk); dsmem %5.1f B/clk per SM "
             "(median CTA %9llu clk); received data correct on %d/%d CTAs\n",
             prop.name, NSLOT, fills, xch, ms * 1e3, fills ? NB * (double)STAGE / cf[sms / 2] : 0.0, cf[sms / 2],
             xch ? NX * (double)XCH / cx[sms / 2] : 0.0, cx[sms / 2], xch ? good : 0, xch ? sms : 0);
    }
  printf("%s\n", bad ? "FAILED: received data wrong" : "ok");
  return bad ? 1 : 0;
}
