"""Unit tests of scripts/e2e/kv_backends.py that need neither the model nor the binding
(except the last, which skips without `packkv`). Run: pytest scripts/e2e."""

import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kv_backends as kb  # noqa: E402


def fp8_reference(x: float) -> float:
    """Scalar transcription of double_to_fp8_e4m3 + fp8_e4m3_to_double (numeric.cpp)."""
    if math.isnan(x):
        return math.nan
    sign = -1.0 if math.copysign(1.0, x) < 0 else 1.0
    a = abs(x)
    if a >= 448.0:
        return sign * 448.0
    if a < 2.0 ** -6:
        return sign * round(a * 2 ** 9) * 2.0 ** -9          # Python round: half to even
    f, e = math.frexp(a)
    u = e - 1
    mant = round((2.0 * f - 1.0) * 8.0)
    if mant >= 8:
        mant, u = 0, u + 1
    return sign * (1.0 + mant / 8.0) * 2.0 ** u


def test_fp8_matches_scalar_reference():
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.standard_normal(5000) * s for s in (1e-3, 0.05, 1, 30, 300)])
    xs = np.concatenate([xs, [0.0, -0.0, 448, 500, -1e6, 2 ** -6, 2 ** -10, 1.0625, 1.1875,
                              17 * 2 ** -10, 240, 464]])
    got = kb.fp8_e4m3_round(xs)
    want = np.array([fp8_reference(float(x)) for x in xs])
    np.testing.assert_array_equal(got, want)
    assert kb.fp8_e4m3_round(np.array([1.0625]))[0] == 1.0     # tie to even mantissa
    assert kb.fp8_e4m3_round(np.array([1.1875]))[0] == 1.25


def kivi_group_reference(x, bits):
    """Scalar transcription of kivi_quant_group (baselines.cpp)."""
    mn, mx = min(x), max(x)
    qmax = float((1 << bits) - 1)
    zero = float(np.float16(mn))
    scale = float(np.float16((mx - mn) / qmax))
    out = []
    for v in x:
        q = 0.0
        if scale > 0:
            q = min(qmax, max(0.0, float(np.rint((v - zero) / scale))))
        out.append(zero + q * scale)
    return out


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_kivi_matches_scalar_reference(bits):
    rng = np.random.default_rng(bits)
    k = (rng.standard_normal((64, 3, 64)) * 3).astype(np.float16).astype(np.float64)
    k[:32, 1, 5] = 0.75                                          # a constant group
    got = kb.kivi_quant_k(k, bits)
    for c in (0, 5 + 64, 191):
        for t0 in (0, 32):
            col = k[t0:t0 + 32].reshape(32, -1)[:, c]
            np.testing.assert_array_equal(got[t0:t0 + 32].reshape(32, -1)[:, c],
                                          kivi_group_reference(list(col), bits))
    gv = kb.kivi_quant_v(k, bits)
    for t, h, c0 in ((0, 0, 0), (17, 2, 32), (63, 1, 32)):
        np.testing.assert_array_equal(gv[t, h, c0:c0 + 32],
                                      kivi_group_reference(list(k[t, h, c0:c0 + 32]), bits))


def test_kivi_and_fp8_bytes():
    # 4096 tokens, 3 heads x 64: 3968 quantized tokens, 128 in the window.
    b = kb.kivi_bytes(4096, 3, 64, 2, True)
    assert b["payload"] == 3968 * 192 * 2 // 8
    assert b["metadata"] == 4 * (3968 // 32) * 192
    assert b["residual"] == 2 * 128 * 192
    v = kb.kivi_bytes(4096, 3, 64, 2, False)
    assert v["metadata"] == 4 * 3968 * 3 * 2
    assert kb.fp8_bytes(10, 3, 64)["all_in"] == 10 * 192 + 12
    assert kb.flushed_tokens(159, 32, 128) == 0 and kb.flushed_tokens(160, 32, 128) == 32


def test_gqa_stack_roundtrip_and_mapping():
    rng = np.random.default_rng(1)
    n, hq, hkv, d = 5, 9, 3, 4
    q = rng.standard_normal((n, hq, d)).astype(np.float32)
    s = kb.gqa_stack(q, hkv)
    group = n * hq // hkv
    for i in range(n):
        for j in range(hq):
            row = np.where((s == q[i, j]).all(axis=1))[0][0]
            assert row // group == j // (hq // hkv)     # the row reads query head j's KV head
    np.testing.assert_array_equal(kb.gqa_unstack(s, n, hq, hkv), q)


def test_merge_equals_attention_over_union():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((6, 9, 16)).astype(np.float32)
    k = rng.standard_normal((30, 3, 16)).astype(np.float32)
    v = rng.standard_normal((30, 3, 16)).astype(np.float32)
    full, _ = kb.causal_attention_lse(q, k, v, 24, 0.25)       # queries at 24..29
    o1, l1 = kb.causal_attention_lse(q, k[:24], v[:24], 10 ** 6, 0.25)   # all past visible
    o2, l2 = kb.causal_attention_lse(q, k[24:], v[24:], 0, 0.25)
    np.testing.assert_allclose(kb.merge_attention(o1, l1, o2, l2), full, rtol=1e-5, atol=1e-6)


def test_chunk_bounds_cut_at_flush_points():
    b = kb.chunk_bounds(300, 64, [160, 192, 224, 256, 288], [100])
    assert b == [0, 64, 100, 128, 160, 192, 224, 256, 288, 300]


def test_packkv_backend_library_equals_decompress():
    pytest.importorskip("packkv")
    from types import SimpleNamespace
    cfg = SimpleNamespace(n_layers=1, n_kv_heads=3, head_dim=64)
    rng = np.random.default_rng(3)
    n = 400
    q = rng.standard_normal((n, 9, 64)).astype(np.float32)
    k = (rng.standard_normal((n, 3, 64)) * rng.uniform(0.5, 3, (n, 1, 1))).astype(np.float32)
    v = rng.standard_normal((n, 3, 64)).astype(np.float32)
    outs = []
    for attn in ("library", "decompress"):
        be = kb.PackKVBackend(attention=attn, residual_tokens=64, shadow_repacks=("greedy",))
        be.reset(cfg, n)
        bounds = kb.chunk_bounds(n, 64, be.flush_points(n))
        outs.append(np.concatenate([be.attend(0, a, q[a:b], k[a:b], v[a:b])
                                    for a, b in zip(bounds[:-1], bounds[1:])]))
        be.check_shadows()
        assert be.bytes().detail["repack"].keys() == {"median", "greedy"}
        be.close()
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5)


def _feed(be, cfg, q, k, v, chunk=64):
    n = q.shape[0]
    be.reset(cfg, n)
    bounds = kb.chunk_bounds(n, chunk, be.flush_points(n))
    return np.concatenate([be.attend(0, a, q[a:b], k[a:b], v[a:b])
                           for a, b in zip(bounds[:-1], bounds[1:])])


def test_kivi_sinks_keep_first_tokens_and_count_them():
    from types import SimpleNamespace
    cfg = SimpleNamespace(n_layers=1, n_kv_heads=3, head_dim=64)
    rng = np.random.default_rng(4)
    n, sink = 300, 4
    q = rng.standard_normal((n, 9, 64)).astype(np.float32)
    k = rng.standard_normal((n, 3, 64)).astype(np.float32)
    v = rng.standard_normal((n, 3, 64)).astype(np.float32)
    be = kb.KiviBackend(3, sink_tokens=sink)
    _feed(be, cfg, q, k, v)
    np.testing.assert_array_equal(be.k[0][:sink], kb.round_fp16(k[:sink]))   # exact
    np.testing.assert_array_equal(be.v[0][:sink], kb.round_fp16(v[:sink]))
    nq = kb.flushed_tokens(n - sink, 32, 128)                                # 160
    assert be.n_quantized[0] == sink + nq
    k16 = kb.round_fp16(k).astype(np.float64)
    np.testing.assert_array_equal(be.k[0][sink:sink + 32],
                                  kb.kivi_quant_k(k16[sink:sink + 32], 3).astype(np.float32))
    np.testing.assert_array_equal(be.k[0][sink + nq:], kb.round_fp16(k[sink + nq:]))
    want = 2 * 2 * sink * 192 + sum(kb.kivi_bytes(n - sink, 3, 64, 3, is_k)["all_in"]
                                    for is_k in (True, False))
    assert be.bytes().all_in == want


def test_packkv_emulated_sinks_exact_and_counted():
    pytest.importorskip("packkv")
    from types import SimpleNamespace
    cfg = SimpleNamespace(n_layers=1, n_kv_heads=3, head_dim=64)
    rng = np.random.default_rng(5)
    n, sink = 400, 4
    q = rng.standard_normal((n, 9, 64)).astype(np.float32)
    k = (rng.standard_normal((n, 3, 64)) * 2).astype(np.float32)
    v = rng.standard_normal((n, 3, 64)).astype(np.float32)
    be = kb.PackKVBackend(residual_tokens=64, rel_scale_k=0.1, rel_scale_v=0.2,
                          emulated_sinks=sink)
    out = _feed(be, cfg, q, k, v)
    np.testing.assert_array_equal(be.k[0][:sink], kb.round_fp16(k[:sink]))
    st = be.stats_sum()
    assert st["n_tokens"] == n - sink and st["sink_bytes"] == 2 * 2 * sink * 192
    # flush points measured by the probe: after the sinks, every 64 tokens past 64 + 64
    assert be.flush_points(n) == list(range(sink + 128, n + 1, 64))
    # the same stream without the sink tokens through a plain cache reconstructs the same
    kd, vd = be.caches[0].decompress()
    plain = kb.PackKVBackend(residual_tokens=64, rel_scale_k=0.1, rel_scale_v=0.2)
    plain.reset(SimpleNamespace(n_layers=1, n_kv_heads=3, head_dim=64), n - sink)
    plain.caches[0].append(k[sink:].astype(np.float16), v[sink:].astype(np.float16))
    kp, vp = plain.caches[0].decompress()
    np.testing.assert_array_equal(kd, kp)
    np.testing.assert_array_equal(vd, vp)
    # attention = dense attention over [fp16 sinks, reconstruction] (the last query sees all)
    kk = np.concatenate([kb.round_fp16(k[:sink]), kd])
    vv = np.concatenate([kb.round_fp16(v[:sink]), vd])
    ref, _ = kb.causal_attention_lse(q[-1:], kk, vv, n - 1, 1 / 8)
    np.testing.assert_allclose(out[-1:], ref, rtol=1e-5, atol=1e-6)
    be.close()
    plain.close()
