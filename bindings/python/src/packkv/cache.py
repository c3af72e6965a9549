"""The Pythonic cache: :class:`Cache`, :class:`Params` and :class:`Stats`."""

from __future__ import annotations

import math
import threading
from typing import Any, Sequence

import numpy as np

from . import _arrays as A
from . import _raw
from ._handle import _Handle
from ._errors import InvalidArgument, InvalidState

__all__ = ["Cache", "Params", "Stats", "REPACK", "SCALE_GRANULARITY", "ZS_FORMAT", "K_TRANSFORM"]

#: Names accepted for Cache(repack=...).
REPACK = {"none": _raw.REPACK_NONE, "median": _raw.REPACK_MEDIAN, "greedy": _raw.REPACK_GREEDY}
#: Names accepted for Cache(scale_granularity=...).
SCALE_GRANULARITY = {"per_token": _raw.SCALE_PER_TOKEN,
                     "per_token_head": _raw.SCALE_PER_TOKEN_HEAD}
#: Names accepted for Cache(zs_format=...): how zero points and scales are stored
#: (packkv.h, packkv_zs_format_t).
ZS_FORMAT = {"compact": _raw.ZS_COMPACT, "wide": _raw.ZS_WIDE}
#: Names accepted for Cache(k_transform=...): K centring or none (packkv.h,
#: packkv_k_transform_t; "center" needs kv_dtype float16).
K_TRANSFORM = {"none": _raw.K_TRANSFORM_NONE, "center": _raw.K_TRANSFORM_CENTER}


def _struct_fields(obj) -> dict:
    """The C fields of a SWIG struct proxy, in declaration order (every property of the
    proxy class but SWIG's own `thisown`)."""
    return {name: getattr(obj, name) for name, attr in vars(type(obj)).items()
            if isinstance(attr, property) and name != "thisown"}


class _Record:
    """Read-only attribute bag filled from a C struct; `as_dict()` gives the fields."""

    def __init__(self, fields: dict):
        object.__setattr__(self, "_fields", dict(fields))

    def __getattr__(self, name):
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __eq__(self, other):
        return type(other) is type(self) and other._fields == self._fields

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._fields))

    def as_dict(self) -> dict:
        return dict(self._fields)

    def __repr__(self):
        inner = ", ".join(f"{k}={v!r}" for k, v in self._fields.items())
        return f"{type(self).__name__}({inner})"


class Params(_Record):
    """Effective parameters of a cache (packkv_cache_params_t without struct_size), as
    returned by :attr:`Cache.params`: device, n_kv_heads, head_dim, max_seqs, kv_dtype,
    max_tokens_per_seq, rel_scale_k, rel_scale_v, bits_k, bits_v (derived values filled in),
    repack, scale_granularity, block_tokens, residual_tokens, sink_tokens, zs_format,
    k_transform, n_threads (C enum values as ints: see REPACK, SCALE_GRANULARITY, ZS_FORMAT,
    K_TRANSFORM for their names; n_threads as given, 0 = the default)."""


class Stats(_Record):
    """Memory accounting of a cache (packkv_cache_stats_t): n_tokens, n_compressed_tokens,
    n_residual_tokens, n_blocks, k/v_tile_bytes, k/v_scale_bytes, index_bytes, perm_bytes,
    compressed_bytes_used, compressed_bytes_reserved, residual_bytes, fp16_bytes."""

    @property
    def all_in_bytes(self) -> int:
        """Every byte stored for the tokens: compressed_bytes_used + residual_bytes."""
        return self.compressed_bytes_used + self.residual_bytes

    @property
    def ratio(self) -> float:
        """Compression ratio fp16_bytes / all_in_bytes (0.0 for an empty cache)."""
        return self.fp16_bytes / self.all_in_bytes if self.all_in_bytes else 0.0


class _RWLock:
    """Many readers or one writer. Implements the header's thread-safety contract for Python
    threads: calls on a const cache (attention, stats, ...) share, append/reset/remove/close
    are exclusive, so misuse from threads blocks instead of corrupting memory."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0  # writers go first: a stream of readers cannot starve them

    def read(self):
        return _Guard(self, False)

    def write(self):
        return _Guard(self, True)

    def _acquire(self, write: bool):
        with self._cond:
            if write:
                self._writers_waiting += 1
                try:
                    while self._writer or self._readers:
                        self._cond.wait()
                finally:
                    self._writers_waiting -= 1
                self._writer = True
            else:
                while self._writer or self._writers_waiting:
                    self._cond.wait()
                self._readers += 1

    def _release(self, write: bool):
        with self._cond:
            if write:
                self._writer = False
            else:
                self._readers -= 1
            self._cond.notify_all()


class _Guard:
    __slots__ = ("_lock", "_write")

    def __init__(self, lock: _RWLock, write: bool):
        self._lock, self._write = lock, write

    def __enter__(self):
        self._lock._acquire(self._write)

    def __exit__(self, *exc):
        self._lock._release(self._write)


def _int32s(name: str, value: Any, lo: int = np.iinfo(np.int32).min) -> np.ndarray:
    """value (an int or a non-empty 1-D list of ints in [lo, 2^31)) as a 1-D int32 array.
    Checked before the conversion, which would wrap 2^32 + 20 or truncate 20.7 silently."""
    a = np.atleast_1d(np.asarray(value))
    if (a.ndim == 1 and a.size > 0 and a.dtype == object
            and all(isinstance(x, int) and not isinstance(x, bool) for x in a.tolist())):
        # Python ints beyond the 64-bit range: numpy keeps them as objects
        raise InvalidArgument(1, f"{name} entries must be in [{lo}, 2^31), got {value!r}")
    if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
        raise InvalidArgument(1, f"{name} must be an int or a non-empty 1-D list of ints, "
                              f"got {value!r}")
    if a.min() < lo or a.max() > np.iinfo(np.int32).max:
        raise InvalidArgument(1, f"{name} entries must be in [{lo}, 2^31)")
    return np.ascontiguousarray(a, dtype=np.int32)


def _ids(seq_ids: Any) -> np.ndarray:
    """Sequence ids as a 1-D int32 array (an int is one id)."""
    return _int32s("seq_ids", seq_ids)


def _integer(name: str, value: Any) -> int:
    """value as a Python int; rejects floats, strings and bools (no silent truncation)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(1, f"{name} must be an integer, got {value!r}")
    return int(value)


def _int32(name: str, value: Any) -> int:
    """value as a Python int that fits the C int32_t argument it is passed as (so that
    neither a float is truncated nor SWIG raises a bare OverflowError)."""
    v = _integer(name, value)
    if not -2**31 <= v < 2**31:
        raise InvalidArgument(1, f"{name} = {v} does not fit an int32")
    return v


def _enum(name: str, value: Any, names: dict):
    """An enum given by name (see REPACK, SCALE_GRANULARITY) or C value; None stays None."""
    if value is None or not isinstance(value, str):
        return value
    try:
        return names[value]
    except KeyError:
        raise InvalidArgument(1, f"{name} must be one of {sorted(names)}, got {value!r}") from None


def _params_struct(n_kv_heads: int, head_dim: int, *, device: int = -1, max_seqs=None, kv_dtype=None,
                   max_tokens_per_seq=None, rel_scale_k=None, rel_scale_v=None, bits_k=None,
                   bits_v=None, repack=None, scale_granularity=None, block_tokens=None,
                   residual_tokens=None, sink_tokens=None, zs_format=None, k_transform=None,
                   n_threads=None):
    """A packkv_cache_params_t from the keyword arguments of Cache (checked, not yet
    validated by the library)."""
    p = _raw.CacheParamsStruct()
    _raw.cache_params_init(p, _raw.CACHE_PARAMS_STRUCT_SIZE)
    ints = {"device": device, "n_kv_heads": n_kv_heads, "head_dim": head_dim,
            "max_seqs": max_seqs, "max_tokens_per_seq": max_tokens_per_seq,
            "bits_k": bits_k, "bits_v": bits_v, "block_tokens": block_tokens,
            "residual_tokens": residual_tokens, "sink_tokens": sink_tokens,
            "zs_format": _enum("zs_format", zs_format, ZS_FORMAT),
            "k_transform": _enum("k_transform", k_transform, K_TRANSFORM), "n_threads": n_threads,
            "repack": _enum("repack", repack, REPACK),
            "scale_granularity": _enum("scale_granularity", scale_granularity,
                                       SCALE_GRANULARITY)}
    for name, value in ints.items():
        if value is None:
            continue
        limit = 2**63 - 1 if name == "max_tokens_per_seq" else 2**31 - 1
        v = _integer(name, value)
        if not -limit - 1 <= v <= limit:
            raise InvalidArgument(1, f"{name} = {v} does not fit the C field")
        setattr(p, name, v)
    if kv_dtype is not None:
        p.kv_dtype = A.dtype_code(kv_dtype)
    for name, value in (("rel_scale_k", rel_scale_k), ("rel_scale_v", rel_scale_v)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise InvalidArgument(1, f"{name} must be a number, got {value!r}")
            setattr(p, name, float(value))
    return p


class Cache(_Handle):
    """A compressed KV cache of one attention layer (a ``packkv_cache_t``).

    Args:
        n_kv_heads: KV heads per token (>= 1).
        head_dim: channels per head, a multiple of 16 in [32, 256].
        device: -1 (default) for the CPU backend, else the CUDA device ordinal (arrays must
            then be torch tensors on that device).
        max_seqs: sequence ids are 0 .. max_seqs-1.
        kv_dtype: dtype of the uncompressed residual window ("float16", "bfloat16",
            "float32", numpy or torch dtypes).
        max_tokens_per_seq, rel_scale_k, rel_scale_v, bits_k, bits_v, block_tokens,
        residual_tokens, sink_tokens: as in packkv_cache_params_t; None keeps the library
            default.
        zs_format: "compact" (default) or "wide" (or the C enum value); None: default.
        k_transform: "none" (default) or "center" (K centring, needs kv_dtype float16; or the
            C enum value); None: default.
        n_threads: threads one call of a CPU cache may use, the calling thread included (0:
            the CPUs this process may run on, at most 64; 1: the calling thread only); the
            results do not depend on it. None: the default (0).
        pool: a :class:`packkv.Pool` (experimental) to hold the compressed blocks, shared with
            other caches and under its budget; None (default): a private pool.
        repack: "none", "median" or "greedy" (or the C enum value); None: default.
        scale_granularity: "per_token" or "per_token_head"; None: default.

    Raises the PackKVError subclass of the C status (e.g. InvalidArgument for an
    out-of-range field, NotSupported for device >= 0 without CUDA).

    Use it as a context manager, or call :meth:`close`; a cache not closed is freed when
    garbage-collected. Thread safety: methods may be called from several threads; calls
    that read the cache run concurrently, calls that change it (append, remove_seq, reset,
    close) wait for exclusive access. The GIL is released during every C call.

    Array conventions: K/V and queries are C-contiguous float16/float32 (bfloat16 with
    torch) arrays; outputs are float32, numpy arrays for numpy inputs and torch tensors for
    torch inputs (always torch for a CUDA cache). Shapes use n_seqs (sequences in the
    call), n_q_heads (a multiple of n_kv_heads: GQA) and head_dim.
    """

    _what = "cache"

    def __init__(self, n_kv_heads: int, head_dim: int, *, device: int = -1,
                 max_seqs: int | None = None, kv_dtype: Any = None,
                 max_tokens_per_seq: int | None = None,
                 rel_scale_k: float | None = None, rel_scale_v: float | None = None,
                 bits_k: int | None = None, bits_v: int | None = None,
                 repack: Any = None, scale_granularity: Any = None,
                 block_tokens: int | None = None, residual_tokens: int | None = None,
                 sink_tokens: int | None = None, zs_format: Any = None,
                 k_transform: Any = None, n_threads: int | None = None, pool: Any = None):
        self._ptr = None
        self._lock = _RWLock()
        self._pool = pool
        p = _params_struct(n_kv_heads, head_dim, device=device, max_seqs=max_seqs, kv_dtype=kv_dtype,
                           max_tokens_per_seq=max_tokens_per_seq, rel_scale_k=rel_scale_k,
                           rel_scale_v=rel_scale_v, bits_k=bits_k, bits_v=bits_v, repack=repack,
                           scale_granularity=scale_granularity, block_tokens=block_tokens,
                           residual_tokens=residual_tokens, sink_tokens=sink_tokens,
                           zs_format=zs_format, k_transform=k_transform, n_threads=n_threads)
        if pool is None:
            self._ptr = _raw.cache_create(p)
        else:
            from .pool import Pool
            if not isinstance(pool, Pool):
                raise InvalidArgument(1, f"pool must be a packkv.Pool, got {pool!r}")
            self._ptr = _raw.x_cache_create_in_pool(p, pool._handle())
        # Read back once: the effective configuration never changes afterwards.
        q = _raw.CacheParamsStruct()
        q.struct_size = _raw.CACHE_PARAMS_STRUCT_SIZE
        _raw.cache_get_params(self._ptr, q)
        fields = _struct_fields(q)
        fields.pop("struct_size", None)
        self._params = Params(fields)
        self._device = _raw.cache_device(self._ptr)

    # ---- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Frees the cache (packkv_cache_destroy; waits for its pending device work).
        Idempotent. Any later call raises InvalidState."""
        with self._lock.write():
            ptr, self._ptr = self._ptr, None
            if ptr is not None:
                _raw.cache_destroy(ptr)


    def __repr__(self):
        if self._ptr is None:
            return "<packkv.Cache closed>"
        p = self._params
        return (f"<packkv.Cache device={self._device} n_kv_heads={p.n_kv_heads} "
                f"head_dim={p.head_dim} max_seqs={p.max_seqs}>")

    # ---- queries -----------------------------------------------------------------------------
    @property
    def params(self) -> Params:
        """The effective parameters (packkv_cache_get_params), derived bit widths filled in."""
        self._handle()
        return self._params

    @property
    def device(self) -> int:
        """-1 for a CPU cache, else the CUDA device ordinal (packkv_cache_device)."""
        self._handle()
        return self._device

    @property
    def n_kv_heads(self) -> int:
        """KV heads per token (raises InvalidState once closed, like every query)."""
        self._handle()
        return self._params.n_kv_heads

    @property
    def head_dim(self) -> int:
        """Channels per head (raises InvalidState once closed, like every query)."""
        self._handle()
        return self._params.head_dim

    def seq_length(self, seq_id: int = 0) -> int:
        """Tokens held for one sequence (compressed + residual)."""
        with self._lock.read():
            return int(_raw.cache_seq_length(self._handle(), _int32("seq_id", seq_id)))

    def stats(self, seq_id: int | None = None) -> Stats:
        """Memory accounting of one sequence, or of all sequences when seq_id is None.
        ``stats().ratio`` is fp16 bytes / all-in bytes."""
        s = _raw.CacheStatsStruct()
        s.struct_size = _raw.CACHE_STATS_STRUCT_SIZE
        with self._lock.read():
            _raw.cache_stats(self._handle(), -1 if seq_id is None else _int32("seq_id", seq_id), s)
        fields = _struct_fields(s)
        for k in ("struct_size", "reserved0"):
            fields.pop(k, None)
        return Stats(fields)

    def sync(self) -> None:
        """Waits for the cache's pending device work and raises errors found asynchronously
        (e.g. non-finite K/V detected by the CUDA append kernels)."""
        with self._lock.read():
            _raw.cache_sync(self._handle())

    def workspace_size(self, n_seqs: int, n_q_heads: int) -> int:
        """Bytes of scratch an attention call with these sizes needs (the methods below
        allocate it themselves unless given `workspace=`)."""
        with self._lock.read():
            return int(_raw.attn_workspace_size(self._handle(), _int32("n_seqs", n_seqs),
                                                _int32("n_q_heads", n_q_heads)))

    # ---- changing the cache --------------------------------------------------------------------
    def append(self, k: Any, v: Any, seq_ids: Any = 0, n_tokens: Sequence[int] | None = None,
               *, stream: Any = None) -> None:
        """Appends tokens (packkv_cache_append) and compresses the blocks the flush policy
        releases.

        Args:
            k, v: [sum(n_tokens), n_kv_heads, head_dim], float16/float32 (bfloat16 with
                torch), same dtype; sequences in the order of seq_ids.
            seq_ids: an int or a list of distinct ids.
            n_tokens: new tokens per sequence; may be omitted for a single sequence
                (all rows of k/v).
            stream: CUDA stream (int or torch.cuda.Stream) for a CUDA cache; default torch's
                current stream.
        Raises: InvalidArgument (shapes, dtypes, ids, non-finite values), CapacityExceeded,
            OutOfHostMemory / OutOfDeviceMemory. On failure nothing is appended.
        """
        ids = _ids(seq_ids)
        ka, va = A.as_input(k, "k"), A.as_input(v, "v")
        h, d = self._params.n_kv_heads, self._params.head_dim
        for name, a in (("k", ka), ("v", va)):
            if len(a.shape) != 3:
                raise InvalidArgument(1, f"{name}: shape {a.shape}, expected a 3-D array "
                                      f"[n_tokens, n_kv_heads={h}, head_dim={d}]")
        if n_tokens is None:
            if ids.size != 1:
                raise InvalidArgument(1, "n_tokens is required when appending to several "
                                      "sequences")
            counts = np.array([ka.shape[0]], dtype=np.int32)
        else:
            counts = _int32s("n_tokens", n_tokens, lo=0)
            if counts.shape != ids.shape:
                raise InvalidArgument(1, "n_tokens must have one entry per sequence id")
        want = (int(counts.sum()), h, d)
        for name, a in (("k", ka), ("v", va)):
            if a.shape != want:
                raise InvalidArgument(1, f"{name}: shape {a.shape}, expected {want} "
                                      "[sum(n_tokens), n_kv_heads, head_dim]")
            A.check_device(a, name, self._device)
        if ka.dtype != va.dtype:
            raise InvalidArgument(1, "k and v must have the same dtype")
        stream_i = A.stream_arg(stream, self._device)
        with self._lock.write():
            _raw.cache_append(self._handle(), ids, counts, ka.arg, va.arg, ka.dtype, stream_i)

    def remove_seq(self, seq_id: int) -> None:
        """Removes every token of one sequence; the id can be reused at once."""
        with self._lock.write():
            _raw.cache_remove_seq(self._handle(), _int32("seq_id", seq_id))

    def truncate(self, seq_id: int, n_tokens: int) -> None:
        """Keeps the first n_tokens tokens of a sequence (experimental:
        packkv_x_cache_truncate). Residual-window tokens are dropped at no cost; when the cut
        falls inside a compressed block, that block's first tokens return to the window from
        their stored (dequantized) values and keep the compression error; a cut inside the
        sink tokens keeps the first n_tokens of them and drops every block. Raises
        InvalidArgument for n_tokens outside [window_start, seq_length]."""
        seq_id, n_tokens = _integer("seq_id", seq_id), _integer("n_tokens", n_tokens)
        if not -2**63 <= n_tokens < 2**63:
            raise InvalidArgument(1, f"n_tokens = {n_tokens} does not fit int64")
        with self._lock.write():
            _raw.x_cache_truncate(self._handle(), seq_id, n_tokens)

    def fork(self, src_seq: int, dst_seq: int) -> None:
        """Makes the empty sequence dst_seq a copy of src_seq that shares its compressed
        blocks (no copy, reference counted) and copies its residual window, sink tokens and
        K mean (experimental: packkv_x_cache_fork). stats(seq) counts shared blocks in each sequence, stats()
        once. Raises InvalidState if dst_seq holds tokens."""
        src_seq, dst_seq = _integer("src_seq", src_seq), _integer("dst_seq", dst_seq)
        with self._lock.write():
            _raw.x_cache_fork(self._handle(), src_seq, dst_seq)

    def set_window(self, window_tokens: int) -> None:
        """Gives the (empty) cache a sliding window of window_tokens tokens; 0 removes it
        (experimental: packkv_x_cache_set_window). Tokens before ``window_start(seq)`` then
        score -inf, weigh 0 in apply, are left out of decode, decompress as NaN, and their
        whole blocks are freed. Raises InvalidState if the cache holds tokens."""
        window_tokens = _integer("window_tokens", window_tokens)
        if not -2**63 <= window_tokens < 2**63:
            raise InvalidArgument(1, f"window_tokens = {window_tokens} does not fit int64")
        with self._lock.write():
            _raw.x_cache_set_window(self._handle(), window_tokens)

    def set_parallel(self, fn_address: int | None, user_address: int | None = None, n_tasks: int = 1) -> None:
        """Runs the parallel work of this CPU cache through a caller's task runner
        (experimental: packkv_x_cache_set_parallel): fn_address is the address of a C
        function ``void fn(void* user, int32_t n_tasks, packkv_x_task_fn task, void* ctx)``
        (e.g. an engine's thread pool, or a ctypes CFUNCTYPE) that must call task(ctx, i)
        once for every i < n_tasks and return when all have returned; user_address is passed
        to it as is. None goes back to the library's own threads (params n_threads). The
        results do not depend on the choice. Raises NotSupported on a CUDA cache."""
        n_tasks = _integer("n_tasks", n_tasks)
        if fn_address is not None:
            fn_address = _integer("fn_address", fn_address)
        if user_address is not None:
            user_address = _integer("user_address", user_address)
        with self._lock.write():
            _raw.x_cache_set_parallel(self._handle(), fn_address, user_address, n_tasks)

    def window_start(self, seq_id: int = 0) -> int:
        """First token of the sequence inside the sliding window (0 without a window)."""
        seq_id = _integer("seq_id", seq_id)
        with self._lock.read():
            return int(_raw.x_cache_window_start(self._handle(), seq_id))

    def export_seq(self, seq_id: int = 0) -> bytes:
        """One sequence in the versioned export byte format (experimental:
        packkv_x_cache_export): for offloading to host memory or disk, or moving a prefix to
        another process. The cache is not changed."""
        seq_id = _integer("seq_id", seq_id)
        with self._lock.read():
            ptr = self._handle()
            n = int(_raw.x_cache_export_size(ptr, seq_id))
            buf = bytearray(n)
            written = int(_raw.x_cache_export(ptr, seq_id, buf))
        return bytes(buf[:written])

    def import_seq(self, seq_id: int, data: Any) -> None:
        """Restores an exported sequence (bytes, bytearray, memoryview or a uint8 array) into
        the empty sequence seq_id (experimental: packkv_x_cache_import). Everything is
        validated first; on any error (InvalidArgument for a bad buffer or a params
        mismatch, VersionMismatch, InvalidState for a non-empty sequence, CapacityExceeded,
        BudgetExceeded) nothing is imported."""
        seq_id = _integer("seq_id", seq_id)
        try:
            view = memoryview(data)
        except TypeError:
            raise InvalidArgument(1, f"data must be a bytes-like object, got {type(data).__name__}") from None
        if not view.c_contiguous:
            raise InvalidArgument(1, "data must be C-contiguous bytes (got a strided view of shape "
                                  f"{view.shape}, strides {view.strides}); pass bytes(data) or a "
                                  "contiguous copy")
        with self._lock.write():
            _raw.x_cache_import(self._handle(), seq_id, data)

    @property
    def pool(self):
        """The :class:`packkv.Pool` given at creation, or None (private pool)."""
        return self._pool

    def reset(self) -> None:
        """Removes every token of every sequence (the configuration is kept)."""
        with self._lock.write():
            _raw.cache_reset(self._handle())

    # ---- reading the cache -------------------------------------------------------------------
    def decompress(self, seq_id: int = 0, *, stream: Any = None):
        """Reconstructs (K, V) of one sequence in original token order, float32
        [n_tokens, n_kv_heads, head_dim] each (numpy for a CPU cache, torch on the device for
        a CUDA cache): dequantized compressed tokens, then the residual window."""
        seq_id = _int32("seq_id", seq_id)
        if not 0 <= seq_id < self._params.max_seqs:
            raise InvalidArgument(1, f"packkv_cache_decompress: seq_id {seq_id} is outside "
                                  f"[0, max_seqs = {self._params.max_seqs})")
        with self._lock.read():
            ptr = self._handle()
            n = int(_raw.cache_seq_length(ptr, seq_id))
            shape = (n, self._params.n_kv_heads, self._params.head_dim)
            k, ka = A.empty_f32(shape, self._device, False)
            v, va = A.empty_f32(shape, self._device, False)
            _raw.cache_decompress(ptr, int(seq_id), ka.arg, va.arg, n,
                                  A.stream_arg(stream, self._device))
        return k, v

    def _queries(self, q: Any, seq_ids: Any, name: str = "q"):
        qa = A.as_input(q, name)
        single = len(qa.shape) == 2
        ids = _ids(seq_ids)
        shape = (1,) + qa.shape if single else qa.shape
        if len(shape) != 3 or shape[0] != ids.size or shape[2] != self._params.head_dim:
            raise InvalidArgument(1, f"{name}: shape {qa.shape}, expected [n_seqs={ids.size}, "
                                  f"n_q_heads, head_dim={self._params.head_dim}] "
                                  "(or [n_q_heads, head_dim] for one sequence)")
        A.check_device(qa, name, self._device)
        return qa, ids, shape[1], single

    def _ws(self, workspace, n_seqs, n_q_heads):
        if workspace is not None:
            if A.is_torch_tensor(workspace):
                return workspace, workspace.numel() * workspace.element_size()
            return workspace, workspace.nbytes
        if self._device < 0:  # CPU caches need no workspace; the call itself checks its sizes
            return None, 0
        nbytes = int(_raw.attn_workspace_size(self._ptr, n_seqs, n_q_heads))
        return A.workspace(nbytes, self._device), nbytes

    def scores(self, q: Any, seq_ids: Any = 0, *, workspace: Any = None, stream: Any = None):
        """Raw attention scores q . k (no softmax scale) for every cached token
        (packkv_attn_scores).

        Args:
            q: [n_seqs, n_q_heads, head_dim] (or [n_q_heads, head_dim] for one sequence).
            seq_ids: an int or a list of n_seqs distinct ids.
            workspace: optional preallocated scratch (uint8 array/tensor, >= workspace_size).
        Returns: float32 [n_seqs, n_q_heads, L] (or [n_q_heads, L]), L = the longest
            sequence; entries past a sequence's length are -inf.
        """
        qa, ids, n_q_heads, single = self._queries(q, seq_ids)
        with self._lock.read():
            ptr = self._handle()
            L = max(int(_raw.cache_seq_length(ptr, int(i))) for i in ids)
            ld = max(L, 1)
            out, oa = A.empty_f32((ids.size, n_q_heads, ld), self._device, qa.torch,
                                  fill=-math.inf)
            ws, nbytes = self._ws(workspace, ids.size, n_q_heads)
            _raw.attn_scores(ptr, ids, n_q_heads, qa.arg, qa.dtype, oa.arg, ld,
                             A.ws_arg(ws), nbytes, A.stream_arg(stream, self._device))
        out = out[..., :L]
        return out[0] if single else out

    def apply(self, probs: Any, seq_ids: Any = 0, *, workspace: Any = None,
              stream: Any = None):
        """Weighted sum of V, out = probs . V (packkv_attn_apply).

        Args:
            probs: float32 [n_seqs, n_q_heads, ld] (or [n_q_heads, ld]) in original token
                order, ld >= the longest sequence; only the first seq_length entries of each
                row are read; rows need not sum to 1.
        Returns: float32 [n_seqs, n_q_heads, head_dim] (or [n_q_heads, head_dim]).
        """
        pa = A.as_input(probs, "probs", allowed=(A.DTYPE_F32,))
        single = len(pa.shape) == 2
        ids = _ids(seq_ids)
        shape = (1,) + pa.shape if single else pa.shape
        if len(shape) != 3 or shape[0] != ids.size:
            raise InvalidArgument(1, f"probs: shape {pa.shape}, expected [n_seqs={ids.size}, "
                                  "n_q_heads, ld] (or [n_q_heads, ld] for one sequence)")
        A.check_device(pa, "probs", self._device)
        n_q_heads, ld = shape[1], shape[2]
        with self._lock.read():
            ptr = self._handle()
            out, oa = A.empty_f32((ids.size, n_q_heads, self._params.head_dim), self._device,
                                  pa.torch)
            ws, nbytes = self._ws(workspace, ids.size, n_q_heads)
            _raw.attn_apply(ptr, ids, n_q_heads, pa.arg, ld, oa.arg, A.ws_arg(ws), nbytes,
                            A.stream_arg(stream, self._device))
        return out[0] if single else out

    def decode(self, q: Any, seq_ids: Any = 0, *, scale: float | None = None,
               return_lse: bool = False, workspace: Any = None, stream: Any = None):
        """Decode attention softmax(scale * q . K^T) V over every cached token
        (packkv_attn_decode).

        Args:
            q: [n_seqs, n_q_heads, head_dim] (or [n_q_heads, head_dim] for one sequence).
            scale: softmax scale, default 1/sqrt(head_dim).
            return_lse: also return the log-sum-exp [n_seqs, n_q_heads] (or [n_q_heads]).
        Returns: out float32 [n_seqs, n_q_heads, head_dim] (or [n_q_heads, head_dim]), and
            lse when return_lse. Empty sequences give zeros and lse = -inf.
        """
        qa, ids, n_q_heads, single = self._queries(q, seq_ids)
        if scale is None:
            scale = 1.0 / math.sqrt(self._params.head_dim)
        with self._lock.read():
            ptr = self._handle()
            out, oa = A.empty_f32((ids.size, n_q_heads, self._params.head_dim), self._device,
                                  qa.torch)
            lse, la = (A.empty_f32((ids.size, n_q_heads), self._device, qa.torch)
                       if return_lse else (None, None))
            ws, nbytes = self._ws(workspace, ids.size, n_q_heads)
            _raw.attn_decode(ptr, ids, n_q_heads, qa.arg, qa.dtype, float(scale), oa.arg,
                             la.arg if la is not None else None, A.ws_arg(ws), nbytes,
                             A.stream_arg(stream, self._device))
        if single:
            out = out[0]
            lse = lse[0] if lse is not None else None
        return (out, lse) if return_lse else out

    def decode_multi(self, q: Any, seq_ids: Any = 0, *, scale: float | None = None,
                     return_lse: bool = False, workspace: Any = None, stream: Any = None):
        """Decode attention of q_len queries per sequence and head over every cached token
        (experimental: packkv_attn_decode_multi): chunked prefill over a cached prefix, the
        verification step of speculative decoding. No mask: every query sees every cached
        token and none of its own chunk (merge that part with the lse).

        Args:
            q: [n_seqs, n_q_heads, q_len, head_dim] (or [n_q_heads, q_len, head_dim] for one
                sequence): torch's [batch, heads, tokens, head_dim] attention layout.
            scale: softmax scale, default 1/sqrt(head_dim).
            return_lse: also return the log-sum-exp [n_seqs, n_q_heads, q_len].
        Returns: out float32 [n_seqs, n_q_heads, q_len, head_dim] (or without n_seqs), and
            lse when return_lse. q_len = 1 is :meth:`decode` bit for bit; so is decode() with
            the q_len queries of a head sent as q_len extra query heads of its KV head.
        """
        qa = A.as_input(q, "q")
        single = len(qa.shape) == 3
        ids = _ids(seq_ids)
        shape = (1,) + qa.shape if single else qa.shape
        if len(shape) != 4 or shape[0] != ids.size or shape[3] != self._params.head_dim:
            raise InvalidArgument(1, f"q: shape {qa.shape}, expected [n_seqs={ids.size}, n_q_heads, "
                                  f"q_len, head_dim={self._params.head_dim}] (or [n_q_heads, "
                                  "q_len, head_dim] for one sequence)")
        A.check_device(qa, "q", self._device)
        n_q_heads, q_len = shape[1], shape[2]
        if scale is None:
            scale = 1.0 / math.sqrt(self._params.head_dim)
        with self._lock.read():
            ptr = self._handle()
            out, oa = A.empty_f32((ids.size, n_q_heads, q_len, self._params.head_dim),
                                  self._device, qa.torch)
            lse, la = (A.empty_f32((ids.size, n_q_heads, q_len), self._device, qa.torch)
                       if return_lse else (None, None))
            ws, nbytes = self._ws(workspace, ids.size, n_q_heads * q_len)
            _raw.attn_decode_multi(ptr, ids, n_q_heads, q_len, qa.arg, qa.dtype, float(scale),
                                   oa.arg, la.arg if la is not None else None, A.ws_arg(ws),
                                   nbytes, A.stream_arg(stream, self._device))
        if single:
            out = out[0]
            lse = lse[0] if lse is not None else None
        return (out, lse) if return_lse else out
