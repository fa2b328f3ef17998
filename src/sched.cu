/*
 * sched.cu: the GPU metadata kernel. Splits the decode work of a batch across num_sm_parts parts
 * from the device cache_seqlens, with no host sync, so a decode step can be captured in a graph.
 *
 *   in : cache_seqlens [b] int32 (device)
 *   out: tile_scheduler_metadata [P, FLASH_MLA_METADATA_SIZE] int32, num_splits [b + 1] int32
 *
 * Algorithm (params.h, arithmetic in sched_math.h, host twin in sched_host.c): one CTA of 1024
 * threads. Pass 1 reduces W = sum(nb_i + OVH). Pass 2 walks the batch in chunks of 1024 requests,
 * scanning costs (int64) and splits (int32) with a carry, writing num_splits and recording, for
 * each raw part boundary p*Q, the request that holds it. Pass 3 picks split or no-split mode
 * (the largest part with every boundary snapped to a request start). When P <= b <= 256 the packed
 * schedule is tried next (params.h): the requests are ranked by n-blocks (one thread each), then
 * one thread per capacity Q + d (warp d's lane 0, d = 0..7) runs the sequential greedy of
 * sched_math.h; if one scores better than the contiguous schedule, thread 0 runs it again and
 * writes its rows and num_splits, and the kernel ends. Otherwise pass 4 writes one row per part.
 * Cost of the packed pass for b = 256: ~b sorted-array searches per thread, tens of microseconds;
 * the metadata is made once per decode step.
 * Shared memory is fixed (FMLA_MAX_SM_PARTS entries, ~13 KB), whatever b is: b = 65,536 is
 * 64 chunks.
 *
 * Build/check alone: nvcc -std=c++17 -O3 -Xptxas -v -Iinclude -c src/sched.cu
 */
#include <cuda_runtime.h>

#include "params.h"
#include "sched_math.h"

#define SCHED_THREADS 1024

/* Inclusive block-wide scan of an int64 over SCHED_THREADS threads; returns the inclusive value
 * and stores the block total in *total. `warp_buf` holds 32 partial sums. */
static __device__ __forceinline__ int64_t block_inclusive_scan(int64_t v, int64_t *warp_buf, int64_t *total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 1; o < 32; o <<= 1) {
    const int64_t n = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += n;
  }
  if (lane == 31) warp_buf[warp] = v;
  __syncthreads();
  if (warp == 0) {
    int64_t w = warp_buf[lane];
    for (int o = 1; o < 32; o <<= 1) {
      const int64_t n = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += n;
    }
    warp_buf[lane] = w;
  }
  __syncthreads();
  if (warp > 0) v += warp_buf[warp - 1];
  *total = warp_buf[31];
  __syncthreads(); /* warp_buf is reused by the next scan */
  return v;
}

__global__ void __launch_bounds__(SCHED_THREADS, 1)
fmla_metadata_kernel(const int32_t *__restrict__ cache_seqlens, int32_t batch, int32_t P,
                     int32_t *__restrict__ meta, int32_t *__restrict__ num_splits) {
  __shared__ int64_t warp_buf[32];
  __shared__ int32_t preq[FMLA_MAX_SM_PARTS + 1];
  __shared__ int64_t pcum[FMLA_MAX_SM_PARTS + 1];
  __shared__ unsigned long long max_ns, max_c;
  __shared__ int nsplit_c;
  /* packed schedule (batch <= FMLA_PACK_SCHED_MAX_BATCH): sorted requests, per-capacity scratch */
  __shared__ int32_t srt[FMLA_PACK_SCHED_MAX_BATCH], nbs[FMLA_PACK_SCHED_MAX_BATCH];
  __shared__ int32_t order[FMLA_PACK_SCHED_MAX_BATCH], pieces[FMLA_PACK_SCHED_MAX_BATCH];
  __shared__ int32_t nxt[FMLA_PACK_DELTAS][FMLA_PACK_SCHED_MAX_BATCH + 1];
  __shared__ long long score[FMLA_PACK_DELTAS];
  const int tid = threadIdx.x;
  const int enc = batch <= FMLA_PACK_MAX_BATCH; /* order bits in num_splits (params.h) */

  if (tid == 0) nsplit_c = 0;
  /* Pass 1: W. (The scan's barriers order nsplit_c's reset before pass 2.) */
  int64_t part = 0;
  for (int32_t i = tid; i < batch; i += SCHED_THREADS) part += fmla_sched_nblocks(cache_seqlens[i]) + FMLA_SPLIT_OVERHEAD;
  int64_t W;
  block_inclusive_scan(part, warp_buf, &W);
  const int64_t Q = (W + P - 1) / P;

  for (int p = tid; p <= P; p += SCHED_THREADS) { /* default: boundary at or past W */
    preq[p] = batch;
    pcum[p] = W;
  }
  __syncthreads();

  /* Pass 2: chunked scans. */
  int64_t cum_carry = 0, split_carry = 0;
  for (int32_t base = 0; base < batch; base += SCHED_THREADS) {
    const int32_t i = base + tid;
    const int64_t cost = i < batch ? fmla_sched_nblocks(cache_seqlens[i]) + FMLA_SPLIT_OVERHEAD : 0;
    int64_t chunk_total;
    const int64_t cum = cum_carry + block_inclusive_scan(cost, warp_buf, &chunk_total) - cost;
    const int64_t splits = i < batch ? fmla_sched_splits(cum, cost, Q) : 0;
    int64_t split_total;
    const int64_t split_before = split_carry + block_inclusive_scan(splits, warp_buf, &split_total) - splits;
    if (i < batch) {
      num_splits[i] = (int32_t)split_before | (enc ? i << FMLA_PACK_SHIFT : 0);
      if (splits > 1) atomicAdd(&nsplit_c, 1);
      if (i == batch - 1) num_splits[batch] = (int32_t)(split_before + splits);
      /* raw boundaries p*Q in [cum, cum + cost) belong to request i */
      for (int64_t p = (cum + Q - 1) / Q; p <= P && p * Q < cum + cost; ++p) {
        preq[p] = i;
        pcum[p] = cum;
      }
    }
    cum_carry += chunk_total;
    split_carry += split_total;
  }
  __syncthreads();

  /* Pass 3: split or no-split mode (params.h), from the largest no-split part. */
  if (tid == 0) max_ns = 0;
  __syncthreads();
  for (int32_t p = tid; p < P; p += SCHED_THREADS)
    atomicMax(&max_ns, (unsigned long long)fmla_sched_nosplit_cost(p, Q, W, pcum[p], pcum[p + 1]));
  __syncthreads();
  const int nosplit = fmla_sched_use_nosplit((int64_t)max_ns, Q);
  if (nosplit) /* one split per request; the same thread wrote these in pass 2 */
    for (int32_t i = tid; i < batch; i += SCHED_THREADS) {
      num_splits[i] = i | (enc ? i << FMLA_PACK_SHIFT : 0);
      if (i == batch - 1) num_splits[batch] = batch;
    }

  /* Packed schedule (params.h): tried with capacities Q + d, one thread per d, against the
   * contiguous schedule's score; the best is written by thread 0 and the kernel ends there. */
  if (fmla_pack_eligible(batch, P)) {
    if (tid == 0) max_c = 0;
    for (int32_t i = tid; i < batch; i += SCHED_THREADS) {
      const int32_t r = fmla_pack_rank(cache_seqlens, batch, i);
      srt[r] = i;
      nbs[r] = (int32_t)fmla_sched_nblocks(cache_seqlens[i]);
    }
    __syncthreads();
    for (int32_t p = tid; p < P; p += SCHED_THREADS)
      atomicMax(&max_c, (unsigned long long)fmla_sched_part_cost(p, Q, W, pcum[p], pcum[p + 1], nosplit));
    if ((tid & 31) == 0 && (tid >> 5) < FMLA_PACK_DELTAS) {
      const int d = tid >> 5;
      int32_t ns = 0;
      const int64_t c = fmla_pack_run(nbs, srt, batch, P, Q + d, nxt[d], &ns, NULL, NULL, NULL);
      score[d] = (long long)fmla_pack_score(c, ns);
    }
    __syncthreads();
    int best_d = -1;
    long long best = (long long)fmla_pack_score((int64_t)max_c, nosplit ? 0 : nsplit_c);
    for (int d = 0; d < FMLA_PACK_DELTAS; ++d)
      if (score[d] < best) best = score[d], best_d = d;
    if (best_d >= 0) {
      if (tid == 0) {
        int32_t ns = 0;
        fmla_pack_run(nbs, srt, batch, P, Q + best_d, nxt[0], &ns, meta, order, pieces);
        int32_t slot = 0;
        for (int32_t i = 0; i < batch; ++i) {
          num_splits[i] = slot | (order[i] << FMLA_PACK_SHIFT);
          slot += pieces[i];
        }
        num_splits[batch] = slot;
      }
      return;
    }
  }

  /* Pass 4: one row per part. */
  for (int32_t p = tid; p < P; p += SCHED_THREADS) {
    const int64_t raw_e = (int64_t)(p + 1) * Q;
    int64_t nb_end_prev = 0;
    if (raw_e >= W)
      nb_end_prev = fmla_sched_nblocks(cache_seqlens[batch - 1]);
    else if (preq[p + 1] >= 1)
      nb_end_prev = fmla_sched_nblocks(cache_seqlens[preq[p + 1] - 1]);
    int32_t row[FMLA_META_SIZE];
    fmla_sched_part_row(p, P, Q, W, batch, preq[p], pcum[p], preq[p + 1], pcum[p + 1], nb_end_prev, nosplit, row);
    for (int k = 0; k < FMLA_META_SIZE; ++k) meta[(size_t)p * FMLA_META_SIZE + k] = row[k];
  }
}

extern "C" flash_mla_status_t fmla_launch_metadata(const int32_t *cache_seqlens, int32_t batch, int32_t num_sm_parts,
                                                   int32_t *meta, int32_t *num_splits, void *stream) {
  fmla_metadata_kernel<<<1, SCHED_THREADS, 0, (cudaStream_t)stream>>>(cache_seqlens, batch, num_sm_parts, meta,
                                                                      num_splits);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    return fmla_set_error(FLASH_MLA_ERROR_CUDA, "flash_mla_get_metadata: launch failed: %s", cudaGetErrorString(e));
  return FLASH_MLA_SUCCESS;
}
