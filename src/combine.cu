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
 * Two kernels, picked by the launcher from the total row count b * h_kv * rows and the parts per
 * request num_sm_parts / b (both host-known; the second bounds the splits a request can have):
 *  - few rows (<= CMB_SPLITS_MAX_ROWS) and many parts per request (num_sm_parts >=
 *    CMB_SPLITS_MIN_PARTS * b), fmla_combine_splits_kernel: grid (batch, h_kv,
 *    min(rows * 4, 65535)), 256 threads, 8.2 KB smem; z indexes (row, 128-column chunk). A CTA
 *    reduces the row's nsplits lse values (thread-strided), then warp w accumulates splits w, w+8, ...
 *    of its 128 columns (lane: one float4) and the 8 partial sums meet in shared memory. With b = 1..8
 *    and 100+ splits the merge is latency-bound, and spreading a row over 4 CTAs and 8 warps keeps
 *    many loads in flight (b = 1, s_k = 32K: 63 -> 24 us for the whole decode step on an H200).
 *  - otherwise, fmla_combine_rows_kernel: grid (batch, h_kv, min(ceil(rows / 8), 65535)), 256
 *    threads, no smem; warp w of a CTA merges row 8z + w whole: lanes reduce the lse values with
 *    shuffles, then each lane accumulates columns 4*lane + 128u .. +3 (u = 0..3) of every split.
 *    With thousands of rows this has enough parallelism, and the other kernel's tens of thousands of
 *    mostly idle CTAs cost up to 19% of a b = 128 step. With a few splits per request (v6.17) its
 *    serial walk over them is short too: tp b = 32 h_q = 16 (512 rows, ~5 splits) 89.0 -> 86.4 us a
 *    step on an H200, where 8+ splits per request (b <= 16 on 132 parts) measured 1-4 us slower.
 * Batch sits in grid x so any batch size fits (v6.17: for 3 num_sm_parts <= b <= 1024 the row-per-warp
 * kernel's grid x is num_sm_parts, one CTA per split request, cmb_nth_split); z loops past 65535. A
 * split whose weight is exactly 0 is not read.
 *
 * The lse merge is combine_math.h's fmla_merge_lse evaluated in parallel: the same max, the same
 * expf terms and logf, summed in a tree instead of left to right (last-bit differences only).
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
/* ... and only when num_sm_parts >= this many per request (H200, perf-notes twelfth session: 132
 * parts, b = 16 (8.25 per request) still faster split-parallel, b = 32 (4.1) faster row-per-warp) */
#define CMB_SPLITS_MIN_PARTS 6
#define CMB_WCHUNK 1024 /* split weights staged in shared memory at a time (4 KB) */

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

/* Compact grid (v6.17, row-per-warp kernel, CMB_COMPACT_MIN_RATIO * num_sm_parts <= b <=
 * CMB_COMPACT_MAX_BATCH): grid x is num_sm_parts instead of b, and CTA x merges the x-th split
 * request in request order (-1: there are fewer). Every part boundary splits at most one request,
 * so at most num_sm_parts - 1 are split and x < num_sm_parts covers them all; the CTAs that would
 * only have found their request unsplit are never launched. The search costs each CTA a round of
 * loads and two barriers, so it pays only when it removes most of the grid. H200, the combine
 * kernel's duration in the graph (torch.profiler): b = 128 on 33 parts (256 rows, 4096 -> 1056
 * CTAs) 6.8-7.1 -> 5.6-5.7 us; b = 128 on 66 parts (2048 -> 1056) 5.3 -> 5.5 us and, with no split
 * at all, 2.8 -> 3.2 us: hence the ratio 3. Thread t reads the split counts of requests t, t + 256,
 * ...: one round of independent loads. */
#define CMB_COMPACT_MAX_BATCH 1024
#define CMB_COMPACT_MIN_RATIO 3
static __device__ __forceinline__ int cmb_nth_split(const fmla_kernel_params &p, int x) {
  __shared__ uint32_t msk[CMB_COMPACT_MAX_BATCH / 32]; /* bit i % 32 of word i / 32: request i is split */
  __shared__ int found;
  const int b = p.batch;
  bool f[CMB_COMPACT_MAX_BATCH / CMB_THREADS];
#pragma unroll
  for (int k = 0; k < CMB_COMPACT_MAX_BATCH / CMB_THREADS; ++k) {
    const int i = (int)threadIdx.x + k * CMB_THREADS;
    f[k] = i < b && fmla_ns_slot(p.num_splits, b, i + 1) - fmla_ns_slot(p.num_splits, b, i) > 1;
  }
#pragma unroll
  for (int k = 0; k < CMB_COMPACT_MAX_BATCH / CMB_THREADS; ++k) {
    const uint32_t m = __ballot_sync(0xffffffffu, f[k]);
    if ((threadIdx.x & 31) == 0) msk[(threadIdx.x >> 5) + k * CMB_WARPS] = m;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int left = x, r = -1;
    for (int w = 0; w < (b + 31) / 32; ++w) {
      uint32_t m = msk[w];
      const int c = __popc(m);
      if (left < c) {
        for (; left > 0; --left) m &= m - 1; /* drop the lowest set bits */
        r = w * 32 + __ffs(m) - 1;
        break;
      }
      left -= c;
    }
    found = r;
  }
  __syncthreads();
  return found;
}

/* Both kernels start here. Launched with programmatic dependent launch on sm_90, a CTA may start
 * while the decode kernel drains: wait for it (and for its writes to o_accum / lse_accum to be
 * visible) before any read. *req: blockIdx.x, or with `compact` the request found by
 * cmb_nth_split (-1: none, and 0 is returned). Returns request *req's split count; *slot0 = its
 * first slot. */
static __device__ __forceinline__ int cmb_prologue(const fmla_kernel_params &p, int *req, int *slot0, int compact) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  if (compact && (*req = cmb_nth_split(p, *req)) < 0) return 0; /* uniform over the CTA */
  *slot0 = fmla_ns_slot(p.num_splits, p.batch, *req);
  return fmla_ns_slot(p.num_splits, p.batch, *req + 1) - *slot0;
}

/* Few rows: a CTA per (row, 128-column chunk), the splits spread over its 8 warps. */
template <int IS_FP16>
__global__ void __launch_bounds__(CMB_THREADS) fmla_combine_splits_kernel(const __grid_constant__ fmla_kernel_params p) {
  int req = blockIdx.x, slot0 = 0;
  const int hk = blockIdx.y;
  const int nsplits = cmb_prologue(p, &req, &slot0, 0);
  if (nsplits <= 1) return; /* written directly by the decode kernel (uniform: the whole CTA leaves) */

  __shared__ float red[CMB_WARPS];
  __shared__ float4 part[CMB_WARPS][32];
  __shared__ float wts[CMB_WCHUNK];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int rows = p.rows, ngroups = p.ngroups;
  const int64_t slot_stride = (int64_t)p.num_heads_k * rows; /* lse_accum elements per slot */
  const int64_t units = (int64_t)rows * CMB_CHUNKS;

  for (int64_t z = blockIdx.z; z < units; z += gridDim.z) {
    const int R = (int)(z / CMB_CHUNKS), chunk = (int)(z - (int64_t)R * CMB_CHUNKS);
    const int64_t row0 = (int64_t)slot0 * slot_stride + (int64_t)hk * rows + R; /* split 0 of this row */
    const float *lse_k = p.lse_accum + row0;                                  /* split k: + k * slot_stride */

    /* merged lse, as fmla_merge_lse (same max, expf and logf; summed in a tree) */
    float m = -INFINITY;
    for (int k = threadIdx.x; k < nsplits; k += CMB_THREADS) m = fmaxf(m, lse_k[k * slot_stride]);
    m = cmb_block_reduce<1>(m, red);
    float lse = INFINITY;
    if (m != -INFINITY) {
      float s = 0.f;
      for (int k = threadIdx.x; k < nsplits; k += CMB_THREADS) s += expf(lse_k[k * slot_stride] - m);
      lse = m + logf(cmb_block_reduce<0>(s, red));
    }

    /* warp w sums splits w, w + 8, ...; lane owns columns 128 * chunk + 4 * lane .. +3. The split
     * weights go to shared memory first (CMB_WCHUNK at a time), so the o_accum loads of a warp do
     * not wait on an lse load each and many are in flight; every CTA of the row works in parallel. */
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    const float *o_col = p.o_accum + row0 * FMLA_HEAD_DIM_V + chunk * 128 + lane * 4;
    for (int kb = 0; kb < nsplits; kb += CMB_WCHUNK) {
      const int kn = nsplits - kb < CMB_WCHUNK ? nsplits - kb : CMB_WCHUNK;
      for (int k = threadIdx.x; k < kn; k += CMB_THREADS) wts[k] = fmla_merge_weight(lse_k[(int64_t)(kb + k) * slot_stride], lse);
      __syncthreads();
#pragma unroll 8
      for (int k = warp; k < kn; k += CMB_WARPS) {
        const float w = wts[k]; /* same value in every lane */
        if (w == 0.f) continue;
        const float4 v = *(const float4 *)(o_col + (int64_t)(kb + k) * slot_stride * FMLA_HEAD_DIM_V);
        acc.x += w * v.x;
        acc.y += w * v.y;
        acc.z += w * v.z;
        acc.w += w * v.w;
      }
      __syncthreads(); /* wts is refilled by the next chunk */
    }
    part[warp][lane] = acc;
    __syncthreads();
    if (warp == 0) {
      for (int w = 1; w < CMB_WARPS; ++w) {
        const float4 v = part[w][lane];
        acc.x += v.x;
        acc.y += v.y;
        acc.z += v.z;
        acc.w += v.w;
      }
      const int t = R / ngroups, h = hk * ngroups + (R - t * ngroups);
      char *op = (char *)p.out + ((int64_t)req * p.out_batch_stride + (int64_t)t * p.out_seq_stride +
                                  (int64_t)h * p.out_head_stride + chunk * 128 + lane * 4) * 2;
      *(uint2 *)op = make_uint2(cmb_pack2<IS_FP16>(acc.x, acc.y), cmb_pack2<IS_FP16>(acc.z, acc.w));
      if (lane == 0 && chunk == 0) p.lse[((int64_t)req * p.num_heads_q + h) * p.seqlen_q + t] = lse;
    }
    __syncthreads(); /* part is reused by the next unit */
  }
}

/* Many rows or few splits per request (see the launcher): one warp merges one whole row. */
template <int IS_FP16>
__global__ void __launch_bounds__(CMB_THREADS) fmla_combine_rows_kernel(const __grid_constant__ fmla_kernel_params p,
                                                                        int compact) {
  int req = blockIdx.x, slot0 = 0;
  const int hk = blockIdx.y;
  const int nsplits = cmb_prologue(p, &req, &slot0, compact);
  if (nsplits <= 1) return; /* written directly by the decode kernel, or (compact) no request left */

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
  const int by_splits = (int64_t)p->batch * p->num_heads_k * p->rows <= CMB_SPLITS_MAX_ROWS &&
                        (int64_t)p->num_sm_parts >= (int64_t)CMB_SPLITS_MIN_PARTS * p->batch;
  const int compact = !by_splits && p->batch >= (int64_t)CMB_COMPACT_MIN_RATIO * p->num_sm_parts &&
                      p->batch <= CMB_COMPACT_MAX_BATCH;
  int64_t units = by_splits ? (int64_t)p->rows * CMB_CHUNKS : ((int64_t)p->rows + CMB_WARPS - 1) / CMB_WARPS;
  if (units > 65535) units = 65535; /* the kernels loop over the rest */
  const dim3 grid((unsigned)(compact ? p->num_sm_parts : p->batch), (unsigned)p->num_heads_k, (unsigned)units);
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
  if (by_splits)
    e = p->dtype == FLASH_MLA_DTYPE_FP16 ? cudaLaunchKernelEx(&cfg, fmla_combine_splits_kernel<1>, *p)
                                         : cudaLaunchKernelEx(&cfg, fmla_combine_splits_kernel<0>, *p);
  else
    e = p->dtype == FLASH_MLA_DTYPE_FP16 ? cudaLaunchKernelEx(&cfg, fmla_combine_rows_kernel<1>, *p, compact)
                                         : cudaLaunchKernelEx(&cfg, fmla_combine_rows_kernel<0>, *p, compact);
  if (e == cudaSuccess) e = cudaGetLastError();
  if (e != cudaSuccess) return fmla_set_error(FLASH_MLA_ERROR_CUDA, "combine: kernel launch: %s", cudaGetErrorString(e));
  return FLASH_MLA_SUCCESS;
}
