/*
 * params.h: the library's internal contract between host C (api.c) and the kernels (.cu).
 * Included from C11 and from CUDA. Compile-time constants live here and nowhere else.
 *
 * Work layout shared by every kernel:
 *   - Query rows per KV head: rows = s_q * ngroups, ngroups = h_q / h_kv. Row r of KV head hk is
 *     query token t = r / ngroups and query head h = hk * ngroups + r % ngroups.
 *     (FlashMLA's q.view(b, s_q, h_kv, ngroups, d).transpose: one KV head's rows share every K tile.)
 *   - Rows are cut into M tiles of FMLA_BLOCK_M; num_m_blocks = ceil(rows / FMLA_BLOCK_M).
 *   - Keys of request i are cut into n-blocks of FLASH_MLA_BLOCK_N (64) keys, independent of the
 *     page size: nb_i = ceil(L_i / 64).
 *   - Decode grid: (num_m_blocks, h_kv, num_sm_parts). A CTA owns one M tile of one KV head and
 *     walks the segments of its part (see "Scheduler metadata" below).
 *   - Causal: row r sees keys j < L - (s_q - 1 - t). A row that sees no key: out 0, lse +inf.
 *
 * Scheduler metadata, int32 [num_sm_parts, FLASH_MLA_METADATA_SIZE], one row per part. Parts cover
 * the requests in a part order: position k holds request order[k] (the identity except in packed
 * mode, below).
 *   [0] begin_req   first position of the part (>= batch: the part is empty)
 *   [1] begin_block first n-block in the request at begin_req
 *   [2] end_req     last position of the part (inclusive)
 *   [3] end_block   one past the last n-block in the request at end_req
 *   [4] begin_split split index, within that request, of the part's first segment
 *   [5..7] 0
 * Positions strictly between begin_req and end_req are covered whole by the part. A segment is
 * (request i, n-block range [lo, hi)); its split index is begin_split at begin_req and 0 for the
 * others. slot[i] = prefix sum of splits per request, in request order (slot[0] = 0, slot[b] =
 * total). A request with exactly one split writes out/lse directly. Otherwise split k of request i
 * writes its partial (unnormalised O / l, and lse) to accumulator slot slot[i] + k, and the
 * combine kernel merges them. Slots <= batch + num_sm_parts.
 * num_splits [b + 1]: for b <= FMLA_PACK_MAX_BATCH, num_splits[k] = slot[k] | order[k] << 16
 * (k < b) and num_splits[b] = slot[b]; for larger b, num_splits[i] = slot[i] (identity order).
 * Read it only through fmla_ns_slot / fmla_ns_req.
 *
 * Scheduler algorithm (host twin in sched_host.c, GPU in sched.cu; they agree bit for bit):
 *   cost_i = nb_i + FMLA_SPLIT_OVERHEAD (per-request fixed cost in n-block units), units of
 *   request i are [cum_i, cum_i + cost_i) with its first FMLA_SPLIT_OVERHEAD units standing for
 *   the fixed cost and unit cum_i + OVH + k for n-block k. W = sum cost, Q = ceil(W / P).
 *   Raw boundary p*Q (p = 1..P-1, < W) is snapped to cum_i when cum_i <= p*Q <= cum_i + OVH, so
 *   no segment is empty unless its request has no keys. Part p = [B_p, B_p+1).
 *   splits_i = 1 + #{p : cum_i + OVH < p*Q < cum_i + cost_i} (1 when nb_i = 0).
 *   No-split mode: every raw boundary p*Q (< W) is snapped to the start of the request that holds
 *   it instead, so each request lies whole in one part (some parts stay empty). Its largest part
 *   costs C = max_p (B_p+1 - B_p); it is taken when C <= Q + FMLA_SPLIT_OVERHEAD +
 *   FMLA_COMBINE_COST, i.e. when it is at most FMLA_COMBINE_COST units worse than the split
 *   schedule's bound (Q + OVH). Then splits_i = 1 for every request and nothing is combined. It is
 *   what a batch of equal lengths with b a little below P gets (b = 128 on 132 SMs: one request
 *   per part instead of 127 requests split in two).
 *   Packed mode (sched_math.h, fmla_pack_run), tried when num_sm_parts <= b <= 256: requests
 *   sorted by n-blocks (descending); each part, of capacity T = Q + d, takes the tail of the
 *   request the previous part split, then the largest unused request that fits whole, again and
 *   again, then the head of the largest unused request when >= 4 n-blocks of room are left; the
 *   last part takes the rest. Every segment costs its n-blocks + FMLA_SPLIT_OVERHEAD. Of the
 *   contiguous schedule and the packed ones for d = 0..7, the one with the lowest
 *   5 * (largest part cost) + (requests split) is taken (ties: the contiguous one, then the
 *   smaller d). On the benchmark's b = 128 varlen batches it splits 0-37 requests instead of
 *   29-65, at about the same largest part: fewer fp32 partials and less combine work.
 *
 * Accumulators (workspace, fp32):
 *   o_accum   [slots, h_kv, rows, 512]   partial O already divided by its own l
 *   lse_accum [slots, h_kv, rows]        partial lse (natural log), -inf for an empty split
 */
#ifndef FLASH_MLA_PARAMS_H
#define FLASH_MLA_PARAMS_H

#include <stdint.h>
#include "../include/flash_mla.h"

#define FMLA_HEAD_DIM_K FLASH_MLA_HEAD_DIM   /* 576 */
#define FMLA_HEAD_DIM_V FLASH_MLA_HEAD_DIM_V /* 512 */
#define FMLA_BLOCK_N FLASH_MLA_BLOCK_N       /* 64 keys per scheduler unit */
#define FMLA_BLOCK_M 64                      /* query rows per CTA tile */
#ifndef FMLA_SPLIT_OVERHEAD /* overridable only for scheduler experiments (dev/sched_probe.py --variants) */
#define FMLA_SPLIT_OVERHEAD 3                /* fixed cost of a segment, in n-blocks (v6.17: 5 -> 3, the
                                              * per-CTA trace's fit of 2.7-3.3 on the standard cases) */
#endif
#ifndef FMLA_COMBINE_COST
#define FMLA_COMBINE_COST 4                  /* what splitting at all costs more (partials, combine), n-blocks */
#endif
#define FMLA_META_SIZE FLASH_MLA_METADATA_SIZE

/* num_splits encoding (see "Scheduler metadata" above). With batch <= FMLA_PACK_MAX_BATCH entry k
 * (k < batch) holds the slot base of request k in its low 16 bits and the request at position k
 * of the part order in its high bits; entry batch is the slot total. Larger batches keep the plain
 * prefix sum and the identity order. */
#define FMLA_PACK_MAX_BATCH 1024
#define FMLA_PACK_SHIFT 16
#if defined(__CUDACC__)
#define FMLA_NS_HD static __host__ __device__ __forceinline__
#else
#define FMLA_NS_HD static inline
#endif
/* First accumulator slot of request i (i <= batch: entry batch gives the total). */
FMLA_NS_HD int32_t fmla_ns_slot(const int32_t *ns, int32_t batch, int32_t i) {
  return batch <= FMLA_PACK_MAX_BATCH ? (ns[i] & ((1 << FMLA_PACK_SHIFT) - 1)) : ns[i];
}
/* Request at position pos (0 <= pos < batch) of the part order. */
FMLA_NS_HD int32_t fmla_ns_req(const int32_t *ns, int32_t batch, int32_t pos) {
  return batch <= FMLA_PACK_MAX_BATCH ? (ns[pos] >> FMLA_PACK_SHIFT) : pos;
}
#define FMLA_MAX_SM_PARTS 1024               /* sched.cu keeps per-part state in shared memory */

typedef struct fmla_kernel_params {
  int32_t dtype;              /* flash_mla_dtype_t */
  int32_t batch, seqlen_q, num_heads_q, num_heads_k;
  int32_t ngroups;            /* h_q / h_kv */
  int32_t rows;               /* s_q * ngroups, query rows per KV head */
  int32_t num_m_blocks;       /* ceil(rows / FMLA_BLOCK_M) */
  int32_t num_blocks, page_size, max_blocks_per_seq;
  int32_t causal;
  float scale;                /* softmax scale */
  float scale_log2;           /* scale * log2(e): softmax runs in exp2 */

  const void *q;              /* [b, s_q, h_q, 576] */
  int64_t q_batch_stride, q_seq_stride, q_head_stride;
  const void *k_cache;        /* [num_blocks, page_size, h_kv, 576] */
  int64_t k_block_stride, k_token_stride, k_head_stride;
  const int32_t *block_table; /* [b, max_blocks_per_seq] */
  int64_t block_table_stride;
  const int32_t *cache_seqlens; /* [b] */
  void *out;                  /* [b, s_q, h_q, 512] */
  int64_t out_batch_stride, out_seq_stride, out_head_stride;
  float *lse;                 /* [b, h_q, s_q] */

  const int32_t *meta;        /* [num_sm_parts, FMLA_META_SIZE] */
  int32_t num_sm_parts;
  const int32_t *num_splits;  /* [b + 1] */
  float *o_accum;             /* [b + num_sm_parts, h_kv, rows, 512] */
  float *lse_accum;           /* [b + num_sm_parts, h_kv, rows] */
  int32_t cc_major;           /* compute capability of the device (PDL needs 9+) */
  int32_t cc_minor;
  int32_t device;             /* the current device the launch goes to (api.c already asked) */
} fmla_kernel_params;

#ifdef __cplusplus
extern "C" {
#endif

/* Set the thread's last-error message (api.c). Returns `status` for tail calls. */
flash_mla_status_t fmla_set_error(flash_mla_status_t status, const char *fmt, ...);
/* Clear the thread's last-error message (a successful call leaves "" behind). */
void fmla_clear_error(void);
/* sched_host.c: argument checks shared by flash_mla_get_metadata and its host twin. */
flash_mla_status_t fmla_check_metadata_args(const int32_t *cache_seqlens, int32_t batch, int32_t num_sm_parts,
                                            const int32_t *meta, const int32_t *num_splits);

/* api.c: every check of flash_mla_decode / flash_mla_decode_ref that reads no tensor data
 * (pointers, shapes, strides, dtype, alignment, scale). Sets the message on failure. */
flash_mla_status_t fmla_validate_decode_params(const flash_mla_decode_params_t *p);
/* api.c: fill the kernel params from validated public params (no metadata/workspace fields). */
void fmla_fill_kernel_params(const flash_mla_decode_params_t *p, fmla_kernel_params *k);

/* Kernel launchers, implemented in the .cu files. Each returns FLASH_MLA_ERROR_CUDA with a
 * message on a launch failure. `stream` is a cudaStream_t. */
flash_mla_status_t fmla_launch_metadata(const int32_t *cache_seqlens, int32_t batch, int32_t num_sm_parts,
                                        int32_t *meta, int32_t *num_splits, void *stream);
flash_mla_status_t fmla_launch_decode_portable(const fmla_kernel_params *p, void *stream);
flash_mla_status_t fmla_launch_decode_hopper(const fmla_kernel_params *p, void *stream);
flash_mla_status_t fmla_launch_combine(const fmla_kernel_params *p, void *stream);
/* 1 when the library was built with the sm_90a kernel. */
int fmla_hopper_built(void);

#ifdef __cplusplus
}
#endif
#endif
