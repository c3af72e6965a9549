"""The SWIG layer is private (packkv._raw) and checks the numpy arrays it is handed against
what each C call reads or writes (issue 18, item 4): no segfault, no out-of-bounds read."""

import importlib

import numpy as np
import pytest

import packkv
from packkv import _raw as raw


def test_swig_layer_is_private():
    assert not hasattr(packkv, "raw")
    with pytest.raises(ImportError):
        importlib.import_module("packkv.raw")
    assert "raw" not in packkv.__all__
    assert callable(raw.cache_append)


def test_append_token_count_larger_than_the_arrays(cache):
    # The reproducer: 2**28 tokens claimed, 10 given (segfaulted before).
    k = np.zeros((10, 3, 64), np.float16)
    with pytest.raises(packkv.InvalidArgument, match="k_new: the numpy array holds 3840 bytes"):
        raw.cache_append(cache._ptr, [0], [2**28], k, k, raw.DTYPE_F16)
    with pytest.raises(packkv.InvalidArgument, match="k_new"):
        raw.cache_append(cache._ptr, [0], [11], k, k, raw.DTYPE_F16)
    with pytest.raises(packkv.InvalidArgument, match="v_new"):
        raw.cache_append(cache._ptr, [0], [10], k, k[:9], raw.DTYPE_F16)
    with pytest.raises(packkv.InvalidArgument, match="k_new"):  # two sequences: 6 + 5 > 10
        raw.cache_append(cache._ptr, [0, 1], [6, 5], k, k, raw.DTYPE_F16)
    assert cache.seq_length(0) == 0 and cache.seq_length(1) == 0
    raw.cache_append(cache._ptr, [0, 1], [6, 4], k, k, raw.DTYPE_F16)  # exactly enough
    assert cache.seq_length(0) == 6 and cache.seq_length(1) == 4


def test_append_dtype_must_match_the_array(cache):
    k16 = np.zeros((10, 3, 64), np.float16)
    with pytest.raises(packkv.InvalidArgument, match="float32"):  # read 2x past the end before
        raw.cache_append(cache._ptr, [0], [5], k16, k16, raw.DTYPE_F32)
    k32 = np.zeros((10, 3, 64), np.float32)
    with pytest.raises(packkv.InvalidArgument, match="float16"):
        raw.cache_append(cache._ptr, [0], [5], k32, k32, raw.DTYPE_F16)
    with pytest.raises(packkv.InvalidArgument, match="bfloat16"):
        raw.cache_append(cache._ptr, [0], [5], k16, k16, raw.DTYPE_BF16)
    bf = np.zeros((10, 3, 64), np.uint16)  # bfloat16 bits
    raw.cache_append(cache._ptr, [0], [5], bf, bf, raw.DTYPE_BF16)
    assert cache.seq_length(0) == 5


def test_outputs_must_hold_what_the_call_writes(cache, rng):
    k = rng.standard_normal((20, 3, 64)).astype(np.float32)
    cache.append(k, k)
    short = np.zeros((19, 3, 64), np.float32)
    with pytest.raises(packkv.InvalidArgument, match="k_out"):
        raw.cache_decompress(cache._ptr, 0, short, None, 20)
    with pytest.raises(packkv.InvalidArgument, match="v_out"):
        raw.cache_decompress(cache._ptr, 0, None, short, 20)
    q = np.zeros((1, 6, 64), np.float32)
    with pytest.raises(packkv.InvalidArgument, match="q:"):
        raw.attn_scores(cache._ptr, [0], 9, q, raw.DTYPE_F32, np.zeros((9, 20), np.float32), 20,
                        None, 0)
    q9 = np.zeros((1, 9, 64), np.float32)
    with pytest.raises(packkv.InvalidArgument, match="scores"):
        raw.attn_scores(cache._ptr, [0], 9, q9, raw.DTYPE_F32, np.zeros((9, 19), np.float32),
                        20, None, 0)
    with pytest.raises(packkv.InvalidArgument, match="q:"):
        raw.attn_scores(cache._ptr, [0], 9, q9.astype(np.float16)[:, :5], raw.DTYPE_F16,
                        np.zeros((9, 20), np.float32), 20, None, 0)
    with pytest.raises(packkv.InvalidArgument, match="probs"):
        raw.attn_apply(cache._ptr, [0], 9, np.zeros((9, 10), np.float32), 20,
                       np.zeros((9, 64), np.float32), None, 0)
    with pytest.raises(packkv.InvalidArgument, match="out"):
        raw.attn_apply(cache._ptr, [0], 9, np.zeros((9, 20), np.float32), 20,
                       np.zeros((8, 64), np.float32), None, 0)
    with pytest.raises(packkv.InvalidArgument, match="lse"):
        raw.attn_decode(cache._ptr, [0], 9, q9, raw.DTYPE_F32, 0.125,
                        np.zeros((9, 64), np.float32), np.zeros(8, np.float32), None, 0)
    with pytest.raises(packkv.InvalidArgument, match="workspace"):
        raw.attn_decode(cache._ptr, [0], 9, q9, raw.DTYPE_F32, 0.125,
                        np.zeros((9, 64), np.float32), None, np.zeros(10, np.uint8), 11)
    # Right sizes pass and agree with the Pythonic layer.
    out = np.zeros((9, 64), np.float32)
    raw.attn_decode(cache._ptr, [0], 9, q9, raw.DTYPE_F32, 0.125, out, None, None, 0)
    np.testing.assert_array_equal(out, cache.decode(q9[0], scale=0.125))


def test_struct_size_larger_than_the_struct_object(cache):
    # A SWIG struct object holds exactly sizeof(struct) bytes; a larger struct_size made the C
    # calls read and write past it (heap corruption, found by a fresh-user check).
    p = raw.CacheParamsStruct()
    with pytest.raises(packkv.InvalidArgument, match=f"holds {raw.CACHE_PARAMS_STRUCT_SIZE} bytes"):
        raw.cache_params_init(p, 1024)
    raw.cache_params_init(p, raw.CACHE_PARAMS_STRUCT_SIZE)
    assert p.struct_size == raw.CACHE_PARAMS_STRUCT_SIZE
    p.struct_size = 1000
    with pytest.raises(packkv.InvalidArgument, match="struct_size field is 1000"):
        raw.cache_create(p)
    with pytest.raises(packkv.InvalidArgument, match="struct_size field is 1024"):
        q = raw.CacheParamsStruct()
        q.struct_size = 1024
        raw.cache_get_params(cache._ptr, q)
    s = raw.CacheStatsStruct()
    s.struct_size = 1024
    with pytest.raises(packkv.InvalidArgument, match="CacheStatsStruct"):
        raw.cache_stats(cache._ptr, -1, s)
    with pytest.raises(packkv.InvalidArgument, match="PoolParamsStruct"):
        raw.x_pool_params_init(raw.PoolParamsStruct(), 1024)
    for _ in range(200):  # the heap is intact: allocations still work
        raw.CacheParamsStruct()
