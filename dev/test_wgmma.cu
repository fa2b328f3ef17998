/*
 * dev/test_wgmma.cu: isolates the Hopper decode kernel (src/decode_sm90.cu) from the rest of the
 * library, in three steps, so a layout bug shows up in the smallest place that has it.
 *
 *   tile    one K block through the kernel's own TMA map and producer into both K stages, Q load,
 *           S = Q K^T wgmma (m64n64, each WG from its own stage in that stage's tile order) and
 *           O = P V wgmma (V read from the K tile as an MN-major operand; WG0's P from sPA, WG1's
 *           from stage 1's RoPE tile), compared element by element with the CPU. Page sizes 64, 32 and 16 (1, 2, 4 boxes per
 *           64-key tile), bf16 and fp16, KV head 1 of 2.
 *   decode  fmla_launch_decode_hopper end to end on hostile shapes (NaN past L, sentinel block table
 *           entries, a bad page id, L = 0, causal s_q > 1, several M tiles, strided q/out, splits),
 *           metadata from the host scheduler (src/sched_host.c), splits merged on the host with
 *           combine_math.h, against a double-precision CPU reference.
 *   bench   one big decode (kernel only, no combine), median of 30 event-timed launches.
 *   benchtp the same for the tp set's b=128 shapes that use the 64-row kernel (h_q 64 s_q 1, 32/2, 64/2).
 *   trace   [s_q [L]]: the bench shape with -DFMLA_SM90_TRACE=1: median timeline of a pair (clock64).
 *
 * Build and run (on an H100/H200; sm_90a only):
 *   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Iinclude -Isrc \
 *        dev/test_wgmma.cu src/sched_host.c -o /tmp/test_wgmma && /tmp/test_wgmma [tile|decode|bench|all]
 * Add -DFMLA_SM90_DEBUG=1 to turn a hang into a printf + trap naming the barrier.
 */
#include "../src/decode_sm90.cu"
#include "../src/combine_math.h"

#include <stdarg.h>
#include <stdlib.h>

#include <algorithm>
#include <vector>

/* api.c is not linked: the launcher's error hooks. */
static char g_err[512];
extern "C" flash_mla_status_t fmla_set_error(flash_mla_status_t status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_err, sizeof g_err, fmt, ap);
  va_end(ap);
  return status;
}
extern "C" void fmla_clear_error(void) { g_err[0] = 0; }

#include "cuda_check.h"

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float frand(void) { /* uniform in [-1, 1) */
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return (float)((g_rng >> 40) & 0xFFFFFF) / 8388608.f - 1.f;
}
static uint16_t f2h(float f, int fp16) {
  if (fp16) {
    __half h = __float2half_rn(f);
    return *(uint16_t *)&h;
  }
  __nv_bfloat16 b = __float2bfloat16_rn(f);
  return *(uint16_t *)&b;
}
static float h2f(uint16_t u, int fp16) {
  if (fp16) return __half2float(*(__half *)&u);
  return __bfloat162float(*(__nv_bfloat16 *)&u);
}
static const uint16_t kNaN16[2] = {0x7FC0, 0x7E00}; /* bf16 NaN, fp16 NaN */

/* ===================================== tile ===================================== */

template <int kFp16>
__global__ void __launch_bounds__(SM90_THREADS, 1)
    tile_kernel(const __grid_constant__ fmla_kernel_params p, const __grid_constant__ CUtensorMap map, int hk,
                const float *Pin, float *Sout, float *Oout) {
#if FMLA_SM90_DEVICE
  /* The same K block goes into both stages (stage 0 fills tile 8 first, stage 1 in order). WG0
   * computes S from stage 0 (Sout[0]) and O[:, 0:256] from P in sPA; WG1 computes S from stage 1
   * (Sout[1]) and O[:, 256:512] from P written over stage 1's RoPE tile, as the kernel does. */
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t *smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  const uint32_t sbase = smem_u32(smem);
  const uint32_t sQ = sbase + SM90_OFF_Q, sK = sbase + SM90_OFF_K, sPA = sbase + SM90_OFF_PA;
  const uint32_t full0 = sbase + SM90_OFF_FULL, empty0 = sbase + SM90_OFF_EMPTY;
  if (threadIdx.x == 0) {
    for (int k = 0; k < 2 * SM90_NTILES; ++k) {
      mbarrier_init(full0 + k * 8, 1);
      mbarrier_init(empty0 + k * 8, 4);
    }
    fence_mbarrier_init_release_cluster();
  }
  __syncthreads();
  if (threadIdx.x >= SM90_CONSUMER_THREADS) {
    setmaxnreg_dec<40>();
    if (threadIdx.x == SM90_CONSUMER_THREADS) {
      const uint64_t pol = createpolicy_fractional_l2_evict_normal();
      uint64_t *zm = (uint64_t *)(smem + SM90_OFF_ZMASK);
      sm90_produce_block(p, &map, 0, hk, 0, 64, 0, 0, sK, full0, empty0, &zm[0], pol);
      sm90_produce_block(p, &map, 0, hk, 0, 64, 1, 0, sK + SM90_STAGE_BYTES, full0 + SM90_NTILES * 8,
                         empty0 + SM90_NTILES * 8, &zm[1], pol);
    }
    return;
  }
  setmaxnreg_inc<232>();
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, quad = lane & 3;
  const int r0 = warp * 16 + (lane >> 2);
  const uint32_t kst = sK + wg * SM90_STAGE_BYTES;
  const uint32_t sP = wg ? kst + SM90_P_B_TILE * SM90_TILE_BYTES : sPA;
  sm90_load_q(p, sQ, 0, hk, 0, tid, SM90_CONSUMER_THREADS);
  cp_async_wait_all();
  fence_proxy_async_shared_cta();
  bar_sync(SM90_BAR_CONSUMERS, SM90_CONSUMER_THREADS);
  float s[32];
  uint32_t q8[16];
  sm90_load_q8(sQ, r0, quad, true, q8);
  if (wg == 0)
    sm90_qk<kFp16, 0, 0>(s, sQ, kst, full0, 0, q8);
  else
    sm90_qk<kFp16, 1, 0>(s, sQ, kst, full0 + SM90_NTILES * 8, 0, q8);
  wgmma_wait<0>();
  for (int k = 0; k < 32; ++k) fence_operand(s[k]);
  for (int c = 0; c < 8; ++c)
    for (int e = 0; e < 4; ++e) {
      const int row = r0 + 8 * (e >> 1), col = 8 * c + 2 * quad + (e & 1);
      Sout[wg * 64 * 64 + row * 64 + col] = s[4 * c + e];
      s[4 * c + e] = Pin[row * 64 + col];
    }
  sm90_store_p<kFp16>(sP, s, r0, quad);
  fence_proxy_async_shared_cta();
  bar_sync(SM90_BAR_CONSUMERS, SM90_CONSUMER_THREADS);
  float o[128];
  for (int k = 0; k < 128; ++k) o[k] = 0.f;
  sm90_pv<kFp16>(o, sP, kst, wg);
  wgmma_wait<0>();
  for (int k = 0; k < 128; ++k) fence_operand(o[k]);
  for (int c = 0; c < 32; ++c)
    for (int e = 0; e < 4; ++e) {
      const int row = r0 + 8 * (e >> 1), col = wg * 256 + 8 * c + 2 * quad + (e & 1);
      Oout[row * 512 + col] = o[4 * c + e];
    }
#endif
}

static int run_tile(int fp16, int page) {
  const int h_kv = 2, hk = 1, h_q = 128, nblocks = 8;
  /* q [1, 1, 128, 576]; k_cache [8, page, 2, 576]; block table: a permutation */
  std::vector<uint16_t> q((size_t)h_q * 576), kc((size_t)nblocks * page * h_kv * 576);
  for (auto &x : q) x = f2h(frand(), fp16);
  for (auto &x : kc) x = f2h(frand(), fp16);
  int bt[8] = {5, 2, 7, 0, 3, 6, 1, 4};
  std::vector<float> P(64 * 64);
  for (auto &x : P) x = h2f(f2h(0.5f * (frand() + 1.f), fp16), fp16);
  void *dq, *dk;
  int *dbt;
  float *dP, *dS, *dO;
  CK(cudaMalloc(&dq, q.size() * 2));
  CK(cudaMalloc(&dk, kc.size() * 2));
  CK(cudaMalloc(&dbt, sizeof bt));
  CK(cudaMalloc(&dP, 64 * 64 * 4));
  CK(cudaMalloc(&dS, 2 * 64 * 64 * 4));
  CK(cudaMalloc(&dO, 64 * 512 * 4));
  CK(cudaMemcpy(dq, q.data(), q.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dk, kc.data(), kc.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dbt, bt, sizeof bt, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dP, P.data(), P.size() * 4, cudaMemcpyHostToDevice));
  fmla_kernel_params p;
  memset(&p, 0, sizeof p);
  p.cc_major = 9; /* the launcher trusts api.c's device query; this tool runs on device 0, an H100/H200 */
  p.cc_minor = 0;
  p.dtype = fp16;
  p.batch = 1;
  p.seqlen_q = 1;
  p.num_heads_q = h_q;
  p.num_heads_k = h_kv;
  p.ngroups = h_q / h_kv;
  p.rows = p.ngroups;
  p.num_m_blocks = 1;
  p.num_blocks = nblocks;
  p.page_size = page;
  p.max_blocks_per_seq = 8;
  p.q = dq;
  p.q_batch_stride = (int64_t)h_q * 576;
  p.q_seq_stride = (int64_t)h_q * 576;
  p.q_head_stride = 576;
  p.k_cache = dk;
  p.k_head_stride = 576;
  p.k_token_stride = (int64_t)h_kv * 576;
  p.k_block_stride = (int64_t)page * h_kv * 576;
  p.block_table = dbt;
  p.block_table_stride = 8;
  CUtensorMap map;
  if (sm90_make_k_map(&p, &map) != FLASH_MLA_SUCCESS) {
    printf("tile: map: %s\n", g_err);
    return 1;
  }
  auto kern = fp16 ? tile_kernel<1> : tile_kernel<0>;
  CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, SM90_SMEM_BYTES));
  kern<<<1, SM90_THREADS, SM90_SMEM_BYTES>>>(p, map, hk, dP, dS, dO);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  std::vector<float> S(2 * 64 * 64), O(64 * 512);
  CK(cudaMemcpy(S.data(), dS, S.size() * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(O.data(), dO, O.size() * 4, cudaMemcpyDeviceToHost));
  auto K = [&](int j, int d) {
    const int pg = bt[j / page], slot = j % page;
    return h2f(kc[(((size_t)pg * page + slot) * h_kv + hk) * 576 + d], fp16);
  };
  int bad = 0;
  double maxe = 0;
  for (int st = 0; st < 2; ++st) /* S from stage 0 (WG0) and from stage 1 (WG1) */
    for (int r = 0; r < 64; ++r)
      for (int j = 0; j < 64; ++j) {
        double ref = 0;
        for (int d = 0; d < 576; ++d) ref += (double)h2f(q[(size_t)(hk * 64 + r) * 576 + d], fp16) * K(j, d);
        const float got = S[st * 4096 + r * 64 + j];
        const double e = fabs(ref - got);
        maxe = std::max(maxe, e);
        if (!(e <= 1e-3 + 1e-4 * fabs(ref)) && bad++ < 5) printf("  stage %d S[%d][%d] = %f, ref %f\n", st, r, j, got, ref);
      }
  printf("tile %s page %2d: S max abs err %.2e", fp16 ? "fp16" : "bf16", page, maxe);
  maxe = 0;
  int badO = 0;
  for (int r = 0; r < 64; ++r)
    for (int c = 0; c < 512; ++c) {
      double ref = 0;
      for (int j = 0; j < 64; ++j) ref += (double)P[r * 64 + j] * K(j, c);
      const double e = fabs(ref - O[r * 512 + c]);
      maxe = std::max(maxe, e);
      if (!(e <= 1e-3 + 1e-4 * fabs(ref)) && badO++ < 5) printf("\n  O[%d][%d] = %f, ref %f", r, c, O[r * 512 + c], ref);
    }
  printf(", O max abs err %.2e  %s\n", maxe, bad + badO ? "FAIL" : "ok");
  cudaFree(dq);
  cudaFree(dk);
  cudaFree(dbt);
  cudaFree(dP);
  cudaFree(dS);
  cudaFree(dO);
  return bad + badO ? 1 : 0;
}

/* ===================================== decode ===================================== */

typedef struct dcase {
  int fp16, b, s_q, h_q, h_kv, page, causal, parts;
  int lens[4];
  int bad_page; /* 1: one block-table entry inside L is out of range; 2: every 64-key block n with
                  * n % 8 in 1..6 (all its pages) out of range, so both K stages see runs of bad blocks */
  int pad;      /* extra elements per q/out head (strided q/out) */
} dcase;

static int run_decode(const dcase &c, int verbose) {
  const int fp16 = c.fp16, b = c.b, s_q = c.s_q, h_q = c.h_q, h_kv = c.h_kv, page = c.page;
  const int ng = h_q / h_kv, rows = s_q * ng;
  int maxL = 0;
  for (int i = 0; i < b; ++i) maxL = std::max(maxL, c.lens[i]);
  const int max_blocks = (maxL + page - 1) / page + 1;
  const int nblocks = b * max_blocks + 3;
  const float scale = 1.f / sqrtf(576.f);
  /* q [b, s_q, h_q, 576 + pad]; out [b, s_q, h_q, 512 + pad] */
  const int64_t qhs = 576 + c.pad, qss = h_q * qhs, qbs = s_q * qss;
  const int64_t ohs = 512 + c.pad, oss = h_q * ohs, obs = s_q * oss;
  std::vector<uint16_t> q((size_t)b * qbs), kc((size_t)nblocks * page * h_kv * 576, kNaN16[fp16]);
  for (auto &x : q) x = f2h(frand(), fp16);
  std::vector<int> bt((size_t)b * max_blocks, 2147480000);
  std::vector<int> perm(nblocks);
  for (int k = 0; k < nblocks; ++k) perm[k] = k;
  for (int k = nblocks - 1; k > 0; --k) std::swap(perm[k], perm[(g_rng = g_rng * 6364136223846793005ull + 1) % (k + 1)]);
  int next = 0, bad_i = -1, bad_pg = -1;
  for (int i = 0; i < b; ++i) {
    const int np = (c.lens[i] + page - 1) / page;
    for (int pg = 0; pg < np; ++pg) {
      const int id = perm[next++];
      bt[(size_t)i * max_blocks + pg] = id;
      const int n = std::min(page, c.lens[i] - pg * page); /* slots past L stay NaN */
      for (int s = 0; s < n; ++s)
        for (int h = 0; h < h_kv; ++h)
          /* std ~0.1 like FlashMLA's test data (clamp(randn / 10)), for which the out tolerance
           * below was set: with K ~ U[-1, 1) the bf16 rounding of P alone exceeds it on short rows. */
          for (int d = 0; d < 576; ++d) kc[(((size_t)id * page + s) * h_kv + h) * 576 + d] = f2h(0.17f * frand(), fp16);
    }
    if (c.bad_page == 2) {
      for (int pg = 0; pg < np; ++pg) {
        const int nb = pg * page / 64;
        if (nb % 8 >= 1 && nb % 8 <= 6) bt[(size_t)i * max_blocks + pg] = (pg & 1) ? -7 : nblocks + 5 + pg;
      }
      bad_i = i;
    } else if (c.bad_page && np >= 2 && bad_i < 0) {
      bad_i = i;
      bad_pg = np / 2;
      bt[(size_t)i * max_blocks + bad_pg] = (i & 1) ? -7 : nblocks + 5;
    }
  }
  /* scheduler metadata (host twin) */
  std::vector<int> meta((size_t)c.parts * FMLA_META_SIZE), nsp(b + 1);
  if (flash_mla_get_metadata_host(c.lens, b, c.parts, meta.data(), nsp.data()) != FLASH_MLA_SUCCESS) {
    printf("metadata: %s\n", g_err);
    return 1;
  }
  const int64_t slots = b + c.parts;
  void *dq, *dk, *dout;
  int *dbt, *dlen, *dmeta, *dnsp;
  float *dlse, *doa, *dla;
  CK(cudaMalloc(&dq, q.size() * 2));
  CK(cudaMalloc(&dk, kc.size() * 2));
  CK(cudaMalloc(&dout, (size_t)b * obs * 2));
  CK(cudaMalloc(&dbt, bt.size() * 4));
  CK(cudaMalloc(&dlen, b * 4));
  CK(cudaMalloc(&dmeta, meta.size() * 4));
  CK(cudaMalloc(&dnsp, nsp.size() * 4));
  CK(cudaMalloc(&dlse, (size_t)b * h_q * s_q * 4));
  CK(cudaMalloc(&doa, (size_t)slots * h_kv * rows * 512 * 4));
  CK(cudaMalloc(&dla, (size_t)slots * h_kv * rows * 4));
  CK(cudaMemcpy(dq, q.data(), q.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dk, kc.data(), kc.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dbt, bt.data(), bt.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dlen, c.lens, b * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dmeta, meta.data(), meta.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dnsp, nsp.data(), nsp.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemset(dout, 0xFF, (size_t)b * obs * 2)); /* poison: an unwritten element fails */
  CK(cudaMemset(dlse, 0xFF, (size_t)b * h_q * s_q * 4));
  CK(cudaMemset(doa, 0xFF, (size_t)slots * h_kv * rows * 512 * 4));
  CK(cudaMemset(dla, 0xFF, (size_t)slots * h_kv * rows * 4));
  fmla_kernel_params p;
  memset(&p, 0, sizeof p);
  p.cc_major = 9; /* the launcher trusts api.c's device query; this tool runs on device 0, an H100/H200 */
  p.cc_minor = 0;
  p.dtype = fp16;
  p.batch = b;
  p.seqlen_q = s_q;
  p.num_heads_q = h_q;
  p.num_heads_k = h_kv;
  p.ngroups = ng;
  p.rows = rows;
  p.num_m_blocks = (rows + 63) / 64;
  p.num_blocks = nblocks;
  p.page_size = page;
  p.max_blocks_per_seq = max_blocks;
  p.causal = c.causal;
  p.scale = scale;
  p.scale_log2 = scale * 1.4426950408889634f;
  p.q = dq;
  p.q_batch_stride = qbs;
  p.q_seq_stride = qss;
  p.q_head_stride = qhs;
  p.k_cache = dk;
  p.k_block_stride = (int64_t)page * h_kv * 576;
  p.k_token_stride = (int64_t)h_kv * 576;
  p.k_head_stride = 576;
  p.block_table = dbt;
  p.block_table_stride = max_blocks;
  p.cache_seqlens = dlen;
  p.out = dout;
  p.out_batch_stride = obs;
  p.out_seq_stride = oss;
  p.out_head_stride = ohs;
  p.lse = dlse;
  p.meta = dmeta;
  p.num_sm_parts = c.parts;
  p.num_splits = dnsp;
  p.o_accum = doa;
  p.lse_accum = dla;
  const flash_mla_status_t st = fmla_launch_decode_hopper(&p, 0);
  if (st != FLASH_MLA_SUCCESS) {
    printf("decode: launch: %d %s\n", (int)st, g_err);
    return 1;
  }
  CK(cudaDeviceSynchronize());
  std::vector<uint16_t> out((size_t)b * obs);
  std::vector<float> lse((size_t)b * h_q * s_q), oa((size_t)slots * h_kv * rows * 512), la((size_t)slots * h_kv * rows);
  CK(cudaMemcpy(out.data(), dout, out.size() * 2, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(lse.data(), dlse, lse.size() * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(oa.data(), doa, oa.size() * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(la.data(), dla, la.size() * 4, cudaMemcpyDeviceToHost));

  int nbad = 0;
  double max_out_err = 0;
  std::vector<double> sc, ref(512);
  std::vector<float> got(512);
  for (int i = 0; i < b; ++i) {
    const int L = c.lens[i], s0 = fmla_ns_slot(nsp.data(), b, i), ns = fmla_ns_slot(nsp.data(), b, i + 1) - s0;
    for (int t = 0; t < s_q; ++t)
      for (int h = 0; h < h_q; ++h) {
        const int hk = h / ng, r = t * ng + h % ng;
        int lim = c.causal ? L - (s_q - 1 - t) : L;
        lim = std::min(lim, L);
        /* reference */
        sc.assign(std::max(lim, 0), 0.0);
        double m = -INFINITY;
        for (int j = 0; j < lim; ++j) {
          const int id = bt[(size_t)i * max_blocks + j / page];
          double s = 0;
          if (id >= 0 && id < nblocks)
            for (int d = 0; d < 576; ++d)
              s += (double)h2f(q[i * qbs + t * qss + h * qhs + d], fp16) *
                   h2f(kc[(((size_t)id * page + j % page) * h_kv + hk) * 576 + d], fp16);
          sc[j] = s * scale;
          m = std::max(m, sc[j]);
        }
        double l = 0;
        std::fill(ref.begin(), ref.end(), 0.0);
        for (int j = 0; j < lim; ++j) {
          const double w = exp(sc[j] - m);
          l += w;
          const int id = bt[(size_t)i * max_blocks + j / page];
          if (id >= 0 && id < nblocks)
            for (int d = 0; d < 512; ++d) ref[d] += w * h2f(kc[(((size_t)id * page + j % page) * h_kv + hk) * 576 + d], fp16);
        }
        const double ref_lse = lim > 0 ? m + log(l) : INFINITY;
        for (int d = 0; d < 512; ++d) ref[d] = lim > 0 ? ref[d] / l : 0.0;
        /* GPU result (merge splits on the host) */
        float g_lse;
        if (ns <= 1) {
          for (int d = 0; d < 512; ++d) got[d] = h2f(out[i * obs + t * oss + h * ohs + d], fp16);
          g_lse = lse[((size_t)i * h_q + h) * s_q + t];
        } else {
          float lk[64];
          for (int k = 0; k < ns; ++k) lk[k] = la[((size_t)(s0 + k) * h_kv + hk) * rows + r];
          g_lse = fmla_merge_lse(lk, ns);
          for (int d = 0; d < 512; ++d) {
            float acc = 0;
            for (int k = 0; k < ns; ++k)
              acc += fmla_merge_weight(lk[k], g_lse) * oa[(((size_t)(s0 + k) * h_kv + hk) * rows + r) * 512 + d];
            got[d] = acc;
          }
        }
        const bool lse_ok = (std::isinf(ref_lse) && std::isinf(g_lse) && g_lse > 0) ||
                            (!std::isinf(ref_lse) && fabs(g_lse - ref_lse) <= std::max(1e-6, 8.0 / 65536 * fabs(ref_lse)));
        bool out_ok = true;
        int bad_d = -1;
        for (int d = 0; d < 512; ++d) {
          const double e = fabs(got[d] - ref[d]);
          if (!(e <= 8e-4 || e <= 2.0 / 128 * fabs(ref[d]))) {
            out_ok = false;
            if (bad_d < 0) bad_d = d;
          }
          if (e == e) max_out_err = std::max(max_out_err, e);
        }
        if ((!lse_ok || !out_ok) && nbad++ < 6)
          printf("  mismatch b=%d t=%d h=%d (L=%d lim=%d splits=%d): lse %f ref %f; out[%d] %f ref %f\n", i, t, h, L, lim,
                 ns, g_lse, ref_lse, bad_d < 0 ? 0 : bad_d, bad_d < 0 ? 0.f : got[bad_d], bad_d < 0 ? 0.0 : ref[bad_d]);
      }
  }
  int maxsplit = 0;
  for (int i = 0; i < b; ++i) maxsplit = std::max(maxsplit, fmla_ns_slot(nsp.data(), b, i + 1) - fmla_ns_slot(nsp.data(), b, i));
  printf("decode %s b=%d s_q=%d h_q=%d h_kv=%d page=%d causal=%d parts=%d pad=%d badpage=%d lens=", fp16 ? "fp16" : "bf16", b,
         s_q, h_q, h_kv, page, c.causal, c.parts, c.pad, bad_i >= 0);
  for (int i = 0; i < b; ++i) printf("%d%s", c.lens[i], i + 1 < b ? "," : "");
  printf(" max_splits=%d: max out err %.2e  %s\n", maxsplit, max_out_err, nbad ? "FAIL" : "ok");
  (void)verbose;
  (void)bad_pg;
  cudaFree(dq);
  cudaFree(dk);
  cudaFree(dout);
  cudaFree(dbt);
  cudaFree(dlen);
  cudaFree(dmeta);
  cudaFree(dnsp);
  cudaFree(dlse);
  cudaFree(doa);
  cudaFree(dla);
  return nbad ? 1 : 0;
}

/* ===================================== bench ===================================== */

#if FMLA_SM90_TRACE
/* Median over pairs of (slot time of pair k) - (WG0's loop top of pair k): where each step of a pair
 * happens, in SM clocks, for CTAs 0 and 1. Slots: the SM90_TR calls in src/decode_sm90.cu. */
static void print_trace(int npairs) {
  static long long tr[4][SM90_TRACE_PAIRS][SM90_TRACE_SLOTS];
  CK(cudaMemcpyFromSymbol(tr, g_sm90_trace, sizeof tr));
  static const char *names[SM90_TRACE_SLOTS] = {
      "P  before stage0 block", "P  stage0 all 9 issued", "", "P  stage1 all 9 issued",
      "P  stage0 1st tile issued", "P  stage0 tile j=4 issued", "P  stage1 1st tile issued", "P  stage1 tile j=4 issued",
      "W0 loop top", "W0 stage0 tile8 full", "W0 S_A done", "W0 P_A published", "W0 m_B acquired", "W0 PB acquired",
      "W0 PV_B_L issued", "W0 prev PV_B_L done+rel", "W1 loop top", "W1 prev PV_B_R done+rel", "W1 stage1 1st full",
      "W1 S_B done", "W1 took P_A", "W1 P_B published", "W1 PV_B_R issued", "W1 PV_A_R done+rel",
      "W0 softmax A exp done", "W0 P_A stored", "W0 fence.proxy.async done", "W0 bar.sync WG0 done",
      "W1 softmax B exp done", "W1 P_B stored", "", ""};
  const int hi = npairs < SM90_TRACE_PAIRS ? npairs - 2 : SM90_TRACE_PAIRS - 2, lo = 8;
  for (int cta = 0; cta < 4; ++cta) { /* CTAs 2-3 (the second cluster) exist with 256 rows only */
    bool any = false;
    for (int k = lo; k < hi && !any; ++k) any = tr[cta][k][8] != 0;
    if (!any) continue;
    printf("trace CTA %d: median over pairs %d..%d of (slot time - W0 loop top of the same pair), SM clocks\n", cta, lo,
           hi);
    std::vector<long long> per;
    for (int k = lo; k < hi; ++k) /* pairs this CTA recorded (a part may hold fewer than npairs) */
      if (tr[cta][k][8] && tr[cta][k + 1][8]) per.push_back(tr[cta][k + 1][8] - tr[cta][k][8]);
    if (per.empty()) continue;
    std::sort(per.begin(), per.end());
    printf("  pair period (W0 loop top to next): median %lld, p10 %lld, p90 %lld\n", per[per.size() / 2],
           per[per.size() / 10], per[per.size() * 9 / 10]);
    for (int sl = 0; sl < SM90_TRACE_SLOTS; ++sl) {
      if (!names[sl][0]) continue;
      std::vector<long long> v;
      for (int k = lo; k < hi; ++k)
        if (tr[cta][k][sl] && tr[cta][k][8]) v.push_back(tr[cta][k][sl] - tr[cta][k][8]);
      if (v.empty()) continue;
      std::sort(v.begin(), v.end());
      printf("  %2d %-28s %7lld  (p10 %7lld, p90 %7lld)\n", sl, names[sl], v[v.size() / 2], v[v.size() / 10],
             v[v.size() * 9 / 10]);
    }
  }
}
#endif

static void run_bench(int b, int s_q, int h_q, int L, int fp16) {
  const int h_kv = 1, page = 64, rows = s_q * h_q, mb = (rows + 63) / 64;
  int dev = 0, sms = 0;
  CK(cudaGetDevice(&dev));
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  const int parts = std::max(1, sms / (h_kv * mb));
  const int max_blocks = (L + page - 1) / page, nblocks = b * max_blocks;
  std::vector<uint16_t> q((size_t)b * s_q * h_q * 576);
  for (auto &x : q) x = f2h(frand(), fp16);
  std::vector<int> bt((size_t)b * max_blocks), lens(b, L);
  for (size_t k = 0; k < bt.size(); ++k) bt[k] = (int)k;
  std::vector<int> meta((size_t)parts * FMLA_META_SIZE), nsp(b + 1);
  flash_mla_get_metadata_host(lens.data(), b, parts, meta.data(), nsp.data());
  void *dq, *dk, *dout;
  int *dbt, *dlen, *dmeta, *dnsp;
  float *dlse, *doa, *dla;
  const size_t kbytes = (size_t)nblocks * page * 576 * 2;
  CK(cudaMalloc(&dq, q.size() * 2));
  CK(cudaMalloc(&dk, kbytes));
  CK(cudaMemset(dk, 0x3c, kbytes)); /* small finite values (bf16 ~0.011, fp16 ~1.06) */
  CK(cudaMalloc(&dout, (size_t)b * s_q * h_q * 512 * 2));
  CK(cudaMalloc(&dbt, bt.size() * 4));
  CK(cudaMalloc(&dlen, b * 4));
  CK(cudaMalloc(&dmeta, meta.size() * 4));
  CK(cudaMalloc(&dnsp, nsp.size() * 4));
  CK(cudaMalloc(&dlse, (size_t)b * h_q * s_q * 4));
  CK(cudaMalloc(&doa, (size_t)(b + parts) * rows * 512 * 4));
  CK(cudaMalloc(&dla, (size_t)(b + parts) * rows * 4));
  CK(cudaMemcpy(dq, q.data(), q.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dbt, bt.data(), bt.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dlen, lens.data(), b * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dmeta, meta.data(), meta.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dnsp, nsp.data(), nsp.size() * 4, cudaMemcpyHostToDevice));
  fmla_kernel_params p;
  memset(&p, 0, sizeof p);
  p.cc_major = 9; /* the launcher trusts api.c's device query; this tool runs on device 0, an H100/H200 */
  p.cc_minor = 0;
  p.dtype = fp16;
  p.batch = b;
  p.seqlen_q = s_q;
  p.num_heads_q = h_q;
  p.num_heads_k = h_kv;
  p.ngroups = h_q;
  p.rows = rows;
  p.num_m_blocks = mb;
  p.num_blocks = nblocks;
  p.page_size = page;
  p.max_blocks_per_seq = max_blocks;
  p.causal = s_q > 1;
  p.scale = 1.f / sqrtf(576.f);
  p.scale_log2 = p.scale * 1.4426950408889634f;
  p.q = dq;
  p.q_batch_stride = (int64_t)s_q * h_q * 576;
  p.q_seq_stride = (int64_t)h_q * 576;
  p.q_head_stride = 576;
  p.k_cache = dk;
  p.k_block_stride = (int64_t)page * 576;
  p.k_token_stride = 576;
  p.k_head_stride = 576;
  p.block_table = dbt;
  p.block_table_stride = max_blocks;
  p.cache_seqlens = dlen;
  p.out = dout;
  p.out_batch_stride = (int64_t)s_q * h_q * 512;
  p.out_seq_stride = (int64_t)h_q * 512;
  p.out_head_stride = 512;
  p.lse = dlse;
  p.meta = dmeta;
  p.num_sm_parts = parts;
  p.num_splits = dnsp;
  p.o_accum = doa;
  p.lse_accum = dla;
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int k = 0; k < 3; ++k)
    if (fmla_launch_decode_hopper(&p, 0) != FLASH_MLA_SUCCESS) {
      printf("bench: %s\n", g_err);
      return;
    }
  CK(cudaDeviceSynchronize());
  std::vector<float> ms;
  for (int k = 0; k < 30; ++k) {
    CK(cudaEventRecord(e0));
    fmla_launch_decode_hopper(&p, 0);
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float x;
    CK(cudaEventElapsedTime(&x, e0, e1));
    ms.push_back(x);
  }
  std::sort(ms.begin(), ms.end());
  const double t = ms[ms.size() / 2] * 1e-3;
#if FMLA_SM90_TRACE
  print_trace(b * max_blocks / parts / 2); /* pairs of CTA (0, 0, 0), from its last launch */
#endif
  const double flops = 2.0 * b * s_q * h_q * (double)L * (576 + 512);
  const double bytes = (double)b * L * 576 * 2 + (double)b * s_q * h_q * (576 + 512) * 2;
  printf("bench %s on %s: b=%d s_q=%d h_q=%d L=%d parts=%d: %.1f us, %.0f TFLOPS, %.0f GB/s (kernel only, no combine)\n",
         fp16 ? "fp16" : "bf16", prop.name, b, s_q, h_q, L, parts, t * 1e6, flops / t * 1e-12, bytes / t * 1e-9);
  cudaFree(dq);
  cudaFree(dk);
  cudaFree(dout);
  cudaFree(dbt);
  cudaFree(dlen);
  cudaFree(dmeta);
  cudaFree(dnsp);
  cudaFree(dlse);
  cudaFree(doa);
  cudaFree(dla);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "all";
  const bool all = !strcmp(mode, "all");
  int fails = 0, runs = 0;
  if (all || !strcmp(mode, "tile")) {
    const int pages[3] = {64, 32, 16};
    for (int fp16 = 0; fp16 < 2; ++fp16)
      for (int k = 0; k < 3; ++k, ++runs) fails += run_tile(fp16, pages[k]);
  }
  if (all || !strcmp(mode, "decode")) {
    /*            fp16 b s_q h_q h_kv page causal parts lens                bad pad */
    const dcase cases[] = {
        {0, 2, 1, 128, 1, 64, 0, 4, {300, 64}, 0, 0},
        {0, 1, 1, 16, 1, 64, 0, 1, {64}, 0, 0},
        {1, 3, 2, 16, 1, 16, 1, 3, {0, 1, 130}, 0, 0},
        {0, 2, 4, 32, 2, 32, 1, 5, {5, 200}, 0, 8},
        {0, 1, 1, 1, 1, 128, 0, 8, {1000}, 0, 0},
        {1, 2, 3, 128, 1, 64, 1, 4, {2, 513}, 0, 16},
        {0, 1, 1, 16, 1, 16, 0, 2, {100}, 1, 0},
        {1, 2, 1, 64, 1, 64, 0, 3, {700, 129}, 1, 0},
        {0, 4, 1, 128, 4, 256, 0, 7, {1, 63, 65, 1025}, 0, 0},
        {1, 1, 5, 10, 5, 32, 1, 2, {37}, 0, 0},
        /* v2 pairs: one part walks several segments with odd and even block counts, so stage 1
         * (B blocks) falls behind stage 0 in use count; long runs exercise the rescale flag. */
        {0, 3, 1, 128, 1, 64, 0, 1, {129, 64, 2000}, 0, 0},
        {1, 4, 2, 64, 1, 32, 1, 2, {1, 191, 4000, 65}, 1, 0},
        {0, 1, 1, 32, 1, 64, 0, 1, {8191}, 1, 0},
        {0, 4, 2, 128, 1, 16, 1, 3, {640, 576, 1, 1217}, 0, 0},
        /* runs of bad blocks on both stages of the 2-CTA cluster path (128 and 256 rows), few parts
         * so segments are long; pages of 64 and 16 keys */
        {0, 2, 1, 128, 1, 64, 0, 2, {4000, 2900}, 2, 0},
        {1, 2, 2, 128, 1, 64, 1, 3, {3000, 4100}, 2, 0},
        {0, 2, 1, 128, 1, 16, 0, 2, {2500, 3300}, 2, 0},
    };
    for (const dcase &c : cases) {
      fails += run_decode(c, 0);
      ++runs;
    }
  }
  if (!strcmp(mode, "trace")) { /* build with -DFMLA_SM90_TRACE=1: trace [s_q [L]] */
    const int sq = argc > 2 ? atoi(argv[2]) : 1, L = argc > 3 ? atoi(argv[3]) : 4096;
    run_bench(128, sq, 128, L, 0);
  }
  if (!strcmp(mode, "benchtp")) { /* the tp set's b=128 shapes on the 64-row kernel (64 and 128 rows) */
    run_bench(128, 1, 64, 8192, 0);
    run_bench(128, 2, 32, 8192, 0);
    run_bench(128, 2, 64, 8192, 0);
  }
  if (all || !strcmp(mode, "bench")) {
    run_bench(128, 1, 128, 4096, 0);
    run_bench(128, 2, 128, 4096, 0);
    run_bench(132, 1, 16, 8192, 0);
  }
  printf("%d passed, %d failed\n", runs - fails, fails);
  return fails ? 1 : 0;
}
