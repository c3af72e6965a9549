"""Memory pools (experimental: packkv_experimental.h, not frozen): :class:`Pool`,
:class:`PoolStats`, :func:`page_bytes_for`."""

from __future__ import annotations

import threading
from typing import Any

from . import _raw
from ._handle import _Handle
from ._errors import InvalidArgument

__all__ = ["Pool", "PoolStats", "page_bytes_for", "DEFAULT_PAGE_BYTES"]

#: Default page size of a pool (PACKKV_X_POOL_DEFAULT_PAGE_BYTES).
DEFAULT_PAGE_BYTES = int(_raw.X_POOL_DEFAULT_PAGE_BYTES)


def _int64(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import numpy as np
            if isinstance(value, np.integer):
                value = int(value)
        except ImportError:  # pragma: no cover
            pass
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(1, f"{name} must be an integer, got {value!r}")
    if not -2**63 <= value < 2**63:
        raise InvalidArgument(1, f"{name} = {value} does not fit int64")
    return value


class PoolStats:
    """Pool accounting (packkv_x_pool_stats_t), bytes: page_bytes, budget_bytes (0: no
    budget), bytes_held (pages mapped), bytes_in_use (pages holding blocks or open for
    writing), free_bytes (budget - in use; -1 without a budget), n_caches."""

    __slots__ = ("page_bytes", "budget_bytes", "bytes_held", "bytes_in_use", "free_bytes", "n_caches")

    def __init__(self, s):
        for name in self.__slots__:
            object.__setattr__(self, name, int(getattr(s, name)))

    def __setattr__(self, name, value):
        raise AttributeError("PoolStats is read-only")

    def as_dict(self) -> dict:
        return {n: getattr(self, n) for n in self.__slots__}

    def __eq__(self, other):
        return type(other) is type(self) and other.as_dict() == self.as_dict()

    def __repr__(self):
        return "PoolStats(" + ", ".join(f"{k}={v}" for k, v in self.as_dict().items()) + ")"


def page_bytes_for(**cache_params) -> int:
    """The page size for caches with these parameters (the keyword arguments of
    :class:`packkv.Cache`): what a private pool uses, and the recommended ``page_bytes`` of
    a shared pool for them (packkv_x_pool_page_bytes_for)."""
    from .cache import _params_struct
    return int(_raw.x_pool_page_bytes_for(_params_struct(**cache_params)))


class Pool(_Handle):
    """A pool of fixed-size pages for the compressed blocks of the caches made in it
    (``packkv.Cache(..., pool=pool)``): the caches of all layers of a model, typically,
    under one byte budget. Experimental (packkv_experimental.h).

    Args:
        page_bytes: bytes per page, a multiple of 4096 (default DEFAULT_PAGE_BYTES); must hold
            the largest block of every cache made in it (:func:`page_bytes_for`).
        budget_bytes: 0 (default) for no budget; else at most budget_bytes // page_bytes pages.
            An append that needs more raises :class:`packkv.BudgetExceeded` (nothing appended;
            ``exc.bytes_needed``).
        reserve: map and touch the whole budget now and keep it (engines that reserve
            memory once); default False: pages come and go with the blocks.
        device: -1 (default): host pages, for CPU caches; else the CUDA device ordinal
            whose memory holds the pages, for CUDA caches on that device.

    Use it as a context manager or call :meth:`close`. Closing drops this handle only: the
    caches made in the pool keep it alive and keep working. Thread-safe.
    """

    _what = "pool"

    def __init__(self, *, page_bytes: int = DEFAULT_PAGE_BYTES, budget_bytes: int = 0,
                 reserve: bool = False, device: int = -1):
        self._ptr = None
        self._lock = threading.Lock()
        if not isinstance(reserve, bool):
            raise InvalidArgument(1, f"reserve must be a bool, got {reserve!r}")
        p = _raw.PoolParamsStruct()
        _raw.x_pool_params_init(p, _raw.POOL_PARAMS_STRUCT_SIZE)
        p.page_bytes = _int64("page_bytes", page_bytes)
        p.budget_bytes = _int64("budget_bytes", budget_bytes)
        p.reserve = 1 if reserve else 0
        device = _int64("device", device)
        if not -2**31 <= device < 2**31:
            raise InvalidArgument(1, f"device = {device} does not fit int32")
        p.device = device
        self._ptr = _raw.x_pool_create(p)

    def close(self) -> None:
        """Drops this handle (packkv_x_pool_destroy). Idempotent."""
        with self._lock:
            ptr, self._ptr = self._ptr, None
        if ptr is not None:
            _raw.x_pool_destroy(ptr)


    def stats(self) -> PoolStats:
        """A consistent snapshot of the pool's accounting."""
        s = _raw.PoolStatsStruct()
        s.struct_size = _raw.POOL_STATS_STRUCT_SIZE
        _raw.x_pool_stats(self._handle(), s)
        return PoolStats(s)

    def tokens_fit(self) -> int:
        """Tokens that still fit in the free pages when each token goes to every cache of the
        pool (one per layer): each cache's blocks of its mean size so far, packed whole into
        pages (page-end waste counted); -1 without a budget, 0 with no cache. An estimate:
        it assumes later blocks have the mean size and ignores the room left in pages in use
        and the residual windows (outside the pool). See packkv_x_pool_tokens_fit."""
        return int(_raw.x_pool_tokens_fit(self._handle()))

    def __repr__(self):
        if self._ptr is None:
            return "<packkv.Pool closed>"
        s = self.stats()
        return f"<packkv.Pool page_bytes={s.page_bytes} budget_bytes={s.budget_bytes} in_use={s.bytes_in_use}>"
