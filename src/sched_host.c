/*
 * sched_host.c: host twin of the GPU metadata kernel (sched.cu), for tests and debugging.
 * Same arithmetic (sched_math.h), same output bit for bit; algorithm in params.h.
 */
#include <stdlib.h>

#include "params.h"
#include "sched_math.h"

flash_mla_status_t fmla_check_metadata_args(const int32_t *cache_seqlens, int32_t batch, int32_t num_sm_parts,
                                            const int32_t *meta, const int32_t *num_splits) {
  if (!cache_seqlens) return fmla_set_error(FLASH_MLA_ERROR_NULL_POINTER, "cache_seqlens is NULL");
  if (!meta) return fmla_set_error(FLASH_MLA_ERROR_NULL_POINTER, "tile_scheduler_metadata is NULL");
  if (!num_splits) return fmla_set_error(FLASH_MLA_ERROR_NULL_POINTER, "num_splits is NULL");
  if (batch < 1) return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "batch = %d must be >= 1", batch);
  if (num_sm_parts < 1 || num_sm_parts > FMLA_MAX_SM_PARTS)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "num_sm_parts = %d must be in [1, %d]", num_sm_parts,
                          FMLA_MAX_SM_PARTS);
  if (((uintptr_t)cache_seqlens | (uintptr_t)meta | (uintptr_t)num_splits) % 4 != 0)
    return fmla_set_error(FLASH_MLA_ERROR_MISALIGNED, "cache_seqlens, tile_scheduler_metadata and num_splits must be 4-byte aligned");
  return FLASH_MLA_SUCCESS;
}

flash_mla_status_t flash_mla_get_metadata_host(const int32_t *cache_seqlens, int32_t batch, int32_t num_sm_parts,
                                               int32_t *meta, int32_t *num_splits) {
  flash_mla_status_t st = fmla_check_metadata_args(cache_seqlens, batch, num_sm_parts, meta, num_splits);
  if (st != FLASH_MLA_SUCCESS) return st;
  const int32_t P = num_sm_parts;
  int32_t *preq = (int32_t *)malloc(sizeof(int32_t) * (size_t)(P + 1));
  int64_t *pcum = (int64_t *)malloc(sizeof(int64_t) * (size_t)(P + 1));
  if (!preq || !pcum) {
    free(preq);
    free(pcum);
    return fmla_set_error(FLASH_MLA_ERROR_INTERNAL, "flash_mla_get_metadata_host: out of host memory");
  }
  int64_t W = 0;
  for (int32_t i = 0; i < batch; ++i) W += fmla_sched_nblocks(cache_seqlens[i]) + FMLA_SPLIT_OVERHEAD;
  const int64_t Q = (W + P - 1) / P;

  /* One sweep: prefix sums, splits per request, and the request holding each raw boundary. */
  int64_t cum = 0;
  int32_t splits = 0, p = 0;
  for (int32_t i = 0; i < batch; ++i) {
    const int64_t cost = fmla_sched_nblocks(cache_seqlens[i]) + FMLA_SPLIT_OVERHEAD;
    num_splits[i] = splits;
    splits += fmla_sched_splits(cum, cost, Q);
    for (; p <= P && (int64_t)p * Q < cum + cost; ++p) {
      preq[p] = i;
      pcum[p] = cum;
    }
    cum += cost;
  }
  num_splits[batch] = splits;
  for (; p <= P; ++p) { /* boundaries at or past W: never read as a request */
    preq[p] = batch;
    pcum[p] = W;
  }

  int64_t max_ns = 0; /* split or no-split mode (params.h) */
  for (int32_t q = 0; q < P; ++q) {
    const int64_t c = fmla_sched_nosplit_cost(q, Q, W, pcum[q], pcum[q + 1]);
    max_ns = c > max_ns ? c : max_ns;
  }
  const int nosplit = fmla_sched_use_nosplit(max_ns, Q);
  if (nosplit)
    for (int32_t i = 0; i <= batch; ++i) num_splits[i] = i;

  if (fmla_pack_eligible(batch, P)) {
    /* The packed schedule, tried against the contiguous one (params.h, "Packed mode"). */
    int32_t nsplit_c = 0;
    for (int32_t i = 0; i < batch; ++i) nsplit_c += num_splits[i + 1] - num_splits[i] > 1;
    int64_t maxc_c = 0;
    for (int32_t q = 0; q < P; ++q) {
      const int64_t c = fmla_sched_part_cost(q, Q, W, pcum[q], pcum[q + 1], nosplit);
      maxc_c = c > maxc_c ? c : maxc_c;
    }
    int32_t *buf = (int32_t *)malloc(sizeof(int32_t) * (size_t)(5 * batch + 1));
    if (!buf) {
      free(preq);
      free(pcum);
      return fmla_set_error(FLASH_MLA_ERROR_INTERNAL, "flash_mla_get_metadata_host: out of host memory");
    }
    int32_t *srt = buf, *nbs = buf + batch, *order = buf + 2 * batch, *pieces = buf + 3 * batch, *nxt = buf + 4 * batch;
    for (int32_t i = 0; i < batch; ++i) order[i] = (int32_t)fmla_sched_nblocks(cache_seqlens[i]); /* n-blocks, for now */
    for (int32_t i = 0; i < batch; ++i) {
      const int32_t r = fmla_pack_rank(order, batch, i);
      srt[r] = i;
      nbs[r] = order[i];
    }
    int64_t best = fmla_pack_score(maxc_c, nsplit_c);
    int32_t best_d = -1;
    for (int32_t d = 0; d < FMLA_PACK_DELTAS; ++d) {
      int32_t ns = 0;
      const int64_t c = fmla_pack_run(nbs, srt, batch, P, Q + d, nxt, &ns, NULL, NULL, NULL);
      const int64_t sc = fmla_pack_score(c, ns);
      if (sc < best) {
        best = sc;
        best_d = d;
      }
    }
    if (best_d >= 0) {
      int32_t ns = 0;
      fmla_pack_run(nbs, srt, batch, P, Q + best_d, nxt, &ns, meta, order, pieces);
      int32_t slot = 0;
      for (int32_t i = 0; i < batch; ++i) {
        num_splits[i] = slot | (order[i] << FMLA_PACK_SHIFT);
        slot += pieces[i];
      }
      num_splits[batch] = slot;
      free(buf);
      free(preq);
      free(pcum);
      fmla_clear_error();
      return FLASH_MLA_SUCCESS;
    }
    free(buf);
  }
  if (batch <= FMLA_PACK_MAX_BATCH) /* identity order in the high bits (params.h) */
    for (int32_t i = 0; i < batch; ++i) num_splits[i] |= i << FMLA_PACK_SHIFT;

  for (int32_t q = 0; q < P; ++q) {
    const int64_t raw_e = (int64_t)(q + 1) * Q;
    int64_t nb_end_prev = 0;
    if (raw_e >= W)
      nb_end_prev = fmla_sched_nblocks(cache_seqlens[batch - 1]);
    else if (preq[q + 1] >= 1)
      nb_end_prev = fmla_sched_nblocks(cache_seqlens[preq[q + 1] - 1]);
    fmla_sched_part_row(q, P, Q, W, batch, preq[q], pcum[q], preq[q + 1], pcum[q + 1], nb_end_prev, nosplit,
                        meta + (size_t)q * FMLA_META_SIZE);
  }
  free(preq);
  free(pcum);
  fmla_clear_error();
  return FLASH_MLA_SUCCESS;
}
