/*
 * test_api.c: argument validation of the public API, on a machine with or without a GPU.
 *
 * A table of {name, mutation of a valid flash_mla_decode_params_t, expected status, argument the
 * message must name} runs against flash_mla_decode_ref and flash_mla_decode (host pointers: every
 * case must fail in validation, before any device work). Then the checks only the reference can
 * make (cache_seqlens and block_table values), the other arguments of flash_mla_decode,
 * flash_mla_get_metadata, flash_mla_get_num_sm_parts and flash_mla_decode_workspace_size, status
 * strings and the version. On every error out and lse must be untouched (byte compare) and
 * flash_mla_last_error() must name the argument; after a success it must be "".
 *
 * A valid flash_mla_decode / flash_mla_get_metadata call with host pointers must return
 * FLASH_MLA_ERROR_NO_DEVICE without a GPU, and FLASH_MLA_ERROR_INVALID_MEMORY with one.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flash_mla.h"
#include "params.h"
#include "test_util.h"

/* ---- a small valid problem: b = 2, s_q = 2, h_q = 4, h_kv = 2, page 16, L = {40, 0} ---- */
#define B 2
#define SQ 2
#define HQ 4
#define HKV 2
#define PAGE 16
#define MAXB 4
#define NBLK 8
#define UNUSED_BT 2147480000

static uint16_t *g_q, *g_k, *g_out;
static float *g_lse;
static int32_t g_bt[B * MAXB], g_L[B];
static size_t g_out_bytes, g_lse_bytes;
static unsigned char *g_out_poison, *g_lse_poison;
static int g_have_gpu;

/* Every buffer has 1 MiB of slack, so a validator that wrongly accepts a stride makes checks
 * fail instead of corrupting the heap. */
static void *xalloc(size_t bytes) {
  void *p = aligned_alloc(256, (bytes + 255) / 256 * 256 + (1u << 20));
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  return p;
}

static void setup(void) {
  tu_rng r = tu_rng_make(42);
  const size_t nq = (size_t)B * SQ * HQ * 576, nk = (size_t)NBLK * PAGE * HKV * 576, no = (size_t)B * SQ * HQ * 512;
  g_q = xalloc(nq * 2);
  g_k = xalloc(nk * 2);
  g_out_bytes = no * 2;
  g_out = xalloc(g_out_bytes);
  g_lse_bytes = sizeof(float) * B * HQ * SQ;
  g_lse = xalloc(g_lse_bytes);
  for (size_t i = 0; i < nq; ++i) g_q[i] = tu_float_to_bf16((float)tu_normal(&r));
  for (size_t i = 0; i < nk; ++i) g_k[i] = TU_BF16_NAN;
  g_L[0] = 40;
  g_L[1] = 0;
  for (int i = 0; i < B * MAXB; ++i) g_bt[i] = UNUSED_BT;
  g_bt[0] = 5; /* request 0 needs pages 0..2 */
  g_bt[1] = 2;
  g_bt[2] = 7;
  for (int j = 0; j < g_L[0]; ++j)
    for (int h = 0; h < HKV; ++h)
      for (int d = 0; d < 576; ++d)
        g_k[(((size_t)g_bt[j / PAGE] * PAGE + j % PAGE) * HKV + h) * 576 + d] = tu_float_to_bf16((float)tu_normal(&r));
  g_out_poison = malloc(g_out_bytes);
  g_lse_poison = malloc(g_lse_bytes);
  for (size_t i = 0; i < g_out_bytes; ++i) g_out_poison[i] = (unsigned char)(0xa5 ^ (i * 7));
  for (size_t i = 0; i < g_lse_bytes; ++i) g_lse_poison[i] = (unsigned char)(0x5a ^ (i * 13));
}

static void poison(void) {
  memcpy(g_out, g_out_poison, g_out_bytes);
  memcpy(g_lse, g_lse_poison, g_lse_bytes);
}

static int untouched(void) { return memcmp(g_out, g_out_poison, g_out_bytes) == 0 && memcmp(g_lse, g_lse_poison, g_lse_bytes) == 0; }

static flash_mla_decode_params_t valid_params(void) {
  flash_mla_decode_params_t p;
  memset(&p, 0, sizeof p);
  p.dtype = FLASH_MLA_DTYPE_BF16;
  p.batch = B;
  p.seqlen_q = SQ;
  p.num_heads_q = HQ;
  p.num_heads_k = HKV;
  p.head_dim = 576;
  p.head_dim_v = 512;
  p.num_blocks = NBLK;
  p.page_size = PAGE;
  p.max_blocks_per_seq = MAXB;
  p.causal = 1;
  p.softmax_scale = 1.0f / 24.0f;
  p.kernel = FLASH_MLA_KERNEL_AUTO;
  p.q = g_q;
  p.q_head_stride = 576;
  p.q_seq_stride = HQ * 576;
  p.q_batch_stride = SQ * HQ * 576;
  p.k_cache = g_k;
  p.k_head_stride = 576;
  p.k_token_stride = HKV * 576;
  p.k_block_stride = PAGE * HKV * 576;
  p.block_table = g_bt;
  p.block_table_stride = MAXB;
  p.cache_seqlens = g_L;
  p.out = g_out;
  p.out_head_stride = 512;
  p.out_seq_stride = HQ * 512;
  p.out_batch_stride = SQ * HQ * 512;
  p.lse = g_lse;
  return p;
}

/* A successful call, so the next message cannot be a stale one. */
static void reset_error(void) {
  size_t bytes;
  flash_mla_decode_workspace_size(1, 1, 1, 1, &bytes);
}

static int ident_char(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'; }

/* The last message contains `arg` as a whole word ("q" does not match inside "q_head_stride"). */
static int names(const char *arg) {
  const char *msg = flash_mla_last_error();
  const size_t n = strlen(arg);
  for (const char *s = strstr(msg, arg); s; s = strstr(s + 1, arg)) {
    const int left = s == msg || !ident_char(s[-1]) || !ident_char(arg[0]);
    const int right = !ident_char(s[n]) || !ident_char(arg[n - 1]);
    if (left && right) return 1;
  }
  return 0;
}

/* ---- metadata and workspace for flash_mla_decode (host memory; only validation reads them) ---- */
#define PARTS 4
static int32_t g_meta[PARTS * FLASH_MLA_METADATA_SIZE + 4], g_ns[B + 1 + 4];
static void *g_ws;
static size_t g_ws_bytes;

/* ---- the table ---- */
typedef void (*mutation)(flash_mla_decode_params_t *p);
#define MUT(fn, body) \
  static void fn(flash_mla_decode_params_t *p) { body; }

MUT(m_q_null, p->q = NULL)
MUT(m_k_null, p->k_cache = NULL)
MUT(m_bt_null, p->block_table = NULL)
MUT(m_len_null, p->cache_seqlens = NULL)
MUT(m_out_null, p->out = NULL)
MUT(m_lse_null, p->lse = NULL)
MUT(m_dtype7, p->dtype = (flash_mla_dtype_t)7)
MUT(m_dtype_neg, p->dtype = (flash_mla_dtype_t)-1)
MUT(m_batch0, p->batch = 0)
MUT(m_batch_neg, p->batch = -1)
MUT(m_sq0, p->seqlen_q = 0)
MUT(m_sq_neg, p->seqlen_q = -2)
MUT(m_hq0, p->num_heads_q = 0)
MUT(m_hkv0, p->num_heads_k = 0)
MUT(m_hkv_neg, p->num_heads_k = -2)
MUT(m_hq_mod, p->num_heads_q = 3)
MUT(m_hkv_mod, p->num_heads_k = 3)
MUT(m_hkv_big, p->num_heads_k = 65536; p->num_heads_q = 65536)
MUT(m_rows_big, p->seqlen_q = 65535 * 64 + 1; p->num_heads_q = HKV)
MUT(m_hd512, p->head_dim = 512)
MUT(m_hd0, p->head_dim = 0)
MUT(m_hdv576, p->head_dim_v = 576)
MUT(m_nblk0, p->num_blocks = 0)
MUT(m_page0, p->page_size = 0)
MUT(m_page_neg, p->page_size = -16)
MUT(m_maxb0, p->max_blocks_per_seq = 0)
MUT(m_maxb_overflow, p->max_blocks_per_seq = 1 << 20; p->page_size = 1 << 12)
MUT(m_causal2, p->causal = 2)
MUT(m_causal_neg, p->causal = -1)
MUT(m_scale_nan, p->softmax_scale = NAN)
MUT(m_scale_inf, p->softmax_scale = INFINITY)
MUT(m_scale_ninf, p->softmax_scale = -INFINITY)
MUT(m_kernel9, p->kernel = (flash_mla_kernel_t)9)
MUT(m_qhs_neg, p->q_head_stride = -576)
MUT(m_qss_neg, p->q_seq_stride = -8)
MUT(m_qbs_neg, p->q_batch_stride = -1)
MUT(m_khs_neg, p->k_head_stride = -576)
MUT(m_kts_neg, p->k_token_stride = -1152)
MUT(m_kbs_neg, p->k_block_stride = -8)
MUT(m_ohs_neg, p->out_head_stride = -512)
MUT(m_oss_neg, p->out_seq_stride = -8)
MUT(m_obs_neg, p->out_batch_stride = -8)
MUT(m_bts_neg, p->block_table_stride = -4)
MUT(m_qhs_small, p->q_head_stride = 568)
MUT(m_qss_small, p->q_seq_stride = 560)
MUT(m_qbs_small, p->q_batch_stride = 8)
MUT(m_khs_small, p->k_head_stride = 512)
MUT(m_kts_small, p->k_token_stride = 568)
MUT(m_kbs_small, p->k_block_stride = 0)
MUT(m_ohs_small, p->out_head_stride = 504)
MUT(m_oss_small, p->out_seq_stride = 8)
MUT(m_obs_small, p->out_batch_stride = 256)
MUT(m_bts_small, p->block_table_stride = MAXB - 1)
MUT(m_qhs_mis, p->q_head_stride = 580)
MUT(m_qss_mis, p->q_seq_stride = HQ * 576 + 4)
MUT(m_qbs_mis, p->q_batch_stride = SQ * HQ * 576 + 2)
MUT(m_khs_mis, p->k_head_stride = 577)
MUT(m_kts_mis, p->k_token_stride = HKV * 576 + 1)
MUT(m_kbs_mis, p->k_block_stride = PAGE * HKV * 576 + 4)
MUT(m_ohs_mis, p->out_head_stride = 516)
MUT(m_out_overlap, p->out_seq_stride = 512) /* (t, h) rows of out share memory when h_q > 1 */
MUT(m_oss_mis, p->out_seq_stride = HQ * 512 + 2)
MUT(m_obs_mis, p->out_batch_stride = SQ * HQ * 512 + 6)
MUT(m_q_mis, p->q = (const char *)p->q + 2)
MUT(m_k_mis, p->k_cache = (const char *)p->k_cache + 8)
MUT(m_out_mis, p->out = (char *)p->out + 2)
MUT(m_lse_mis, p->lse = (float *)((char *)p->lse + 2))
MUT(m_bt_mis, p->block_table = (const int32_t *)((const char *)p->block_table + 1))
MUT(m_len_mis, p->cache_seqlens = (const int32_t *)((const char *)p->cache_seqlens + 2))

typedef struct api_case {
  const char *name;
  mutation mut; /* NULL: the params pointer itself is NULL */
  flash_mla_status_t want;
  const char *arg; /* the message must contain it */
} api_case;

static const api_case k_cases[] = {
    {"params NULL", NULL, FLASH_MLA_ERROR_NULL_POINTER, "params"},
    {"q NULL", m_q_null, FLASH_MLA_ERROR_NULL_POINTER, "q"},
    {"k_cache NULL", m_k_null, FLASH_MLA_ERROR_NULL_POINTER, "k_cache"},
    {"block_table NULL", m_bt_null, FLASH_MLA_ERROR_NULL_POINTER, "block_table"},
    {"cache_seqlens NULL", m_len_null, FLASH_MLA_ERROR_NULL_POINTER, "cache_seqlens"},
    {"out NULL", m_out_null, FLASH_MLA_ERROR_NULL_POINTER, "out"},
    {"lse NULL", m_lse_null, FLASH_MLA_ERROR_NULL_POINTER, "lse"},
    {"dtype 7", m_dtype7, FLASH_MLA_ERROR_INVALID_DTYPE, "dtype"},
    {"dtype -1", m_dtype_neg, FLASH_MLA_ERROR_INVALID_DTYPE, "dtype"},
    {"batch 0", m_batch0, FLASH_MLA_ERROR_INVALID_SHAPE, "batch"},
    {"batch -1", m_batch_neg, FLASH_MLA_ERROR_INVALID_SHAPE, "batch"},
    {"seqlen_q 0", m_sq0, FLASH_MLA_ERROR_INVALID_SHAPE, "seqlen_q"},
    {"seqlen_q -2", m_sq_neg, FLASH_MLA_ERROR_INVALID_SHAPE, "seqlen_q"},
    {"num_heads_q 0", m_hq0, FLASH_MLA_ERROR_INVALID_SHAPE, "num_heads_q"},
    {"num_heads_k 0", m_hkv0, FLASH_MLA_ERROR_INVALID_SHAPE, "num_heads_k"},
    {"num_heads_k -2", m_hkv_neg, FLASH_MLA_ERROR_INVALID_SHAPE, "num_heads_k"},
    {"h_q 3 % h_kv 2", m_hq_mod, FLASH_MLA_ERROR_INVALID_SHAPE, "num_heads_k"},
    {"h_q 4 % h_kv 3", m_hkv_mod, FLASH_MLA_ERROR_INVALID_SHAPE, "num_heads_k"},
    {"num_heads_k 65536", m_hkv_big, FLASH_MLA_ERROR_INVALID_SHAPE, "num_heads_k"},
    {"rows per KV head > 65535 M tiles", m_rows_big, FLASH_MLA_ERROR_INVALID_SHAPE, "seqlen_q"},
    {"head_dim 512", m_hd512, FLASH_MLA_ERROR_INVALID_SHAPE, "head_dim"},
    {"head_dim 0", m_hd0, FLASH_MLA_ERROR_INVALID_SHAPE, "head_dim"},
    {"head_dim_v 576", m_hdv576, FLASH_MLA_ERROR_INVALID_SHAPE, "head_dim_v"},
    {"num_blocks 0", m_nblk0, FLASH_MLA_ERROR_INVALID_SHAPE, "num_blocks"},
    {"page_size 0", m_page0, FLASH_MLA_ERROR_INVALID_SHAPE, "page_size"},
    {"page_size -16", m_page_neg, FLASH_MLA_ERROR_INVALID_SHAPE, "page_size"},
    {"max_blocks_per_seq 0", m_maxb0, FLASH_MLA_ERROR_INVALID_SHAPE, "max_blocks_per_seq"},
    {"max_blocks_per_seq * page_size > INT32_MAX", m_maxb_overflow, FLASH_MLA_ERROR_INVALID_SHAPE, "max_blocks_per_seq"},
    {"causal 2", m_causal2, FLASH_MLA_ERROR_INVALID_VALUE, "causal"},
    {"causal -1", m_causal_neg, FLASH_MLA_ERROR_INVALID_VALUE, "causal"},
    {"softmax_scale NaN", m_scale_nan, FLASH_MLA_ERROR_INVALID_VALUE, "softmax_scale"},
    {"softmax_scale inf", m_scale_inf, FLASH_MLA_ERROR_INVALID_VALUE, "softmax_scale"},
    {"softmax_scale -inf", m_scale_ninf, FLASH_MLA_ERROR_INVALID_VALUE, "softmax_scale"},
    {"kernel 9", m_kernel9, FLASH_MLA_ERROR_INVALID_VALUE, "kernel"},
    {"q_head_stride < 0", m_qhs_neg, FLASH_MLA_ERROR_INVALID_STRIDE, "q_head_stride"},
    {"q_seq_stride < 0", m_qss_neg, FLASH_MLA_ERROR_INVALID_STRIDE, "q_seq_stride"},
    {"q_batch_stride < 0", m_qbs_neg, FLASH_MLA_ERROR_INVALID_STRIDE, "q_batch_stride"},
    {"k_head_stride < 0", m_khs_neg, FLASH_MLA_ERROR_INVALID_STRIDE, "k_head_stride"},
    {"k_token_stride < 0", m_kts_neg, FLASH_MLA_ERROR_INVALID_STRIDE, "k_token_stride"},
    {"k_block_stride < 0", m_kbs_neg, FLASH_MLA_ERROR_INVALID_STRIDE, "k_block_stride"},
    {"out_head_stride < 0", m_ohs_neg, FLASH_MLA_ERROR_INVALID_STRIDE, "out_head_stride"},
    {"out_seq_stride < 0", m_oss_neg, FLASH_MLA_ERROR_INVALID_STRIDE, "out_seq_stride"},
    {"out_batch_stride < 0", m_obs_neg, FLASH_MLA_ERROR_INVALID_STRIDE, "out_batch_stride"},
    {"out rows overlap", m_out_overlap, FLASH_MLA_ERROR_INVALID_STRIDE, "out"},
    {"block_table_stride < 0", m_bts_neg, FLASH_MLA_ERROR_INVALID_STRIDE, "block_table_stride"},
    {"q_head_stride 568 < 576", m_qhs_small, FLASH_MLA_ERROR_INVALID_STRIDE, "q_head_stride"},
    {"q_seq_stride 560 < 576", m_qss_small, FLASH_MLA_ERROR_INVALID_STRIDE, "q_seq_stride"},
    {"q_batch_stride 8 < 576", m_qbs_small, FLASH_MLA_ERROR_INVALID_STRIDE, "q_batch_stride"},
    {"k_head_stride 512 < 576", m_khs_small, FLASH_MLA_ERROR_INVALID_STRIDE, "k_head_stride"},
    {"k_token_stride 568 < 576", m_kts_small, FLASH_MLA_ERROR_INVALID_STRIDE, "k_token_stride"},
    {"k_block_stride 0", m_kbs_small, FLASH_MLA_ERROR_INVALID_STRIDE, "k_block_stride"},
    {"out_head_stride 504 < 512", m_ohs_small, FLASH_MLA_ERROR_INVALID_STRIDE, "out_head_stride"},
    {"out_seq_stride 8 < 512", m_oss_small, FLASH_MLA_ERROR_INVALID_STRIDE, "out_seq_stride"},
    {"out_batch_stride 256 < 512", m_obs_small, FLASH_MLA_ERROR_INVALID_STRIDE, "out_batch_stride"},
    {"block_table_stride < max_blocks_per_seq", m_bts_small, FLASH_MLA_ERROR_INVALID_STRIDE, "block_table_stride"},
    {"q_head_stride 580 (not 16-byte)", m_qhs_mis, FLASH_MLA_ERROR_MISALIGNED, "q_head_stride"},
    {"q_seq_stride +4 (not 16-byte)", m_qss_mis, FLASH_MLA_ERROR_MISALIGNED, "q_seq_stride"},
    {"q_batch_stride +2 (not 16-byte)", m_qbs_mis, FLASH_MLA_ERROR_MISALIGNED, "q_batch_stride"},
    {"k_head_stride 577 (not 16-byte)", m_khs_mis, FLASH_MLA_ERROR_MISALIGNED, "k_head_stride"},
    {"k_token_stride +1 (not 16-byte)", m_kts_mis, FLASH_MLA_ERROR_MISALIGNED, "k_token_stride"},
    {"k_block_stride +4 (not 16-byte)", m_kbs_mis, FLASH_MLA_ERROR_MISALIGNED, "k_block_stride"},
    {"out_head_stride 516 (not 16-byte)", m_ohs_mis, FLASH_MLA_ERROR_MISALIGNED, "out_head_stride"},
    {"out_seq_stride +2 (not 16-byte)", m_oss_mis, FLASH_MLA_ERROR_MISALIGNED, "out_seq_stride"},
    {"out_batch_stride +6 (not 16-byte)", m_obs_mis, FLASH_MLA_ERROR_MISALIGNED, "out_batch_stride"},
    {"q + 2 bytes", m_q_mis, FLASH_MLA_ERROR_MISALIGNED, "q"},
    {"k_cache + 8 bytes", m_k_mis, FLASH_MLA_ERROR_MISALIGNED, "k_cache"},
    {"out + 2 bytes", m_out_mis, FLASH_MLA_ERROR_MISALIGNED, "out"},
    {"lse + 2 bytes", m_lse_mis, FLASH_MLA_ERROR_MISALIGNED, "lse"},
    {"block_table + 1 byte", m_bt_mis, FLASH_MLA_ERROR_MISALIGNED, "block_table"},
    {"cache_seqlens + 2 bytes", m_len_mis, FLASH_MLA_ERROR_MISALIGNED, "cache_seqlens"},
};

static flash_mla_status_t call_decode(const flash_mla_decode_params_t *p) {
  return flash_mla_decode(p, g_meta, PARTS, g_ns, g_ws, g_ws_bytes, NULL);
}

static void run_table(void) {
  for (size_t c = 0; c < sizeof k_cases / sizeof k_cases[0]; ++c) {
    const api_case *tc = &k_cases[c];
    for (int which = 0; which < 2; ++which) {
      const char *fn = which == 0 ? "flash_mla_decode_ref" : "flash_mla_decode";
      flash_mla_decode_params_t p = valid_params();
      if (tc->mut) tc->mut(&p);
      poison();
      reset_error();
      const flash_mla_decode_params_t *pp = tc->mut ? &p : NULL;
      const flash_mla_status_t st = which == 0 ? flash_mla_decode_ref(pp) : call_decode(pp);
      CHECK(st == tc->want, "%s: %s returned %s, want %s (\"%s\")", tc->name, fn, flash_mla_status_string(st),
            flash_mla_status_string(tc->want), flash_mla_last_error());
      CHECK(names(tc->arg), "%s: %s message \"%s\" does not name %s", tc->name, fn, flash_mla_last_error(), tc->arg);
      CHECK(untouched(), "%s: %s wrote out or lse on error", tc->name, fn);
    }
  }
}

/* ---- checks only the reference makes: values of cache_seqlens and block_table ---- */
static void run_data_checks(void) {
  struct {
    const char *name;
    int kind; /* 0: cache_seqlens[idx] = v; 1: block_table[i][j] = v */
    int i, j;
    int32_t v;
    flash_mla_status_t want;
    const char *arg;
    int32_t shown; /* the value the message must give */
  } cases[] = {
      {"cache_seqlens[1] = -1", 0, 1, 0, -1, FLASH_MLA_ERROR_INVALID_VALUE, "cache_seqlens[1]", -1},
      {"cache_seqlens[0] = INT32_MIN", 0, 0, 0, INT32_MIN, FLASH_MLA_ERROR_INVALID_VALUE, "cache_seqlens[0]", INT32_MIN},
      {"cache_seqlens[0] = max_blocks * page + 1", 0, 0, 0, MAXB * PAGE + 1, FLASH_MLA_ERROR_INVALID_VALUE, "cache_seqlens[0]",
       MAXB * PAGE + 1},
      {"cache_seqlens[1] = INT32_MAX", 0, 1, 0, INT32_MAX, FLASH_MLA_ERROR_INVALID_VALUE, "cache_seqlens[1]", INT32_MAX},
      /* a full table: page 3 becomes needed and holds 2147480000 */
      {"cache_seqlens[0] = max_blocks * page", 0, 0, 0, MAXB * PAGE, FLASH_MLA_ERROR_INVALID_VALUE, "block_table[0][3]", UNUSED_BT},
      {"block_table[0][1] = -1", 1, 0, 1, -1, FLASH_MLA_ERROR_INVALID_VALUE, "block_table[0][1]", -1},
      {"block_table[0][2] = num_blocks (last, partial page)", 1, 0, 2, NBLK, FLASH_MLA_ERROR_INVALID_VALUE, "block_table[0][2]", NBLK},
      {"block_table[0][0] = 2147480000", 1, 0, 0, UNUSED_BT, FLASH_MLA_ERROR_INVALID_VALUE, "block_table[0][0]", UNUSED_BT},
      {"block_table[0][3] = -7 (not needed)", 1, 0, 3, -7, FLASH_MLA_SUCCESS, NULL, 0},
      {"block_table[1][0] = -7 (L = 0: not needed)", 1, 1, 0, -7, FLASH_MLA_SUCCESS, NULL, 0},
      {"block_table[1][3] = INT32_MIN (not needed)", 1, 1, 3, INT32_MIN, FLASH_MLA_SUCCESS, NULL, 0},
      {"cache_seqlens[1] = 0 (valid)", 0, 1, 0, 0, FLASH_MLA_SUCCESS, NULL, 0},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
    int32_t *slot = cases[c].kind == 0 ? &g_L[cases[c].i] : &g_bt[cases[c].i * MAXB + cases[c].j];
    const int32_t saved = *slot;
    *slot = cases[c].v;
    flash_mla_decode_params_t p = valid_params();
    poison();
    reset_error();
    const flash_mla_status_t st = flash_mla_decode_ref(&p);
    CHECK(st == cases[c].want, "%s: flash_mla_decode_ref returned %s, want %s (\"%s\")", cases[c].name, flash_mla_status_string(st),
          flash_mla_status_string(cases[c].want), flash_mla_last_error());
    if (cases[c].want != FLASH_MLA_SUCCESS) {
      CHECK(names(cases[c].arg), "%s: message \"%s\" does not name %s", cases[c].name, flash_mla_last_error(), cases[c].arg);
      char val[32];
      snprintf(val, sizeof val, "%d", cases[c].shown);
      CHECK(names(val), "%s: message \"%s\" does not give the value %s", cases[c].name, flash_mla_last_error(), val);
      CHECK(untouched(), "%s: out or lse written on error", cases[c].name);
    } else {
      CHECK(flash_mla_last_error()[0] == '\0', "%s: last error \"%s\" after success", cases[c].name, flash_mla_last_error());
      CHECK(!untouched(), "%s: a successful call wrote nothing", cases[c].name);
    }
    *slot = saved;
  }
  /* a bad value after good ones: all checks run before any output is written */
  {
    g_bt[1 * MAXB + 0] = 0;
    g_L[1] = 17; /* request 1 needs pages 0 and 1; page 1 holds 2147480000 */
    flash_mla_decode_params_t p = valid_params();
    poison();
    const flash_mla_status_t st = flash_mla_decode_ref(&p);
    CHECK(st == FLASH_MLA_ERROR_INVALID_VALUE && names("block_table[1][1]"), "bad entry of the last request: %s \"%s\"",
          flash_mla_status_string(st), flash_mla_last_error());
    CHECK(untouched(), "bad entry of the last request: request 0 was written before the check");
    g_L[1] = 0;
    g_bt[1 * MAXB + 0] = UNUSED_BT;
  }
}

/* ---- flash_mla_decode: the other arguments, and a valid call ---- */
static void run_decode_args(void) {
  const flash_mla_decode_params_t p = valid_params();
  struct {
    const char *name;
    const int32_t *meta;
    int32_t parts;
    const int32_t *ns;
    void *ws;
    size_t ws_bytes;
    flash_mla_status_t want;
    const char *arg;
  } cases[] = {
      {"tile_scheduler_metadata NULL", NULL, PARTS, g_ns, g_ws, g_ws_bytes, FLASH_MLA_ERROR_NULL_POINTER, "tile_scheduler_metadata"},
      {"num_splits NULL", g_meta, PARTS, NULL, g_ws, g_ws_bytes, FLASH_MLA_ERROR_NULL_POINTER, "num_splits"},
      {"workspace NULL", g_meta, PARTS, g_ns, NULL, g_ws_bytes, FLASH_MLA_ERROR_NULL_POINTER, "workspace"},
      {"num_sm_parts 0", g_meta, 0, g_ns, g_ws, g_ws_bytes, FLASH_MLA_ERROR_INVALID_SHAPE, "num_sm_parts"},
      {"num_sm_parts -1", g_meta, -1, g_ns, g_ws, g_ws_bytes, FLASH_MLA_ERROR_INVALID_SHAPE, "num_sm_parts"},
      {"num_sm_parts MAX+1", g_meta, FMLA_MAX_SM_PARTS + 1, g_ns, g_ws, g_ws_bytes, FLASH_MLA_ERROR_INVALID_SHAPE, "num_sm_parts"},
      {"tile_scheduler_metadata + 2 bytes", (const int32_t *)((const char *)g_meta + 2), PARTS, g_ns, g_ws, g_ws_bytes,
       FLASH_MLA_ERROR_MISALIGNED, "tile_scheduler_metadata"},
      {"num_splits + 1 byte", g_meta, PARTS, (const int32_t *)((const char *)g_ns + 1), g_ws, g_ws_bytes, FLASH_MLA_ERROR_MISALIGNED,
       "num_splits"},
      {"workspace + 4 bytes", g_meta, PARTS, g_ns, (char *)g_ws + 4, g_ws_bytes - 4, FLASH_MLA_ERROR_MISALIGNED, "workspace"},
      {"workspace_bytes one short", g_meta, PARTS, g_ns, g_ws, g_ws_bytes - 1, FLASH_MLA_ERROR_WORKSPACE_TOO_SMALL, "workspace_bytes"},
      {"workspace_bytes 0", g_meta, PARTS, g_ns, g_ws, 0, FLASH_MLA_ERROR_WORKSPACE_TOO_SMALL, "workspace_bytes"},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
    poison();
    reset_error();
    const flash_mla_status_t st = flash_mla_decode(&p, cases[c].meta, cases[c].parts, cases[c].ns, cases[c].ws, cases[c].ws_bytes, NULL);
    CHECK(st == cases[c].want, "decode %s: returned %s, want %s (\"%s\")", cases[c].name, flash_mla_status_string(st),
          flash_mla_status_string(cases[c].want), flash_mla_last_error());
    CHECK(names(cases[c].arg), "decode %s: message \"%s\" does not name %s", cases[c].name, flash_mla_last_error(), cases[c].arg);
    CHECK(untouched(), "decode %s: out or lse written", cases[c].name);
  }
  /* valid arguments, host memory: no GPU -> NO_DEVICE; a GPU -> the host pointers are refused */
  poison();
  reset_error();
  const flash_mla_status_t st = call_decode(&p);
  const flash_mla_status_t want = g_have_gpu ? FLASH_MLA_ERROR_INVALID_MEMORY : FLASH_MLA_ERROR_NO_DEVICE;
  CHECK(st == want, "valid flash_mla_decode with host pointers: %s, want %s (\"%s\")", flash_mla_status_string(st),
        flash_mla_status_string(want), flash_mla_last_error());
  CHECK(flash_mla_last_error()[0] != '\0', "valid flash_mla_decode without a usable device left no message");
  CHECK(untouched(), "valid flash_mla_decode with host pointers wrote out or lse");
  /* the reference accepts the same params */
  poison();
  const flash_mla_status_t sr = flash_mla_decode_ref(&p);
  CHECK(sr == FLASH_MLA_SUCCESS, "valid params: flash_mla_decode_ref returned %s (\"%s\")", flash_mla_status_string(sr),
        flash_mla_last_error());
  CHECK(flash_mla_last_error()[0] == '\0', "last error after a successful reference call: \"%s\"", flash_mla_last_error());
}

/* ---- scheduling and workspace entry points ---- */
static void run_other_entry_points(void) {
  int32_t L[3] = {10, 0, 300}, meta[8 * FLASH_MLA_METADATA_SIZE], ns[4];
  struct {
    const char *name;
    const int32_t *L;
    int32_t batch, parts;
    int32_t *meta, *ns;
    flash_mla_status_t want;
    const char *arg;
  } mc[] = {
      {"cache_seqlens NULL", NULL, 3, 2, meta, ns, FLASH_MLA_ERROR_NULL_POINTER, "cache_seqlens"},
      {"tile_scheduler_metadata NULL", L, 3, 2, NULL, ns, FLASH_MLA_ERROR_NULL_POINTER, "tile_scheduler_metadata"},
      {"num_splits NULL", L, 3, 2, meta, NULL, FLASH_MLA_ERROR_NULL_POINTER, "num_splits"},
      {"batch 0", L, 0, 2, meta, ns, FLASH_MLA_ERROR_INVALID_SHAPE, "batch"},
      {"batch -5", L, -5, 2, meta, ns, FLASH_MLA_ERROR_INVALID_SHAPE, "batch"},
      {"num_sm_parts 0", L, 3, 0, meta, ns, FLASH_MLA_ERROR_INVALID_SHAPE, "num_sm_parts"},
      {"num_sm_parts MAX+1", L, 3, FMLA_MAX_SM_PARTS + 1, meta, ns, FLASH_MLA_ERROR_INVALID_SHAPE, "num_sm_parts"},
      {"num_splits + 2 bytes", L, 3, 2, meta, (int32_t *)((char *)ns + 2), FLASH_MLA_ERROR_MISALIGNED, "num_splits"},
  };
  for (int fn = 0; fn < 2; ++fn)
    for (size_t c = 0; c < sizeof mc / sizeof mc[0]; ++c) {
      reset_error();
      const flash_mla_status_t st = fn == 0 ? flash_mla_get_metadata(mc[c].L, mc[c].batch, mc[c].parts, mc[c].meta, mc[c].ns, NULL)
                                            : flash_mla_get_metadata_host(mc[c].L, mc[c].batch, mc[c].parts, mc[c].meta, mc[c].ns);
      const char *name = fn == 0 ? "flash_mla_get_metadata" : "flash_mla_get_metadata_host";
      CHECK(st == mc[c].want, "%s %s: %s, want %s (\"%s\")", name, mc[c].name, flash_mla_status_string(st),
            flash_mla_status_string(mc[c].want), flash_mla_last_error());
      CHECK(names(mc[c].arg), "%s %s: message \"%s\" does not name %s", name, mc[c].name, flash_mla_last_error(), mc[c].arg);
    }
  {
    reset_error();
    const flash_mla_status_t st = flash_mla_get_metadata(L, 3, 2, meta, ns, NULL);
    const flash_mla_status_t want = g_have_gpu ? FLASH_MLA_ERROR_INVALID_MEMORY : FLASH_MLA_ERROR_NO_DEVICE;
    CHECK(st == want, "valid flash_mla_get_metadata with host pointers: %s, want %s (\"%s\")", flash_mla_status_string(st),
          flash_mla_status_string(want), flash_mla_last_error());
  }

  /* flash_mla_get_num_sm_parts */
  {
    int32_t parts = -12345;
    reset_error();
    flash_mla_status_t st = flash_mla_get_num_sm_parts(-1, 128, 1, NULL);
    CHECK(st == FLASH_MLA_ERROR_NULL_POINTER && names("num_sm_parts"), "get_num_sm_parts(NULL): %s \"%s\"", flash_mla_status_string(st),
          flash_mla_last_error());
    reset_error();
    st = flash_mla_get_num_sm_parts(-1, 0, 1, &parts);
    CHECK(st == FLASH_MLA_ERROR_INVALID_SHAPE && names("rows_per_head_k"), "get_num_sm_parts(rows 0): %s \"%s\"",
          flash_mla_status_string(st), flash_mla_last_error());
    reset_error();
    st = flash_mla_get_num_sm_parts(-1, -64, 1, &parts);
    CHECK(st == FLASH_MLA_ERROR_INVALID_SHAPE && names("rows_per_head_k"), "get_num_sm_parts(rows -64): %s \"%s\"",
          flash_mla_status_string(st), flash_mla_last_error());
    reset_error();
    st = flash_mla_get_num_sm_parts(-1, 128, 0, &parts);
    CHECK(st == FLASH_MLA_ERROR_INVALID_SHAPE && names("num_heads_k"), "get_num_sm_parts(h_kv 0): %s \"%s\"",
          flash_mla_status_string(st), flash_mla_last_error());
    CHECK(parts == -12345, "get_num_sm_parts wrote its output on error");
    st = flash_mla_get_num_sm_parts(-1, 128, 1, &parts);
    if (g_have_gpu)
      CHECK(st == FLASH_MLA_SUCCESS && parts >= 1 && parts <= FMLA_MAX_SM_PARTS, "get_num_sm_parts on a GPU: %s, %d parts",
            flash_mla_status_string(st), parts);
    else
      CHECK(st == FLASH_MLA_ERROR_NO_DEVICE && parts == -12345, "get_num_sm_parts without a GPU: %s", flash_mla_status_string(st));
  }

  /* flash_mla_decode_workspace_size */
  {
    struct {
      const char *name;
      int32_t b, sq, hq, parts;
      int null_out;
      flash_mla_status_t want;
      const char *arg;
    } wc[] = {
        {"bytes NULL", 1, 1, 1, 1, 1, FLASH_MLA_ERROR_NULL_POINTER, "bytes"},
        {"batch 0", 0, 1, 1, 1, 0, FLASH_MLA_ERROR_INVALID_SHAPE, "batch"},
        {"batch -1", -1, 1, 1, 1, 0, FLASH_MLA_ERROR_INVALID_SHAPE, "batch"},
        {"seqlen_q 0", 1, 0, 1, 1, 0, FLASH_MLA_ERROR_INVALID_SHAPE, "seqlen_q"},
        {"num_heads_q 0", 1, 1, 0, 1, 0, FLASH_MLA_ERROR_INVALID_SHAPE, "num_heads_q"},
        {"num_sm_parts 0", 1, 1, 1, 0, 0, FLASH_MLA_ERROR_INVALID_SHAPE, "num_sm_parts"},
        {"num_sm_parts MAX+1", 1, 1, 1, FMLA_MAX_SM_PARTS + 1, 0, FLASH_MLA_ERROR_INVALID_SHAPE, "num_sm_parts"},
    };
    for (size_t c = 0; c < sizeof wc / sizeof wc[0]; ++c) {
      size_t bytes = 777;
      reset_error();
      const flash_mla_status_t st = flash_mla_decode_workspace_size(wc[c].b, wc[c].sq, wc[c].hq, wc[c].parts, wc[c].null_out ? NULL : &bytes);
      CHECK(st == wc[c].want, "workspace_size %s: %s, want %s", wc[c].name, flash_mla_status_string(st), flash_mla_status_string(wc[c].want));
      CHECK(names(wc[c].arg), "workspace_size %s: message \"%s\" does not name %s", wc[c].name, flash_mla_last_error(), wc[c].arg);
      CHECK(bytes == 777, "workspace_size %s: wrote its output on error", wc[c].name);
    }
    /* holds o_accum [b + P, s_q * h_q, 512] and lse_accum [b + P, s_q * h_q] in fp32 */
    static const int32_t shapes[][4] = {{1, 1, 1, 1}, {64, 1, 128, 132}, {3, 2, 16, 7}, {65536, 1, 16, 264}, {128, 4, 128, FMLA_MAX_SM_PARTS}};
    size_t prev = 0;
    for (int s = 0; s < 5; ++s) {
      size_t bytes = 0;
      const flash_mla_status_t st = flash_mla_decode_workspace_size(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], &bytes);
      const double need = ((double)shapes[s][0] + shapes[s][3]) * shapes[s][1] * shapes[s][2] * (512.0 + 1.0) * 4.0;
      CHECK(st == FLASH_MLA_SUCCESS && (double)bytes >= need, "workspace_size(%d, %d, %d, %d) = %zu < %.0f", shapes[s][0], shapes[s][1],
            shapes[s][2], shapes[s][3], bytes, need);
      CHECK(flash_mla_last_error()[0] == '\0', "workspace_size success left \"%s\"", flash_mla_last_error());
      if (s == 0) prev = bytes;
    }
    size_t b2 = 0;
    flash_mla_decode_workspace_size(2, 1, 1, 1, &b2);
    CHECK(b2 > prev, "workspace grows with batch: %zu vs %zu", b2, prev);
  }
}

static void run_strings(void) {
  const char *seen[FLASH_MLA_ERROR_INTERNAL + 1];
  for (int s = FLASH_MLA_SUCCESS; s <= FLASH_MLA_ERROR_INTERNAL; ++s) {
    const char *str = flash_mla_status_string((flash_mla_status_t)s);
    seen[s] = str;
    CHECK(str != NULL && str[0] != '\0', "status %d has an empty string", s);
    for (int t = 0; t < s; ++t)
      CHECK(str == NULL || seen[t] == NULL || strcmp(str, seen[t]) != 0, "status %d and %d share the string \"%s\"", s, t, str);
  }
  const char *unknown = flash_mla_status_string((flash_mla_status_t)99);
  CHECK(unknown != NULL && unknown[0] != '\0', "an unknown status needs a string too");
  CHECK(flash_mla_version() == FLASH_MLA_VERSION, "flash_mla_version() = %d, header says %d", flash_mla_version(), FLASH_MLA_VERSION);
  reset_error();
  CHECK(flash_mla_last_error() != NULL && flash_mla_last_error()[0] == '\0', "last error after a success: \"%s\"", flash_mla_last_error());
}

int main(void) {
  setup();
  {
    int32_t parts = 0;
    g_have_gpu = flash_mla_get_num_sm_parts(-1, 64, 1, &parts) == FLASH_MLA_SUCCESS;
    fprintf(stderr, "test_api: %s\n", g_have_gpu ? "a GPU is present" : "no GPU");
  }
  CHECK(flash_mla_decode_workspace_size(B, SQ, HQ, PARTS, &g_ws_bytes) == FLASH_MLA_SUCCESS, "workspace size: %s", flash_mla_last_error());
  g_ws = xalloc(g_ws_bytes);
  CHECK(flash_mla_get_metadata_host(g_L, B, PARTS, g_meta, g_ns) == FLASH_MLA_SUCCESS, "metadata: %s", flash_mla_last_error());
  {
    const flash_mla_decode_params_t p = valid_params();
    poison();
    const flash_mla_status_t st = flash_mla_decode_ref(&p);
    CHECK(st == FLASH_MLA_SUCCESS, "the base params must be valid: %s \"%s\"", flash_mla_status_string(st), flash_mla_last_error());
  }
  run_table();
  run_data_checks();
  run_decode_args();
  run_other_entry_points();
  run_strings();
  free(g_q);
  free(g_k);
  free(g_out);
  free(g_lse);
  free(g_ws);
  free(g_out_poison);
  free(g_lse_poison);
  return tu_summary();
}
