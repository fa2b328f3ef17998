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
 * Grid (batch, h_kv, min(rows * 4, 65535)), 256 threads = 8 warps, 4.1 KB of shared memory. Batch
 * sits in grid x so any batch size fits; z indexes (row, 128-column chunk) and loops past 65535.
 * A CTA reduces the row's nsplits lse values (thread-strided, so any number of splits works), then
 * warp w accumulates splits w, w+8, ... of its 128 columns (lane: one float4, 512-byte coalesced
 * loads per warp) and the 8 partial sums meet in shared memory. Spreading one row over 4 CTAs and
 * its splits over 8 warps keeps many loads in flight: with few requests (b = 1..4) and 100+ splits
 * the merge is latency-bound, and the first version (one warp per whole row) took most of a small
 * decode step. A split whose weight is exactly 0 is not read.
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

template <int IS_FP16>
__global__ void __launch_bounds__(CMB_THREADS) fmla_combine_kernel(const __grid_constant__ fmla_kernel_params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  /* Launched with programmatic dependent launch on sm_90: this CTA may start while the decode kernel
   * drains; wait for it (and for its writes to o_accum / lse_accum to be visible) before any read. */
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  const int req = blockIdx.x, hk = blockIdx.y;
  const int slot0 = __ldg(p.num_splits + req);
  const int nsplits = __ldg(p.num_splits + req + 1) - slot0;
  if (nsplits <= 1) return; /* written directly by the decode kernel (uniform: the whole CTA leaves) */

  __shared__ float red[CMB_WARPS];
  __shared__ float4 part[CMB_WARPS][32];
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

    /* warp w sums splits w, w + 8, ...; lane owns columns 128 * chunk + 4 * lane .. +3. Independent
     * loads of several splits are in flight per warp, and every CTA of the row works in parallel. */
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    const float *o_col = p.o_accum + row0 * FMLA_HEAD_DIM_V + chunk * 128 + lane * 4;
#pragma unroll 4
    for (int k = warp; k < nsplits; k += CMB_WARPS) {
      const float w = fmla_merge_weight(lse_k[k * slot_stride], lse); /* same value in every lane */
      if (w == 0.f) continue;
      const float4 v = *(const float4 *)(o_col + k * slot_stride * FMLA_HEAD_DIM_V);
      acc.x += w * v.x;
      acc.y += w * v.y;
      acc.z += w * v.z;
      acc.w += w * v.w;
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

extern "C" flash_mla_status_t fmla_launch_combine(const fmla_kernel_params *p, void *stream) {
  if (p == NULL) return fmla_set_error(FLASH_MLA_ERROR_INTERNAL, "fmla_launch_combine: params is NULL");
  if (p->batch < 1 || p->num_heads_k < 1 || p->num_heads_k > 65535 || p->rows < 1)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "combine: grid (batch %d, num_heads_k %d, rows %d) out of range",
                          p->batch, p->num_heads_k, p->rows);
  int64_t units = (int64_t)p->rows * CMB_CHUNKS;
  if (units > 65535) units = 65535; /* the kernel loops over the rest */
  const dim3 grid((unsigned)p->batch, (unsigned)p->num_heads_k, (unsigned)units);
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
  cudaError_t e = p->dtype == FLASH_MLA_DTYPE_FP16 ? cudaLaunchKernelEx(&cfg, fmla_combine_kernel<1>, *p)
                                                   : cudaLaunchKernelEx(&cfg, fmla_combine_kernel<0>, *p);
  if (e == cudaSuccess) e = cudaGetLastError();
  if (e != cudaSuccess) return fmla_set_error(FLASH_MLA_ERROR_CUDA, "combine: kernel launch: %s", cudaGetErrorString(e));
  return FLASH_MLA_SUCCESS;
}
