"""Adapting user arrays (numpy arrays, torch tensors) to the raw SWIG calls.

Internal module. The rules, checked in Python before any C call:

* A CPU cache (``device == -1``) takes host memory: numpy arrays (passed to the SWIG layer
  as arrays, where numpy.i checks them again) or CPU torch tensors (passed as addresses).
  Anything else array-like (lists, ...) is converted with ``numpy.asarray`` for inputs.
* A CUDA cache (``device >= 0``) takes torch tensors on that same CUDA device, passed as
  integer addresses (``data_ptr()``), with the stream as an integer
  (``torch.cuda.current_stream(device).cuda_stream`` unless one is given).
* Every array must be C-contiguous with the documented shape and dtype; outputs are
  allocated here with the same library as the inputs (numpy in, numpy out; torch in,
  torch out).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _raw
from ._errors import InvalidArgument

DTYPE_F16 = _raw.DTYPE_F16
DTYPE_BF16 = _raw.DTYPE_BF16
DTYPE_F32 = _raw.DTYPE_F32

_NUMPY_DTYPES = {np.dtype(np.float16): DTYPE_F16, np.dtype(np.float32): DTYPE_F32}
DTYPE_NAMES = {DTYPE_F16: "float16", DTYPE_BF16: "bfloat16", DTYPE_F32: "float32"}
_DTYPE_BY_NAME = {"float16": DTYPE_F16, "f16": DTYPE_F16, "half": DTYPE_F16,
                  "bfloat16": DTYPE_BF16, "bf16": DTYPE_BF16,
                  "float32": DTYPE_F32, "f32": DTYPE_F32, "float": DTYPE_F32}


def _torch():
    """The torch module if it is already imported or importable, else None (torch is optional)."""
    mod = sys.modules.get("torch")
    if mod is not None:
        return mod
    try:
        import torch  # noqa: F401  (optional dependency)
    except Exception:  # pragma: no cover - depends on the environment
        return None
    return sys.modules["torch"]


def is_torch_tensor(x: Any) -> bool:
    """True if x is a torch.Tensor (without importing torch when the caller did not)."""
    mod = sys.modules.get("torch")
    return mod is not None and isinstance(x, mod.Tensor)


def dtype_code(dtype: Any) -> int:
    """Maps a dtype given as a name, numpy dtype, torch dtype or PACKKV_DTYPE_* int to the
    C enum value. Raises InvalidArgument for anything else."""
    if isinstance(dtype, (int, np.integer)) and not isinstance(dtype, bool):
        if int(dtype) in DTYPE_NAMES:
            return int(dtype)
    elif isinstance(dtype, str):
        if dtype.lower() in _DTYPE_BY_NAME:
            return _DTYPE_BY_NAME[dtype.lower()]
    else:
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(dtype, torch.dtype):
            code = {torch.float16: DTYPE_F16, torch.bfloat16: DTYPE_BF16,
                    torch.float32: DTYPE_F32}.get(dtype)
            if code is not None:
                return code
        try:
            npd = np.dtype(dtype)
        except TypeError:
            npd = None
        if npd in _NUMPY_DTYPES:
            return _NUMPY_DTYPES[npd]
    raise InvalidArgument(1, f"unsupported dtype {dtype!r}: use float16, bfloat16 or float32")


@dataclass
class Arr:
    """An argument resolved for the SWIG layer.

    arg:    what to pass to the raw call (a numpy array, or an int address).
    shape:  tuple of ints.
    dtype:  PACKKV_DTYPE_* code.
    device: -1 for host memory, the CUDA ordinal otherwise.
    torch:  True if the user passed a torch tensor (outputs are then torch tensors).
    keep:   the object that owns the memory (kept alive for the duration of the call).
    """

    arg: Any
    shape: tuple
    dtype: int
    device: int
    torch: bool
    keep: Any


def as_input(x: Any, name: str, allowed=(DTYPE_F16, DTYPE_BF16, DTYPE_F32)) -> Arr:
    """Resolves an input array. Raises InvalidArgument for non-contiguous arrays, dtypes
    outside `allowed` and objects that are neither arrays nor convertible to one."""
    if is_torch_tensor(x):
        if not x.is_contiguous():
            raise InvalidArgument(1, f"{name}: tensor must be contiguous (call .contiguous())")
        code = dtype_code(x.dtype) if x.dtype in _torch_dtypes() else None
        if code not in allowed:
            raise InvalidArgument(1, f"{name}: dtype {x.dtype} not supported here; expected "
                                  + " or ".join(DTYPE_NAMES[a] for a in allowed))
        device = x.device.index if x.device.type == "cuda" else -1
        if x.device.type not in ("cpu", "cuda"):
            raise InvalidArgument(1, f"{name}: tensors on {x.device} are not supported")
        if x.device.type == "cuda" and device is None:
            device = _torch().cuda.current_device()
        return Arr(int(x.data_ptr()), tuple(x.shape), code, device, True, x)
    if hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray):
        raise InvalidArgument(1, f"{name}: only torch tensors are accepted as device arrays "
                              "(wrap other CUDA arrays with torch.as_tensor)")
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    if not a.dtype.isnative:  # before the dtype test: '>f2' is float16, just byte-swapped
        raise InvalidArgument(1, f"{name}: array must be in native byte order (dtype "
                              f"{a.dtype.str}; use a.astype(a.dtype.newbyteorder('=')))")
    if a.dtype not in _NUMPY_DTYPES or _NUMPY_DTYPES[a.dtype] not in allowed:
        raise InvalidArgument(1, f"{name}: dtype {a.dtype} not supported here; expected "
                              + " or ".join(DTYPE_NAMES[c] for c in allowed
                                            if c != DTYPE_BF16))
    if not a.flags.c_contiguous:
        raise InvalidArgument(1, f"{name}: array must be C-contiguous "
                              "(use numpy.ascontiguousarray)")
    return Arr(a, tuple(a.shape), _NUMPY_DTYPES[a.dtype], -1, False, a)


def _torch_dtypes():
    torch = _torch()
    return (torch.float16, torch.bfloat16, torch.float32) if torch is not None else ()


def check_device(arr: Arr, name: str, cache_device: int) -> None:
    """Raises InvalidArgument unless arr lives where the cache computes."""
    if arr.device != cache_device:
        where = "host memory" if cache_device < 0 else f"CUDA device {cache_device}"
        got = "host memory" if arr.device < 0 else f"CUDA device {arr.device}"
        raise InvalidArgument(1, f"{name}: the cache lives in {where}, the array in {got}")


def empty_f32(shape, device: int, use_torch: bool, fill: float | None = None):
    """Allocates a float32 output of `shape` where the cache computes; returns (obj, Arr)."""
    if device >= 0 or use_torch:
        torch = _torch()
        if torch is None:
            raise InvalidArgument(1, "a CUDA cache needs torch for its arrays")
        dev = torch.device("cuda", device) if device >= 0 else torch.device("cpu")
        t = (torch.empty(shape, dtype=torch.float32, device=dev) if fill is None
             else torch.full(shape, fill, dtype=torch.float32, device=dev))
        return t, Arr(int(t.data_ptr()), tuple(shape), DTYPE_F32, device, True, t)
    a = np.empty(shape, dtype=np.float32) if fill is None else np.full(shape, fill, np.float32)
    return a, Arr(a, tuple(shape), DTYPE_F32, -1, False, a)


def workspace(nbytes: int, device: int):
    """Scratch memory of nbytes where the cache computes (None when nbytes == 0)."""
    if nbytes == 0:
        return None
    if device >= 0:
        torch = _torch()
        return torch.empty(nbytes, dtype=torch.uint8, device=torch.device("cuda", device))
    return np.empty(nbytes, dtype=np.uint8)


def ws_arg(ws) -> Any:
    """The raw-call argument for a workspace object."""
    if ws is None or isinstance(ws, np.ndarray):
        return ws
    return int(ws.data_ptr())


def stream_arg(stream: Any, device: int) -> int:
    """The cudaStream_t of a call as an int: 0 for a CPU cache; for a CUDA cache the given
    stream (int, or torch.cuda.Stream) or torch's current stream on the cache's device."""
    if device < 0:
        return 0
    if stream is None:
        torch = _torch()
        if torch is None:
            return 0
        return int(torch.cuda.current_stream(device).cuda_stream)
    if isinstance(stream, int):
        return stream
    if hasattr(stream, "cuda_stream"):
        return int(stream.cuda_stream)
    raise InvalidArgument(1, f"stream must be an int or a torch.cuda.Stream, not {stream!r}")
