/*
 * combine.cu: merges the split partials of the decode kernels into out and lse, and its launcher
 * fmla_launch_combine. Runs on sm_80 and newer (plain loads and stores, no special instruction).
 *
 * What it computes (layouts in params.h, formula in combine_math.h). For every request i whose
 * nsplits = num_splits[i+1] - num_splits[i] > 1, every KV head hk and every query row r
 * (token t = r / ngroups, head h = hk*ngroups + r % ngroups), with slot_k = num_splits[i] + k:
 *   lse_k = lse_accum[slot_k, hk, r]                        k = 0 .. nsplits-1
 *   lse   = log sum_k exp(lse_k)   (+inf when every lse_k is -inf)
 *   out[i, t, h, 0:512] = sum_k exp(lse_k - lse) * o_accum[slot_k, hk, r, 0:512]   (dtype of q)
 *   lse[i, h, t] = lse
 * Requests with one split were written by the decode kernel; their CTAs return at once.
 *
 * Two kernels, picked by the launcher from the total row count b * h_kv * rows (host-known):
 *  - few rows (<= CMB_SPLITS_MAX_ROWS), fmla_combine_units_kernel: a unit is (request, hk, row,
 *    128-column chunk), lane l of a warp owns its columns 4l .. 4l+3. G warps share a unit (G = 1..8,
 *    from the launcher's estimate of the split count, parts / b + 1, so each warp gets ~16 splits):
 *    warp gw merges splits gw, gw + G, ... online (running max; 16 splits' lse and float4 loads in
 *    flight per lane), and the G partial sums meet in shared memory in a fixed order. 1-D grid of
 *    ceil(units / (8 / G)) CTAs of 256 threads. With b = 1..8 and 100+ splits the merge is
 *    latency-bound: the number of dependent L2 round trips per warp is what counts (the old
 *    split-parallel kernel did three passes over the lse values and one load per split at a time).
 *  - many rows, fmla_combine_rows_kernel: grid (batch, h_kv, min(ceil(rows / 8), 65535)), 256
 *    threads, no smem; warp w of a CTA merges row 8z + w whole: lanes reduce the lse values with
 *    shuffles, then each lane accumulates columns 4*lane + 128u .. +3 (u = 0..3) of every split.
 *    With thousands of rows this has enough parallelism, and the other kernel's tens of thousands of
 *    mostly idle CTAs cost up to 19% of a b = 128 step.
 * Rows kernel: batch sits in grid x so any batch size fits; z loops past 65535; a split whose
 * weight is exactly 0 is not read. Units kernel: the 1-D grid loops past 2^31 - 1 CTAs; it loads
 * every split slot (the decode kernels write each one, zeros and -inf when the split saw no key).
 *
 * The lse merge is combine_math.h's fmla_merge_lse: in the rows kernel the same max, expf terms and
 * logf summed in a tree; in the units kernel evaluated online (rescaled running sums), which differs
 * from it in the last bits only. Both are deterministic (no atomics, fixed orders).
 *
 * Build and check just this file (no GPU needed):
 *   nvcc -std=c++17 -O3 -Xptxas -v -c -gencode=arch=compute_80,code=sm_80 \
 *        -gencode=arch=compute_90a,code=sm_90a -Iinclude src/combine.cu -o /tmp/combine.o
 *   expect: 0 bytes stack frame, 0 bytes spill stores/loads, no LDL/STL in cuobjdump --dump-sass.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "params.h"
#include "combine_math.h"
#include "ptx_sm80.cuh"

#define CMB_THREADS 256
#define CMB_WARPS (CMB_THREADS / 32)
#define CMB_CHUNKS (FMLA_HEAD_DIM_V / 128) /* a CTA merges 128 columns of one row */
/* Up to this many rows in all (b * h_kv * rows) the split-parallel kernel runs, above it the
 * row-per-warp one. Measured on an H200 (bench/results/h200-v2.json vs h200-v3.json): with <= 256
 * rows the split-parallel kernel was 1.1-2.6x faster (b = 1..8, 100+ splits), with >= 1024 rows up
 * to 1.19x slower (tens of thousands of mostly idle CTAs); 512 was a draw. */
#define CMB_SPLITS_MAX_ROWS 512

template <int IS_FP16>
static __device__ __forceinline__ uint32_t cmb_pack2(float lo, float hi) {
  return IS_FP16 ? cvt_rn_f16x2_f32(lo, hi) : cvt_rn_bf16x2_f32(lo, hi);
}

/* Block-wide max or sum of one float per thread (CMB_THREADS threads); every thread gets it. */
template <int IS_MAX>
static __device__ __forceinline__ float cmb_block_reduce(float v, float *red) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float o = __shfl_xor_sync(0xffffffffu, v, off);
    v = IS_MAX ? fmaxf(v, o) : v + o;
  }
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  v = red[0];
#pragma unroll
  for (int w = 1; w < CMB_WARPS; ++w) v = IS_MAX ? fmaxf(v, red[w]) : v + red[w];
  __syncthreads(); /* red is reused by the next reduction */
  return v;
}

/* Both kernels start here. Launched with programmatic dependent launch on sm_90, a CTA may start
 * while the decode kernel drains: wait for it (and for its writes to o_accum / lse_accum to be
 * visible) before any read. Returns request req's split count; *slot0 = its first slot. */
static __device__ __forceinline__ void cmb_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
static __device__ __forceinline__ int cmb_prologue(const fmla_kernel_params &p, int req, int *slot0) {
  cmb_wait();
  *slot0 = __ldg(p.num_splits + req);
  return __ldg(p.num_splits + req + 1) - *slot0;
}

/* Few rows: a group of G warps per unit (row, 128-column chunk), the splits strided over them.
 * Warp gw of the group merges splits gw, gw + G, ... online around a running max m (s = sum
 * exp(lse_k - m), acc = sum exp(lse_k - m) O_k over the lane's 4 columns), CMB_BATCH splits' loads
 * in flight per lane: every split slot was written by the decode kernel (zeros and -inf for a split
 * without keys), so the loads need no predicate beyond k < n. The G partial sums then meet in shared
 * memory in the order gw = 0, 1, ...: the result does not depend on timing. */
#define CMB_BATCH 16
static __device__ __forceinline__ void cmb_merge_part(const float *lse_k, const float *o, int64_t ss, int n, int gw, int G,
                                                      float &m, float &s, float4 &acc) {
  m = -INFINITY;
  s = 0.f;
  acc = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int k0 = gw; k0 < n; k0 += CMB_BATCH * G) {
    float lv[CMB_BATCH];
    float4 v[CMB_BATCH];
#pragma unroll
    for (int j = 0; j < CMB_BATCH; ++j) {
      const int k = k0 + j * G;
      lv[j] = -INFINITY;
      v[j] = make_float4(0.f, 0.f, 0.f, 0.f);
      if (k < n) {
        lv[j] = lse_k[k * ss];
        v[j] = *(const float4 *)(o + k * ss * FMLA_HEAD_DIM_V);
      }
    }
    float mx = m;
#pragma unroll
    for (int j = 0; j < CMB_BATCH; ++j) mx = fmaxf(mx, lv[j]);
    if (mx == -INFINITY) continue; /* no key in any split so far (the same in every lane) */
    const float sc = expf(m - mx);  /* 0 while m is -inf */
    s *= sc;
    acc.x *= sc;
    acc.y *= sc;
    acc.z *= sc;
    acc.w *= sc;
#pragma unroll
    for (int j = 0; j < CMB_BATCH; ++j) {
      const float w = expf(lv[j] - mx); /* 0 for -inf */
      s += w;
      acc.x += w * v[j].x;
      acc.y += w * v[j].y;
      acc.z += w * v[j].z;
      acc.w += w * v[j].w;
    }
    m = mx;
  }
}

template <int IS_FP16>
__global__ void __launch_bounds__(CMB_THREADS) fmla_combine_units_kernel(const __grid_constant__ fmla_kernel_params p, int G) {
  cmb_wait();
  __shared__ float4 sacc[CMB_WARPS][32];
  __shared__ float sms[CMB_WARPS][2];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int group = warp / G, gw = warp - group * G, groups = CMB_WARPS / G;
  const int per_hk = p.rows * CMB_CHUNKS;
  const int64_t per_req = (int64_t)p.num_heads_k * per_hk;
  const int64_t units = (int64_t)p.batch * per_req;
  const int64_t nct = (units + groups - 1) / groups;
  const int64_t ss = (int64_t)p.num_heads_k * p.rows; /* lse_accum elements per slot */
  for (int64_t c = blockIdx.x; c < nct; c += gridDim.x) { /* same trip count in every warp */
    const int64_t u = c * groups + group;
    int req = 0, hk = 0, R = 0, chunk = 0, n = 0;
    float m = -INFINITY, s = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    if (u < units) {
      req = (int)(u / per_req);
      const int64_t r1 = u - (int64_t)req * per_req;
      hk = (int)(r1 / per_hk);
      const int r2 = (int)(r1 - (int64_t)hk * per_hk);
      R = r2 / CMB_CHUNKS;
      chunk = r2 - R * CMB_CHUNKS;
      const int slot0 = __ldg(p.num_splits + req);
      n = __ldg(p.num_splits + req + 1) - slot0; /* <= 1: written by the decode kernel */
      if (n > 1) {
        const int64_t row0 = (int64_t)slot0 * ss + (int64_t)hk * p.rows + R;
        cmb_merge_part(p.lse_accum + row0, p.o_accum + row0 * FMLA_HEAD_DIM_V + chunk * 128 + lane * 4, ss, n, gw, G, m, s, acc);
      }
    }
    if (G > 1) {
      sacc[warp][lane] = acc;
      if (lane == 0) {
        sms[warp][0] = m;
        sms[warp][1] = s;
      }
      __syncthreads();
      if (gw == 0 && n > 1) {
        float M = -INFINITY;
        for (int g = 0; g < G; ++g) M = fmaxf(M, sms[warp + g][0]);
        float S = 0.f;
        float4 A = make_float4(0.f, 0.f, 0.f, 0.f);
        if (M != -INFINITY) {
          for (int g = 0; g < G; ++g) {
            const float f = expf(sms[warp + g][0] - M); /* 0 for a warp that saw no key */
            const float4 a = sacc[warp + g][lane];
            S += f * sms[warp + g][1];
            A.x += f * a.x;
            A.y += f * a.y;
            A.z += f * a.z;
            A.w += f * a.w;
          }
        }
        m = M;
        s = S;
        acc = A;
      }
      __syncthreads(); /* sacc / sms are rewritten by the next round */
    }
    if (gw == 0 && n > 1) {
      const float inv = s > 0.f ? 1.f / s : 0.f;
      const int t = R / p.ngroups, h = hk * p.ngroups + (R - t * p.ngroups);
      char *op = (char *)p.out + ((int64_t)req * p.out_batch_stride + (int64_t)t * p.out_seq_stride +
                                  (int64_t)h * p.out_head_stride + chunk * 128 + lane * 4) * 2;
      *(uint2 *)op = make_uint2(cmb_pack2<IS_FP16>(acc.x * inv, acc.y * inv), cmb_pack2<IS_FP16>(acc.z * inv, acc.w * inv));
      if (lane == 0 && chunk == 0) p.lse[((int64_t)req * p.num_heads_q + h) * p.seqlen_q + t] = s > 0.f ? m + logf(s) : INFINITY;
    }
  }
}

/* Many rows (b * h_kv * rows > CMB_SPLITS_MAX_ROWS): one warp merges one whole row. */
template <int IS_FP16>
__global__ void __launch_bounds__(CMB_THREADS) fmla_combine_rows_kernel(const __grid_constant__ fmla_kernel_params p) {
  const int req = blockIdx.x, hk = blockIdx.y;
  int slot0;
  const int nsplits = cmb_prologue(p, req, &slot0);
  if (nsplits <= 1) return; /* written directly by the decode kernel */

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int rows = p.rows, ngroups = p.ngroups;
  const int64_t slot_stride = (int64_t)p.num_heads_k * rows; /* lse_accum elements per slot */

  for (int64_t r0 = (int64_t)blockIdx.z * CMB_WARPS; r0 < rows; r0 += (int64_t)gridDim.z * CMB_WARPS) {
    const int R = (int)r0 + warp;
    if (R >= rows) continue;
    const int64_t row0 = (int64_t)slot0 * slot_stride + (int64_t)hk * rows + R; /* split 0 of this row */
    const float *lse_k = p.lse_accum + row0;                                  /* split k: + k * slot_stride */

    /* merged lse, as fmla_merge_lse */
    float m = -INFINITY;
    for (int k = lane; k < nsplits; k += 32) m = fmaxf(m, lse_k[k * slot_stride]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    float lse = INFINITY;
    if (m != -INFINITY) {
      float s = 0.f;
      for (int k = lane; k < nsplits; k += 32) s += expf(lse_k[k * slot_stride] - m);
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
      lse = m + logf(s);
    }

    /* weighted sum of the partial outputs; lane owns columns 4*lane + 128u .. +3 */
    float4 acc[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) acc[u] = make_float4(0.f, 0.f, 0.f, 0.f);
    const float *o_row = p.o_accum + row0 * FMLA_HEAD_DIM_V + lane * 4;
    for (int k = 0; k < nsplits; ++k) {
      const float w = fmla_merge_weight(lse_k[k * slot_stride], lse); /* same value in every lane */
      if (w == 0.f) continue;
      const float4 *src = (const float4 *)(o_row + k * slot_stride * FMLA_HEAD_DIM_V);
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const float4 v = src[u * 32];
        acc[u].x += w * v.x;
        acc[u].y += w * v.y;
        acc[u].z += w * v.z;
        acc[u].w += w * v.w;
      }
    }

    const int t = R / ngroups, h = hk * ngroups + (R - t * ngroups);
    char *op = (char *)p.out +
               ((int64_t)req * p.out_batch_stride + (int64_t)t * p.out_seq_stride + (int64_t)h * p.out_head_stride + lane * 4) * 2;
#pragma unroll
    for (int u = 0; u < 4; ++u)
      *(uint2 *)(op + u * 128 * 2) = make_uint2(cmb_pack2<IS_FP16>(acc[u].x, acc[u].y), cmb_pack2<IS_FP16>(acc[u].z, acc[u].w));
    if (lane == 0) p.lse[((int64_t)req * p.num_heads_q + h) * p.seqlen_q + t] = lse;
  }
}

extern "C" flash_mla_status_t fmla_launch_combine(const fmla_kernel_params *p, void *stream) {
  if (p == NULL) return fmla_set_error(FLASH_MLA_ERROR_INTERNAL, "fmla_launch_combine: params is NULL");
  if (p->batch < 1 || p->num_heads_k < 1 || p->num_heads_k > 65535 || p->rows < 1)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "combine: grid (batch %d, num_heads_k %d, rows %d) out of range",
                          p->batch, p->num_heads_k, p->rows);
  const int64_t rows_total = (int64_t)p->batch * p->num_heads_k * p->rows;
  const int by_units = rows_total <= CMB_SPLITS_MAX_ROWS;
  /* Units kernel: G warps per unit, enough that each merges at most ~CMB_BATCH splits of a
   * request with the average split count (parts / batch + 1; the launcher cannot read num_splits). */
  int G = 1;
  const int64_t est_splits = (int64_t)p->num_sm_parts / p->batch + 1;
  while (G < CMB_WARPS && (int64_t)G * CMB_BATCH < est_splits) G <<= 1;
  dim3 grid;
  if (by_units) {
    int64_t ctas = (rows_total * CMB_CHUNKS + CMB_WARPS / G - 1) / (CMB_WARPS / G);
    if (ctas > 0x7fffffff) ctas = 0x7fffffff; /* the kernel loops over the rest */
    grid = dim3((unsigned)ctas, 1, 1);
  } else {
    int64_t units = ((int64_t)p->rows + CMB_WARPS - 1) / CMB_WARPS;
    if (units > 65535) units = 65535; /* the kernel loops over the rest */
    grid = dim3((unsigned)p->batch, (unsigned)p->num_heads_k, (unsigned)units);
  }
  /* PDL (sm_90+): the combine grid is launched while the decode grid finishes, hiding the launch
   * gap that dominates small decode steps; the kernel's griddepcontrol.wait keeps it correct. */
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr[1];
  cfg.gridDim = grid;
  cfg.blockDim = dim3(CMB_THREADS);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = (cudaStream_t)stream;
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = p->cc_major >= 9 ? 1 : 0;
  cudaError_t e;
  if (by_units)
    e = p->dtype == FLASH_MLA_DTYPE_FP16 ? cudaLaunchKernelEx(&cfg, fmla_combine_units_kernel<1>, *p, G)
                                         : cudaLaunchKernelEx(&cfg, fmla_combine_units_kernel<0>, *p, G);
  else
    e = p->dtype == FLASH_MLA_DTYPE_FP16 ? cudaLaunchKernelEx(&cfg, fmla_combine_rows_kernel<1>, *p)
                                         : cudaLaunchKernelEx(&cfg, fmla_combine_rows_kernel<0>, *p);
  if (e == cudaSuccess) e = cudaGetLastError();
  if (e != cudaSuccess) return fmla_set_error(FLASH_MLA_ERROR_CUDA, "combine: kernel launch: %s", cudaGetErrorString(e));
  return FLASH_MLA_SUCCESS;
}
