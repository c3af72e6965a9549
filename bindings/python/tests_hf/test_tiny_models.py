"""packkv.hf in tiny random Llama and Gemma 3 models (Gemma 3: sliding-window layers with
packkv's sliding window, window 8, so that it slides): chunked vs token-by-token prefill,
near-lossless settings vs DynamicCache, padded batches, generate, the fallback to SDPA."""

import pytest
import torch
from transformers import DynamicCache

import packkv.hf as ph
from conftest import tiny_gemma3, tiny_llama

LOSSY = dict(residual_tokens=16, block_tokens=16, rel_scale_k=0.1, rel_scale_v=0.2, sink_tokens=0)
FINE = dict(residual_tokens=16, block_tokens=16, rel_scale_k=1 / 254, rel_scale_v=1 / 254,
            sink_tokens=0)


def ids(n, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 256, (b, n), generator=g)


def full_layers(cache):
    """The full-attention PackKVLayers of a PackKVCache."""
    return [x for x in cache.packkv_layers if not x.is_sliding]


def forward_chunks(model, cache, tokens, sizes, attention_mask=None):
    """Logits of every position, feeding `tokens` in chunks of `sizes`."""
    out, start = [], 0
    for n in sizes:
        kw = {}
        if attention_mask is not None:   # positions as generate() makes them
            kw["attention_mask"] = attention_mask[:, :start + n]
            kw["position_ids"] = (kw["attention_mask"].cumsum(-1) - 1).clamp(min=0)[:, start:]
        r = model(input_ids=tokens[:, start:start + n], use_cache=True, **kw,
                  **ph.cache_argument(cache))
        out.append(r.logits)
        start += n
    return torch.cat(out, dim=1)


def test_chunked_and_token_by_token_prefill_agree(tiny_model):
    """float32 residual window: with the default float16 one, K/V that differ in the last
    float32 bit (the projections of a chunk and of one token sum in different orders) can
    round to neighbouring float16 values, a 1e-4-level difference unrelated to packkv."""
    tokens = ids(60)
    runs = []
    for sizes in ([60], [1] * 60, [7] * 8 + [4], [20, 1, 39]):
        cache = ph.PackKVCache(tiny_model.config, kv_dtype="float32", **LOSSY)
        runs.append(forward_chunks(tiny_model, cache, tokens, sizes))
        assert full_layers(cache)[0].packkv.stats().n_compressed_tokens == 32
    for r in runs[1:]:
        torch.testing.assert_close(r, runs[0], atol=2e-5, rtol=0)


def test_near_lossless_settings_match_dynamic_cache(tiny_model):
    tokens = ids(60, seed=1)
    want = forward_chunks(tiny_model, DynamicCache(config=tiny_model.config), tokens, [40, 1, 19])
    got = forward_chunks(tiny_model, ph.PackKVCache(tiny_model.config, **FINE), tokens, [40, 1, 19])
    torch.testing.assert_close(got, want, atol=1e-2 * want.abs().max().item(), rtol=0)
    lossy = forward_chunks(tiny_model, ph.PackKVCache(tiny_model.config, **LOSSY), tokens, [60])
    assert (lossy - want).abs().max() > 10 * (got - want).abs().max()   # compression is real


def test_padded_batch_rows_match_single_sequences(tiny_model):
    lengths = [50, 37, 44]
    rows = [ids(n, seed=10 + i) for i, n in enumerate(lengths)]
    t = max(lengths)
    tokens = torch.zeros(len(rows), t, dtype=torch.long)
    mask = torch.zeros(len(rows), t, dtype=torch.long)
    for i, r in enumerate(rows):                                      # left padding
        tokens[i, t - r.shape[1]:] = r[0]
        mask[i, t - r.shape[1]:] = 1
    step = ids(3, b=len(rows), seed=20)
    full_tokens = torch.cat([tokens, step], dim=1)
    full_mask = torch.cat([mask, torch.ones_like(step)], dim=1)
    cache = ph.PackKVCache(tiny_model.config, **LOSSY)
    got = forward_chunks(tiny_model, cache, full_tokens, [t, 1, 1, 1], full_mask)
    for i, r in enumerate(rows):
        single = ph.PackKVCache(tiny_model.config, **LOSSY)
        want = forward_chunks(tiny_model, single, torch.cat([r, step[i:i + 1]], dim=1),
                              [r.shape[1], 1, 1, 1])
        torch.testing.assert_close(got[i, t - r.shape[1]:], want[0], atol=2e-5, rtol=0)
        assert cache.packkv_layers[0].packkv.seq_length(i) == r.shape[1] + 3


def test_generate_greedy_matches_dynamic_cache(tiny_model):
    tokens = ids(40, b=2, seed=3)
    mask = torch.ones_like(tokens)
    mask[1, :9] = 0
    kw = dict(attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    want = tiny_model.generate(tokens, **kw, **ph.cache_argument(DynamicCache(config=tiny_model.config)))
    cache = ph.PackKVCache(tiny_model.config, **FINE)
    got = tiny_model.generate(tokens, **kw, **ph.cache_argument(cache))
    assert torch.equal(got, want)
    mem = ph.cache_memory(cache)
    assert mem["packkv_bytes"] > 0 and mem["total_bytes"] >= mem["packkv_bytes"]


def test_registered_implementation_without_packkv_cache_is_sdpa(tiny_model):
    """The packkv attention/mask functions fall back to SDPA for other caches."""
    tokens = ids(30, b=2, seed=4)
    mask = torch.ones_like(tokens)
    mask[0, :5] = 0
    got = forward_chunks(tiny_model, DynamicCache(config=tiny_model.config), tokens, [20, 10], mask)
    tiny_model.set_attn_implementation("sdpa")
    want = forward_chunks(tiny_model, DynamicCache(config=tiny_model.config), tokens, [20, 10], mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_cache_memory_of_a_dynamic_cache():
    model = tiny_llama()
    cache = DynamicCache(config=model.config)
    forward_chunks(model, cache, ids(10), [10])
    assert ph.cache_memory(cache) == {"packkv_bytes": 0, "packkv_fp16_bytes": 0,
                                      "tensor_bytes": 2 * 2 * 10 * 2 * 32 * 4,
                                      "total_bytes": 2 * 2 * 10 * 2 * 32 * 4,
                                      "fp16_bytes": 2 * 2 * 10 * 2 * 32 * 2}


def test_gemma3_cache_layers():
    model = tiny_gemma3()
    cache = ph.PackKVCache(model.config)
    assert [type(x).__name__ for x in cache.layers] == ["PackKVLayer"] * 4
    assert [x.sliding_window for x in cache.layers] == [8, None] * 2
    assert cache.is_sliding == [True, False] * 2


def test_sliding_params_set_the_sliding_layers_only():
    """PackKVCache(sliding_params=...): the sliding-window layers take those values over the
    common ones, the full-attention layers keep the common ones; a bad key is refused before
    anything is made. (The tiny model's window of 8 holds no whole block: its sliding layers
    stay in the residual window, so the outputs do not show the difference.)"""
    model = tiny_gemma3()
    tokens = ids(40, seed=3)
    cache = ph.PackKVCache(model.config, sliding_params=dict(rel_scale_k=1 / 254, rel_scale_v=1 / 254),
                           **LOSSY)
    got = forward_chunks(model, cache, tokens, [40])
    kinds = {x.is_sliding: x.packkv.params for x in cache.packkv_layers}
    assert set(kinds) == {True, False}
    assert kinds[True].bits_k == 8 and kinds[True].bits_v == 8
    assert abs(kinds[False].rel_scale_k - 0.1) < 1e-7 and abs(kinds[False].rel_scale_v - 0.2) < 1e-7
    assert kinds[False].bits_k < 8 and kinds[False].bits_v < 8
    assert torch.isfinite(got).all()
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'rel_scale' .*\(in sliding_params\)$"):
        ph.PackKVCache(model.config, sliding_params=dict(rel_scale=0.1), **LOSSY)
    with pytest.raises(TypeError, match="sliding_params must be a dict of packkv parameters, got list"):
        ph.PackKVCache(model.config, sliding_params=["rel_scale_k"], **LOSSY)
