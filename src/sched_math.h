/*
 * sched_math.h: the scheduler's arithmetic, shared by the host twin (sched_host.c) and the GPU
 * metadata kernel (sched.cu) so the two agree bit for bit. The algorithm is in params.h.
 *
 * Units: request i owns units [cum_i, cum_i + cost_i), cost_i = nb_i + FMLA_SPLIT_OVERHEAD; its
 * first FMLA_SPLIT_OVERHEAD units stand for the fixed cost of a split, unit cum_i + OVH + k for
 * n-block k. W = sum cost, Q = ceil(W / P). Raw boundary p*Q lies in request preq[p] whose first
 * unit is pcum[p]; a raw boundary inside a request's overhead units, or on its first block unit,
 * snaps to the request's start,
 * so every segment of a request with keys holds at least one n-block.
 */
#ifndef FLASH_MLA_SCHED_MATH_H
#define FLASH_MLA_SCHED_MATH_H

#include <stdint.h>
#include "params.h"

#if defined(__CUDACC__)
#define FMLA_SCHED_HD static __host__ __device__ __forceinline__
#else
#define FMLA_SCHED_HD static inline
#endif

/* n-blocks of a request of length L (negative lengths count as 0). */
FMLA_SCHED_HD int64_t fmla_sched_nblocks(int32_t L) {
  return L <= 0 ? 0 : ((int64_t)L + FMLA_BLOCK_N - 1) / FMLA_BLOCK_N;
}

FMLA_SCHED_HD int64_t fmla_sched_floor_div(int64_t a, int64_t b) { return a / b; } /* a >= 0 */

/* Splits of a request: 1 + raw boundaries strictly inside its block units (cum + OVH, cum + cost):
 * a boundary at cum + OVH would leave the part before it only the overhead units, so it snaps. */
FMLA_SCHED_HD int32_t fmla_sched_splits(int64_t cum, int64_t cost, int64_t Q) {
  if (cost <= FMLA_SPLIT_OVERHEAD) return 1;
  return (int32_t)(1 + fmla_sched_floor_div(cum + cost - 1, Q) - fmla_sched_floor_div(cum + FMLA_SPLIT_OVERHEAD, Q));
}

/* Snapped position of a raw boundary `raw` that lies in the request starting at unit `cum`
 * (no-split mode: always that request's start). */
FMLA_SCHED_HD int64_t fmla_sched_snap(int64_t raw, int64_t cum, int nosplit) {
  return nosplit || raw - cum <= FMLA_SPLIT_OVERHEAD ? cum : raw;
}

/* Cost of part p in no-split mode: [B_p, B_p+1) with both ends snapped to request starts; cum_b,
 * cum_e are the starts of the requests holding raw boundaries p*Q and (p+1)*Q (read only when
 * those are < W). */
FMLA_SCHED_HD int64_t fmla_sched_nosplit_cost(int32_t p, int64_t Q, int64_t W, int64_t cum_b, int64_t cum_e) {
  const int64_t raw_b = (int64_t)p * Q, raw_e = raw_b + Q;
  const int64_t B0 = raw_b >= W ? W : cum_b;
  const int64_t B1 = raw_e >= W ? W : cum_e;
  return B1 - B0;
}

/* No-split mode or not, from the largest no-split part cost (params.h). */
FMLA_SCHED_HD int fmla_sched_use_nosplit(int64_t max_nosplit_cost, int64_t Q) {
  return max_nosplit_cost <= Q + FMLA_SPLIT_OVERHEAD + FMLA_COMBINE_COST;
}

/*
 * Metadata row of part p (split or no-split mode). preq/pcum are indexed by part (entries p and p+1 are read when the raw
 * boundary p*Q, resp. (p+1)*Q, is < W). nb_before_end(j) must return nb of request j (only called
 * for the request that ends the part at a request boundary); it is passed pre-read as
 * nb_end_prev (nb of preq[p+1]-1, or of batch-1 when the part runs to W).
 */
FMLA_SCHED_HD void fmla_sched_part_row(int32_t p, int32_t P, int64_t Q, int64_t W, int32_t batch,
                                       int32_t req_b, int64_t cum_b, int32_t req_e, int64_t cum_e,
                                       int64_t nb_end_prev, int nosplit, int32_t *row) {
  (void)P;
  for (int k = 0; k < FMLA_META_SIZE; ++k) row[k] = 0;
  const int64_t raw_b = (int64_t)p * Q;
  const int64_t raw_e = raw_b + Q;
  if (raw_b >= W) { row[0] = batch; row[2] = -1; return; }
  const int64_t B0 = fmla_sched_snap(raw_b, cum_b, nosplit);
  const int64_t B1 = raw_e >= W ? W : fmla_sched_snap(raw_e, cum_e, nosplit);
  if (B0 == B1) { row[0] = batch; row[2] = -1; return; }
  row[0] = req_b;
  if (B0 == cum_b) {
    row[1] = 0;
    row[4] = 0;
  } else {
    row[1] = (int32_t)(B0 - cum_b - FMLA_SPLIT_OVERHEAD);
    row[4] = (int32_t)(p - fmla_sched_floor_div(cum_b + FMLA_SPLIT_OVERHEAD, Q));
  }
  if (raw_e >= W) {
    row[2] = batch - 1;
    row[3] = (int32_t)nb_end_prev;
  } else if (B1 == cum_e) {
    row[2] = req_e - 1;
    row[3] = (int32_t)nb_end_prev;
  } else {
    row[2] = req_e;
    row[3] = (int32_t)(B1 - cum_e - FMLA_SPLIT_OVERHEAD);
  }
}

#endif
