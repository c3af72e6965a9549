"""Every error path of the binding: errors raised in C arrive as the mapped exception with
the status and the C message; arguments the Python layer rejects raise the same classes."""

import numpy as np
import pytest

import packkv
from packkv import _raw as raw
from conftest import kv_data, ref_cache

ALL = [
    (1, packkv.InvalidArgument, ValueError),
    (2, packkv.InvalidState, RuntimeError),
    (3, packkv.CapacityExceeded, RuntimeError),
    (4, packkv.WorkspaceTooSmall, ValueError),
    (5, packkv.OutOfHostMemory, MemoryError),
    (6, packkv.OutOfDeviceMemory, MemoryError),
    (7, packkv.CudaError, RuntimeError),
    (8, packkv.NotSupported, NotImplementedError),
    (9, packkv.VersionMismatch, RuntimeError),
    (10, packkv.InternalError, RuntimeError),
]


@pytest.mark.parametrize("status,cls,builtin", ALL)
def test_status_mapping(status, cls, builtin):
    e = packkv.error_from_status(status, "detail")
    assert type(e) is cls and isinstance(e, packkv.PackKVError) and isinstance(e, builtin)
    assert e.status == status and e.message == "detail"
    # Names agree with the C library's packkv_status_string.
    assert e.status_name == packkv.status_string(status) == packkv.STATUS_NAMES[status]
    assert getattr(raw, e.status_name[len("PACKKV_"):]) == status
    assert str(e) == f"{e.status_name} ({status}): detail"


def test_unknown_status_is_base_class():
    e = packkv.error_from_status(1234, "from the future")
    assert type(e) is packkv.PackKVError and e.status == 1234
    assert e.status_name == "unknown status" == packkv.status_string(1234)
    with pytest.raises(ValueError):
        packkv.error_from_status(0)


def test_exceptions_pickle():
    import pickle

    e = pickle.loads(pickle.dumps(packkv.CapacityExceeded(3, "full")))
    assert type(e) is packkv.CapacityExceeded and e.message == "full" and e.status == 3


def check(excinfo, cls, status, fragment):
    e = excinfo.value
    assert type(e) is cls and e.status == status
    assert fragment in e.message, e.message


# ---- errors raised by the C library ---------------------------------------------------------

def test_c_invalid_argument_create():
    with pytest.raises(packkv.InvalidArgument) as ei:
        ref_cache(3, 40)  # head_dim must be a multiple of 16
    check(ei, packkv.InvalidArgument, 1, "head_dim")
    assert "packkv_cache_create" in ei.value.message


def test_c_invalid_argument_seq_id(cache):
    with pytest.raises(packkv.InvalidArgument) as ei:
        cache.seq_length(7)
    check(ei, packkv.InvalidArgument, 1, "seq_id")
    with pytest.raises(packkv.InvalidArgument):
        cache.remove_seq(-2)
    with pytest.raises(packkv.InvalidArgument):
        cache.stats(4)


def test_c_invalid_argument_non_finite_append_appends_nothing(cache, rng):
    k, v = kv_data(rng, 100, 3, 64), kv_data(rng, 100, 3, 64)
    v[42, 1, 7] = np.nan
    with pytest.raises(packkv.InvalidArgument) as ei:
        cache.append(k, v)
    assert ei.value.message  # names the sequence and token
    assert cache.seq_length(0) == 0


def test_c_invalid_argument_attention(cache, rng):
    cache.append(kv_data(rng, 10, 3, 64), kv_data(rng, 10, 3, 64))
    q = rng.standard_normal((1, 4, 64)).astype(np.float32)  # 4 is not a multiple of 3
    with pytest.raises(packkv.InvalidArgument) as ei:
        cache.decode(q)
    assert "n_q_heads" in ei.value.message
    q = rng.standard_normal((1, 9, 64)).astype(np.float32)
    with pytest.raises(packkv.InvalidArgument) as ei:
        cache.decode(q, scale=0.0)
    assert "scale" in ei.value.message
    with pytest.raises(packkv.InvalidArgument):
        cache.decode(np.concatenate([q, q]), seq_ids=[0, 0])  # repeated ids
    probs = np.ones((1, 9, 5), np.float32)  # ld_probs (5) < sequence length (10)
    with pytest.raises(packkv.InvalidArgument):
        cache.apply(probs)
    with pytest.raises(packkv.InvalidArgument):
        cache.workspace_size(0, 9)


def test_c_invalid_argument_bits_for_rel_scale():
    with pytest.raises(packkv.InvalidArgument) as ei:
        packkv.bits_for_rel_scale(0.0)
    assert "packkv_bits_for_rel_scale" in ei.value.message
    assert packkv.bits_for_rel_scale(0.1) == 4 and packkv.bits_for_rel_scale(0.2) == 3


def test_c_capacity_exceeded(rng):
    with ref_cache(3, 64, max_tokens_per_seq=100) as c:
        c.append(kv_data(rng, 60, 3, 64), kv_data(rng, 60, 3, 64))
        with pytest.raises(packkv.CapacityExceeded) as ei:
            c.append(kv_data(rng, 41, 3, 64), kv_data(rng, 41, 3, 64))
        assert ei.value.status == 3 and ei.value.message
        assert c.seq_length(0) == 60
        # decompress with too little room (raw call; Cache.decompress sizes it right)
        out = np.empty((10, 3, 64), np.float32)
        with pytest.raises(packkv.CapacityExceeded):
            raw.cache_decompress(c._ptr, 0, out, None, 10)


@pytest.mark.skipif(packkv.has_cuda(), reason="a CUDA device is present")
def test_c_not_supported_without_cuda():
    with pytest.raises(packkv.NotSupported) as ei:
        ref_cache(3, 64, device=0)
    assert ei.value.status == 8 and "CUDA" in ei.value.message


def test_c_version_mismatch_params_and_stats(cache):
    p = raw.CacheParamsStruct()
    with pytest.raises(packkv.VersionMismatch) as ei:
        raw.cache_params_init(p, 8)
    assert "struct_size" in ei.value.message
    s = raw.CacheStatsStruct()
    s.struct_size = 8
    with pytest.raises(packkv.VersionMismatch):
        raw.cache_stats(cache._ptr, -1, s)
    q = raw.CacheParamsStruct()
    q.struct_size = 8
    with pytest.raises(packkv.VersionMismatch):
        raw.cache_get_params(cache._ptr, q)


def test_c_invalid_argument_null_handle():
    with pytest.raises(packkv.InvalidArgument) as ei:
        raw.cache_seq_length(None, 0)
    assert ei.value.message
    raw.cache_destroy(None)  # accepts NULL


def test_last_error_message_and_copy(cache):
    with pytest.raises(packkv.InvalidArgument) as ei:
        cache.seq_length(9)
    msg = ei.value.message
    # The same thread's last error is still there (no packkv call since).
    assert packkv.last_error_message() == msg
    n, text = raw.copy_last_error(8)
    assert n == len(msg) and text == msg[:7]
    n, text = raw.copy_last_error(0)
    assert n == len(msg) and text == ""
    cache.seq_length(0)  # a successful call clears it
    assert packkv.last_error_message() == ""


def test_messages_are_per_thread(cache):
    import threading

    seen = {}

    def fail(seq):
        try:
            cache.seq_length(seq)
        except packkv.InvalidArgument as e:
            seen[seq] = e.message

    threads = [threading.Thread(target=fail, args=(s,)) for s in (10, 20, 30, 40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s, m in seen.items():
        assert str(s) in m
    assert len(seen) == 4


# ---- errors raised by the Python layer before any C call ------------------------------------

def test_closed_cache_is_invalid_state(rng):
    c = ref_cache(3, 64)
    c.close()
    for call in (lambda: c.seq_length(0), lambda: c.stats(), c.reset, c.sync,
                 lambda: c.append(kv_data(rng, 1, 3, 64), kv_data(rng, 1, 3, 64)),
                 lambda: c.decode(np.zeros((9, 64), np.float32)), lambda: c.params):
        with pytest.raises(packkv.InvalidState):
            call()


def test_python_side_argument_errors(cache, rng):
    k, v = kv_data(rng, 10, 3, 64), kv_data(rng, 10, 3, 64)
    with pytest.raises(packkv.InvalidArgument, match="shape"):
        cache.append(np.ascontiguousarray(k[:, :2]), np.ascontiguousarray(v[:, :2]))
    with pytest.raises(packkv.InvalidArgument, match="dtype"):
        cache.append(k.astype(np.int64), v.astype(np.int64))
    with pytest.raises(packkv.InvalidArgument, match="same dtype"):
        cache.append(k, v.astype(np.float32))
    with pytest.raises(packkv.InvalidArgument, match="contiguous"):
        cache.append(np.asfortranarray(k), v)
    with pytest.raises(packkv.InvalidArgument, match="n_tokens"):
        cache.append(k, v, seq_ids=[0, 1])
    with pytest.raises(packkv.InvalidArgument, match="n_tokens"):
        cache.append(k, v, seq_ids=[0, 1], n_tokens=[10])
    with pytest.raises(packkv.InvalidArgument, match="seq_ids"):
        cache.append(k, v, seq_ids=[])
    # Counts that an int32 conversion would wrap or truncate to [5, 5] (whose shape check
    # passes): refused, and nothing is appended to either sequence.
    for bad in ([2**32 + 5, 5], [-(2**32) + 5, 5], [5.7, 4.3], [-1, 11], [2**31, 5]):
        with pytest.raises(packkv.InvalidArgument, match="n_tokens"):
            cache.append(k, v, seq_ids=[0, 1], n_tokens=bad)
    assert cache.seq_length(0) == 0 and cache.seq_length(1) == 0
    with pytest.raises(packkv.InvalidArgument, match="q"):
        cache.decode(np.zeros((2, 9, 64), np.float32), seq_ids=[0])
    with pytest.raises(packkv.InvalidArgument, match="dtype"):
        cache.apply(np.zeros((9, 10), np.float16))
    with pytest.raises(packkv.InvalidArgument, match="dtype"):
        ref_cache(3, 64, kv_dtype="int8")
    with pytest.raises(packkv.InvalidArgument, match="repack must be one of"):
        ref_cache(3, 64, repack="best")
    with pytest.raises(packkv.InvalidArgument, match="scale_granularity"):
        ref_cache(3, 64, scale_granularity="per_head")
    with pytest.raises(packkv.InvalidArgument, match="n_kv_heads must be an integer"):
        ref_cache(2.5, 64)
    with pytest.raises(packkv.InvalidArgument, match="head_dim must be an integer"):
        ref_cache(3, "64")
    with pytest.raises(packkv.InvalidArgument, match="does not fit"):
        ref_cache(3, 64, max_seqs=2**31)
    with pytest.raises(packkv.InvalidArgument, match="rel_scale_k must be a number"):
        ref_cache(3, 64, rel_scale_k="0.1")
    assert cache.seq_length(0) == 0


def test_raw_layer_typemap_errors(cache):
    """numpy.i / typemap checks in the SWIG wrapper itself (before the C call)."""
    k = np.zeros((1, 3, 64), np.float16)
    with pytest.raises(ValueError, match="h_n_tokens"):
        raw.cache_append(cache._ptr, [0], [1, 1], k, k, raw.DTYPE_F16)
    with pytest.raises(TypeError):
        raw.cache_append(cache._ptr, [0], [1], np.asfortranarray(np.zeros((2, 3, 64))), k,
                         raw.DTYPE_F32)
    out = np.zeros((1, 3, 64), np.float64)  # float* outputs must be float32
    with pytest.raises(TypeError):
        raw.cache_decompress(cache._ptr, 0, out, None, 1)
    ro = np.zeros((1, 3, 64), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        raw.cache_decompress(cache._ptr, 0, ro, None, 1)
    with pytest.raises(ValueError, match="cap"):
        raw.copy_last_error(-1)


def test_consistent_argument_checks(cache):
    """Issue 18 item 5: the same rules everywhere, the package's own exception types."""
    with pytest.raises(packkv.InvalidArgument, match="seq_id must be an integer"):
        cache.seq_length(1.5)  # returned 0 (truncated) while decompress(1.5) was rejected
    with pytest.raises(packkv.InvalidArgument, match="seq_id must be an integer"):
        cache.decompress(1.5)
    with pytest.raises(packkv.InvalidArgument, match="seq_id must be an integer"):
        cache.remove_seq(1.5)
    with pytest.raises(packkv.InvalidArgument, match="seq_id must be an integer"):
        cache.stats(1.5)
    with pytest.raises(packkv.InvalidArgument, match="n_seqs = 1099511627776 does not fit"):
        cache.workspace_size(2**40, 4)  # a bare SWIG OverflowError before
    with pytest.raises(packkv.InvalidArgument, match="seq_id = 4294967296 does not fit"):
        cache.seq_length(2**32)
    with pytest.raises(packkv.InvalidArgument, match="native byte order"):
        cache.append(np.zeros((2, 3, 64), ">f2"), np.zeros((2, 3, 64), ">f2"))
    assert cache.seq_length(0) == 0


def test_every_query_raises_after_close():
    c = ref_cache(3, 64)
    c.close()
    for name in ("params", "device", "n_kv_heads", "head_dim"):
        with pytest.raises(packkv.InvalidState, match="closed"):
            getattr(c, name)
    with pytest.raises(packkv.InvalidState):
        c.seq_length(0)


def test_messages_say_what_is_wrong(cache, rng):
    """fresh6 item 6: an int beyond 64 bits is out of range (not "not an int"), and the
    expected shape of k / v is given in general terms, not derived from the bad input."""
    k, v = kv_data(rng, 5, 3, 64), kv_data(rng, 5, 3, 64)
    lo = -2**31
    for bad in (2**70, -(2**70), [0, 2**70]):
        with pytest.raises(packkv.InvalidArgument) as e:
            cache.append(k, v, seq_ids=bad)
        assert e.value.message == f"seq_ids entries must be in [{lo}, 2^31), got {bad!r}"
    with pytest.raises(packkv.InvalidArgument) as e:
        cache.append(k, v, seq_ids=[0, 1], n_tokens=[2**70, 0])
    assert e.value.message == f"n_tokens entries must be in [0, 2^31), got {[2**70, 0]!r}"
    for name, kk, vv in (("k", np.float16(1), np.float16(1)), ("v", k, v[0])):
        with pytest.raises(packkv.InvalidArgument) as e:
            cache.append(kk, vv)
        shape = np.shape(kk) if name == "k" else np.shape(vv)
        assert e.value.message == (f"{name}: shape {shape}, expected a 3-D array "
                                   "[n_tokens, n_kv_heads=3, head_dim=64]")
    # a non-int stays a type message
    with pytest.raises(packkv.InvalidArgument, match="must be an int or a non-empty 1-D list"):
        cache.append(k, v, seq_ids=[0, "1"])
    assert cache.seq_length(0) == 0


def test_copy_deepcopy_and_pickle_are_refused_and_the_handle_survives():
    # A copy would share the C handle: freeing one would leave the other dangling (fresh7 item 1).
    import copy
    import pickle

    rng = np.random.default_rng(7)
    k, v = kv_data(rng, 70, 2, 64), kv_data(rng, 70, 2, 64)
    c = packkv.Cache(2, 64)
    c.append(k, v)
    want = c.decompress(0)
    for how, f in [("copied", copy.copy), ("deep-copied", copy.deepcopy), ("pickled", pickle.dumps),
                   ("pickled", lambda x: x.__reduce__()), ("pickled", lambda x: x.__getstate__())]:
        with pytest.raises(TypeError, match=f"a packkv cache owns a C handle and cannot be {how}; "
                                           "to duplicate a sequence use Cache.fork"):
            f(c)
    got = c.decompress(0)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    c.close()
    p = packkv.Pool(budget_bytes=1 << 24)
    for f in (copy.copy, copy.deepcopy, pickle.dumps, lambda x: x.__reduce__()):
        with pytest.raises(TypeError, match=r"^a packkv pool owns a C handle and cannot be (copied|deep-copied|pickled)$"):
            f(p)
    assert p.stats().budget_bytes == 1 << 24
    p.close()
