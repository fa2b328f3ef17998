/*
 * decode_sm80.cu: the portable MLA decode kernel (sm_80 and newer; mma.sync + ldmatrix + cp.async,
 * no Hopper-only instruction) and its launcher fmla_launch_decode_portable.
 *
 * What it computes (layout and metadata contract in params.h). For KV head hk, request i and query
 * row r (token t = r / ngroups, head h = hk*ngroups + r % ngroups), with L = cache_seqlens[i]:
 *   S[r, j] = q[i,t,h,0:576] . K_j[0:576]             K_j = k_cache[page(j), j % page_size, hk, :]
 *   visible iff j < L - (causal ? s_q-1-t : 0)       page(j) = block_table[i, j / page_size]
 *   O[r, :] = sum_j softmax_j(scale * S[r, j]) K_j[0:512]   (V is the first 512 dims of K)
 *   one split: out[i,t,h,:] = O (dtype), lse[i,h,t] = log sum_j exp(scale S)   (+inf, out 0: no key)
 *   several:   o_accum[slot, hk, r, :] = O of the split's keys (fp32), lse_accum[slot, hk, r]
 *              (-inf, O 0: the split saw no key); combine.cu merges them.
 *
 * Grid (num_m_blocks, h_kv, num_sm_parts), 256 threads = 8 warps, one CTA per SM.
 * A CTA owns M tile m (rows 64m .. 64m+63 of KV head hk; rows >= `rows` are zero padding) and walks
 * its part's segments (request i, 64-key n-blocks [lo, hi), split index). Per segment:
 *   Q tile 64 x 576 -> smem (cp.async, once). Keys [64 lo, key_end) in tiles of N = 32 keys, two
 *   stages of K in smem: tile n+1 is in flight (cp.async) while tile n is computed, and the
 *   block_table entry of tile n+2 is loaded into a register during tile n so the page lookup never
 *   stalls the issue of a copy. Per tile:
 *     S = Q K^T   warp w: row group rg = w%4 (16 rows), key half kh = w/4 (16 keys);
 *                 36 k-steps of m16n8k16, 2 n8 tiles -> 8 fp32 per thread.
 *     softmax     online, in exp2 units (s * scale_log2); the partner warp (same rows, other key
 *                 half) exchanges the per-row tile max through smem (named barrier per row group).
 *     P           to smem as the input dtype (64 x 32); for bf16 also the residual P - bf16(P) as a
 *                 second bf16 plane (see FMLA_SM80_SPLIT_P: bf16 P alone misses the tests' tolerance
 *                 on short sequences).
 *     O += P V    V = the same K tile (first 512 dims) read with ldmatrix.trans; warp w owns rows rg
 *                 and V columns kh*256 .. +256: 32 n8 tiles, 128 fp32 accumulators per thread
 *                 (bf16: P_lo V then P_hi V on the same V fragments).
 *   Epilogue: the partner warps add their row sums through smem, then each writes its 256 columns.
 *   Warps whose 16 rows are all padding (rows < 64, e.g. h_q = 16, s_q = 1) skip the math and only
 *   help with the copies and barriers.
 *
 * Shared memory (dynamic, 156672 B = 153 KB: fits A100's 163 KB and H100's 227 KB opt-in; sm_86/89
 * with 99 KB get FLASH_MLA_ERROR_UNSUPPORTED_DEVICE):
 *   sQ   64 x 1152 B      73728   row = query row, 72 chunks of 16 B, chunk c stored at c ^ (row % 8)
 *   sK   2 x 32 x 1152 B  73728   row = key, same swizzle
 *   sP   2 x 64 x 64 B     8192   P_hi, P_lo planes; row = query row, 4 chunks, chunk c at c ^ ((row / 2) % 4)
 *   sMax, sSum  2 x 64 fp32 each  1024   per key half, per row
 * Both swizzles make every 8-address phase of ldmatrix (8 rows, one 16 B chunk each) hit 8 distinct
 * 16-byte bank groups, and the 32-bit P stores hit 32 distinct banks.
 *
 * Masking and safety: keys at or past key_end (= min(segment end, L, causal limit of the tile's last
 * row)) are zero-filled by cp.async with src-size 0 and their block_table entry is never read;
 * L is clamped to [0, max_blocks_per_seq * page_size]; a page id outside [0, num_blocks) is
 * zero-filled. A fully masked tile keeps the running max at -inf and uses 0 as exponent base, so no
 * NaN appears.
 *
 * Build and check just this file (no GPU needed):
 *   nvcc -std=c++17 -O3 -Xptxas -v -c -gencode=arch=compute_80,code=sm_80 \
 *        -gencode=arch=compute_90a,code=sm_90a -Iinclude src/decode_sm80.cu -o /tmp/d80.o
 *   expect: 0 bytes stack frame, 0 bytes spill stores/loads; then
 *   cuobjdump --dump-sass /tmp/d80.o | grep -c HMMA   (> 0)   and no LDL/STL in the SASS.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "params.h"
#include "combine_math.h"
#include "ptx_sm80.cuh"

#define D80_THREADS 256
#define D80_TILE_N 32                                        /* keys per K tile (two per n-block) */
#define D80_ROW_BYTES (FMLA_HEAD_DIM_K * 2)                  /* 1152: one 576-dim row of Q or K */
#define D80_Q_OFF 0
#define D80_K_OFF (FMLA_BLOCK_M * D80_ROW_BYTES)             /* 73728 */
#define D80_K_STAGE (D80_TILE_N * D80_ROW_BYTES)             /* 36864 */
#define D80_P_OFF (D80_K_OFF + 2 * D80_K_STAGE)              /* 147456 */
#define D80_P_ROW_BYTES (D80_TILE_N * 2)                     /* 64 */
#define D80_P_PLANE (FMLA_BLOCK_M * D80_P_ROW_BYTES)         /* 4096: P hi, then P lo (bf16 only) */
#define D80_MAX_OFF (D80_P_OFF + 2 * D80_P_PLANE)
#define D80_SUM_OFF (D80_MAX_OFF + 2 * FMLA_BLOCK_M * 4)
#define D80_SMEM_BYTES (D80_SUM_OFF + 2 * FMLA_BLOCK_M * 4)  /* 156672 */
/* bf16 P (8 significant bits) alone puts out up to ~3x past the tests' per-element tolerance for short
 * sequences (2..200 keys), so for bf16 P V runs as P_hi V + P_lo V with P_hi = bf16(P),
 * P_lo = bf16(P - P_hi) (P good to ~2^-16). fp16 P (11 bits) is accurate enough alone. Setting this
 * to 0 trades that accuracy for 64 fewer mma per tile and warp. */
#ifndef FMLA_SM80_SPLIT_P
#define FMLA_SM80_SPLIT_P 1
#endif
/* Lengths are clamped below this so key indices (tile start + 63) never overflow int32. */
#define D80_MAX_KEYS 0x7FFFFF00
#define D80_LN2 0.693147180559945309f

#if FMLA_BLOCK_M != 64 || FMLA_BLOCK_N != 64
#error "decode_sm80.cu assumes 64-row M tiles and 64-key n-blocks"
#endif

/* The mma of the input dtype (the instruction differs; hence the one template parameter). */
template <int IS_FP16>
static __device__ __forceinline__ void mma16816(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  if (IS_FP16)
    mma_sync_m16n8k16_f16(d, a, b0, b1);
  else
    mma_sync_m16n8k16_bf16(d, a, b0, b1);
}

template <int IS_FP16>
static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  return IS_FP16 ? cvt_rn_f16x2_f32(lo, hi) : cvt_rn_bf16x2_f32(lo, hi);
}

/*
 * Fragment maps used below (lane = threadIdx.x % 32, g = lane / 4, q = lane % 4), m16n8k16:
 *   A (16 x 16, row-major) a[0]: rows g,   k 2q..2q+1      a[1]: rows g+8, k 2q..2q+1
 *                          a[2]: rows g,   k 2q+8..2q+9    a[3]: rows g+8, k 2q+8..2q+9
 *   B (16 x 8, "col")      b0: k 2q..2q+1, col g            b1: k 2q+8..2q+9, col g
 *   C (16 x 8, fp32)       c[0..1]: row g, cols 2q..2q+1   c[2..3]: row g+8, cols 2q..2q+1
 * ldmatrix.x4 hands lane l the (row l/4, cols 2(l%4)..+1) pair of matrix i in register i, the row
 * addresses of matrix i coming from lanes 8i..8i+7; .trans hands the transposed pair. So:
 *   A from a row-major [row][k] tile: matrix order (rows 0-7,k 0-7), (8-15, 0-7), (0-7, 8-15),
 *     (8-15, 8-15): lane l addresses row l%16, k chunk l/16.
 *   B of S = Q K^T from K stored [key = n][dim = k] (non-trans): matrices (keys 0-7, dims 0-7) = b0
 *     of n tile 0, (keys 8-15, dims 0-7) = b0 of n tile 1, (keys 0-7, dims 8-15) = b1 of n tile 0,
 *     (keys 8-15, dims 8-15) = b1 of n tile 1: lane l addresses key l%16, chunk l/16 (the same
 *     lane addressing as A, so the same swizzle offsets serve Q, K and V).
 *   B of O = P V from V stored [key = k][dim = n] (trans): matrices (keys 0-7, dims 0-7) = b0 of n
 *     tile 0, (keys 8-15, dims 0-7) = b1 of n tile 0, (keys 0-7, dims 8-15) = b0 of n tile 1,
 *     (keys 8-15, dims 8-15) = b1 of n tile 1: lane l addresses key l%16, dim chunk l/16.
 */

/* One K tile of 32 keys: thread tid copies the 9 chunks tid%8 + 8u (u = 0..8) of key tid/8. `pid` is
 * the key's page id, already read from block_table, or -1 when the key is at/after key_end. */
static __device__ __forceinline__ void issue_k_tile(const fmla_kernel_params &p, uint32_t dst, int hk, int pid, int j,
                                                    int ld_sub) {
  /* Strides are read from the parameter bank at each use rather than kept in registers. */
  const bool ok = pid >= 0 && pid < p.num_blocks;
  const char *src = (const char *)p.k_cache;
  if (ok) {
    const int slot = j % p.page_size;
    src += ((int64_t)pid * p.k_block_stride + (int64_t)slot * p.k_token_stride + (int64_t)hk * p.k_head_stride) * 2 +
           ld_sub * 16;
  }
#pragma unroll
  for (int u = 0; u < 9; ++u) cp_async_16(dst + u * 128, ok ? (const void *)(src + u * 128) : p.k_cache, ok);
}

/* Entry k of this CTA's part row of the scheduler metadata. A plain load on purpose: the asm memory
 * clobbers of the tile loop make the compiler re-read it (an L1 hit) after the loop instead of holding
 * five metadata registers across it, which would push the kernel past 255 registers. */
static __device__ __forceinline__ int meta_ld(const fmla_kernel_params &p, int k) {
  return p.meta[(int64_t)blockIdx.z * FMLA_META_SIZE + k];
}

template <int IS_FP16>
__global__ void __launch_bounds__(D80_THREADS, 1) fmla_decode_sm80_kernel(const __grid_constant__ fmla_kernel_params p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int rg = warp & 3;  /* row group: tile rows rg*16 .. +16 */
  const int kh = warp >> 2; /* key half of S (keys kh*16 .. +16) and V column half (kh*256 .. +256) */
  const int hk = blockIdx.y;
  const bool split_p = !IS_FP16 && FMLA_SM80_SPLIT_P;

  const int begin_req = meta_ld(p, 0);
  if (begin_req < 0 || begin_req >= p.batch || meta_ld(p, 2) < begin_req) return; /* empty part */

  const int rows = p.rows, ngroups = p.ngroups, s_q = p.seqlen_q, causal = p.causal;
  const int page_size = p.page_size;
  const int row_tile0 = blockIdx.x * FMLA_BLOCK_M;
  const bool warp_active = row_tile0 + rg * 16 < rows; /* warp-uniform, same for both key halves */

  const uint32_t s_base = smem_u32addr(smem);
  const uint32_t sQ = s_base + D80_Q_OFF, sK = s_base + D80_K_OFF, sP = s_base + D80_P_OFF;
  float *sMax = (float *)(smem + D80_MAX_OFF);
  float *sSum = (float *)(smem + D80_SUM_OFF);

  /* ldmatrix lane addressing (see the fragment maps above). With 8-aligned row bases, row % 8 is
   * lane % 8 for every operand; a k chunk c = 8 * (c / 8) + c % 8 is stored at
   * 8 * (c / 8) + (c % 8 ^ row % 8), so the swizzled part depends only on (c % 8) and is
   * precomputed per lane for the 4 values of (k step % 4); c / 8 becomes an immediate offset. */
  const int x7 = lane & 7, hi16 = lane >> 4;
  uint32_t qoff[4]; /* chunk 2i + l/16 of row (.. + l%16): A of Q, B of K, B of V (.trans) */
#pragma unroll
  for (int i = 0; i < 4; ++i) qoff[i] = (uint32_t)(((2 * i + hi16) ^ x7) << 4);
  const uint32_t q_ld = sQ + (uint32_t)(rg * 16 + (lane & 15)) * D80_ROW_BYTES;
  const uint32_t k_ld = (uint32_t)(kh * 16 + (lane & 15)) * D80_ROW_BYTES;    /* + stage base */
  const uint32_t v_ld = (uint32_t)(lane & 15) * D80_ROW_BYTES + kh * 512;       /* + stage base */
  const int prow = rg * 16 + (lane & 15);
  /* P A-operand of k step ks: chunk 2 ks + l/16 of row prow; sP is 128-aligned, so chunk bit 1 is
   * address bit 5 and k step 1 is k step 0 with that bit flipped. */
  const uint32_t p_ld0 = sP + prow * D80_P_ROW_BYTES + ((hi16 ^ ((prow >> 1) & 3)) << 4);
  /* This thread's C-fragment rows (tile-local) are row_lo and row_lo + 8; (row/2)%4 is the same for
   * both, so the P store offsets of row_lo + 8 are those of row_lo plus 8 rows. */
  const int row_lo = rg * 16 + (lane >> 2);
  const int psw = (row_lo >> 1) & 3;
  /* P store of n tile nt: chunk 2 kh + nt, i.e. chunk bit 0 (address bit 4) flipped for nt = 1. */
  const uint32_t p_st0 = D80_P_OFF + row_lo * D80_P_ROW_BYTES + (((kh * 2) ^ psw) << 4) + 4 * (lane & 3);

  /* Copy geometry: thread tid fills row tid/8 (a key of the K tile; Q rows tid/8 and tid/8 + 32),
   * chunks tid%8 + 8u, so 8 consecutive threads read 128 contiguous bytes. */
  const int ld_row = tid >> 3, ld_sub = tid & 7;
  const uint32_t ld_dst = (uint32_t)ld_row * D80_ROW_BYTES + ((ld_sub ^ (ld_row & 7)) << 4);

  const float sl2 = p.scale_log2;

  for (int pos = begin_req; pos <= min(meta_ld(p, 2), p.batch - 1); ++pos) {
    const int req = fmla_ns_req(p.num_splits, p.batch, pos); /* position pos of the part order (params.h) */
    /* ---- segment bounds ---- */
    const bool first = pos == begin_req, last = pos == min(meta_ld(p, 2), p.batch - 1);
    int64_t Lc = __ldg(p.cache_seqlens + req);
    if (Lc < 0) Lc = 0;
    if (Lc > (int64_t)p.max_blocks_per_seq * page_size) Lc = (int64_t)p.max_blocks_per_seq * page_size;
    if (Lc > D80_MAX_KEYS) Lc = D80_MAX_KEYS;
    const int L = (int)Lc;
    const int nb = (L + FMLA_BLOCK_N - 1) / FMLA_BLOCK_N;
    int lo_blk = first ? meta_ld(p, 1) : 0;
    int hi_blk = last ? meta_ld(p, 3) : nb;
    if (hi_blk > nb) hi_blk = nb;
    if (hi_blk < 0) hi_blk = 0;
    if (lo_blk > hi_blk) lo_blk = hi_blk;
    if (lo_blk < 0) lo_blk = 0;

    /* The last real row of the tile has the largest causal limit: keys past it are never needed. */
    const int last_row = min(row_tile0 + FMLA_BLOCK_M, rows) - 1;
    const int tile_lim = causal ? L - (s_q - 1 - last_row / ngroups) : L;
    const int key_begin = lo_blk * FMLA_BLOCK_N;
    const int key_end = min(hi_blk * FMLA_BLOCK_N, tile_lim);
    const int ntiles = key_end > key_begin ? (key_end - key_begin + D80_TILE_N - 1) / D80_TILE_N : 0;

    /* Per-row visibility limit of this thread's two C-fragment rows (0 for padding rows). */
    int lim[2];
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int R = row_tile0 + row_lo + 8 * hh;
      lim[hh] = R < rows ? min(key_end, causal ? L - (s_q - 1 - R / ngroups) : L) : 0;
    }

    const int32_t *bt = p.block_table + (int64_t)req * p.block_table_stride;

    /* ---- prologue: Q tile and K tile 0 in one cp.async group ---- */
    __syncthreads(); /* every warp is done with the previous segment's sQ, sK, sP, sSum */
    int pid_next = -1;
    if (ntiles > 0) {
#pragma unroll
      for (int pass = 0; pass < 2; ++pass) {
        const int r = pass * 32 + ld_row;
        const int R = row_tile0 + r;
        const bool ok = R < rows;
        const char *src = (const char *)p.q;
        if (ok) {
          const int t = R / ngroups, h = hk * ngroups + (R - t * ngroups);
          src += ((int64_t)req * p.q_batch_stride + (int64_t)t * p.q_seq_stride + (int64_t)h * p.q_head_stride) * 2 +
                ld_sub * 16;
        }
        const uint32_t dst = sQ + (uint32_t)pass * 32 * D80_ROW_BYTES + ld_dst;
#pragma unroll
        for (int u = 0; u < 9; ++u) cp_async_16(dst + u * 128, ok ? (const void *)(src + u * 128) : p.q, ok);
      }
      const int j0 = key_begin + ld_row;
      const int pid0 = j0 < key_end ? __ldg(bt + j0 / page_size) : -1;
      issue_k_tile(p, sK + ld_dst, hk, pid0, j0, ld_sub);
      const int j1 = key_begin + D80_TILE_N + ld_row;
      if (ntiles > 1 && j1 < key_end) pid_next = __ldg(bt + j1 / page_size);
    }
    cp_async_commit_group();

    float o[32][4];
#pragma unroll
    for (int n = 0; n < 32; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m_row[2] = {-INFINITY, -INFINITY}; /* running max of s * scale_log2, per C row */
    float l_row[2] = {0.f, 0.f};             /* this thread's share of the running row sum */

    for (int n = 0; n < ntiles; ++n) {
      const int key0 = key_begin + n * D80_TILE_N;
      cp_async_wait_group<0>();
      __syncthreads(); /* tile n visible to all; everyone is done with the stage tile n+1 reuses */
      if (n + 1 < ntiles)
        issue_k_tile(p, sK + ((n + 1) & 1) * D80_K_STAGE + ld_dst, hk, pid_next, key0 + D80_TILE_N + ld_row, ld_sub);
      cp_async_commit_group();
      if (n + 2 < ntiles) {
        const int j2 = key0 + 2 * D80_TILE_N + ld_row;
        pid_next = j2 < key_end ? __ldg(bt + j2 / page_size) : -1;
      }
      if (!warp_active) continue;

      const uint32_t kst = sK + (n & 1) * D80_K_STAGE;

      /* ---- S = Q K^T: 16 rows x 16 keys per warp ---- */
      /* fp16: even and odd k steps accumulate into separate registers (sx) so the dependent mma
       * chain per accumulator is 18 long instead of 36. bf16 keeps one chain: it needs those
       * registers for the P_lo fragment (sx stays 0 and is optimised away). */
      float s[2][4], sx[2][4];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
        sx[i][0] = sx[i][1] = sx[i][2] = sx[i][3] = 0.f;
      }
      const uint32_t kb = kst + k_ld;
#pragma unroll
      for (int ks = 0; ks < FMLA_HEAD_DIM_K / 16; ++ks) {
        uint32_t a[4], b[4];
        ldmatrix_x4(a, q_ld + (ks >> 2) * 128 + qoff[ks & 3]);
        ldmatrix_x4(b, kb + (ks >> 2) * 128 + qoff[ks & 3]); /* b0 nt0, b0 nt1, b1 nt0, b1 nt1 */
        const bool odd = (ks & 1) && !split_p;
        mma16816<IS_FP16>(odd ? sx[0] : s[0], a, b[0], b[2]);
        mma16816<IS_FP16>(odd ? sx[1] : s[1], a, b[1], b[3]);
      }
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int c = 0; c < 4; ++c) s[i][c] += sx[i][c];

      /* ---- mask, scale to log2 units, tile row max across the key halves ---- */
      const int kcol = key0 + kh * 16 + 2 * (lane & 3);
      float mx[2];
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
          for (int c = 0; c < 2; ++c)
            s[nt][2 * hh + c] = kcol + nt * 8 + c < lim[hh] ? s[nt][2 * hh + c] * sl2 : -INFINITY;
        mx[hh] = fmaxf(fmaxf(s[0][2 * hh], s[0][2 * hh + 1]), fmaxf(s[1][2 * hh], s[1][2 * hh + 1]));
        mx[hh] = fmaxf(mx[hh], __shfl_xor_sync(0xffffffffu, mx[hh], 1));
        mx[hh] = fmaxf(mx[hh], __shfl_xor_sync(0xffffffffu, mx[hh], 2));
      }
      if ((lane & 3) == 0) {
        sMax[kh * 64 + row_lo] = mx[0];
        sMax[kh * 64 + row_lo + 8] = mx[1];
      }
      bar_sync(1 + rg, 64);

      /* ---- online softmax (both partner warps compute bit-identical maxima) ---- */
      float alpha[2];
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const float m_new = fmaxf(m_row[hh], fmaxf(mx[hh], sMax[(kh ^ 1) * 64 + row_lo + 8 * hh]));
        /* All keys so far masked: m_new = -inf; exponent base 0 keeps exp2(-inf - base) = 0, not NaN. */
        const float base = m_new == -INFINITY ? 0.f : m_new;
        alpha[hh] = ex2_approx_ftz_f32(m_row[hh] - base);
        m_row[hh] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            s[nt][2 * hh + c] = ex2_approx_ftz_f32(s[nt][2 * hh + c] - base);
            sum += s[nt][2 * hh + c];
          }
        l_row[hh] = l_row[hh] * alpha[hh] + sum;
      }
#pragma unroll
      for (int n2 = 0; n2 < 32; ++n2) {
        o[n2][0] *= alpha[0];
        o[n2][1] *= alpha[0];
        o[n2][2] *= alpha[1];
        o[n2][3] *= alpha[1];
      }
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const uint32_t off = (p_st0 ^ (nt << 4)) + hh * 8 * D80_P_ROW_BYTES;
          const float x = s[nt][2 * hh], y = s[nt][2 * hh + 1];
          const uint32_t hi = pack2<IS_FP16>(x, y);
          *(uint32_t *)(smem + off) = hi;
          if (split_p) /* bf16 -> fp32 is exact: the bf16 bits are the top half of the fp32 */
            *(uint32_t *)(smem + off + D80_P_PLANE) =
                pack2<IS_FP16>(x - __uint_as_float(hi << 16), y - __uint_as_float(hi & 0xffff0000u));
        }
      bar_sync(1 + rg, 64); /* the partner's 16 keys of P are in smem */

      /* ---- O += P V: 16 rows x 256 columns per warp, 32 keys ---- */
      const uint32_t vb = kst + v_ld;
#pragma unroll
      for (int ks = 0; ks < 2; ++ks) {
        uint32_t a[4], alo[4];
        ldmatrix_x4(a, p_ld0 ^ (ks << 5));
        if (split_p) ldmatrix_x4(alo, (p_ld0 ^ (ks << 5)) + D80_P_PLANE);
#pragma unroll
        for (int dp = 0; dp < 16; ++dp) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, vb + ks * 16 * D80_ROW_BYTES + (dp >> 2) * 128 + qoff[dp & 3]);
          if (split_p) {
            mma16816<IS_FP16>(o[2 * dp], alo, b[0], b[1]);
            mma16816<IS_FP16>(o[2 * dp + 1], alo, b[2], b[3]);
          }
          mma16816<IS_FP16>(o[2 * dp], a, b[0], b[1]);
          mma16816<IS_FP16>(o[2 * dp + 1], a, b[2], b[3]);
        }
      }
    }
    cp_async_wait_group<0>(); /* nothing may still land in sQ/sK when the next segment refills them */
    if (!warp_active) continue;

    /* ---- epilogue: full row sums, then this warp's 256 columns of its 16 rows ---- */
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      l_row[hh] += __shfl_xor_sync(0xffffffffu, l_row[hh], 1);
      l_row[hh] += __shfl_xor_sync(0xffffffffu, l_row[hh], 2);
    }
    if ((lane & 3) == 0) {
      sSum[kh * 64 + row_lo] = l_row[0];
      sSum[kh * 64 + row_lo + 8] = l_row[1];
    }
    bar_sync(1 + rg, 64);
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) l_row[hh] += sSum[(kh ^ 1) * 64 + row_lo + 8 * hh];

    const int col0 = kh * 256 + 2 * (lane & 3);
    /* read here, not at the segment start, to keep them out of the registers of the tile loop */
    const int split = first ? meta_ld(p, 4) : 0;
    /* the request again (an L1 hit) rather than `req` kept live across the tile loop: that one
     * register more made ptxas spill 4 bytes in the sm_80 build of the unmasked kernel */
    const int req_o = fmla_ns_req(p.num_splits, p.batch, pos);
    const int slot0 = fmla_ns_slot(p.num_splits, p.batch, req_o);
    const int nsplits = fmla_ns_slot(p.num_splits, p.batch, req_o + 1) - slot0;
    const bool unsplit = nsplits <= 1;
    if (!unsplit && (split < 0 || split >= nsplits)) continue; /* inconsistent metadata: write nothing */
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int R = row_tile0 + row_lo + 8 * hh;
      if (R >= rows) continue;
      const float l = l_row[hh];
      const float inv = l > 0.f ? 1.f / l : 0.f;
      if (unsplit) {
        const int t = R / ngroups, h = hk * ngroups + (R - t * ngroups);
        char *op = (char *)p.out +
                   ((int64_t)req_o * p.out_batch_stride + (int64_t)t * p.out_seq_stride + (int64_t)h * p.out_head_stride + col0) * 2;
#pragma unroll
        for (int n = 0; n < 32; ++n)
          *(uint32_t *)(op + n * 16) = pack2<IS_FP16>(o[n][2 * hh] * inv, o[n][2 * hh + 1] * inv);
        if (kh == 0 && (lane & 3) == 0)
          p.lse[((int64_t)req_o * p.num_heads_q + h) * s_q + t] = fmla_final_lse(m_row[hh] * D80_LN2, l);
      } else {
        const int64_t idx = ((int64_t)(slot0 + split) * p.num_heads_k + hk) * rows + R;
        float *ob = p.o_accum + idx * FMLA_HEAD_DIM_V + col0;
#pragma unroll
        for (int n = 0; n < 32; ++n) *(float2 *)(ob + n * 8) = make_float2(o[n][2 * hh] * inv, o[n][2 * hh + 1] * inv);
        if (kh == 0 && (lane & 3) == 0) p.lse_accum[idx] = l > 0.f ? m_row[hh] * D80_LN2 + logf(l) : -INFINITY;
      }
    }
  }
}

/* ---------------------------------------------------------------------------------------------- */

#define D80_MAX_DEVICES 64
/* Per device and dtype: 1 once the shared-memory attribute is set (benign race: setting it twice is
 * harmless). */
static int d80_ready[D80_MAX_DEVICES][2];

extern "C" flash_mla_status_t fmla_launch_decode_portable(const fmla_kernel_params *p, void *stream) {
  if (p == NULL) return fmla_set_error(FLASH_MLA_ERROR_INTERNAL, "fmla_launch_decode_portable: params is NULL");
  if (p->num_m_blocks < 1 || p->num_heads_k < 1 || p->num_heads_k > 65535 || p->num_sm_parts < 1 ||
      p->num_sm_parts > 65535)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE,
                          "portable decode: grid (num_m_blocks %d, num_heads_k %d, num_sm_parts %d) out of range",
                          p->num_m_blocks, p->num_heads_k, p->num_sm_parts);
  const int fp16 = p->dtype == FLASH_MLA_DTYPE_FP16 ? 1 : 0;
  const void *kernel = fp16 ? (const void *)fmla_decode_sm80_kernel<1> : (const void *)fmla_decode_sm80_kernel<0>;

  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return fmla_set_error(FLASH_MLA_ERROR_CUDA, "portable decode: cudaGetDevice: %s", cudaGetErrorString(e));
  const int cached = dev >= 0 && dev < D80_MAX_DEVICES;
  if (!cached || !__atomic_load_n(&d80_ready[dev][fp16], __ATOMIC_ACQUIRE)) {
    int major = 0, optin = 0;
    e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (e != cudaSuccess)
      return fmla_set_error(FLASH_MLA_ERROR_CUDA, "portable decode: cudaDeviceGetAttribute: %s", cudaGetErrorString(e));
    if (major < 8)
      return fmla_set_error(FLASH_MLA_ERROR_UNSUPPORTED_DEVICE,
                            "portable decode kernel needs compute capability 8.0 or newer (device %d is %d.x)", dev, major);
    if (optin < D80_SMEM_BYTES)
      return fmla_set_error(FLASH_MLA_ERROR_UNSUPPORTED_DEVICE,
                            "portable decode kernel needs %d bytes of shared memory per block, device %d allows %d",
                            (int)D80_SMEM_BYTES, dev, optin);
    e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, D80_SMEM_BYTES);
    if (e != cudaSuccess)
      return fmla_set_error(FLASH_MLA_ERROR_CUDA, "portable decode: cudaFuncSetAttribute: %s", cudaGetErrorString(e));
    if (cached) __atomic_store_n(&d80_ready[dev][fp16], 1, __ATOMIC_RELEASE);
  }

  const dim3 grid((unsigned)p->num_m_blocks, (unsigned)p->num_heads_k, (unsigned)p->num_sm_parts);
  if (fp16)
    fmla_decode_sm80_kernel<1><<<grid, D80_THREADS, D80_SMEM_BYTES, (cudaStream_t)stream>>>(*p);
  else
    fmla_decode_sm80_kernel<0><<<grid, D80_THREADS, D80_SMEM_BYTES, (cudaStream_t)stream>>>(*p);
  e = cudaGetLastError();
  if (e != cudaSuccess)
    return fmla_set_error(FLASH_MLA_ERROR_CUDA, "portable decode: kernel launch: %s", cudaGetErrorString(e));
  return FLASH_MLA_SUCCESS;
}
