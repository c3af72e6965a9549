"""PackKVLayer's attention against an independent float64 reference of token-by-token
decoding: the query at position p attends the tokens before p exactly as a packkv cache fed one
token at a time holds them (its decompress() after p appends) and its own token as that cache
stores fresh tokens (rounded to kv_dtype: float16 by default for float32 K/V); for a
sliding-window layer only the positions (p - W, p]; after load() of a prefix, the same."""

import math

import numpy as np
import pytest
import torch

import packkv
import packkv.hf as ph

HKV, GROUP, D = 2, 3, 32
PARAMS = dict(residual_tokens=16, block_tokens=16, rel_scale_k=0.1, rel_scale_v=0.2, sink_tokens=0)


def data(seed, t, b=1):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, HKV * GROUP, t, D, generator=g)
    k = torch.randn(b, HKV, t, D, generator=g) * 2 + 0.5
    v = torch.randn(b, HKV, t, D, generator=g)
    return q, k, v


def reference(q, k, v, scale, kv_dtype="float16", params=PARAMS, window=None):
    """Token-by-token decoding of one sequence in float64. q [Hq, T, D], k/v [Hkv, T, D].
    window W: the query at p attends to positions (p - W, p] only (a cache without a window
    is fed; its W - 1 newest tokens are taken)."""
    out = np.zeros((q.shape[1], q.shape[0], D))
    own = np.float16 if kv_dtype == "float16" else np.float32
    with packkv.Cache(n_kv_heads=HKV, head_dim=D, kv_dtype=kv_dtype, **params) as ref:
        for p in range(q.shape[1]):
            kp, vp = ref.decompress()                          # [p, Hkv, D] float32
            if window is not None:
                kp, vp = kp[max(0, p - window + 1):], vp[max(0, p - window + 1):]
            kn = k[:, p:p + 1].permute(1, 0, 2).numpy().astype(own)
            vn = v[:, p:p + 1].permute(1, 0, 2).numpy().astype(own)
            keys = np.concatenate([kp, kn.astype(np.float32)]).astype(np.float64)
            vals = np.concatenate([vp, vn.astype(np.float32)]).astype(np.float64)
            for h in range(q.shape[0]):
                s = keys[:, h // GROUP] @ q[h, p].double().numpy() * scale
                w = np.exp(s - s.max())
                out[p, h] = (w / w.sum()) @ vals[:, h // GROUP]
            ref.append(k[:, p:p + 1].permute(1, 0, 2).contiguous().numpy(),
                       v[:, p:p + 1].permute(1, 0, 2).contiguous().numpy())
    return out


def run_chunks(layer, q, k, v, sizes, scale, padding=None, counts=None):
    outs, start = [], 0
    for n in sizes:
        sl = slice(start, start + n)
        kk, vv = layer.update(k[:, :, sl], v[:, :, sl])
        pad = padding[:, sl] if padding is not None else None
        cnt = pad.sum(1).tolist() if pad is not None else None
        outs.append(layer.attend(q[:, :, sl], kk, vv, pad, cnt, scale))
        start += n
    return torch.cat(outs, dim=1)                              # [b, T, Hq, D]


@pytest.mark.parametrize("kv_dtype", ["float16", "float32"])
@pytest.mark.parametrize("sizes", [[70], [1] * 70, [5, 20, 45], [16, 16, 38], [33, 1, 1, 35], [2, 1, 67]])
@pytest.mark.parametrize("sinks", [0, 4])
def test_attention_matches_token_by_token_reference(sizes, kv_dtype, sinks):
    """With sink tokens the flush points move by sink_tokens (the chunk is cut there)."""
    q, k, v = data(1, sum(sizes))
    scale = 1 / math.sqrt(D)
    params = dict(PARAMS, sink_tokens=sinks)
    layer = ph.PackKVLayer(**params, **({"kv_dtype": kv_dtype} if kv_dtype == "float32" else {}))
    out = run_chunks(layer, q, k, v, sizes, scale)
    want = reference(q[0], k[0], v[0], scale, kv_dtype, params)
    assert layer.packkv.stats().n_compressed_tokens == 48      # blocks were compressed
    np.testing.assert_allclose(out[0].numpy(), want, atol=2e-5, rtol=0)
    assert layer.get_seq_length() == sum(sizes)


def test_other_scale_and_float16_queries():
    q, k, v = data(2, 40)
    scale = 0.37
    layer = ph.PackKVLayer(**PARAMS)
    out = run_chunks(layer, q, k, v, [40], scale)
    np.testing.assert_allclose(out[0].numpy(), reference(q[0], k[0], v[0], scale), atol=2e-5)


def test_padding_rows_store_only_their_real_tokens():
    t = 50
    q, k, v = data(3, t, b=3)
    # row 0: all real; row 1: 12 left pads; row 2: 7 right pads (a forward of a padded batch)
    padding = torch.ones(3, t, dtype=torch.bool)
    padding[1, :12] = False
    padding[2, t - 7:] = False
    scale = 1 / math.sqrt(D)
    layer = ph.PackKVLayer(**PARAMS)
    out = run_chunks(layer, q, k, v, [30, 1, 19], scale, padding)
    for row in range(3):
        real = padding[row].nonzero().squeeze(1)
        want = reference(q[row][:, real], k[row][:, real], v[row][:, real], scale)
        np.testing.assert_allclose(out[row, real].numpy(), want, atol=2e-5)
        assert layer.packkv.seq_length(row) == len(real)
        assert not out[row, ~padding[row]].any()                # padded positions are zero
    assert layer.get_seq_length() == t                          # transformers counts positions


def test_update_then_update_without_attention_raises():
    layer = ph.PackKVLayer(**PARAMS)
    q, k, v = data(4, 4)
    layer.update(k, v)
    with pytest.raises(RuntimeError, match="attn_implementation"):
        layer.update(k, v)


def test_batch_size_is_fixed_until_reset():
    layer = ph.PackKVLayer(**PARAMS)
    q, k, v = data(5, 4, b=2)
    kk, vv = layer.update(k, v)
    layer.attend(q, kk, vv, None, None, 0.2)
    q1, k1, v1 = data(6, 4, b=1)
    with pytest.raises(ValueError, match="batch size 1"):
        layer.update(k1, v1)
    assert layer.get_seq_length() == 4 and layer.packkv.seq_length(0) == 4   # unchanged
    layer.reset()                                               # then any batch size
    assert layer.get_seq_length() == 0
    kk, vv = layer.update(k1, v1)
    layer.attend(q1, kk, vv, None, None, 0.2)
    assert layer.packkv.params.max_seqs == 1 and layer.packkv.seq_length(0) == 4


@pytest.mark.parametrize("sizes", [[70], [1] * 70, [5, 20, 45], [16, 16, 38], [33, 1, 1, 35], [2, 1, 67]])
@pytest.mark.parametrize("sinks", [0, 4])
def test_sliding_window_matches_windowed_reference(sizes, sinks):
    """A sliding-window layer (W = 12, shorter than a block plus the residual window: blocks
    expire and are freed): every query attends to itself and the 11 tokens before it."""
    w = 12
    q, k, v = data(7, sum(sizes))
    scale = 1 / math.sqrt(D)
    params = dict(PARAMS, sink_tokens=sinks)
    layer = ph.PackKVLayer(sliding_window=w, **params)
    out = run_chunks(layer, q, k, v, sizes, scale)
    want = reference(q[0], k[0], v[0], scale, params=params, window=w)
    np.testing.assert_allclose(out[0].numpy(), want, atol=2e-5, rtol=0)
    assert layer.packkv.window_start(0) == sum(sizes) - (w - 1)
    assert layer.packkv.stats().n_tokens <= (w - 1) + 16 + 16 + sinks


def test_load_then_attend_matches_reference():
    """load() of a 40-token prefix (two rows), then chunks: the queries after it see the cache
    as token-by-token decoding of all 70 tokens does."""
    t0, t = 40, 70
    q, k, v = data(8, t, b=2)
    scale = 1 / math.sqrt(D)
    layer = ph.PackKVLayer(**PARAMS)
    layer.load(k[:, :, :t0], v[:, :, :t0])
    assert layer.get_seq_length() == t0 and layer.packkv.seq_length(1) == t0
    out = run_chunks(layer, q[:, :, t0:], k[:, :, t0:], v[:, :, t0:], [1, 29], scale)
    for row in range(2):
        want = reference(q[row], k[row], v[row], scale)[t0:]
        np.testing.assert_allclose(out[row].numpy(), want, atol=2e-5, rtol=0)


def test_load_errors_change_nothing():
    q, k, v = data(9, 8, b=2)
    layer = ph.PackKVLayer(**PARAMS)
    with pytest.raises(ValueError, match="one shape"):
        layer.load(k, v[:, :, :4])
    assert not layer.is_initialized
    layer.load(k, v)
    with pytest.raises(ValueError, match="batch size 1"):
        layer.load(k[:1], v[:1])
    layer.update(k, v)
    with pytest.raises(RuntimeError, match="awaits its attention"):
        layer.load(k, v)
    assert layer.get_seq_length() == 16 and layer.packkv.seq_length(0) == 8
