/*
 * test_sched.c: flash_mla_get_metadata_host, the host twin of the GPU scheduler (params.h).
 *
 * 1. Properties, on random batches (b 1..65536, lengths 0..200000 with many zeros and all-zero
 *    batches) for num_sm_parts in {1, 2, 7, 66, 132, 264}:
 *    - every n-block of every request is covered exactly once by the segments of all parts, and
 *      every request (L == 0 too) has at least one segment; no segment of a request with L > 0 is
 *      empty;
 *    - num_splits[0] == 0, num_splits[i+1] - num_splits[i] == segments of request i, whose split
 *      indices are exactly 0..n-1; total splits <= batch + num_sm_parts - 1;
 *    - balance: cost(part) = sum over its segments of (blocks + FMLA_SPLIT_OVERHEAD) <=
 *      Q + FMLA_SPLIT_OVERHEAD, Q = ceil(W / P), W = sum_i (nb_i + FMLA_SPLIT_OVERHEAD), when
 *      some request is split; when none is, <= Q + FMLA_SPLIT_OVERHEAD + FMLA_COMBINE_COST (the
 *      no-split mode's bound, params.h).
 *      Why: a part that starts inside a request's block units starts at a raw boundary p*Q and
 *      ends at or before (p+1)*Q, so it holds <= Q units and pays one extra overhead for its first
 *      segment; a part that starts at a request start was snapped back by at most
 *      FMLA_SPLIT_OVERHEAD units, so it holds <= Q + FMLA_SPLIT_OVERHEAD units, each segment's
 *      overhead being among them;
 *    - empty parts have begin_req >= batch; words 5..7 of every row are 0; nothing is written
 *      past the arrays; negative lengths schedule like 0.
 * 2. Exact metadata against a model written from the algorithm text of params.h, on the same
 *    batches, and a few hand-computed tiny cases.
 * 3. Bad arguments: NULL pointers, batch <= 0, num_sm_parts <= 0 or > FMLA_MAX_SM_PARTS,
 *    misaligned pointers: the right status, a message naming the argument, outputs untouched.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flash_mla.h"
#include "params.h"
#include "sched_math.h"
#include "test_util.h"

#define OVH FMLA_SPLIT_OVERHEAD
#define GUARD 4
#define GUARD_VAL ((int32_t)0x5a5a5a5a)

static int64_t nblocks(int32_t L) { return L <= 0 ? 0 : ((int64_t)L + FLASH_MLA_BLOCK_N - 1) / FLASH_MLA_BLOCK_N; }

typedef struct seg {
  int32_t req, lo, hi, split, part;
} seg;

static int seg_cmp(const void *a, const void *b) {
  const seg *x = a, *y = b;
  if (x->req != y->req) return x->req < y->req ? -1 : 1;
  if (x->lo != y->lo) return x->lo < y->lo ? -1 : 1;
  if (x->hi != y->hi) return x->hi < y->hi ? -1 : 1;
  return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Model of the algorithm, straight from the text of params.h: units of request i are
 * [cum_i, cum_i + cost_i), the first OVH of them its fixed cost. Raw boundary p*Q that falls in
 * request i's overhead, or exactly on its first block unit (else the segment before it would hold
 * overhead only), moves back to cum_i.
 * ------------------------------------------------------------------------------------------- */
typedef struct model {
  int64_t W, Q;
  int64_t *cum;   /* [batch + 1] */
  int64_t *B;     /* [P + 1] part boundaries */
  int32_t *meta;  /* [P * 8]; empty parts: begin_req = batch */
  int32_t *ns;    /* [batch + 1] */
} model;

/* Request whose units hold unit x (0 <= x < W): the last i with cum[i] <= x. */
static int32_t req_of(const int64_t *cum, int32_t batch, int64_t x) {
  int32_t lo = 0, hi = batch - 1;
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo + 1) / 2;
    if (cum[mid] <= x)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

static void model_build(model *m, const int32_t *L, int32_t batch, int32_t P) {
  m->cum = malloc(sizeof(int64_t) * (size_t)(batch + 1));
  m->B = malloc(sizeof(int64_t) * (size_t)(P + 1));
  m->meta = calloc((size_t)P * FMLA_META_SIZE, sizeof(int32_t));
  m->ns = malloc(sizeof(int32_t) * (size_t)(batch + 1));
  m->cum[0] = 0;
  for (int32_t i = 0; i < batch; ++i) m->cum[i + 1] = m->cum[i] + nblocks(L[i]) + OVH;
  m->W = m->cum[batch];
  m->Q = (m->W + P - 1) / P;
  m->B[0] = 0;
  m->B[P] = m->W;
  for (int32_t p = 1; p < P; ++p) {
    const int64_t raw = (int64_t)p * m->Q;
    if (raw >= m->W) {
      m->B[p] = m->W;
      continue;
    }
    const int64_t c = m->cum[req_of(m->cum, batch, raw)];
    m->B[p] = raw - c <= OVH ? c : raw;
  }
  /* no-split mode: every boundary moved back to the start of its request, taken when its largest
   * part costs at most Q + OVH + FMLA_COMBINE_COST */
  int64_t *Bn = malloc(sizeof(int64_t) * (size_t)(P + 1)), max_ns = 0;
  for (int32_t p = 0; p <= P; ++p) {
    const int64_t raw = (int64_t)p * m->Q;
    Bn[p] = raw >= m->W ? m->W : m->cum[req_of(m->cum, batch, raw)];
    if (p > 0 && Bn[p] - Bn[p - 1] > max_ns) max_ns = Bn[p] - Bn[p - 1];
  }
  if (max_ns <= m->Q + OVH + FMLA_COMBINE_COST)
    for (int32_t p = 0; p <= P; ++p) m->B[p] = Bn[p];
  free(Bn);
  /* splits: 1 + boundaries strictly inside the request's units */
  for (int32_t i = 0; i < batch; ++i) m->ns[i + 1] = 1;
  for (int32_t p = 1; p < P; ++p)
    if (m->B[p] < m->W) {
      const int32_t i = req_of(m->cum, batch, m->B[p]);
      if (m->B[p] > m->cum[i]) ++m->ns[i + 1];
    }
  m->ns[0] = 0;
  for (int32_t i = 0; i < batch; ++i) m->ns[i + 1] += m->ns[i];
  for (int32_t p = 0; p < P; ++p) {
    int32_t *row = m->meta + (size_t)p * FMLA_META_SIZE;
    const int64_t b0 = m->B[p], b1 = m->B[p + 1];
    if (b0 >= b1) {
      row[0] = batch;
      continue;
    }
    const int32_t ib = req_of(m->cum, batch, b0), ie = req_of(m->cum, batch, b1 - 1);
    row[0] = ib;
    row[1] = b0 == m->cum[ib] ? 0 : (int32_t)(b0 - m->cum[ib] - OVH);
    row[2] = ie;
    const int64_t eb = b1 - m->cum[ie] - OVH, nb = nblocks(L[ie]);
    row[3] = (int32_t)(eb < nb ? eb : nb);
    int32_t split = 0; /* boundaries inside request ib at or before b0 */
    for (int32_t q = 1; q <= p; ++q)
      if (m->B[q] > m->cum[ib] && m->B[q] < m->cum[ib + 1]) ++split;
    row[4] = split;
  }
}

static void model_free(model *m) {
  free(m->cum);
  free(m->B);
  free(m->meta);
  free(m->ns);
}

/* ---------------------------------------------------------------------------------------------
 * Property checks of one (batch, P) result. Returns 0 when a check failed (to stop early).
 * ------------------------------------------------------------------------------------------- */
static long g_cases, g_segments, g_empty_parts, g_packed;

static void check_one(const int32_t *L, int32_t batch, int32_t P, const char *what) {
  int32_t *meta = malloc(sizeof(int32_t) * ((size_t)P * FMLA_META_SIZE + GUARD));
  int32_t *ns = malloc(sizeof(int32_t) * ((size_t)batch + 1 + GUARD));
  for (size_t k = 0; k < (size_t)P * FMLA_META_SIZE + GUARD; ++k) meta[k] = GUARD_VAL;
  for (size_t k = 0; k < (size_t)batch + 1 + GUARD; ++k) ns[k] = GUARD_VAL;
  ++g_cases;

  const flash_mla_status_t st = flash_mla_get_metadata_host(L, batch, P, meta, ns);
  CHECK(st == FLASH_MLA_SUCCESS, "%s b=%d P=%d: status %d: %s", what, batch, P, (int)st, flash_mla_last_error());
  if (st != FLASH_MLA_SUCCESS) goto done;
  CHECK(flash_mla_last_error()[0] == '\0', "%s: last error after success is \"%s\"", what, flash_mla_last_error());
  int guards = 1;
  for (int k = 0; k < GUARD; ++k) guards &= meta[(size_t)P * FMLA_META_SIZE + k] == GUARD_VAL && ns[batch + 1 + k] == GUARD_VAL;
  CHECK(guards, "%s b=%d P=%d: wrote past tile_scheduler_metadata or num_splits", what, batch, P);

  int64_t W = 0;
  for (int32_t i = 0; i < batch; ++i) W += nblocks(L[i]) + OVH;
  const int64_t Q = (W + P - 1) / P;

  /* num_splits: slot bases (and, for batch <= FMLA_PACK_MAX_BATCH, the part order; params.h) */
  int32_t *sl = malloc(sizeof(int32_t) * ((size_t)batch + 1)), *reqat = malloc(sizeof(int32_t) * (size_t)batch);
  char *perm = calloc((size_t)batch, 1);
  int perm_ok = 1;
  for (int32_t i = 0; i <= batch; ++i) sl[i] = fmla_ns_slot(ns, batch, i);
  for (int32_t k = 0; k < batch; ++k) {
    reqat[k] = fmla_ns_req(ns, batch, k);
    if (reqat[k] < 0 || reqat[k] >= batch || perm[reqat[k]]) perm_ok = 0;
    else perm[reqat[k]] = 1;
  }
  free(perm);
  CHECK(perm_ok, "%s b=%d P=%d: the part order in num_splits is not a permutation of the requests", what, batch, P);
  if (!perm_ok) {
    free(sl);
    free(reqat);
    goto done;
  }
  CHECK(batch > FMLA_PACK_MAX_BATCH || ns[batch] == sl[batch], "%s b=%d P=%d: num_splits[batch] has order bits", what, batch, P);
  const int32_t *ns_plain = ns; /* the raw entries (negative-length check below; freed at the end) */
  ns = sl;
  CHECK(ns[0] == 0, "%s b=%d P=%d: num_splits[0] = %d", what, batch, P, ns[0]);
  int mono = 1;
  int32_t bad_i = -1;
  for (int32_t i = 0; i < batch && mono; ++i)
    if (ns[i + 1] < ns[i] + 1) mono = 0, bad_i = i;
  CHECK(mono, "%s b=%d P=%d: num_splits[%d] = %d, num_splits[%d] = %d: every request needs >= 1 split", what, batch, P, bad_i,
        bad_i >= 0 ? ns[bad_i] : 0, bad_i + 1, bad_i >= 0 ? ns[bad_i + 1] : 0);
  CHECK((int64_t)ns[batch] <= (int64_t)batch + P - 1, "%s b=%d P=%d: total splits %d > batch + num_sm_parts - 1", what, batch,
        P, ns[batch]);

  /* segments of every part */
  const size_t max_segs = (size_t)batch + (size_t)P + 16;
  seg *segs = malloc(sizeof(seg) * max_segs);
  size_t n = 0;
  int rows_ok = 1, cost_ok = 1;
  /* split schedule: Q + OVH; a schedule that splits nothing may be the no-split mode's, which is
   * taken only when its largest part is at most FMLA_COMBINE_COST units above that */
  const int64_t bound = Q + OVH + (ns[batch] > batch ? 0 : FMLA_COMBINE_COST);
  int32_t bad_part = -1, bad_part_c = -1;
  int64_t bad_cost = 0, max_cost = 0;
  for (int32_t p = 0; p < P; ++p) {
    const int32_t *row = meta + (size_t)p * FMLA_META_SIZE;
    if (row[5] != 0 || row[6] != 0 || row[7] != 0) rows_ok = 0, bad_part = p;
    if (row[0] >= batch) {
      ++g_empty_parts;
      continue;
    }
    const int32_t rb = row[0], re = row[2];
    if (rb < 0 || re < rb || re >= batch) {
      rows_ok = 0, bad_part = p;
      continue;
    }
    int64_t cost = 0;
    for (int32_t i = rb; i <= re; ++i) { /* i: a position of the part order */
      seg s;
      s.req = reqat[i];
      s.lo = i == rb ? row[1] : 0;
      s.hi = i == re ? row[3] : (int32_t)nblocks(L[s.req]);
      s.split = i == rb ? row[4] : 0;
      s.part = p;
      if (s.lo < 0 || s.hi < s.lo || s.hi > nblocks(L[s.req])) rows_ok = 0, bad_part = p;
      cost += (int64_t)(s.hi - s.lo) + OVH;
      if (n < max_segs) segs[n++] = s;
      else rows_ok = 0;
    }
    if (cost > max_cost) max_cost = cost;
    if (cost > bound && cost_ok) bad_part_c = p, bad_cost = cost, cost_ok = 0;
  }
  int32_t nsplit_req = 0;
  for (int32_t i = 0; i < batch; ++i) nsplit_req += ns[i + 1] - ns[i] > 1;
  int packed = 0; /* decided below, against the contiguous model */
  for (int32_t k = 0; k < batch && !packed; ++k) packed = reqat[k] != k;
  CHECK(rows_ok, "%s b=%d P=%d: malformed metadata row of part %d", what, batch, P, bad_part);
  /* The contiguous schedule's bound; a packed schedule is only taken when it scores better than the
   * contiguous one (checked against the model below), whatever its largest part. */
  g_segments += (long)n;

  /* per request: tiling, counts, split indices */
  qsort(segs, n, sizeof(seg), seg_cmp);
  char *seen = malloc((size_t)P + 2);
  size_t k = 0;
  int reported = 0;
  for (int32_t i = 0; i < batch; ++i) {
    const int64_t nb = nblocks(L[i]);
    size_t k0 = k;
    while (k < n && segs[k].req == i) ++k;
    const int64_t cnt = (int64_t)(k - k0);
    int ok = cnt >= 1 && cnt == (int64_t)ns[i + 1] - ns[i] && cnt <= P;
    const char *why = cnt < 1 ? "no segment" : "segment count != num_splits[i+1] - num_splits[i]";
    if (ok) {
      memset(seen, 0, (size_t)cnt);
      int64_t pos = 0;
      for (size_t s = k0; s < k && ok; ++s) {
        if (segs[s].lo != pos) ok = 0, why = "n-blocks not covered exactly once";
        else if (nb > 0 && segs[s].hi == segs[s].lo) ok = 0, why = "empty segment of a request with keys";
        else if (segs[s].split < 0 || segs[s].split >= cnt || seen[segs[s].split]) ok = 0, why = "split indices are not 0..n-1";
        else seen[segs[s].split] = 1, pos = segs[s].hi;
      }
      if (ok && pos != nb) ok = 0, why = "n-blocks not covered exactly once";
    }
    if (!ok && reported++ < 3 && tu_failed < TU_MAX_REPORTS) {
      CHECK(ok, "%s b=%d P=%d: request %d (L=%d, nb=%lld): %s; segments:", what, batch, P, i, L[i], (long long)nb, why);
      for (size_t s = k0; s < k && s < k0 + 8; ++s)
        fprintf(stderr, "    part %d: blocks [%d, %d) split %d\n", segs[s].part, segs[s].lo, segs[s].hi, segs[s].split);
    } else if (!ok) {
      CHECK(ok, "%s", "(same)");
    } else {
      ++tu_passed;
    }
  }
  CHECK(k == n, "%s b=%d P=%d: segments of requests out of range", what, batch, P);
  free(seen);
  free(segs);

  /* exact metadata against the model */
  {
    model m;
    model_build(&m, L, batch, P);
    /* the contiguous model's score, with the same per-segment cost as above */
    int64_t m_max = 0;
    int32_t m_split = 0;
    for (int32_t i = 0; i < batch; ++i) m_split += m.ns[i + 1] - m.ns[i] > 1;
    for (int32_t p = 0; p < P; ++p) {
      const int32_t *row = m.meta + (size_t)p * FMLA_META_SIZE;
      if (row[0] >= batch) continue;
      int64_t c = 0;
      for (int32_t i = row[0]; i <= row[2]; ++i)
        c += (i == row[2] ? row[3] : nblocks(L[i])) - (i == row[0] ? row[1] : 0) + OVH;
      if (c > m_max) m_max = c;
    }
    /* a schedule that is not the contiguous model's is the packed one (params.h) */
    if (!packed) packed = memcmp(m.ns, ns, sizeof(int32_t) * (size_t)(batch + 1)) != 0;
    for (int32_t p = 0; p < P && !packed; ++p) {
      const int32_t *a = meta + (size_t)p * FMLA_META_SIZE, *b = m.meta + (size_t)p * FMLA_META_SIZE;
      packed = b[0] >= batch ? a[0] < batch : memcmp(a, b, sizeof(int32_t) * FMLA_META_SIZE) != 0;
    }
    if (packed) {
      CHECK(batch >= P && batch <= FMLA_PACK_SCHED_MAX_BATCH, "%s b=%d P=%d: packed order outside the packed mode's range", what,
            batch, P);
      CHECK(FMLA_PACK_SPLIT_WEIGHT * max_cost + nsplit_req < FMLA_PACK_SPLIT_WEIGHT * m_max + m_split,
            "%s b=%d P=%d: packed schedule (largest part %lld, %d split) does not score better than the contiguous one "
            "(%lld, %d)", what, batch, P, (long long)max_cost, nsplit_req, (long long)m_max, m_split);
      ++g_packed;
      model_free(&m);
      goto after_model;
    }
    /* the contiguous schedule's bound (a packed one is checked by its score above) */
    CHECK(cost_ok, "%s b=%d P=%d: part %d costs %lld > %lld (Q=%lld, W=%lld, %s)", what, batch, P, bad_part_c,
          (long long)bad_cost, (long long)bound, (long long)Q, (long long)W, ns[batch] > batch ? "split" : "no request split");
    int same_ns = memcmp(m.ns, ns, sizeof(int32_t) * (size_t)(batch + 1)) == 0;
    CHECK(same_ns, "%s b=%d P=%d: num_splits differs from the params.h model (total %d vs %d)", what, batch, P, ns[batch],
          m.ns[batch]);
    int32_t diff = -1;
    for (int32_t p = 0; p < P && diff < 0; ++p) {
      const int32_t *a = meta + (size_t)p * FMLA_META_SIZE, *b = m.meta + (size_t)p * FMLA_META_SIZE;
      if (b[0] >= batch) {
        if (a[0] < batch) diff = p;
      } else if (memcmp(a, b, sizeof(int32_t) * FMLA_META_SIZE) != 0) {
        diff = p;
      }
    }
    if (diff >= 0) {
      const int32_t *a = meta + (size_t)diff * FMLA_META_SIZE, *b = m.meta + (size_t)diff * FMLA_META_SIZE;
      CHECK(diff < 0, "%s b=%d P=%d: part %d row {%d,%d,%d,%d,%d}, params.h model {%d,%d,%d,%d,%d} (W=%lld Q=%lld)", what,
            batch, P, diff, a[0], a[1], a[2], a[3], a[4], b[0], b[1], b[2], b[3], b[4], (long long)m.W, (long long)m.Q);
    } else {
      CHECK(1, "%s", "");
    }
    model_free(&m);
  }
after_model:

  /* negative lengths schedule like 0 */
  {
    int any_zero = 0;
    for (int32_t i = 0; i < batch && !any_zero; ++i) any_zero = L[i] == 0;
    if (any_zero && batch <= 4096) {
      int32_t *L2 = malloc(sizeof(int32_t) * (size_t)batch);
      for (int32_t i = 0; i < batch; ++i) L2[i] = L[i] == 0 ? -1 - (i % 3) * 1000 : L[i];
      int32_t *meta2 = malloc(sizeof(int32_t) * (size_t)P * FMLA_META_SIZE);
      int32_t *ns2 = malloc(sizeof(int32_t) * ((size_t)batch + 1));
      const flash_mla_status_t st2 = flash_mla_get_metadata_host(L2, batch, P, meta2, ns2);
      CHECK(st2 == FLASH_MLA_SUCCESS && memcmp(meta2, meta, sizeof(int32_t) * (size_t)P * FMLA_META_SIZE) == 0 &&
                memcmp(ns2, ns_plain, sizeof(int32_t) * ((size_t)batch + 1)) == 0,
            "%s b=%d P=%d: negative lengths do not schedule like 0", what, batch, P);
      free(L2);
      free(meta2);
      free(ns2);
    }
  }
  ns = (int32_t *)ns_plain;
  free(sl);
  free(reqat);
done:
  free(meta);
  free(ns);
}

/* ---------------------------------------------------------------------------------------------
 * Hand-computed cases (OVH = 5, 64 keys per n-block)
 * ------------------------------------------------------------------------------------------- */
static void expect_exact_order(const char *name, const int32_t *L, int32_t batch, int32_t P, const int32_t (*rows)[5],
                               const int32_t *want_ns, const int32_t *want_order) {
  int32_t meta[16 * FMLA_META_SIZE], ns[17];
  const flash_mla_status_t st = flash_mla_get_metadata_host(L, batch, P, meta, ns);
  CHECK(st == FLASH_MLA_SUCCESS, "%s: status %d", name, (int)st);
  if (st != FLASH_MLA_SUCCESS) return;
  for (int32_t i = 0; i <= batch; ++i)
    CHECK(fmla_ns_slot(ns, batch, i) == want_ns[i], "%s: num_splits[%d] slot %d, want %d", name, i, fmla_ns_slot(ns, batch, i),
          want_ns[i]);
  for (int32_t i = 0; i < batch; ++i)
    CHECK(fmla_ns_req(ns, batch, i) == (want_order ? want_order[i] : i), "%s: position %d holds request %d", name, i,
          fmla_ns_req(ns, batch, i));
  for (int32_t p = 0; p < P; ++p) {
    const int32_t *r = meta + p * FMLA_META_SIZE;
    if (rows[p][0] < 0) { /* expected empty */
      CHECK(r[0] >= batch, "%s: part %d should be empty, begin_req = %d", name, p, r[0]);
      continue;
    }
    CHECK(r[0] == rows[p][0] && r[1] == rows[p][1] && r[2] == rows[p][2] && r[3] == rows[p][3] && r[4] == rows[p][4],
          "%s: part %d = {%d,%d,%d,%d,%d}, want {%d,%d,%d,%d,%d}", name, p, r[0], r[1], r[2], r[3], r[4], rows[p][0], rows[p][1],
          rows[p][2], rows[p][3], rows[p][4]);
  }
  check_one(L, batch, P, name);
}

static void expect_exact(const char *name, const int32_t *L, int32_t batch, int32_t P, const int32_t (*rows)[5],
                         const int32_t *want_ns) {
  expect_exact_order(name, L, batch, P, rows, want_ns, NULL);
}

static void hand_cases(void) {
  { /* one request, one part: W = 13 */
    const int32_t L[] = {640};
    const int32_t rows[][5] = {{0, 0, 0, 10, 0}};
    const int32_t ns[] = {0, 1};
    expect_exact("hand1", L, 1, 1, rows, ns);
  }
  { /* nb = {20, 0}, OVH = 3: W = 26, Q = 13; boundary 13 is block 10 of request 0. No-split mode
     * would put everything in part 1: cost 26 > Q + OVH + COMBINE = 20, so split: part costs (every
     * segment + OVH) 13 and 10 + 3 + 3 = 16, 1 split, score 5 * 16 + 1 = 81. The packed schedule
     * (batch >= P) beats it: sorted {0, 1}; with T = Q + d part 0 takes request 1 (cost 3), then
     * T - 3 - 3 blocks of request 0, the last part the rest: costs T and 29 - T. d = 1 (T = 14):
     * 14 / 15, score 76, and d = 2 ties it (15 / 14); d = 0: 13 / 16, 81. So d = 1: 8 blocks. */
    const int32_t L[] = {1280, 0};
    const int32_t rows[][5] = {{0, 0, 1, 8, 0}, {1, 8, 1, 20, 1}};
    const int32_t ns[] = {0, 2, 3}, order[] = {1, 0};
    expect_exact_order("hand2", L, 2, 2, rows, ns, order);
  }
  { /* nb = {2, 0}: W = 8, Q = 4. Contiguous: no-split mode (both requests in part 1, cost 8 <=
     * 4 + 3 + 4), score 40. Packed, T = 4: part 0 takes request 1 (cost 3, 1 left: no piece), the
     * last part request 0 (cost 5): score 25. */
    const int32_t L[] = {128, 0};
    const int32_t rows[][5] = {{0, 0, 0, 0, 0}, {1, 0, 1, 2, 0}};
    const int32_t ns[] = {0, 1, 2}, order[] = {1, 0};
    expect_exact_order("hand2n", L, 2, 2, rows, ns, order);
  }
  { /* the same two requests on three parts (batch < P): the contiguous schedule, W = 26, Q = 9:
     * boundaries 9 and 18 are blocks 6 and 15 of request 0 (no-split: 26 > 9 + 3 + 4) */
    const int32_t L[] = {1280, 0};
    const int32_t rows[][5] = {{0, 0, 0, 6, 0}, {0, 6, 0, 15, 1}, {0, 15, 1, 0, 2}};
    const int32_t ns[] = {0, 3, 4};
    expect_exact("hand2c", L, 2, 3, rows, ns);
  }
  { /* four equal requests on five parts (the tp shape: b a little below the SM count): nb = 10,
     * cost 13, W = 52, Q = 11. Split mode would cut requests 0-3 (boundaries 11, 22, 33, 44 at
     * blocks 8, 6, 4, 2); no-split mode has parts of 13 <= 11 + 3 + 4: one request per part, part
     * 0 empty. */
    const int32_t L[] = {640, 640, 640, 640};
    const int32_t rows[][5] = {{-1}, {0, 0, 0, 10, 0}, {1, 0, 1, 10, 0}, {2, 0, 2, 10, 0}, {3, 0, 3, 10, 0}};
    const int32_t ns[] = {0, 1, 2, 3, 4};
    expect_exact("hand8", L, 4, 5, rows, ns);
  }
  { /* all zero: W = 12, Q = 6; boundary 6 is the start of request 2 */
    const int32_t L[] = {0, 0, 0, 0};
    const int32_t rows[][5] = {{0, 0, 1, 0, 0}, {2, 0, 3, 0, 0}};
    const int32_t ns[] = {0, 1, 2, 3, 4};
    expect_exact("hand3", L, 4, 2, rows, ns);
  }
  { /* nb = {1, 20, 2}, cum = {0, 4, 27}, W = 32, P = 4, Q = 8: boundaries 8, 16 and 24 are blocks
     * 1, 9 and 17 of request 1 (units 4 + 3 + k), so it is cut in four; part costs 4 + 4, 11, 11,
     * 6 + 5 (no-split would hold requests 1 and 2 in one part: 28 > 8 + 3 + 4). */
    const int32_t L[] = {1, 1280, 65};
    const int32_t rows[][5] = {{0, 0, 1, 1, 0}, {1, 1, 1, 9, 1}, {1, 9, 1, 17, 2}, {1, 17, 2, 2, 3}};
    const int32_t ns[] = {0, 1, 5, 6};
    expect_exact("hand4", L, 3, 4, rows, ns);
  }
  { /* nb = 10, W = 13, P = 3, Q = 5: boundaries 5 and 10 are blocks 2 and 7 (units 3 + k); no-split
     * would cost 13 > 5 + 3 + 4. (OVH = 5 made boundary 5 the first block unit and part 0 empty.) */
    const int32_t L[] = {640};
    const int32_t rows[][5] = {{0, 0, 0, 2, 0}, {0, 2, 0, 7, 1}, {0, 7, 0, 10, 2}};
    const int32_t ns[] = {0, 3};
    expect_exact("hand5", L, 1, 3, rows, ns);
  }
  { /* nb = {5, 10}, cum = {0, 8}, W = 21, P = 5, Q = 5: boundary 5 is block 2 of request 0, 10 sits
     * in request 1's overhead (moves back to its start, 8), 15 and 20 are its blocks 4 and 9;
     * no-split would cost 13 > 5 + 3 + 4. */
    const int32_t L[] = {320, 640};
    const int32_t rows[][5] = {{0, 0, 0, 2, 0}, {0, 2, 0, 5, 1}, {1, 0, 1, 4, 0}, {1, 4, 1, 9, 1}, {1, 9, 1, 10, 2}};
    const int32_t ns[] = {0, 2, 5};
    expect_exact("hand6", L, 2, 5, rows, ns);
  }
  { /* more parts than units: W = 3, P = 7, Q = 1: boundaries 1 and 2 are overhead (move back to
     * 0), 3..6 are >= W, so part 2 = [0, 3) holds the request and every other part is empty */
    const int32_t L[] = {0};
    const int32_t rows[][5] = {{-1}, {-1}, {0, 0, 0, 0, 0}, {-1}, {-1}, {-1}, {-1}};
    const int32_t ns[] = {0, 1};
    expect_exact("hand7", L, 1, 7, rows, ns);
  }
}

/* ---------------------------------------------------------------------------------------------
 * Bad arguments
 * ------------------------------------------------------------------------------------------- */
static int contains(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

static void bad_args(void) {
  int32_t L[4] = {100, 0, 7, 5000};
  int32_t meta[(FMLA_MAX_SM_PARTS + 2) * FMLA_META_SIZE], ns[8];
  struct {
    const char *name;
    const int32_t *L;
    int32_t batch, P;
    int32_t *meta, *ns;
    flash_mla_status_t want;
    const char *arg;
  } cases[] = {
      {"cache_seqlens NULL", NULL, 4, 2, meta, ns, FLASH_MLA_ERROR_NULL_POINTER, "cache_seqlens"},
      {"metadata NULL", L, 4, 2, NULL, ns, FLASH_MLA_ERROR_NULL_POINTER, "tile_scheduler_metadata"},
      {"num_splits NULL", L, 4, 2, meta, NULL, FLASH_MLA_ERROR_NULL_POINTER, "num_splits"},
      {"batch 0", L, 0, 2, meta, ns, FLASH_MLA_ERROR_INVALID_SHAPE, "batch"},
      {"batch -1", L, -1, 2, meta, ns, FLASH_MLA_ERROR_INVALID_SHAPE, "batch"},
      {"batch INT32_MIN", L, INT32_MIN, 2, meta, ns, FLASH_MLA_ERROR_INVALID_SHAPE, "batch"},
      {"num_sm_parts 0", L, 4, 0, meta, ns, FLASH_MLA_ERROR_INVALID_SHAPE, "num_sm_parts"},
      {"num_sm_parts -3", L, 4, -3, meta, ns, FLASH_MLA_ERROR_INVALID_SHAPE, "num_sm_parts"},
      {"num_sm_parts MAX+1", L, 4, FMLA_MAX_SM_PARTS + 1, meta, ns, FLASH_MLA_ERROR_INVALID_SHAPE, "num_sm_parts"},
      {"num_sm_parts INT32_MAX", L, 4, INT32_MAX, meta, ns, FLASH_MLA_ERROR_INVALID_SHAPE, "num_sm_parts"},
      {"cache_seqlens misaligned", (const int32_t *)((const char *)L + 2), 2, 2, meta, ns, FLASH_MLA_ERROR_MISALIGNED,
       "cache_seqlens"},
      {"metadata misaligned", L, 4, 2, (int32_t *)((char *)meta + 1), ns, FLASH_MLA_ERROR_MISALIGNED, "tile_scheduler_metadata"},
      {"num_splits misaligned", L, 4, 2, meta, (int32_t *)((char *)ns + 3), FLASH_MLA_ERROR_MISALIGNED, "num_splits"},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
    for (size_t k = 0; k < sizeof meta / sizeof meta[0]; ++k) meta[k] = GUARD_VAL;
    for (size_t k = 0; k < 8; ++k) ns[k] = GUARD_VAL;
    const flash_mla_status_t st = flash_mla_get_metadata_host(cases[c].L, cases[c].batch, cases[c].P, cases[c].meta, cases[c].ns);
    CHECK(st == cases[c].want, "%s: status %d (%s), want %d", cases[c].name, (int)st, flash_mla_status_string(st), (int)cases[c].want);
    CHECK(contains(flash_mla_last_error(), cases[c].arg), "%s: message \"%s\" does not name %s", cases[c].name,
          flash_mla_last_error(), cases[c].arg);
    int untouched = 1;
    for (size_t k = 0; k < sizeof meta / sizeof meta[0]; ++k) untouched &= meta[k] == GUARD_VAL;
    for (size_t k = 0; k < 8; ++k) untouched &= ns[k] == GUARD_VAL;
    CHECK(untouched, "%s: outputs written on error", cases[c].name);
  }
  /* the limits themselves are valid */
  CHECK(flash_mla_get_metadata_host(L, 4, FMLA_MAX_SM_PARTS, meta, ns) == FLASH_MLA_SUCCESS, "num_sm_parts = FMLA_MAX_SM_PARTS: %s",
        flash_mla_last_error());
  CHECK(flash_mla_get_metadata_host(L, 1, 1, meta, ns) == FLASH_MLA_SUCCESS, "batch = 1, num_sm_parts = 1: %s", flash_mla_last_error());
  check_one(L, 4, FMLA_MAX_SM_PARTS, "max parts");
}

/* ---------------------------------------------------------------------------------------------
 * Random batches
 * ------------------------------------------------------------------------------------------- */
static int32_t rand_batch(tu_rng *r) {
  const double u = tu_uniform(r);
  if (u < 0.15) return (int32_t)tu_range(r, 1, 4);
  if (u < 0.20) return 65536;
  const int64_t lo = (int64_t)1 << tu_range(r, 0, 15); /* log-uniform in [1, 65536] */
  return (int32_t)tu_range(r, lo, 2 * lo > 65536 ? 65536 : 2 * lo);
}

static void fill_lengths(tu_rng *r, int32_t *L, int32_t batch, int kind) {
  for (int32_t i = 0; i < batch; ++i) {
    switch (kind) {
      case 0: L[i] = 0; break;                                                    /* all zero */
      case 1: L[i] = tu_uniform(r) < 0.9 ? 0 : (int32_t)tu_range(r, 1, 200000); break; /* mostly zero */
      case 2: L[i] = (int32_t)tu_range(r, 0, 200000); break;                      /* uniform */
      case 3: L[i] = (int32_t)tu_range(r, 0, 200); break;                         /* short: overhead dominates */
      case 4: L[i] = tu_uniform(r) < 0.5 ? 0 : (int32_t)tu_range(r, 1, 4096); break;
      case 5: L[i] = i == 0 ? 200000 : (int32_t)tu_range(r, 0, 64); break;        /* one long, many tiny */
      case 6: L[i] = 4096; break;                                                  /* uniform batch */
      case 8: { /* the benchmark's varlen: normal(4096, 2048), at least 1 */
        const double u1 = tu_uniform(r) + 1e-12, u2 = tu_uniform(r);
        const double z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
        const double v = 4096.0 + 2048.0 * z;
        L[i] = v < 1.0 ? 1 : (int32_t)v;
        break;
      }
      default: { /* lengths near n-block edges */
        static const int32_t edge[] = {0, 1, 63, 64, 65, 127, 128, 129, 320, 640, 200000};
        L[i] = edge[tu_range(r, 0, (int64_t)(sizeof edge / sizeof edge[0]) - 1)];
      }
    }
  }
}

int main(void) {
  hand_cases();
  bad_args();

  static const int32_t parts[] = {1, 2, 7, 66, 132, 264};
  tu_rng r = tu_rng_make(0x5c4edull);
  int32_t *L = malloc(sizeof(int32_t) * 65536);
  char what[64];
  for (int t = 0; t < 400; ++t) {
    const int32_t batch = rand_batch(&r);
    const int kind = (int)tu_range(&r, 0, 7);
    fill_lengths(&r, L, batch, kind);
    snprintf(what, sizeof what, "random %d (kind %d)", t, kind);
    for (int pi = 0; pi < 6; ++pi) check_one(L, batch, parts[pi], what);
  }
  /* the packed schedule's range (P <= batch <= FMLA_PACK_SCHED_MAX_BATCH) */
  static const int32_t pbatch[] = {2, 33, 66, 67, 100, 128, 131, 132, 200, 256, 257};
  for (int t = 0; t < 6; ++t)
    for (size_t bi = 0; bi < sizeof pbatch / sizeof pbatch[0]; ++bi)
      for (int kind = 1; kind <= 8; ++kind) {
        fill_lengths(&r, L, pbatch[bi], kind);
        snprintf(what, sizeof what, "pack range %d (kind %d)", t, kind);
        for (int pi = 0; pi < 6; ++pi) check_one(L, pbatch[bi], parts[pi], what);
        if (pbatch[bi] >= 33) check_one(L, pbatch[bi], 33, what);
      }
  /* both sides of the num_splits encoding switch (order bits for b <= FMLA_PACK_MAX_BATCH) */
  for (int32_t batch = FMLA_PACK_MAX_BATCH - 1; batch <= FMLA_PACK_MAX_BATCH + 1; ++batch)
    for (int kind = 1; kind <= 8; ++kind) {
      fill_lengths(&r, L, batch, kind);
      snprintf(what, sizeof what, "encoding edge (kind %d)", kind);
      for (int pi = 0; pi < 6; ++pi) check_one(L, batch, parts[pi], what);
    }
  /* every small batch size against every small part count */
  for (int32_t batch = 1; batch <= 12; ++batch)
    for (int32_t P = 1; P <= 40; ++P)
      for (int kind = 0; kind < 8; ++kind) {
        fill_lengths(&r, L, batch, kind);
        snprintf(what, sizeof what, "small (kind %d)", kind);
        check_one(L, batch, P, what);
      }
  free(L);
  fprintf(stderr, "test_sched: %ld schedules (%ld packed), %ld segments, %ld empty parts\n", g_cases, g_packed, g_segments,
          g_empty_parts);
  return tu_summary();
}
