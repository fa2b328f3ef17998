/*
 * wgmma_mix.cu: how fast do the tensor cores of one SM run the decode kernel's GEMM mix, by who
 * issues what? (diagnostics for docs/perf-notes.md; GPU machine, sm_90a)
 *
 * No softmax, no TMA, no dependencies between warpgroups: each WG issues its own wgmma stream
 * over resident shared memory (random bf16) for ITERS iterations, one CTA per SM on every SM, and
 * the clock64 span of each WG is recorded. One iteration = two 64-key blocks (a pair).
 *   0 seesaw   WG0, WG1: S = Q K^T (32 SS m64n64k16 + 4 RS from Q's RoPE tile in registers, as the
 *              library's kernel) from its own stage, then two PV halves (m64n256k16 x 4 each, P from
 *              smem, V MN-major out of both stages). Tensor work per pair = the library's.
 *   1 swg      WG0 ("S warpgroup") holds Q's tiles 0-6 (64 x 448) as RS A fragments (112 registers)
 *              and computes S for both blocks (56 RS + 16 SS m64n64k16); WG1 and WG2 each do the two
 *              PV halves of their 256 columns. The same tensor work per pair, but S reads K and two
 *              Q tiles from smem (88 KB a block instead of 136). Registers 184 / 160 / 160: all of
 *              the 168 x 384 a CTA gets (ptxas puts accumulators at R24; O alone needs > 152).
 *   2 s_ss1    WG0 only: S as in the seesaw (32 SS + 4 RS), both blocks.
 *   3 s_rs1    WG0 only: S with Q tiles 0-7 RS (as swg).
 *   4 pv1      WG0 only: the four PV halves of a pair.
 *   5 pv2      WG0, WG1: two PV halves each (the pair's PV work).
 *   6 s_ss2    WG0, WG1: one S (SS) each.
 *   7 s_rs2    WG0, WG1: one S (as swg) each.
 *   8 s_ss1w   mode 2 with the library's per-tile full-barrier test (an already completed barrier)
 *              and wgmma.fence before each tile's 4 k-steps.
 *   9 seesaw+f mode 0 while WG2's thread 0 streams 72 KB fills (9 bulk copies of 8 KB from a 4 MB
 *              L2-resident buffer, one mbarrier per stage) into the K stages, back to back.
 *  10 seesaw+t mode 9 with one 72 KB fill per 2200 clocks at most (the rate the kernel needs at peak).
 *  11 s32_ss1  WG0 only: S over 32-key sub-blocks (36 SS m64n32k16 each), four per iteration (the FMA
 *              of mode 2): is an N = 32 S bound by shared-memory reads of A?
 *  12 s32_ss2  WG0, WG1: two 32-key S each (the FMA of mode 6).
 *  13 seesaw32 mode 0 in 32-key sub-blocks: each WG two S32 from its stage, and its PV half (2 k-steps
 *              each) over all four sub-blocks; the same FMA per iteration as mode 0.
 *  14 chain1   an S-warpgroup design with its dependencies: WG0 does S of every block (Q tiles 0-6 as
 *              RS fragments) and the softmax, publishes P and the rescale factors; WG1 / WG2 rescale
 *              their O half and run PV, then give P back. One P buffer. K resident (no fills).
 *  15 chain2   mode 14 with two P buffers (the S warpgroup waits for P(n - 2)'s PVs, not P(n - 1)'s).
 *  16 chain2g  mode 15, and the PV warpgroups issue PV(n) only once S(n + 1) is done (S_done barriers):
 *              S runs alone on the tensor pipe, PV(n) under the softmax of block n + 1.
 *  17 chain1g  mode 16 with one P buffer.
 *  18 pipe     mode 15 with the S warpgroup software-pipelined: S(n + 1) issued into a second
 *              accumulator set before the softmax of block n; Q tiles 0-4 from registers (80), 5-8 SS.
 *  19 inter    mode 18 with the softmax of block n placed by hand between the tiles of S(n + 1)'s issue.
 * Printed: the median over CTAs of (last WG end - first WG start) / ITERS in SM clocks per pair,
 * against 4352 clocks per pair at the dense peak (2048 bf16 FMA/clk/SM) for modes 0 and 1.
 *
 * Build: nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Isrc dev/wgmma_mix.cu -o build/wgmma_mix
 */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <vector>

#include "ptx_sm90.cuh"

#define TILE 8192
#define SQ 0
#define SK0 (9 * TILE)
#define SK1 (18 * TILE)
#define SP (27 * TILE)
#define SBAR (28 * TILE) /* mbarriers and counters */
#define SMEM (28 * TILE + 2048)

#include "cuda_check.h"

#if FMLA_SM90_DEVICE
/* S = Q K^T over one 64-key block (kStage: which K stage): kRs = 0 as the library (tiles 0-7 SS,
 * tile 8 RS from q[128..143]), kRs = 1 all 36 k-steps RS from q[0..143]. */
template <int kRs, int kPoll = 0>
static __device__ __forceinline__ void s_block(float *s, uint32_t base, uint32_t kb, const uint32_t *q) {
  asm volatile("" : "+r"(kb)); /* opaque per call: keeps ptxas from hoisting 36 descriptors into registers */
  const uint64_t dq = wgmma_desc_sw128(base + SQ, 16, 1024);
  const uint64_t dk = wgmma_desc_sw128(base + kb, 16, 1024);
  wgmma_fence();
#pragma unroll
  for (int t = 0; t < 9; ++t) {
    if (kPoll) {
      while (!mbarrier_try_wait_parity(base + SBAR + 64, 0)) {
      }
      wgmma_fence();
    }
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint64_t off = (uint64_t)((t * TILE + kk * 32) >> 4);
      if (kRs ? t < 7 : t == 8) /* kRs: Q tiles 0-6 from registers (q[0..111]), tiles 7-8 SS */
        wgmma_m64n64k16_rs<0>(s, q + 16 * (t == 8 ? 0 : t) + 4 * kk, dk + off, t != 0 || kk != 0);
      else
        wgmma_m64n64k16_ss<0>(s, dq + off, dk + off, t != 0 || kk != 0);
    }
  }
  wgmma_commit_group();
}
static __device__ __forceinline__ void pv_half(float *o, uint32_t base, uint32_t kb, int half) {
  asm volatile("" : "+r"(kb));
  const uint64_t dp = wgmma_desc_sw128(base + SP, 16, 1024);
  const uint64_t dv = wgmma_desc_sw128(base + kb + half * 4 * TILE, TILE, 1024);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) wgmma_m64n256k16_ss<0, 0, 1>(o, dp + (uint64_t)(kk * 2), dv + (uint64_t)(kk * 128), 1);
  wgmma_commit_group();
}
/* 32-key sub-blocks (modes 11-13): sub-block j of a stage = its rows 32j .. 32j + 31 (4 KB into each
 * 64-row tile). S32 = Q K_j^T: 36 SS m64n32k16; PV32 half: P's first 32 columns (2 k-steps) times
 * V_j[:, 256 half ..] (m64n256k16 x 2). */
static __device__ __forceinline__ void s32_block(float *s, uint32_t base, uint32_t kb, int j) {
  asm volatile("" : "+r"(kb));
  const uint64_t dq = wgmma_desc_sw128(base + SQ, 16, 1024);
  const uint64_t dk = wgmma_desc_sw128(base + kb + j * 4096, 16, 1024);
  wgmma_fence();
#pragma unroll
  for (int t = 0; t < 9; ++t)
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint64_t off = (uint64_t)((t * TILE + kk * 32) >> 4);
      wgmma_m64n32k16_ss<0>(s, dq + off, dk + off, t != 0 || kk != 0);
    }
  wgmma_commit_group();
}
static __device__ __forceinline__ void pv32_half(float *o, uint32_t base, uint32_t kb, int j, int half) {
  asm volatile("" : "+r"(kb));
  const uint64_t dp = wgmma_desc_sw128(base + SP, 16, 1024);
  const uint64_t dv = wgmma_desc_sw128(base + kb + j * 4096 + half * 4 * TILE, TILE, 1024);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 2; ++kk) wgmma_m64n256k16_ss<0, 0, 1>(o, dp + (uint64_t)(kk * 2), dv + (uint64_t)(kk * 128), 1);
  wgmma_commit_group();
}
#endif


#if FMLA_SM90_DEVICE
static __device__ __forceinline__ void load_q(uint32_t base, int wt, uint32_t *q) {
#pragma unroll
  for (int i = 0; i < 112; ++i) q[i] = ld_shared_b32(base + SQ + ((i * 1031 + wt * 16) % (9 * TILE / 4)) * 4);
}
static __device__ __forceinline__ void finish(long long t0, int wt, long long *my, float acc, float *sink) {
  const long long t1 = clock64();
  if (wt == 0) {
    my[0] = t0;
    my[1] = t1;
  }
  if (acc == 12345.678f) sink[wt] = acc;
}
/* PV halves first .. first + kN - 1 (256 columns each) over both blocks per pair: WG1 / WG2 in mode 1
 * (one half each), WG0 in mode 4 (both halves), WG0 / WG1 in mode 5 (one half each). */
template <int kN>
static __device__ __forceinline__ void role_pv(int iters, uint32_t base, int first, int wt, long long *my, float *sink) {
  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.f;
  const long long t0 = clock64();
#pragma unroll 1
  for (int it = 0; it < iters; ++it) {
#pragma unroll
    for (int h = 0; h < kN; ++h) {
      pv_half(o, base, SK0, first + h);
      pv_half(o, base, SK1, first + h);
    }
    wgmma_wait<0>();
  }
  finish(t0, wt, my, (o[0] + o[127]), sink);
}
/* WG0 alone (modes 1-4): S all RS (1, 3), S as the library (2), or the four PV halves (4) */
template <int MODE>
static __device__ __forceinline__ void role_s(int iters, uint32_t base, int wt, long long *my, float *sink) {
  float acc = 0.f;
  if (MODE == 4) {
    role_pv<2>(iters, base, 0, wt, my, sink);
    return;
  }
  if (MODE == 11) { /* four 32-key S per iteration (the FMA of two 64-key S) */
    float s16[16];
    const long long t0 = clock64();
#pragma unroll 1
    for (int it = 0; it < iters; ++it) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        s32_block(s16, base, j < 2 ? SK0 : SK1, j & 1);
        wgmma_wait<0>();
        acc += s16[0];
      }
    }
    finish(t0, wt, my, acc, sink);
    return;
  }
  uint32_t q[112];
  load_q(base, wt, q);
  float s[32];
  uint32_t kb = SK0;
  const long long t0 = clock64();
#pragma unroll 1
  for (int it = 0; it < 2 * iters; ++it) {
    if (MODE == 2) s_block<0>(s, base, kb, q);
    else if (MODE == 8) s_block<0, 1>(s, base, kb, q);
    else s_block<1>(s, base, kb, q);
    wgmma_wait<0>();
    acc += s[0];
    kb ^= SK0 ^ SK1;
  }
  finish(t0, wt, my, acc, sink);
}
/* WG2's thread 0 in modes 9 and 10: 72 KB fills into the K stages until WG0 and WG1 are done. */
static __device__ __forceinline__ void role_fill(uint32_t base, const uint8_t *src, int gap, long long *my,
                                                 volatile uint32_t *done) {
  const long long t0 = clock64();
  long long next = t0;
  uint32_t n = 0;
  while (*done < 2) {
    const int st = n & 1;
    const uint32_t bar = base + SBAR + 8 * st;
    if (gap)
      while (clock64() < next) {
      }
    next += gap;
    mbarrier_arrive_expect_tx(bar, 9 * TILE);
    const uint8_t *g = src + (size_t)((n * 9 + blockIdx.x * 37) % 448) * TILE;
    for (int t = 0; t < 9; ++t)
      asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                       base + (st ? SK1 : SK0) + t * TILE),
                   "l"(g + t * TILE), "r"(TILE), "r"(bar)
                   : "memory");
    while (!mbarrier_try_wait_parity(bar, (n >> 1) & 1)) {
    }
    ++n;
  }
  my[0] = t0;
  my[1] = (long long)n; /* fills done, not a clock */
}
/* Modes 14-19, the S-warpgroup chain: WG0 computes S of every block (Q tiles as RS fragments), its
 * softmax (tree row max, quad shuffles, exp2 by FFMA + MUFU, row sums), stores P (bf16, swizzled)
 * and the rows' rescale factors, fences, and arrives on P_full; WG1 / WG2 wait for P, rescale their
 * O half, run PV over that block's V, wait for it and give P back (P_free, one arrival per warp).
 * kNB = P buffers (1: SP; 2: SP and Q's unused tile 0 for odd blocks). */
#define SB_PFULL (SBAR + 16)
#define SB_PFREE (SBAR + 32)
#define SB_SDONE (SBAR + 48)
#define SB_ALPHA (SBAR + 256)
static __device__ __forceinline__ void sm90_fence_s_mix(float *s) {
#pragma unroll
  for (int k = 0; k < 32; ++k) fence_operand(s[k]);
}
/* 2^x; kV: as volatile asm, which keeps each exp where the source puts it (mode 19) */
template <int kV>
static __device__ __forceinline__ float mix_ex2(float x) {
  if (!kV) return ex2_approx_ftz(x);
  float y;
  asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
/* new running max ma of the thread's two rows and the factors a = 2^(m - ma) */
template <int kV>
static __device__ __forceinline__ void mix_rowmax(const float *s, float sl2, float m0, float m1, float &ma0, float &ma1,
                                                  float &a0, float &a1) {
  float mx0, mx1;
  sm90_tree_max(s, mx0, mx1);
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
  ma0 = fmaxf(m0, mx0 * sl2);
  ma1 = fmaxf(m1, mx1 * sl2);
  a0 = mix_ex2<kV>(m0 - ma0);
  a1 = mix_ex2<kV>(m1 - ma1);
}
/* s <- 2^(s sl2 - ma) for column groups c0 .. c1 - 1, row sums into ps */
template <int kV>
static __device__ __forceinline__ void mix_exp(float *s, int c0, int c1, float sl2, float ma0, float ma1, float &ps0,
                                               float &ps1) {
#pragma unroll
  for (int c = c0; c < c1; ++c)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      s[4 * c + e] = mix_ex2<kV>(fmaf(s[4 * c + e], sl2, -ma0));
      s[4 * c + 2 + e] = mix_ex2<kV>(fmaf(s[4 * c + 2 + e], sl2, -ma1));
      ps0 += s[4 * c + e];
      ps1 += s[4 * c + 2 + e];
    }
}
/* P's column groups c0 .. c1 - 1 as bf16 into the swizzled P tile at sP */
static __device__ __forceinline__ void mix_store_p(uint32_t sP, const float *s, int c0, int c1, int r0, int quad) {
#pragma unroll
  for (int c = c0; c < c1; ++c) {
    const uint32_t x0 = sP + r0 * 128 + ((c ^ (r0 & 7)) << 4) + 4 * quad;
    const uint32_t x1 = sP + (r0 + 8) * 128 + ((c ^ ((r0 + 8) & 7)) << 4) + 4 * quad;
    __nv_bfloat162 h0 = __floats2bfloat162_rn(s[4 * c + 0], s[4 * c + 1]);
    __nv_bfloat162 h1 = __floats2bfloat162_rn(s[4 * c + 2], s[4 * c + 3]);
    st_shared_b32(x0, *(uint32_t *)&h0);
    st_shared_b32(x1, *(uint32_t *)&h1);
  }
}
/* P buffer of block n and its use count */
template <int kNB>
static __device__ __forceinline__ void mix_pbuf(int n, int &b, uint32_t &u) {
  b = kNB == 2 ? (n & 1) : 0;
  u = kNB == 2 ? (uint32_t)(n >> 1) : (uint32_t)n;
}
static __device__ __forceinline__ void mix_wait_pfree(uint32_t base, int b, uint32_t u) {
  if (u > 0)
    while (!mbarrier_try_wait_parity(base + SB_PFREE + 8 * b, (u - 1) & 1)) {
    }
}
/* the rows' factors, then P and them to the PV warpgroups */
static __device__ __forceinline__ void mix_publish(uint32_t base, float *alpha, int b, int r0, int quad, float a0,
                                                   float a1) {
  if (quad == 0) {
    alpha[b * 64 + r0] = a0;
    alpha[b * 64 + r0 + 8] = a1;
  }
  fence_proxy_async_shared_cta();
  mbarrier_arrive(base + SB_PFULL + 8 * b);
}
/* softmax of block n (scores in s) and its publication */
template <int kNB>
static __device__ __forceinline__ void chain_softmax_publish(float *s, uint32_t base, float *alpha, int n, int r0,
                                                             int quad, float sl2, float &m0, float &m1, float &l0,
                                                             float &l1) {
  float ma0, ma1, a0, a1, ps0 = 0.f, ps1 = 0.f;
  mix_rowmax<0>(s, sl2, m0, m1, ma0, ma1, a0, a1);
  mix_exp<0>(s, 0, 8, sl2, ma0, ma1, ps0, ps1);
  l0 = l0 * a0 + ps0;
  l1 = l1 * a1 + ps1;
  m0 = ma0;
  m1 = ma1;
  int b;
  uint32_t u;
  mix_pbuf<kNB>(n, b, u);
  mix_wait_pfree(base, b, u);
  mix_store_p(base + (b ? SQ : SP), s, 0, 8, r0, quad);
  mix_publish(base, alpha, b, r0, quad, a0, a1);
}
template <int kNB, int kGate>
static __device__ __forceinline__ void role_chain_s(int iters, uint32_t base, int wt, long long *my, float *sink,
                                                    float *alpha) {
  uint32_t q[112];
  load_q(base, wt, q);
  const int lane = wt & 31, quad = lane & 3, r0 = (wt >> 5) * 16 + (lane >> 2);
  const float sl2 = 0.0601f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  float s[32];
  const long long t0 = clock64();
#pragma unroll 1
  for (int n = 0; n < 2 * iters; ++n) {
    s_block<1>(s, base, (n & 1) ? SK1 : SK0, q);
    wgmma_wait<0>();
    if (kGate && lane == 0) mbarrier_arrive(base + SB_SDONE + 8 * (n & 1)); /* S(n) is out of the tensor pipe */
    chain_softmax_publish<kNB>(s, base, alpha, n, r0, quad, sl2, m0, m1, l0, l1);
  }
  finish(t0, wt, my, l0 + l1, sink);
}
template <int kNB, int kGate>
static __device__ __forceinline__ void role_chain_pv(int iters, uint32_t base, int half, int wt, long long *my,
                                                     float *sink, const float *alpha) {
  const int lane = wt & 31, r0 = (wt >> 5) * 16 + (lane >> 2);
  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.f;
  const long long t0 = clock64();
#pragma unroll 1
  for (int n = 0; n < 2 * iters; ++n) {
    int b;
    uint32_t u;
    mix_pbuf<kNB>(n, b, u);
    while (!mbarrier_try_wait_parity(base + SB_PFULL + 8 * b, u & 1)) {
    }
    if (kGate && n + 1 < 2 * iters) /* PV(n) behind S(n + 1), not beside it */
      while (!mbarrier_try_wait_parity(base + SB_SDONE + 8 * ((n + 1) & 1), ((n + 1) >> 1) & 1)) {
      }
    sm90_rescale(o, alpha[b * 64 + r0], alpha[b * 64 + r0 + 8]);
    const uint32_t kb = (n & 1) ? SK1 : SK0;
    const uint64_t dp = wgmma_desc_sw128(base + (b ? SQ : SP), 16, 1024);
    const uint64_t dv = wgmma_desc_sw128(base + kb + half * 4 * TILE, TILE, 1024);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) wgmma_m64n256k16_ss<0, 0, 1>(o, dp + (uint64_t)(kk * 2), dv + (uint64_t)(kk * 128), 1);
    wgmma_commit_group();
    wgmma_wait<0>();
    if (lane == 0) mbarrier_arrive(base + SB_PFREE + 8 * b);
  }
  finish(t0, wt, my, o[0] + o[127], sink);
}

/* Mode 18: the S warpgroup software-pipelined: S(n + 1) is issued (into the other of two accumulator
 * sets) before the softmax of block n. Q tiles 0-4 as RS fragments (80 registers), 5-8 from smem;
 * P double-buffered. Mode 19: the softmax's pieces placed by hand between the tiles of S(n + 1)'s
 * issue (exps as volatile asm so that they stay there). */
static __device__ __forceinline__ void s5_tile(float *s, uint64_t dq, uint64_t dk, const uint32_t *q, int t) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const uint64_t off = (uint64_t)((t * TILE + kk * 32) >> 4);
    if (t < 5)
      wgmma_m64n64k16_rs<0>(s, q + 16 * t + 4 * kk, dk + off, t != 0 || kk != 0);
    else
      wgmma_m64n64k16_ss<0>(s, dq + off, dk + off, t != 0 || kk != 0);
  }
}
static __device__ __forceinline__ void s_block5(float *s, uint32_t base, uint32_t kb, const uint32_t *q) {
  asm volatile("" : "+r"(kb));
  const uint64_t dq = wgmma_desc_sw128(base + SQ, 16, 1024);
  const uint64_t dk = wgmma_desc_sw128(base + kb, 16, 1024);
  wgmma_fence();
#pragma unroll
  for (int t = 0; t < 9; ++t) s5_tile(s, dq, dk, q, t);
  wgmma_commit_group();
}
/* mode 19, one block: sn = S(n + 1)'s accumulators (issued here unless !issue), s = block n's scores */
static __device__ __forceinline__ void inter_block(float *sn, float *s, bool issue, uint32_t base, uint32_t kbn,
                                                   const uint32_t *q, float *alpha, int n, int r0, int quad,
                                                   float sl2, float &m0, float &m1, float &l0, float &l1) {
  int b;
  uint32_t u;
  mix_pbuf<2>(n, b, u);
  mix_wait_pfree(base, b, u);
  asm volatile("" : "+r"(kbn));
  const uint64_t dq = wgmma_desc_sw128(base + SQ, 16, 1024);
  const uint64_t dk = wgmma_desc_sw128(base + kbn, 16, 1024);
  if (issue) {
    wgmma_fence();
    s5_tile(sn, dq, dk, q, 0);
    s5_tile(sn, dq, dk, q, 1);
  }
  float ma0, ma1, a0, a1, ps0 = 0.f, ps1 = 0.f;
  mix_rowmax<1>(s, sl2, m0, m1, ma0, ma1, a0, a1);
#pragma unroll
  for (int g = 0; g < 4; ++g) {
    if (issue) s5_tile(sn, dq, dk, q, 2 + g);
    mix_exp<1>(s, 2 * g, 2 * g + 2, sl2, ma0, ma1, ps0, ps1);
  }
  l0 = l0 * a0 + ps0;
  l1 = l1 * a1 + ps1;
  m0 = ma0;
  m1 = ma1;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (issue) s5_tile(sn, dq, dk, q, 6 + h);
    mix_store_p(base + (b ? SQ : SP), s, 4 * h, 4 * h + 4, r0, quad);
  }
  if (issue) {
    s5_tile(sn, dq, dk, q, 8);
    wgmma_commit_group();
  }
  mix_publish(base, alpha, b, r0, quad, a0, a1);
}
template <int kInter>
static __device__ __forceinline__ void role_pipe_s(int iters, uint32_t base, int wt, long long *my, float *sink,
                                                   float *alpha) {
  uint32_t q[80];
#pragma unroll
  for (int i = 0; i < 80; ++i) q[i] = ld_shared_b32(base + SQ + ((i * 1031 + wt * 16) % (9 * TILE / 4)) * 4);
  const int lane = wt & 31, quad = lane & 3, r0 = (wt >> 5) * 16 + (lane >> 2);
  const float sl2 = 0.0601f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  float sa[32], sb[32];
  const long long t0 = clock64();
  s_block5(sa, base, SK0, q);
  wgmma_wait<0>();
  long long t_issue = 0, t_soft = 0, t_wait = 0;
#pragma unroll 1
  for (int it = 0; it < iters; ++it) {
    const int n = 2 * it;
    if (kInter) {
      inter_block(sb, sa, true, base, SK1, q, alpha, n, r0, quad, sl2, m0, m1, l0, l1);
      wgmma_wait<0>();
    } else {
      const long long c0 = clock64();
      s_block5(sb, base, SK1, q); /* S(n + 1) under the softmax of n */
      const long long c1 = clock64();
      chain_softmax_publish<2>(sa, base, alpha, n, r0, quad, sl2, m0, m1, l0, l1);
      const long long c2 = clock64();
      wgmma_wait<0>();
      const long long c3 = clock64();
      t_issue += c1 - c0;
      t_soft += c2 - c1;
      t_wait += c3 - c2;
    }
    sm90_fence_s_mix(sb);
    if (kInter) {
      inter_block(sa, sb, it + 1 < iters, base, SK0, q, alpha, n + 1, r0, quad, sl2, m0, m1, l0, l1);
    } else {
      if (it + 1 < iters) s_block5(sa, base, SK0, q); /* S(n + 2) */
      chain_softmax_publish<2>(sb, base, alpha, n + 1, r0, quad, sl2, m0, m1, l0, l1);
    }
    wgmma_wait<0>();
    sm90_fence_s_mix(sa);
  }
  if (!kInter && blockIdx.x == 0 && wt == 0) { /* block n's clocks, even blocks: issue of S(n + 1), softmax, wait */
    sink[256] = (float)t_issue / iters;
    sink[257] = (float)t_soft / iters;
    sink[258] = (float)t_wait / iters;
  }
  finish(t0, wt, my, l0 + l1, sink);
}
/* WG0 and WG1 (modes 0, 5, 6, 7, 9, 10) */
template <int MODE>
static __device__ __forceinline__ void role_two(int iters, uint32_t base, int wg, int wt, long long *my, float *sink,
                                                volatile uint32_t *done) {
  float acc = 0.f;
  if (MODE == 5) {
    role_pv<1>(iters, base, wg, wt, my, sink);
    return;
  }
  if (MODE == 12 || MODE == 13) { /* each WG: S of both 32-key halves of its own stage (+ MODE 13: its PV half
                                    over all four sub-blocks) */
    const uint32_t kb = wg ? SK1 : SK0;
    float s16[16], o[128];
#pragma unroll
    for (int i = 0; i < 128; ++i) o[i] = 0.f;
    const long long t0 = clock64();
#pragma unroll 1
    for (int it = 0; it < iters; ++it) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        s32_block(s16, base, kb, j);
        if (MODE == 13) {
          pv32_half(o, base, SK0, j, wg);
          pv32_half(o, base, SK1, j, wg);
        }
        wgmma_wait<0>();
        acc += s16[0];
      }
    }
    finish(t0, wt, my, acc + (o[0] + o[127]), sink);
    return;
  }
  uint32_t q[112];
  load_q(base, wt, q);
  const uint32_t kb = wg ? SK1 : SK0;
  if (MODE == 0 || MODE == 9 || MODE == 10) {
    float s[32], o[128];
#pragma unroll
    for (int i = 0; i < 128; ++i) o[i] = 0.f;
    const long long t0 = clock64();
#pragma unroll 1
    for (int it = 0; it < iters; ++it) {
      s_block<0>(s, base, kb, q);
      pv_half(o, base, SK0, wg);
      pv_half(o, base, SK1, wg);
      wgmma_wait<0>();
      acc += s[0];
    }
    finish(t0, wt, my, acc + (o[0] + o[127]), sink);
    if (wt == 0) atomicAdd((uint32_t *)done, 1u);
    return;
  }
  float s[32];
  const long long t0 = clock64();
#pragma unroll 1
  for (int it = 0; it < iters; ++it) {
    if (MODE == 6) s_block<0>(s, base, kb, q);
    else s_block<1>(s, base, kb, q);
    wgmma_wait<0>();
    acc += s[0];
  }
  finish(t0, wt, my, acc, sink);
}
#endif

template <int MODE>
__global__ void __launch_bounds__(384, 1) mix_kernel(int iters, long long *span, float *sink, const uint8_t *src) {
#if FMLA_SM90_DEVICE
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t *smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  const uint32_t base = smem_u32(smem);
  const int tid = threadIdx.x, wg = tid / 128, wt = tid % 128;
  uint32_t rng = 0x9E3779B9u ^ (tid * 747796405u) ^ (blockIdx.x * 2891336453u);
  for (int i = tid; i < 28 * TILE / 4; i += blockDim.x) { /* random bf16 pairs in about [-1, 1] */
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    const uint32_t lo = 0x3E00u + (rng & 0x1FFu) + ((rng >> 9) & 0x8000u);
    const uint32_t hi = 0x3E00u + ((rng >> 10) & 0x1FFu) + ((rng >> 16) & 0x8000u);
    ((uint32_t *)smem)[i] = lo | (hi << 16);
  }
  volatile uint32_t *done = (volatile uint32_t *)(smem + SBAR + 128);
  if (tid == 0) {
    mbarrier_init(base + SBAR, 1);      /* fill stage 0 */
    mbarrier_init(base + SBAR + 8, 1);  /* fill stage 1 */
    mbarrier_init(base + SBAR + 64, 1); /* mode 8: completed at once */
    mbarrier_init(base + SB_PFULL, 128); /* modes 14, 15: P_full (S WG threads), P_free (PV warps) */
    mbarrier_init(base + SB_PFULL + 8, 128);
    mbarrier_init(base + SB_PFREE, 8);
    mbarrier_init(base + SB_PFREE + 8, 8);
    mbarrier_init(base + SB_SDONE, 4); /* modes 16, 17: S of an even / odd block done (S WG warps) */
    mbarrier_init(base + SB_SDONE + 8, 4);
    mbarrier_arrive(base + SBAR + 64);
    *done = 0;
    fence_proxy_async_shared_cta();
  }
  __syncthreads();
  const bool wg0 = wg == 0;
  long long *my = span + (blockIdx.x * 3 + wg) * 2;
  if (MODE == 18 || MODE == 19) { /* the S warpgroup software-pipelined: 184 / 160 / 160 */
    float *alpha = (float *)(smem + SB_ALPHA);
    if (wg0) {
      setmaxnreg_inc<184>();
      role_pipe_s<MODE == 19>(iters, base, wt, my, sink, alpha);
    } else {
      setmaxnreg_dec<160>();
      role_chain_pv<2, 0>(iters, base, wg - 1, wt, my, sink, alpha);
    }
    return;
  }
  if (MODE >= 14 && MODE <= 17) { /* the S-warpgroup chain: 184 / 160 / 160 */
    constexpr int kNB = (MODE == 15 || MODE == 16) ? 2 : 1, kGate = MODE >= 16;
    float *alpha = (float *)(smem + SB_ALPHA);
    if (wg0) {
      setmaxnreg_inc<184>();
      role_chain_s<kNB, kGate>(iters, base, wt, my, sink, alpha);
    } else {
      setmaxnreg_dec<160>();
      role_chain_pv<kNB, kGate>(iters, base, wg - 1, wt, my, sink, alpha);
    }
    return;
  }
  if (MODE == 0 || (MODE >= 5 && MODE != 8 && MODE != 11)) { /* two issuing WGs: 232 / 232 / 40 */
    if (wg < 2) {
      setmaxnreg_inc<232>();
      role_two<MODE>(iters, base, wg, wt, my, sink, done);
    } else {
      setmaxnreg_dec<40>();
      if ((MODE == 9 || MODE == 10) && wt == 0) role_fill(base, src, MODE == 10 ? 2200 : 0, my, done);
    }
  } else if (MODE != 1) { /* one issuing WG: 232 / 40 / 40 */
    if (wg0) {
      setmaxnreg_inc<232>();
      role_s<MODE>(iters, base, wt, my, sink);
    } else {
      setmaxnreg_dec<40>();
    }
  } else { /* the S warpgroup: 184 / 160 / 160 (all the 168 x 384 the CTA has) */
    if (wg0) {
      setmaxnreg_inc<184>();
      role_s<MODE>(iters, base, wt, my, sink);
    } else {
      setmaxnreg_dec<160>();
      if (MODE == 1) role_pv<1>(iters, base, wg - 1, wt, my, sink);
    }
  }
#endif
}

template <int MODE>
static void run(const char *name, int nsm, int iters, int nwg, const uint8_t *src) {
  long long *dspan;
  float *dsink;
  CK(cudaMalloc(&dspan, nsm * 3 * 2 * sizeof(long long)));
  CK(cudaMalloc(&dsink, 512 * sizeof(float)));
  CK(cudaMemset(dspan, 0, nsm * 3 * 2 * sizeof(long long)));
  CK(cudaFuncSetAttribute(mix_kernel<MODE>, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> ms;
  std::vector<double> per;
  for (int rep = 0; rep < 5; ++rep) {
    CK(cudaEventRecord(e0));
    mix_kernel<MODE><<<nsm, 384, SMEM>>>(iters, dspan, dsink, src);
    CK(cudaEventRecord(e1));
    CK(cudaGetLastError());
    CK(cudaEventSynchronize(e1));
    float t;
    CK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
    std::vector<long long> h(nsm * 6);
    CK(cudaMemcpy(h.data(), dspan, h.size() * sizeof(long long), cudaMemcpyDeviceToHost));
    for (int c = 0; c < nsm; ++c) {
      long long a = 0, b = 0;
      for (int w = 0; w < nwg; ++w) {
        const long long s0 = h[(c * 3 + w) * 2], s1 = h[(c * 3 + w) * 2 + 1];
        if (w == 0 || s0 < a) a = s0;
        if (w == 0 || s1 > b) b = s1;
      }
      per.push_back((double)(b - a) / iters);
      if ((MODE == 9 || MODE == 10) && rep == 4 && c == 0)
        printf("         CTA 0: %lld fills of 72 KB over %lld clk = %.1f B/clk\n", h[(c * 3 + 2) * 2 + 1], b - a,
               (double)h[(c * 3 + 2) * 2 + 1] * 9 * TILE / (double)(b - a));
    }
  }
  if (MODE == 18) {
    float h[3];
    CK(cudaMemcpy(h, dsink + 256, sizeof h, cudaMemcpyDeviceToHost));
    printf("         CTA 0 thread 0, per even block: issue S(n+1) %.0f clk, softmax + publish %.0f, wait S(n+1) %.0f\n",
           h[0], h[1], h[2]);
  }
  std::sort(ms.begin(), ms.end());
  std::sort(per.begin(), per.end());
  const double med = per[per.size() / 2];
  /* FMA per pair by mode: S = 2 x 64*64*576, PV = 2 x 64*512*64 */
  const double s_fma = 2.0 * 64 * 64 * 576, pv_fma = 2.0 * 64 * 512 * 64;
  const double fma = (MODE <= 1 || MODE == 9 || MODE == 10 || MODE >= 13) ? s_fma + pv_fma
                     : (MODE <= 3 || MODE >= 6) ? s_fma : pv_fma;
  printf("%-8s clk/pair median %7.1f (p10 %7.1f p90 %7.1f)  %.1f%% of peak  kernel %.3f ms\n", name, med,
         per[per.size() / 10], per[per.size() * 9 / 10], 100.0 * fma / 2048.0 / med, ms[ms.size() / 2]);
  CK(cudaFree(dspan));
  CK(cudaFree(dsink));
}

int main(int argc, char **argv) {
  const int iters = argc > 1 ? atoi(argv[1]) : 2000;
  int nsm;
  CK(cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, 0));
  printf("wgmma_mix: %d CTAs (one per SM), %d pairs each\n", nsm, iters);
  uint8_t *src;
  CK(cudaMalloc(&src, 448 * TILE + 9 * TILE));
  CK(cudaMemset(src, 0x3C, 448 * TILE + 9 * TILE));
  for (int round = 0; round < 2; ++round) {
    run<0>("seesaw", nsm, iters, 2, src);
    run<1>("swg", nsm, iters, 3, src);
    run<2>("s_ss1", nsm, iters, 1, src);
    run<3>("s_rs1", nsm, iters, 1, src);
    run<4>("pv1", nsm, iters, 1, src);
    run<5>("pv2", nsm, iters, 2, src);
    run<6>("s_ss2", nsm, iters, 2, src);
    run<7>("s_rs2", nsm, iters, 2, src);
    run<8>("s_ss1w", nsm, iters, 1, src);
    run<9>("seesaw+f", nsm, iters, 2, src);
    run<10>("seesaw+t", nsm, iters, 2, src);
    run<11>("s32_ss1", nsm, iters, 1, src);
    run<12>("s32_ss2", nsm, iters, 2, src);
    run<13>("seesaw32", nsm, iters, 2, src);
    run<14>("chain1", nsm, iters, 3, src);
    run<15>("chain2", nsm, iters, 3, src);
    run<16>("chain2g", nsm, iters, 3, src);
    run<17>("chain1g", nsm, iters, 3, src);
    run<18>("pipe", nsm, iters, 3, src);
    run<19>("inter", nsm, iters, 3, src);
  }
  return 0;
}
