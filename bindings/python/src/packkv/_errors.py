"""Exceptions of the packkv package, one class per libpackkv status code.

Every exception raised for a failed C call is a :class:`PackKVError` subclass carrying

* ``status``: the ``packkv_status_t`` value (int; unknown future values are kept as is),
* ``status_name``: its ``PACKKV_*`` name (``"unknown status"`` for values this binding
  does not know),
* ``message``: the detailed thread-local message of the C library, read in the same C
  wrapper call that failed (function name, offending argument, CUDA error name).

The subclasses also derive from the closest built-in exception, so ``except ValueError``
catches :class:`InvalidArgument` and ``except MemoryError`` catches the out-of-memory
errors. Arguments rejected by the Python layer before any C call (wrong dtype, shape,
device, closed cache) raise the same classes, with the status the C library would have
returned.
"""

from __future__ import annotations

__all__ = [
    "PackKVError",
    "InvalidArgument",
    "InvalidState",
    "CapacityExceeded",
    "WorkspaceTooSmall",
    "OutOfHostMemory",
    "OutOfDeviceMemory",
    "CudaError",
    "NotSupported",
    "VersionMismatch",
    "InternalError",
    "BudgetExceeded",
    "error_from_status",
    "STATUS_NAMES",
]

#: ``PACKKV_*`` names of the status codes, pinned to their values by the C header.
STATUS_NAMES = {
    0: "PACKKV_OK",
    1: "PACKKV_ERR_INVALID_ARGUMENT",
    2: "PACKKV_ERR_INVALID_STATE",
    3: "PACKKV_ERR_CAPACITY_EXCEEDED",
    4: "PACKKV_ERR_WORKSPACE_TOO_SMALL",
    5: "PACKKV_ERR_OUT_OF_HOST_MEMORY",
    6: "PACKKV_ERR_OUT_OF_DEVICE_MEMORY",
    7: "PACKKV_ERR_CUDA",
    8: "PACKKV_ERR_NOT_SUPPORTED",
    9: "PACKKV_ERR_VERSION_MISMATCH",
    10: "PACKKV_ERR_INTERNAL",
    11: "PACKKV_X_ERR_BUDGET_EXCEEDED",
}


class PackKVError(Exception):
    """A libpackkv call failed. Base class of every packkv exception.

    Attributes:
        status: the C status code (int).
        status_name: its ``PACKKV_*`` name, or ``"unknown status"``.
        message: the C library's detailed message (may be empty).
    """

    #: Status code this class stands for (None for the base class: any/unknown status).
    STATUS: int | None = None

    def __init__(self, status: int, message: str = ""):
        self.status = int(status)
        self.status_name = STATUS_NAMES.get(self.status, "unknown status")
        self.message = message
        super().__init__(status, message)

    def __str__(self) -> str:
        if self.message:
            return f"{self.status_name} ({self.status}): {self.message}"
        return f"{self.status_name} ({self.status})"

    def __reduce__(self):  # picklable across processes
        return (type(self), (self.status, self.message))


class InvalidArgument(PackKVError, ValueError):
    """PACKKV_ERR_INVALID_ARGUMENT: a NULL pointer, an out-of-range size or id, a bad dtype,
    non-finite K/V values, or (Python side) an array of the wrong shape, dtype or device."""

    STATUS = 1


class InvalidState(PackKVError, RuntimeError):
    """PACKKV_ERR_INVALID_STATE: the call is not valid in the cache's current state
    (Python side: the cache was closed)."""

    STATUS = 2


class CapacityExceeded(PackKVError, RuntimeError):
    """PACKKV_ERR_CAPACITY_EXCEEDED: a sequence would exceed max_tokens_per_seq, or an
    output buffer is too small."""

    STATUS = 3


class WorkspaceTooSmall(PackKVError, ValueError):
    """PACKKV_ERR_WORKSPACE_TOO_SMALL: the workspace is smaller than
    attn_workspace_size() reported."""

    STATUS = 4


class OutOfHostMemory(PackKVError, MemoryError):
    """PACKKV_ERR_OUT_OF_HOST_MEMORY."""

    STATUS = 5


class OutOfDeviceMemory(PackKVError, MemoryError):
    """PACKKV_ERR_OUT_OF_DEVICE_MEMORY."""

    STATUS = 6


class CudaError(PackKVError, RuntimeError):
    """PACKKV_ERR_CUDA: a CUDA runtime error (the message names it), possibly raised by a
    later synchronizing call than the one that caused it."""

    STATUS = 7


class NotSupported(PackKVError, NotImplementedError):
    """PACKKV_ERR_NOT_SUPPORTED: e.g. a CUDA cache in a CPU-only build or machine."""

    STATUS = 8


class VersionMismatch(PackKVError, RuntimeError):
    """PACKKV_ERR_VERSION_MISMATCH: a params/stats struct_size this library does not accept."""

    STATUS = 9


class InternalError(PackKVError, RuntimeError):
    """PACKKV_ERR_INTERNAL: a bug in libpackkv; please report it with the message."""

    STATUS = 10


class BudgetExceeded(PackKVError, MemoryError):
    """PACKKV_X_ERR_BUDGET_EXCEEDED (experimental): an append needed more pool pages than the
    pool's budget allows; nothing was appended. ``bytes_needed`` is the bytes of pages the
    call needed (packkv_x_last_bytes_needed, read right after the failed call)."""

    STATUS = 11

    def __init__(self, status: int, message: str = "", bytes_needed: int | None = None):
        super().__init__(status, message)
        if bytes_needed is None:
            from . import _raw as raw  # the failed call ran on this thread just before
            bytes_needed = int(raw.x_last_bytes_needed())
        self.bytes_needed = int(bytes_needed)

    def __reduce__(self):
        return (type(self), (self.status, self.message, self.bytes_needed))


_CLASSES = {
    cls.STATUS: cls
    for cls in (
        InvalidArgument,
        InvalidState,
        CapacityExceeded,
        WorkspaceTooSmall,
        OutOfHostMemory,
        OutOfDeviceMemory,
        CudaError,
        NotSupported,
        VersionMismatch,
        InternalError,
        BudgetExceeded,
    )
}


def error_from_status(status: int, message: str = "") -> PackKVError:
    """Returns (does not raise) the exception for a non-OK status: the mapped subclass, or
    :class:`PackKVError` itself for a status this binding does not know. Called by the
    SWIG wrapper right after a failed C call."""
    status = int(status)
    if status == 0:
        raise ValueError("error_from_status: status 0 (PACKKV_OK) is not an error")
    return _CLASSES.get(status, PackKVError)(status, message)
