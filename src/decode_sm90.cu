/*
 * decode_sm90.cu: MLA decode over a paged KV cache for Hopper (sm_90a): TMA + wgmma + warp
 * specialisation. Same contract as the portable kernel (src/params.h).
 *
 * Computes, for each KV head hk and request i, over the query rows r = (t, g) of that head
 * (rows = s_q * ngroups, ngroups = h_q / h_kv):
 *   q [b, s_q, h_q, 576]  k_cache [num_blocks, page, h_kv, 576] (V = first 512 dims of K)
 *   out [b, s_q, h_q, 512] = softmax(scale * q K^T, bottom-right causal) V,  lse [b, h_q, s_q]
 * or, for a request split across parts, o_accum [slot, h_kv, rows, 512] = O / l and
 * lse_accum [slot, h_kv, rows] (-inf when the split saw no key); combine.cu merges the slots.
 *
 * Grid (num_m_blocks, h_kv, num_sm_parts), 384 threads = 3 warpgroups, 1 CTA per SM:
 *   WG2 producer  one thread issues every TMA copy; setmaxnreg.dec to 40 registers.
 *   WG0, WG1      consumers; setmaxnreg.inc to 232 registers.
 * A CTA owns one 64-row M tile of one KV head and walks the segments (request i, n-blocks
 * [lo, hi)) of its part from the scheduler metadata. Per segment the consumers copy the Q tile
 * (64 x 576, cp.async, zero-filled padding rows) into shared memory; per 64-key n-block the
 * producer streams the K tile (64 x 576, all 9 column tiles of 64) into one of two stages.
 *
 * One n-block, split N for S and split columns for O:
 *   S   = Q K^T        WG0 keys 0..31, WG1 keys 32..63: wgmma m64n32k16 x 36 (A = Q, B = K, both
 *                      K-major in smem); each 64-column K tile has its own mbarrier, so S starts
 *                      when the first 8 KB land.
 *   softmax            mask (row r sees keys j < L - (s_q-1-t)), row max per WG, exchange the
 *                      two halves' maxima through smem (named barrier over the 256 consumer
 *                      threads), online rescale in exp2, P half -> smem (input dtype, 128B swizzle).
 *   O  += P V          each WG its own 256 output columns: wgmma m64n256k16 x 4 (A = P 64x64 from
 *                      smem, B = V read from the same K stage as an MN-major operand: V is the first
 *                      512 columns of the K tile, so it costs no extra load). O = 128 fp32 regs/thread.
 *   release stage      after both WGs' PV wgmmas complete (checked at the next S wait).
 *
 *   producer  |TMA K[n+1] (9 x 8 KB, other stage)..........|wait empty|TMA K[n+2] ...
 *   WG0       |S[:, 0:32]  |max|xchg|exp,P[:, 0:32]|bar|PV O[:, 0:256]   |S(n+1)...
 *   WG1       |S[:,32:64]  |max|xchg|exp,P[:,32:64]|bar|PV O[:,256:512]  |S(n+1)...
 *   tensor    |==S(n)======|                          |==PV(n)==========|==S(n+1)==
 * Row sums l stay per thread (partial over the thread's columns) and are reduced across the
 * quad and the two WGs once, in the epilogue. Rows past L and pages whose id is outside
 * [0, num_blocks) are zeroed in the V tile before PV (stale smem or NaN slots; 0 * NaN = NaN);
 * scores there are forced to 0 (bad page) and -inf (past the row's limit).
 *
 * Shared memory (dynamic, 1024-byte aligned; every 64x64 tile uses the TMA 128-byte swizzle:
 * 16-byte chunk c of row r lives at r*128 + ((c ^ (r % 8)) * 16), 8-row atoms of 1024 bytes):
 *   Q      9 x 8 KB      73,728
 *   K/V    2 x 9 x 8 KB 147,456   (stage s, tile t at 73,728 + s*73,728 + t*8,192)
 *   P      8 KB           8,192
 *   row max [2][64] f32 512, row sum [2][64] f32 512, bad-page masks [2] u64, 20 mbarriers
 *   total 230,576 + 1,024 alignment slack = 231,600 of 232,448 (227 KB).
 *
 * Page sizes: any multiple of 64 (one box of 64 keys per tile), 16 and 32 (4 or 2 boxes per
 * 64-key tile). Others return FLASH_MLA_ERROR_UNSUPPORTED_DEVICE (api.c falls back).
 *
 * Build/check just this file:
 *   nvcc -std=c++17 -O3 -Xptxas -v -c -gencode=arch=compute_90a,code=sm_90a \
 *        -gencode=arch=compute_80,code=sm_80 -Iinclude src/decode_sm90.cu -o /tmp/d90.o
 *   cuobjdump --dump-sass /tmp/d90.o | grep -c HGMMA        (and no LDL/STL)
 * Debug: -DFMLA_SM90_DEBUG=1 bounds every mbarrier wait (printf + trap on a hang).
 * Layout unit test on a GPU: dev/test_wgmma.cu (one S tile and one PV tile against the CPU).
 */
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <atomic>

#include "params.h"
#include "ptx_sm90.cuh"

#ifndef FMLA_SM90_DEBUG
#define FMLA_SM90_DEBUG 0
#endif
#ifndef FMLA_SM90_PDL /* programmatic dependent launch: overlap our prologue with the previous kernel */
#define FMLA_SM90_PDL 1
#endif

#define SM90_THREADS 384
#define SM90_CONSUMER_THREADS 256
#define SM90_NTILES 9                        /* 576 / 64 column tiles */
#define SM90_TILE_BYTES 8192                 /* 64 rows x 128 bytes */
#define SM90_STAGE_BYTES (SM90_NTILES * SM90_TILE_BYTES)
#define SM90_OFF_Q 0
#define SM90_OFF_K (SM90_OFF_Q + SM90_STAGE_BYTES)
#define SM90_OFF_P (SM90_OFF_K + 2 * SM90_STAGE_BYTES)
#define SM90_OFF_RMAX (SM90_OFF_P + SM90_TILE_BYTES) /* float [2][64] */
#define SM90_OFF_LSUM (SM90_OFF_RMAX + 512)          /* float [2][64] */
#define SM90_OFF_ZMASK (SM90_OFF_LSUM + 512)         /* uint64 [2] */
#define SM90_OFF_FULL (SM90_OFF_ZMASK + 16)          /* uint64 mbarrier [2][9] */
#define SM90_OFF_EMPTY (SM90_OFF_FULL + 2 * SM90_NTILES * 8) /* uint64 mbarrier [2] */
#define SM90_SMEM_USED (SM90_OFF_EMPTY + 2 * 8)
#define SM90_SMEM_BYTES (SM90_SMEM_USED + 1024)
#define SM90_BAR_CONSUMERS 1 /* named barrier id over WG0 + WG1 (0 is __syncthreads) */

#define SM90_LN2 0.69314718055994530942f

/* ======================================================================================
 * Device code (sm_90a pass only; the sm_80 pass compiles an empty kernel).
 * ====================================================================================== */
#if FMLA_SM90_DEVICE

static __device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
#if FMLA_SM90_DEBUG
  long long spins = 0;
  while (!mbarrier_try_wait_parity(bar, parity)) {
    if (++spins == (1ll << 28)) {
      printf("fmla sm90: mbarrier hang: block (%d,%d,%d) thread %d bar smem 0x%x parity %u\n", blockIdx.x,
             blockIdx.y, blockIdx.z, threadIdx.x, bar, parity);
      __trap();
    }
  }
#else
  while (!mbarrier_try_wait_parity(bar, parity)) {
  }
#endif
}

/* One segment of the part: request i, n-blocks [lo, hi), split index, clamped length L. */
typedef struct sm90_segment {
  int lo, hi, split, L;
} sm90_segment;

static __device__ __forceinline__ int sm90_clamped_len(const fmla_kernel_params &p, int i) {
  const long long cap = (long long)p.max_blocks_per_seq * p.page_size;
  long long L = p.cache_seqlens[i];
  L = L < 0 ? 0 : (L > cap ? cap : L);
  return (int)(L > 0x7fffffffll ? 0x7fffffffll : L);
}

static __device__ __forceinline__ sm90_segment sm90_get_segment(const fmla_kernel_params &p, const int *meta, int i) {
  sm90_segment s;
  s.L = sm90_clamped_len(p, i);
  const int nb = (int)(((long long)s.L + FMLA_BLOCK_N - 1) / FMLA_BLOCK_N);
  s.lo = i == meta[0] ? meta[1] : 0;
  s.hi = i == meta[2] ? meta[3] : nb;
  s.hi = s.hi < nb ? s.hi : nb; /* the metadata saw unclamped lengths */
  s.lo = s.lo < 0 ? 0 : s.lo;
  s.lo = s.lo < s.hi ? s.lo : s.hi;
  s.split = i == meta[0] ? meta[4] : 0;
  return s;
}

/* Keys [a, b) of a 64-key block as a bit mask (0 <= a <= b <= 64). */
static __device__ __forceinline__ uint64_t sm90_key_mask(int a, int b) {
  const uint64_t hi = b >= 64 ? ~0ull : ((1ull << b) - 1);
  const uint64_t lo = a >= 64 ? ~0ull : ((1ull << a) - 1);
  return hi & ~lo;
}

/* ---- producer: one thread ---- */

/* Issue the TMA copies of n-block n of request i into stage `kbase` (9 column tiles, each with its
 * own barrier), and publish which keys inside L sit on a page id outside [0, num_blocks): those are
 * skipped (never read) and the consumers treat them as zero keys. Pages past ceil(L/page) are never
 * looked up in the block table; their rows are masked by L. */
static __device__ __forceinline__ void sm90_produce_block(const fmla_kernel_params &p, const CUtensorMap *map,
                                                          int i, int hk, int n, int L, uint32_t kbase,
                                                          uint32_t full, uint64_t *zmask_slot, uint64_t policy) {
  const int page = p.page_size;
  const int key0 = n * FMLA_BLOCK_N;
  const int in_len = L - key0 < 64 ? L - key0 : 64; /* keys of this block inside L, >= 1 */
  const int32_t *bt = p.block_table + (int64_t)i * p.block_table_stride;
  if (page >= 64) {
    const int pidx = key0 / page;
    const int off = key0 - pidx * page;
    const int id = bt[pidx];
    const bool ok = (unsigned)id < (unsigned)p.num_blocks;
    *zmask_slot = ok ? 0ull : sm90_key_mask(0, in_len);
#pragma unroll
    for (int t = 0; t < SM90_NTILES; ++t) {
      const uint32_t bar = full + t * 8;
      mbarrier_arrive_expect_tx(bar, ok ? SM90_TILE_BYTES : 0u);
      if (ok) cp_async_bulk_tensor_4d_g2s(kbase + t * SM90_TILE_BYTES, map, t * 64, hk, off, id, bar, policy);
    }
  } else {
    const int nbox = 64 / page; /* 2 or 4 */
    const int npages = (L + page - 1) / page;
    int ids[4]; /* fully unrolled loops below: stays in registers */
    uint32_t okbits = 0;
    uint64_t zm = 0;
#pragma unroll
    for (int bx = 0; bx < 4; ++bx) {
      const int pidx = key0 / page + bx;
      ids[bx] = 0;
      if (bx >= nbox || pidx >= npages) continue; /* wholly past L: masked, never looked up */
      const int id = bt[pidx];
      if ((unsigned)id < (unsigned)p.num_blocks) {
        ids[bx] = id;
        okbits |= 1u << bx;
      } else {
        const int a = bx * page, b = a + page < in_len ? a + page : in_len;
        if (a < b) zm |= sm90_key_mask(a, b);
      }
    }
    *zmask_slot = zm;
    const uint32_t box_bytes = (uint32_t)page * 128u;
    const uint32_t bytes = (uint32_t)__popc(okbits) * box_bytes;
#pragma unroll 1
    for (int t = 0; t < SM90_NTILES; ++t) {
      const uint32_t bar = full + t * 8;
      mbarrier_arrive_expect_tx(bar, bytes);
#pragma unroll
      for (int bx = 0; bx < 4; ++bx)
        if (okbits >> bx & 1)
          cp_async_bulk_tensor_4d_g2s(kbase + t * SM90_TILE_BYTES + bx * box_bytes, map, t * 64, hk, 0, ids[bx], bar,
                                      policy);
    }
  }
}

/* ---- consumers ---- */

/* Q tile of (request b, KV head hk, M tile m_block) -> 9 swizzled 64x64 tiles. Row r of the tile is
 * head row m_block*64 + r = (t, g); rows >= p.rows are zero-filled (cp.async with 0 source bytes).
 * ct is the thread's index among the nthr copying threads. Caller: cp_async_wait_all, fence, barrier. */
static __device__ __forceinline__ void sm90_load_q(const fmla_kernel_params &p, uint32_t sQ, int b, int hk,
                                                   int m_block, int ct, int nthr) {
  const char *q = (const char *)p.q;
  for (int idx = ct; idx < 64 * 72; idx += nthr) {
    const int r = idx / 72, ch = idx - r * 72;
    const int gr = m_block * 64 + r;
    const char *src = q;
    uint32_t bytes = 0;
    if (gr < p.rows) {
      const int t = gr / p.ngroups, h = hk * p.ngroups + (gr - t * p.ngroups);
      src = q + 2 * ((int64_t)b * p.q_batch_stride + (int64_t)t * p.q_seq_stride + (int64_t)h * p.q_head_stride) +
            ch * 16;
      bytes = 16;
    }
    const uint32_t dst = sQ + (ch >> 3) * SM90_TILE_BYTES + r * 128 + (((ch & 7) ^ (r & 7)) << 4);
    cp_async_cg_16_zfill(dst, src, bytes);
  }
  cp_async_commit_group();
}

/* S[:, 32*wg .. +32] = Q K^T for one stage: 9 tiles x 4 k-steps of m64n32k16. Waits each tile's
 * barrier just before its k-steps. Q tile t: K-major, k-step kk is +32 bytes inside the 128-byte
 * row; K tile t: rows 32*wg.. are this WG's keys (N), K-major as well. */
template <int kFp16>
static __device__ __forceinline__ void sm90_qk(float *s, uint32_t sQ, uint32_t kbase, uint32_t full, uint32_t parity,
                                               int wg) {
  const uint64_t dq = wgmma_desc_sw128(sQ, 16, 1024);
  const uint64_t dk = wgmma_desc_sw128(kbase + wg * 32 * 128, 16, 1024);
#pragma unroll
  for (int t = 0; t < SM90_NTILES; ++t) {
    mbar_wait(full + t * 8, parity);
    wgmma_fence(); /* ptxas would inject it anyway (C7519) after the wait loop's branch */
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint64_t off = (uint64_t)((t * SM90_TILE_BYTES + kk * 32) >> 4);
      if (kFp16)
        wgmma_m64n32k16_f32_f16_ss(s, dq + off, dk + off, (t | kk) != 0);
      else
        wgmma_m64n32k16_f32_bf16_ss(s, dq + off, dk + off, (t | kk) != 0);
    }
  }
  wgmma_commit_group();
}

/* O[:, 256*wg .. +256] += P V: 4 k-steps (16 keys each) of m64n256k16. A = P (K-major, +32 bytes
 * per k-step); B = V columns 256*wg.. = K tiles 4wg..4wg+3, MN-major: LBO = 8192 (next 64 columns =
 * next tile), SBO = 1024 (next 8 keys), k-step = 16 keys = +2048 bytes. */
template <int kFp16>
static __device__ __forceinline__ void sm90_pv(float *o, uint32_t sP, uint32_t kbase, int wg) {
  const uint64_t dp = wgmma_desc_sw128(sP, 16, 1024);
  const uint64_t dv = wgmma_desc_sw128(kbase + wg * 4 * SM90_TILE_BYTES, SM90_TILE_BYTES, 1024);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    if (kFp16)
      wgmma_m64n256k16_f32_f16_ss_tb(o, dp + (uint64_t)(kk * 2), dv + (uint64_t)(kk * 128), 1);
    else
      wgmma_m64n256k16_f32_bf16_ss_tb(o, dp + (uint64_t)(kk * 2), dv + (uint64_t)(kk * 128), 1);
  }
  wgmma_commit_group();
}

static __device__ __forceinline__ uint32_t sm90_pack2(float a, float b, int fp16) {
  if (fp16) {
    const __half2 h = __floats2half2_rn(a, b);
    return *(const uint32_t *)&h;
  }
  const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *(const uint32_t *)&h;
}

/* This thread's P values (rows r0 = 16*warp + lane/4 and r0 + 8, keys 32*wg + 8c + 2*(lane%4) + {0,1})
 * into the swizzled K-major P tile: key chunk 4*wg + c of row r sits at chunk (4wg + c) ^ (r % 8). */
template <int kFp16>
static __device__ __forceinline__ void sm90_store_p(uint32_t sP, const float *s, int wg, int r0, int quad) {
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const int ch = 4 * wg + c;
    const uint32_t a0 = sP + r0 * 128 + ((ch ^ (r0 & 7)) << 4) + 4 * quad;
    const uint32_t a1 = sP + (r0 + 8) * 128 + ((ch ^ ((r0 + 8) & 7)) << 4) + 4 * quad;
    st_shared_b32(a0, sm90_pack2(s[4 * c + 0], s[4 * c + 1], kFp16));
    st_shared_b32(a1, sm90_pack2(s[4 * c + 2], s[4 * c + 3], kFp16));
  }
}

template <int kFp16>
static __device__ __forceinline__ void sm90_consumer(const fmla_kernel_params &p, uint8_t *smem) {
  const int tid = threadIdx.x; /* 0..255 */
  const int wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, quad = lane & 3;
  const int r0 = warp * 16 + (lane >> 2), r1 = r0 + 8;
  const int m_block = blockIdx.x, hk = blockIdx.y;
  const int *meta = p.meta + (int64_t)blockIdx.z * FMLA_META_SIZE;
  const uint32_t sbase = smem_u32(smem);
  const uint32_t sQ = sbase + SM90_OFF_Q, sK = sbase + SM90_OFF_K, sP = sbase + SM90_OFF_P;
  const uint32_t full0 = sbase + SM90_OFF_FULL, empty0 = sbase + SM90_OFF_EMPTY;
  float *rmax = (float *)(smem + SM90_OFF_RMAX);
  float *lsum = (float *)(smem + SM90_OFF_LSUM);
  const volatile uint64_t *zmask = (const volatile uint64_t *)(smem + SM90_OFF_ZMASK);
  const float sl2 = p.scale_log2;

  const int begin_req = meta[0], end_req = meta[2];
  uint32_t it = 0; /* n-blocks consumed so far: stage = it & 1, phase = (it >> 1) & 1 */
  for (int i = begin_req; i <= end_req && i < p.batch; ++i) {
    const sm90_segment seg = sm90_get_segment(p, meta, i);
    const int L = seg.L;
    /* Previous segment: its Q/P/row-stat reads are over before anyone overwrites them. */
    bar_sync(SM90_BAR_CONSUMERS, SM90_CONSUMER_THREADS);
    if (seg.lo < seg.hi) {
      sm90_load_q(p, sQ, i, hk, m_block, tid, SM90_CONSUMER_THREADS);
      cp_async_wait_all();
      fence_proxy_async_shared_cta();
      bar_sync(SM90_BAR_CONSUMERS, SM90_CONSUMER_THREADS);
    }
    /* Key limits of this thread's two rows; m = running max of the scaled log2 scores (-inf: none yet). */
    int lim0, lim1;
    {
      const int g0 = m_block * 64 + r0, g1 = m_block * 64 + r1;
      const int t0 = g0 / p.ngroups, t1 = g1 / p.ngroups;
      lim0 = p.causal ? L - (p.seqlen_q - 1 - t0) : L;
      lim1 = p.causal ? L - (p.seqlen_q - 1 - t1) : L;
      lim0 = lim0 < L ? lim0 : L; /* padding rows (t >= s_q) never look past L */
      lim1 = lim1 < L ? lim1 : L;
    }
    float o[128];
#pragma unroll
    for (int k = 0; k < 128; ++k) o[k] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;

    for (int n = seg.lo; n < seg.hi; ++n, ++it) {
      const uint32_t stage = it & 1, parity = (it >> 1) & 1;
      const uint32_t kbase = sK + stage * SM90_STAGE_BYTES;
      float s[16];
      sm90_qk<kFp16>(s, sQ, kbase, full0 + stage * SM90_NTILES * 8, parity, wg);
      wgmma_wait<0>(); /* also retires PV(n-1) */
#pragma unroll
      for (int k = 0; k < 16; ++k) fence_operand(s[k]);
#pragma unroll
      for (int k = 0; k < 128; ++k) fence_operand(o[k]);
      if (n > seg.lo && lane == 0) mbarrier_arrive(empty0 + (stage ^ 1) * 8);

      /* Mask and scale: keys on a bad page score 0, keys past the row's limit -inf. */
      const uint64_t zm = zmask[stage];
      const int key_base = n * 64 + wg * 32 + 2 * quad;
      float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int key = key_base + 8 * c + e;
          const bool z = (zm >> (wg * 32 + 8 * c + 2 * quad + e)) & 1;
          float v0 = z ? 0.f : s[4 * c + e] * sl2;
          float v1 = z ? 0.f : s[4 * c + 2 + e] * sl2;
          v0 = key < lim0 ? v0 : -INFINITY;
          v1 = key < lim1 ? v1 : -INFINITY;
          s[4 * c + e] = v0;
          s[4 * c + 2 + e] = v1;
          mx0 = fmaxf(mx0, v0);
          mx1 = fmaxf(mx1, v1);
        }
      }
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
      if (quad == 0) {
        rmax[wg * 64 + r0] = mx0;
        rmax[wg * 64 + r1] = mx1;
      }
      bar_sync(SM90_BAR_CONSUMERS, SM90_CONSUMER_THREADS);
      mx0 = fmaxf(mx0, rmax[(wg ^ 1) * 64 + r0]);
      mx1 = fmaxf(mx1, rmax[(wg ^ 1) * 64 + r1]);
      const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
      const float mu0 = mn0 == -INFINITY ? 0.f : mn0, mu1 = mn1 == -INFINITY ? 0.f : mn1;
      const float alpha0 = ex2_approx_ftz(m0 - mu0), alpha1 = ex2_approx_ftz(m1 - mu1);
      m0 = mn0;
      m1 = mn1;
      float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          s[4 * c + e] = ex2_approx_ftz(s[4 * c + e] - mu0);
          s[4 * c + 2 + e] = ex2_approx_ftz(s[4 * c + 2 + e] - mu1);
          ps0 += s[4 * c + e];
          ps1 += s[4 * c + 2 + e];
        }
      }
      l0 = l0 * alpha0 + ps0;
      l1 = l1 * alpha1 + ps1;
#pragma unroll
      for (int c = 0; c < 32; ++c) {
        o[4 * c + 0] *= alpha0;
        o[4 * c + 1] *= alpha0;
        o[4 * c + 2] *= alpha1;
        o[4 * c + 3] *= alpha1;
      }
      sm90_store_p<kFp16>(sP, s, wg, r0, quad);

      /* V rows that must read as zero: past L (NaN slots or stale data) and bad pages. Whole
       * 128-byte rows, so the swizzle (which permutes chunks inside a row) does not matter. */
      const int in_len = L - n * 64;
      const uint64_t bad = zm | (in_len >= 64 ? 0ull : sm90_key_mask(in_len, 64));
      if (bad) {
        const int wt = tid & 127;
        for (int idx = wt; idx < 64 * 32; idx += 128) {
          const int row = idx >> 5, ch = idx & 31;
          if ((bad >> row) & 1)
            st_shared_v4_zero(kbase + (4 * wg + (ch >> 3)) * SM90_TILE_BYTES + row * 128 + (ch & 7) * 16);
        }
      }
      fence_proxy_async_shared_cta(); /* P and zeroed V rows are read by wgmma (async proxy) */
      bar_sync(SM90_BAR_CONSUMERS, SM90_CONSUMER_THREADS);
      sm90_pv<kFp16>(o, sP, kbase, wg);
    }
    wgmma_wait<0>();
#pragma unroll
    for (int k = 0; k < 128; ++k) fence_operand(o[k]);
    if (seg.lo < seg.hi && lane == 0) mbarrier_arrive(empty0 + ((it - 1) & 1) * 8);

    /* Epilogue: row sums over the quad and the two WGs, then O / l. */
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    if (quad == 0) {
      lsum[wg * 64 + r0] = l0;
      lsum[wg * 64 + r1] = l1;
    }
    bar_sync(SM90_BAR_CONSUMERS, SM90_CONSUMER_THREADS);
    l0 = lsum[r0] + lsum[64 + r0];
    l1 = lsum[r1] + lsum[64 + r1];
    const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
    const int nsplit = p.num_splits[i + 1] - p.num_splits[i];
    const int col0 = wg * 256 + 2 * quad;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = half ? r1 : r0;
      const int gr = m_block * 64 + r;
      if (gr >= p.rows) continue;
      const float inv = half ? inv1 : inv0, l = half ? l1 : l0, m = half ? m1 : m0;
      const int t = gr / p.ngroups, h = hk * p.ngroups + (gr - t * p.ngroups);
      if (nsplit <= 1) {
        uint32_t *dst = (uint32_t *)((char *)p.out + 2 * ((int64_t)i * p.out_batch_stride +
                                                          (int64_t)t * p.out_seq_stride + (int64_t)h * p.out_head_stride));
#pragma unroll
        for (int c = 0; c < 32; ++c)
          dst[(col0 + 8 * c) >> 1] = sm90_pack2(o[4 * c + 2 * half] * inv, o[4 * c + 2 * half + 1] * inv, kFp16);
        if (wg == 0 && quad == 0)
          p.lse[((int64_t)i * p.num_heads_q + h) * p.seqlen_q + t] = l > 0.f ? m * SM90_LN2 + logf(l) : INFINITY;
      } else {
        const int64_t slot_row = ((int64_t)(p.num_splits[i] + seg.split) * p.num_heads_k + hk) * p.rows + gr;
        float2 *dst = (float2 *)(p.o_accum + slot_row * FMLA_HEAD_DIM_V);
#pragma unroll
        for (int c = 0; c < 32; ++c)
          dst[(col0 + 8 * c) >> 1] = make_float2(o[4 * c + 2 * half] * inv, o[4 * c + 2 * half + 1] * inv);
        if (wg == 0 && quad == 0) p.lse_accum[slot_row] = l > 0.f ? m * SM90_LN2 + logf(l) : -INFINITY;
      }
    }
  }
}

template <int kFp16>
static __device__ __forceinline__ void sm90_producer(const fmla_kernel_params &p, const CUtensorMap *map,
                                                     uint8_t *smem) {
  const int hk = blockIdx.y;
  const int *meta = p.meta + (int64_t)blockIdx.z * FMLA_META_SIZE;
  const uint32_t sbase = smem_u32(smem);
  const uint32_t sK = sbase + SM90_OFF_K, full0 = sbase + SM90_OFF_FULL, empty0 = sbase + SM90_OFF_EMPTY;
  uint64_t *zmask = (uint64_t *)(smem + SM90_OFF_ZMASK);
  /* EVICT_FIRST: with one M tile the KV stream is read once. With several M tiles the sibling
   * CTAs (adjacent blockIdx.x) read the same blocks at about the same time: keep normal priority. */
  const uint64_t policy =
      p.num_m_blocks == 1 ? createpolicy_fractional_l2_evict_first() : createpolicy_fractional_l2_evict_normal();
  const int begin_req = meta[0], end_req = meta[2];
  uint32_t it = 0;
  for (int i = begin_req; i <= end_req && i < p.batch; ++i) {
    const sm90_segment seg = sm90_get_segment(p, meta, i);
    for (int n = seg.lo; n < seg.hi; ++n, ++it) {
      const uint32_t stage = it & 1, parity = (it >> 1) & 1;
      mbar_wait(empty0 + stage * 8, parity ^ 1);
      sm90_produce_block(p, map, i, hk, n, seg.L, sK + stage * SM90_STAGE_BYTES, full0 + stage * SM90_NTILES * 8,
                         &zmask[stage], policy);
    }
  }
}

#endif /* FMLA_SM90_DEVICE */

template <int kFp16>
__global__ void __launch_bounds__(SM90_THREADS, 1)
    fmla_decode_sm90_kernel(const __grid_constant__ fmla_kernel_params p, const __grid_constant__ CUtensorMap tmap_k) {
#if FMLA_SM90_DEVICE
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  /* 128-byte swizzle atoms must start on 1024-byte boundaries (descriptor base offset 0, TMA). */
  uint8_t *smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  if (threadIdx.x == 0) {
    const uint32_t sbase = smem_u32(smem);
    for (int k = 0; k < 2 * SM90_NTILES; ++k) mbarrier_init(sbase + SM90_OFF_FULL + k * 8, 1);
    for (int k = 0; k < 2; ++k) mbarrier_init(sbase + SM90_OFF_EMPTY + k * 8, 8); /* one arrive per consumer warp */
    ((uint64_t *)(smem + SM90_OFF_ZMASK))[0] = 0;
    ((uint64_t *)(smem + SM90_OFF_ZMASK))[1] = 0;
    fence_mbarrier_init_release_cluster();
    fence_proxy_async_shared_cta();
  }
  if (threadIdx.x == SM90_CONSUMER_THREADS) prefetch_tensormap(&tmap_k);
  __syncthreads();
  /* PDL: nothing written by an earlier kernel (metadata, lengths, q, cache) is read before this. */
  griddepcontrol_wait();
  if (threadIdx.x >= SM90_CONSUMER_THREADS) {
    setmaxnreg_dec<40>();
    if (threadIdx.x == SM90_CONSUMER_THREADS) sm90_producer<kFp16>(p, &tmap_k, smem);
  } else {
    setmaxnreg_inc<232>();
    sm90_consumer<kFp16>(p, smem);
  }
#endif
}

/* ======================================================================================
 * Launcher (host).
 * ====================================================================================== */

static PFN_cuTensorMapEncodeTiled_v12000 sm90_load_encode_fn(void) {
  void *fn = NULL;
  cudaDriverEntryPointQueryResult q;
  if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) != cudaSuccess ||
      q != cudaDriverEntryPointSuccess) {
    (void)cudaGetLastError();
    return NULL;
  }
  return (PFN_cuTensorMapEncodeTiled_v12000)fn;
}

/* Byte stride of a TMA dimension: a multiple of 16 and below 2^40. A dimension of extent 1 is
 * never stepped, so any legal value stands in for whatever the caller passed. */
static int sm90_tma_stride(int64_t elems, int64_t extent, cuuint64_t *out) {
  if (extent <= 1) {
    *out = 2 * FMLA_HEAD_DIM_K;
    return 1;
  }
  if (elems <= 0 || (elems * 2) % 16 != 0 || elems * 2 >= (1ll << 40)) return 0;
  *out = (cuuint64_t)(elems * 2);
  return 1;
}

/* K cache as a 4-D tensor (576 [inner], h_kv, page_size, num_blocks), box (64, 1, min(page, 64), 1),
 * 128-byte swizzle so each 64-column box lands as a wgmma K-major tile. Built per launch: it
 * depends on the pointer and strides, and encoding is cheap host work. */
static flash_mla_status_t sm90_make_k_map(const fmla_kernel_params *p, CUtensorMap *map) {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = sm90_load_encode_fn(); /* thread-safe init */
  if (!encode)
    return fmla_set_error(FLASH_MLA_ERROR_CUDA, "flash_mla_decode: cuTensorMapEncodeTiled is not available from the driver");
  const int64_t nblk = p->num_blocks > 0 ? p->num_blocks : 1;
  cuuint64_t dims[4] = {FMLA_HEAD_DIM_K, (cuuint64_t)p->num_heads_k, (cuuint64_t)p->page_size, (cuuint64_t)nblk};
  cuuint64_t strides[3];
  if (!sm90_tma_stride(p->k_head_stride, p->num_heads_k, &strides[0]) ||
      !sm90_tma_stride(p->k_token_stride, p->page_size, &strides[1]) ||
      !sm90_tma_stride(p->k_block_stride, nblk, &strides[2]))
    return fmla_set_error(FLASH_MLA_ERROR_UNSUPPORTED_DEVICE,
                          "flash_mla_decode: Hopper kernel needs k_cache strides that are positive multiples of 8 "
                          "elements below 2^39 (TMA), got block %lld token %lld head %lld",
                          (long long)p->k_block_stride, (long long)p->k_token_stride, (long long)p->k_head_stride);
  cuuint32_t box[4] = {64, 1, (cuuint32_t)(p->page_size < 64 ? p->page_size : 64), 1};
  cuuint32_t estr[4] = {1, 1, 1, 1};
  const CUresult r = encode(map, p->dtype == FLASH_MLA_DTYPE_FP16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                            4, (void *)p->k_cache, dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return fmla_set_error(FLASH_MLA_ERROR_UNSUPPORTED_DEVICE,
                          "flash_mla_decode: cuTensorMapEncodeTiled rejected k_cache (CUresult %d)", (int)r);
  return FLASH_MLA_SUCCESS;
}

/* Checks only the launcher can make: device, page size, what TMA and the vector copies need. */
static flash_mla_status_t sm90_check(const fmla_kernel_params *p, int *device) {
  cudaError_t e = cudaGetDevice(device);
  if (e != cudaSuccess) return fmla_set_error(FLASH_MLA_ERROR_CUDA, "flash_mla_decode: cudaGetDevice: %s", cudaGetErrorString(e));
  int major = 0, minor = 0;
  if ((e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, *device)) != cudaSuccess ||
      (e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, *device)) != cudaSuccess)
    return fmla_set_error(FLASH_MLA_ERROR_CUDA, "flash_mla_decode: cudaDeviceGetAttribute: %s", cudaGetErrorString(e));
  if (major != 9 || minor != 0)
    return fmla_set_error(FLASH_MLA_ERROR_UNSUPPORTED_DEVICE,
                          "flash_mla_decode: the Hopper kernel needs compute capability 9.0, device %d is %d.%d",
                          *device, major, minor);
  const int page = p->page_size;
  if (!(page == 16 || page == 32 || (page > 0 && page % 64 == 0)))
    return fmla_set_error(FLASH_MLA_ERROR_UNSUPPORTED_DEVICE,
                          "flash_mla_decode: the Hopper kernel supports page_size 16, 32 or a multiple of 64, got %d", page);
  if (p->dtype != FLASH_MLA_DTYPE_BF16 && p->dtype != FLASH_MLA_DTYPE_FP16)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_DTYPE, "flash_mla_decode: dtype %d", p->dtype);
  if (((uintptr_t)p->k_cache & 15) || ((uintptr_t)p->q & 15) || (p->q_batch_stride & 7) || (p->q_seq_stride & 7) ||
      (p->q_head_stride & 7) || ((uintptr_t)p->out & 3) || (p->out_batch_stride & 1) || (p->out_seq_stride & 1) ||
      (p->out_head_stride & 1))
    return fmla_set_error(FLASH_MLA_ERROR_UNSUPPORTED_DEVICE,
                          "flash_mla_decode: the Hopper kernel needs 16-byte aligned q/k_cache and q strides that are "
                          "multiples of 8 elements");
  if (p->num_heads_k > 65535 || p->num_sm_parts > 65535)
    return fmla_set_error(FLASH_MLA_ERROR_UNSUPPORTED_DEVICE,
                          "flash_mla_decode: the Hopper kernel's grid takes num_heads_k %d and num_sm_parts %d up to 65535",
                          p->num_heads_k, p->num_sm_parts);
  return FLASH_MLA_SUCCESS;
}

template <int kFp16>
static flash_mla_status_t sm90_launch(const fmla_kernel_params *p, const CUtensorMap *map, int device, cudaStream_t stream) {
  static std::atomic<unsigned long long> attr_set{0}; /* one bit per device: smem attribute applied */
  const unsigned long long bit = device < 64 ? 1ull << device : 0ull;
  if (!bit || !(attr_set.load(std::memory_order_acquire) & bit)) {
    const cudaError_t e =
        cudaFuncSetAttribute(fmla_decode_sm90_kernel<kFp16>, cudaFuncAttributeMaxDynamicSharedMemorySize, SM90_SMEM_BYTES);
    if (e != cudaSuccess)
      return fmla_set_error(FLASH_MLA_ERROR_CUDA, "flash_mla_decode: cudaFuncSetAttribute(%d bytes smem): %s",
                            SM90_SMEM_BYTES, cudaGetErrorString(e));
    attr_set.fetch_or(bit, std::memory_order_acq_rel);
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)p->num_m_blocks, (unsigned)p->num_heads_k, (unsigned)p->num_sm_parts);
  cfg.blockDim = dim3(SM90_THREADS, 1, 1);
  cfg.dynamicSmemBytes = SM90_SMEM_BYTES;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = FMLA_SM90_PDL ? 1 : 0;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, fmla_decode_sm90_kernel<kFp16>, *p, *map);
  if (e != cudaSuccess)
    return fmla_set_error(FLASH_MLA_ERROR_CUDA, "flash_mla_decode: Hopper kernel launch failed: %s", cudaGetErrorString(e));
  return FLASH_MLA_SUCCESS;
}

extern "C" flash_mla_status_t fmla_launch_decode_hopper(const fmla_kernel_params *p, void *stream) {
  int device = 0;
  flash_mla_status_t st = sm90_check(p, &device);
  if (st != FLASH_MLA_SUCCESS) return st;
  if (p->batch <= 0 || p->num_sm_parts <= 0 || p->num_m_blocks <= 0 || p->num_heads_k <= 0) return FLASH_MLA_SUCCESS;
  CUtensorMap map;
  if ((st = sm90_make_k_map(p, &map)) != FLASH_MLA_SUCCESS) return st;
  return p->dtype == FLASH_MLA_DTYPE_FP16 ? sm90_launch<1>(p, &map, device, (cudaStream_t)stream)
                                          : sm90_launch<0>(p, &map, device, (cudaStream_t)stream);
}

extern "C" int fmla_hopper_built(void) { return 1; }
