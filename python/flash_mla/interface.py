"""FlashMLA's Python API (get_mla_metadata + flash_mla_with_kvcache) over libflash_mla.

CUDA tensors run the GPU library on torch's current stream; out and lse come from torch's caching
allocator on every call. The split workspace does too while a CUDA graph is being captured (and
whenever it is larger than WORKSPACE_CACHE_MAX_BYTES); otherwise one workspace per (device,
stream) is kept and reused, which is safe because calls on one stream run in order. CPU tensors run
the C reference (flash_mla_decode_ref) with the same semantics and validation.

The Python layer checks only what the C library cannot see through raw pointers: that every tensor
is on one device, the dtypes, the ranks, the sizes that tie tensors together (block_table and
cache_seqlens rows = batch, k_cache head dim = q head dim, metadata shapes), and the unit stride of
inner dimensions. Everything else (value ranges, strides, alignment) the library validates and
reports with a status; a non-success status raises ValueError / TypeError / RuntimeError (the
flash_mla.FlashMLAError subclasses) carrying the library's message, which names the argument.

Hot-path notes (flash_mla_with_kvcache on CUDA tensors): no host sync, no torch op besides two
torch.empty-like allocations (three while capturing), one struct.pack for the C parameter struct,
one ctypes call; the number of scheduler parts and the workspace size are cached per shape.
"""
import dataclasses
import struct
from typing import Optional, Tuple

import torch

from . import _lib

__all__ = [
    "FlashMLASchedMeta",
    "get_mla_metadata",
    "flash_mla_with_kvcache",
    "flash_mla_sparse_fwd",
    "CPU_SM_COUNT",
]

# CPU tensors have no device to size the split by: get_mla_metadata on CPU splits the work as it
# would on a GPU with this many SMs (an H100 SXM has 132), i.e. num_sm_parts =
# max(1, 132 // (ceil(num_q_tokens_per_head_k / 64) * num_heads_k)), the formula
# flash_mla_get_num_sm_parts applies to the device's SM count. Pass num_sm_parts= to override.
CPU_SM_COUNT = 132
_BLOCK_M = 64
_MAX_SM_PARTS = 1024

_HEAD_DIM_V = _lib.HEAD_DIM_V
_META = _lib.METADATA_SIZE
_DTYPES = {torch.bfloat16: _lib.DTYPE_BF16, torch.float16: _lib.DTYPE_FP16}
_INT32 = torch.int32
_FP32 = torch.float32
_UINT8 = torch.uint8
_KERNELS = _lib.KERNELS

_pack = _lib.pack_decode_params
_c_decode = _lib.decode
_c_decode_ref = _lib.decode_ref
_SUCCESS = _lib.SUCCESS

_parts_cache = {}  # (device index, rows per KV head, h_kv) -> num_sm_parts
_ws_cache = {}  # (b, s_q, h_q, num_sm_parts) -> workspace bytes
# Outside graph capture, a workspace of at most this many bytes is kept per (device, stream) and
# reused by the next call on that stream (saves one allocation, ~2 us of host time per call on an
# H200 machine). Set flash_mla.interface.WORKSPACE_CACHE_MAX_BYTES = 0 to allocate it on every call.
WORKSPACE_CACHE_MAX_BYTES = 32 << 20
_ws_tensors = {}  # (device index, raw stream) -> uint8 workspace tensor


# ---- CUDA helpers that stay cheap on the hot path ----
def _raw_stream_fallback(device_index):
    return torch.cuda.current_stream(device_index).cuda_stream


_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or _raw_stream_fallback
_current_device = getattr(torch._C, "_cuda_getDevice", None) or torch.cuda.current_device
_capturing = getattr(torch._C, "_cuda_isCurrentStreamCapturing", None) or torch.cuda.is_current_stream_capturing


def _workspace(q, dev, ws_bytes, stream):
    """The split workspace: the cached one of this (device, stream), grown when too small, or a
    fresh allocation while capturing a graph (the graph must own its memory) or when large."""
    if ws_bytes > WORKSPACE_CACHE_MAX_BYTES or _capturing():
        return q.new_empty(ws_bytes, dtype=_UINT8)
    key = (dev, stream)
    ws = _ws_tensors.get(key)
    if ws is None or ws.numel() < ws_bytes:
        ws = _ws_tensors[key] = q.new_empty(ws_bytes, dtype=_UINT8)
    return ws


@dataclasses.dataclass
class FlashMLASchedMeta:
    """Scheduler metadata of FlashMLA's newer API, filled by the first flash_mla_with_kvcache call.

    ``get_mla_metadata()`` (no arguments) returns ``(FlashMLASchedMeta(), None)``. The first
    ``flash_mla_with_kvcache(..., sched_meta, None, ...)`` computes the metadata from that call's
    cache_seqlens and records the shape in ``config``; later calls reuse it and raise ValueError
    when b, s_q, h_q, page size, h_kv or causal differ. As in FlashMLA, reuse it only while
    cache_seqlens holds the same values (e.g. across the layers of one decode step).
    """

    @dataclasses.dataclass
    class Config:
        b: int
        s_q: int
        h_q: int
        page_block_size: int
        h_k: int
        causal: bool
        is_fp8_kvcache: bool
        topk: Optional[int]
        extra_page_block_size: Optional[int]
        extra_topk: Optional[int]

    have_initialized: bool = False
    config: Optional[Config] = None
    tile_scheduler_metadata: Optional[torch.Tensor] = None  # [num_sm_parts, 8] int32
    num_splits: Optional[torch.Tensor] = None  # [b + 1] int32


def _num_sm_parts(device_index, rows, h_kv):
    key = (device_index, rows, h_kv)
    parts = _parts_cache.get(key)
    if parts is None:
        out = _lib._i32()
        _lib.check(_lib.get_num_sm_parts(device_index, rows, h_kv, _lib.ctypes.byref(out)), "get_mla_metadata")
        parts = _parts_cache[key] = out.value
    return parts


def _cpu_num_sm_parts(rows, h_kv):
    return max(1, min(_MAX_SM_PARTS, CPU_SM_COUNT // (-(-rows // _BLOCK_M) * h_kv)))


def _workspace_bytes(b, s_q, h_q, parts):
    key = (b, s_q, h_q, parts)
    n = _ws_cache.get(key)
    if n is None:
        size = _lib.ctypes.c_size_t()
        _lib.check(_lib.decode_workspace_size(b, s_q, h_q, parts, _lib.ctypes.byref(size)), "flash_mla_with_kvcache")
        n = _ws_cache[key] = size.value
    return n


def _compute_metadata(cache_seqlens, rows, h_kv, num_sm_parts=None):
    """(tile_scheduler_metadata, num_splits) for a validated 1-D int32 cache_seqlens."""
    b = cache_seqlens.shape[0]
    dev = cache_seqlens.get_device()
    if not cache_seqlens.is_contiguous():
        cache_seqlens = cache_seqlens.contiguous()
    if dev < 0:
        parts = _cpu_num_sm_parts(rows, h_kv) if num_sm_parts is None else int(num_sm_parts)
        meta = torch.empty((max(parts, 1), _META), dtype=_INT32)  # the library checks the range
        splits = torch.empty((b + 1,), dtype=_INT32)
        _lib.check(
            _lib.get_metadata_host(cache_seqlens.data_ptr(), b, parts, meta.data_ptr(), splits.data_ptr()),
            "get_mla_metadata",
        )
        return meta, splits
    if dev != _current_device():
        with torch.cuda.device(dev):
            return _compute_metadata(cache_seqlens, rows, h_kv, num_sm_parts)
    parts = _num_sm_parts(dev, rows, h_kv) if num_sm_parts is None else int(num_sm_parts)
    meta = torch.empty((max(parts, 1), _META), dtype=_INT32, device=cache_seqlens.device)
    splits = torch.empty((b + 1,), dtype=_INT32, device=cache_seqlens.device)
    _lib.check(
        _lib.get_metadata(cache_seqlens.data_ptr(), b, parts, meta.data_ptr(), splits.data_ptr(), _raw_stream(dev)),
        "get_mla_metadata",
    )
    return meta, splits


def get_mla_metadata(
    cache_seqlens: Optional[torch.Tensor] = None,
    num_q_tokens_per_head_k: Optional[int] = None,
    num_heads_k: Optional[int] = None,
    num_heads_q: Optional[int] = None,
    is_fp8_kvcache: bool = False,
    topk: Optional[int] = None,
    *,
    num_sm_parts: Optional[int] = None,
):
    """Scheduler metadata for flash_mla_with_kvcache.

    Classic form: ``get_mla_metadata(cache_seqlens, s_q * h_q // h_kv, h_kv)`` returns
    ``(tile_scheduler_metadata [num_sm_parts, 8] int32, num_splits [b + 1] int32)`` on
    cache_seqlens' device. On CUDA it is computed on the GPU on torch's current stream (no host
    sync, capturable) and num_sm_parts comes from the device's SM count. On CPU it is the library's
    host twin, split as on a GPU with CPU_SM_COUNT (132) SMs. ``num_sm_parts=`` (an extension)
    overrides the number of parts.

    Newer FlashMLA form: ``get_mla_metadata()`` (no arguments) returns ``(FlashMLASchedMeta(),
    None)``, filled by the first flash_mla_with_kvcache call.

    ``num_heads_q`` is accepted for compatibility and unused (dense decoding). fp8 KV caches and
    sparse attention (``topk``) are not supported: NotImplementedError.
    """
    if is_fp8_kvcache:
        raise NotImplementedError("flash_mla: is_fp8_kvcache=True: fp8 KV caches are not supported yet (bf16/fp16 only)")
    if topk is not None:
        raise NotImplementedError("flash_mla: topk: sparse attention is not supported yet (dense decoding only)")
    if cache_seqlens is None and num_q_tokens_per_head_k is None and num_heads_k is None:
        return FlashMLASchedMeta(), None
    if not isinstance(cache_seqlens, torch.Tensor):
        raise TypeError("get_mla_metadata: cache_seqlens must be a torch.Tensor, got %s" % type(cache_seqlens).__name__)
    if cache_seqlens.dtype != _INT32:
        raise TypeError("get_mla_metadata: cache_seqlens must be int32, got %s" % cache_seqlens.dtype)
    if cache_seqlens.dim() != 1:
        raise ValueError("get_mla_metadata: cache_seqlens must be 1-D [batch], got shape %s" % (tuple(cache_seqlens.shape),))
    if cache_seqlens.shape[0] < 1:
        raise ValueError("get_mla_metadata: cache_seqlens is empty: batch = 0 must be >= 1")
    for name, v in (("num_q_tokens_per_head_k", num_q_tokens_per_head_k), ("num_heads_k", num_heads_k)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError("get_mla_metadata: %s = %r must be an int >= 1" % (name, v))
    if num_sm_parts is not None and (isinstance(num_sm_parts, bool) or not isinstance(num_sm_parts, int)):
        raise ValueError("get_mla_metadata: num_sm_parts = %r must be an int" % (num_sm_parts,))
    return _compute_metadata(cache_seqlens, num_q_tokens_per_head_k, num_heads_k, num_sm_parts)


def _shape_error(msg):
    return ValueError("flash_mla_with_kvcache: " + msg)


def flash_mla_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    block_table: torch.Tensor,
    cache_seqlens: torch.Tensor,
    head_dim_v: int,
    tile_scheduler_metadata,
    num_splits: Optional[torch.Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    is_fp8_kvcache: bool = False,
    indices: Optional[torch.Tensor] = None,
    attn_sink: Optional[torch.Tensor] = None,
    extra_k_cache: Optional[torch.Tensor] = None,
    extra_indices_in_kvcache: Optional[torch.Tensor] = None,
    topk_length: Optional[torch.Tensor] = None,
    extra_topk_length: Optional[torch.Tensor] = None,
    *,
    descale_q: Optional[torch.Tensor] = None,
    descale_k: Optional[torch.Tensor] = None,
    kernel: str = "auto",
    out: Optional[torch.Tensor] = None,
    lse: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """MLA decoding over a paged KV cache.

    q [b, s_q, h_q, 576] bf16/fp16; k_cache [num_blocks, page_size, h_kv, 576] same dtype (V is
    its first 512 dims); block_table [b, max_blocks] int32; cache_seqlens [b] int32;
    head_dim_v must be 512. tile_scheduler_metadata / num_splits: from get_mla_metadata (classic
    form), or a FlashMLASchedMeta with num_splits None (newer form), or both None (metadata is
    computed for this call only). softmax_scale defaults to 576 ** -0.5; causal masking (s_q > 1)
    is bottom-right aligned. kernel: "auto" | "portable" | "hopper" (GPU only; an extension).
    descale_q / descale_k (fp8 in some FlashMLA versions) are accepted as keywords and must be None.

    Returns (out [b, s_q, h_q, 512] dtype of q, lse [b, h_q, s_q] fp32, natural log). A query
    row that sees no key gets out 0 and lse +inf.

    Only the last dimension of q and k_cache must be contiguous, and block_table's rows; other
    strides are free within the library's rules (multiples of 8 elements).

    out= / lse= (an extension, keyword only): write into these tensors instead of new ones
    (out [b, s_q, h_q, 512] dtype of q, last dim contiguous; lse [b, h_q, s_q] fp32 contiguous);
    on an error nothing is written to them.
    """
    if is_fp8_kvcache or descale_q is not None or descale_k is not None:
        raise NotImplementedError(
            "flash_mla: is_fp8_kvcache / descale_q / descale_k: fp8 KV caches are not supported yet (bf16/fp16 only)"
        )
    if (
        indices is not None
        or attn_sink is not None
        or extra_k_cache is not None
        or extra_indices_in_kvcache is not None
        or topk_length is not None
        or extra_topk_length is not None
    ):
        raise NotImplementedError(
            "flash_mla: indices / attn_sink / extra_k_cache / extra_indices_in_kvcache / topk_length / "
            "extra_topk_length: sparse attention is not supported yet (dense decoding only)"
        )
    try:
        dt = _DTYPES.get(q.dtype)
        kdt = k_cache.dtype
        bt_dt = block_table.dtype
        cs_dt = cache_seqlens.dtype
        dev = q.get_device()
        devs_ok = k_cache.get_device() == dev and block_table.get_device() == dev and cache_seqlens.get_device() == dev
    except AttributeError as e:
        raise TypeError(
            "flash_mla_with_kvcache: q, k_cache, block_table and cache_seqlens must be torch.Tensors (%s)" % e
        ) from None
    if dt is None:
        raise TypeError("flash_mla_with_kvcache: q must be bfloat16 or float16, got %s" % q.dtype)
    if kdt != q.dtype:
        raise TypeError("flash_mla_with_kvcache: k_cache dtype %s must equal q dtype %s" % (kdt, q.dtype))
    if bt_dt != _INT32:
        raise TypeError("flash_mla_with_kvcache: block_table must be int32, got %s" % bt_dt)
    if cs_dt != _INT32:
        raise TypeError("flash_mla_with_kvcache: cache_seqlens must be int32, got %s" % cs_dt)
    if not devs_ok:
        raise _shape_error(
            "q, k_cache, block_table and cache_seqlens must be on one device, got %s, %s, %s, %s"
            % (q.device, k_cache.device, block_table.device, cache_seqlens.device)
        )
    try:  # unpacking checks the ranks
        b, s_q, h_q, d = q.shape
        num_blocks, page_size, h_kv, dk = k_cache.shape
        bt_rows, max_blocks = block_table.shape
        (cs_rows,) = cache_seqlens.shape
    except ValueError:
        for name, t, want in (
            ("q", q, "4-D [b, s_q, h_q, 576]"),
            ("k_cache", k_cache, "4-D [num_blocks, page_size, h_kv, 576]"),
            ("block_table", block_table, "2-D [b, max_blocks_per_seq]"),
            ("cache_seqlens", cache_seqlens, "1-D [b]"),
        ):
            if t.dim() != int(want[0]):
                raise _shape_error("%s must be %s, got shape %s" % (name, want, tuple(t.shape))) from None
        raise
    if dk != d:
        raise _shape_error("k_cache.shape[-1] = %d must equal q.shape[-1] = %d (576)" % (dk, d))
    if bt_rows != b:
        raise _shape_error("block_table.shape[0] = %d must equal the batch size q.shape[0] = %d" % (bt_rows, b))
    if cs_rows != b:
        raise _shape_error("cache_seqlens.shape[0] = %d must equal the batch size q.shape[0] = %d" % (cs_rows, b))
    qs = q.stride()
    ks = k_cache.stride()
    bts = block_table.stride()
    if qs[3] != 1 and d > 1:
        raise _shape_error("q's last dimension must be contiguous (stride 1), got strides %s" % (qs,))
    if ks[3] != 1 and dk > 1:
        raise _shape_error("k_cache's last dimension must be contiguous (stride 1), got strides %s" % (ks,))
    if bts[1] != 1 and max_blocks > 1:
        raise _shape_error("block_table's rows must be contiguous (stride 1 in dim 1), got strides %s" % (bts,))
    if not cache_seqlens.is_contiguous():
        raise _shape_error("cache_seqlens must be contiguous, got stride %d" % cache_seqlens.stride(0))
    kern = _KERNELS.get(kernel)
    if kern is None:
        raise ValueError("flash_mla_with_kvcache: kernel = %r must be one of 'auto', 'portable', 'hopper'" % (kernel,))

    # ---- scheduler metadata ----
    meta = tile_scheduler_metadata
    if not isinstance(meta, torch.Tensor):
        if meta is not None and not isinstance(meta, FlashMLASchedMeta):
            raise TypeError(
                "flash_mla_with_kvcache: tile_scheduler_metadata must be a tensor from get_mla_metadata, a "
                "FlashMLASchedMeta or None, got %s" % type(meta).__name__
            )
        if num_splits is not None:
            raise ValueError(
                "flash_mla_with_kvcache: num_splits must be None when tile_scheduler_metadata is a FlashMLASchedMeta or None"
            )
        if h_kv < 1 or h_q % h_kv != 0 or s_q < 1 or h_q < 1:
            raise _shape_error(
                "num_heads_q = q.shape[2] = %d must be a positive multiple of num_heads_k = k_cache.shape[2] = %d, "
                "and s_q = %d >= 1" % (h_q, h_kv, s_q)
            )
        if meta is None:
            meta, num_splits = _compute_metadata(cache_seqlens, s_q * h_q // h_kv, h_kv)
        elif isinstance(meta, FlashMLASchedMeta):
            sched = meta
            causal_b = bool(causal)
            if not sched.have_initialized:
                sched.tile_scheduler_metadata, sched.num_splits = _compute_metadata(cache_seqlens, s_q * h_q // h_kv, h_kv)
                sched.config = FlashMLASchedMeta.Config(b, s_q, h_q, page_size, h_kv, causal_b, False, None, None, None)
                sched.have_initialized = True
            else:
                c = sched.config
                for name, want, got in (
                    ("b (batch size)", c.b, b),
                    ("s_q", c.s_q, s_q),
                    ("h_q", c.h_q, h_q),
                    ("page_block_size", c.page_block_size, page_size),
                    ("h_k", c.h_k, h_kv),
                    ("causal", c.causal, causal_b),
                ):
                    if want != got:
                        raise ValueError(
                            "flash_mla_with_kvcache: tile_scheduler_metadata (FlashMLASchedMeta) was initialized with "
                            "%s = %r but this call has %r; use one FlashMLASchedMeta per shape (and per cache_seqlens)"
                            % (name, want, got)
                        )
            meta, num_splits = sched.tile_scheduler_metadata, sched.num_splits
    try:
        meta_ok = meta.dtype == _INT32 and num_splits.dtype == _INT32
        meta_dev = meta.get_device() == dev and num_splits.get_device() == dev
        meta_shape = meta.shape
        ns_shape = num_splits.shape
        meta_contig = meta.is_contiguous() and num_splits.is_contiguous()
    except AttributeError:
        raise TypeError(
            "flash_mla_with_kvcache: tile_scheduler_metadata and num_splits must be the tensors get_mla_metadata returns"
        ) from None
    if not meta_ok:
        raise TypeError(
            "flash_mla_with_kvcache: tile_scheduler_metadata and num_splits must be int32, got %s and %s"
            % (meta.dtype, num_splits.dtype)
        )
    if not meta_dev:
        raise _shape_error(
            "tile_scheduler_metadata and num_splits must be on q's device %s, got %s and %s"
            % (q.device, meta.device, num_splits.device)
        )
    if len(meta_shape) != 2 or meta_shape[1] != _META or len(ns_shape) != 1 or ns_shape[0] != b + 1 or not meta_contig:
        raise _shape_error(
            "tile_scheduler_metadata must be a contiguous int32 [num_sm_parts, %d] tensor and num_splits a contiguous "
            "int32 [b + 1] = [%d] tensor (as get_mla_metadata returns them), got shapes %s and %s"
            % (_META, b + 1, tuple(meta_shape), tuple(ns_shape))
        )
    parts = meta_shape[0]

    # ---- outputs and the C call ----
    if out is None:
        out = q.new_empty(b, s_q, h_q, _HEAD_DIM_V)
        os0, os1, os2 = s_q * h_q * _HEAD_DIM_V, h_q * _HEAD_DIM_V, _HEAD_DIM_V
    else:
        os0, os1, os2 = _check_out(out, q, dev, b, s_q, h_q)
    if lse is None:
        lse = q.new_empty(b, h_q, s_q, dtype=_FP32)
    else:
        _check_lse(lse, q, dev, b, s_q, h_q)
    if softmax_scale is None:
        softmax_scale = d ** -0.5 if d > 0 else 1.0  # d != 576 is rejected by the library
    try:
        params = _pack(
            dt, b, s_q, h_q, h_kv, d, head_dim_v, num_blocks, page_size, max_blocks, 1 if causal else 0,
            softmax_scale, kern,
            q.data_ptr(), qs[0], qs[1], qs[2],
            k_cache.data_ptr(), ks[0], ks[1], ks[2],
            block_table.data_ptr(), bts[0],
            cache_seqlens.data_ptr(),
            out.data_ptr(), os0, os1, os2,
            lse.data_ptr(),
        )  # fmt: skip
    except (struct.error, TypeError) as e:
        raise ValueError(
            "flash_mla_with_kvcache: a size, stride, head_dim_v or softmax_scale does not fit the C parameter types (%s)" % e
        ) from None
    if dev < 0:
        st = _c_decode_ref(params)
    else:
        ws_bytes = _ws_cache.get((b, s_q, h_q, parts))
        if ws_bytes is None:
            ws_bytes = _workspace_bytes(b, s_q, h_q, parts)
        stream = _raw_stream(dev)
        if dev == _current_device():
            ws = _workspace(q, dev, ws_bytes, stream)
            st = _c_decode(params, meta.data_ptr(), parts, num_splits.data_ptr(), ws.data_ptr(), ws_bytes, stream)
        else:
            with torch.cuda.device(dev):
                ws = _workspace(q, dev, ws_bytes, stream)
                st = _c_decode(params, meta.data_ptr(), parts, num_splits.data_ptr(), ws.data_ptr(), ws_bytes, stream)
    if st != _SUCCESS:
        raise _lib.error(st, "flash_mla_with_kvcache")
    return out, lse


def _check_out(out, q, dev, b, s_q, h_q):
    if not isinstance(out, torch.Tensor):
        raise TypeError("flash_mla_with_kvcache: out must be a torch.Tensor, got %s" % type(out).__name__)
    if out.dtype != q.dtype:
        raise TypeError("flash_mla_with_kvcache: out dtype %s must equal q dtype %s" % (out.dtype, q.dtype))
    if out.get_device() != dev:
        raise _shape_error("out must be on q's device %s, got %s" % (q.device, out.device))
    if tuple(out.shape) != (b, s_q, h_q, _HEAD_DIM_V):
        raise _shape_error("out must have shape %s, got %s" % ((b, s_q, h_q, _HEAD_DIM_V), tuple(out.shape)))
    st = out.stride()
    if st[3] != 1:
        raise _shape_error("out's last dimension must be contiguous (stride 1), got strides %s" % (st,))
    return st[0], st[1], st[2]


def _check_lse(lse, q, dev, b, s_q, h_q):
    if not isinstance(lse, torch.Tensor):
        raise TypeError("flash_mla_with_kvcache: lse must be a torch.Tensor, got %s" % type(lse).__name__)
    if lse.dtype != _FP32:
        raise TypeError("flash_mla_with_kvcache: lse must be float32, got %s" % lse.dtype)
    if lse.get_device() != dev:
        raise _shape_error("lse must be on q's device %s, got %s" % (q.device, lse.device))
    if tuple(lse.shape) != (b, h_q, s_q) or not lse.is_contiguous():
        raise _shape_error("lse must be a contiguous [b, h_q, s_q] = %s tensor, got shape %s" % ((b, h_q, s_q), tuple(lse.shape)))


def flash_mla_sparse_fwd(*args, **kwargs):
    """FlashMLA's sparse prefill entry point: not supported by this library (dense decoding only)."""
    raise NotImplementedError("flash_mla: flash_mla_sparse_fwd: sparse attention is not supported yet (dense decoding only)")
