"""Attention on the compressed cache against a numpy float64 reference computed on the
dequantized cache (Cache.decompress): scores, apply, decode (+ lse), GQA, several
sequences of different lengths, float16/float32 queries, concurrent readers."""

import math
import threading

import numpy as np
import pytest

import packkv
from conftest import kv_data, ref_cache

RTOL = 1e-5  # DESIGN.md: fp32 accumulation vs fp64 reference of the dequantized cache


def rel_err(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30)


def reference(cache, ids, q):
    """float64 scores, softmax-weighted output and lse per sequence, from decompress()."""
    h_kv = cache.n_kv_heads
    out = []
    for i, sid in enumerate(ids):
        k, v = (x.astype(np.float64) for x in cache.decompress(sid))
        qi = q[i].astype(np.float64)  # [n_q_heads, D]
        group = qi.shape[0] // h_kv
        kk = np.repeat(k.transpose(1, 0, 2), group, axis=0)  # [n_q_heads, T, D]
        vv = np.repeat(v.transpose(1, 0, 2), group, axis=0)
        s = np.einsum("hd,htd->ht", qi, kk)
        out.append((s, kk, vv))
    return out


@pytest.fixture
def filled(rng):
    """A cache with 3 sequences of different lengths (compressed blocks + residual)."""
    lengths = [1000, 129, 450]
    c = ref_cache(3, 64, max_seqs=3)
    ks = [kv_data(rng, n, 3, 64) for n in lengths]
    vs = [kv_data(rng, n, 3, 64) for n in lengths]
    c.append(np.concatenate(ks), np.concatenate(vs), seq_ids=[0, 1, 2], n_tokens=lengths)
    yield c, lengths
    c.close()


@pytest.mark.parametrize("qdtype", [np.float32, np.float16])
def test_scores_match_reference(filled, rng, qdtype):
    c, lengths = filled
    ids = [2, 0, 1]
    q = rng.standard_normal((3, 9, 64)).astype(qdtype)
    got = c.scores(q, seq_ids=ids)
    assert got.dtype == np.float32 and got.shape == (3, 9, max(lengths))
    for i, (s, _, _) in enumerate(reference(c, ids, q)):
        n = lengths[ids[i]]
        assert rel_err(got[i, :, :n], s) <= RTOL
        assert np.all(np.isneginf(got[i, :, n:]))


def test_apply_matches_reference(filled, rng):
    c, lengths = filled
    ids = [0, 1, 2]
    L = max(lengths) + 7  # ld_probs larger than any sequence
    probs = rng.uniform(0, 1, size=(3, 9, L)).astype(np.float32)
    got = c.apply(probs, seq_ids=ids)
    assert got.shape == (3, 9, 64)
    ref = reference(c, ids, np.zeros((3, 9, 64)))
    for i, (_, _, vv) in enumerate(ref):
        n = lengths[ids[i]]
        want = np.einsum("ht,htd->hd", probs[i, :, :n].astype(np.float64), vv)
        assert rel_err(got[i], want) <= RTOL


@pytest.mark.parametrize("qdtype", [np.float32, np.float16])
def test_decode_matches_reference(filled, rng, qdtype):
    c, lengths = filled
    ids = [1, 2, 0]
    q = rng.standard_normal((3, 9, 64)).astype(qdtype)
    scale = 1.0 / math.sqrt(64)
    out, lse = c.decode(q, seq_ids=ids, return_lse=True)
    assert out.shape == (3, 9, 64) and lse.shape == (3, 9)
    for i, (s, _, vv) in enumerate(reference(c, ids, q)):
        z = scale * s
        m = z.max(axis=1, keepdims=True)
        p = np.exp(z - m)
        want = np.einsum("ht,htd->hd", p / p.sum(axis=1, keepdims=True), vv)
        want_lse = (m[:, 0] + np.log(p.sum(axis=1)))
        assert rel_err(out[i], want) <= RTOL
        np.testing.assert_allclose(lse[i], want_lse, rtol=1e-5, atol=1e-5)
    # Default scale is 1/sqrt(head_dim); lse is optional.
    np.testing.assert_array_equal(c.decode(q, seq_ids=ids), out)


def test_single_sequence_2d_forms(filled, rng):
    c, lengths = filled
    q = rng.standard_normal((9, 64)).astype(np.float32)
    s = c.scores(q, seq_ids=1)
    assert s.shape == (9, lengths[1])
    np.testing.assert_array_equal(s, c.scores(q[None], seq_ids=[1])[0])
    out = c.decode(q, seq_ids=1)
    assert out.shape == (9, 64)
    probs = np.full((9, lengths[1]), 1.0 / lengths[1], np.float32)
    assert c.apply(probs, seq_ids=1).shape == (9, 64)


def test_mha_and_mqa_shapes(rng):
    T = 300
    for n_kv, n_q in [(3, 3), (1, 8)]:
        with ref_cache(n_kv, 32) as c:
            c.append(kv_data(rng, T, n_kv, 32), kv_data(rng, T, n_kv, 32))
            q = rng.standard_normal((n_q, 32)).astype(np.float32)
            out = c.decode(q)
            s = c.scores(q)
            ref = reference(c, [0], q[None])[0][0]
            assert out.shape == (n_q, 32) and rel_err(s, ref) <= RTOL


def test_empty_sequence(cache, rng):
    q = rng.standard_normal((1, 9, 64)).astype(np.float32)
    out, lse = cache.decode(q, seq_ids=[3], return_lse=True)
    assert np.all(out == 0) and np.all(np.isneginf(lse))
    assert cache.scores(q, seq_ids=[3]).shape == (1, 9, 0)


def test_explicit_workspace(filled, rng):
    c, _ = filled
    n = c.workspace_size(2, 9)
    ws = np.empty(max(n, 1), np.uint8)
    q = rng.standard_normal((2, 9, 64)).astype(np.float32)
    np.testing.assert_array_equal(c.decode(q, seq_ids=[0, 1], workspace=ws),
                                  c.decode(q, seq_ids=[0, 1]))


def test_concurrent_readers(filled, rng):
    """Attention calls on one cache may run concurrently (GIL released, shared lock)."""
    c, _ = filled
    q = rng.standard_normal((3, 9, 64)).astype(np.float32)
    want = c.decode(q, seq_ids=[0, 1, 2])
    results, errors = [], []

    def work():
        try:
            for _ in range(20):
                results.append(c.decode(q, seq_ids=[0, 1, 2]))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 80
    for r in results:
        np.testing.assert_array_equal(r, want)


def test_writer_excludes_readers(rng):
    """append (exclusive) interleaved with decode (shared) from other threads stays consistent."""
    with ref_cache(3, 64) as c:
        k, v = kv_data(rng, 64, 3, 64), kv_data(rng, 64, 3, 64)
        q = rng.standard_normal((9, 64)).astype(np.float32)
        stop = threading.Event()
        errors = []

        def reader():
            while not stop.is_set():
                try:
                    n = c.seq_length(0)
                    assert n % 64 == 0
                    c.decode(q)
                except Exception as e:  # pragma: no cover
                    errors.append(e)
                    return

        t = threading.Thread(target=reader)
        t.start()
        for _ in range(20):
            c.append(k, v)
        stop.set()
        t.join()
        assert not errors and c.seq_length(0) == 64 * 20


def test_scores_and_apply_on_an_empty_sequence():
    """An empty sequence takes probs of row length 0 (ld 0): apply writes zeros, as documented."""
    with ref_cache(2, 32, max_seqs=2) as c:
        out = c.apply(np.zeros((4, 0), np.float32), seq_ids=1)
        assert out.shape == (4, 32) and not out.any()
        s = c.scores(np.ones((4, 32), np.float32), seq_ids=1)
        assert s.shape[-1] == 0


def test_decode_multi_matches_reference_and_decode(filled, rng):
    """decode_multi (packkv_attn_decode_multi): q_len queries per head, float64 reference on
    decompress(); equal bit for bit to decode() with the queries as extra query heads."""
    c, lengths = filled
    ids = [1, 2]
    q = rng.standard_normal((2, 6, 5, 64)).astype(np.float32)   # [n_seqs, n_q_heads, q_len, D]
    out, lse = c.decode_multi(q, seq_ids=ids, scale=0.11, return_lse=True)
    assert out.shape == (2, 6, 5, 64) and lse.shape == (2, 6, 5)
    flat = q.reshape(2, 30, 64)
    ref = reference(c, ids, flat)
    for i, (s, _, vv) in enumerate(ref):
        s = s * 0.11
        m = s.max(axis=1, keepdims=True)
        w = np.exp(s - m)
        want = np.einsum("ht,htd->hd", w / w.sum(axis=1, keepdims=True), vv)
        assert rel_err(out[i].reshape(30, 64), want) <= RTOL
        np.testing.assert_allclose(lse[i].reshape(30), (m[:, 0] + np.log(w.sum(axis=1))), rtol=1e-5)
    o2, l2 = c.decode(flat, seq_ids=ids, scale=0.11, return_lse=True)
    assert np.array_equal(out.reshape(2, 30, 64), o2) and np.array_equal(lse.reshape(2, 30), l2)
    one = c.decode_multi(q[0], seq_ids=1, scale=0.11)                # one sequence: no n_seqs axis
    assert np.array_equal(one, out[0])
    with pytest.raises(packkv.InvalidArgument, match="q_len"):
        c.decode_multi(flat, seq_ids=ids)
