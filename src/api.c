/*
 * api.c: the public entry points: version, errors, validation, scheduling, dispatch.
 *
 * Order of a GPU call: validate everything that needs no device (so bad input fails on a machine
 * without a GPU too, and nothing is launched or written), then ask the device, then check that
 * each pointer is device memory, then launch. Kernel choice under FLASH_MLA_KERNEL_AUTO: the
 * Hopper kernel on compute capability 9.0 when it is built in and accepts the shape, else the
 * portable kernel.
 */
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "params.h"

/* ---------------------------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------------------------- */

static _Thread_local char g_last_error[512];

flash_mla_status_t fmla_set_error(flash_mla_status_t status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
  va_end(ap);
  return status;
}

void fmla_clear_error(void) { g_last_error[0] = '\0'; }

const char *flash_mla_last_error(void) { return g_last_error; }

int flash_mla_version(void) { return FLASH_MLA_VERSION; }

const char *flash_mla_status_string(flash_mla_status_t status) {
  switch (status) {
    case FLASH_MLA_SUCCESS: return "FLASH_MLA_SUCCESS";
    case FLASH_MLA_ERROR_NULL_POINTER: return "FLASH_MLA_ERROR_NULL_POINTER";
    case FLASH_MLA_ERROR_INVALID_SHAPE: return "FLASH_MLA_ERROR_INVALID_SHAPE";
    case FLASH_MLA_ERROR_INVALID_STRIDE: return "FLASH_MLA_ERROR_INVALID_STRIDE";
    case FLASH_MLA_ERROR_INVALID_DTYPE: return "FLASH_MLA_ERROR_INVALID_DTYPE";
    case FLASH_MLA_ERROR_MISALIGNED: return "FLASH_MLA_ERROR_MISALIGNED";
    case FLASH_MLA_ERROR_INVALID_VALUE: return "FLASH_MLA_ERROR_INVALID_VALUE";
    case FLASH_MLA_ERROR_WORKSPACE_TOO_SMALL: return "FLASH_MLA_ERROR_WORKSPACE_TOO_SMALL";
    case FLASH_MLA_ERROR_NO_DEVICE: return "FLASH_MLA_ERROR_NO_DEVICE";
    case FLASH_MLA_ERROR_UNSUPPORTED_DEVICE: return "FLASH_MLA_ERROR_UNSUPPORTED_DEVICE";
    case FLASH_MLA_ERROR_INVALID_MEMORY: return "FLASH_MLA_ERROR_INVALID_MEMORY";
    case FLASH_MLA_ERROR_CUDA: return "FLASH_MLA_ERROR_CUDA";
    case FLASH_MLA_ERROR_INTERNAL: return "FLASH_MLA_ERROR_INTERNAL";
  }
  return "FLASH_MLA_ERROR_UNKNOWN_STATUS";
}

/* ---------------------------------------------------------------------------------------------
 * Validation that reads no tensor data
 * ------------------------------------------------------------------------------------------- */

/* A dimension of size > 1 needs a stride that is >= the row it steps over and keeps 16-byte
 * alignment (8 elements of 2 bytes): the kernels load rows with 16-byte vectors and TMA. */
static flash_mla_status_t check_stride(const char *name, int64_t stride, int64_t size, int64_t min_stride) {
  if (stride < 0) return fmla_set_error(FLASH_MLA_ERROR_INVALID_STRIDE, "%s = %lld must be >= 0", name, (long long)stride);
  if (size <= 1) return FLASH_MLA_SUCCESS;
  if (stride < min_stride)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_STRIDE, "%s = %lld must be >= %lld (rows of a dimension of size %lld would overlap)",
                          name, (long long)stride, (long long)min_stride, (long long)size);
  if (stride % 8 != 0)
    return fmla_set_error(FLASH_MLA_ERROR_MISALIGNED, "%s = %lld must be a multiple of 8 elements (16 bytes)", name, (long long)stride);
  return FLASH_MLA_SUCCESS;
}

/* Distinct (b, t, h) rows of out must not share memory (the GPU writes them concurrently). Sorting
 * the dimensions by stride, each stride must step past everything the smaller ones span. */
static flash_mla_status_t check_out_no_overlap(const flash_mla_decode_params_t *p) {
  int64_t size[3] = {p->num_heads_q, p->seqlen_q, p->batch};
  int64_t stride[3] = {p->out_head_stride, p->out_seq_stride, p->out_batch_stride};
  for (int a = 0; a < 3; ++a)
    for (int b = a + 1; b < 3; ++b)
      if (stride[b] < stride[a]) {
        int64_t t = stride[a]; stride[a] = stride[b]; stride[b] = t;
        t = size[a]; size[a] = size[b]; size[b] = t;
      }
  int64_t extent = FLASH_MLA_HEAD_DIM_V;
  for (int a = 0; a < 3; ++a) {
    if (size[a] <= 1) continue;
    if (stride[a] < extent)
      return fmla_set_error(FLASH_MLA_ERROR_INVALID_STRIDE,
                            "out strides (batch %lld, seq %lld, head %lld) make distinct output rows overlap",
                            (long long)p->out_batch_stride, (long long)p->out_seq_stride, (long long)p->out_head_stride);
    extent = stride[a] * (size[a] - 1) + extent;
  }
  return FLASH_MLA_SUCCESS;
}

#define CHECK(expr)                                  \
  do {                                               \
    const flash_mla_status_t st_ = (expr);           \
    if (st_ != FLASH_MLA_SUCCESS) return st_;        \
  } while (0)

flash_mla_status_t fmla_validate_decode_params(const flash_mla_decode_params_t *p) {
  if (!p) return fmla_set_error(FLASH_MLA_ERROR_NULL_POINTER, "params is NULL");
  if (p->dtype != FLASH_MLA_DTYPE_BF16 && p->dtype != FLASH_MLA_DTYPE_FP16)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_DTYPE, "dtype = %d is neither FLASH_MLA_DTYPE_BF16 (0) nor FLASH_MLA_DTYPE_FP16 (1)",
                          (int)p->dtype);
  if (p->batch < 1) return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "batch = %d must be >= 1", p->batch);
  if (p->seqlen_q < 1) return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "seqlen_q = %d must be >= 1", p->seqlen_q);
  if (p->num_heads_q < 1) return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "num_heads_q = %d must be >= 1", p->num_heads_q);
  if (p->num_heads_k < 1) return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "num_heads_k = %d must be >= 1", p->num_heads_k);
  if (p->num_heads_q % p->num_heads_k != 0)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "num_heads_q = %d must be a multiple of num_heads_k = %d", p->num_heads_q,
                          p->num_heads_k);
  if (p->head_dim != FLASH_MLA_HEAD_DIM)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "head_dim = %d must be %d", p->head_dim, FLASH_MLA_HEAD_DIM);
  if (p->head_dim_v != FLASH_MLA_HEAD_DIM_V)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "head_dim_v = %d must be %d", p->head_dim_v, FLASH_MLA_HEAD_DIM_V);
  if (p->num_blocks < 1) return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "num_blocks = %d must be >= 1", p->num_blocks);
  if (p->page_size < 1) return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "page_size = %d must be >= 1", p->page_size);
  if (p->max_blocks_per_seq < 1)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "max_blocks_per_seq = %d must be >= 1", p->max_blocks_per_seq);
  const int64_t rows = (int64_t)p->seqlen_q * (p->num_heads_q / p->num_heads_k);
  if ((rows + FMLA_BLOCK_M - 1) / FMLA_BLOCK_M > 65535)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "seqlen_q * num_heads_q / num_heads_k = %lld rows per KV head exceeds %d",
                          (long long)rows, 65535 * FMLA_BLOCK_M);
  if (p->num_heads_k > 65535)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "num_heads_k = %d exceeds 65535", p->num_heads_k);
  if ((int64_t)p->max_blocks_per_seq * p->page_size > INT32_MAX)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "max_blocks_per_seq * page_size = %lld exceeds INT32_MAX",
                          (long long)p->max_blocks_per_seq * p->page_size);
  if (p->causal != 0 && p->causal != 1)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_VALUE, "causal = %d must be 0 or 1", p->causal);
  if (!isfinite(p->softmax_scale))
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_VALUE, "softmax_scale = %g must be finite", (double)p->softmax_scale);
  if (p->kernel != FLASH_MLA_KERNEL_AUTO && p->kernel != FLASH_MLA_KERNEL_PORTABLE && p->kernel != FLASH_MLA_KERNEL_HOPPER)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_VALUE, "kernel = %d is not a flash_mla_kernel_t", (int)p->kernel);

  if (!p->q) return fmla_set_error(FLASH_MLA_ERROR_NULL_POINTER, "q is NULL");
  if (!p->k_cache) return fmla_set_error(FLASH_MLA_ERROR_NULL_POINTER, "k_cache is NULL");
  if (!p->block_table) return fmla_set_error(FLASH_MLA_ERROR_NULL_POINTER, "block_table is NULL");
  if (!p->cache_seqlens) return fmla_set_error(FLASH_MLA_ERROR_NULL_POINTER, "cache_seqlens is NULL");
  if (!p->out) return fmla_set_error(FLASH_MLA_ERROR_NULL_POINTER, "out is NULL");
  if (!p->lse) return fmla_set_error(FLASH_MLA_ERROR_NULL_POINTER, "lse is NULL");
  if ((uintptr_t)p->q % 16) return fmla_set_error(FLASH_MLA_ERROR_MISALIGNED, "q must be 16-byte aligned");
  if ((uintptr_t)p->k_cache % 16) return fmla_set_error(FLASH_MLA_ERROR_MISALIGNED, "k_cache must be 16-byte aligned");
  if ((uintptr_t)p->out % 16) return fmla_set_error(FLASH_MLA_ERROR_MISALIGNED, "out must be 16-byte aligned");
  if ((uintptr_t)p->block_table % 4) return fmla_set_error(FLASH_MLA_ERROR_MISALIGNED, "block_table must be 4-byte aligned");
  if ((uintptr_t)p->cache_seqlens % 4) return fmla_set_error(FLASH_MLA_ERROR_MISALIGNED, "cache_seqlens must be 4-byte aligned");
  if ((uintptr_t)p->lse % 4) return fmla_set_error(FLASH_MLA_ERROR_MISALIGNED, "lse must be 4-byte aligned");

  const int64_t hk = p->num_heads_k;
  CHECK(check_stride("q_head_stride", p->q_head_stride, p->num_heads_q, FLASH_MLA_HEAD_DIM));
  CHECK(check_stride("q_seq_stride", p->q_seq_stride, p->seqlen_q, FLASH_MLA_HEAD_DIM));
  CHECK(check_stride("q_batch_stride", p->q_batch_stride, p->batch, FLASH_MLA_HEAD_DIM));
  CHECK(check_stride("k_head_stride", p->k_head_stride, hk, FLASH_MLA_HEAD_DIM));
  CHECK(check_stride("k_token_stride", p->k_token_stride, p->page_size, FLASH_MLA_HEAD_DIM));
  CHECK(check_stride("k_block_stride", p->k_block_stride, p->num_blocks, FLASH_MLA_HEAD_DIM));
  CHECK(check_stride("out_head_stride", p->out_head_stride, p->num_heads_q, FLASH_MLA_HEAD_DIM_V));
  CHECK(check_stride("out_seq_stride", p->out_seq_stride, p->seqlen_q, FLASH_MLA_HEAD_DIM_V));
  CHECK(check_stride("out_batch_stride", p->out_batch_stride, p->batch, FLASH_MLA_HEAD_DIM_V));
  CHECK(check_out_no_overlap(p));
  if (p->block_table_stride < 0 || (p->batch > 1 && p->block_table_stride < p->max_blocks_per_seq))
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_STRIDE, "block_table_stride = %lld must be >= max_blocks_per_seq = %d",
                          (long long)p->block_table_stride, p->max_blocks_per_seq);
  return FLASH_MLA_SUCCESS;
}

void fmla_fill_kernel_params(const flash_mla_decode_params_t *p, fmla_kernel_params *k) {
  memset(k, 0, sizeof *k);
  k->dtype = (int32_t)p->dtype;
  k->batch = p->batch;
  k->seqlen_q = p->seqlen_q;
  k->num_heads_q = p->num_heads_q;
  k->num_heads_k = p->num_heads_k;
  k->ngroups = p->num_heads_q / p->num_heads_k;
  k->rows = p->seqlen_q * k->ngroups;
  k->num_m_blocks = (k->rows + FMLA_BLOCK_M - 1) / FMLA_BLOCK_M;
  k->num_blocks = p->num_blocks;
  k->page_size = p->page_size;
  k->max_blocks_per_seq = p->max_blocks_per_seq;
  k->causal = p->causal;
  k->scale = p->softmax_scale;
  k->scale_log2 = p->softmax_scale * 1.4426950408889634f;
  k->q = p->q;
  k->q_batch_stride = p->q_batch_stride;
  k->q_seq_stride = p->q_seq_stride;
  k->q_head_stride = p->q_head_stride;
  k->k_cache = p->k_cache;
  k->k_block_stride = p->k_block_stride;
  k->k_token_stride = p->k_token_stride;
  k->k_head_stride = p->k_head_stride;
  k->block_table = p->block_table;
  k->block_table_stride = p->block_table_stride;
  k->cache_seqlens = p->cache_seqlens;
  k->out = p->out;
  k->out_batch_stride = p->out_batch_stride;
  k->out_seq_stride = p->out_seq_stride;
  k->out_head_stride = p->out_head_stride;
  k->lse = p->lse;
}

/* ---------------------------------------------------------------------------------------------
 * Device queries (cached per device: the answers never change within a process)
 * ------------------------------------------------------------------------------------------- */

#define FMLA_MAX_DEVICES 64
typedef struct device_info {
  atomic_int ready;
  int major, minor, sm_count;
} device_info;
static device_info g_devices[FMLA_MAX_DEVICES];

/* The current device (device < 0) or `device`, with its properties. */
static flash_mla_status_t get_device(int device, const device_info **out) {
  cudaError_t e;
  if (device < 0) {
    e = cudaGetDevice(&device);
    if (e != cudaSuccess) {
      cudaGetLastError(); /* do not leave a sticky-looking error for the caller */
      return fmla_set_error(FLASH_MLA_ERROR_NO_DEVICE, "no CUDA device available: %s", cudaGetErrorString(e));
    }
  }
  if (device >= FMLA_MAX_DEVICES) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || device >= count) {
      cudaGetLastError();
      return fmla_set_error(FLASH_MLA_ERROR_NO_DEVICE, "device %d does not exist", device);
    }
    return fmla_set_error(FLASH_MLA_ERROR_UNSUPPORTED_DEVICE, "device %d: at most %d devices are supported", device, FMLA_MAX_DEVICES);
  }
  device_info *d = &g_devices[device];
  if (!atomic_load_explicit(&d->ready, memory_order_acquire)) {
    int count = 0;
    e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
      cudaGetLastError();
      return fmla_set_error(FLASH_MLA_ERROR_NO_DEVICE, "no CUDA device available: %s",
                            e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
    }
    if (device >= count)
      return fmla_set_error(FLASH_MLA_ERROR_NO_DEVICE, "device %d does not exist (%d devices)", device, count);
    int major = 0, minor = 0, sms = 0;
    if ((e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device)) != cudaSuccess ||
        (e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device)) != cudaSuccess ||
        (e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device)) != cudaSuccess) {
      cudaGetLastError();
      return fmla_set_error(FLASH_MLA_ERROR_CUDA, "cudaDeviceGetAttribute(device %d): %s", device, cudaGetErrorString(e));
    }
    d->major = major;
    d->minor = minor;
    d->sm_count = sms;
    atomic_store_explicit(&d->ready, 1, memory_order_release);
  }
  if (d->major < 8)
    return fmla_set_error(FLASH_MLA_ERROR_UNSUPPORTED_DEVICE, "device %d has compute capability %d.%d; flash_mla needs 8.0 or newer",
                          device, d->major, d->minor);
  *out = d;
  return FLASH_MLA_SUCCESS;
}

/* A pointer the GPU reads or writes must be device (or managed) memory. */
static flash_mla_status_t check_device_pointer(const char *name, const void *ptr) {
  struct cudaPointerAttributes a;
  const cudaError_t e = cudaPointerGetAttributes(&a, ptr);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_MEMORY, "%s: cudaPointerGetAttributes failed: %s", name, cudaGetErrorString(e));
  }
  if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_MEMORY, "%s is not device memory (host tensors run flash_mla_decode_ref)", name);
  return FLASH_MLA_SUCCESS;
}

/* ---------------------------------------------------------------------------------------------
 * Scheduling
 * ------------------------------------------------------------------------------------------- */

flash_mla_status_t flash_mla_get_num_sm_parts(int device, int32_t rows_per_head_k, int32_t num_heads_k, int32_t *num_sm_parts) {
  if (!num_sm_parts) return fmla_set_error(FLASH_MLA_ERROR_NULL_POINTER, "num_sm_parts is NULL");
  if (rows_per_head_k < 1)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "rows_per_head_k (num_q_tokens_per_head_k) = %d must be >= 1", rows_per_head_k);
  if (num_heads_k < 1) return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "num_heads_k = %d must be >= 1", num_heads_k);
  const device_info *d;
  CHECK(get_device(device, &d));
  const int64_t m_blocks = ((int64_t)rows_per_head_k + FMLA_BLOCK_M - 1) / FMLA_BLOCK_M;
  int64_t parts = d->sm_count / (m_blocks * num_heads_k);
  if (parts < 1) parts = 1;
  if (parts > FMLA_MAX_SM_PARTS) parts = FMLA_MAX_SM_PARTS;
  *num_sm_parts = (int32_t)parts;
  fmla_clear_error();
  return FLASH_MLA_SUCCESS;
}

flash_mla_status_t flash_mla_get_metadata(const int32_t *cache_seqlens, int32_t batch, int32_t num_sm_parts,
                                          int32_t *tile_scheduler_metadata, int32_t *num_splits, struct CUstream_st *stream) {
  CHECK(fmla_check_metadata_args(cache_seqlens, batch, num_sm_parts, tile_scheduler_metadata, num_splits));
  const device_info *d;
  CHECK(get_device(-1, &d));
  CHECK(check_device_pointer("cache_seqlens", cache_seqlens));
  CHECK(check_device_pointer("tile_scheduler_metadata", tile_scheduler_metadata));
  CHECK(check_device_pointer("num_splits", num_splits));
  CHECK(fmla_launch_metadata(cache_seqlens, batch, num_sm_parts, tile_scheduler_metadata, num_splits, stream));
  fmla_clear_error();
  return FLASH_MLA_SUCCESS;
}

/* ---------------------------------------------------------------------------------------------
 * Decode
 * ------------------------------------------------------------------------------------------- */

/* Weak fallbacks for a build without the Hopper kernel (decode_sm90.cu defines the real ones). */
__attribute__((weak)) int fmla_hopper_built(void) { return 0; }
__attribute__((weak)) flash_mla_status_t fmla_launch_decode_hopper(const fmla_kernel_params *p, void *stream) {
  (void)p;
  (void)stream;
  return fmla_set_error(FLASH_MLA_ERROR_UNSUPPORTED_DEVICE, "this build of libflash_mla has no Hopper kernel");
}

/* Workspace: o_accum [slots, s_q * h_q, 512] fp32, then lse_accum [slots, s_q * h_q] fp32 at a
 * 256-byte boundary; slots = batch + num_sm_parts bounds the number of splits. */
static size_t o_accum_bytes(int64_t slots, int64_t rows_total) {
  return (((size_t)slots * (size_t)rows_total * FMLA_HEAD_DIM_V * sizeof(float)) + 255) & ~(size_t)255;
}

flash_mla_status_t flash_mla_decode_workspace_size(int32_t batch, int32_t seqlen_q, int32_t num_heads_q, int32_t num_sm_parts,
                                                   size_t *bytes) {
  if (!bytes) return fmla_set_error(FLASH_MLA_ERROR_NULL_POINTER, "bytes is NULL");
  if (batch < 1) return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "batch = %d must be >= 1", batch);
  if (seqlen_q < 1) return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "seqlen_q = %d must be >= 1", seqlen_q);
  if (num_heads_q < 1) return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "num_heads_q = %d must be >= 1", num_heads_q);
  if (num_sm_parts < 1 || num_sm_parts > FMLA_MAX_SM_PARTS)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "num_sm_parts = %d must be in [1, %d]", num_sm_parts, FMLA_MAX_SM_PARTS);
  const int64_t slots = (int64_t)batch + num_sm_parts;
  const int64_t rows_total = (int64_t)seqlen_q * num_heads_q;
  *bytes = o_accum_bytes(slots, rows_total) + (size_t)slots * (size_t)rows_total * sizeof(float);
  fmla_clear_error();
  return FLASH_MLA_SUCCESS;
}

flash_mla_status_t flash_mla_decode(const flash_mla_decode_params_t *params, const int32_t *tile_scheduler_metadata,
                                    int32_t num_sm_parts, const int32_t *num_splits, void *workspace, size_t workspace_bytes,
                                    struct CUstream_st *stream) {
  CHECK(fmla_validate_decode_params(params));
  const flash_mla_decode_params_t *p = params;
  if (!tile_scheduler_metadata) return fmla_set_error(FLASH_MLA_ERROR_NULL_POINTER, "tile_scheduler_metadata is NULL");
  if (!num_splits) return fmla_set_error(FLASH_MLA_ERROR_NULL_POINTER, "num_splits is NULL");
  if (num_sm_parts < 1 || num_sm_parts > FMLA_MAX_SM_PARTS)
    return fmla_set_error(FLASH_MLA_ERROR_INVALID_SHAPE, "num_sm_parts = %d must be in [1, %d]", num_sm_parts, FMLA_MAX_SM_PARTS);
  if (((uintptr_t)tile_scheduler_metadata | (uintptr_t)num_splits) % 4)
    return fmla_set_error(FLASH_MLA_ERROR_MISALIGNED, "tile_scheduler_metadata and num_splits must be 4-byte aligned");
  size_t need = 0;
  CHECK(flash_mla_decode_workspace_size(p->batch, p->seqlen_q, p->num_heads_q, num_sm_parts, &need));
  if (!workspace) return fmla_set_error(FLASH_MLA_ERROR_NULL_POINTER, "workspace is NULL (%zu bytes needed)", need);
  if ((uintptr_t)workspace % 16) return fmla_set_error(FLASH_MLA_ERROR_MISALIGNED, "workspace must be 16-byte aligned");
  if (workspace_bytes < need)
    return fmla_set_error(FLASH_MLA_ERROR_WORKSPACE_TOO_SMALL, "workspace_bytes = %zu < %zu needed (flash_mla_decode_workspace_size)",
                          workspace_bytes, need);

  const device_info *d;
  CHECK(get_device(-1, &d));
  CHECK(check_device_pointer("q", p->q));
  CHECK(check_device_pointer("k_cache", p->k_cache));
  CHECK(check_device_pointer("block_table", p->block_table));
  CHECK(check_device_pointer("cache_seqlens", p->cache_seqlens));
  CHECK(check_device_pointer("out", p->out));
  CHECK(check_device_pointer("lse", p->lse));
  CHECK(check_device_pointer("tile_scheduler_metadata", tile_scheduler_metadata));
  CHECK(check_device_pointer("num_splits", num_splits));
  CHECK(check_device_pointer("workspace", workspace));

  fmla_kernel_params k;
  fmla_fill_kernel_params(p, &k);
  k.meta = tile_scheduler_metadata;
  k.num_sm_parts = num_sm_parts;
  k.num_splits = num_splits;
  const int64_t slots = (int64_t)p->batch + num_sm_parts;
  k.o_accum = (float *)workspace;
  k.lse_accum = (float *)((char *)workspace + o_accum_bytes(slots, (int64_t)p->seqlen_q * p->num_heads_q));
  k.cc_major = d->major;
  k.cc_minor = d->minor;
  k.device = (int32_t)(d - g_devices);

  const int is_hopper = d->major == 9 && d->minor == 0;
  flash_mla_status_t st;
  if (p->kernel == FLASH_MLA_KERNEL_HOPPER) {
    if (!fmla_hopper_built() || !is_hopper)
      return fmla_set_error(FLASH_MLA_ERROR_UNSUPPORTED_DEVICE,
                            "kernel = FLASH_MLA_KERNEL_HOPPER needs a compute capability 9.0 device (this one is %d.%d)%s", d->major,
                            d->minor, fmla_hopper_built() ? "" : " and a library built with sm_90a");
    st = fmla_launch_decode_hopper(&k, stream);
  } else if (p->kernel == FLASH_MLA_KERNEL_AUTO && fmla_hopper_built() && is_hopper) {
    st = fmla_launch_decode_hopper(&k, stream);
    if (st == FLASH_MLA_ERROR_UNSUPPORTED_DEVICE) st = fmla_launch_decode_portable(&k, stream); /* shape it does not take */
  } else {
    st = fmla_launch_decode_portable(&k, stream);
  }
  if (st != FLASH_MLA_SUCCESS) return st;
  CHECK(fmla_launch_combine(&k, stream));
  fmla_clear_error();
  return FLASH_MLA_SUCCESS;
}
