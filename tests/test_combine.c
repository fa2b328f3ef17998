/*
 * test_combine.c: the split-merge formula of src/combine_math.h.
 *
 * A random attention row (scores and V rows, in double) is cut into 1..9 chunks of consecutive
 * keys, some of them empty. Each chunk's partial is computed in double as the kernels store it
 * (O_k already divided by its own sum, lse_k = m_k + log l_k, -inf for an empty chunk), rounded to
 * float, then merged with fmla_merge_lse / fmla_merge_weight and compared with the unsplit row.
 * Also: every chunk empty (lse +inf, all weights 0), scores shifted to large magnitudes (lse around
 * +-80, +-1000) without overflow, merge weights summing to 1, fmla_final_lse.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "combine_math.h"
#include "test_util.h"

#define DIM 32
#define MAX_KEYS 300
#define MAX_CHUNKS 9

static int close_rel(double got, double want, double abs_tol, double rel_tol) {
  const double d = fabs(got - want);
  return d <= abs_tol || d <= rel_tol * fabs(want);
}

/* Softmax over keys [lo, hi) of scores s: O (normalised) and lse; lse -inf and O = 0 when empty. */
static void partial(const double *s, const double (*v)[DIM], int lo, int hi, double *o, double *lse) {
  for (int c = 0; c < DIM; ++c) o[c] = 0;
  if (hi <= lo) {
    *lse = -INFINITY;
    return;
  }
  double m = -INFINITY;
  for (int j = lo; j < hi; ++j) m = s[j] > m ? s[j] : m;
  double l = 0;
  for (int j = lo; j < hi; ++j) {
    const double p = exp(s[j] - m);
    l += p;
    for (int c = 0; c < DIM; ++c) o[c] += p * v[j][c];
  }
  for (int c = 0; c < DIM; ++c) o[c] /= l;
  *lse = m + log(l);
}

static void trial(tu_rng *r, int id, double shift, int force_empty) {
  static double s[MAX_KEYS], v[MAX_KEYS][DIM];
  const int n_keys = force_empty ? 0 : (int)tu_range(r, 1, MAX_KEYS);
  const double spread = tu_uniform(r) < 0.5 ? 1.0 : 8.0; /* flat-ish or peaked softmax */
  for (int j = 0; j < n_keys; ++j) {
    s[j] = shift + spread * tu_normal(r);
    for (int c = 0; c < DIM; ++c) v[j][c] = tu_normal(r);
  }

  /* chunk boundaries: sorted random cut points, repeats give empty chunks */
  const int k = (int)tu_range(r, 1, MAX_CHUNKS);
  int cut[MAX_CHUNKS + 1];
  cut[0] = 0;
  cut[k] = n_keys;
  for (int a = 1; a < k; ++a) cut[a] = (int)tu_range(r, 0, n_keys);
  for (int a = 1; a < k; ++a) /* insertion sort of cut[1..k-1] */
    for (int b = a; b > 1 && cut[b - 1] > cut[b]; --b) {
      const int t = cut[b];
      cut[b] = cut[b - 1];
      cut[b - 1] = t;
    }
  if (k > 2 && tu_uniform(r) < 0.3) cut[1] = cut[2]; /* more empty chunks */

  float lse_k[MAX_CHUNKS], o_k[MAX_CHUNKS][DIM];
  int empties = 0;
  for (int a = 0; a < k; ++a) {
    double o[DIM], l;
    partial(s, (const double(*)[DIM])v, cut[a], cut[a + 1], o, &l);
    lse_k[a] = (float)l;
    for (int c = 0; c < DIM; ++c) o_k[a][c] = (float)o[c];
    empties += cut[a] == cut[a + 1];
  }

  double o_ref[DIM], lse_ref;
  partial(s, (const double(*)[DIM])v, 0, n_keys, o_ref, &lse_ref);

  const float lse = fmla_merge_lse(lse_k, k);
  float o[DIM] = {0}, wsum = 0.f;
  for (int a = 0; a < k; ++a) {
    const float w = fmla_merge_weight(lse_k[a], lse);
    CHECK(w >= 0.f && w <= 1.f + 1e-6f, "trial %d: weight of chunk %d = %g", id, a, (double)w);
    if (cut[a] == cut[a + 1]) CHECK(w == 0.f, "trial %d: empty chunk %d has weight %g", id, a, (double)w);
    wsum += w;
    for (int c = 0; c < DIM; ++c) o[c] += w * o_k[a][c];
  }

  if (n_keys == 0) {
    CHECK(lse == INFINITY, "trial %d: all %d chunks empty: merged lse = %g, want +inf", id, k, (double)lse);
    CHECK(wsum == 0.f, "trial %d: all chunks empty: weights sum to %g, want 0", id, (double)wsum);
    int zero = 1;
    for (int c = 0; c < DIM; ++c) zero &= o[c] == 0.f;
    CHECK(zero, "trial %d: all chunks empty: merged O must be 0", id);
    return;
  }
  CHECK(isfinite(lse), "trial %d: merged lse = %g not finite (shift %g)", id, (double)lse, shift);
  CHECK(close_rel(lse, lse_ref, 1e-6, 8.0 / 65536.0), "trial %d (k=%d, %d empty, shift %g): lse = %.9g, want %.9g", id, k,
        empties, shift, (double)lse, lse_ref);
  /* the merged lse is a float too: the weights' sum is 1 up to its ulp */
  const double lse_ulp = 0x1p-23 * fmax(1.0, fabs(lse_ref));
  CHECK(fabs(wsum - 1.0) <= 4e-6 + 2.0 * lse_ulp, "trial %d (shift %g): weights sum to %.9g, want 1", id, shift, (double)wsum);
  /* The partial lse values are stored in float: each is off by up to half an ulp of its
   * magnitude, and the weights exp(lse_k - lse) inherit that as a relative error, so the O
   * tolerance grows with |lse| (fp32 accumulators carry the same error on the GPU). */
  double omax = 0;
  for (int a = 0; a < k; ++a)
    for (int c = 0; c < DIM; ++c) omax = fmax(omax, fabs((double)o_k[a][c]));
  const double o_tol = 2e-6 + 4.0 * lse_ulp * omax;
  for (int c = 0; c < DIM; ++c)
    CHECK(close_rel(o[c], o_ref[c], o_tol, 1e-5), "trial %d (k=%d, %d empty, shift %g): O[%d] = %.9g, want %.9g", id, k,
          empties, shift, c, (double)o[c], o_ref[c]);
}

int main(void) {
  tu_rng r = tu_rng_make(0xc0b1e5ull);
  int id = 0;
  static const double shifts[] = {0.0, 80.0, -80.0, 1000.0, -1000.0};
  for (int si = 0; si < 5; ++si)
    for (int t = 0; t < 4000; ++t) trial(&r, id++, shifts[si], 0);
  for (int t = 0; t < 200; ++t) trial(&r, id++, 0.0, 1); /* every chunk empty */

  /* hand cases */
  {
    const float two[2] = {-INFINITY, 3.f};
    const float m = fmla_merge_lse(two, 2);
    CHECK(m == 3.f, "merge(-inf, 3) = %g, want 3", (double)m);
    CHECK(fmla_merge_weight(3.f, m) == 1.f && fmla_merge_weight(-INFINITY, m) == 0.f, "weights of (-inf, 3)");
    const float eq[2] = {0.5f, 0.5f};
    CHECK(fabsf(fmla_merge_lse(eq, 2) - (0.5f + logf(2.f))) <= 1e-6f, "merge(0.5, 0.5) = %g", (double)fmla_merge_lse(eq, 2));
    const float big[3] = {88.f, 88.f, -1000.f}; /* exp(88) * 2 would overflow a naive float sum */
    const float mb = fmla_merge_lse(big, 3);
    CHECK(fabsf(mb - (88.f + logf(2.f))) <= 1e-5f, "merge(88, 88, -1000) = %g", (double)mb);
    const float none[3] = {-INFINITY, -INFINITY, -INFINITY};
    CHECK(fmla_merge_lse(none, 3) == INFINITY, "merge(-inf x3) must be +inf");
    CHECK(fmla_merge_weight(-INFINITY, INFINITY) == 0.f && fmla_merge_weight(5.f, INFINITY) == 0.f,
          "weights against a +inf merged lse must be 0");
    CHECK(fmla_merge_lse(none, 0) == INFINITY, "merge of no partials must be +inf");
    CHECK(fmla_final_lse(1.5f, 0.f) == INFINITY, "final_lse(l = 0) must be +inf");
    CHECK(fabsf(fmla_final_lse(1.5f, 2.f) - (1.5f + logf(2.f))) <= 1e-7f, "final_lse(1.5, 2) = %g",
          (double)fmla_final_lse(1.5f, 2.f));
  }
  return tu_summary();
}
