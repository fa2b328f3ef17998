"""ctypes binding of libflash_mla.so (include/flash_mla.h).

Nothing here imports torch or needs a GPU: the library carries the CUDA runtime statically and its
GPU entry points return FLASH_MLA_ERROR_NO_DEVICE on a machine without one.

Where the library is looked for, first hit wins:
  1. the path in the environment variable FLASH_MLA_LIBRARY (an explicit choice),
  2. the package directory (``pip install .`` and ``make python`` put it there),
  3. the repository root (``make lib`` builds it there; for in-tree development).

The prototypes (argtypes/restype) are set once here, at import, so a call only converts its
arguments. Decode parameters are packed with one ``struct.Struct.pack`` (one C call) into a bytes
object laid out exactly like ``flash_mla_decode_params_t``; ``DecodeParams`` is the same layout as a
ctypes Structure, kept for readability and to check the packed format against ctypes' layout rules.
"""
import ctypes
import os
import struct

LIB_NAME = "libflash_mla.so"

# ---- constants of include/flash_mla.h ----
HEAD_DIM = 576
HEAD_DIM_V = 512
METADATA_SIZE = 8
BLOCK_N = 64

SUCCESS = 0
ERROR_NULL_POINTER = 1
ERROR_INVALID_SHAPE = 2
ERROR_INVALID_STRIDE = 3
ERROR_INVALID_DTYPE = 4
ERROR_MISALIGNED = 5
ERROR_INVALID_VALUE = 6
ERROR_WORKSPACE_TOO_SMALL = 7
ERROR_NO_DEVICE = 8
ERROR_UNSUPPORTED_DEVICE = 9
ERROR_INVALID_MEMORY = 10
ERROR_CUDA = 11
ERROR_INTERNAL = 12

DTYPE_BF16 = 0
DTYPE_FP16 = 1

KERNEL_AUTO = 0
KERNEL_PORTABLE = 1
KERNEL_HOPPER = 2
KERNELS = {"auto": KERNEL_AUTO, "portable": KERNEL_PORTABLE, "hopper": KERNEL_HOPPER}

_i32 = ctypes.c_int32
_i64 = ctypes.c_int64
_ptr = ctypes.c_void_p


class DecodeParams(ctypes.Structure):
    """Mirror of flash_mla_decode_params_t (include/flash_mla.h), field for field.

    C enums (flash_mla_dtype_t, flash_mla_kernel_t) are int-sized with the GCC/Clang/MSVC ABIs.
    """

    _fields_ = [
        ("dtype", ctypes.c_int),
        ("batch", _i32),
        ("seqlen_q", _i32),
        ("num_heads_q", _i32),
        ("num_heads_k", _i32),
        ("head_dim", _i32),
        ("head_dim_v", _i32),
        ("num_blocks", _i32),
        ("page_size", _i32),
        ("max_blocks_per_seq", _i32),
        ("causal", _i32),
        ("softmax_scale", ctypes.c_float),
        ("kernel", ctypes.c_int),
        ("q", _ptr),
        ("q_batch_stride", _i64),
        ("q_seq_stride", _i64),
        ("q_head_stride", _i64),
        ("k_cache", _ptr),
        ("k_block_stride", _i64),
        ("k_token_stride", _i64),
        ("k_head_stride", _i64),
        ("block_table", _ptr),
        ("block_table_stride", _i64),
        ("cache_seqlens", _ptr),
        ("out", _ptr),
        ("out_batch_stride", _i64),
        ("out_seq_stride", _i64),
        ("out_head_stride", _i64),
        ("lse", _ptr),
    ]


# The same layout as a struct format, in _fields_ order. '@' = native sizes and alignment, which
# inserts the same padding a C compiler does (4 bytes after `kernel`, before the first pointer).
_STRUCT_CODES = {ctypes.c_int: "i", _i32: "i", ctypes.c_float: "f", _ptr: "P", _i64: "q"}
DECODE_PARAMS_FORMAT = "@" + "".join(_STRUCT_CODES[t] for _, t in DecodeParams._fields_)
_decode_params_struct = struct.Struct(DECODE_PARAMS_FORMAT)
pack_decode_params = _decode_params_struct.pack
if _decode_params_struct.size != ctypes.sizeof(DecodeParams):  # pragma: no cover - ABI guard
    raise ImportError(
        "flash_mla: struct format %r is %d bytes but ctypes lays flash_mla_decode_params_t out in %d"
        % (DECODE_PARAMS_FORMAT, _decode_params_struct.size, ctypes.sizeof(DecodeParams))
    )


def _candidates():
    here = os.path.dirname(os.path.abspath(__file__))
    env = os.environ.get("FLASH_MLA_LIBRARY")
    if env:  # an explicit choice wins over the copy inside the package
        yield env
    yield os.path.join(here, LIB_NAME)
    yield os.path.join(os.path.dirname(os.path.dirname(here)), LIB_NAME)


def _load():
    tried = []
    for path in _candidates():
        if not os.path.isfile(path):
            tried.append("%s (not found)" % path)
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError(
        "flash_mla: cannot load %s; tried:\n  %s\nBuild it with `make lib` (and `make python`) at the "
        "repository root, `pip install .`, or point FLASH_MLA_LIBRARY at it." % (LIB_NAME, "\n  ".join(tried))
    )


lib, lib_path = _load()


def _proto(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_status = ctypes.c_int
_i32p = ctypes.POINTER(_i32)
_sizep = ctypes.POINTER(ctypes.c_size_t)

version = _proto("flash_mla_version", ctypes.c_int)
status_string = _proto("flash_mla_status_string", ctypes.c_char_p, _status)
last_error = _proto("flash_mla_last_error", ctypes.c_char_p)
get_num_sm_parts = _proto("flash_mla_get_num_sm_parts", _status, ctypes.c_int, _i32, _i32, _i32p)
# Tensor pointers travel as plain integers (c_void_p accepts int); the stream is a cudaStream_t.
get_metadata = _proto("flash_mla_get_metadata", _status, _ptr, _i32, _i32, _ptr, _ptr, _ptr)
get_metadata_host = _proto("flash_mla_get_metadata_host", _status, _ptr, _i32, _i32, _ptr, _ptr)
decode_workspace_size = _proto("flash_mla_decode_workspace_size", _status, _i32, _i32, _i32, _i32, _sizep)
# params: bytes from pack_decode_params (c_void_p accepts bytes and passes its buffer).
decode = _proto("flash_mla_decode", _status, _ptr, _ptr, _i32, _ptr, _ptr, ctypes.c_size_t, _ptr)
decode_ref = _proto("flash_mla_decode_ref", _status, _ptr)


def version_string():
    v = version()
    return "%d.%d.%d" % (v // 10000, (v // 100) % 100, v % 100)


# ---- errors ----
class FlashMLAError(Exception):
    """Base of the errors raised for a non-success flash_mla_status_t; `.status` holds the code."""

    status = None


class FlashMLAValueError(FlashMLAError, ValueError):
    pass


class FlashMLATypeError(FlashMLAError, TypeError):
    pass


class FlashMLARuntimeError(FlashMLAError, RuntimeError):
    pass


_ERROR_CLASS = {
    ERROR_NULL_POINTER: FlashMLAValueError,
    ERROR_INVALID_SHAPE: FlashMLAValueError,
    ERROR_INVALID_STRIDE: FlashMLAValueError,
    ERROR_INVALID_DTYPE: FlashMLATypeError,
    ERROR_MISALIGNED: FlashMLAValueError,
    ERROR_INVALID_VALUE: FlashMLAValueError,
    ERROR_WORKSPACE_TOO_SMALL: FlashMLAValueError,
    ERROR_NO_DEVICE: FlashMLARuntimeError,
    ERROR_UNSUPPORTED_DEVICE: FlashMLARuntimeError,
    # A pointer in the wrong memory space is a bad argument (e.g. a host tensor on the GPU path).
    ERROR_INVALID_MEMORY: FlashMLAValueError,
    ERROR_CUDA: FlashMLARuntimeError,
    ERROR_INTERNAL: FlashMLARuntimeError,
}


def error(status, where):
    """The exception for a non-success status, with the library's message (read on this thread)."""
    msg = (last_error() or b"").decode("utf-8", "replace")
    name = (status_string(status) or b"").decode("ascii", "replace")
    cls = _ERROR_CLASS.get(status, FlashMLARuntimeError)
    e = cls("%s: %s (%s)" % (where, msg or "no message", name))
    e.status = status
    return e


def check(status, where):
    if status != SUCCESS:
        raise error(status, where)
