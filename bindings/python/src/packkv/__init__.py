"""packkv: Python binding of libpackkv, a compressed KV cache for LLM decode attention
(the PackKV method).

Quick start (CPU)::

    import numpy as np, packkv
    with packkv.Cache(n_kv_heads=3, head_dim=64) as cache:
        cache.append(k, v)                 # k, v: float16/float32 [T, 3, 64]
        out = cache.decode(q)              # q: [n_q_heads, 64] -> float32 [n_q_heads, 64]
        print(cache.stats().ratio)         # fp16 bytes / all-in compressed bytes

On a CUDA build, ``Cache(..., device=0)`` takes torch CUDA tensors and runs on torch's
current stream. Failed calls raise :class:`PackKVError` subclasses carrying the C status
and message. The SWIG layer underneath (``packkv._raw``) is internal, not API.

Experimental (packkv_experimental.h, may change in any release): :class:`Pool` (shared
pages with a byte budget; :class:`BudgetExceeded`), ``Cache(..., pool=)``,
:meth:`Cache.truncate`, :meth:`Cache.fork`, :meth:`Cache.set_window`,
:meth:`Cache.export_seq` / :meth:`Cache.import_seq`.
"""

from __future__ import annotations

from . import _raw
from ._errors import (
    STATUS_NAMES,
    CapacityExceeded,
    CudaError,
    InternalError,
    InvalidArgument,
    InvalidState,
    NotSupported,
    OutOfDeviceMemory,
    OutOfHostMemory,
    PackKVError,
    VersionMismatch,
    WorkspaceTooSmall,
    BudgetExceeded,
    error_from_status,
)
from .cache import K_TRANSFORM, REPACK, SCALE_GRANULARITY, ZS_FORMAT, Cache, Params, Stats
from .pool import DEFAULT_PAGE_BYTES, Pool, PoolStats, page_bytes_for

__all__ = [
    "Cache", "Params", "Stats", "REPACK", "SCALE_GRANULARITY", "ZS_FORMAT", "K_TRANSFORM",
    "PackKVError", "InvalidArgument", "InvalidState", "CapacityExceeded",
    "WorkspaceTooSmall", "OutOfHostMemory", "OutOfDeviceMemory", "CudaError",
    "NotSupported", "VersionMismatch", "InternalError", "BudgetExceeded", "error_from_status",
    "STATUS_NAMES", "Pool", "PoolStats", "page_bytes_for", "DEFAULT_PAGE_BYTES",
    "version", "version_number", "build_info", "has_cuda", "status_string",
    "last_error_message", "bits_for_rel_scale",
    "DTYPE_F16", "DTYPE_BF16", "DTYPE_F32", "__version__",
]

DTYPE_F16 = _raw.DTYPE_F16
DTYPE_BF16 = _raw.DTYPE_BF16
DTYPE_F32 = _raw.DTYPE_F32


def version() -> str:
    """Version of the loaded libpackkv, "MAJOR.MINOR.PATCH" (packkv_version_string)."""
    return _raw.version_string()


def version_number() -> int:
    """Version of the loaded libpackkv as MAJOR*10000 + MINOR*100 + PATCH."""
    return int(_raw.version_number())


def build_info() -> str:
    """Build description: version, compiler, CUDA compiler version and architectures or "no cuda"."""
    return _raw.build_info()


def has_cuda() -> bool:
    """True if the library has its CUDA backend and a CUDA device is visible."""
    return bool(_raw.has_cuda())


def status_string(status: int) -> str:
    """The C library's name for a status code ("unknown status" for unknown values)."""
    return _raw.status_string(int(status))


def last_error_message() -> str:
    """The C library's last error message on the calling thread. Exceptions already carry
    it (``exc.message``); this is only for diagnostics."""
    return _raw.last_error_message()


def bits_for_rel_scale(rel_scale: float) -> int:
    """The code width (bits) a relative scale r implies (packkv_bits_for_rel_scale).
    Raises InvalidArgument for r out of range."""
    return int(_raw.bits_for_rel_scale(float(rel_scale)))


__version__ = version()
