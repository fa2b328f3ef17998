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


/* ---- Packed schedule (params.h, "Packed mode") ----
 * Requests sorted by n-blocks, descending (ties: lower index first): srt[k] is the request at
 * sorted position k, nbs[k] its n-blocks. Every segment costs its n-blocks + FMLA_SPLIT_OVERHEAD.
 * Each part, with capacity T, takes in turn: the tail of the request the previous part split (all
 * of it if it fits, else as much as fits), then repeatedly the largest unused request that still
 * fits whole, then, when a request is left and at least FMLA_PACK_MIN_PIECE n-blocks of room,
 * the head of the largest unused request, whose tail opens the next part. The last part takes
 * whatever is left. Positions number the requests in the order the parts take them; a split
 * request keeps one position (the end of one part, the start of the next). */
#define FMLA_PACK_MIN_PIECE 4
#define FMLA_PACK_DELTAS 8     /* capacities tried: T = Q + d, d = 0 .. FMLA_PACK_DELTAS - 1 */
#ifndef FMLA_PACK_SPLIT_WEIGHT /* overridable only for scheduler experiments */
#define FMLA_PACK_SPLIT_WEIGHT 5 /* schedules compare by 5 * (largest part cost) + split requests */
#endif
#define FMLA_PACK_SCHED_MAX_BATCH 256 /* the packed schedule is tried for P <= batch <= this */

/* The packed schedule is tried when each part gets at least one request on average and the
 * sequential greedy stays cheap (one GPU warp per capacity tried, ~260 dependent picks at b = 128). */
FMLA_SCHED_HD int fmla_pack_eligible(int32_t batch, int32_t P) {
  return P >= 2 && batch >= P && batch <= FMLA_PACK_SCHED_MAX_BATCH;
}

/* Sorted position of request i, nb[j] = n-blocks of request j: n-blocks descending, then index
 * ascending (a total order, so the GPU's parallel ranks and the host's agree). */
FMLA_SCHED_HD int32_t fmla_pack_rank(const int32_t *nb, int32_t batch, int32_t i) {
  const int32_t ni = nb[i];
  int32_t r = 0;
  for (int32_t j = 0; j < batch; ++j) r += nb[j] > ni || (nb[j] == ni && j < i);
  return r;
}

/* Metadata row of a packed part: e_pos < 0 when the part got nothing. */
FMLA_SCHED_HD void fmla_pack_write_row(int32_t *row, int32_t batch, int32_t b_pos, int32_t b_blk, int32_t e_pos,
                                       int32_t e_blk, int32_t b_split) {
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

/* Unused sorted position at or after k (nxt[batch] == batch is the sentinel); path halving. */
FMLA_SCHED_HD int32_t fmla_pack_find(int32_t *nxt, int32_t k) {
  while (nxt[k] != k) {
    nxt[k] = nxt[nxt[k]];
    k = nxt[k];
  }
  return k;
}

/* First sorted position whose request fits whole in `room` units (batch if none). */
FMLA_SCHED_HD int32_t fmla_pack_first_fit(const int32_t *nbs, int32_t batch, int64_t room) {
  int32_t lo = 0, hi = batch;
  while (lo < hi) {
    const int32_t mid = (lo + hi) >> 1;
    if ((int64_t)nbs[mid] + FMLA_SPLIT_OVERHEAD <= room) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/* Runs the packed schedule with capacity T. Returns the largest part cost; *nsplit = requests
 * split. With meta != NULL also writes the P rows, order[pos] (request at each position) and
 * pieces[i] (segments of request i). nxt: batch + 1 ints of scratch. */
FMLA_SCHED_HD int64_t fmla_pack_run(const int32_t *nbs, const int32_t *srt, int32_t batch, int32_t P, int64_t T,
                                    int32_t *nxt, int32_t *nsplit, int32_t *meta, int32_t *order, int32_t *pieces) {
  for (int32_t k = 0; k <= batch; ++k) nxt[k] = k;
  int32_t pos = 0, carry = -1, carry_lo = 0, carry_piece = 0, ns = 0;
  int64_t maxc = 0;
  for (int32_t p = 0; p < P; ++p) {
    const int last = p == P - 1;
    int64_t room = T, cost = 0;
    int32_t b_pos = pos, b_blk = 0, b_split = 0, e_pos = -1, e_blk = 0;
    int done = 0;
    if (carry >= 0) {
      const int32_t rem = nbs[carry] - carry_lo;
      b_blk = carry_lo;
      b_split = carry_piece;
      if ((int64_t)rem + FMLA_SPLIT_OVERHEAD <= room || last) {
        cost += rem + FMLA_SPLIT_OVERHEAD;
        room -= rem + FMLA_SPLIT_OVERHEAD;
        e_pos = pos;
        e_blk = nbs[carry];
        if (pieces) pieces[srt[carry]] = carry_piece + 1;
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
      int32_t k = last ? 0 : fmla_pack_first_fit(nbs, batch, room);
      k = fmla_pack_find(nxt, k);
      if (k >= batch) break;
      nxt[k] = k + 1;
      if (order) order[pos] = srt[k];
      if (pieces) pieces[srt[k]] = 1;
      cost += nbs[k] + FMLA_SPLIT_OVERHEAD;
      room -= nbs[k] + FMLA_SPLIT_OVERHEAD;
      e_pos = pos;
      e_blk = nbs[k];
      ++pos;
    }
    if (!done && !last && room - FMLA_SPLIT_OVERHEAD >= FMLA_PACK_MIN_PIECE) {
      const int32_t k = fmla_pack_find(nxt, 0); /* the largest unused request: it does not fit whole */
      if (k < batch) {
        const int32_t take = (int32_t)(room - FMLA_SPLIT_OVERHEAD);
        nxt[k] = k + 1;
        if (order) order[pos] = srt[k];
        cost += take + FMLA_SPLIT_OVERHEAD;
        e_pos = pos;
        e_blk = take;
        carry = k;
        carry_lo = take;
        carry_piece = 1;
        ++ns;
      }
    }
    maxc = cost > maxc ? cost : maxc;
    if (meta) fmla_pack_write_row(meta + (size_t)p * FMLA_META_SIZE, batch, b_pos, b_blk, e_pos, e_blk, b_split);
  }
  *nsplit = ns;
  return maxc;
}

/* Cost of part p of the contiguous schedule when every segment is charged like the packed one's:
 * its units [B0, B1), plus FMLA_SPLIT_OVERHEAD when it opens inside a request (that segment's
 * fixed cost is not among its units). cum_b, cum_e as for fmla_sched_part_row. */
FMLA_SCHED_HD int64_t fmla_sched_part_cost(int32_t p, int64_t Q, int64_t W, int64_t cum_b, int64_t cum_e, int nosplit) {
  const int64_t raw_b = (int64_t)p * Q, raw_e = raw_b + Q;
  if (raw_b >= W) return 0;
  const int64_t B0 = fmla_sched_snap(raw_b, cum_b, nosplit);
  const int64_t B1 = raw_e >= W ? W : fmla_sched_snap(raw_e, cum_e, nosplit);
  if (B0 == B1) return 0;
  return B1 - B0 + (B0 == cum_b ? 0 : FMLA_SPLIT_OVERHEAD);
}

/* Schedules are compared by this (lower is better): one unit of the largest part against
 * FMLA_PACK_SPLIT_WEIGHT split requests (their fp32 partials and the combine's reads; H200, b = 128
 * s_k = 4K: 59 splits cost ~22 us, ~11 n-blocks of a part). */
FMLA_SCHED_HD int64_t fmla_pack_score(int64_t maxc, int32_t nsplit) {
  return FMLA_PACK_SPLIT_WEIGHT * maxc + nsplit;
}

#endif
