/*
 * combine_math.h: how split partials merge, shared by the combine kernel (combine.cu), the
 * decode kernels' single-split path and the C tests, so all three use one formula.
 *
 * Split k of a row holds O_k = sum_j p_kj V_j / l_k and lse_k = log(l_k) + m_k (natural log),
 * or lse_k = -inf when it saw no key. The merged row is
 *   lse = log(sum_k exp(lse_k)),  O = sum_k exp(lse_k - lse) O_k,
 * evaluated around max_k lse_k so nothing overflows. A row no split saw gets O = 0, lse = +inf.
 */
#ifndef FLASH_MLA_COMBINE_MATH_H
#define FLASH_MLA_COMBINE_MATH_H

#include <math.h>

#if defined(__CUDACC__)
#define FMLA_HD static __host__ __device__ __forceinline__
#else
#define FMLA_HD static inline
#endif

/* Merged lse of n partial lse values (natural log). +inf when every partial is -inf. */
FMLA_HD float fmla_merge_lse(const float *lse_k, int n) {
  float m = -INFINITY;
  for (int k = 0; k < n; ++k) m = fmaxf(m, lse_k[k]);
  if (m == -INFINITY) return INFINITY;
  float s = 0.f;
  for (int k = 0; k < n; ++k) s += expf(lse_k[k] - m);
  return m + logf(s);
}

/* Weight of split k in the merged output, given the merged lse. 0 for a row with no key. */
FMLA_HD float fmla_merge_weight(float lse_k, float lse_merged) {
  return lse_merged == INFINITY ? 0.f : expf(lse_k - lse_merged);
}

/* Final lse of one unsplit row from its running max (in raw-score units times scale) and sum:
 * lse = m * scale + log(l); a row that saw no key (l == 0) gets +inf. */
FMLA_HD float fmla_final_lse(float row_max_scaled, float row_sum) {
  return row_sum == 0.f ? INFINITY : row_max_scaled + logf(row_sum);
}

#endif
