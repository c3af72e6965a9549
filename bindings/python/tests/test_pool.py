"""Pools, truncate and fork (experimental API) through the Pythonic layer: values against
references built from fresh caches, the budget error and its bytes_needed, failures that
change nothing, context managers."""

import numpy as np
import pytest

import packkv
from conftest import ref_cache

H, D = 2, 32


def kv(n, seed):
    rng = np.random.default_rng(seed)
    off = rng.normal(0, 2, size=(1, H, D))
    k = (off + rng.normal(0, 1, size=(n, H, D))).astype(np.float32)
    v = (rng.normal(0, 1, size=(n, H, D))).astype(np.float32)
    return k, v


def snapshot(cache, n_seqs, pool=None):
    out = [cache.stats()]
    for s in range(n_seqs):
        k, v = cache.decompress(s)
        out += [cache.stats(s), k.tobytes(), v.tobytes()]
    if pool is not None:
        out.append(pool.stats())
    return out


def test_pool_shared_by_two_caches_matches_private_caches():
    k, v = kv(2000, 1)
    with packkv.Pool(page_bytes=65536) as pool:
        a = ref_cache(H, D, pool=pool)
        b = ref_cache(H, D, pool=pool)
        assert a.pool is pool and pool.stats().n_caches == 2
        a.append(k, v)
        b.append(k[:1000], v[:1000])
    # closing the pool handle does not end the caches
    a.append(k[:10], v[:10])
    with ref_cache(H, D) as ref:
        ref.append(k, v)
        ref.append(k[:10], v[:10])
        for x, y in zip(a.decompress(0), ref.decompress(0)):
            np.testing.assert_array_equal(x, y)
    a.close()
    b.close()


def test_pool_stats_and_memory_given_back():
    k, v = kv(3000, 2)
    with packkv.Pool(page_bytes=16384) as pool, ref_cache(H, D, pool=pool, max_seqs=2) as c:
        assert pool.stats().bytes_in_use == 0
        assert pool.tokens_fit() == -1
        c.append(k, v, seq_ids=[0, 1], n_tokens=[2000, 1000])
        s = pool.stats()
        assert s.page_bytes == 16384 and s.budget_bytes == 0 and s.free_bytes == -1
        assert s.bytes_in_use == s.bytes_held > 0
        assert c.stats().compressed_bytes_reserved >= s.bytes_in_use
        c.reset()
        assert pool.stats().bytes_held == 0


def test_budget_exceeded_appends_nothing_and_says_what_it_needed():
    k, v = kv(4000, 3)
    page = 8192
    with packkv.Pool(page_bytes=page, budget_bytes=3 * page) as pool, \
            ref_cache(H, D, pool=pool) as c:
        fit = pool.tokens_fit()
        assert fit > 0
        with pytest.raises(packkv.BudgetExceeded) as e:
            for t in range(4000):
                before = snapshot(c, 1, pool)
                c.append(k[t:t + 1], v[t:t + 1])
        assert isinstance(e.value, MemoryError)
        assert e.value.bytes_needed == page
        assert e.value.status == 11 and e.value.status_name == "PACKKV_X_ERR_BUDGET_EXCEEDED"
        assert "packkv_cache_append" in e.value.message
        after = snapshot(c, 1, pool)
        assert after == before
        assert pool.stats().free_bytes == 0
        assert pool.tokens_fit() == 0
        c.truncate(0, 64)  # frees pages
        c.append(k[:1], v[:1])


def test_truncate_and_fork_against_fresh_caches():
    k, v = kv(1500, 4)
    k2, v2 = kv(500, 5)
    q = np.random.default_rng(6).normal(size=(4, D)).astype(np.float32)
    with ref_cache(H, D, max_seqs=3) as c, ref_cache(H, D, max_seqs=3) as ref:
        c.append(k[:1000], v[:1000])
        c.truncate(0, 600)   # inside a compressed block: 600 = 9 * 64 + 24
        assert c.seq_length(0) == 600
        kd, vd = c.decompress(0)
        # kept blocks exact; the cut block's first 24 tokens are its stored values in float16
        ref.append(k[:1000], v[:1000])
        rk, rv = ref.decompress(0)
        np.testing.assert_array_equal(kd[:576], rk[:576])
        np.testing.assert_array_equal(kd[576:], rk[576:600].astype(np.float16).astype(np.float32))
        c.fork(0, 2)
        assert c.stats().n_blocks == c.stats(0).n_blocks == c.stats(2).n_blocks
        c.append(k2, v2, seq_ids=2)
        ref.reset()
        ref.append(np.concatenate([k[:576], kd[576:]]), np.concatenate([v[:576], vd[576:]]), seq_ids=2)
        ref.append(k2, v2, seq_ids=2)
        for x, y in zip(c.decompress(2), ref.decompress(2)):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(c.decode(q, seq_ids=2), ref.decode(q, seq_ids=2))
        # sequence 0 is unchanged by what happened to its fork
        np.testing.assert_array_equal(c.decompress(0)[0], kd)


def test_truncate_and_fork_failures_change_nothing():
    k, v = kv(500, 7)
    with ref_cache(H, D, max_seqs=2) as c:
        c.append(k, v)
        c.append(k[:5], v[:5], seq_ids=1)
        before = snapshot(c, 2)
        for bad in (-1, 501, 2**70):
            with pytest.raises(packkv.InvalidArgument):
                c.truncate(0, bad)
        with pytest.raises(packkv.InvalidArgument, match="n_tokens must be >= 0"):
            c.truncate(0, -1)
        with pytest.raises(packkv.InvalidArgument, match="more than sequence 0 holds"):
            c.truncate(0, 501)
        with pytest.raises(packkv.InvalidArgument):
            c.truncate(0, 3.5)
        with pytest.raises(packkv.InvalidArgument):
            c.truncate(2, 0)
        with pytest.raises(packkv.InvalidState):
            c.fork(0, 1)
        with pytest.raises(packkv.InvalidArgument):
            c.fork(0, 0)
        with pytest.raises(packkv.InvalidArgument):
            c.fork(0, 5)
        assert snapshot(c, 2) == before


def test_pool_arguments():
    with pytest.raises(packkv.InvalidArgument, match="page_bytes"):
        packkv.Pool(page_bytes=5000)
    with pytest.raises(packkv.InvalidArgument, match="reserve"):
        packkv.Pool(reserve=True)
    with pytest.raises(packkv.InvalidArgument):
        packkv.Pool(page_bytes="big")
    with pytest.raises(packkv.InvalidArgument):
        packkv.Pool(reserve=1)
    # 16 largest blocks of 8 x 128 at 4/3-bit codes: the default page size (1 MiB)
    need = packkv.page_bytes_for(n_kv_heads=8, head_dim=128, rel_scale_k=0.1, rel_scale_v=0.2)
    assert need == packkv.DEFAULT_PAGE_BYTES
    with packkv.Pool(page_bytes=16384) as small:
        with pytest.raises(packkv.InvalidArgument, match="page_bytes_for"):
            ref_cache(8, 128, pool=small)
    with pytest.raises(packkv.InvalidArgument):
        ref_cache(H, D, pool="pool")
    p = packkv.Pool(page_bytes=65536, budget_bytes=4 * 65536, reserve=True)
    assert p.stats().bytes_held == 4 * 65536
    p.close()
    p.close()
    assert p.closed
    with pytest.raises(packkv.InvalidState):
        p.stats()
    with pytest.raises(packkv.InvalidState):
        ref_cache(H, D, pool=p)


def test_sliding_window():
    k, v = kv(2000, 8)
    q = np.random.default_rng(9).normal(size=(4, D)).astype(np.float32)
    W = 300
    with ref_cache(H, D) as c, ref_cache(H, D) as ref:
        c.set_window(W)
        for t in range(0, 2000, 50):
            c.append(k[t:t + 50], v[t:t + 50])
            ref.append(k[t:t + 50], v[t:t + 50])
        assert c.window_start(0) == 2000 - W
        s = c.scores(q)
        r = ref.scores(q)
        assert np.all(np.isneginf(s[..., :2000 - W]))
        np.testing.assert_array_equal(s[..., 2000 - W:], r[..., 2000 - W:])
        kd, _ = c.decompress(0)
        assert np.isnan(kd[:2000 - W]).all()
        assert c.stats().n_blocks < ref.stats().n_blocks
        # decode equals a float64 softmax over the window of the windowless cache
        rk, rv = ref.decompress(0)
        sc = np.einsum("hd,thd->ht", q.astype(np.float64).reshape(H, 2, D).reshape(4, D),
                       np.repeat(rk[2000 - W:].astype(np.float64), 2, axis=1)) * 0.2
        p = np.exp(sc - sc.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        want = np.einsum("ht,thd->hd", p, np.repeat(rv[2000 - W:].astype(np.float64), 2, axis=1))
        np.testing.assert_allclose(c.decode(q, scale=0.2), want, rtol=1e-4, atol=1e-5)
        with pytest.raises(packkv.InvalidState):
            c.set_window(10)
        with pytest.raises(packkv.InvalidArgument):
            c.truncate(0, 2000 - W - 1)
        assert c.window_start(0) == 2000 - W


def test_export_import_roundtrip_and_bad_bytes():
    k, v = kv(900, 10)
    with ref_cache(H, D, max_seqs=2) as a, ref_cache(H, D, max_seqs=2, residual_tokens=64) as b:
        a.append(k, v)
        data = a.export_seq(0)
        assert isinstance(data, bytes) and data[:8] == b"PACKKVSQ"
        b.import_seq(1, data)
        for x, y in zip(a.decompress(0), b.decompress(1)):
            np.testing.assert_array_equal(x, y)
        assert b.export_seq(1) == data
        b.import_seq(0, memoryview(bytearray(data)))  # any buffer
        before = snapshot(b, 2)
        with pytest.raises(packkv.InvalidState):
            b.import_seq(0, data)
        b.remove_seq(0)
        before = snapshot(b, 2)
        with pytest.raises(packkv.InvalidArgument, match="truncated"):
            b.import_seq(0, data[:-1])
        with pytest.raises(packkv.InvalidArgument, match="checksum"):
            b.import_seq(0, data[:200] + bytes([data[200] ^ 1]) + data[201:])
        with pytest.raises(packkv.InvalidArgument, match="magic"):
            b.import_seq(0, b"X" + data[1:])
        bad_version = bytearray(data)
        bad_version[8] = 9
        with pytest.raises(packkv.VersionMismatch):
            b.import_seq(0, bytes(bad_version))
        with pytest.raises(packkv.InvalidArgument):
            b.import_seq(0, "not bytes")
        # a strided view: the library's error with a message, not a bare BufferError
        doubled = np.frombuffer(bytes(2 * len(data)), dtype=np.uint8)
        with pytest.raises(packkv.InvalidArgument, match="C-contiguous"):
            b.import_seq(0, memoryview(doubled)[::2])
        assert snapshot(b, 2) == before
    with ref_cache(H, D, rel_scale_k=0.05) as other:
        with pytest.raises(packkv.InvalidArgument, match="params mismatch"):
            other.import_seq(0, data)
        assert other.seq_length(0) == 0


def test_levers_truncate_fork_export():
    """Sink tokens and K centring through truncate, fork and export / import (issue 15 x 16):
    each result equals a fresh cache fed the same tokens."""
    k, v = kv(300, 11)
    q = np.random.default_rng(12).normal(size=(4, D)).astype(np.float32)
    opts = dict(max_seqs=3, kv_dtype=np.float16, sink_tokens=4, k_transform=1, block_tokens=16,
                residual_tokens=16)
    with ref_cache(H, D, **opts) as c, ref_cache(H, D, **opts) as ref:
        c.append(k[:150], v[:150])
        c.fork(0, 1)
        c.truncate(0, 2)            # inside the sink tokens: every block goes
        c.append(k[2:120], v[2:120])
        c.append(k[150:200], v[150:200], seq_ids=1)
        ref.append(k[:120], v[:120])
        ref.append(k[:150], v[:150], seq_ids=1)
        ref.append(k[150:200], v[150:200], seq_ids=1)
        for s in (0, 1):
            for x, y in zip(c.decompress(s), ref.decompress(s)):
                np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(c.decode(q, seq_ids=s), ref.decode(q, seq_ids=s))
        data = c.export_seq(1)
        c.import_seq(2, data)
        for x, y in zip(c.decompress(2), ref.decompress(1)):
            np.testing.assert_array_equal(x, y)
    with ref_cache(H, D, kv_dtype=np.float16, block_tokens=16, residual_tokens=16) as plain:
        with pytest.raises(packkv.InvalidArgument, match="sink_tokens"):
            plain.import_seq(0, data)


def test_tokens_fit_close_to_what_fits():
    """tokens_fit counts whole blocks per page: with ~1 block per 64 KiB page it was 29% high."""
    rng = np.random.default_rng(0)
    k = rng.standard_normal((512, 8, 128)).astype(np.float16)
    with packkv.Pool(page_bytes=65536, budget_bytes=32 * 65536) as pool:
        with ref_cache(8, 128, pool=pool, rel_scale_k=0.1, rel_scale_v=0.2, sink_tokens=0,
                          residual_tokens=128, block_tokens=64) as c:
            c.append(k, k)
            est, added = pool.tokens_fit(), 0
            with pytest.raises(packkv.BudgetExceeded):
                while added < 10000:
                    c.append(k[:16], k[:16])
                    added += 16
            assert abs(est - added) <= 0.1 * added
