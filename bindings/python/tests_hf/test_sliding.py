"""packkv.hf sliding-window layers (packkv's sliding window): transformers' own sliding-window
layers are the reference (DynamicCache of the same model), the window is short so that it
slides within the tests, and a sliding layer's memory stays bounded."""

import warnings

import pytest
import torch
from transformers import DynamicCache

import packkv
import packkv.hf as ph
from conftest import tiny_gemma3
from test_tiny_models import FINE, LOSSY, forward_chunks, full_layers, ids


def sliding_layers(cache):
    return [x for x in cache.packkv_layers if x.is_sliding]


def tiny_mistral(window=8, seed=0):
    """Every layer a sliding-window layer (Mistral with sliding_window set)."""
    from transformers import MistralConfig, MistralForCausalLM
    torch.manual_seed(seed)
    cfg = MistralConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                        sliding_window=window, max_position_embeddings=1024, pad_token_id=0)
    model = MistralForCausalLM(cfg).eval()
    model.set_attn_implementation(ph.ATTN_IMPLEMENTATION)
    return model


@pytest.mark.parametrize("sizes", [[60], [1] * 60, [20, 1, 39], [5] * 12])
def test_sliding_layers_near_lossless_match_dynamic_cache(sizes):
    """8-bit settings: logits of every position within 1% of DynamicCache's (whose Gemma 3
    sliding layers are transformers' DynamicSlidingWindowLayer), 60 tokens through a window
    of 8, for prefill chunks that cross the window and single-token steps."""
    model = tiny_gemma3()
    tokens = ids(60, seed=11)
    want = forward_chunks(model, DynamicCache(config=model.config), tokens, [40, 1, 19])
    cache = ph.PackKVCache(model.config, **FINE)
    got = forward_chunks(model, cache, tokens, sizes)
    torch.testing.assert_close(got, want, atol=1e-2 * want.abs().max().item(), rtol=0)
    for layer in sliding_layers(cache):
        assert layer.packkv.window_start(0) == 60 - 7   # the window W - 1 = 7 tokens


def test_sliding_window_is_applied():
    """The same model with a window of 8 and of 1024 (no token ever leaves it) differ after
    the window: the packkv sliding layers do mask, and the long window gives the full cache."""
    short, long_ = tiny_gemma3(sliding_window=8), tiny_gemma3(sliding_window=1024)
    tokens = ids(40, seed=12)
    a = forward_chunks(short, ph.PackKVCache(short.config, **FINE), tokens, [40])
    b = forward_chunks(long_, ph.PackKVCache(long_.config, **FINE), tokens, [40])
    torch.testing.assert_close(a[:, :8], b[:, :8], atol=1e-5, rtol=0)
    assert (a[:, 20:] - b[:, 20:]).abs().max() > 1e-2


def test_greedy_beyond_the_window_matches_dynamic_cache():
    """A padded batch, 30 new tokens after a 40-token prompt with a window of 8: every sliding
    layer's window has moved many times; tokens equal to DynamicCache's."""
    model = tiny_gemma3(seed=3)
    tokens = ids(40, b=2, seed=13)
    mask = torch.ones_like(tokens)
    mask[0, :6] = 0
    kw = dict(attention_mask=mask, max_new_tokens=30, do_sample=False, pad_token_id=0)
    want = model.generate(tokens, **kw, **ph.cache_argument(DynamicCache(config=model.config)))
    cache = ph.PackKVCache(model.config, **FINE)
    got = model.generate(tokens, **kw, **ph.cache_argument(cache))
    assert torch.equal(got, want)
    layer = sliding_layers(cache)[0]
    assert [layer.packkv.seq_length(s) for s in layer.rows] == [34 + 29, 40 + 29]
    assert [layer.packkv.window_start(s) for s in layer.rows] == [34 + 29 - 7, 40 + 29 - 7]


def test_all_sliding_model_is_compressed_and_matches_dynamic_cache():
    """Mistral with sliding_window: every layer is a packkv sliding layer (no longer
    transformers' own), bytes are compressed, logits within 1% of DynamicCache's."""
    model = tiny_mistral()
    tokens = ids(50, seed=14)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache = ph.PackKVCache(model.config, **FINE)
    assert len(cache.packkv_layers) == 2 and all(x.is_sliding for x in cache.packkv_layers)
    want = forward_chunks(model, DynamicCache(config=model.config), tokens, [30, 20])
    got = forward_chunks(model, cache, tokens, [30, 1, 19])
    torch.testing.assert_close(got, want, atol=1e-2 * want.abs().max().item(), rtol=0)
    assert ph.cache_memory(cache)["packkv_bytes"] > 0


def test_sliding_layer_memory_stays_bounded():
    """Window 32, blocks of 16, residual 16: after 2, 4 and 8 windows of tokens a sliding
    layer holds at most W - 1 + residual + 2 blocks tokens (blocks that left the window are
    freed), its bytes do not grow, while a full layer's grow with the sequence."""
    w = 32
    model = tiny_gemma3(sliding_window=w)
    cache = ph.PackKVCache(model.config, **LOSSY)
    tokens = ids(8 * w, seed=15)
    held, full = [], []
    done = 0
    for upto in (2 * w, 4 * w, 8 * w):
        forward_chunks(model, cache, tokens[:, done:upto], [upto - done])
        done = upto
        st = sliding_layers(cache)[0].packkv.stats()
        assert st.n_tokens <= (w - 1) + 16 + 2 * 16
        held.append(st.compressed_bytes_used + st.residual_bytes)
        fst = full_layers(cache)[0].packkv.stats()
        assert fst.n_tokens == upto
        full.append(fst.compressed_bytes_used + fst.residual_bytes)
    assert max(held) <= 1.25 * min(held)
    assert full[2] > 1.5 * full[1] and full[1] > 1.5 * full[0] and full[2] > 2 * max(held)


def test_without_a_library_window_the_layer_falls_back_with_a_warning(monkeypatch):
    """Where set_window raises NotSupported (CUDA caches of a library without a GPU window),
    the sliding layers become transformers' DynamicSlidingWindowLayer at the first update,
    with one UserWarning; the full-attention layers stay packkv; results as before."""
    model = tiny_gemma3()
    tokens = ids(30, seed=16)
    want = forward_chunks(model, DynamicCache(config=model.config), tokens, [30])

    def no_window(self, n):
        raise packkv.NotSupported(7, "packkv_x_cache_set_window: not on this device (test)")

    monkeypatch.setattr(packkv.Cache, "set_window", no_window)
    cache = ph.PackKVCache(model.config, **FINE)
    with pytest.warns(UserWarning, match="no sliding window") as rec:
        got = forward_chunks(model, cache, tokens, [20, 10])
    assert len([w for w in rec if "sliding window" in str(w.message)]) == 1
    assert [type(x).__name__ for x in cache.layers] == ["DynamicSlidingWindowLayer",
                                                        "PackKVLayer"] * 2
    torch.testing.assert_close(got, want, atol=1e-2 * want.abs().max().item(), rtol=0)


def test_crop_within_the_window_matches_dynamic_cache_and_after_it_fails_clearly():
    """Window 64: a crop while no token has left the window gives DynamicCache's logits
    afterwards; once the window has moved, crop raises ValueError (the next queries would need
    freed tokens) and nothing changes."""
    model = tiny_gemma3(sliding_window=64)
    cache, ref = ph.PackKVCache(model.config, **FINE), DynamicCache(config=model.config)
    tokens, nxt = ids(40, seed=17), ids(30, seed=18)
    for c in (cache, ref):
        forward_chunks(model, c, tokens, [30, 1, 1, 8])
        c.crop(-5)
    assert cache.get_seq_length() == 35
    want = forward_chunks(model, ref, nxt, [10, 1, 19])
    got = forward_chunks(model, cache, nxt, [10, 1, 19])
    torch.testing.assert_close(got, want, atol=1e-2 * want.abs().max().item(), rtol=0)
    assert sliding_layers(cache)[0].packkv.window_start(0) == 65 - 63
    with pytest.raises(ValueError, match="sliding-window layer whose window has moved"):
        cache.crop(-3)
    assert cache.get_seq_length() == 65
    assert all(x.packkv.seq_length(0) == 65 for x in cache.packkv_layers)
