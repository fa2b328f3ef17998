/*
 * mcast_rate.cu: does TMA multicast raise the rate at which SMs fill shared memory with K blocks
 * when several CTAs read the same pages (the decode kernel's M tiles of one request)? Diagnostics
 * for docs/perf-notes.md (GPU machine).
 *
 * Each CTA (one per SM) streams NB K blocks (64 tokens x 576 bf16 = 72 KB, 9 tiles of 8 KB, random
 * pages of a 600 MB cache) through two 72 KB stages, as the decode kernel's producer does. Groups of
 * `share` consecutive CTAs read the same page sequence (share 2 = the s_q=1, h_q=128 pattern, 4 =
 * s_q=2). With mc = 1 a group of `share` CTAs is one cluster and tile t of a block is copied once,
 * by CTA t % share, into every CTA of the cluster (.multicast::cluster); each consumer releases a
 * tile on its own empty barrier and on the issuing CTA's (remote arrive). The consumer waits for a
 * stage's 9 tiles, spins `work` SM clocks (a stand-in for a block's compute; 0 = give it back at
 * once) and releases it. Printed per mode: time, bytes landed in shared memory per second (all
 * SMs) and per SM clock, bytes read from L2 per second (landed / multicast factor), and with
 * work > 0 the time beyond NB x work (the fill's exposed cost).
 *
 * Build: nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Iinclude -Isrc dev/mcast_rate.cu -o build/mcast_rate -lcuda
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

__global__ void __launch_bounds__(64, 1) fill_kernel(const __grid_constant__ CUtensorMap map, const int *ids, int share,
                                                     int mc, int work, unsigned long long *clk, unsigned *sums) {
#if FMLA_SM90_DEVICE
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t *smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  const uint32_t sb = smem_u32(smem);
  const uint32_t full = sb + 2 * STAGE, empty = full + 18 * 8;
  const uint32_t rank = mc ? cluster_ctarank() : 0;
  if (threadIdx.x == 0) {
    for (int st = 0; st < 2; ++st)
      for (int t = 0; t < 9; ++t) {
        mbarrier_init(full + (st * 9 + t) * 8, 1);
        /* the issuing CTA's empty barrier counts every consumer of the cluster */
        mbarrier_init(empty + (st * 9 + t) * 8, mc && (uint32_t)(t % share) == rank ? share : 1);
      }
    fence_mbarrier_init_release_cluster();
  }
  __syncthreads();
  if (mc) cluster_sync_all();
  const int *my = ids + (size_t)(blockIdx.x / share) * NB;
  const long long t0 = clock64();
  if (threadIdx.x == 0) { /* producer */
    kv_fill_produce(&map, my, NB, sb, full, empty, share, mc, rank);
  } else if (threadIdx.x == 32) { /* consumer */
    kv_fill_consume(NB, full, empty, share, mc, rank, work);
    clk[blockIdx.x] = clock64() - t0;
  }
  __syncthreads();
  stage_checksum(smem, NB, sums);
  if (mc) cluster_sync_all(); /* no CTA leaves while a peer may still arrive on its barriers */
#endif
}

static float time_fill(const CUtensorMap &m, int sms, int smem, const int *dids, int share, int mc, int work,
                       unsigned long long *dclk, unsigned *dsum) {
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t cfg = cluster_launch_cfg(sms, 64, smem, mc ? share : 1, &attr);
  return median_launch_ms([&] { CK(cudaMemset(dsum, 0, sms * 4)); },
                          [&] { CK(cudaLaunchKernelEx(&cfg, fill_kernel, m, dids, share, mc, work, dclk, dsum)); });
}

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  sms -= sms % 4; /* whole clusters of 4 */
  const int nblocks = 8192;
  int *dids;
  CUtensorMap m9;
  kv_stream_setup(sms, NB, nblocks, &dids, &m9);
  unsigned long long *dclk;
  unsigned *dsum;
  CK(cudaMalloc(&dclk, sms * 8));
  CK(cudaMalloc(&dsum, sms * 4));
  const int smem = 2 * STAGE + 36 * 8 + 1024;
  CK(cudaFuncSetAttribute(fill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  CK(cudaFuncSetAttribute(fill_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  const int modes[5][2] = {{1, 0}, {2, 0}, {2, 1}, {4, 0}, {4, 1}};
  const int works[3] = {0, 3000, 3600};
  std::vector<unsigned> ref2, ref4;
  for (int w = 0; w < 3; ++w)
    for (const auto &md : modes) {
      const int share = md[0], mc = md[1], work = works[w];
      const double t = time_fill(m9, sms, smem, dids, share, mc, work, dclk, dsum) * 1e-3;
      std::vector<unsigned long long> clk(sms);
      std::vector<unsigned> sum(sms);
      CK(cudaMemcpy(clk.data(), dclk, sms * 8, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(sum.data(), dsum, sms * 4, cudaMemcpyDeviceToHost));
      /* every CTA of a group landed the same last block: checksums must agree inside the group */
      int agree = 0;
      for (int k = 0; k < sms; ++k) agree += sum[k] == sum[k - k % share];
      std::sort(clk.begin(), clk.end());
      const double landed = (double)NB * STAGE * sms, med = (double)clk[sms / 2];
      printf("%s share=%d mc=%d work=%4d: %8.1f us, landed %5.0f GB/s (%4.1f B/clk per SM), L2->SM %5.0f GB/s, "
             "median CTA %8.0f clk, beyond NB*work %+7.0f clk (%+5.1f%%), group checksums agree %d/%d\n",
             prop.name, share, mc, work, t * 1e6, landed / t * 1e-9, NB * (double)STAGE / med,
             landed / t * 1e-9 / (mc ? share : 1), med, med - (double)NB * work,
             work ? 100.0 * (med - (double)NB * work) / ((double)NB * work) : 0.0, agree, sms);
    }
  return 0;
}
