"""Round trip: append -> stats -> decompress, with the PackKV error bound checked per token."""

import numpy as np
import pytest

import packkv
from conftest import kv_data, ref_cache


def bound_ok(x, xhat, r, granularity="per_token"):
    """|x - x^| <= r * range / 2 per token (range over all heads, or per head)."""
    x = x.astype(np.float64)
    axis = (1, 2) if granularity == "per_token" else (2,)
    rng = x.max(axis=axis, keepdims=True) - x.min(axis=axis, keepdims=True)
    bound = r * rng / 2 * (1 + 1e-4) + 1e-6
    return np.all(np.abs(x - xhat) <= bound)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("repack", ["none", "median", "greedy"])
def test_roundtrip_error_bound(rng, dtype, repack):
    T = 64 * 5 + 128 + 17
    k, v = kv_data(rng, T, 3, 64, dtype), kv_data(rng, T, 3, 64, dtype)
    with ref_cache(3, 64, repack=repack, kv_dtype=dtype) as c:
        c.append(k, v)
        assert c.seq_length(0) == T
        kh, vh = c.decompress(0)
        assert kh.dtype == np.float32 and kh.shape == (T, 3, 64) and vh.shape == (T, 3, 64)
        st = c.stats(0)
        nc = st.n_compressed_tokens
        assert nc > 0 and nc % 64 == 0 and st.n_residual_tokens == T - nc
        p = c.params
        assert bound_ok(k[:nc], kh[:nc], p.rel_scale_k)
        assert bound_ok(v[:nc], vh[:nc], p.rel_scale_v)
        # The residual window is stored uncompressed in kv_dtype (= the input dtype here).
        np.testing.assert_array_equal(kh[nc:], k[nc:].astype(np.float32))
        np.testing.assert_array_equal(vh[nc:], v[nc:].astype(np.float32))


def test_roundtrip_per_token_head_and_explicit_bits(rng):
    T = 400
    k, v = kv_data(rng, T, 3, 64), kv_data(rng, T, 3, 64)
    with ref_cache(3, 64, rel_scale_k=0.05, rel_scale_v=0.1,
                      scale_granularity="per_token_head", residual_tokens=0) as c:
        c.append(k, v)
        p = c.params
        assert p.bits_k == packkv.bits_for_rel_scale(0.05)
        assert p.bits_v == packkv.bits_for_rel_scale(0.1)
        kh, vh = c.decompress()
        nc = c.stats().n_compressed_tokens
        assert nc == 384
        assert bound_ok(k[:nc], kh[:nc], 0.05, "per_token_head")
        assert bound_ok(v[:nc], vh[:nc], 0.1, "per_token_head")


def test_stats_accounting_and_ratio(rng):
    T = 1000
    with ref_cache(3, 64) as c:
        empty = c.stats()
        assert empty.n_tokens == 0 and empty.ratio == 0.0
        c.append(kv_data(rng, T, 3, 64), kv_data(rng, T, 3, 64))
        s = c.stats()
        assert s.n_tokens == T
        assert s.fp16_bytes == T * 3 * 64 * 2 * 2
        parts = (s.k_tile_bytes + s.v_tile_bytes + s.k_scale_bytes + s.v_scale_bytes
                 + s.index_bytes + s.perm_bytes)
        assert s.compressed_bytes_used == parts
        assert s.compressed_bytes_reserved >= s.compressed_bytes_used
        assert s.all_in_bytes == s.compressed_bytes_used + s.residual_bytes
        assert s.ratio == pytest.approx(s.fp16_bytes / s.all_in_bytes)
        assert s.ratio > 1.5
        assert set(s.as_dict()) >= {"n_tokens", "fp16_bytes", "residual_bytes"}


def test_multi_sequence_append_remove_reset(rng, cache):
    counts = [70, 0, 300, 5]
    ks = [kv_data(rng, n, 3, 64) for n in counts]
    vs = [kv_data(rng, n, 3, 64) for n in counts]
    cache.append(np.concatenate(ks), np.concatenate(vs), seq_ids=[0, 1, 2, 3], n_tokens=counts)
    assert [cache.seq_length(i) for i in range(4)] == counts
    # Sequences are independent: decompressing one equals appending it alone.
    with ref_cache(3, 64) as alone:
        alone.append(ks[2], vs[2])
        np.testing.assert_array_equal(alone.decompress()[0], cache.decompress(2)[0])
    total = cache.stats()
    assert total.n_tokens == sum(counts)
    assert sum(cache.stats(i).n_tokens for i in range(4)) == total.n_tokens
    cache.remove_seq(2)
    assert cache.seq_length(2) == 0
    cache.append(ks[0], vs[0], seq_ids=2)
    assert cache.seq_length(2) == 70
    cache.reset()
    assert all(cache.seq_length(i) == 0 for i in range(4))
    k, v = cache.decompress(1)
    assert k.shape == (0, 3, 64) and v.shape == (0, 3, 64)


def test_incremental_append_equals_one_shot(rng):
    T = 333
    k, v = kv_data(rng, T, 3, 64), kv_data(rng, T, 3, 64)
    with ref_cache(3, 64) as a, ref_cache(3, 64) as b:
        a.append(k, v)
        for s in range(0, T, 50):
            b.append(k[s:s + 50], v[s:s + 50])
        for x, y in zip(a.decompress(), b.decompress()):
            np.testing.assert_array_equal(x, y)


def test_params_defaults_and_overrides():
    with ref_cache(3, 64) as c:
        p = c.params
        assert (p.device, p.n_kv_heads, p.head_dim, p.max_seqs) == (-1, 3, 64, 1)
        assert p.kv_dtype == packkv.DTYPE_F16
        assert p.repack == packkv.REPACK["median"]
        assert p.bits_k >= 1 and p.bits_v >= 1
        assert c.device == -1 and not c.closed
    with ref_cache(2, 32, max_seqs=3, kv_dtype="float32", max_tokens_per_seq=1000,
                      block_tokens=32, residual_tokens=16, repack="none") as c:
        p = c.params
        assert (p.max_seqs, p.kv_dtype, p.max_tokens_per_seq) == (3, packkv.DTYPE_F32, 1000)
        assert (p.block_tokens, p.residual_tokens, p.repack) == (32, 16, packkv.REPACK["none"])


def test_version_and_build_info():
    n = packkv.version_number()
    assert n == packkv._raw.VERSION_NUMBER
    assert packkv.version() == "%d.%d.%d" % (n // 10000, n // 100 % 100, n % 100)
    assert packkv.__version__ == packkv.version()
    assert "libpackkv" in packkv.build_info()
    assert isinstance(packkv.has_cuda(), bool)


def test_lifecycle_close_is_idempotent(rng):
    c = ref_cache(3, 64)
    c.append(kv_data(rng, 10, 3, 64), kv_data(rng, 10, 3, 64))
    c.close()
    c.close()
    assert c.closed and "closed" in repr(c)
    with ref_cache(3, 64) as c2:
        pass
    assert c2.closed
    # Dropping an open cache frees it through __del__ (no exception, no leak report).
    c3 = ref_cache(3, 64)
    del c3


def test_sink_tokens_and_zs_format(rng):
    """sink_tokens: the first tokens come back exact; blocks start after them (issue 15)."""
    T = 64 * 3 + 128 + 5
    k, v = kv_data(rng, T, 3, 64, np.float16), kv_data(rng, T, 3, 64, np.float16)
    with ref_cache(3, 64, kv_dtype=np.float16, sink_tokens=4, zs_format=1) as c:
        c.append(k, v)
        assert (c.params.sink_tokens, c.params.zs_format) == (4, 1)
        st = c.stats(0)
        # 4 sinks, 320 window tokens -> 3 blocks of 64 while 128 + 64 remain; sinks count as uncompressed
        assert st.n_compressed_tokens == 192 and st.n_residual_tokens == 4 + 128 + 1
        kh, vh = c.decompress(0)
        np.testing.assert_array_equal(kh[:4], k[:4].astype(np.float32))
        p = c.params
        assert bound_ok(k[4:196], kh[4:196], p.rel_scale_k)
        assert bound_ok(v[4:196], vh[4:196], p.rel_scale_v)


def test_library_defaults():
    """packkv.Cache() without arguments takes the library's defaults (packkv.h; chosen in
    bench/RESULTS.md, end-to-end KL study): r 0.035 / 0.07, 4 sink tokens, window 64."""
    with packkv.Cache(3, 64) as c:
        p = c.params
        assert (p.rel_scale_k, p.rel_scale_v) == (np.float32(0.035), np.float32(0.07))
        assert (p.sink_tokens, p.residual_tokens, p.block_tokens) == (4, 64, 64)
        assert (p.bits_k, p.bits_v, p.k_transform, p.zs_format) == (5, 4, 0, 0)


def test_zs_format_and_k_transform_by_name(rng):
    """fresh-findings F2: zs_format and k_transform take names, as repack and
    scale_granularity do; packkv.ZS_FORMAT / K_TRANSFORM map them to the C values of
    packkv.h (PACKKV_ZS_COMPACT 0, PACKKV_ZS_WIDE 1, PACKKV_K_TRANSFORM_NONE 0, _CENTER 1);
    a name gives the same cache, byte for byte, as its C value; an unknown name is refused."""
    assert packkv.ZS_FORMAT == {"compact": 0, "wide": 1}
    assert packkv.K_TRANSFORM == {"none": 0, "center": 1}
    k, v = kv_data(rng, 300, 3, 64, np.float16), kv_data(rng, 300, 3, 64, np.float16)
    for zs, kt in (("wide", "center"), ("compact", "none")):
        with ref_cache(3, 64, zs_format=zs, k_transform=kt) as a, \
                ref_cache(3, 64, zs_format=packkv.ZS_FORMAT[zs], k_transform=packkv.K_TRANSFORM[kt]) as b:
            assert (a.params.zs_format, a.params.k_transform) == (packkv.ZS_FORMAT[zs], packkv.K_TRANSFORM[kt])
            a.append(k, v)
            b.append(k, v)
            assert a.export_seq(0) == b.export_seq(0)
    assert packkv.page_bytes_for(n_kv_heads=3, head_dim=64, zs_format="wide") == \
        packkv.page_bytes_for(n_kv_heads=3, head_dim=64, zs_format=1)
    with pytest.raises(packkv.InvalidArgument, match=r"k_transform must be one of \['center', 'none'\], got 'centre'"):
        packkv.Cache(3, 64, k_transform="centre")
    with pytest.raises(packkv.InvalidArgument, match="zs_format must be one of"):
        packkv.Cache(3, 64, zs_format="narrow")


def test_params_docstring_lists_every_field():
    """fresh-findings F1: help(packkv.Params) names every field a Params carries."""
    with packkv.Cache(2, 32) as c:
        fields = c.params.as_dict()
    assert {"sink_tokens", "zs_format", "k_transform", "n_threads"} <= set(fields)
    missing = [f for f in fields if f not in packkv.Params.__doc__]
    assert not missing, missing


def test_documented_byte_costs_of_wide_fallback_and_k_mean(rng):
    """packkv.h (fresh-findings F4, F5): a compact block that falls back to the wide fields
    costs 12 bytes per token and scale group (compact + wide fields), wide 8, for K and V
    together; with K centring k_scale_bytes adds the K mean, n_kv_heads * head_dim * 4 bytes
    per sequence (a fork's copy counted again by the whole-cache stats)."""
    H, D, T = 2, 32, 64
    far = (1000 + rng.integers(-2, 3, (T, H, D)) * 0.5).astype(np.float16)   # |z| > 32767 at r 1/254
    near = rng.standard_normal((T, H, D)).astype(np.float16)
    for zs, per_group in (("compact", 12), ("wide", 8)):
        with packkv.Cache(H, D, zs_format=zs, residual_tokens=0, sink_tokens=0, rel_scale_k=1 / 254,
                          rel_scale_v=1 / 254, scale_granularity="per_token") as c:
            c.append(near, far)   # only V falls back; K's fields go wide with it
            s = c.stats()
            assert (s.k_scale_bytes, s.v_scale_bytes) == (per_group * T, per_group * T)
    k = rng.standard_normal((300, H, 64)).astype(np.float16)
    with packkv.Cache(H, 64, max_seqs=2, k_transform="center") as c, \
            packkv.Cache(H, 64, max_seqs=2) as plain:
        c.append(k, k)
        plain.append(k, k)
        assert c.stats(0).k_scale_bytes == plain.stats(0).k_scale_bytes + H * 64 * 4
        assert c.stats(0).v_scale_bytes == plain.stats(0).v_scale_bytes
        c.fork(0, 1)
        assert c.stats().k_scale_bytes == plain.stats(0).k_scale_bytes + 2 * H * 64 * 4
