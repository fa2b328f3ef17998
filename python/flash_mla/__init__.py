"""flash_mla: MLA decoding over a paged KV cache, a drop-in for FlashMLA's Python API.

    from flash_mla import get_mla_metadata, flash_mla_with_kvcache

The kernels live in libflash_mla.so (C, loaded through ctypes; not compiled against torch).
See flash_mla.interface for the API and flash_mla._lib for how the library is found.
"""
from . import _lib
from ._lib import FlashMLAError, FlashMLARuntimeError, FlashMLATypeError, FlashMLAValueError
from .interface import (
    CPU_SM_COUNT,
    FlashMLASchedMeta,
    flash_mla_sparse_fwd,
    flash_mla_with_kvcache,
    get_mla_metadata,
)

__version__ = _lib.version_string()
library_path = _lib.lib_path

__all__ = [
    "get_mla_metadata",
    "flash_mla_with_kvcache",
    "flash_mla_sparse_fwd",
    "FlashMLASchedMeta",
    "FlashMLAError",
    "FlashMLAValueError",
    "FlashMLATypeError",
    "FlashMLARuntimeError",
    "CPU_SM_COUNT",
    "__version__",
    "library_path",
]
