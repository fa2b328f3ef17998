/*
 * decode_sm90.cu (v6.19): MLA decode over a paged KV cache for Hopper (sm_90a): TMA + wgmma + warp
 * specialisation, "seesaw" schedule over pairs of 64-key blocks. Same contract as the portable
 * kernel (src/params.h).
 *
 * Computes, for each KV head hk and request i, over the query rows r = (t, g) of that head
 * (rows = s_q * ngroups, ngroups = h_q / h_kv):
 *   q [b, s_q, h_q, 576]  k_cache [num_blocks, page, h_kv, 576] (V = first 512 dims of K)
 *   out [b, s_q, h_q, 512] = softmax(scale * q K^T, bottom-right causal) V,  lse [b, h_q, s_q]
 * or, for a request split across parts, o_accum [slot, h_kv, rows, 512] = O / l and
 * lse_accum [slot, h_kv, rows] (-inf when the split saw no key); combine.cu merges the slots.
 *
 * Grid (num_m_blocks, h_kv, num_sm_parts), 384 threads = 3 warpgroups, 1 CTA per SM:
 *   WG2 producer  one thread issues every TMA copy (gather mode, v6.10: all 128 threads copy K with
 *                 cp.async); setmaxnreg.dec to 40 registers.
 *   WG0, WG1      consumers; setmaxnreg.inc to 232 registers.
 * A CTA owns one 64-row M tile of one KV head and walks the segments (request i, n-blocks
 * [lo, hi)) of its part, positions of the part order (params.h; v6.9: the scheduler may order the
 * requests by length, and position -> request comes from num_splits through fmla_ns_req). Per segment the producer loads the Q tile (64 x 576, 9 TMA boxes of a 5-D
 * map, padding rows zero-filled by TMA) as soon as every consumer warp is past the previous
 * segment's last S (q_free), so it lands under that segment's last PVs and epilogue (v6.1; group
 * counts TMA cannot box fall back to a cp.async copy by the consumers). The epilogue stores 16
 * bytes per thread after a butterfly inside each quad. v6.2: WG1 gives V_A[:, 256:512] back as soon
 * as PV_A_R has retired (before P_B's stores), not after queueing PV_B_R: the next stage 0 fill, and
 * behind it stage 1's, start ~650 clk sooner (-2% per pair). v6.4: each consumer thread keeps its
 * 16 registers of Q's RoPE tile (tile 8) and S's 4 tile-8 k-steps read A from registers (RS wgmma):
 * -0.3-0.4% kernel-only (plain-build A/B, H200). The n-blocks of a segment go in pairs (A, B):
 * A always in K stage 0, B in stage 1; an odd segment ends with a pair that has no B (stage 1
 * is then skipped, so each stage keeps its own use counter and barrier phase).
 *
 * Split of the work (why): v1 split S by keys (m64n32 per WG), so both WGs read all of Q from
 * shared memory for every block (216 KB/block of smem reads at 128 B/clk) and both WGs did
 * softmax at the same time while the tensor cores idled. v2 gives each WG a whole block's S
 * (m64n64k16 x 36, Q read once per block) and staggers the WGs by one S, so one WG's softmax
 * always runs under the other WG's wgmma. O stays split by columns (WG0 cols 0..255, WG1
 * 256..511, 128 fp32 regs/thread): every WG multiplies BOTH P_A and P_B into its half.
 *
 *   WG0  S_A = Q K_A^T; m_A = max(m, rowmax S_A); P_A = exp2(S_A - m_A) -> smem (sPA), m_A -> smem
 *        O_L = O_L * exp2(m - m_A) + P_A V_A[:, 0:256]
 *        wait P_B: O_L = O_L * exp2(m_A - m_B) + P_B V_B[:, 0:256]
 *   WG1  issue S_B = Q K_B^T; while it runs: wait P_A, m_A; O_R = O_R * exp2(m - m_A) and queue
 *        O_R += P_A V_A[:, 256:512] behind S_B (v6: it then runs under this WG's softmax of B
 *        instead of after it); m_B = max(m_A, rowmax S_B) -> smem (v6.15: before the exp);
 *        P_B = exp2(S_B - m_B) -> smem (over K_B's RoPE tile, dead once S_B is done)
 *        O_R = O_R * exp2(m_A - m_B) + P_B V_B[:, 256:512]
 *   v6.15: WG0 takes m_B as soon as WG1 has it (mb_ready, under WG1's exp), retires PV_A_L, gives
 *   V_A[:, 0:256] back and rescales O_L to m_B, so that PV_B_L is queued the moment P_B lands.
 *   The second rescale of each WG runs after its first PV retired (wgmma.wait_group, uniform) and
 *   is skipped per warp (__any_sync) when none of the warp's rows' max moved from m_A to m_B.
 *   P_B is published by every WG1 thread for its own rows (count 128, no WG barrier), in the kFF
 *   instance only after PV_B_R is queued: that keeps PV_B_R ahead of PV_B_L in the tensor pipe,
 *   and V_B[:, 256:512], which kFF refills first, comes back first (issued together, both PVs
 *   retired late and the kFF cycle grew by 7%). H200 kernel-only against v6.14: 128- and 256-row
 *   shapes -0.7 to -1.4%, 64 rows unchanged (perf-notes, eleventh session).
 *   v6.16: the softmax's row max is a 4-deep fmaxf tree (sm90_tree_max) in every instance but
 *   kFF, where it measured 1.2-1.4% slower (kernel-only, H200); 256 rows -0.9%.
 *   S stays unscaled: the row max is taken on raw scores and the scale (|scale| log2 e, the sign
 *   applied to S first) enters inside exp2's FFMA, exp2(fma(s, c, -m)) (v6.7).
 *
 * Timeline of a pair in steady state (tensor = the SM's tensor cores, issue order = run order):
 *   tensor   |== S_A (WG0) ==|== S_B (WG1) ==|PV_A_L|PV_A_R|PV_B_L|== S_A' ==|PV_B_R|== S_B' ==
 *   WG0      |issue S_A      |softmax A, P_A |issue PV_A_L .. wait P_B, issue PV_B_L,
 *            |               |               |wait PV_A_L, free V_A[:,L], issue S_A' ...
 *   WG1      |issue S_B (queued behind S_A), wait P_A, issue PV_A_R|softmax B, P_B|issue PV_B_R,
 *            |                               |wait PV_A_R, free V_A[:,R]; wait PV_B_R, issue S_B'
 *   producer |TMA K_A'[RoPE] as soon as S_A is done, K_A'[0:256] after PV_A_L, [256:512] after
 *            |PV_A_R; K_B' tiles after PV_B_L / PV_B_R
 * Tensor work per pair: 2 x S (4.72 MFLOP) + 4 x PV half (2.10 MFLOP) = 17.8 MFLOP: 4352 SM clocks
 * at the dense peak (2048 bf16 FMA/clk/SM), ~5990 clk at the measured 778 TFLOPS.
 * Measured (clock64 trace, FMLA_SM90_TRACE + dev/test_wgmma.cu trace, H200, b=128 L=4096, v5):
 * a pair takes ~7450 clk (s_q=1) / ~6800 (s_q=2). Where it goes at s_q=1: S_A alone runs at ~75%
 * of the peak (1711 clk for 1152), S_B next to PV_A_L at ~63%; ~550 clk idle before S_B waiting
 * for K_B's first tile (freed when PV_B_L retires, queued behind stage 0 in the TMA unit, ~1400
 * clk from issue to arrival when half the reads miss L2); ~1000 clk idle while WG1 does softmax B
 * (v6 moves PV_A_R under it: -1.5%). The producer's TMA copies issue at ~1 per 270 clk when
 * queued (~30 B/clk/SM of fill). See docs/perf-notes.md (2026-11-29, afternoon) for the variants
 * measured against this (L2 prefetch, tile orders, batched S waits, TMA multicast). Caution: the
 * trace build itself runs ~7% slower than the plain build and has flipped 3-5% comparisons (v6.3,
 * v7); decide between variants on plain builds (dev/ab_builds.sh, then dev/ab_libs.py). With no
 * K copies at all (a probe that also lets S_B overtake S_A) a plain build changes by only -1% / +4%
 * (perf-notes 2026-11-29 fourth session); ncu (v6.4): tensor pipe 62% active, the warps mostly
 * waiting on mbarriers.
 *
 * v4 release order: WG0 finishes PV_B_L before it issues the next S_A (wgmma_wait at the loop top,
 * not inside the S chain: a wait there makes ptxas serialize every wgmma, C7520, which the build now
 * rejects), so stage 1's V[:, 0:256] and P_B tiles go back one S earlier; and WG0 retires PV_A_L
 * and gives V_A[:, 0:256] back before it waits for P_B (v4-v6.14: only when P_B was late, decided
 * over the warpgroup with bar.red.or; v6.15: always, once m_B is in). Both start the producer's
 * next K loads sooner: ~10-15% on the 64/128-row cases (same-run A/B, H200).
 *
 * v6.14: in a 2-CTA cluster that holds all the M tiles of a KV head (128 rows), stage 1 is filled and
 * read in freed-first order (tiles 4-7, which WG1 gives back first, then 0-3, then the P_B tile; the
 * kFF instance), so the K_B refill that sets the pair's period starts ~480 clk sooner (H200: -1 to
 * -7% on those shapes; neutral to slower with two clusters per KV head, which keep 0..8).
 *
 * Fine-grained release: every 8 KB column tile of a K stage has its own "full" (TMA bytes) and
 * "empty" (consumer arrivals) mbarrier, so the producer refills a tile as soon as its last
 * reader is done: stage 0 tile 8 (RoPE) right after S_A (the S loop of stage 0 starts at tile 8
 * so the early tile is used first), V tiles after the PV that reads them. Empty arrivals are one
 * per warp (count 4), except stage 1 tile 8 (P_B) which both WGs read (count 8).
 *
 * Hand-offs between the WGs (mbarriers, phase = pair counter parity):
 *   PA_ready (count 32) WG0 -> WG1: P_A in sPA, m_A in sMA, V_A's masked rows zeroed (the 32
 *                       quad leaders that wrote sMA arrive; only quad leaders read sMA/sMB)
 *   MB_ready (count 32) WG1 -> WG0: m_B in sMB (WG1's quad leaders, before their exp)
 *   PB_ready (count 128) WG1 -> WG0: P_B in stage 1 tile 8 and V_B's masked rows zeroed, each
 *                       WG1 thread for its own stores (kFF: after PV_B_R is queued)
 *   PA_free  (count 32) WG1 -> WG0: PV_A_R has read sPA and sMA (WG0 may overwrite them)
 *   L_READY[w] (count 32, once per segment) WG w -> the other: its row sums are in lsum
 *
 * Masking: row r sees keys j < L - (s_q-1-t). Keys on a page id outside [0, num_blocks) are never
 * loaded and score 0 with a zero V row (same as the reference). The WG that owns a block zeroes
 * the V rows past L and on bad pages (all 512 columns) before it publishes its P (stale smem or
 * NaN slots; 0 * NaN = NaN). Row sums l stay per thread (partial over the thread's columns and the
 * WG's blocks) and are reduced across the quad and the two WGs once, in the epilogue (through
 * L_READY: data ordered by writer-arrived mbarriers, which racecheck follows; a consumer bar.sync
 * after it bounds the two WGs to one L_READY phase apart and is ptxas's scheduling fence).
 *
 * Shared memory (dynamic, 1024-byte aligned; every 64x64 tile uses the TMA 128-byte swizzle:
 * 16-byte chunk c of row r lives at r*128 + ((c ^ (r % 8)) * 16), 8-row atoms of 1024 bytes):
 *   Q      9 x 8 KB      73,728
 *   K/V    2 x 9 x 8 KB 147,456   (stage s, tile t at 73,728 + s*73,728 + t*8,192)
 *   P_A    8 KB           8,192   (P_B lives in stage 1's RoPE tile)
 *   m_A, m_B [64] f32 512, row sum [2 parities][2][64] f32 1,024, bad-page masks [2] u64 (clusters:
 *   [2][2]), 45 mbarriers; total 231,320 + 1,024 alignment slack = 232,344 of 232,448 (227 KB).
 *
 * Page sizes: any multiple of 64 (one box of 64 keys per tile), and (v6.13) any whose gcd with 64 is
 * 16 or 32 (16, 32, 48, 80, 96, ...: boxes of gcd rows, which never straddle a page, 4 or 2 per
 * 64-key tile) by TMA; every other size (v6.10; e.g. 1, 8, 24) in gather mode: a single-CTA
 * instance of this kernel (kGather) whose 128 producer-warpgroup threads copy the key rows with
 * cp.async (sm90_gather_block); the consumers are the same code, plus (v6.11) a proxy fence after
 * each K-tile wait, as the copies arrive on the full barriers by cp.async.mbarrier.arrive.noinc.
 * v6.12: when the M tiles pair up and pages hold 1-4 tokens (FMLA_SM90_GATHER_MC_MAX_PAGE; from 8 up
 * the single-CTA gather measured faster), gather mode runs as 2-CTA clusters: CTA s gathers stage s and
 * its consumer WG sends each full tile on to the other CTA (cp.async.bulk shared::cta ->
 * shared::cluster, complete_tx on the receiver's full barrier), so each key row is gathered once
 * per pair of M tiles (sm90_producer_gather). Before v6.10 those sizes fell back to the portable
 * kernel.
 *
 * Build/check just this file:
 *   nvcc -std=c++17 -O3 -Xptxas -v -c -gencode=arch=compute_90a,code=sm_90a \
 *        -gencode=arch=compute_80,code=sm_80 -Iinclude -Isrc src/decode_sm90.cu -o /tmp/d90.o
 *   cuobjdump --dump-sass /tmp/d90.o | grep -c HGMMA        (and no LDL/STL)
 * Debug: -DFMLA_SM90_DEBUG=1 bounds every mbarrier wait (printf naming the barrier + trap).
 * Unit test on a GPU: dev/test_wgmma.cu (tile: one S and one PV tile; decode: hostile shapes).
 * v6.5, TMA multicast: when the M tiles of a KV head pair up (s_q * h_q / h_kv = 128 or 256 rows) and
 * the grid fits on the device at once, CTAs (2m, 2m + 1) of the grid run as a 2-CTA cluster: they walk
 * the same blocks, and stage s of both is filled by CTA s alone, every tile copied once by
 * cp.async.bulk.tensor .multicast::cluster into both CTAs (each CTA's own full barrier expects the
 * bytes). Consumers give a stage's tiles back on the copying CTA's empty barriers (remote arrive for
 * the other stage; those barriers count both CTAs' warps); the CTA that does not copy a stage only
 * raises its full barrier's byte count once the previous phase is over, so its bad-page masks are
 * double-buffered by use parity. At exit each CTA's producer waits, as for one more fill, until both
 * CTAs gave back every tile of the stage it copies: then no remote arrival into this CTA is still in
 * flight when its shared memory goes away. Half the L2->SM bytes: kernel-only in short bursts +1%
 * (neutral), but -1.6% to -4.3% on every standard case under sustained load at the 700 W power cap (H200, perf-notes), where a
 * call's time follows its energy. The remote arrive must be the default (CTA-scope release) form:
 * .release.cluster compiles to MEMBAR.ALL.GPU + CCTL.IVALL and made an earlier attempt 1.2x slower.
 * History: v1 (split-N S, both WGs in lockstep, whole-stage release) is in git before v2.
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
#include <type_traits>

#include "params.h"
#include "ptx_sm90.cuh"

#ifndef FMLA_SM90_DEBUG
#define FMLA_SM90_DEBUG 0
#endif
#ifndef FMLA_SM90_NARROW /* rows <= 32 per KV head go to the narrow (transposed) kernel */
#define FMLA_SM90_NARROW 1
#endif
#ifndef FMLA_SM90_EARLY_TRIGGER /* griddepcontrol.launch_dependents at the start (PDL for the combine): */
#define FMLA_SM90_EARLY_TRIGGER 0 /* off: measured neutral to -6% except b=1 s_k=1K (perf-notes) */
#endif
#ifndef FMLA_SM90_MCAST /* M tiles in pairs as 2-CTA clusters: each K tile read once, TMA multicast into both */
#define FMLA_SM90_MCAST 1
#endif
#ifndef FMLA_SM90_FREED_FIRST /* 128-row TMA clusters fill and read stage 1 as tiles 4-7, 0-3, 8 (v6.14) */
#define FMLA_SM90_FREED_FIRST 1
#endif
#ifndef FMLA_SM90_GATHER_MC /* gather mode, M tiles in pairs: each CTA gathers one stage, sends it to the other */
#define FMLA_SM90_GATHER_MC 1
#endif
#ifndef FMLA_SM90_NARROW_GATHER_MAX_PAGE /* the narrow kernel gathers (instead of 64 / g TMA boxes per tile) */
#define FMLA_SM90_NARROW_GATHER_MAX_PAGE 16 /* when boxes have g <= this many rows (H200: page 16, 1.01-1.21x) */
#endif
#ifndef FMLA_SM90_GATHER_MC_MAX_PAGE /* ... for page sizes up to this (H200: 1.13x at 2, 1.02x at 4, 0.96x at 8) */
#define FMLA_SM90_GATHER_MC_MAX_PAGE 4
#endif
#ifndef FMLA_SM90_PDL /* programmatic dependent launch: overlap our prologue with the previous kernel */
#define FMLA_SM90_PDL 1
#endif

#ifndef FMLA_SM90_PROBE_NOLOAD /* diagnostics only (wrong results; single-CTA: build with MCAST=0, the
                                 * cluster kernel hangs on its zero-byte phases): after each stage's first fill */
#define FMLA_SM90_PROBE_NOLOAD 0  /* the producer arrives on the full barriers without copying: the   */
#endif                            /* pair schedule with the K fill taken away (dev/test_wgmma trace)   */
#ifndef FMLA_SM90_PROBE_NOFENCE /* diagnostics only (formally racy, results unchecked by the memory model): gather */
#define FMLA_SM90_PROBE_NOFENCE 0  /* mode's consumers skip the proxy fence after their K-tile waits (its cost)     */
#endif
/* FMLA_SM90_TRACE=1 (diagnostics: dev/test_wgmma.cu trace): clock64 stamps of the 64-row kernel's
 * schedule steps per pair, for CTAs (0..3, 0, 0) (both clusters of a 256-row KV head), into
 * g_sm90_trace [cta][pair][slot]. Off in the library (the macro compiles to nothing). */
#ifndef FMLA_SM90_TRACE
#define FMLA_SM90_TRACE 0
#endif
#if FMLA_SM90_TRACE
#define SM90_TRACE_PAIRS 512
#define SM90_TRACE_SLOTS 32
__device__ long long g_sm90_trace[4][SM90_TRACE_PAIRS][SM90_TRACE_SLOTS];
#define SM90_TR(k, slot, cond)                                                                                \
  do {                                                                                                      \
    if ((cond) && blockIdx.y == 0 && blockIdx.z == 0 && blockIdx.x < 4 && (unsigned)(k) < SM90_TRACE_PAIRS) \
      g_sm90_trace[blockIdx.x][k][slot] = clock64();                                                        \
  } while (0)
/* Per-CTA stamps (thread 0): [0] globaltimer at entry, [1] clock64 at entry, [2] globaltimer at the
 * consumers' end, [3] clock64 there, [4] segments, [5] pairs, [6] clock64 after griddepcontrol.wait,
 * [8 + 4s + 0..3] segment s: clock64 at its top, Q ready, body done, epilogue done (s < 14).
 * Read by fmla_debug_cta_trace (exported in trace builds only; dev/cta_trace.py). */
#define SM90_CTA_MAX 1024
#define SM90_CTA_SLOTS 64
__device__ long long g_sm90_cta[SM90_CTA_MAX][SM90_CTA_SLOTS];
static __device__ __forceinline__ long long sm90_gtimer(void) {
  long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
#define SM90_CT(slot, val)                                                                         \
  do {                                                                                             \
    const unsigned b_ = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);            \
    if (threadIdx.x == 0 && b_ < SM90_CTA_MAX && (unsigned)(slot) < SM90_CTA_SLOTS)                \
      g_sm90_cta[b_][slot] = (val);                                                                \
  } while (0)
#else
#define SM90_TR(k, slot, cond) \
  do {                         \
  } while (0)
#define SM90_CT(slot, val) \
  do {                     \
  } while (0)
#endif

#define SM90_THREADS 384
#define SM90_CONSUMER_THREADS 256
#define SM90_NTILES 9                        /* 576 / 64 column tiles */
#define SM90_TILE_BYTES 8192                 /* 64 rows x 128 bytes */
#define SM90_STAGE_BYTES (SM90_NTILES * SM90_TILE_BYTES)
#define SM90_OFF_Q 0
#define SM90_OFF_K (SM90_OFF_Q + SM90_STAGE_BYTES)
#define SM90_OFF_PA (SM90_OFF_K + 2 * SM90_STAGE_BYTES)
#define SM90_OFF_MA (SM90_OFF_PA + SM90_TILE_BYTES)    /* float [64]: m_A per row */
#define SM90_OFF_MB (SM90_OFF_MA + 256)                /* float [64]: m_B per row */
#define SM90_OFF_LSUM (SM90_OFF_MB + 256)              /* float [2 segment parities][2 WGs][64] */
#define SM90_OFF_ZMASK (SM90_OFF_LSUM + 1024)          /* uint64 [2] */
#define SM90_OFF_MB_READY (SM90_OFF_ZMASK + 16)        /* mbarrier: WG1 -> WG0, m_B in sMB (8 of 16 bytes) */
#define SM90_OFF_FULL (SM90_OFF_MB_READY + 16)         /* uint64 mbarrier [2][9] */
#define SM90_OFF_EMPTY (SM90_OFF_FULL + 2 * SM90_NTILES * 8) /* uint64 mbarrier [2][9] */
#define SM90_OFF_PA_READY (SM90_OFF_EMPTY + 2 * SM90_NTILES * 8)
#define SM90_OFF_PB_READY (SM90_OFF_PA_READY + 8)
#define SM90_OFF_PA_FREE (SM90_OFF_PB_READY + 8)
#define SM90_OFF_Q_FULL (SM90_OFF_PA_FREE + 8)     /* Q tile landed (TMA bytes) */
#define SM90_OFF_Q_FREE (SM90_OFF_Q_FULL + 8)      /* every consumer warp is past its last S of the segment */
#define SM90_OFF_L_READY (SM90_OFF_Q_FREE + 8)     /* mbarrier [2]: WG w's row sums are in lsum */
#define SM90_OFF_ZMASK_MC (SM90_OFF_L_READY + 16)        /* 2-CTA cluster: uint64 [2 stages][2 use parities] */
#define SM90_SMEM_USED (SM90_OFF_ZMASK_MC + 32)
#define SM90_SMEM_BYTES (SM90_SMEM_USED + 1024)
static_assert(SM90_SMEM_BYTES <= 232448, "64-row kernel: shared memory past the 227 KB an sm_90 CTA can have");
#define SM90_BAR_CONSUMERS 1 /* named barrier ids (0 is __syncthreads): WG0 + WG1 */
#define SM90_BAR_WG0 2       /* WG0 alone */
#define SM90_BAR_WG1 3       /* WG1 alone (kFF: its P_B tile is written) */
#define SM90_P_B_TILE 8      /* P_B is written over stage 1's RoPE tile */

#define SM90_LN2 0.69314718055994530942f

/* ======================================================================================
 * Device code (sm_90a pass only; the sm_80 pass compiles an empty kernel).
 * ====================================================================================== */
#if FMLA_SM90_DEVICE

/* `what` names the barrier in the debug message: 'F' full, 'E' empty, 'A' PA_ready, 'B' PB_ready,
 * 'R' PA_free. */
static __device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity, char what = '?') {
#if FMLA_SM90_DEBUG
  long long spins = 0;
  while (!mbarrier_try_wait_parity(bar, parity)) {
    if (++spins == (1ll << 28)) {
      printf("fmla sm90: mbarrier hang: block (%d,%d,%d) thread %d barrier '%c' smem 0x%x parity %u\n", blockIdx.x,
             blockIdx.y, blockIdx.z, threadIdx.x, what, bar, parity);
      __trap();
    }
  }
#else
  (void)what;
  while (!mbarrier_try_wait_parity(bar, parity)) {
  }
#endif
}

/* One segment of the part: the request i at position pos of the part order (params.h), n-blocks
 * [lo, hi), split index, clamped length L. */
typedef struct sm90_segment {
  int lo, hi, split, L;
} sm90_segment;

static __device__ __forceinline__ int sm90_clamped_len(const fmla_kernel_params &p, int i) {
  const long long cap = (long long)p.max_blocks_per_seq * p.page_size;
  long long L = p.cache_seqlens[i];
  L = L < 0 ? 0 : (L > cap ? cap : L);
  return (int)(L > 0x7fffffffll ? 0x7fffffffll : L);
}

static __device__ __forceinline__ sm90_segment sm90_get_segment(const fmla_kernel_params &p, const int *meta, int pos,
                                                                int i) {
  sm90_segment s;
  s.L = sm90_clamped_len(p, i);
  const int nb = (int)(((long long)s.L + FMLA_BLOCK_N - 1) / FMLA_BLOCK_N);
  s.lo = pos == meta[0] ? meta[1] : 0;
  s.hi = pos == meta[2] ? meta[3] : nb;
  s.hi = s.hi < nb ? s.hi : nb; /* the metadata saw unclamped lengths */
  s.lo = s.lo < 0 ? 0 : s.lo;
  s.lo = s.lo < s.hi ? s.lo : s.hi;
  s.split = pos == meta[0] ? meta[4] : 0;
  return s;
}

/* Keys [a, b) of a 64-key block as a bit mask (0 <= a <= b <= 64). */
static __device__ __forceinline__ uint64_t sm90_key_mask(int a, int b) {
  const uint64_t hi = b >= 64 ? ~0ull : ((1ull << b) - 1);
  const uint64_t lo = a >= 64 ? ~0ull : ((1ull << a) - 1);
  return hi & ~lo;
}

/* Column tiles of stage s in the order the producer fills them and S reads them: stage 0 starts
 * with the RoPE tile, the first one its consumers give back (right after S_A). */
template <int kFF = 0>
static __device__ __forceinline__ int sm90_tile_order(int stage, int j) {
  if (kFF && stage == 1) return j < 4 ? j + 4 : (j < 8 ? j - 4 : 8); /* kFF: freed first (v6.14) */
  return stage == 0 ? (j == 0 ? 8 : j - 1) : j;
}

/* A consumer's wait for a K tile. Gather mode (kG): the tile was written by cp.async (generic proxy)
 * and is read by wgmma (async proxy), and its writers arrive through cp.async.mbarrier.arrive.noinc
 * when their copies land, so they cannot fence after their writes: the reader fences after its
 * acquire instead, before its wgmma (the fence orders this thread's view across the proxies). */
template <int kG>
static __device__ __forceinline__ void sm90_wait_full(uint32_t bar, uint32_t parity) {
  mbar_wait(bar, parity, 'F');
  if (kG && !FMLA_SM90_PROBE_NOFENCE) fence_proxy_async_shared_cta();
}

/* ---- producer: one thread ---- */

/* Issue the TMA copies of n-block n of request i into stage `stage` (use number `use`), one tile
 * at a time as each tile's empty barrier lets it, and publish (before the stage's first tile) which
 * keys inside L sit on a page id outside [0, num_blocks): those are skipped (never read) and the
 * consumers treat them as zero keys. Pages past ceil(L/page) are never looked up. */
template <int kFF = 0>
static __device__ __forceinline__ void sm90_produce_block(const fmla_kernel_params &p, const CUtensorMap *map,
                                                          int i, int hk, int n, int L, int stage, uint32_t use,
                                                          uint32_t kbase, uint32_t full, uint32_t empty,
                                                          uint64_t *zmask_slot, uint64_t policy, int trk = -1,
                                                          uint32_t mc = 0, uint32_t rank = 0) {
  (void)trk;
  const int page = p.page_size;
  const int key0 = n * FMLA_BLOCK_N;
  const int in_len = L - key0 < 64 ? L - key0 : 64; /* keys of this block inside L, >= 1 */
  const int32_t *bt = p.block_table + (int64_t)i * p.block_table_stride;
  const uint32_t empty_parity = (use & 1) ^ 1;  /* a fresh barrier passes parity 1 at once */
  /* 2-CTA cluster, stage copied by the other CTA: our consumers give its tiles back on that CTA's
   * empty barriers, and we only raise our full barrier's byte count for each use, once its
   * previous phase is over (same parity as the empty wait). That bounds us to one use ahead of our
   * consumers only because no phase can complete without the other CTA's copy, which waits for
   * our consumers: so in a cluster every tile is copied, a page id outside [0, num_blocks) from
   * page 0 instead (its keys are masked to zero as always; the host clusters only when
   * num_blocks > 0). A phase of zero bytes would complete on our own arrival and let us run a
   * second use ahead, past a phase our consumers have not seen yet. */
  const uint32_t wait_base = mc && (uint32_t)stage != rank ? full : empty;
  if ((page & 63) == 0) { /* one 64-row box per tile */
    const int pidx = key0 / page;
    const int off = key0 - pidx * page;
    const int id = bt[pidx];
    const bool ok = (unsigned)id < (unsigned)p.num_blocks;
#pragma unroll 1
    for (int j = 0; j < SM90_NTILES; ++j) {
      const int t = sm90_tile_order<kFF>(stage, j);
      mbar_wait(wait_base + t * 8, empty_parity, 'E');
      if (j == 0) *zmask_slot = ok ? 0ull : sm90_key_mask(0, in_len);
      const uint32_t bar = full + t * 8;
#if FMLA_SM90_PROBE_NOLOAD /* single-CTA kernel only (FMLA_SM90_MCAST=0): zero-byte phases, see above */
      const bool cp = ok && use == 0;
#else
      const bool cp = ok || mc;
#endif
      mbarrier_arrive_expect_tx(bar, cp ? SM90_TILE_BYTES : 0u);
      if (mc) { /* 2-CTA cluster: stage s is copied by CTA s into both CTAs (the other only expects it) */
        if (cp && (uint32_t)stage == rank)
          cp_async_bulk_tensor_4d_g2s_mc(kbase + t * SM90_TILE_BYTES, map, t * 64, hk, off, ok ? id : 0, bar,
                                         (uint16_t)3, policy);
      } else if (cp) {
        cp_async_bulk_tensor_4d_g2s(kbase + t * SM90_TILE_BYTES, map, t * 64, hk, off, id, bar, policy);
      }
      SM90_TR(trk, 4 + 2 * stage + (j == 4), j == 0 || j == 4);
    }
  } else {
    /* Boxes of g = gcd(page, 64) rows (16 or 32: pages 16, 32, 48, 80, 96, ...; the host sends
     * smaller g to gather mode): a box never straddles a page, 64 / g boxes per tile. */
    const int g = page & -page; /* sm90_box_rows(page) below 64: 16 or 32 here */
    const int nbox = 64 / g;    /* 4 or 2 */
    int ids[4], offs[4]; /* fully unrolled loops below: stays in registers */
    uint32_t okbits = 0; /* boxes to copy: valid pages (in a cluster every page inside L, bad ones from page 0) */
    uint64_t zm = 0;
#pragma unroll
    for (int bx = 0; bx < 4; ++bx) {
      const int tok = key0 + bx * g;
      const int pidx = tok / page;
      ids[bx] = 0;
      offs[bx] = tok - pidx * page;
      if (bx >= nbox || tok >= L) continue; /* wholly past L: masked, never looked up */
      const int id = bt[pidx];
      if (mc) okbits |= 1u << bx;
      if ((unsigned)id < (unsigned)p.num_blocks) {
        ids[bx] = id;
        okbits |= 1u << bx;
      } else {
        const int a = bx * g, b = a + g < in_len ? a + g : in_len;
        if (a < b) zm |= sm90_key_mask(a, b);
      }
    }
    const uint32_t box_bytes = (uint32_t)g * 128u;
    const uint32_t bytes = (uint32_t)__popc(okbits) * box_bytes;
#pragma unroll 1
    for (int j = 0; j < SM90_NTILES; ++j) {
      const int t = sm90_tile_order<kFF>(stage, j);
      mbar_wait(wait_base + t * 8, empty_parity, 'E');
      if (j == 0) *zmask_slot = zm;
      const uint32_t bar = full + t * 8;
      mbarrier_arrive_expect_tx(bar, bytes);
      if (mc && (uint32_t)stage != rank) continue; /* the other CTA copies this stage into both */
#pragma unroll
      for (int bx = 0; bx < 4; ++bx)
        if (okbits >> bx & 1) {
          if (mc)
            cp_async_bulk_tensor_4d_g2s_mc(kbase + t * SM90_TILE_BYTES + bx * box_bytes, map, t * 64, hk, offs[bx],
                                           ids[bx], bar, (uint16_t)3, policy);
          else
            cp_async_bulk_tensor_4d_g2s(kbase + t * SM90_TILE_BYTES + bx * box_bytes, map, t * 64, hk, offs[bx], ids[bx],
                                        bar, policy);
        }
    }
  }
}

/* ---- producer, gather mode (v6.10): page sizes TMA cannot box (not 16, 32 or a multiple of 64,
 * e.g. 1) ----
 * The 128 threads of a producer warpgroup (in the 64-row kernel and, v6.11, in the narrow kernel,
 * where a single warp gathered at about half that rate) copy n-block n's 64 key rows with 16-byte
 * cp.async: thread wt takes the 16-byte chunk c = wt & 7 of each 128-byte tile row, rows
 * r = (wt >> 3) + 16 k (k = 0..3), into the same swizzled tile image the TMA path writes (each warp
 * instruction reads four whole 128-byte row segments). Keys past L and keys on a page id outside [0, num_blocks) are
 * zero-filled without a read: a zero K and V row scores 0 and adds no value, the reference's
 * semantics for bad pages, so the bad-page mask stays 0; block-table entries past L are never read.
 * A tile is full when all 128 threads have arrived (count 128). v6.11: each thread's arrival is a
 * cp.async.mbarrier.arrive.noinc right behind its copies of the tile, which the hardware makes once
 * they have landed, so no thread waits for its own copies and a thread runs ahead to the next
 * tile's empty barrier at once (nothing is held: the deadlock a thread holding arrivals across
 * blocks could cause cannot occur). The writers cannot fence after copies they do not wait for, so
 * the consumers take the proxy fence after their full-barrier acquire, before their wgmma
 * (sm90_wait_full<1>). Measured against v6.10's writer-side pattern (wait for the copies 4 tiles
 * back, fence, arrive; drain per block; in git at a89c3c8 as FMLA_SM90_GATHER_NOINC=0): 1.42-1.58x
 * on the page-1 cases with 64-256 rows (H200, perf-notes, ninth session), outputs bit-identical. */
static __device__ __forceinline__ void sm90_gather_block(const fmla_kernel_params &p, int i, int hk, int n, int L,
                                                         int stage, uint32_t use, uint32_t kbase, uint32_t full,
                                                         uint32_t empty, int wt, int only_pb = 0) {
  constexpr int kStep = 16; /* rows a warpgroup's instruction covers: 128 threads / 8 chunks per row */
  constexpr int kRows = 4;  /* rows per thread */
  const int page = p.page_size;
  const int c = wt & 7, r0 = wt >> 3;
  const char *kc = (const char *)p.k_cache;
  const int32_t *bt = p.block_table + (int64_t)i * p.block_table_stride;
  const char *src[kRows];
  uint32_t ok = 0; /* bit k: row r0 + kStep k is read (else zero-filled) */
#pragma unroll
  for (int k = 0; k < kRows; ++k) {
    const int key = n * FMLA_BLOCK_N + r0 + kStep * k;
    src[k] = kc;
    if (key < L) {
      const int pidx = key / page;
      const int id = bt[pidx];
      if ((unsigned)id < (unsigned)p.num_blocks) {
        src[k] = kc + 2 * ((int64_t)id * p.k_block_stride + (int64_t)(key - pidx * page) * p.k_token_stride +
                           (int64_t)hk * p.k_head_stride) + 16 * c;
        ok |= 1u << k;
      }
    }
  }
  const uint32_t empty_parity = (use & 1) ^ 1;
#pragma unroll 1
  for (int j = only_pb ? SM90_NTILES - 1 : 0; j < SM90_NTILES; ++j) { /* only_pb: stage 1's last tile, P_B's */
    const int t = sm90_tile_order(stage, j);
    mbar_wait(empty + t * 8, empty_parity, 'E');
    const uint32_t tile = kbase + t * SM90_TILE_BYTES;
#pragma unroll
    for (int k = 0; k < kRows; ++k) {
      const int r = r0 + kStep * k;
      cp_async_cg_16_zfill(tile + r * 128 + ((c ^ (r & 7)) << 4), src[k] + t * 128, (ok >> k & 1) ? 16u : 0u);
    }
    cp_async_mbarrier_arrive_noinc(full + t * 8); /* arrives once these copies (and all before) land */
  }
}

/* Gather mode, 2-CTA cluster: the stage the other CTA gathers and sends (tile by tile, from its
 * consumers: sm90_qk). Thread 0 raises each tile's byte count once the tile's previous phase is over
 * (nothing can then be sent for this use before it: the sender waits for our consumers' release of
 * the previous use on its empty barrier). Stage 1's P_B tile is gathered here instead. */
static __device__ __forceinline__ void sm90_gather_receive(uint32_t full, int stage, uint32_t use, int wt) {
  if (wt != 0) return;
#pragma unroll 1
  for (int j = 0; j < SM90_NTILES; ++j) {
    const int t = sm90_tile_order(stage, j);
    if (stage == 1 && t == SM90_P_B_TILE) continue;
    mbar_wait(full + t * 8, (use & 1) ^ 1, 'E');
    mbarrier_arrive_expect_tx(full + t * 8, SM90_TILE_BYTES);
  }
}

/* The bad-page mask of stage `stage` at use `use`: one slot per stage, or in a 2-CTA cluster one per
 * stage and use parity (the CTA that does not copy a stage may run a use ahead of its consumers). */
template <int kMc>
static __device__ __forceinline__ uint64_t *sm90_zmask_base(uint8_t *smem) {
  return (uint64_t *)(smem + (kMc ? SM90_OFF_ZMASK_MC : SM90_OFF_ZMASK));
}
template <int kMc>
static __device__ __forceinline__ int sm90_zmask_idx(int stage, uint32_t use) {
  return kMc ? 2 * stage + (int)(use & 1) : stage;
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

/* One arrival per warp on barriers [first, first + n) of a stage (empty barriers count warps). In a
 * 2-CTA cluster (kMc) on the barriers of the CTA that copies the stage for both (CTA `owner`, which
 * may be this one): its empty barriers count both CTAs' warps. */
template <int kMc>
static __device__ __forceinline__ void sm90_release(uint32_t empty, int first, int n, int lane, uint32_t owner) {
  if (lane == 0)
    for (int t = first; t < first + n; ++t) {
      if (kMc)
        mbarrier_arrive_remote(empty + t * 8, owner);
      else
        mbarrier_arrive(empty + t * 8);
    }
}

/* S = Q K^T over all 64 keys of one stage: 9 tiles x 4 k-steps of m64n64k16, tiles in the stage's
 * fill order, each tile's full barrier waited just before its k-steps. Q tile t and K tile t are
 * both K-major (k-step kk is +32 bytes inside the 128-byte row); SBO = 1024 (next 8 rows). */
template <int kFp16, int kStage, int kG, int kFF = 0>
static __device__ __forceinline__ void sm90_qk(float *s, uint32_t sQ, uint32_t kbase, uint32_t full, uint32_t parity,
                                              const uint32_t *q8, bool push = false, uint32_t peer = 0) {
  const uint64_t dq = wgmma_desc_sw128(sQ, 16, 1024);
  const uint64_t dk = wgmma_desc_sw128(kbase, 16, 1024);
#pragma unroll
  for (int j = 0; j < SM90_NTILES; ++j) {
    const int t = sm90_tile_order<kFF>(kStage, j); /* a constant: both arguments are */
    sm90_wait_full<kG>(full + t * 8, parity);
    /* Gather mode in a 2-CTA cluster: the CTA that gathered this stage sends each tile on to the
     * other CTA as soon as it is full here (stage 1's RoPE tile excepted: P_B overwrites it, and
     * both CTAs gather it themselves; see sm90_producer_gather). */
    if (kG && push && (kStage == 0 || t != SM90_P_B_TILE))
      cp_async_bulk_s2s_remote(kbase + t * SM90_TILE_BYTES, kbase + t * SM90_TILE_BYTES, SM90_TILE_BYTES, full + t * 8,
                               peer);
    wgmma_fence(); /* ptxas would inject it anyway (C7519) after the wait loop's branch */
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint64_t off = (uint64_t)((t * SM90_TILE_BYTES + kk * 32) >> 4);
      if (t == 8)
        wgmma_m64n64k16_rs<kFp16>(s, q8 + 4 * kk, dk + off, j != 0 || kk != 0);
      else
        wgmma_m64n64k16_ss<kFp16>(s, dq + off, dk + off, j != 0 || kk != 0);
    }
  }
  wgmma_commit_group();
}

/* O[:, 256*half .. +256] += P V: 4 k-steps (16 keys each) of m64n256k16. A = P (K-major, +32 bytes
 * per k-step); B = V columns 256*half.. = K tiles 4half..4half+3, MN-major: LBO = 8192 (next 64
 * columns = next tile), SBO = 1024 (next 8 keys), k-step = 16 keys = +2048 bytes. */
template <int kFp16>
static __device__ __forceinline__ void sm90_pv(float *o, uint32_t sP, uint32_t kbase, int half) {
  const uint64_t dp = wgmma_desc_sw128(sP, 16, 1024);
  const uint64_t dv = wgmma_desc_sw128(kbase + half * 4 * SM90_TILE_BYTES, SM90_TILE_BYTES, 1024);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    wgmma_m64n256k16_ss<kFp16, 0, 1>(o, dp + (uint64_t)(kk * 2), dv + (uint64_t)(kk * 128), 1);
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

/* Epilogue stores of one row of a WG's O half (o[4cc + 2h + e] = row r0 + 8h, column 8cc + 2q + e of
 * the half, q = lane % 4), as 16-byte stores: per group of 4 column chunks (cc = 4j + u) the quad
 * transposes its 4 x 4 (chunk u, thread q) pairs in two butterfly steps (shuffles over lane ^ 1, then
 * lane ^ 2), after which thread q holds columns 8(4j + q) .. + 7 (bf16/fp16: 16 bytes) or, for fp32,
 * after the first step, columns 8(4j + u) + 4(q / 2) .. + 3 for u = q % 2 and q % 2 + 2. A warp's
 * store then writes 64 or 32 contiguous bytes per row instead of 16 or 32 with 4x / 2x the
 * instructions: the epilogue was bound by the LSU's one line per row per store (dev/cta_trace.py). */
template <int kFp16>
static __device__ __forceinline__ void sm90_store_row16(char *row, const float *o, int h, float inv, int quad,
                                                        bool valid) {
  const int b = quad & 1, c = quad >> 1;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    uint32_t w[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) w[u] = sm90_pack2(o[4 * (4 * j + u) + 2 * h] * inv, o[4 * (4 * j + u) + 2 * h + 1] * inv, kFp16);
    const uint32_t r0 = __shfl_xor_sync(0xffffffffu, b ? w[0] : w[1], 1);
    const uint32_t r1 = __shfl_xor_sync(0xffffffffu, b ? w[2] : w[3], 1);
    const uint32_t k0 = b ? w[1] : w[0], k1 = b ? w[3] : w[2];
    /* x[v]: columns 8(4j + b + 2v) + 4c .. + 3 as (lo, hi) */
    const uint32_t x0lo = b ? r0 : k0, x0hi = b ? k0 : r0, x1lo = b ? r1 : k1, x1hi = b ? k1 : r1;
    const uint32_t slo = c ? x0lo : x1lo, shi = c ? x0hi : x1hi; /* send x[c ^ 1] */
    const uint32_t glo = __shfl_xor_sync(0xffffffffu, slo, 2), ghi = __shfl_xor_sync(0xffffffffu, shi, 2);
    const uint32_t klo = c ? x1lo : x0lo, khi = c ? x1hi : x0hi; /* keep x[c]: unit b + 2c = quad */
    uint4 v;
    v.x = c ? glo : klo;
    v.y = c ? ghi : khi;
    v.z = c ? klo : glo;
    v.w = c ? khi : ghi;
    if (valid) *(uint4 *)(row + 2 * 8 * (4 * j + quad)) = v;
  }
}

static __device__ __forceinline__ void sm90_store_row32(float *row, const float *o, int h, float inv, int quad,
                                                        bool valid) {
  const int b = quad & 1, c = quad >> 1;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    float2 f[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) f[u] = make_float2(o[4 * (4 * j + u) + 2 * h] * inv, o[4 * (4 * j + u) + 2 * h + 1] * inv);
#pragma unroll
    for (int v = 0; v < 2; ++v) {
      const float2 send = b ? f[2 * v] : f[2 * v + 1], keep = b ? f[2 * v + 1] : f[2 * v];
      float2 got;
      got.x = __shfl_xor_sync(0xffffffffu, send.x, 1);
      got.y = __shfl_xor_sync(0xffffffffu, send.y, 1);
      const float4 out = b ? make_float4(got.x, got.y, keep.x, keep.y) : make_float4(keep.x, keep.y, got.x, got.y);
      if (valid) *(float4 *)(row + 8 * (4 * j + 2 * v + b) + 4 * c) = out;
    }
  }
}

/* This thread's P values (rows r0 = 16*warp + lane/4 and r0 + 8, keys 8c + 2*(lane%4) + {0,1})
 * into the swizzled K-major P tile: key chunk c of row r sits at chunk c ^ (r % 8). The 8 rows of
 * a store land in 8 different chunks: no bank conflict. */
template <int kFp16>
static __device__ __forceinline__ void sm90_store_p(uint32_t sP, const float *s, int r0, int quad) {
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    const uint32_t a0 = sP + r0 * 128 + ((c ^ (r0 & 7)) << 4) + 4 * quad;
    const uint32_t a1 = sP + (r0 + 8) * 128 + ((c ^ ((r0 + 8) & 7)) << 4) + 4 * quad;
    st_shared_b32(a0, sm90_pack2(s[4 * c + 0], s[4 * c + 1], kFp16));
    st_shared_b32(a1, sm90_pack2(s[4 * c + 2], s[4 * c + 3], kFp16));
  }
}

/* Mask S (unscaled; negated for a negative scale): keys on a bad page score 0, keys past the row's
 * limit -inf. Returns the quad-reduced row maxima of the thread's two rows in log2 units (times
 * sl2 = |scale| log2(e)); sm90_exp applies the scale to each score inside exp2's FFMA. */
template <int kTree>
static __device__ __forceinline__ void sm90_mask_scale(float *s, uint64_t zm, int key0, int lim0, int lim1, float sl2,
                                                       bool neg, int quad, float &mx0, float &mx1) {
  mx0 = -INFINITY;
  mx1 = -INFINITY;
  if (neg) /* a negative softmax scale: s * scale = (-s) * |scale| */
#pragma unroll
    for (int j = 0; j < 32; ++j) s[j] = -s[j];
  if (zm == 0 && key0 + 64 <= (lim0 < lim1 ? lim0 : lim1)) { /* the common whole block */
    if (kTree) {
      sm90_tree_max(s, mx0, mx1);
    } else {
#pragma unroll
      for (int c = 0; c < 8; ++c)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          mx0 = fmaxf(mx0, s[4 * c + e]);
          mx1 = fmaxf(mx1, s[4 * c + 2 + e]);
        }
    }
  } else {
#pragma unroll
    for (int c = 0; c < 8; ++c)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int kb = 8 * c + 2 * quad + e;
        const bool z = (zm >> kb) & 1;
        float v0 = z ? 0.f : s[4 * c + e];
        float v1 = z ? 0.f : s[4 * c + 2 + e];
        v0 = key0 + kb < lim0 ? v0 : -INFINITY;
        v1 = key0 + kb < lim1 ? v1 : -INFINITY;
        s[4 * c + e] = v0;
        s[4 * c + 2 + e] = v1;
        if (!kTree) {
          mx0 = fmaxf(mx0, v0);
          mx1 = fmaxf(mx1, v1);
        }
      }
    if (kTree) sm90_tree_max(s, mx0, mx1);
  }
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
  /* sl2 > 0, so max(s) * sl2 == max(s * sl2), bit for bit */
  mx0 = mx0 == -INFINITY ? mx0 : mx0 * sl2;
  mx1 = mx1 == -INFINITY ? mx1 : mx1 * sl2;
}

/* Reference point of a running max: a row that has seen no key yet (-inf) uses 0, so exp2 never
 * sees -inf - -inf. O and l of such a row are 0, so any finite reference is right. */
static __device__ __forceinline__ float sm90_ref(float m) { return m == -INFINITY ? 0.f : m; }

/* s <- exp2(s * sl2 - R) in place (one FFMA and one MUFU per score), partial row sums of the
 * thread's columns. */
static __device__ __forceinline__ void sm90_exp(float *s, float sl2, float R0, float R1, float &ps0, float &ps1) {
  ps0 = 0.f;
  ps1 = 0.f;
#pragma unroll
  for (int c = 0; c < 8; ++c)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      s[4 * c + e] = ex2_approx_ftz(fmaf(s[4 * c + e], sl2, -R0));
      s[4 * c + 2 + e] = ex2_approx_ftz(fmaf(s[4 * c + 2 + e], sl2, -R1));
      ps0 += s[4 * c + e];
      ps1 += s[4 * c + 2 + e];
    }
}

static __device__ __forceinline__ void sm90_fence_o(float *o) {
#pragma unroll
  for (int k = 0; k < 128; ++k) fence_operand(o[k]);
}
static __device__ __forceinline__ void sm90_fence_s(float *s) {
#pragma unroll
  for (int k = 0; k < 32; ++k) fence_operand(s[k]);
}

/* V rows of a stage that must read as zero (past L, or on a bad page): whole 128-byte rows of the
 * 8 V tiles, so the swizzle (which permutes chunks inside a row) does not matter. wt = 0..127. */
static __device__ __forceinline__ void sm90_zero_v(uint32_t kbase, uint64_t bad, int wt) {
  for (int idx = wt; idx < 64 * 64; idx += 128) {
    const int row = idx >> 6, ch = idx & 63;
    if ((bad >> row) & 1) st_shared_v4_zero(kbase + (ch >> 3) * SM90_TILE_BYTES + row * 128 + (ch & 7) * 16);
  }
}


/* Q's tile 8 (RoPE) as the A fragments of S's tile-8 k-steps (RS wgmma: 4 of S's 36 k-steps read
 * 2 KB less shared memory each), loaded once per segment: rows r0 and r0 + 8, columns 16kk + 2q
 * (+8) of the 128-byte-swizzled tile (chunk ch of row r at ch ^ (r % 8)). 16 registers. */
static __device__ __forceinline__ void sm90_load_q8(uint32_t sQ, int r0, int quad, bool any, uint32_t *q8) {
#pragma unroll
  for (int kk = 0; kk < 16; ++kk) q8[kk] = 0u;
  if (!any) return;
  const uint32_t t8 = sQ + 8 * SM90_TILE_BYTES;
  const int r1 = r0 + 8;
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int ch = 2 * kk + h;
      q8[4 * kk + 2 * h + 0] = ld_shared_b32(t8 + r0 * 128 + ((ch ^ (r0 & 7)) << 4) + 4 * quad);
      q8[4 * kk + 2 * h + 1] = ld_shared_b32(t8 + r1 * 128 + ((ch ^ (r1 & 7)) << 4) + 4 * quad);
    }
}

/* What the two consumer WGs share: smem addresses, this thread's rows and limits. */
typedef struct sm90_ctx {
  uint32_t sQ, sK0, sK1, sPA, sPB, full0, full1, empty0, empty1, pa_ready, mb_ready, pb_ready, pa_free, q_free;
  float *sMA, *sMB;
  const volatile uint64_t *zmask;
  float sl2;  /* |scale * log2(e)|, at least FLT_MIN; the sign in neg */
  bool neg;
  int L, lim0, lim1, r0, r1, quad, lane, wt; /* wt: thread index inside the WG */
  uint32_t rank;                              /* in the 2-CTA cluster (0 without one) */
} sm90_ctx;

/* A consumer WG gives back stage 1's P_B tile (the RoPE tile, then P_B). In a 2-CTA cluster with
 * TMA it goes back to the CTA that copies stage 1 (CTA 1); in gather mode every CTA gathers that
 * tile itself (sm90_producer_gather), so it goes back to its own barrier. */
template <int kMc, int kG>
static __device__ __forceinline__ void sm90_release_pb(uint32_t empty1, int lane) {
  sm90_release<(kMc && !kG)>(empty1, SM90_P_B_TILE, 1, lane, 1);
}

/* WG0 over one segment: S of every A block, O[:, 0:256]. k = pairs so far in the CTA (stage 0 use,
 * PA phases), pb = pairs with a B so far (stage 1 use, PB phase). */
template <int kFp16, int kMc, int kG, int kFF>
static __device__ __forceinline__ void sm90_wg0_segment(const sm90_ctx &c, const sm90_segment &seg, float *o,
                                                        const uint32_t *q8,
                                                        float &m0, float &m1, float &l0, float &l1, uint32_t &k,
                                                        uint32_t &pb) {
  bool pend_b = false; /* PV_B_L in flight: its stage 1 tiles go back after the next wait */
  for (int n = seg.lo; n < seg.hi; n += 2, ++k) {
    const bool has_b = n + 1 < seg.hi;
    const uint32_t par0 = k & 1;
    float s[32];
    SM90_TR(k, 8, c.wt == 0);
    mbar_wait(c.full0 + 8 * 8, par0, 'F');
    SM90_TR(k, 9, c.wt == 0);
    const uint64_t zm = c.zmask[sm90_zmask_idx<kMc>(0, k)]; /* read before tile 8 goes back: the producer rewrites it then */
    if (pend_b) {
      /* The previous pair's PV_B_L: finish it before S_A, so stage 1's V[:, 0:256] and P_B tiles go
       * back a whole S earlier and the producer's next K_B load starts that much sooner. (Waiting
       * inside the S chain instead makes ptxas serialize every wgmma: C7520.) */
      wgmma_wait<0>();
      sm90_fence_o(o);
      sm90_release<kMc>(c.empty1, 0, 4, c.lane, 1);
      sm90_release_pb<kMc, kG>(c.empty1, c.lane);
      pend_b = false;
      SM90_TR(k, 15, c.wt == 0);
    }
    sm90_qk<kFp16, 0, kG>(s, c.sQ, c.sK0, c.full0, par0, q8, kMc && c.rank == 0 && c.wt == 0, 1);
    wgmma_wait<0>(); /* S_A */
    SM90_TR(k, 10, c.wt == 0);
    if (n + 2 >= seg.hi && c.lane == 0) mbarrier_arrive(c.q_free); /* this warp's last Q read of the segment */
    sm90_fence_s(s);
    sm90_fence_o(o);
    sm90_release<kMc>(c.empty0, 8, 1, c.lane, 0); /* the RoPE tile is dead after S */

    float mx0, mx1;
    sm90_mask_scale<!kFF>(s, zm, n * 64, c.lim0, c.lim1, c.sl2, c.neg, c.quad, mx0, mx1);
    const float ma0 = fmaxf(m0, mx0), ma1 = fmaxf(m1, mx1);
    const float ra0 = sm90_ref(ma0), ra1 = sm90_ref(ma1);
    const float aa0 = ex2_approx_ftz(m0 - ra0), aa1 = ex2_approx_ftz(m1 - ra1);
    float ps0, ps1;
    sm90_exp(s, c.sl2, ra0, ra1, ps0, ps1);
    SM90_TR(k, 24, c.wt == 0);

    mbar_wait(c.pa_free, par0 ^ 1, 'R'); /* WG1's PV_A_R of the previous pair has read sPA, sMA */
    sm90_store_p<kFp16>(c.sPA, s, c.r0, c.quad);
    SM90_TR(k, 25, c.wt == 0);
    if (c.quad == 0) {
      c.sMA[c.r0] = ma0;
      c.sMA[c.r1] = ma1;
    }
    const int in_len = c.L - n * 64;
    const uint64_t bad = zm | (in_len >= 64 ? 0ull : sm90_key_mask(in_len, 64));
    if (!kG && bad) sm90_zero_v(c.sK0, bad, c.wt); /* gather mode zero-filled them */
    fence_proxy_async_shared_cta(); /* P_A and zeroed V rows are read by wgmma (async proxy) */
    SM90_TR(k, 26, c.wt == 0);
    bar_sync(SM90_BAR_WG0, 128);    /* the whole P_A tile is written (the wgmma reads all rows) */
    SM90_TR(k, 27, c.wt == 0);
    /* The sMA writers arrive themselves (count 32): each write is ordered to WG1's reads directly,
     * not through bar.sync cumulativity, which racecheck does not model. */
    if (c.quad == 0) mbarrier_arrive(c.pa_ready);
    SM90_TR(k, 11, c.wt == 0);

    sm90_rescale(o, aa0, aa1);
    l0 = l0 * aa0 + ps0;
    l1 = l1 * aa1 + ps1;
    sm90_pv<kFp16>(o, c.sPA, c.sK0, 0);

    if (has_b) {
      const uint32_t par1 = pb & 1;
      /* m_B comes ~one softmax before P_B (WG1 publishes it before its exp): retire PV_A_L, give
       * V_A[:, 0:256] back and rescale O_L to m_B now, under WG1's exp, so that PV_B_L is queued as
       * soon as P_B lands. Quad leaders read what WG1's quad leaders wrote (and arrived on). */
      mbar_wait(c.mb_ready, par1, 'M');
      SM90_TR(k, 12, c.wt == 0);
      float mb0 = c.quad == 0 ? c.sMB[c.r0] : 0.f, mb1 = c.quad == 0 ? c.sMB[c.r1] : 0.f;
      mb0 = __shfl_sync(0xffffffffu, mb0, c.lane & ~3);
      mb1 = __shfl_sync(0xffffffffu, mb1, c.lane & ~3);
      const float ab0 = ex2_approx_ftz(ma0 - sm90_ref(mb0)), ab1 = ex2_approx_ftz(ma1 - sm90_ref(mb1));
      wgmma_wait<0>();
      sm90_fence_o(o);
      sm90_release<kMc>(c.empty0, 0, 4, c.lane, 0);
      if (__any_sync(0xffffffffu, (mb0 != ma0) | (mb1 != ma1))) sm90_rescale(o, ab0, ab1); /* some row's max moved */
      sm90_fence_o(o); /* the FMULs stay here, before the wait (ptxas would sink them to PV_B_L) */
      l0 *= ab0;
      l1 *= ab1;
      m0 = mb0;
      m1 = mb1;
      mbar_wait(c.pb_ready, par1, 'B');
      SM90_TR(k, 13, c.wt == 0);
      /* Already complete (the producer cannot refill them before we give them back); makes the
       * TMA writes of V_B[:, 0:256] visible to this WG's wgmma too. */
#pragma unroll
      for (int t = 0; t < 4; ++t) sm90_wait_full<kG>(c.full1 + t * 8, par1);
      sm90_pv<kFp16>(o, c.sPB, c.sK1, 0);
      SM90_TR(k, 14, c.wt == 0);
      pend_b = true;
      ++pb;
    } else {
      m0 = ma0;
      m1 = ma1;
      wgmma_wait<0>();
      sm90_release<kMc>(c.empty0, 0, 4, c.lane, 0);
    }
  }
  wgmma_wait<0>();
  sm90_fence_o(o);
  if (pend_b) {
    sm90_release<kMc>(c.empty1, 0, 4, c.lane, 1);
    sm90_release_pb<kMc, kG>(c.empty1, c.lane);
  }
}

/* WG1: wait for WG0's P_A (and for the TMA writes of V_A[:, 256:512] to be visible to this WG's
 * wgmma: those full barriers are already complete), then take m_A: quad leaders read what WG0's
 * quad leaders wrote and share it in the quad. */
template <int kG>
static __device__ __forceinline__ void sm90_wg1_take_pa(const sm90_ctx &c, uint32_t par0, float &ma0, float &ma1) {
  mbar_wait(c.pa_ready, par0, 'A');
#pragma unroll
  for (int t = 4; t < 8; ++t) sm90_wait_full<kG>(c.full0 + t * 8, par0);
  ma0 = c.quad == 0 ? c.sMA[c.r0] : 0.f;
  ma1 = c.quad == 0 ? c.sMA[c.r1] : 0.f;
  ma0 = __shfl_sync(0xffffffffu, ma0, c.lane & ~3);
  ma1 = __shfl_sync(0xffffffffu, ma1, c.lane & ~3);
}

/* WG1 over one segment: S of every B block, O[:, 256:512]. Same counters as WG0. */
template <int kFp16, int kMc, int kG, int kFF>
static __device__ __forceinline__ void sm90_wg1_segment(const sm90_ctx &c, const sm90_segment &seg, float *o,
                                                        const uint32_t *q8,
                                                        float &m0, float &m1, float &l0, float &l1, uint32_t &k,
                                                        uint32_t &pb) {
  bool pend_b = false; /* PV_B_R in flight */
  for (int n = seg.lo; n < seg.hi; n += 2, ++k) {
    const bool has_b = n + 1 < seg.hi;
    const uint32_t par0 = k & 1;
    /* Stage 1 from the previous pair goes back before we wait for its next fill. */
    SM90_TR(k, 16, c.wt == 0);
    wgmma_wait<0>(); /* unconditional (a no-op without pend_b): ptxas must see O_R retired here (C7514) */
    if (pend_b) {
      sm90_release<kMc>(c.empty1, 4, 4, c.lane, 1);
      sm90_release_pb<kMc, kG>(c.empty1, c.lane);
      pend_b = false;
    }
    SM90_TR(k, 17, c.wt == 0);
    /* The last pair without a B: this WG's S reads of the segment are over (the earlier S_B waited). */
    if (n + 2 >= seg.hi && !has_b && c.lane == 0) mbarrier_arrive(c.q_free);
    if (has_b) {
      const uint32_t par1 = pb & 1;
      float s[32];
      mbar_wait(c.full1 + sm90_tile_order<kFF>(1, 0) * 8, par1, 'F');
      SM90_TR(k, 18, c.wt == 0);
      const uint64_t zm = c.zmask[sm90_zmask_idx<kMc>(1, pb)];
      sm90_qk<kFp16, 1, kG, kFF>(s, c.sQ, c.sK1, c.full1, par1, q8, kMc && c.rank == 1 && c.wt == 0, 0);
      /* While S_B runs: take P_A and m_A, rescale O_R to m_A and queue PV_A_R behind S_B, so the
       * tensor cores have PV_A_R to run during this WG's softmax of B (O_R is free: the previous
       * PV_B_R retired at the loop top). */
      float ma0, ma1;
      sm90_wg1_take_pa<kG>(c, par0, ma0, ma1);
      SM90_TR(k, 20, c.wt == 0);
      const float aa0 = ex2_approx_ftz(m0 - sm90_ref(ma0)), aa1 = ex2_approx_ftz(m1 - sm90_ref(ma1));
      sm90_fence_o(o);
      sm90_rescale(o, aa0, aa1);
      sm90_pv<kFp16>(o, c.sPA, c.sK0, 1);
      wgmma_wait<1>(); /* S_B (PV_A_R keeps running) */
      SM90_TR(k, 19, c.wt == 0);
      if (n + 2 >= seg.hi && c.lane == 0) mbarrier_arrive(c.q_free); /* this warp's last Q read */
      sm90_fence_s(s);

      float mx0, mx1;
      sm90_mask_scale<!kFF>(s, zm, (n + 1) * 64, c.lim0, c.lim1, c.sl2, c.neg, c.quad, mx0, mx1);
      const float mb0 = fmaxf(ma0, mx0), mb1 = fmaxf(ma1, mx1);
      /* m_B goes out before the exp (WG0 rescales O_L under it); the sMB writers arrive, count 32. */
      if (c.quad == 0) {
        c.sMB[c.r0] = mb0;
        c.sMB[c.r1] = mb1;
        mbarrier_arrive(c.mb_ready);
      }
      const float rb0 = sm90_ref(mb0), rb1 = sm90_ref(mb1);
      const float ab0 = ex2_approx_ftz(ma0 - rb0), ab1 = ex2_approx_ftz(ma1 - rb1);
      float ps0, ps1;
      sm90_exp(s, c.sl2, rb0, rb1, ps0, ps1);
      SM90_TR(k, 28, c.wt == 0);

      sm90_store_p<kFp16>(c.sPB, s, c.r0, c.quad);
      SM90_TR(k, 29, c.wt == 0);
      const int in_len = c.L - (n + 1) * 64;
      const uint64_t bad = zm | (in_len >= 64 ? 0ull : sm90_key_mask(in_len, 64));
      if (!kG && bad) sm90_zero_v(c.sK1, bad, c.wt);
      fence_proxy_async_shared_cta();
      /* Every WG1 thread publishes its own P_B rows and zeroed V rows (count 128). kFF: only once
       * PV_B_R is queued (below), so that PV_B_R runs ahead of PV_B_L and V_B[:, 256:512], which
       * the freed-first order refills first, comes back first; then WG1 syncs on a named barrier
       * for its own PV_B_R instead. */
      if (kFF)
        bar_sync(SM90_BAR_WG1, 128);
      else
        mbarrier_arrive(c.pb_ready);
      SM90_TR(k, 21, c.wt == 0);
      /* PV_A_R (queued behind S_B) has retired by now: V_A[:, 256:512], sPA and sMA go back before
       * PV_B_R is queued rather than after, so the producer's next stage 0 fill starts sooner. */
      wgmma_wait<0>();
      sm90_fence_o(o);
      SM90_TR(k, 23, c.wt == 0);
      sm90_release<kMc>(c.empty0, 4, 4, c.lane, 0);
      if (c.quad == 0) mbarrier_arrive(c.pa_free); /* the sMA readers, count 32 */
      if (__any_sync(0xffffffffu, (mb0 != ma0) | (mb1 != ma1))) sm90_rescale(o, ab0, ab1); /* some row's max moved */
      sm90_fence_o(o);
      l0 = l0 * aa0 * ab0 + ps0;
      l1 = l1 * aa1 * ab1 + ps1;
      m0 = mb0;
      m1 = mb1;
      if (!kFF) mbar_wait(c.pb_ready, par1, 'B'); /* the whole P_B tile (all of WG1's rows) is written */
      sm90_pv<kFp16>(o, c.sPB, c.sK1, 1);
      if (kFF) mbarrier_arrive(c.pb_ready);
      SM90_TR(k, 22, c.wt == 0);
      pend_b = true;
      ++pb;
    } else {
      sm90_fence_o(o);
      float ma0, ma1;
      sm90_wg1_take_pa<kG>(c, par0, ma0, ma1);
      const float aa0 = ex2_approx_ftz(m0 - sm90_ref(ma0)), aa1 = ex2_approx_ftz(m1 - sm90_ref(ma1));
      sm90_rescale(o, aa0, aa1);
      l0 *= aa0;
      l1 *= aa1;
      m0 = ma0;
      m1 = ma1;
      sm90_pv<kFp16>(o, c.sPA, c.sK0, 1);
      wgmma_wait<0>();
      sm90_release<kMc>(c.empty0, 4, 4, c.lane, 0);
      if (c.quad == 0) mbarrier_arrive(c.pa_free); /* the sMA readers, count 32 */
    }
  }
  wgmma_wait<0>();
  sm90_fence_o(o);
  if (pend_b) {
    sm90_release<kMc>(c.empty1, 4, 4, c.lane, 1);
    sm90_release_pb<kMc, kG>(c.empty1, c.lane);
  }
}

template <int kFp16, int kMc, int kG, int kFF>
static __device__ __forceinline__ void sm90_consumer(const fmla_kernel_params &p, uint8_t *smem, int q_tma) {
  const int tid = threadIdx.x; /* 0..255 */
  const int wg = tid >> 7, warp = (tid >> 5) & 3;
  const int m_block = blockIdx.x, hk = blockIdx.y;
  const int *meta = p.meta + (int64_t)blockIdx.z * FMLA_META_SIZE;
  const uint32_t sbase = smem_u32(smem);
  sm90_ctx c;
  c.sQ = sbase + SM90_OFF_Q;
  c.sK0 = sbase + SM90_OFF_K;
  c.sK1 = c.sK0 + SM90_STAGE_BYTES;
  c.sPA = sbase + SM90_OFF_PA;
  c.sPB = c.sK1 + SM90_P_B_TILE * SM90_TILE_BYTES;
  c.full0 = sbase + SM90_OFF_FULL;
  c.full1 = c.full0 + SM90_NTILES * 8;
  c.empty0 = sbase + SM90_OFF_EMPTY;
  c.empty1 = c.empty0 + SM90_NTILES * 8;
  c.pa_ready = sbase + SM90_OFF_PA_READY;
  c.mb_ready = sbase + SM90_OFF_MB_READY;
  c.pb_ready = sbase + SM90_OFF_PB_READY;
  c.pa_free = sbase + SM90_OFF_PA_FREE;
  c.q_free = sbase + SM90_OFF_Q_FREE;
  const uint32_t q_full = sbase + SM90_OFF_Q_FULL;
  /* 16-byte output stores need a 16-byte aligned out and strides of whole 8-element chunks */
  const bool out16 = !(((uintptr_t)p.out & 15) | (p.out_batch_stride & 7) | (p.out_seq_stride & 7) | (p.out_head_stride & 7));
  uint32_t nq = 0; /* segments with keys so far: Q tiles taken (q_full phase) */
  c.sMA = (float *)(smem + SM90_OFF_MA);
  c.sMB = (float *)(smem + SM90_OFF_MB);
  c.zmask = sm90_zmask_base<kMc>(smem);
  /* The softmax takes the magnitude of the scale, at least FLT_MIN (a zero scale then still gives
   * every key the weight exp2(0) = 1, as s * 0 would, and a masked -inf key stays -inf, not NaN),
   * and its sign apart. */
  c.sl2 = fmaxf(fabsf(p.scale_log2), 1.17549435e-38f /* FLT_MIN */);
  c.neg = p.scale_log2 < 0.f;
  c.lane = tid & 31;
  c.rank = kMc ? cluster_ctarank() : 0u;
  c.quad = c.lane & 3;
  c.wt = tid & 127;
  c.r0 = warp * 16 + (c.lane >> 2);
  c.r1 = c.r0 + 8;
  float *lsum = (float *)(smem + SM90_OFF_LSUM);

  const int begin_req = meta[0], end_req = meta[2];
  uint32_t k = 0, pb = 0; /* pairs so far, pairs with a B so far (barrier phases) */
  uint32_t nepi = 0;       /* epilogues so far (L_READY phase, lsum half) */
#if FMLA_SM90_TRACE
  int nseg = 0;
#endif
  for (int pos = begin_req; pos <= end_req && pos < p.batch; ++pos) {
    const int i = fmla_ns_req(p.num_splits, p.batch, pos); /* the request */
    const sm90_segment seg = sm90_get_segment(p, meta, pos, i);
    const int L = seg.L;
    c.L = L;
#if FMLA_SM90_TRACE
    const int ts = nseg < 14 ? 8 + 4 * nseg : SM90_CTA_SLOTS;
    ++nseg;
    SM90_CT(ts, clock64());
#endif
    if (q_tma) {
      /* The producer loaded this segment's Q tile by TMA as soon as the previous segment's last S
       * was done (q_free), under that segment's last PVs and epilogue. */
      if (seg.lo < seg.hi) mbar_wait(q_full, nq++ & 1, 'Q');
    } else {
      /* Previous segment: every S wgmma (Q reads) and the lsum reads are over. */
      bar_sync(SM90_BAR_CONSUMERS, SM90_CONSUMER_THREADS);
      if (seg.lo < seg.hi) {
        sm90_load_q(p, c.sQ, i, hk, m_block, tid, SM90_CONSUMER_THREADS);
        cp_async_wait_all();
        fence_proxy_async_shared_cta();
        bar_sync(SM90_BAR_CONSUMERS, SM90_CONSUMER_THREADS);
      }
    }
    SM90_CT(ts + 1, clock64());
    uint32_t q8[16]; /* Q's RoPE tile as S's A fragments (RS wgmma) */
    sm90_load_q8(c.sQ, c.r0, c.quad, seg.lo < seg.hi, q8);
    /* Key limits of this thread's two rows; m = running max of the scaled log2 scores (-inf: none yet). */
    {
      const int g0 = m_block * 64 + c.r0, g1 = m_block * 64 + c.r1;
      const int t0 = g0 / p.ngroups, t1 = g1 / p.ngroups;
      int lim0 = p.causal ? L - (p.seqlen_q - 1 - t0) : L;
      int lim1 = p.causal ? L - (p.seqlen_q - 1 - t1) : L;
      c.lim0 = lim0 < L ? lim0 : L; /* padding rows (t >= s_q) never look past L */
      c.lim1 = lim1 < L ? lim1 : L;
    }
    float o[128];
#pragma unroll
    for (int kk = 0; kk < 128; ++kk) o[kk] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    if (wg == 0)
      sm90_wg0_segment<kFp16, kMc, kG, kFF>(c, seg, o, q8, m0, m1, l0, l1, k, pb);
    else
      sm90_wg1_segment<kFp16, kMc, kG, kFF>(c, seg, o, q8, m0, m1, l0, l1, k, pb);
    SM90_CT(ts + 2, clock64());

    /* Epilogue: row sums over the quad and the two WGs (both WGs hold the same m), then O / l. */
    const int quad = c.quad, r0 = c.r0, r1 = c.r1;
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    /* Each WG's quad leaders publish its row sums and arrive on its L_READY barrier, then read the
     * other WG's once that barrier's phase for this epilogue is over, and share them in the quad.
     * lsum alternates between two halves by epilogue parity: a leader rewrites a half two
     * epilogues later, after its wait on the other WG's arrival of the epilogue in between, which
     * that WG's leaders made after their reads of it. */
    {
      const uint32_t par = nepi & 1;
      float *ls = lsum + par * 128;
      float x0 = 0.f, x1 = 0.f;
      if (quad == 0) {
        ls[wg * 64 + r0] = l0;
        ls[wg * 64 + r1] = l1;
        mbarrier_arrive(sbase + SM90_OFF_L_READY + 8 * wg);
        mbar_wait(sbase + SM90_OFF_L_READY + 8 * (wg ^ 1), par, 'L');
        x0 = ls[(wg ^ 1) * 64 + r0];
        x1 = ls[(wg ^ 1) * 64 + r1];
      }
      ++nepi;
      x0 = __shfl_sync(0xffffffffu, x0, c.lane & ~3);
      x1 = __shfl_sync(0xffffffffu, x1, c.lane & ~3);
      l0 = wg ? x0 + l0 : l0 + x0; /* WG0's sum first in both WGs: the same l, bit for bit */
      l1 = wg ? x1 + l1 : l1 + x1;
    }
    /* Needed twice over, though it orders no lsum data (the mbarriers above do): (1) it keeps each
     * WG within one L_READY phase of the other's wait. Without it, a WG whose next segment is empty
     * (no key block) would complete its barrier's next phase too, and the other WG, still to poll
     * the phase before, would find the parity it waits for current again and hang. (2) Without a
     * consumer-wide barrier here ptxas schedules the whole kernel differently (+1500 SASS lines,
     * 2-3% slower, H200). */
    bar_sync(SM90_BAR_CONSUMERS, SM90_CONSUMER_THREADS);
    const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
    const int slot0 = fmla_ns_slot(p.num_splits, p.batch, i);
    const int nsplit = fmla_ns_slot(p.num_splits, p.batch, i + 1) - slot0;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = half ? r1 : r0;
      const int gr = m_block * 64 + r;
      /* Padding rows (gr >= rows) store nothing, but take part in the quad's shuffles. */
      const bool valid = gr < p.rows;
      const float inv = half ? inv1 : inv0, l = half ? l1 : l0, m = half ? m1 : m0;
      const int t = gr / p.ngroups, h = hk * p.ngroups + (gr - t * p.ngroups);
      if (nsplit <= 1) {
        char *dst = (char *)p.out + 2 * ((int64_t)i * p.out_batch_stride + (int64_t)t * p.out_seq_stride +
                                         (int64_t)h * p.out_head_stride + wg * 256);
        if (out16) {
          sm90_store_row16<kFp16>(dst, o, half, inv, quad, valid);
        } else if (valid) { /* out not 16-byte aligned or strides not multiples of 8: 4-byte stores */
          uint32_t *d32 = (uint32_t *)dst;
#pragma unroll
          for (int cc = 0; cc < 32; ++cc)
            d32[quad + 4 * cc] = sm90_pack2(o[4 * cc + 2 * half] * inv, o[4 * cc + 2 * half + 1] * inv, kFp16);
        }
        if (valid && wg == 0 && quad == 0)
          p.lse[((int64_t)i * p.num_heads_q + h) * p.seqlen_q + t] = l > 0.f ? m * SM90_LN2 + logf(l) : INFINITY;
      } else {
        const int64_t slot_row = ((int64_t)(slot0 + seg.split) * p.num_heads_k + hk) * p.rows + gr;
        sm90_store_row32(p.o_accum + slot_row * FMLA_HEAD_DIM_V + wg * 256, o, half, inv, quad, valid);
        if (valid && wg == 0 && quad == 0) p.lse_accum[slot_row] = l > 0.f ? m * SM90_LN2 + logf(l) : -INFINITY;
      }
    }
    SM90_CT(ts + 3, clock64());
  }
#if FMLA_SM90_TRACE
  SM90_CT(2, sm90_gtimer());
  SM90_CT(3, clock64());
  SM90_CT(4, nseg);
  SM90_CT(5, k);
#endif
}

/* The Q tile of (request i, KV head hk, this CTA's M tile) by TMA: 9 boxes of 64 columns x 64 rows,
 * the rows as (group, position) with rows past s_q zero-filled by TMA (see sm90_make_q_map), once
 * every consumer warp is past the previous segment's last S (q_free; nq = Q tiles loaded so far).
 * kNormal: an evict-normal L2 policy made here (gather mode) instead of the caller's `policy`. */
template <int kNormal>
static __device__ __forceinline__ void sm90_produce_q(const fmla_kernel_params &p, const CUtensorMap *qmap,
                                                      uint32_t sbase, int hk, int i, uint32_t nq, uint64_t policy) {
  if (nq) mbar_wait(sbase + SM90_OFF_Q_FREE, (nq - 1) & 1, 'q');
  const uint32_t qf = sbase + SM90_OFF_Q_FULL;
  mbarrier_arrive_expect_tx(qf, SM90_STAGE_BYTES);
  const int r0 = blockIdx.x * 64;
  const int ng = p.ngroups;
  const int g0 = ng >= 64 ? r0 % ng : 0, t0 = r0 / ng;
  if (kNormal) policy = createpolicy_fractional_l2_evict_normal();
#pragma unroll 1
  for (int t = 0; t < SM90_NTILES; ++t)
    cp_async_bulk_tensor_5d_g2s(sbase + SM90_OFF_Q + t * SM90_TILE_BYTES, qmap, t * 64, g0, hk, t0, i, qf, policy);
}

/* 2-CTA cluster exit (TMA and gather producers): the other CTA's consumers give the stage this CTA
 * fills (stage = rank) back on this CTA's empty barriers, so this CTA (its shared memory) must
 * outlive their last remote arrival. Wait, as if for one more fill, until every tile of the stage
 * has been given back by both CTAs after its last use (uses = that stage's use count). */
static __device__ __forceinline__ void sm90_cluster_exit_wait(uint32_t empty0, uint32_t rank, uint32_t k, uint32_t pb) {
  const uint32_t uses = rank == 0 ? k : pb;
  const uint32_t empty = empty0 + rank * SM90_NTILES * 8;
#pragma unroll 1
  for (int t = 0; t < SM90_NTILES; ++t) mbar_wait(empty + t * 8, (uses & 1) ^ 1, 'E');
}

template <int kFp16, int kMc, int kFF>
static __device__ __forceinline__ void sm90_producer(const fmla_kernel_params &p, const CUtensorMap *map,
                                                     const CUtensorMap *qmap, int q_tma, uint8_t *smem) {
  const int hk = blockIdx.y;
  const int *meta = p.meta + (int64_t)blockIdx.z * FMLA_META_SIZE;
  const uint32_t sbase = smem_u32(smem);
  const uint32_t sK = sbase + SM90_OFF_K, full0 = sbase + SM90_OFF_FULL, empty0 = sbase + SM90_OFF_EMPTY;
  uint64_t *zmask = sm90_zmask_base<kMc>(smem);
  /* EVICT_FIRST when this CTA (or its 2-CTA cluster, by multicast) is the only reader of the KV
   * stream. Otherwise the sibling CTAs (adjacent blockIdx.x) read the same blocks at about the same
   * time: keep normal priority. */
  const uint32_t rank = kMc ? cluster_ctarank() : 0u;
  const uint64_t policy = p.num_m_blocks == (kMc ? 2 : 1) ? createpolicy_fractional_l2_evict_first()
                                                          : createpolicy_fractional_l2_evict_normal();
  uint32_t k = 0, pb = 0, nq = 0; /* same counters as the consumers */
  /* meta[2] re-read per segment (an L1 hit): keeps the producer within its 40 registers */
  for (int pos = meta[0]; pos <= __ldg(meta + 2) && pos < p.batch; ++pos) {
    const int i = fmla_ns_req(p.num_splits, p.batch, pos); /* the request */
    const sm90_segment seg = sm90_get_segment(p, meta, pos, i);
    if (q_tma && seg.lo < seg.hi) sm90_produce_q<0>(p, qmap, sbase, hk, i, nq++, policy);
    for (int n = seg.lo; n < seg.hi; n += 2, ++k) {
      SM90_TR(k, 0, true);
      sm90_produce_block<kFF>(p, map, i, hk, n, seg.L, 0, k, sK, full0, empty0, &zmask[sm90_zmask_idx<kMc>(0, k)], policy,
                         k, kMc, rank);
      SM90_TR(k, 1, true);
      if (n + 1 < seg.hi) {
        sm90_produce_block<kFF>(p, map, i, hk, n + 1, seg.L, 1, pb, sK + SM90_STAGE_BYTES, full0 + SM90_NTILES * 8,
                           empty0 + SM90_NTILES * 8, &zmask[sm90_zmask_idx<kMc>(1, pb)], policy, k, kMc,
                           rank);
        SM90_TR(k, 3, true);
        ++pb;
      }
    }
  }
  /* Once those arrivals have landed, so have our multicast copies into the other CTA (its consumers
   * read them before giving them back). The other CTA does the same for its stage. */
  if (kMc) sm90_cluster_exit_wait(empty0, rank, k, pb);
}

/* Gather mode: the 128 producer-warpgroup threads walk the part like sm90_producer and gather each
 * n-block (sm90_gather_block); thread 0 also loads each segment's Q tile by TMA, exactly as
 * sm90_producer does. In a 2-CTA cluster (kMc, v6.12) CTA s gathers stage s only and its consumers
 * send each tile on to the other CTA (sm90_qk); for the stage it receives, thread 0 raises each
 * tile's byte count once the tile's previous phase is over (as sm90_produce_block does for the
 * stage the other CTA multicasts), except stage 1's RoPE tile: P_B is written over it, so the
 * sender's copy could still be read while P_B lands there; every CTA gathers that tile itself
 * (1/18 of the bytes twice). */
template <int kMc>
static __device__ __forceinline__ void sm90_producer_gather(const fmla_kernel_params &p, const CUtensorMap *qmap,
                                                            int q_tma, uint8_t *smem, int wt) {
  const int hk = blockIdx.y;
  const int *meta = p.meta + (int64_t)blockIdx.z * FMLA_META_SIZE;
  const uint32_t sbase = smem_u32(smem);
  const uint32_t sK = sbase + SM90_OFF_K, full0 = sbase + SM90_OFF_FULL, empty0 = sbase + SM90_OFF_EMPTY;
  const uint32_t rank = kMc ? cluster_ctarank() : 0u;
  uint32_t k = 0, pb = 0, nq = 0; /* same counters as the consumers */
  for (int pos = meta[0]; pos <= __ldg(meta + 2) && pos < p.batch; ++pos) {
    const int i = fmla_ns_req(p.num_splits, p.batch, pos);
    const sm90_segment seg = sm90_get_segment(p, meta, pos, i);
    if (q_tma && seg.lo < seg.hi && wt == 0) sm90_produce_q<1>(p, qmap, sbase, hk, i, nq++, 0);
    for (int n = seg.lo; n < seg.hi; n += 2, ++k) {
      if (!kMc || rank == 0)
        sm90_gather_block(p, i, hk, n, seg.L, 0, k, sK, full0, empty0, wt, 0);
      else
        sm90_gather_receive(full0, 0, k, wt);
      if (n + 1 < seg.hi) {
        const uint32_t f1 = full0 + SM90_NTILES * 8, e1 = empty0 + SM90_NTILES * 8;
        if (!kMc || rank == 1) {
          sm90_gather_block(p, i, hk, n + 1, seg.L, 1, pb, sK + SM90_STAGE_BYTES, f1, e1, wt, 0);
        } else {
          sm90_gather_receive(f1, 1, pb, wt);
          sm90_gather_block(p, i, hk, n + 1, seg.L, 1, pb, sK + SM90_STAGE_BYTES, f1, e1, wt, 1);
        }
        ++pb;
      }
    }
  }
  /* 2-CTA cluster: as in sm90_producer, outlive the other CTA's last arrivals on the stage we send. */
  if (kMc && wt == 0) sm90_cluster_exit_wait(empty0, rank, k, pb);
}

#endif /* FMLA_SM90_DEVICE */

/* kGather: page sizes TMA cannot box; kFF (v6.14, TMA clusters of 128 rows): stage 1 in freed-first order */
template <int kFp16, int kMc, int kGather = 0, int kFF = 0>
__global__ void __launch_bounds__(SM90_THREADS, 1)
    fmla_decode_sm90_kernel(const __grid_constant__ fmla_kernel_params p, const __grid_constant__ CUtensorMap tmap_k,
                            const __grid_constant__ CUtensorMap tmap_q, int q_tma) {
#if FMLA_SM90_DEVICE
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  /* 128-byte swizzle atoms must start on 1024-byte boundaries (descriptor base offset 0, TMA). */
  uint8_t *smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
#if FMLA_SM90_TRACE
  SM90_CT(0, sm90_gtimer());
  SM90_CT(1, clock64());
#endif
  if (threadIdx.x == 0) {
    const uint32_t sbase = smem_u32(smem), rank = kMc ? cluster_ctarank() : 0u;
    /* full: the producer's arrive.expect_tx, or in gather mode one arrival per producer-warpgroup
     * thread (in a cluster: for the stage this CTA gathers, and stage 1's P_B tile, which both do) */
    for (int t = 0; t < 2 * SM90_NTILES; ++t) {
      const bool gathered = kGather && (!kMc || (uint32_t)(t / SM90_NTILES) == rank || t == SM90_NTILES + SM90_P_B_TILE);
      mbarrier_init(sbase + SM90_OFF_FULL + t * 8, gathered ? 128 : 1);
    }
    /* one arrival per consumer warp that reads the tile; stage 1's P_B tile is read by both WGs; in a
     * 2-CTA cluster the stage this CTA copies for both (stage = rank) counts both CTAs' warps */
    for (int t = 0; t < 2 * SM90_NTILES; ++t) {
      const bool pb_tile = t == SM90_NTILES + SM90_P_B_TILE; /* gather mode: each CTA's own in a cluster too */
      mbarrier_init(sbase + SM90_OFF_EMPTY + t * 8, (pb_tile ? 8 : 4) *
                                                        (kMc && rank == (uint32_t)(t / SM90_NTILES) && !(kGather && pb_tile) ? 2 : 1));
    }
    if (kMc)
      for (int z = 0; z < 4; ++z) ((uint64_t *)(smem + SM90_OFF_ZMASK_MC))[z] = 0;
    mbarrier_init(sbase + SM90_OFF_PA_READY, 32); /* WG0's quad leaders */
    mbarrier_init(sbase + SM90_OFF_MB_READY, 32); /* WG1's quad leaders (sMB) */
    mbarrier_init(sbase + SM90_OFF_PB_READY, 128); /* every WG1 thread (its P_B rows) */
    mbarrier_init(sbase + SM90_OFF_PA_FREE, 32);  /* WG1's quad leaders */
    mbarrier_init(sbase + SM90_OFF_Q_FULL, 1);    /* the producer's expect_tx */
    mbarrier_init(sbase + SM90_OFF_Q_FREE, 8);    /* one per consumer warp per segment with keys */
    mbarrier_init(sbase + SM90_OFF_L_READY, 32);      /* WG0's quad leaders, once per segment */
    mbarrier_init(sbase + SM90_OFF_L_READY + 8, 32);  /* WG1's quad leaders */
    ((uint64_t *)(smem + SM90_OFF_ZMASK))[0] = 0;
    ((uint64_t *)(smem + SM90_OFF_ZMASK))[1] = 0;
    fence_mbarrier_init_release_cluster();
    fence_proxy_async_shared_cta();
  }
  if (threadIdx.x == SM90_CONSUMER_THREADS) {
    prefetch_tensormap(&tmap_k);
    if (q_tma) prefetch_tensormap(&tmap_q);
  }
  __syncthreads();
  /* 2-CTA cluster: each CTA arrives on (and multicasts into) the other's barriers and tiles, so both
   * CTAs' barriers must be initialised before either producer or consumer starts. */
  if (kMc) cluster_sync_all();
  /* PDL: nothing written by an earlier kernel (metadata, lengths, q, cache) is read before this. */
  griddepcontrol_wait();
  SM90_CT(6, clock64());
  /* Let the combine grid get onto SMs this grid leaves idle (its CTAs wait for our completion):
   * hides its launch latency on small steps; every CTA of ours is resident by then. */
  if (FMLA_SM90_EARLY_TRIGGER) griddepcontrol_launch_dependents();
  if (threadIdx.x >= SM90_CONSUMER_THREADS) {
    setmaxnreg_dec<40>();
    if (kGather)
      sm90_producer_gather<kMc>(p, &tmap_q, q_tma, smem, (int)threadIdx.x - SM90_CONSUMER_THREADS);
    else if (threadIdx.x == SM90_CONSUMER_THREADS)
      sm90_producer<kFp16, kMc, kFF>(p, &tmap_k, &tmap_q, q_tma, smem);
  } else {
    setmaxnreg_inc<232>();
    sm90_consumer<kFp16, kMc, kGather, kFF>(p, smem, q_tma);
  }
#endif
}

/* ======================================================================================
 * Narrow kernel: at most 32 query rows per KV head (h_q / h_kv * s_q <= 32, e.g. 16 heads per GPU).
 *
 * The 64-row kernel above pads such a tile to M = 64 and does 2-4x the tensor work of the real rows;
 * then a 64-key block costs ~5500 tensor clocks per pair where HBM delivers it in ~4100 (tp set,
 * b = 128): compute-bound on padding. Here the keys are the M side instead (the transposed problem):
 *   S^T [64 keys, N rows]  = K [64, 576] . Q^T          m64nNk16 x 36, A = K tile (K-major), B = Q
 *   O^T [512, N rows]     += V^T [512, 64] . P^T [64, N] m64nNk16 x 8 dim tiles x 4 key steps,
 *                            A = V^T read MN-major straight out of the K tile (imm-trans-a), B = P^T
 * with N = 16 or 32 (rows padded up to N). Per 64-key block that is ~1/4 (N = 16) of the 64-row
 * kernel's tensor work, so the kernel is bound by HBM, which is the point.
 *
 * Block (160 threads): warps 0-3 = one consumer warpgroup, warp 4 = producer (one thread issues TMA).
 * Gather mode (v6.11, page sizes TMA cannot box, and v6.12 page 16 too, where it measured 1.01-1.21x
 * faster than 4 TMA boxes per tile): 256 threads, warps 4-7 = a producer warpgroup whose 128 threads
 * copy the key rows with cp.async (sm90_gather_block), as in the 64-row kernel.
 * Two K stages (72 KB each, 9 column tiles with their own full/empty mbarriers, as above); block n of
 * the CTA goes to stage n % 2, so one stage loads while the other is computed. The consumer WG does,
 * per block: S^T (one wgmma chain), masking, the column max over 64 keys (shuffles over the 8 key
 * rows of a warp + a 4-warp exchange through shared memory), exp2, P^T (bf16/fp16) into shared
 * memory, the rescale of O^T and the PV chain; it gives the RoPE tile back after S and the 8 V tiles
 * after PV. Row sums stay per thread and are reduced once per segment (epilogue).
 * v6.18: the block loop runs a stage-specialised body (the stage, u % 2, a compile-time constant),
 * so every tile's shared-memory address is a constant offset from the stage base and ptxas builds
 * the wgmma descriptors on the uniform datapath (ULOP3/UMOV, an R2UR per tile) instead of ~10
 * vector instructions and four R2URs per wgmma: the S^T chain 441 -> 244 SASS instructions, PV
 * 315 -> 238 (N = 32). Outputs bit-identical; H200 at 32 rows -1.5 to -4% in bursts, -3 to -5%
 * time and -5% energy a call under sustained load (perf-notes, fourteenth session). The per-tile
 * descriptors are hoisted into registers: 255 at N = 32 (no spills), 168 at N = 16.
 * v6.19: one base descriptor per operand, built once per CTA, plus each
 * tile's constant offset (two UIADD3.64 per wgmma; wgmma_desc_sw128's masks kept ptxas from folding
 * the offsets): 255 -> 234 registers at N = 32, S^T chain 244 -> 157 instructions, PV 238 -> 167.
 * Bit-identical; time neutral, energy -0.5-1% a call (H200).
 * Accumulator fragment (m64nN, thread = warp w, lane l, q = l % 4, r = l / 4): S^T element
 * s[4c + 2h + e] is key 16w + r + 8h, query row 8c + 2q + e; O^T likewise with dims for keys.
 * Shared memory: Q 9 tiles of N x 128 B, 2 x 72 KB K, P^T N x 128 B, a [2][4][N] max exchange,
 * a [4][N] row-sum exchange, bad-page masks, 36 mbarriers: ~186 KB (N = 32).
 * ====================================================================================== */
#define NW_THREADS 160
#define NW_THREADS_GATHER 256 /* gather mode: a producer warpgroup (one warp gathered at about half its rate) */
#define NW_CONSUMERS 128
#define NW_BAR_CONSUMERS 1

template <int kN>
struct nw_layout {
  static constexpr int q_tile = kN * 128;                       /* one 64-column Q tile */
  static constexpr int off_q = 0;
  static constexpr int off_k = 9 * q_tile;                      /* multiple of 2048: 1024-aligned */
  static constexpr int off_p = off_k + 2 * SM90_STAGE_BYTES;    /* P^T, N rows x 128 B */
  static constexpr int off_red = off_p + (kN * 128 < 1024 ? 1024 : kN * 128);
  static constexpr int off_lsum = off_red + 2 * 4 * kN * 4;     /* float [2][4][N] */
  static constexpr int off_zmask = off_lsum + 4 * kN * 4;       /* float [4][N] */
  static constexpr int off_full = off_zmask + 16;
  static constexpr int off_empty = off_full + 2 * SM90_NTILES * 8;
  static constexpr int used = off_empty + 2 * SM90_NTILES * 8;
  static constexpr int bytes = used + 1024;
};

#if FMLA_SM90_DEVICE
static __device__ __forceinline__ void st_shared_b16(uint32_t addr, uint16_t v) {
  asm volatile("st.shared.b16 [%0], %1;" ::"r"(addr), "h"(v) : "memory");
}
static __device__ __forceinline__ uint16_t nw_cvt(float x, int fp16) {
  if (fp16) {
    const __half h = __float2half_rn(x);
    return *(const uint16_t *)&h;
  }
  const __nv_bfloat16 h = __float2bfloat16_rn(x);
  return *(const uint16_t *)&h;
}

template <int kN>
static __device__ __forceinline__ void nw_load_q(const fmla_kernel_params &p, uint32_t sQ, int b, int hk, int ct) {
  const char *q = (const char *)p.q;
  for (int idx = ct; idx < kN * 72; idx += NW_CONSUMERS) {
    const int r = idx / 72, ch = idx - r * 72;
    const char *src = q;
    uint32_t bytes = 0;
    if (r < p.rows) {
      const int t = r / p.ngroups, h = hk * p.ngroups + (r - t * p.ngroups);
      src = q + 2 * ((int64_t)b * p.q_batch_stride + (int64_t)t * p.q_seq_stride + (int64_t)h * p.q_head_stride) + ch * 16;
      bytes = 16;
    }
    cp_async_cg_16_zfill(sQ + (ch >> 3) * (kN * 128) + r * 128 + (((ch & 7) ^ (r & 7)) << 4), src, bytes);
  }
  cp_async_commit_group();
}

template <int kFp16, int kN, int kTA>
static __device__ __forceinline__ void nw_wgmma(float *d, uint64_t da, uint64_t db, int scale_d) {
  if constexpr (kN == 16)
    wgmma_m64n16k16_ss<kFp16, kTA>(d, da, db, scale_d);
  else
    wgmma_m64n32k16_ss<kFp16, kTA>(d, da, db, scale_d);
}

template <int kFp16, int kN, int kG>
static __device__ __forceinline__ void nw_consumer(const fmla_kernel_params &p, uint8_t *smem) {
  typedef nw_layout<kN> LY;
  constexpr int NC = kN / 8;  /* column groups of the fragment */
  constexpr int NS = kN / 2;  /* accumulator registers per m64 tile */
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, q4 = lane & 3, r8 = lane >> 2;
  const int hk = blockIdx.y;
  const int *meta = p.meta + (int64_t)blockIdx.z * FMLA_META_SIZE;
  const uint32_t sbase = smem_u32(smem);
  const uint32_t sQ = sbase + LY::off_q, sK = sbase + LY::off_k, sP = sbase + LY::off_p;
  const uint32_t full = sbase + LY::off_full, empty = sbase + LY::off_empty;
  float *red = (float *)(smem + LY::off_red);
  float *lsum = (float *)(smem + LY::off_lsum);
  const volatile uint64_t *zmask = (const volatile uint64_t *)(smem + LY::off_zmask);
  const float sl2 = p.scale_log2;
  /* base descriptors of the K stages (S^T and V^T) and of Q, once per CTA; a tile's descriptor is
   * its base plus the tile's offset in 16-byte units (no field overflows: shared memory < 256 KB) */
  const uint64_t dK0 = wgmma_desc_sw128(sK, 16, 1024), dQ0 = wgmma_desc_sw128(sQ, 16, 1024);
  const uint64_t dV0 = wgmma_desc_sw128(sK, SM90_TILE_BYTES, 1024);
  const int begin_req = meta[0], end_req = meta[2];
  uint32_t u = 0; /* blocks so far in this CTA: stage u % 2, that stage's use u / 2 */

  for (int pos = begin_req; pos <= end_req && pos < p.batch; ++pos) {
    const int i = fmla_ns_req(p.num_splits, p.batch, pos); /* the request */
    const sm90_segment seg = sm90_get_segment(p, meta, pos, i);
    const int L = seg.L;
    bar_sync(NW_BAR_CONSUMERS, NW_CONSUMERS); /* the previous segment's S reads and lsum reads are over */
    if (seg.lo < seg.hi) {
      nw_load_q<kN>(p, sQ, i, hk, tid);
      cp_async_wait_all();
      fence_proxy_async_shared_cta();
      bar_sync(NW_BAR_CONSUMERS, NW_CONSUMERS);
    }
    /* Per column j = 2c + e (query row n = 8c + 2q + e): key limit, running max, partial row sum. */
    int lim[2 * NC];
    float m[2 * NC], l[2 * NC];
#pragma unroll
    for (int j = 0; j < 2 * NC; ++j) {
      const int n = 8 * (j >> 1) + 2 * q4 + (j & 1);
      const int t = n / p.ngroups;
      const int lm = p.causal ? L - (p.seqlen_q - 1 - t) : L;
      lim[j] = lm < L ? lm : L;
      m[j] = -INFINITY;
      l[j] = 0.f;
    }
    float o[8 * NS];
#pragma unroll
    for (int k = 0; k < 8 * NS; ++k) o[k] = 0.f;

    /* One block; its stage (u % 2) as a compile-time constant, so that every tile's shared-memory
     * address, and with it every wgmma descriptor, is a constant offset from the stage base. */
    auto block = [&](const int n, auto stage_c) {
      constexpr int stage = decltype(stage_c)::value; /* a constant: tile offsets fold into uniform descriptors */
      const uint32_t par = (u >> 1) & 1;
      const uint32_t kbase = sK + stage * SM90_STAGE_BYTES;
      const uint32_t sfull = full + stage * SM90_NTILES * 8, sempty = empty + stage * SM90_NTILES * 8;
      float s[NS];
      /* S^T = K Q^T, tiles in the producer's order for this stage */
      sm90_wait_full<kG>(sfull + sm90_tile_order(stage, 0) * 8, par);
      /* Lane 0 reads the mask for its warp, before the stage's first tile can go back: the same
       * thread then makes the warp's empty arrival, after which the producer rewrites the mask (a
       * read by every lane would be ordered to that arrival only through the warp's wgmma ops,
       * which racecheck does not follow). */
      const uint64_t zm = __shfl_sync(0xffffffffu, lane == 0 ? zmask[stage] : 0ull, 0);
#pragma unroll
      for (int jj = 0; jj < SM90_NTILES; ++jj) {
        const int t = sm90_tile_order(stage, jj);
        if (jj) sm90_wait_full<kG>(sfull + t * 8, par);
        wgmma_fence();
        const uint64_t da = dK0 + (uint64_t)((stage * SM90_STAGE_BYTES + t * SM90_TILE_BYTES) >> 4);
        const uint64_t db = dQ0 + (uint64_t)((t * LY::q_tile) >> 4);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          nw_wgmma<kFp16, kN, 0>(s, da + (uint64_t)(kk * 2), db + (uint64_t)(kk * 2), jj != 0 || kk != 0);
      }
      wgmma_commit_group();
      wgmma_wait<0>();
#pragma unroll
      for (int k = 0; k < NS; ++k) fence_operand(s[k]);
      if (lane == 0) mbarrier_arrive(sempty + 8 * 8); /* the RoPE tile is dead after S */

      /* mask + scale (log2 units), column max over this thread's 2 keys, then the warp's 16 */
      const int key0 = n * 64 + 16 * warp + r8;
      const bool z0 = (zm >> (16 * warp + r8)) & 1, z1 = (zm >> (16 * warp + r8 + 8)) & 1;
      float mx[2 * NC];
#pragma unroll
      for (int c = 0; c < NC; ++c)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int j = 2 * c + e;
          float v0 = z0 ? 0.f : s[4 * c + e] * sl2;
          float v1 = z1 ? 0.f : s[4 * c + 2 + e] * sl2;
          v0 = key0 < lim[j] ? v0 : -INFINITY;
          v1 = key0 + 8 < lim[j] ? v1 : -INFINITY;
          s[4 * c + e] = v0;
          s[4 * c + 2 + e] = v1;
          float x = fmaxf(v0, v1);
          x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 4));
          x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 8));
          x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 16));
          mx[j] = x;
        }
      float *rb = red + (u & 1) * 4 * kN; /* two buffers: block u+2 writes after block u+1's barrier */
      if (r8 == 0) {
#pragma unroll
        for (int j = 0; j < 2 * NC; ++j) rb[warp * kN + 8 * (j >> 1) + 2 * q4 + (j & 1)] = mx[j];
      }
      bar_sync(NW_BAR_CONSUMERS, NW_CONSUMERS); /* also: every thread's previous PV is over (sP reuse) */
      float alpha[2 * NC], ref[2 * NC];
#pragma unroll
      for (int j = 0; j < 2 * NC; ++j) {
        const int col = 8 * (j >> 1) + 2 * q4 + (j & 1);
        const float bm = fmaxf(fmaxf(rb[col], rb[kN + col]), fmaxf(rb[2 * kN + col], rb[3 * kN + col]));
        const float mn = fmaxf(m[j], bm);
        ref[j] = sm90_ref(mn);
        alpha[j] = ex2_approx_ftz(m[j] - ref[j]);
        m[j] = mn;
      }
      /* P^T into shared memory as the K-major B operand: row = query column, 64 keys = 128 bytes */
#pragma unroll
      for (int c = 0; c < NC; ++c)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int j = 2 * c + e, col = 8 * c + 2 * q4 + e;
          const float p0 = ex2_approx_ftz(s[4 * c + e] - ref[j]);
          const float p1 = ex2_approx_ftz(s[4 * c + 2 + e] - ref[j]);
          l[j] = l[j] * alpha[j] + p0 + p1;
          const int k0 = 16 * warp + r8, k1 = k0 + 8;
          st_shared_b16(sP + col * 128 + (((k0 >> 3) ^ (col & 7)) << 4) + (k0 & 7) * 2, nw_cvt(p0, kFp16));
          st_shared_b16(sP + col * 128 + (((k1 >> 3) ^ (col & 7)) << 4) + (k1 & 7) * 2, nw_cvt(p1, kFp16));
        }
      const int in_len = L - n * 64;
      const uint64_t bad = zm | (in_len >= 64 ? 0ull : sm90_key_mask(in_len, 64));
      if (bad) sm90_zero_v(kbase, bad, tid);
      fence_proxy_async_shared_cta();
      bar_sync(NW_BAR_CONSUMERS, NW_CONSUMERS); /* P^T and the zeroed V rows are complete */

      /* O^T = O^T * alpha (per column) + V^T P^T */
#pragma unroll
      for (int mt = 0; mt < 8; ++mt)
#pragma unroll
        for (int c = 0; c < NC; ++c) {
          o[mt * NS + 4 * c + 0] *= alpha[2 * c];
          o[mt * NS + 4 * c + 1] *= alpha[2 * c + 1];
          o[mt * NS + 4 * c + 2] *= alpha[2 * c];
          o[mt * NS + 4 * c + 3] *= alpha[2 * c + 1];
        }
      wgmma_fence();
      const uint64_t dp = wgmma_desc_sw128(sP, 16, 1024);
#pragma unroll
      for (int mt = 0; mt < 8; ++mt) {
        const uint64_t dv = dV0 + (uint64_t)((stage * SM90_STAGE_BYTES + mt * SM90_TILE_BYTES) >> 4);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          nw_wgmma<kFp16, kN, 1>(o + mt * NS, dv + (uint64_t)(kk * 128), dp + (uint64_t)(kk * 2), 1);
      }
      wgmma_commit_group();
      wgmma_wait<0>();
#pragma unroll
      for (int k = 0; k < 8 * NS; ++k) fence_operand(o[k]);
      if (lane == 0)
        for (int t = 0; t < 8; ++t) mbarrier_arrive(sempty + t * 8);
    };
    for (int n = seg.lo; n < seg.hi; ++n, ++u) {
      if (u & 1)
        block(n, std::integral_constant<int, 1>());
      else
        block(n, std::integral_constant<int, 0>());
    }

    /* Epilogue: row sums over the 8 key rows of the warp and the 4 warps, then O^T / l. */
#pragma unroll
    for (int j = 0; j < 2 * NC; ++j) {
      float x = l[j];
      x += __shfl_xor_sync(0xffffffffu, x, 4);
      x += __shfl_xor_sync(0xffffffffu, x, 8);
      x += __shfl_xor_sync(0xffffffffu, x, 16);
      l[j] = x;
    }
    if (r8 == 0) {
#pragma unroll
      for (int j = 0; j < 2 * NC; ++j) lsum[warp * kN + 8 * (j >> 1) + 2 * q4 + (j & 1)] = l[j];
    }
    bar_sync(NW_BAR_CONSUMERS, NW_CONSUMERS);
    const int slot0 = fmla_ns_slot(p.num_splits, p.batch, i);
    const int nsplit = fmla_ns_slot(p.num_splits, p.batch, i + 1) - slot0;
#pragma unroll
    for (int j = 0; j < 2 * NC; ++j) {
      const int col = 8 * (j >> 1) + 2 * q4 + (j & 1);
      if (col >= p.rows) continue;
      const float lt = lsum[col] + lsum[kN + col] + lsum[2 * kN + col] + lsum[3 * kN + col];
      const float inv = lt > 0.f ? 1.f / lt : 0.f;
      const int t = col / p.ngroups, h = hk * p.ngroups + (col - t * p.ngroups);
      const int reg = 4 * (j >> 1) + (j & 1);
      if (nsplit <= 1) {
        uint16_t *dst = (uint16_t *)p.out + ((int64_t)i * p.out_batch_stride + (int64_t)t * p.out_seq_stride +
                                             (int64_t)h * p.out_head_stride);
#pragma unroll
        for (int mt = 0; mt < 8; ++mt) {
          const int d0 = 64 * mt + 16 * warp + r8;
          dst[d0] = nw_cvt(o[mt * NS + reg] * inv, kFp16);
          dst[d0 + 8] = nw_cvt(o[mt * NS + reg + 2] * inv, kFp16);
        }
        if (warp == 0 && r8 == 0)
          p.lse[((int64_t)i * p.num_heads_q + h) * p.seqlen_q + t] = lt > 0.f ? m[j] * SM90_LN2 + logf(lt) : INFINITY;
      } else {
        const int64_t slot_row = ((int64_t)(slot0 + seg.split) * p.num_heads_k + hk) * p.rows + col;
        float *dst = p.o_accum + slot_row * FMLA_HEAD_DIM_V;
#pragma unroll
        for (int mt = 0; mt < 8; ++mt) {
          const int d0 = 64 * mt + 16 * warp + r8;
          dst[d0] = o[mt * NS + reg] * inv;
          dst[d0 + 8] = o[mt * NS + reg + 2] * inv;
        }
        if (warp == 0 && r8 == 0) p.lse_accum[slot_row] = lt > 0.f ? m[j] * SM90_LN2 + logf(lt) : -INFINITY;
      }
    }
  }
}

template <int kN, int kG>
static __device__ __forceinline__ void nw_producer(const fmla_kernel_params &p, const CUtensorMap *map, uint8_t *smem,
                                                   int wt) {
  typedef nw_layout<kN> LY;
  const int hk = blockIdx.y;
  const int *meta = p.meta + (int64_t)blockIdx.z * FMLA_META_SIZE;
  const uint32_t sbase = smem_u32(smem);
  uint64_t *zmask = (uint64_t *)(smem + LY::off_zmask);
  const uint64_t policy = createpolicy_fractional_l2_evict_first(); /* one CTA per KV block: read once */
  const int begin_req = meta[0], end_req = meta[2];
  uint32_t u = 0;
  for (int pos = begin_req; pos <= end_req && pos < p.batch; ++pos) {
    const int i = fmla_ns_req(p.num_splits, p.batch, pos); /* the request */
    const sm90_segment seg = sm90_get_segment(p, meta, pos, i);
    for (int n = seg.lo; n < seg.hi; ++n, ++u) {
      const int stage = u & 1;
      const uint32_t kb = sbase + LY::off_k + stage * SM90_STAGE_BYTES;
      const uint32_t fb = sbase + LY::off_full + stage * SM90_NTILES * 8, eb = sbase + LY::off_empty + stage * SM90_NTILES * 8;
      if (kG) /* 128 threads gather; keys past L and on bad pages are zero-filled, the mask stays 0 */
        sm90_gather_block(p, i, hk, n, seg.L, stage, u >> 1, kb, fb, eb, wt);
      else
        sm90_produce_block(p, map, i, hk, n, seg.L, stage, u >> 1, kb, fb, eb, &zmask[stage], policy);
    }
  }
}
#endif /* FMLA_SM90_DEVICE */

template <int kFp16, int kN, int kGather = 0> /* kGather: page sizes TMA cannot box (the producer warp gathers) */
__global__ void __launch_bounds__(kGather ? NW_THREADS_GATHER : NW_THREADS, 1)
    fmla_decode_sm90_narrow_kernel(const __grid_constant__ fmla_kernel_params p, const __grid_constant__ CUtensorMap tmap_k) {
#if FMLA_SM90_DEVICE
  typedef nw_layout<kN> LY;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t *smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  if (threadIdx.x == 0) {
    const uint32_t sbase = smem_u32(smem);
    for (int t = 0; t < 2 * SM90_NTILES; ++t) {
      mbarrier_init(sbase + LY::off_full + t * 8, kGather ? 128 : 1); /* expect_tx, or the gather threads */
      mbarrier_init(sbase + LY::off_empty + t * 8, 4);               /* one arrival per consumer warp */
    }
    ((uint64_t *)(smem + LY::off_zmask))[0] = 0;
    ((uint64_t *)(smem + LY::off_zmask))[1] = 0;
    fence_mbarrier_init_release_cluster();
    fence_proxy_async_shared_cta();
  }
  if (threadIdx.x == NW_CONSUMERS) prefetch_tensormap(&tmap_k);
  __syncthreads();
  griddepcontrol_wait();
  if (FMLA_SM90_EARLY_TRIGGER) griddepcontrol_launch_dependents(); /* as in the 64-row kernel */
  if (threadIdx.x >= NW_CONSUMERS) {
    if (kGather || threadIdx.x == NW_CONSUMERS) nw_producer<kN, kGather>(p, &tmap_k, smem, (int)threadIdx.x - NW_CONSUMERS);
  } else {
    nw_consumer<kFp16, kN, kGather>(p, smem);
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

/* Rows of one K box: gcd(page, 64), the largest run of keys of a 64-key block that never straddles
 * a page (pages of 64k: 64; 16, 48, 80, ...: 16; 32, 96, ...: 32). Below 16 (1, 8, 24, ...) the
 * kernels gather instead (sm90_gather_mode). */
static int sm90_box_rows(int page) {
  const int g = page & -page;
  return g < 64 ? g : 64;
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

/* K cache as a 4-D tensor (576 [inner], h_kv, page_size, num_blocks), box (64, 1, gcd(page, 64), 1),
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
  cuuint32_t box[4] = {64, 1, (cuuint32_t)sm90_box_rows(p->page_size), 1};
  cuuint32_t estr[4] = {1, 1, 1, 1};
  const CUresult r = encode(map, p->dtype == FLASH_MLA_DTYPE_FP16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                            4, (void *)p->k_cache, dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return fmla_set_error(FLASH_MLA_ERROR_UNSUPPORTED_DEVICE,
                          "flash_mla_decode: cuTensorMapEncodeTiled rejected k_cache (CUresult %d)", (int)r);
  return FLASH_MLA_SUCCESS;
}

/* Q as a 5-D tensor (576 [inner], group g, KV head, query position t, request), so that the 64 rows
 * of an M tile, row r = (t - t0) * ng + g, are one box: (64, 64, 1, 1, 1) when the group count ng
 * is a multiple of 64 (the tile is 64 groups of one position), (64, ng, 1, 64 / ng, 1) when ng
 * divides 64 (the tile is whole positions; rows past s_q fall outside the tensor and TMA fills them
 * with zeros). Returns 0 (the consumers then load Q with cp.async) for any other ng or for strides
 * TMA cannot take. */
static int sm90_make_q_map(const fmla_kernel_params *p, CUtensorMap *map) {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = sm90_load_encode_fn();
  const int ng = p->ngroups;
  if (!encode || ng <= 0 || (ng % 64 != 0 && 64 % ng != 0)) return 0;
  cuuint64_t dims[5] = {FMLA_HEAD_DIM_K, (cuuint64_t)ng, (cuuint64_t)p->num_heads_k, (cuuint64_t)p->seqlen_q,
                        (cuuint64_t)p->batch};
  cuuint64_t strides[4];
  if (!sm90_tma_stride(p->q_head_stride, ng, &strides[0]) ||
      !sm90_tma_stride(p->q_head_stride * ng, p->num_heads_k, &strides[1]) ||
      !sm90_tma_stride(p->q_seq_stride, p->seqlen_q, &strides[2]) ||
      !sm90_tma_stride(p->q_batch_stride, p->batch, &strides[3]))
    return 0;
  cuuint32_t box[5] = {64, (cuuint32_t)(ng < 64 ? ng : 64), 1, (cuuint32_t)(ng < 64 ? 64 / ng : 1), 1};
  cuuint32_t estr[5] = {1, 1, 1, 1, 1};
  const CUresult r = encode(map, p->dtype == FLASH_MLA_DTYPE_FP16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                            5, (void *)p->q, dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS;
}

/* The tensor map of one operand from this thread's last call, reused while the operand's pointer,
 * shape, strides and dtype (the key) repeat: across a decode step's layers for the K cache, and for
 * q when the caller keeps static buffers (CUDA-graph serving); encoding is host work per call. */
typedef struct sm90_map_cache {
  const void *ptr;
  int64_t key[8];
  int valid, ok; /* ok: a map was built (the Q map may be refused: the cp.async fallback) */
  CUtensorMap map;
} sm90_map_cache;

static int sm90_map_cache_hit(const sm90_map_cache *c, const void *ptr, const int64_t key[8]) {
  return c->valid && c->ptr == ptr && memcmp(c->key, key, sizeof c->key) == 0;
}

static void sm90_map_cache_set(sm90_map_cache *c, const void *ptr, const int64_t key[8], int ok) {
  c->ptr = ptr;
  memcpy(c->key, key, sizeof c->key);
  c->ok = ok;
  c->valid = 1;
}

/* Checks only the launcher can make: device, page size, what TMA and the vector copies need. The
 * device and its compute capability come from api.c (cached there per device). */
static flash_mla_status_t sm90_check(const fmla_kernel_params *p, int *device) {
  *device = p->device;
  if (p->cc_major != 9 || p->cc_minor != 0)
    return fmla_set_error(FLASH_MLA_ERROR_UNSUPPORTED_DEVICE,
                          "flash_mla_decode: the Hopper kernel needs compute capability 9.0, device %d is %d.%d",
                          p->device, p->cc_major, p->cc_minor);
  if (p->page_size < 1)
    return fmla_set_error(FLASH_MLA_ERROR_UNSUPPORTED_DEVICE, "flash_mla_decode: page_size %d", p->page_size);
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

/* Launch one of the kernels with `smem` bytes of dynamic shared memory, PDL and clusters of
 * `cluster` CTAs along x. The shared-memory attribute is applied once per device (a bit per device
 * in *attr_set; devices >= 64 every time). */
template <typename Kernel, typename... Args>
static flash_mla_status_t sm90_launch_kernel(Kernel kernel, std::atomic<unsigned long long> *attr_set, dim3 grid,
                                             int threads, int smem, int device, cudaStream_t stream, const char *name,
                                             int cluster, Args... args) {
  const unsigned long long bit = device < 64 ? 1ull << device : 0ull;
  if (!bit || !(attr_set->load(std::memory_order_acquire) & bit)) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess)
      return fmla_set_error(FLASH_MLA_ERROR_CUDA, "flash_mla_decode: cudaFuncSetAttribute(%d bytes smem): %s", smem,
                            cudaGetErrorString(e));
    attr_set->fetch_or(bit, std::memory_order_acq_rel);
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3((unsigned)threads, 1, 1);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  unsigned na = 0;
  if (FMLA_SM90_PDL) {
    attr[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[na++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster > 1) {
    attr[na].id = cudaLaunchAttributeClusterDimension;
    attr[na].val.clusterDim.x = (unsigned)cluster;
    attr[na].val.clusterDim.y = 1;
    attr[na++].val.clusterDim.z = 1;
  }
  cfg.attrs = attr;
  cfg.numAttrs = na;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, args...);
  if (e != cudaSuccess)
    return fmla_set_error(FLASH_MLA_ERROR_CUDA, "flash_mla_decode: Hopper %s launch failed: %s", name, cudaGetErrorString(e));
  return FLASH_MLA_SUCCESS;
}

/* How many 2-CTA clusters of the 64-row kernel can be resident on the device at once (0: unknown),
 * asked once per device. A clustered grid must fit in one wave: its CTAs stay resident to the end. */
template <int kFp16>
static int sm90_max_clusters(int device) {
  static std::atomic<int> cached[64];
  if (device < 0 || device >= 64) return 0;
  const int v = cached[device].load(std::memory_order_acquire);
  if (v) return v - 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(2, 1, 1);
  cfg.blockDim = dim3(SM90_THREADS, 1, 1);
  cfg.dynamicSmemBytes = SM90_SMEM_BYTES;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = 2;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int n = 0;
  if (cudaFuncSetAttribute(fmla_decode_sm90_kernel<kFp16, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           SM90_SMEM_BYTES) != cudaSuccess ||
      cudaOccupancyMaxActiveClusters(&n, fmla_decode_sm90_kernel<kFp16, 1>, &cfg) != cudaSuccess) {
    (void)cudaGetLastError(); /* not sticky: keep it from the caller's next check */
    n = 0;
  }
  cached[device].store(n + 1, std::memory_order_release);
  return n;
}

/* Page sizes the K map can box (v6.13: any whose gcd with 64 is 16 or 32, i.e. 16, 32, 48, 80, 96,
 * ...: 4 or 2 boxes per 64-key tile; multiples of 64: one) go by TMA; any other (e.g. 1, 8, 24) by
 * cp.async gather (sm90_gather_block): a producer warpgroup in the
 * single-CTA 64-row kernel or (v6.11, <= 32 rows per KV head) in the narrow kernel. */
static int sm90_gather_mode(const fmla_kernel_params *p) { return sm90_box_rows(p->page_size) < 16; }

template <int kFp16>
static flash_mla_status_t sm90_launch(const fmla_kernel_params *p, const CUtensorMap *map, int device, cudaStream_t stream) {
  static std::atomic<unsigned long long> attr_set{0}, attr_set_mc{0};
  static thread_local sm90_map_cache qc = {};
  const int64_t key[8] = {p->ngroups, p->num_heads_k, p->seqlen_q, p->batch, p->q_head_stride, p->q_seq_stride,
                          p->q_batch_stride, p->dtype};
  if (!sm90_map_cache_hit(&qc, p->q, key)) {
    memset(&qc.map, 0, sizeof qc.map);
    sm90_map_cache_set(&qc, p->q, key, sm90_make_q_map(p, &qc.map));
  }
  const dim3 grid((unsigned)p->num_m_blocks, (unsigned)p->num_heads_k, (unsigned)p->num_sm_parts);
  /* M tiles in pairs (2-CTA clusters, K read once per pair by multicast) when they pair up and the
   * clustered grid fits on the device at once */
  const int gather = sm90_gather_mode(p);
  const bool pairs = FMLA_SM90_MCAST && p->num_m_blocks % 2 == 0 &&
                     (long long)sm90_max_clusters<kFp16>(device) * 2 >= (long long)grid.x * grid.y * grid.z;
  /* v6.14: with one cluster per KV head (128 rows), stage 1 is filled and read freed-first (tiles
   * 4-7, which WG1 gives back ~480 clk before WG0 gives back 0-3, then 0-3, then P_B's tile): H200
   * 2-4% faster there; with two clusters (256 rows) it measured neutral to slower (perf-notes). */
  if (pairs && !gather && p->num_blocks > 0) {
    if (FMLA_SM90_FREED_FIRST && p->num_m_blocks == 2) {
      static std::atomic<unsigned long long> attr_set_ff{0};
      return sm90_launch_kernel(fmla_decode_sm90_kernel<kFp16, 1, 0, 1>, &attr_set_ff, grid, SM90_THREADS,
                                SM90_SMEM_BYTES, device, stream, "kernel", 2, *p, *map, qc.map, qc.ok);
    }
    return sm90_launch_kernel(fmla_decode_sm90_kernel<kFp16, 1>, &attr_set_mc, grid, SM90_THREADS, SM90_SMEM_BYTES,
                              device, stream, "kernel", 2, *p, *map, qc.map, qc.ok);
  }
  /* Each CTA gathers one stage and sends it on (v6.12): it halves the gather, but a receiver waits
   * for the sender's S to reach each tile. That pays where the gather sets the pace (random rows of
   * pages of 1-4 tokens), not from page 8 up (H200, perf-notes ninth session). */
  if (pairs && gather && FMLA_SM90_GATHER_MC && p->page_size <= FMLA_SM90_GATHER_MC_MAX_PAGE) {
    static std::atomic<unsigned long long> attr_set_gmc{0};
    return sm90_launch_kernel(fmla_decode_sm90_kernel<kFp16, 1, 1>, &attr_set_gmc, grid, SM90_THREADS,
                              SM90_SMEM_BYTES, device, stream, "gather kernel (cluster)", 2, *p, *map, qc.map, qc.ok);
  }
  if (gather) {
    static std::atomic<unsigned long long> attr_set_g{0};
    return sm90_launch_kernel(fmla_decode_sm90_kernel<kFp16, 0, 1>, &attr_set_g, grid, SM90_THREADS, SM90_SMEM_BYTES,
                              device, stream, "gather kernel", 1, *p, *map, qc.map, qc.ok);
  }
  return sm90_launch_kernel(fmla_decode_sm90_kernel<kFp16, 0>, &attr_set, grid, SM90_THREADS, SM90_SMEM_BYTES, device,
                            stream, "kernel", 1, *p, *map, qc.map, qc.ok);
}

template <int kFp16, int kN>
static flash_mla_status_t nw_launch(const fmla_kernel_params *p, const CUtensorMap *map, int device, cudaStream_t stream) {
  static std::atomic<unsigned long long> attr_set{0}, attr_set_g{0};
  const dim3 grid(1u, (unsigned)p->num_heads_k, (unsigned)p->num_sm_parts);
  /* Boxes of 16 rows too (pages 16, 48, 80, ...): with <= 32 rows the kernel streams K, and 4 TMA
   * boxes per tile stream slower than the gather (H200: 1.01-1.21x for the gather at page 16; at
   * 32, 2 boxes per tile beat it). */
  if (sm90_gather_mode(p) || sm90_box_rows(p->page_size) <= FMLA_SM90_NARROW_GATHER_MAX_PAGE)
    return sm90_launch_kernel(fmla_decode_sm90_narrow_kernel<kFp16, kN, 1>, &attr_set_g, grid, NW_THREADS_GATHER,
                              nw_layout<kN>::bytes, device, stream, "narrow gather kernel", 1, *p, *map);
  return sm90_launch_kernel(fmla_decode_sm90_narrow_kernel<kFp16, kN>, &attr_set, grid, NW_THREADS,
                            nw_layout<kN>::bytes, device, stream, "narrow kernel", 1, *p, *map);
}

extern "C" flash_mla_status_t fmla_launch_decode_hopper(const fmla_kernel_params *p, void *stream) {
  int device = 0;
  flash_mla_status_t st = sm90_check(p, &device);
  if (st != FLASH_MLA_SUCCESS) return st;
  if (p->batch <= 0 || p->num_sm_parts <= 0 || p->num_m_blocks <= 0 || p->num_heads_k <= 0) return FLASH_MLA_SUCCESS;
  /* The K map depends only on the cache pointer, its shape, strides and dtype: a decode step's
   * layers reuse one cache, so keep the last map of this thread and skip the driver call. */
  static thread_local sm90_map_cache kc = {};
  const int64_t key[8] = {p->num_heads_k, p->page_size, p->num_blocks, p->k_block_stride, p->k_token_stride,
                          p->k_head_stride, p->dtype, 0};
  if (!sm90_map_cache_hit(&kc, p->k_cache, key)) {
    kc.valid = 0;
    if ((st = sm90_make_k_map(p, &kc.map)) != FLASH_MLA_SUCCESS) return st;
    sm90_map_cache_set(&kc, p->k_cache, key, 1);
  }
  const CUtensorMap map = kc.map;
  const int fp16 = p->dtype == FLASH_MLA_DTYPE_FP16;
  cudaStream_t st_ = (cudaStream_t)stream;
  if (FMLA_SM90_NARROW && p->rows <= 16)
    return fp16 ? nw_launch<1, 16>(p, &map, device, st_) : nw_launch<0, 16>(p, &map, device, st_);
  if (FMLA_SM90_NARROW && p->rows <= 32)
    return fp16 ? nw_launch<1, 32>(p, &map, device, st_) : nw_launch<0, 32>(p, &map, device, st_);
  return fp16 ? sm90_launch<1>(p, &map, device, st_) : sm90_launch<0>(p, &map, device, st_);
}

extern "C" int fmla_hopper_built(void) { return 1; }

#if FMLA_SM90_TRACE
/* Trace builds only (diagnostics, dev/cta_trace.py): copy out / clear the per-CTA stamps. */
extern "C" __attribute__((visibility("default"))) int fmla_debug_cta_trace(void *dst, int clear) {
  if (clear) {
    void *a = NULL;
    const cudaError_t e = cudaGetSymbolAddress(&a, g_sm90_cta);
    return e != cudaSuccess ? (int)e : (int)cudaMemset(a, 0, sizeof g_sm90_cta);
  }
  return (int)cudaMemcpyFromSymbol(dst, g_sm90_cta, sizeof g_sm90_cta);
}
#endif
