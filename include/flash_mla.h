/*
 * flash_mla.h: Multi-head Latent Attention (MLA) decoding over a paged KV cache.
 *
 * The one public header of libflash_mla. It compiles as C11 and as C++, and it needs
 * no CUDA header: the stream is passed as `struct CUstream_st *`, which is what
 * `cudaStream_t` is.
 *
 * What a decode call computes (DeepSeek-V2/V3/R1/V3.2, Kimi-K2 shapes):
 *   q            [b, s_q, h_q, 576]                bf16 or fp16
 *   k_cache      [num_blocks, page_size, h_kv, 576] same dtype; V is its first 512 dims
 *   block_table  [b, max_blocks_per_seq]            int32
 *   cache_seqlens[b]                                int32
 *   out          [b, s_q, h_q, 512]                 same dtype as q
 *   lse          [b, h_q, s_q]                      fp32, natural log
 *
 *   out[i,t,h] = softmax(scale * q[i,t,h] . K_j^T) V_j over the keys j that query t sees:
 *   without causal masking all j < L = cache_seqlens[i]; with causal masking (s_q > 1 is
 *   bottom-right aligned) j < L - (s_q - 1 - t). A row that sees no key gets out = 0 and
 *   lse = +inf. Query head h uses KV head h / (h_q / h_kv).
 *
 * Page slots past a sequence's end and block-table entries past its last page are never
 * read, so they may hold NaN or any integer.
 *
 * A decode step on the GPU:
 *   1. flash_mla_get_num_sm_parts()      host, once per shape: how many parts the work is split into
 *   2. flash_mla_get_metadata()          GPU, once per step: splits the work from the device
 *                                        cache_seqlens, no host sync, so it can be graph-captured
 *   3. flash_mla_decode() per layer      GPU, reuses the metadata; the caller owns the workspace,
 *                                        sized by flash_mla_decode_workspace_size()
 * Every GPU entry point returns once the work is enqueued on the given stream.
 *
 * Errors: every entry point returns a flash_mla_status_t. On a bad argument nothing is launched
 * and nothing is written; flash_mla_last_error() returns a message (per thread) naming the
 * argument. The library never exits, aborts or prints.
 */
#ifndef FLASH_MLA_H
#define FLASH_MLA_H

#include <stddef.h>
#include <stdint.h>

#define FLASH_MLA_VERSION_MAJOR 0
#define FLASH_MLA_VERSION_MINOR 1
#define FLASH_MLA_VERSION_PATCH 0
#define FLASH_MLA_VERSION (FLASH_MLA_VERSION_MAJOR * 10000 + FLASH_MLA_VERSION_MINOR * 100 + FLASH_MLA_VERSION_PATCH)

#if defined(_WIN32)
#define FLASH_MLA_API __declspec(dllexport)
#elif defined(__GNUC__)
#define FLASH_MLA_API __attribute__((visibility("default")))
#else
#define FLASH_MLA_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* cudaStream_t is `struct CUstream_st *`; declaring the tag keeps this header free of CUDA headers. */
struct CUstream_st;

/* Fixed head dimensions of MLA. */
#define FLASH_MLA_HEAD_DIM 576   /* K: 512 latent + 64 RoPE */
#define FLASH_MLA_HEAD_DIM_V 512 /* V: the first 512 dims of K */

/* Scheduler: each part's row in tile_scheduler_metadata has this many int32. */
#define FLASH_MLA_METADATA_SIZE 8
/* The scheduler's unit of work: 64 consecutive keys of one request (any page size). */
#define FLASH_MLA_BLOCK_N 64

typedef enum flash_mla_status {
  FLASH_MLA_SUCCESS = 0,
  FLASH_MLA_ERROR_NULL_POINTER = 1,       /* a required pointer is NULL */
  FLASH_MLA_ERROR_INVALID_SHAPE = 2,      /* a size is out of range or sizes disagree */
  FLASH_MLA_ERROR_INVALID_STRIDE = 3,     /* a stride is negative or does not fit the layout */
  FLASH_MLA_ERROR_INVALID_DTYPE = 4,      /* unknown dtype */
  FLASH_MLA_ERROR_MISALIGNED = 5,         /* a pointer or stride is not 16-byte aligned */
  FLASH_MLA_ERROR_INVALID_VALUE = 6,      /* a scalar or a host-visible data value is invalid */
  FLASH_MLA_ERROR_WORKSPACE_TOO_SMALL = 7,/* workspace_bytes < flash_mla_decode_workspace_size() */
  FLASH_MLA_ERROR_NO_DEVICE = 8,          /* no CUDA device or driver */
  FLASH_MLA_ERROR_UNSUPPORTED_DEVICE = 9, /* the device cannot run the requested kernel */
  FLASH_MLA_ERROR_INVALID_MEMORY = 10,    /* a pointer is not in the memory space the call needs */
  FLASH_MLA_ERROR_CUDA = 11,              /* a CUDA runtime call failed */
  FLASH_MLA_ERROR_INTERNAL = 12
} flash_mla_status_t;

typedef enum flash_mla_dtype {
  FLASH_MLA_DTYPE_BF16 = 0,
  FLASH_MLA_DTYPE_FP16 = 1
} flash_mla_dtype_t;

/* Which GPU decode kernel runs. AUTO picks the Hopper kernel on sm_90 when it is built in,
 * and the portable (sm_80+, mma.sync) kernel elsewhere. */
typedef enum flash_mla_kernel {
  FLASH_MLA_KERNEL_AUTO = 0,
  FLASH_MLA_KERNEL_PORTABLE = 1,
  FLASH_MLA_KERNEL_HOPPER = 2
} flash_mla_kernel_t;

/*
 * Arguments of one decode call. Strides are in elements. The last dimension of q, k_cache
 * and out must be contiguous; lse is contiguous [b, h_q, s_q].
 * For flash_mla_decode all pointers are device pointers; for flash_mla_decode_ref host pointers.
 */
typedef struct flash_mla_decode_params {
  flash_mla_dtype_t dtype;     /* of q, k_cache and out */
  int32_t batch;               /* b >= 1 */
  int32_t seqlen_q;            /* s_q >= 1 */
  int32_t num_heads_q;         /* h_q >= 1 */
  int32_t num_heads_k;         /* h_kv >= 1, h_q % h_kv == 0 */
  int32_t head_dim;            /* must be 576 */
  int32_t head_dim_v;          /* must be 512 */
  int32_t num_blocks;          /* pages in k_cache */
  int32_t page_size;           /* keys per page, >= 1 (any size; 64 is FlashMLA's) */
  int32_t max_blocks_per_seq;  /* columns of block_table */
  int32_t causal;              /* 0 or 1; bottom-right aligned */
  float softmax_scale;         /* finite; FlashMLA's default is 1/sqrt(576) */
  flash_mla_kernel_t kernel;   /* GPU only; ignored by the reference */

  const void *q;               /* [b, s_q, h_q, 576] */
  int64_t q_batch_stride, q_seq_stride, q_head_stride;
  const void *k_cache;         /* [num_blocks, page_size, h_kv, 576] */
  int64_t k_block_stride, k_token_stride, k_head_stride;
  const int32_t *block_table;  /* [b, max_blocks_per_seq] */
  int64_t block_table_stride;
  const int32_t *cache_seqlens;/* [b], 0 <= L <= max_blocks_per_seq * page_size */
  void *out;                   /* [b, s_q, h_q, 512] */
  int64_t out_batch_stride, out_seq_stride, out_head_stride;
  float *lse;                  /* [b, h_q, s_q] contiguous */
} flash_mla_decode_params_t;

/* ---- version and errors ---- */
FLASH_MLA_API int flash_mla_version(void); /* FLASH_MLA_VERSION of the library loaded */
FLASH_MLA_API const char *flash_mla_status_string(flash_mla_status_t status);
/* Detailed message of the last failed call on this thread ("" after a success). */
FLASH_MLA_API const char *flash_mla_last_error(void);

/* ---- scheduling ---- */
/* Parts the work is split into on `device` (-1: the current device). rows_per_head_k is
 * s_q * h_q / h_kv. The result is the first dimension of tile_scheduler_metadata. */
FLASH_MLA_API flash_mla_status_t flash_mla_get_num_sm_parts(int device, int32_t rows_per_head_k,
                                                           int32_t num_heads_k, int32_t *num_sm_parts);

/* GPU: fill tile_scheduler_metadata [num_sm_parts, FLASH_MLA_METADATA_SIZE] and
 * num_splits [batch + 1] from the device array cache_seqlens [batch]. No host sync; any
 * batch size (one CTA, fixed shared memory). Returns once enqueued. */
FLASH_MLA_API flash_mla_status_t flash_mla_get_metadata(const int32_t *cache_seqlens, int32_t batch,
                                                       int32_t num_sm_parts, int32_t *tile_scheduler_metadata,
                                                       int32_t *num_splits, struct CUstream_st *stream);

/* Host twin of flash_mla_get_metadata, same output bit for bit, on host arrays. */
FLASH_MLA_API flash_mla_status_t flash_mla_get_metadata_host(const int32_t *cache_seqlens, int32_t batch,
                                                            int32_t num_sm_parts, int32_t *tile_scheduler_metadata,
                                                            int32_t *num_splits);

/* ---- decode ---- */
/* Workspace bytes flash_mla_decode needs (split partials). */
FLASH_MLA_API flash_mla_status_t flash_mla_decode_workspace_size(int32_t batch, int32_t seqlen_q, int32_t num_heads_q,
                                                                int32_t num_sm_parts, size_t *bytes);

/* GPU decode. Returns once enqueued on `stream`. The metadata must come from
 * flash_mla_get_metadata on the same cache_seqlens and num_sm_parts. */
FLASH_MLA_API flash_mla_status_t flash_mla_decode(const flash_mla_decode_params_t *params,
                                                 const int32_t *tile_scheduler_metadata, int32_t num_sm_parts,
                                                 const int32_t *num_splits, void *workspace, size_t workspace_bytes,
                                                 struct CUstream_st *stream);

/* CPU reference: plain C11, fp32 accumulation, host pointers, same semantics and same
 * validation as flash_mla_decode, plus checks of cache_seqlens and block_table values. */
FLASH_MLA_API flash_mla_status_t flash_mla_decode_ref(const flash_mla_decode_params_t *params);

#ifdef __cplusplus
}
#endif
#endif /* FLASH_MLA_H */
