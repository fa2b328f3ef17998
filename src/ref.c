/*
 * ref.c: flash_mla_decode_ref, the CPU reference of flash_mla_decode (plain C11, fp32 accumulation).
 *
 * Same semantics as the GPU path (include/flash_mla.h): for every request i, query token t and
 * query head h, with L = cache_seqlens[i] and Lt = L - (causal ? s_q - 1 - t : 0),
 *   out[i,t,h] = sum_{j<Lt} p_j V_j / sum_{j<Lt} p_j,  p_j = exp(scale * q.K_j - m),
 *   lse[i,h,t] = m + log(sum p_j)   (m = max_j scale * q.K_j; natural log),
 * and a row with Lt <= 0 gets out = 0, lse = +inf. V_j is the first 512 dims of K_j.
 *
 * Schedule: per (request, KV head) the visible K rows are converted to fp32 once, a chunk of
 * REF_CHUNK keys at a time (the chunk stays in L2 while every query row of the KV head uses it),
 * with an online softmax across chunks so memory stays bounded for any sequence length. Query
 * rows go 4 at a time so each K element loaded serves 4 dot products; the dot products keep 8
 * independent partial sums so the compiler can vectorise them without reassociating.
 * Page slots at or past L and block-table entries past the last needed page are never read.
 *
 * Validation: fmla_validate_decode_params (api.c), then every cache_seqlens value and every
 * needed block_table entry, all before any output is written.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "params.h"

#define REF_CHUNK 256 /* keys per fp32 K chunk: 256 * 576 * 4 = 576 KB */
#define REF_RB 4      /* query rows per register block */
#define REF_LANES 8   /* partial sums per dot product */

/* ---- 16-bit float conversions (round to nearest even) ---- */

static uint32_t f2u(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static float u2f(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static float bf16_to_float(uint16_t h) { return u2f((uint32_t)h << 16); }

static uint16_t float_to_bf16(float f) {
  const uint32_t u = f2u(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static float fp16_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return u2f(sign | 0x7f800000u | (m << 13)); /* inf / NaN */
  if (e != 0) return u2f(sign | ((e + 112u) << 23) | (m << 13));
  /* zero or subnormal: m * 2^-24, exact in fp32 */
  const float v = (float)m * 0x1p-24f;
  return sign ? -v : v;
}

static uint16_t float_to_fp16(float f) {
  uint32_t x = f2u(f);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((x >> 13) & 0x3ffu)); /* quiet NaN */
  if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 (and inf) rounds to inf */
  if (x >= 0x38800000u) { /* normal half: >= 2^-14 */
    uint32_t h = (x >> 13) - (112u << 10);
    const uint32_t rem = x & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    return (uint16_t)(sign | h);
  }
  const uint32_t e = x >> 23;
  if (e < 102) return sign; /* < 2^-25: rounds to 0 */
  const uint32_t m = (x & 0x7fffffu) | 0x800000u, shift = 126 - e; /* 14..24 */
  uint32_t r = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (r & 1u))) ++r;
  return (uint16_t)(sign | r);
}

static void row_to_float(const uint16_t *src, float *dst, int n, int is_bf16) {
  if (is_bf16)
    for (int c = 0; c < n; ++c) dst[c] = bf16_to_float(src[c]);
  else
    for (int c = 0; c < n; ++c) dst[c] = fp16_to_float(src[c]);
}

/* ---- kernels ---- */

/* s[r] = q_r . k for REF_RB consecutive rows of q (row stride FMLA_HEAD_DIM_K). */
static void dot_rows(const float *q, const float *k, float s[REF_RB]) {
  float a[REF_RB][REF_LANES];
  for (int r = 0; r < REF_RB; ++r)
    for (int u = 0; u < REF_LANES; ++u) a[r][u] = 0.f;
  for (int d = 0; d < FMLA_HEAD_DIM_K; d += REF_LANES)
    for (int r = 0; r < REF_RB; ++r)
      for (int u = 0; u < REF_LANES; ++u) a[r][u] += q[r * FMLA_HEAD_DIM_K + d + u] * k[d + u];
  for (int r = 0; r < REF_RB; ++r) {
    float t = 0.f;
    for (int u = 0; u < REF_LANES; ++u) t += a[r][u];
    s[r] = t;
  }
}

/* acc[r] += p[r][j] * V_j for REF_RB rows over keys j < n of the chunk. */
static void accumulate_v(float acc[REF_RB][FMLA_HEAD_DIM_V], const float p[REF_RB][REF_CHUNK], const float *kf, int n) {
  for (int j = 0; j < n; ++j) {
    const float *v = kf + (size_t)j * FMLA_HEAD_DIM_K;
    const float p0 = p[0][j], p1 = p[1][j], p2 = p[2][j], p3 = p[3][j];
    for (int c = 0; c < FMLA_HEAD_DIM_V; ++c) {
      const float x = v[c];
      acc[0][c] += p0 * x;
      acc[1][c] += p1 * x;
      acc[2][c] += p2 * x;
      acc[3][c] += p3 * x;
    }
  }
}

/* ---- data validation (host-visible values) ---- */

static flash_mla_status_t validate_data(const flash_mla_decode_params_t *p) {
  const int64_t max_len = (int64_t)p->max_blocks_per_seq * p->page_size;
  for (int32_t i = 0; i < p->batch; ++i) {
    const int32_t L = p->cache_seqlens[i];
    if (L < 0 || L > max_len)
      return fmla_set_error(FLASH_MLA_ERROR_INVALID_VALUE,
                            "cache_seqlens[%d] = %d must be in [0, max_blocks_per_seq * page_size = %lld]", i, L,
                            (long long)max_len);
    const int64_t pages = ((int64_t)L + p->page_size - 1) / p->page_size;
    const int32_t *bt = p->block_table + (int64_t)i * p->block_table_stride;
    for (int64_t j = 0; j < pages; ++j)
      if (bt[j] < 0 || bt[j] >= p->num_blocks)
        return fmla_set_error(FLASH_MLA_ERROR_INVALID_VALUE, "block_table[%d][%lld] = %d must be in [0, num_blocks = %d)", i,
                              (long long)j, bt[j], p->num_blocks);
  }
  return FLASH_MLA_SUCCESS;
}

/* ---- entry point ---- */

flash_mla_status_t flash_mla_decode_ref(const flash_mla_decode_params_t *p) {
  flash_mla_status_t st = fmla_validate_decode_params(p);
  if (st != FLASH_MLA_SUCCESS) return st;
  st = validate_data(p);
  if (st != FLASH_MLA_SUCCESS) return st;

  const int is_bf16 = p->dtype == FLASH_MLA_DTYPE_BF16;
  const int32_t s_q = p->seqlen_q, h_q = p->num_heads_q, h_kv = p->num_heads_k;
  const int32_t ngroups = h_q / h_kv;
  const int64_t rows = (int64_t)s_q * ngroups;
  const int64_t rows_pad = (rows + REF_RB - 1) / REF_RB * REF_RB;
  const float scale = p->softmax_scale;
  const uint16_t *q = (const uint16_t *)p->q;
  const uint16_t *kc = (const uint16_t *)p->k_cache;
  uint16_t *out = (uint16_t *)p->out;

  /* Per KV head: fp32 query rows (padding rows are zero and never written), running max/sum,
   * unnormalised O, and one fp32 K chunk. */
  float *qf = (float *)calloc((size_t)rows_pad * FMLA_HEAD_DIM_K, sizeof(float));
  float *m = (float *)malloc((size_t)rows_pad * sizeof(float));
  float *l = (float *)malloc((size_t)rows_pad * sizeof(float));
  float *acc = (float *)malloc((size_t)rows_pad * FMLA_HEAD_DIM_V * sizeof(float));
  float *kf = (float *)malloc((size_t)REF_CHUNK * FMLA_HEAD_DIM_K * sizeof(float));
  int32_t *vis = (int32_t *)malloc((size_t)rows_pad * sizeof(int32_t)); /* visible keys per row */
  flash_mla_status_t status = FLASH_MLA_SUCCESS;
  if (!qf || !m || !l || !acc || !kf || !vis) {
    status = fmla_set_error(FLASH_MLA_ERROR_INTERNAL, "flash_mla_decode_ref: out of host memory (%lld query rows per KV head)",
                            (long long)rows);
    goto done;
  }

  for (int32_t i = 0; i < p->batch; ++i) {
    const int32_t L = p->cache_seqlens[i];
    const int32_t *bt = p->block_table + (int64_t)i * p->block_table_stride;
    for (int64_t r = 0; r < rows_pad; ++r) {
      const int64_t t = r / ngroups;
      int64_t v = r < rows ? (int64_t)L - (p->causal ? s_q - 1 - t : 0) : 0;
      vis[r] = (int32_t)(v < 0 ? 0 : v);
    }
    for (int32_t hk = 0; hk < h_kv; ++hk) {
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t t = r / ngroups, h = (int64_t)hk * ngroups + r % ngroups;
        row_to_float(q + i * p->q_batch_stride + t * p->q_seq_stride + h * p->q_head_stride, qf + r * FMLA_HEAD_DIM_K,
                     FMLA_HEAD_DIM_K, is_bf16);
      }
      for (int64_t r = 0; r < rows_pad; ++r) {
        m[r] = -INFINITY;
        l[r] = 0.f;
      }
      memset(acc, 0, (size_t)rows_pad * FMLA_HEAD_DIM_V * sizeof(float));

      for (int64_t c0 = 0; c0 < L; c0 += REF_CHUNK) {
        const int n = L - c0 < REF_CHUNK ? (int)(L - c0) : REF_CHUNK;
        for (int jj = 0; jj < n; ++jj) {
          const int64_t j = c0 + jj;
          const int64_t blk = bt[j / p->page_size];
          const uint16_t *krow = kc + blk * p->k_block_stride + (int64_t)(j % p->page_size) * p->k_token_stride +
                                 (int64_t)hk * p->k_head_stride;
          row_to_float(krow, kf + (size_t)jj * FMLA_HEAD_DIM_K, FMLA_HEAD_DIM_K, is_bf16);
        }
        for (int64_t r0 = 0; r0 < rows_pad; r0 += REF_RB) {
          int nmax = 0; /* keys of this chunk that some row of the block sees */
          int nv[REF_RB];
          for (int u = 0; u < REF_RB; ++u) {
            const int64_t v = (int64_t)vis[r0 + u] - c0;
            nv[u] = v <= 0 ? 0 : (v > n ? n : (int)v);
            if (nv[u] > nmax) nmax = nv[u];
          }
          if (nmax == 0) continue;
          float sc[REF_RB][REF_CHUNK];
          for (int jj = 0; jj < nmax; ++jj) {
            float s[REF_RB];
            dot_rows(qf + r0 * FMLA_HEAD_DIM_K, kf + (size_t)jj * FMLA_HEAD_DIM_K, s);
            for (int u = 0; u < REF_RB; ++u) sc[u][jj] = s[u] * scale;
          }
          for (int u = 0; u < REF_RB; ++u) {
            const int64_t r = r0 + u;
            if (nv[u] == 0) {
              for (int jj = 0; jj < nmax; ++jj) sc[u][jj] = 0.f;
              continue;
            }
            float mc = m[r];
            for (int jj = 0; jj < nv[u]; ++jj) mc = fmaxf(mc, sc[u][jj]);
            const float alpha = expf(m[r] - mc); /* 0 on the first chunk (m = -inf) */
            float sum = 0.f;
            for (int jj = 0; jj < nv[u]; ++jj) {
              sc[u][jj] = expf(sc[u][jj] - mc);
              sum += sc[u][jj];
            }
            for (int jj = nv[u]; jj < nmax; ++jj) sc[u][jj] = 0.f;
            if (alpha != 1.f) {
              float *a = acc + r * FMLA_HEAD_DIM_V;
              for (int c = 0; c < FMLA_HEAD_DIM_V; ++c) a[c] *= alpha;
            }
            l[r] = l[r] * alpha + sum;
            m[r] = mc;
          }
          float blk_acc[REF_RB][FMLA_HEAD_DIM_V];
          memcpy(blk_acc, acc + r0 * FMLA_HEAD_DIM_V, sizeof blk_acc);
          accumulate_v(blk_acc, (const float(*)[REF_CHUNK])sc, kf, nmax);
          memcpy(acc + r0 * FMLA_HEAD_DIM_V, blk_acc, sizeof blk_acc);
        }
      }

      for (int64_t r = 0; r < rows; ++r) {
        const int64_t t = r / ngroups, h = (int64_t)hk * ngroups + r % ngroups;
        uint16_t *o = out + i * p->out_batch_stride + t * p->out_seq_stride + h * p->out_head_stride;
        float *lse = p->lse + ((int64_t)i * h_q + h) * s_q + t;
        const float *a = acc + r * FMLA_HEAD_DIM_V;
        if (l[r] == 0.f) { /* no visible key */
          memset(o, 0, FMLA_HEAD_DIM_V * sizeof(uint16_t));
          *lse = INFINITY;
          continue;
        }
        if (is_bf16)
          for (int c = 0; c < FMLA_HEAD_DIM_V; ++c) o[c] = float_to_bf16(a[c] / l[r]);
        else
          for (int c = 0; c < FMLA_HEAD_DIM_V; ++c) o[c] = float_to_fp16(a[c] / l[r]);
        *lse = m[r] + logf(l[r]);
      }
    }
  }

  fmla_clear_error();
done:
  free(qf);
  free(m);
  free(l);
  free(acc);
  free(kf);
  free(vis);
  return status;
}
