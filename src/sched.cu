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
 * warp d (d = 0..7) runs the greedy of sched_math.h with capacity Q + d (pack_run_warp: the same
 * schedule as the host's fmla_pack_run, each pick one warp-wide min) into its own copy in dynamic
 * shared memory; if one scores better than the contiguous schedule, the best copy is written out
 * (rows, then num_splits by a block scan) and the kernel ends. Otherwise pass 4 writes one row per
 * part. The packed pass is sequential within a warp (~17k dependent instructions at b = 128): the
 * call takes ~48-56 µs at b = 128 and ~81 µs at b = 256 on an H200 (graph replay, with a 10-18 µs
 * empty-graph floor) against 10-18 µs outside that range; the metadata is made once per decode
 * step.
 * Shared memory is fixed (FMLA_MAX_SM_PARTS entries, ~13 KB), whatever b is: b = 65,536 is
 * 64 chunks.
 *
 * Build/check alone: nvcc -std=c++17 -O3 -Xptxas -v -Iinclude -c src/sched.cu
 */
#include <atomic>

#include <cuda_runtime.h>

#include "params.h"
#include "sched_math.h"

#define SCHED_THREADS 1024
/* per packed-schedule candidate in dynamic shared memory: P <= 256 rows of FMLA_META_SIZE, then
 * order [256] and pieces [256] */
#define SCHED_PACK_ROWS_INTS (FMLA_PACK_SCHED_MAX_BATCH * FMLA_META_SIZE)
#define SCHED_PACK_BUF_INTS (SCHED_PACK_ROWS_INTS + 2 * FMLA_PACK_SCHED_MAX_BATCH)
#define SCHED_PACK_SMEM (FMLA_PACK_DELTAS * SCHED_PACK_BUF_INTS * 4)
static_assert(FMLA_PACK_SCHED_MAX_BATCH <= FMLA_PACK_MAX_BATCH, "the packed order needs num_splits' order bits");
static_assert(FMLA_PACK_SCHED_MAX_BATCH <= 32 * 32, "a lane's unused-position mask is 32 bits");
static_assert(FMLA_PACK_DELTAS * 32 <= SCHED_THREADS, "one warp per capacity tried");
static_assert(FMLA_PACK_SCHED_MAX_BATCH <= SCHED_THREADS, "num_splits of the packed schedule: one scan chunk");
static_assert(SCHED_PACK_SMEM + 48 * 1024 <= 227 * 1024, "metadata kernel shared memory");

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

/* fmla_pack_run (sched_math.h) run by one whole warp: the same schedule, but each "largest unused
 * request that fits" is one warp-wide min over the lanes' sorted positions (lane l holds positions
 * l, l + 32, ...) instead of a binary search and a union-find walk by one thread: ~8x less latency
 * per pick. Every lane computes the same scalars; lane 0 writes (when meta != NULL). Kept equal to
 * the host's fmla_pack_run by tests/python/test_gpu.py (metadata GPU == host). */
#define PACK_PER_LANE ((FMLA_PACK_SCHED_MAX_BATCH + 31) / 32)
/* Smallest unused sorted position, over the warp, whose request fits in `room` n-block units (any
 * unused one when room < 0); *nb = its n-blocks, and it is marked taken. 0x7fffffff when none.
 * The lane's fitting positions as a bit mask (independent compares), its lowest bit the lane's
 * candidate, then one warp-wide min. */
template <typename I> /* the units' integer: int32_t when the whole schedule's units fit (fewer instructions), else int64_t */
static __device__ __forceinline__ int32_t pack_pick(const int32_t *nbs, const int32_t *nbv, uint32_t *unused, I room,
                                                    int32_t *nb) {
  const int lane = threadIdx.x & 31;
  /* n-blocks + OVH <= room, in int32: n-blocks < 2^26, room clamped */
  const int32_t lim = room < 0 ? 0x7fffffff : (int32_t)(room > (I)0x7fffffff ? (I)0x7fffffff : room) - FMLA_SPLIT_OVERHEAD;
  uint32_t fit = 0;
#pragma unroll
  for (int j = 0; j < PACK_PER_LANE; ++j) fit |= (uint32_t)(nbv[j] <= lim) << j;
  fit &= *unused;
  const int32_t cand = fit ? lane + 32 * (__ffs(fit) - 1) : 0x7fffffff;
  const int32_t k = __reduce_min_sync(0xffffffffu, cand);
  if (k != 0x7fffffff) {
    *nb = nbs[k];
    if ((k & 31) == lane) *unused &= ~(1u << (k >> 5));
  }
  return k;
}

template <typename I>
static __device__ I pack_run_warp(const int32_t *nbs, const int32_t *srt, int32_t batch, int32_t P, I T, int32_t *nsplit,
                                  int32_t *meta, int32_t *order, int32_t *pieces) {
  const int lane = threadIdx.x & 31;
  int32_t nbv[PACK_PER_LANE];
  uint32_t unused = 0; /* bit j: sorted position lane + 32 j not taken yet */
#pragma unroll
  for (int j = 0; j < PACK_PER_LANE; ++j) {
    const int k = lane + 32 * j;
    nbv[j] = k < batch ? nbs[k] : 0;
    if (k < batch) unused |= 1u << j;
  }
  int32_t pos = 0, carry = -1, carry_nb = 0, carry_lo = 0, carry_piece = 0, ns = 0;
  I maxc = 0;
  for (int32_t p = 0; p < P; ++p) {
    const int last = p == P - 1;
    I room = T, cost = 0;
    int32_t b_pos = pos, b_blk = 0, b_split = 0, e_pos = -1, e_blk = 0;
    int done = 0;
    if (carry >= 0) {
      const int32_t rem = carry_nb - carry_lo;
      b_blk = carry_lo;
      b_split = carry_piece;
      if ((I)rem + FMLA_SPLIT_OVERHEAD <= room || last) {
        cost += rem + FMLA_SPLIT_OVERHEAD;
        room -= rem + FMLA_SPLIT_OVERHEAD;
        e_pos = pos;
        e_blk = carry_nb;
        if (pieces && lane == 0) pieces[srt[carry]] = carry_piece + 1;
        ++pos;
        carry = -1;
      } else {
        const int32_t take = (int32_t)(room - FMLA_SPLIT_OVERHEAD);
        cost += take + FMLA_SPLIT_OVERHEAD;
        e_pos = pos;
        e_blk = carry_lo + take;
        carry_lo += take;
        ++carry_piece;
        done = 1;
      }
    }
    while (!done) {
      int32_t nb = 0;
      const int32_t k = pack_pick<I>(nbs, nbv, &unused, last ? (I)-1 : room, &nb);
      if (k == 0x7fffffff) break;
      if (lane == 0 && order) {
        order[pos] = srt[k];
        pieces[srt[k]] = 1;
      }
      cost += nb + FMLA_SPLIT_OVERHEAD;
      room -= nb + FMLA_SPLIT_OVERHEAD;
      e_pos = pos;
      e_blk = nb;
      ++pos;
    }
    if (!done && !last && room - FMLA_SPLIT_OVERHEAD >= FMLA_PACK_MIN_PIECE) {
      int32_t nb = 0;
      const int32_t k = pack_pick<I>(nbs, nbv, &unused, (I)-1, &nb); /* the largest unused request: it does not fit whole */
      if (k != 0x7fffffff) {
        const int32_t take = (int32_t)(room - FMLA_SPLIT_OVERHEAD);
        if (lane == 0 && order) order[pos] = srt[k];
        cost += take + FMLA_SPLIT_OVERHEAD;
        e_pos = pos;
        e_blk = take;
        carry = k;
        carry_nb = nb;
        carry_lo = take;
        carry_piece = 1;
        ++ns;
      }
    }
    maxc = cost > maxc ? cost : maxc;
    if (meta && lane == 0) {
      int32_t *row = meta + (size_t)p * FMLA_META_SIZE;
      for (int j = 0; j < FMLA_META_SIZE; ++j) row[j] = 0;
      if (e_pos < 0) {
        row[0] = batch;
        row[2] = -1;
      } else {
        row[0] = b_pos;
        row[1] = b_blk;
        row[2] = e_pos;
        row[3] = e_blk;
        row[4] = b_split;
      }
    }
  }
  *nsplit = ns;
  return maxc;
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
  __shared__ int32_t nbr[FMLA_PACK_SCHED_MAX_BATCH];
  __shared__ long long score[FMLA_PACK_DELTAS];
  /* dynamic: per capacity d, the schedule as fmla_pack_run writes it (rows, order, pieces) */
  extern __shared__ int32_t pack_buf[];
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

  /* Packed schedule (params.h): tried with capacities Q + d, one warp per d, against the
   * contiguous schedule's score; the best is written out and the kernel ends there. */
  if (fmla_pack_eligible(batch, P)) {
    if (tid == 0) max_c = 0;
    for (int32_t i = tid; i < batch; i += SCHED_THREADS) nbr[i] = (int32_t)fmla_sched_nblocks(cache_seqlens[i]);
    __syncthreads();
    for (int32_t i = tid; i < batch; i += SCHED_THREADS) { /* rank: fmla_pack_rank on the n-blocks */
      const int32_t ni = nbr[i];
      int32_t r = 0;
      for (int32_t j = 0; j < batch; ++j) r += nbr[j] > ni || (nbr[j] == ni && j < i);
      srt[r] = i;
      nbs[r] = ni;
    }
    __syncthreads();
    for (int32_t p = tid; p < P; p += SCHED_THREADS)
      atomicMax(&max_c, (unsigned long long)fmla_sched_part_cost(p, Q, W, pcum[p], pcum[p + 1], nosplit));
    if ((tid >> 5) < FMLA_PACK_DELTAS) { /* warp d tries capacity Q + d, writing its own copy */
      const int d = tid >> 5;
      int32_t *buf = pack_buf + (size_t)d * SCHED_PACK_BUF_INTS;
      int32_t ns = 0;
      int32_t *order_d = buf + SCHED_PACK_ROWS_INTS, *pieces_d = order_d + FMLA_PACK_SCHED_MAX_BATCH;
      /* every part cost is at most W + (P - 1) * OVH + P * d units: int32 when that fits */
      const int64_t c = W + (int64_t)P * (FMLA_SPLIT_OVERHEAD + FMLA_PACK_DELTAS) < 0x40000000ll
                            ? (int64_t)pack_run_warp<int32_t>(nbs, srt, batch, P, (int32_t)(Q + d), &ns, buf, order_d, pieces_d)
                            : pack_run_warp<int64_t>(nbs, srt, batch, P, Q + d, &ns, buf, order_d, pieces_d);
      if ((tid & 31) == 0) score[d] = (long long)fmla_pack_score(c, ns);
    }
    __syncthreads();
    int best_d = -1;
    long long best = (long long)fmla_pack_score((int64_t)max_c, nosplit ? 0 : nsplit_c);
    for (int d = 0; d < FMLA_PACK_DELTAS; ++d)
      if (score[d] < best) best = score[d], best_d = d;
    if (best_d >= 0) { /* the packed schedule of capacity Q + best_d: rows, then num_splits */
      const int32_t *buf = pack_buf + (size_t)best_d * SCHED_PACK_BUF_INTS;
      const int32_t *order = buf + SCHED_PACK_ROWS_INTS, *pieces = order + FMLA_PACK_SCHED_MAX_BATCH;
      for (int32_t k = tid; k < P * FMLA_META_SIZE; k += SCHED_THREADS) meta[k] = buf[k];
      const int64_t v = tid < batch ? pieces[tid] : 0; /* batch <= 256 < SCHED_THREADS: one chunk */
      int64_t total;
      const int64_t slot = block_inclusive_scan(v, warp_buf, &total) - v;
      if (tid < batch) num_splits[tid] = (int32_t)slot | (order[tid] << FMLA_PACK_SHIFT);
      if (tid == 0) num_splits[batch] = (int32_t)total;
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
  /* The packed candidates' shared memory (80 KB) is past the 48 KB default: set once per device (a
   * bit per device; devices >= 64 every time). Only launches that try the packed schedule need it. */
  static std::atomic<unsigned long long> attr_set(0);
  const int pack = fmla_pack_eligible(batch, num_sm_parts);
  if (pack) {
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    const unsigned long long bit = e == cudaSuccess && dev < 64 ? 1ull << dev : 0ull;
    if (e == cudaSuccess && !(bit && (attr_set.load(std::memory_order_acquire) & bit))) {
      e = cudaFuncSetAttribute(fmla_metadata_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, SCHED_PACK_SMEM);
      if (e == cudaSuccess) attr_set.fetch_or(bit, std::memory_order_acq_rel);
    }
    if (e != cudaSuccess)
      return fmla_set_error(FLASH_MLA_ERROR_CUDA, "flash_mla_get_metadata: shared memory attribute: %s", cudaGetErrorString(e));
  }
  fmla_metadata_kernel<<<1, SCHED_THREADS, pack ? SCHED_PACK_SMEM : 0, (cudaStream_t)stream>>>(cache_seqlens, batch,
                                                                                               num_sm_parts, meta, num_splits);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    return fmla_set_error(FLASH_MLA_ERROR_CUDA, "flash_mla_get_metadata: launch failed: %s", cudaGetErrorString(e));
  return FLASH_MLA_SUCCESS;
}
